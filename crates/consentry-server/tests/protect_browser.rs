//! The protect page in a real headless Chromium (Debian's `chromium` + `chromium-driver`), driven
//! over WebDriver (a few JSON calls with reqwest) against the real server on a real socket with a
//! temporary SQLite store.
//!
//! It chooses dozens of files from `../shared/testdata/` (plus a non-image, a large JPEG and a
//! 20-megapixel PNG generated here), checks the hashes the page computes against what
//! `consentry hash` computes for the same files (bit for bit on the PNGs of `pdq-reference-rgb/`),
//! sends them, and proves from the request bodies the server received, and from Chromium's own
//! network log, that no request carried image bytes and none went to another origin. Then: the
//! server goes down (clear message, hashes kept, saved to a file, sent again after a restart),
//! status and withdrawal end to end, the French page, labels on every control. A screenshot of
//! each state is written to `target/protect-screenshots/`.
//!
//! Without Chromium, chromedriver or the WebAssembly hasher the test says SKIPPED loudly and
//! passes, unless `CONSENTRY_REQUIRE_BROWSER=1` (as `.ci/run` sets), when it fails.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{test_config, TestDb};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use consentry_media::{hash_bytes, HashOptions};
use consentry_pdq::{Hash256, Hasher};
use consentry_server::{app, protect, AppState};
use image::ImageEncoder;
use serde_json::{json, Value};
use tokio::net::TcpListener;

// ---------------------------------------------------------------------------------------------
// Skipping

fn require_browser() -> bool {
    std::env::var("CONSENTRY_REQUIRE_BROWSER").map(|v| v == "1").unwrap_or(false)
}

fn skip(why: &str) {
    if require_browser() {
        panic!("CONSENTRY_REQUIRE_BROWSER=1 but {why}");
    }
    eprintln!("\n==============================================================================");
    eprintln!("SKIPPED: protect page browser test: {why}");
    eprintln!("(install Debian's chromium, chromium-driver, rustc and libstd-rust-dev-wasm32;");
    eprintln!(" set CONSENTRY_REQUIRE_BROWSER=1 to make this a failure)");
    eprintln!("==============================================================================\n");
}

fn which(names: &[&str]) -> Option<PathBuf> {
    for n in names {
        let p = Path::new(n);
        if p.is_absolute() {
            if p.exists() {
                return Some(p.to_owned());
            }
            continue;
        }
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            let c = dir.join(n);
            if c.is_file() {
                return Some(c);
            }
        }
    }
    None
}

fn testdata() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata");
    // chromedriver wants canonical paths for file inputs.
    p.canonicalize().unwrap_or(p)
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("protect-screenshots")
}

// ---------------------------------------------------------------------------------------------
// The server, with every request recorded (method, path, body) before it reaches the router

#[derive(Clone, Debug)]
struct Recorded {
    method: String,
    uri: String,
    body: Vec<u8>,
}

type Log = Arc<Mutex<Vec<Recorded>>>;

async fn record(State(log): State<Log>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 256 << 20).await.unwrap_or_default();
    log.lock().unwrap().push(Recorded {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        body: bytes.to_vec(),
    });
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn start_server(state: &AppState, log: &Log, addr: &str) -> Server {
    let listener = TcpListener::bind(addr).await.expect("bind");
    let addr = listener.local_addr().unwrap();
    let router = app(state.clone()).layer(middleware::from_fn_with_state(log.clone(), record));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
            .expect("serve");
    });
    Server { addr, stop: Some(tx), task }
}

impl Server {
    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if tokio::time::timeout(Duration::from_secs(10), &mut self.task).await.is_err() {
            self.task.abort();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A minimal WebDriver client (W3C protocol, JSON over HTTP)

struct Driver {
    child: Child,
    http: reqwest::Client,
    base: String,
    session: String,
    perf: Vec<Value>,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Drop for Driver {
    /// Ends the session (chromedriver then closes its Chromium), also when the test panicked,
    /// then stops chromedriver. Plain blocking HTTP: this may run outside the runtime.
    fn drop(&mut self) {
        use std::io::{Read, Write};
        if !self.session.is_empty() {
            let host = self.base.trim_start_matches("http://").to_owned();
            if let Ok(mut s) = std::net::TcpStream::connect(&host) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let req = format!(
                    "DELETE /session/{} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    self.session
                );
                let _ = s.write_all(req.as_bytes());
                let _ = s.read_to_end(&mut Vec::new());
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start(chromedriver: &Path, chromium: &Path, downloads: &Path) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await {
                if let Ok(v) = r.json::<Value>().await {
                    if v["value"]["ready"] == json!(true) {
                        break;
                    }
                }
            }
            assert!(started.elapsed() < Duration::from_secs(30), "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.to_string_lossy(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1100,1400", "--lang=en-GB", "--no-first-run", "--disable-extensions",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
                "prefs": {"intl.accept_languages": "en-GB,en", "download.default_directory": downloads.to_string_lossy(),
                          "download.prompt_for_download": false}
            },
            "goog:loggingPrefs": {"performance": "ALL", "browser": "ALL"}
        }}});
        let v: Value =
            http.post(format!("{base}/session")).json(&caps).send().await.unwrap().json().await.unwrap();
        let session =
            v["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {v}")).to_owned();
        let mut d = Driver { child, http, base, session, perf: Vec::new() };
        d.cmd(
            "POST",
            "goog/cdp/execute",
            json!({"cmd": "Browser.setDownloadBehavior", "params": {"behavior": "allow", "downloadPath": downloads.to_string_lossy()}}),
        )
        .await;
        d
    }

    async fn cmd(&mut self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}/{}", self.base, self.session, path);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        let v: Value = req.send().await.expect("webdriver request").json().await.expect("webdriver json");
        if v["value"].get("error").is_some() {
            panic!("webdriver {method} {path}: {}", v["value"]);
        }
        v["value"].clone()
    }

    async fn goto(&mut self, url: &str) {
        self.cmd("POST", "url", json!({ "url": url })).await;
    }

    async fn find(&mut self, css: &str) -> String {
        let v = self.cmd("POST", "element", json!({"using": "css selector", "value": css})).await;
        v[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {v}")).to_owned()
    }

    async fn type_into(&mut self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.cmd("POST", &format!("element/{e}/clear"), json!({})).await;
        self.cmd("POST", &format!("element/{e}/value"), json!({ "text": text })).await;
    }

    async fn choose_files(&mut self, css: &str, files: &[PathBuf]) {
        let e = self.find(css).await;
        let text = files.iter().map(|p| p.to_string_lossy().into_owned()).collect::<Vec<_>>().join("\n");
        self.cmd("POST", &format!("element/{e}/value"), json!({ "text": text })).await;
    }

    async fn click(&mut self, css: &str) {
        let e = self.find(css).await;
        self.cmd("POST", &format!("element/{e}/click"), json!({})).await;
    }

    /// Types `text` on the keyboard into whatever has the focus (WebDriver key actions).
    async fn keys(&mut self, text: &str) {
        let mut actions = Vec::new();
        for c in text.chars() {
            actions.push(json!({"type": "keyDown", "value": c.to_string()}));
            actions.push(json!({"type": "keyUp", "value": c.to_string()}));
        }
        self.cmd(
            "POST",
            "actions",
            json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]}),
        )
        .await;
    }

    async fn js(&mut self, script: &str) -> Value {
        self.cmd("POST", "execute/sync", json!({"script": script, "args": []})).await
    }

    async fn text(&mut self, css: &str) -> String {
        let s = format!("const e = document.querySelector({}); return e ? e.innerText : null;", json!(css));
        self.js(&s).await.as_str().map(str::to_owned).unwrap_or_default()
    }

    /// Waits until `expr` (a JS expression) is truthy.
    async fn wait_for(&mut self, expr: &str, what: &str) {
        let started = Instant::now();
        loop {
            if self.js(&format!("return !!({expr});")).await == json!(true) {
                return;
            }
            if started.elapsed() > Duration::from_secs(120) {
                let body = self.text("body").await;
                panic!("timed out waiting for {what} ({expr}); page says:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A screenshot of the whole page (not only the window).
    async fn screenshot(&mut self, name: &str) {
        let h = self
            .js("return Math.ceil(document.documentElement.scrollHeight);")
            .await
            .as_u64()
            .unwrap_or(1400);
        let params =
            json!({"width": 1100, "height": h.clamp(600, 8000), "deviceScaleFactor": 1, "mobile": false});
        self.cmd(
            "POST",
            "goog/cdp/execute",
            json!({"cmd": "Emulation.setDeviceMetricsOverride", "params": params}),
        )
        .await;
        let shot = self
            .cmd(
                "POST",
                "goog/cdp/execute",
                json!({"cmd": "Page.captureScreenshot", "params": {"format": "png", "captureBeyondViewport": true}}),
            )
            .await;
        self.cmd(
            "POST",
            "goog/cdp/execute",
            json!({"cmd": "Emulation.clearDeviceMetricsOverride", "params": {}}),
        )
        .await;
        let png = base64_decode(shot["data"].as_str().expect("screenshot data"));
        assert!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// Chromium's network events since the last call, accumulated in `self.perf`.
    async fn collect_network_log(&mut self) {
        let entries = self.cmd("POST", "se/log", json!({"type": "performance"})).await;
        for e in entries.as_array().cloned().unwrap_or_default() {
            if let Some(m) = e["message"].as_str().and_then(|s| serde_json::from_str::<Value>(s).ok()) {
                let msg = m["message"].clone();
                if msg["method"].as_str().is_some_and(|s| s.starts_with("Network.")) {
                    self.perf.push(msg);
                }
            }
        }
    }

    async fn quit(mut self) {
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = self.http.delete(url).send().await;
        self.session.clear();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=').collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c) << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len().saturating_sub(1)]);
    }
    out
}

fn base64_encode(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..=c.len() {
            s.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    s
}

// ---------------------------------------------------------------------------------------------
// What the page shows

#[derive(Debug, Clone)]
struct Item {
    name: String,
    state: String,
    status: String,
    hash: Option<String>,
    /// The derivative signature (base64) computed on the page.
    derive: Option<String>,
    quality: Option<u8>,
    size: Option<String>,
}

async fn items(d: &mut Driver) -> Vec<Item> {
    let v = d
        .js(
            "return Array.from(document.querySelectorAll('#results li')).map(li => ({
                name: li.querySelector('.name').textContent, state: li.dataset.state || '',
                status: li.querySelector('.status').textContent, hash: li.dataset.hash || null,
                derive: li.dataset.derive || null,
                quality: li.dataset.quality ? Number(li.dataset.quality) : null, size: li.dataset.size || null }));",
        )
        .await;
    v.as_array()
        .unwrap()
        .iter()
        .map(|o| Item {
            name: o["name"].as_str().unwrap().to_owned(),
            state: o["state"].as_str().unwrap().to_owned(),
            status: o["status"].as_str().unwrap().to_owned(),
            hash: o["hash"].as_str().map(str::to_owned),
            derive: o["derive"].as_str().map(str::to_owned),
            quality: o["quality"].as_u64().map(|q| q as u8),
            size: o["size"].as_str().map(str::to_owned),
        })
        .collect()
}

/// What `consentry derive` computes for `bytes`: the base64 derivative signature.
fn cli_derive(bytes: &[u8]) -> String {
    let img = consentry_media::decode(bytes, &consentry_media::DecodeOptions::default()).expect("decode");
    let rgb = img.to_rgb8();
    let px =
        consentry_derive::Pixels::new(img.width, img.height, consentry_pdq::PixelFormat::Rgb8, &rgb).unwrap();
    consentry_derive::Extractor::new().signature(&px).to_base64()
}

/// What `consentry hash` computes for `bytes` (default options: fast path, EXIF orientation).
fn cli_hash(bytes: &[u8]) -> (Hash256, u8, u32, u32) {
    let h = hash_bytes(bytes, &HashOptions::default(), &mut Hasher::new()).expect("hash");
    (h.pdq.hash, h.pdq.quality, h.decoded_width, h.decoded_height)
}

/// Pieces of a file that would show up in any request carrying it: raw 32-byte windows taken
/// across the file, and their base64 forms at the three alignments.
fn fingerprints(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let step = (bytes.len() / 8).max(1);
    let mut at = 0;
    while at + 48 <= bytes.len() {
        out.push(bytes[at..at + 32].to_vec());
        for shift in 0..3 {
            let b64 = base64_encode(&bytes[at + shift..at + shift + 45]);
            out.push(b64.as_bytes()[4..36].to_vec());
        }
        at += step;
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn is_image_magic(b: &[u8]) -> bool {
    b.starts_with(b"\x89PNG")
        || b.starts_with(b"\xff\xd8\xff")
        || b.starts_with(b"GIF8")
        || b.starts_with(b"RIFF")
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protect_page_in_chromium() {
    let Some(chromium) = which(&["chromium", "chromium-browser", "google-chrome"]) else {
        return skip("chromium is not installed");
    };
    let Some(chromedriver) = which(&["chromedriver"]) else {
        return skip("chromedriver is not installed");
    };
    if !protect::wasm_available() {
        // The page must say so plainly (and the build must not have failed).
        let db = TestDb::sqlite();
        let state = AppState::start(db.store().await, test_config()).await.expect("start");
        let log: Log = Arc::default();
        let server = start_server(&state, &log, "127.0.0.1:0").await;
        let tmp = tempfile::tempdir().unwrap();
        let mut d = Driver::start(&chromedriver, &chromium, tmp.path()).await;
        d.goto(&format!("http://{}/protect/", server.addr)).await;
        d.wait_for("document.body.dataset.hasher === 'unavailable'", "the unavailable message").await;
        let msg = d.text("#hasher-unavailable").await;
        assert!(msg.contains("hashing is unavailable"), "{msg}");
        assert_eq!(d.js("return document.getElementById('files').disabled").await, json!(true));
        d.screenshot("00-hasher-unavailable").await;
        d.quit().await;
        server.stop().await;
        return skip(&format!("the WebAssembly hasher was not built: {}", protect::wasm_build_note()));
    }
    let data = testdata();
    if !data.join("pdq-reference-rgb").is_dir() {
        return skip("../shared/testdata is absent");
    }
    let shots = screenshot_dir();
    let _ = std::fs::remove_dir_all(&shots);

    // Files: the 21 reference RGB PNGs, JPEGs (EXIF-rotated ones included), a non-image, a large
    // JPEG (hashed at full size) and a 20 MP PNG (reduced: memory bound).
    let tmp = tempfile::tempdir().unwrap();
    let tmp_path = tmp.path().canonicalize().unwrap();
    let downloads = tmp_path.join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let mut rgb: Vec<PathBuf> = std::fs::read_dir(data.join("pdq-reference-rgb"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "png"))
        .collect();
    rgb.sort();
    assert_eq!(rgb.len(), 21, "pdq-reference-rgb should hold 21 PNGs");
    let refdir = data.join("pdq-reference");
    let jpegs: Vec<PathBuf> = [
        "bridge-mods/aaa-orig.jpg",
        "bridge-mods/blur-a-little.jpg",
        "misc-images/small.jpg",
        "reg-test-input/exif-rotn/exif-rotn-1.jpg",
        "reg-test-input/exif-rotn/exif-rotn-3.jpg",
        "reg-test-input/exif-rotn/exif-rotn-6.jpg",
        "reg-test-input/exif-rotn/exif-rotn-8.jpg",
    ]
    .iter()
    .map(|p| refdir.join(p))
    .collect();
    let not_image = data.join("README.md");
    let big_jpeg = tmp_path.join("large-photo.jpg");
    let textured = image::RgbImage::from_fn(2600, 2100, |x, y| {
        let v = ((x / 37) * 7919 + (y / 29) * 104_729 + 13) % 251;
        image::Rgb([v as u8, ((x / 10) as u8) ^ (v as u8), (y / 9) as u8])
    });
    std::fs::write(&big_jpeg, common::jpeg_bytes(&textured)).unwrap();
    let huge_png = tmp_path.join("huge-5000x4000.png");
    {
        let img = image::RgbImage::from_fn(5000, 4000, |x, y| {
            image::Rgb([(x / 20) as u8, (y / 16) as u8, (((x / 250) + (y / 200)) % 2 * 180) as u8])
        });
        let mut out = std::io::BufWriter::new(std::fs::File::create(&huge_png).unwrap());
        image::codecs::png::PngEncoder::new_with_quality(
            &mut out,
            image::codecs::png::CompressionType::Fast,
            image::codecs::png::FilterType::Sub,
        )
        .write_image(img.as_raw(), 5000, 4000, image::ExtendedColorType::Rgb8)
        .unwrap();
    }
    let later = refdir.join("bridge-mods/high-contrast.jpg");
    let mut chosen: Vec<PathBuf> = rgb.clone();
    chosen.extend(jpegs.iter().cloned());
    chosen.push(not_image.clone());
    chosen.push(big_jpeg.clone());
    chosen.push(huge_png.clone());

    // Server on a real socket, SQLite store.
    let db = TestDb::sqlite();
    let state = AppState::start(db.store().await, test_config()).await.expect("start");
    let log: Log = Arc::default();
    let server = start_server(&state, &log, "127.0.0.1:0").await;
    let origin = format!("http://{}", server.addr);

    let mut d = Driver::start(&chromedriver, &chromium, &downloads).await;

    // 1. The empty page.
    d.goto(&format!("{origin}/protect")).await;
    d.wait_for("document.body.dataset.hasher === 'ready'", "the hasher to load").await;
    assert!(d.js("return location.pathname").await == json!("/protect/"), "/protect redirects to /protect/");

    let intro = d.text("main").await;
    for words in [
        "What is sent",
        "What is not sent",
        "Who receives the codes",
        "How to withdraw",
        "never leave this device",
    ] {
        assert!(intro.contains(words), "the page explains {words:?}: {intro}");
    }
    let unlabeled = d
        .js("return Array.from(document.querySelectorAll('input, button, select, textarea, a'))
              .filter(e => !((e.labels && e.labels.length) || e.getAttribute('aria-label') || e.textContent.trim()))
              .map(e => e.outerHTML);")
        .await;
    assert_eq!(unlabeled, json!([]), "every control has a label");
    d.screenshot("01-protect-empty").await;

    // 2. Dozens of files at once.
    d.choose_files("#files", &chosen).await;
    d.wait_for(
        &format!(
            "document.body.dataset.busy === 'no' && document.querySelectorAll('#results li').length === {}",
            chosen.len()
        ),
        "every file to be processed",
    )
    .await;
    let progress = d.text("#progress-text").await;
    assert!(progress.contains(&format!("{0} of {0}", chosen.len())), "progress: {progress}");
    d.screenshot("02-protect-hashed").await;
    let shown = items(&mut d).await;
    let by_name: BTreeMap<String, Item> = shown.iter().map(|i| (i.name.clone(), i.clone())).collect();
    let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();

    // Bit for bit with `consentry hash` and `consentry derive` on the reference pixels (the
    // derive extraction in wasm32 runs the portable code path, natively it may run AVX2).
    let mut exact = 0;
    for p in &rgb {
        let item = &by_name[&name(p)];
        let bytes = std::fs::read(p).unwrap();
        let (h, q, _, _) = cli_hash(&bytes);
        assert_eq!(
            item.hash.as_deref(),
            Some(h.to_hex().as_str()),
            "{}: page hash vs consentry hash",
            item.name
        );
        assert_eq!(
            item.derive.as_deref(),
            Some(cli_derive(&bytes).as_str()),
            "{}: page vs consentry derive",
            item.name
        );
        assert_eq!(item.quality, Some(q), "{}: quality", item.name);
        let expect_state = if q >= 50 { "ok" } else { "low" };
        assert_eq!(item.state, expect_state, "{}: {}", item.name, item.status);
        exact += 1;
    }
    // JPEGs: another decoder (Chromium's libjpeg-turbo), so Meta's tolerance; EXIF orientation
    // applied as `consentry hash` does (a wrong orientation would be ~128 bits away).
    let mut jpeg_distances = Vec::new();
    for p in &jpegs {
        let item = &by_name[&name(p)];
        let (h, q, w, hh) = cli_hash(&std::fs::read(p).unwrap());
        let page = Hash256::from_hex(item.hash.as_deref().expect("jpeg hashed")).unwrap();
        let dist = page.distance(&h);
        jpeg_distances.push((item.name.clone(), dist, q, item.size.clone(), format!("{w}x{hh}")));
        if q >= 80 {
            assert!(dist <= 10, "{}: distance {dist} to consentry hash (quality {q})", item.name);
        }
    }
    eprintln!("JPEG distances page vs consentry hash (name, distance, quality, page size, consentry size): {jpeg_distances:?}");
    // The non-image.
    let ni = &by_name[&name(&not_image)];
    assert_eq!((ni.state.as_str(), ni.hash.as_ref()), ("error", None), "{ni:?}");
    assert!(ni.status.contains("not a photo"), "{}", ni.status);
    // The large JPEG (5.5 MP, under the page's memory bound): hashed at full size, close to
    // `consentry hash`.
    let bj = &by_name[&name(&big_jpeg)];
    let (h, _, w, hh) = cli_hash(&std::fs::read(&big_jpeg).unwrap());
    assert_eq!(bj.size.as_deref(), Some("2600x2100"), "{bj:?}");
    assert!(!bj.status.contains("reduced"), "{}", bj.status);
    let big_dist = Hash256::from_hex(bj.hash.as_deref().unwrap()).unwrap().distance(&h);
    eprintln!("large JPEG: page at 2600x2100, consentry hash at {w}x{hh}, distance {big_dist}");
    assert!(big_dist <= 10, "large JPEG: distance {big_dist}");
    // The 20 MP PNG: hashed reduced; the wasm memory never held it at full size.
    let hp = &by_name[&name(&huge_png)];
    assert_eq!(hp.size.as_deref(), Some("2500x2000"), "{hp:?}");
    let mem = d.js("return Number(document.body.dataset.wasmMemory);").await.as_u64().unwrap();
    // The page hashes at most 12.6 MP at once (about 9.5 bytes per pixel in wasm memory, which
    // never shrinks): about 120 MB. Holding the 20 MP image whole would take about 190 MB.
    assert!(mem < 150_000_000, "wasm memory {mem} bytes: more than the 12.6 MP bound allows");
    let (h, _, _, _) = cli_hash(&std::fs::read(&huge_png).unwrap());
    let huge_dist = Hash256::from_hex(hp.hash.as_deref().unwrap()).unwrap().distance(&h);
    eprintln!("20 MP PNG: page at 2500x2000, consentry hash at full size, distance {huge_dist}; wasm memory {mem} bytes");
    assert!(huge_dist <= 31, "20 MP PNG: distance {huge_dist}");

    // 3. Send.
    let usable: BTreeSet<String> =
        shown.iter().filter(|i| i.state == "ok").filter_map(|i| i.hash.clone()).collect();
    d.click("#send").await;
    d.wait_for("document.body.dataset.sendResult === 'created'", "the case").await;
    let number = d.text("#case-number").await;
    let pin = d.text("#case-pin").await;
    assert!(number.len() == 14 && pin.len() == 10, "case {number:?} pin {pin:?}");
    assert!(d.text("#case").await.contains("shown only this once"));
    d.screenshot("03-protect-case-created").await;

    let first_case = {
        let reqs = log.lock().unwrap().clone();
        let posts: Vec<&Recorded> = reqs.iter().filter(|r| r.method == "POST").collect();
        assert_eq!(posts.len(), 1, "{posts:?}");
        assert_eq!(posts[0].uri, "/v1/cases");
        let v: Value = serde_json::from_slice(&posts[0].body).unwrap();
        assert_eq!(v.as_object().unwrap().keys().collect::<Vec<_>>(), vec!["hashes"], "{v}");
        // Per usable photo: its PDQ hash with its quality, then its derivative signature (whose
        // own PDQ is that hash).
        let mut sent = BTreeSet::new();
        let codes = v["hashes"].as_array().unwrap();
        assert_eq!(codes.len(), 2 * usable.len(), "{v}");
        for pair in codes.chunks(2) {
            let (o, dv) = (pair[0].as_object().unwrap(), pair[1].as_object().unwrap());
            let keys = |o: &serde_json::Map<String, Value>| o.keys().cloned().collect::<BTreeSet<String>>();
            assert_eq!(keys(o), ["hash", "quality"].map(String::from).into_iter().collect());
            assert_eq!(keys(dv), ["hash", "signal"].map(String::from).into_iter().collect());
            assert!(o["quality"].as_u64().unwrap() >= 50);
            assert_eq!(dv["signal"], "derive");
            let sig =
                consentry_derive::Signature::from_base64(dv["hash"].as_str().unwrap()).expect("a signature");
            assert_eq!(
                Some(sig.pdq.to_hex().as_str()),
                o["hash"].as_str(),
                "the signature belongs to the photo"
            );
            sent.insert(o["hash"].as_str().unwrap().to_owned());
        }
        assert_eq!(sent, usable, "exactly the usable hashes were sent (duplicates once)");
        sent
    };

    // 4. The server goes down: clear message, nothing lost, save to a file, retry.
    d.choose_files("#files", std::slice::from_ref(&later)).await;
    d.wait_for("document.body.dataset.busy === 'no'", "the extra photo").await;
    let addr = server.addr;
    server.stop().await;
    d.click("#send").await;
    d.wait_for("document.body.dataset.sendResult === 'unreachable'", "the unreachable message").await;
    let err = d.text("#send-error").await;
    assert!(err.contains("could not be reached") && err.contains("Nothing is lost"), "{err}");
    let later_item = items(&mut d).await.into_iter().find(|i| i.name == name(&later)).unwrap();
    let later_hash = later_item.hash.clone().expect("still shown");
    d.screenshot("04-protect-server-down").await;
    d.click("#save").await;
    let saved = downloads.join("consentry-codes.csv");
    let started = Instant::now();
    while !saved.exists() && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let csv = std::fs::read_to_string(&saved).expect("the codes were saved to a file");
    // A header, then per usable photo (the unsent one too) its PDQ line and its signature line.
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "hash,quality,path,signal_type", "{csv}");
    assert_eq!(lines.len(), 1 + 2 * (usable.len() + 1), "{csv}");
    let later_pdq = format!("{later_hash},{},\"{}\",pdq", later_item.quality.unwrap(), name(&later));
    assert!(lines.contains(&later_pdq.as_str()), "saved file holds the unsent hash: {csv}");
    let later_sig = later_item.derive.clone().expect("derive computed");
    assert!(lines.iter().any(|l| l.starts_with(&format!("{later_sig},")) && l.ends_with(",derive")), "{csv}");
    // A helpline imports the file into a bank as it is: every line is taken, both signals match.
    {
        let db = TestDb::sqlite();
        let helpline = common::TestApp::on(&db, test_config()).await;
        helpline.create_bank("saved").await;
        let (s, v) = helpline
            .upload(
                "/v1/banks/saved/import?format=csv",
                Some(&helpline.curate),
                "text/csv",
                csv.clone().into_bytes(),
            )
            .await;
        assert_eq!(s.as_u16(), 200, "{v}");
        assert_eq!(v["added"], lines.len() - 1, "{v}");
        assert_eq!(v["rejected"].as_array().map_or(0, |r| r.len()), 0, "{v}");
        let later = Hash256::from_hex(&later_hash).unwrap();
        assert!(
            common::within(Duration::from_secs(2), || async { !helpline.matches(&later).await.is_empty() })
                .await
                .is_some(),
            "the imported PDQ hash matches"
        );
        let idx = helpline.state.derive_index().clone();
        assert!(
            common::within(Duration::from_secs(2), || async { idx.len() == usable.len() + 1 })
                .await
                .is_some(),
            "every imported signature is in the derivative index"
        );
    }
    let server = start_server(&state, &log, &addr.to_string()).await;
    d.click("#send").await;
    d.wait_for("document.body.dataset.sendResult === 'created'", "the second case").await;
    let number2 = d.text("#case-number").await;
    let pin2 = d.text("#case-pin").await;
    assert_ne!(number2, number);
    d.screenshot("05-protect-retried").await;
    {
        let reqs = log.lock().unwrap().clone();
        let last = reqs.iter().rev().find(|r| r.method == "POST").unwrap();
        let v: Value = serde_json::from_slice(&last.body).unwrap();
        assert_eq!(
            v,
            json!({"hashes": [
                {"hash": later_hash, "quality": later_item.quality},
                {"signal": "derive", "hash": later_item.derive.clone().expect("derive computed")},
            ]}),
            "only the unsent photo's codes"
        );
    }

    // 5. Status, wrong PIN, withdrawal, status again.
    d.goto(&format!("{origin}/protect/status.html")).await;
    d.type_into("#number", &number).await;
    d.type_into("#pin", "0000000000").await;
    d.click("#go").await;
    d.wait_for("document.body.dataset.result === 'error'", "the wrong-PIN message").await;
    assert!(d.text("#form-error").await.contains("not right"));
    d.screenshot("06-status-wrong-pin").await;
    d.type_into("#pin", &pin).await;
    d.click("#go").await;
    d.wait_for("document.body.dataset.result === 'received'", "the case status").await;
    let text = d.text("#result").await;
    assert!(text.contains(&number), "{text}");
    assert!(text.contains(&format!("{0} of {0} codes are active", first_case.len())), "{text}");
    assert!(text.contains("No copy of your photos has been found so far."), "{text}");
    // Copies are stopped (one code matched by a platform, two by a chat): the status says how
    // often and in how many places, never which.
    let ids: Vec<i64> =
        state.store().case_status(&number, &pin).await.unwrap().entries.iter().map(|e| e.id).collect();
    state.count_matches("platform-x", [ids[0]]);
    state.count_matches("telegram:-100", [ids[0], ids[1]]);
    d.click("#go").await;
    d.wait_for("document.getElementById('result-caught').textContent.includes(': 3.')", "the counts").await;
    let text = d.text("#result-caught").await;
    assert!(
        text.starts_with("Copies of your photos stopped so far: 3. Places where they were found: 2."),
        "{text}"
    );
    assert!(!text.contains("platform-x") && !text.contains("telegram"), "{text}");
    d.screenshot("07-status-received").await;

    d.goto(&format!("{origin}/protect/withdraw.html")).await;
    d.type_into("#number", &number.replace('-', " ")).await;
    d.type_into("#pin", &pin).await;
    d.click("#go").await;
    d.wait_for("document.body.dataset.result === 'error'", "the confirmation request").await;
    assert!(d.text("#form-error").await.contains("Tick the box"));
    // By keyboard only: the error put the focus on the box; Space ticks it, Tab reaches the
    // button, Enter withdraws.
    assert_eq!(d.js("return document.activeElement.id").await, json!("confirm"));
    d.keys(" \u{E004}").await;
    assert_eq!(
        d.js("return [document.getElementById('confirm').checked, document.activeElement.id]").await,
        json!([true, "go"])
    );
    d.keys("\u{E007}").await;
    d.wait_for("document.body.dataset.result === 'withdrawn'", "the withdrawal").await;
    assert!(d.text("#result").await.contains("is withdrawn"));
    d.screenshot("08-withdrawn").await;

    d.goto(&format!("{origin}/protect/status.html")).await;
    d.type_into("#number", &number).await;
    d.type_into("#pin", &pin).await;
    d.click("#go").await;
    d.wait_for("document.body.dataset.result === 'withdrawn'", "the withdrawn status").await;
    let text = d.text("#result").await;
    assert!(text.contains(&format!("0 of {} codes are active", first_case.len())), "{text}");
    assert!(text.contains("stopped so far: 3."), "what was caught before the withdrawal stays: {text}");
    d.screenshot("09-status-withdrawn").await;
    // Once the retention deleted its codes, the page says so (not "0 of 0 codes").
    let cut = consentry_store::Timestamp(consentry_store::Timestamp::now().0 + 1);
    let retention = consentry_store::Actor::named("test");
    let purged = state.store().purge_withdrawn_cases(&retention, cut, 1000).await.unwrap();
    assert_eq!(purged, 2 * first_case.len() as u64, "each photo's PDQ and derive codes");
    d.click("#go").await;
    d.wait_for(
        "!document.getElementById('result-hashes').textContent.includes('active')",
        "the purged status",
    )
    .await;
    let text = d.text("#result").await;
    assert!(text.contains("Your codes have been deleted from the service."), "{text}");
    // The second case is untouched.
    let view = state.store().case_status(&number2, &pin2).await.unwrap();
    assert_eq!(view.case.status.as_str(), "received");

    // 6. French.
    d.goto(&format!("{origin}/protect/?lang=fr")).await;
    d.wait_for("document.body.dataset.hasher === 'ready'", "the French page").await;
    assert_eq!(d.js("return document.documentElement.lang").await, json!("fr"));
    let fr = d.text("main").await;
    assert!(fr.contains("Protégez vos photos") && fr.contains("Ce qui n’est pas envoyé"), "{fr}");
    d.choose_files("#files", &[rgb[0].clone(), not_image.clone()]).await;
    d.wait_for("document.body.dataset.busy === 'no'", "the French hashing").await;
    assert!(d.text("#results").await.contains("n’est pas une photo"));
    d.screenshot("10-protect-fr").await;
    d.goto(&format!("{origin}/protect/withdraw.html?lang=fr")).await;
    assert!(d.text("h1").await.contains("Retirer votre dossier"));
    d.screenshot("11-withdraw-fr").await;

    // 7. Every request the page made: same origin, and no body carries image bytes.
    d.collect_network_log().await;
    let perf = std::mem::take(&mut d.perf);
    d.quit().await;
    server.stop().await;

    let reqs = log.lock().unwrap().clone();
    let mut prints = Vec::new();
    for p in chosen.iter().chain([&later]) {
        let bytes = std::fs::read(p).unwrap();
        prints.extend(fingerprints(&bytes));
    }
    // No body is larger than the codes of every chosen photo: per photo a PDQ line and a
    // derivative signature in base64 (at most 4/3 of MAX_SIGNATURE_BYTES), with their JSON.
    let body_bound = 1024 + (chosen.len() + 1) * (200 + consentry_derive::MAX_SIGNATURE_BYTES * 4 / 3);
    for r in &reqs {
        assert!(r.body.len() < body_bound, "{} {}: body of {} bytes", r.method, r.uri, r.body.len());
        assert!(!is_image_magic(&r.body), "{} {}: image bytes", r.method, r.uri);
        for f in &prints {
            assert!(!contains(&r.body, f), "{} {}: body carries bytes of a chosen file", r.method, r.uri);
        }
        if r.method != "GET" {
            assert!(r.uri.starts_with("/v1/cases"), "unexpected {} {}", r.method, r.uri);
        }
    }
    let mut seen_by_browser = 0;
    for m in perf.iter().filter(|m| m["method"] == "Network.requestWillBeSent") {
        let req = &m["params"]["request"];
        let url = req["url"].as_str().unwrap_or("");
        assert!(
            url.starts_with(&format!("http://{addr}/"))
                || url.starts_with("blob:")
                || url.starts_with("data:"),
            "the page asked another origin: {url}"
        );
        if req["hasPostData"] == json!(true) {
            let post = req["postData"].as_str().unwrap_or_else(|| {
                let entries = req["postDataEntries"].as_array().cloned().unwrap_or_default();
                assert!(!entries.is_empty(), "a request body Chromium did not show: {url}");
                ""
            });
            assert!(post.len() < body_bound && !is_image_magic(post.as_bytes()), "{url}");
            for f in &prints {
                assert!(!contains(post.as_bytes(), f), "{url}: body carries bytes of a chosen file");
            }
        }
        seen_by_browser += 1;
    }
    assert!(
        seen_by_browser >= reqs.len() / 2,
        "the network log saw {seen_by_browser} requests, the server {}",
        reqs.len()
    );
    eprintln!(
        "protect page: {exact} reference PNGs bit-exact, {} requests recorded by the server, {seen_by_browser} by Chromium, none with image bytes; screenshots in {}",
        reqs.len(),
        shots.display()
    );
}

/// The static files, without a browser: redirect, content types, the security headers.
#[tokio::test]
async fn protect_files_are_served_with_a_strict_policy() {
    use axum::http::{header, Request as HttpRequest, StatusCode};
    use tower::ServiceExt;
    let db = TestDb::sqlite();
    let state = AppState::start(db.store().await, test_config()).await.expect("start");
    let router = app(state);
    let get = |path: &str| HttpRequest::builder().uri(path).body(Body::empty()).unwrap();
    let r = router.clone().oneshot(get("/protect")).await.unwrap();
    assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(r.headers()[header::LOCATION], "protect/");
    for (path, ctype) in [
        ("/protect/", "text/html; charset=utf-8"),
        ("/protect/status.html", "text/html; charset=utf-8"),
        ("/protect/withdraw.html", "text/html; charset=utf-8"),
        ("/protect/protect.js", "text/javascript; charset=utf-8"),
        ("/protect/style.css", "text/css; charset=utf-8"),
    ] {
        let r = router.clone().oneshot(get(path)).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(r.headers()[header::CONTENT_TYPE], ctype, "{path}");
        let csp = r.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"), "{csp}");
        let body = http_body_util::BodyExt::collect(r.into_body()).await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains("http://") && !text.contains("https://"), "{path} refers to another site");
    }
    let r = router.clone().oneshot(get("/protect/pdq.wasm")).await.unwrap();
    if protect::wasm_available() {
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/wasm");
    } else {
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    let r = router.clone().oneshot(get("/protect/../Cargo.toml")).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = router.oneshot(get("/protect/nothing.js")).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
