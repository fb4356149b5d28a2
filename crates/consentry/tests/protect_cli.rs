//! `consentry protect` and `consentry case`, the real binary against a real `consentry serve`:
//! photos hashed here, only codes sent, a case number and PIN back; status with what was caught,
//! withdrawal; and what leaves the machine, recorded by a stand-in service.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use consentry_pdq::Hash256;
use serde_json::{json, Value};
use tokio::process::Command;

use crate::derive_cli::scene_png;
use crate::serve::{create_key, matches, start, BIN};

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `consentry ARGS` with `stdin` as its standard input and without `$CONSENTRY_PIN` unless
/// `pin_env` gives it.
async fn consentry(args: &[&str], cwd: &Path, pin_env: Option<&str>, stdin: &str) -> Run {
    use tokio::io::AsyncWriteExt;
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(cwd).env_remove("CONSENTRY_PIN");
    if let Some(pin) = pin_env {
        cmd.env("CONSENTRY_PIN", pin);
    }
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn consentry");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// The photos of these tests: two scenes, a flat image (too plain to hash usefully), a file that
/// is not an image, and a copy of the first scene.
fn photos(dir: &Path) {
    std::fs::write(dir.join("a.png"), scene_png(320, 240, 11)).unwrap();
    std::fs::write(dir.join("b.png"), scene_png(300, 260, 12)).unwrap();
    std::fs::write(dir.join("a-again.png"), scene_png(320, 240, 11)).unwrap();
    let flat = image_of_one_colour(200, 150);
    std::fs::write(dir.join("flat.png"), flat).unwrap();
    std::fs::write(dir.join("notes.txt"), "not a photo").unwrap();
}

fn image_of_one_colour(w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header().unwrap().write_image_data(&vec![120u8; (w * h * 3) as usize]).unwrap();
    out
}

fn field<'a>(stdout: &'a str, name: &str) -> &'a str {
    stdout.lines().find_map(|l| l.strip_prefix(name)).unwrap_or_else(|| panic!("no `{name}` in {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protect_opens_a_case_that_status_and_withdraw_reach() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    photos(dir);
    let data = dir.join("data");
    let data_arg = data.to_str().unwrap();
    let mut server = start(&["--data-dir", data_arg], &[]).await;
    let base = server.base.clone();

    let p = consentry(
        &[
            "protect",
            "--server",
            &base,
            "--save",
            "codes.csv",
            "a.png",
            "b.png",
            "flat.png",
            "notes.txt",
            "a-again.png",
        ],
        dir,
        None,
        "",
    )
    .await;
    // The plain and the non-image files are left out (exit status 1), the copy sent once.
    assert_eq!(p.code, Some(1), "{}", p.stderr);
    assert!(p.stderr.contains("flat.png: left out: quality"), "{}", p.stderr);
    assert!(p.stderr.contains("notes.txt: left out"), "{}", p.stderr);
    assert!(p.stderr.contains("a-again.png: the same photo as one before"), "{}", p.stderr);
    let number = field(&p.stdout, "Case number: ").to_owned();
    let pin = field(&p.stdout, "PIN: ").to_owned();
    assert_eq!((number.len(), pin.len()), (14, 10), "{}", p.stdout);

    // The saved codes are the page's file: per photo its PDQ line (the hash `consentry hash`
    // prints) and its derivative signature, under the file's name.
    let csv = std::fs::read_to_string(dir.join("codes.csv")).unwrap();
    let lines: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(lines[0], ["hash", "quality", "path", "signal_type"]);
    assert_eq!(lines.len(), 5, "{csv}");
    let hash_cmd = consentry(&["hash", "a.png", "b.png"], dir, None, "").await;
    assert_eq!(hash_cmd.code, Some(0), "{}", hash_cmd.stderr);
    for (photo, hash_line) in ["a.png", "b.png"].iter().zip(hash_cmd.stdout.lines()) {
        let cols: Vec<&str> = hash_line.split('\t').collect();
        let pdq = lines.iter().find(|l| l[2] == *photo && l[3] == "pdq").expect(photo);
        assert_eq!((pdq[0], pdq[1]), (cols[0], cols[1]), "{photo}");
        let derive = lines.iter().find(|l| l[2] == *photo && l[3] == "derive").expect(photo);
        let sig = consentry_derive::Signature::from_base64(derive[0]).unwrap();
        assert_eq!(sig.pdq.to_hex(), cols[0]);
    }

    // The case's codes match: a lookup of photo a's hash finds it in the survivors' bank.
    let a_hash = Hash256::from_hex(lines.iter().find(|l| l[2] == "a.png").unwrap()[0]).unwrap();
    let key = create_key(&data, "lookup");
    let c = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while matches(&c, &base, &key, &a_hash).await == 0 {
        assert!(Instant::now() < deadline, "the case's hash never matched");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Status, the PIN from the environment, the number typed any way: one copy stopped.
    let compact = number.replace('-', "").to_lowercase();
    let s = consentry(&["case", "status", "--server", &base, &compact], dir, Some(&pin), "").await;
    assert_eq!(s.code, Some(0), "{}", s.stderr);
    assert!(s.stdout.starts_with(&format!("Case {number}: received\n")), "{}", s.stdout);
    assert!(s.stdout.contains("Codes active: 4 of 4\n"), "{}", s.stdout);
    assert!(s.stdout.contains("Copies stopped: 1, in 1 place(s); the last on "), "{}", s.stdout);
    assert!(!s.stdout.contains(&pin) && !s.stderr.contains(&pin), "the PIN is not echoed");

    // A wrong PIN on standard input; a withdrawal without --yes: clear errors, nothing changes.
    let s = consentry(&["case", "status", "--server", &base, &number], dir, None, "0000000000\n").await;
    assert_eq!(s.code, Some(2));
    assert!(s.stderr.contains("unknown case number or wrong PIN"), "{}", s.stderr);
    let w = consentry(&["case", "withdraw", "--server", &base, &number], dir, Some(&pin), "").await;
    assert_eq!(w.code, Some(2));
    assert!(w.stderr.contains("--yes"), "{}", w.stderr);
    assert_eq!(matches(&c, &base, &key, &a_hash).await, 1);

    // Withdrawn, with the PIN on standard input: the codes stop matching.
    let w =
        consentry(&["case", "withdraw", "--yes", "--server", &base, &number], dir, None, &format!("{pin}\n"))
            .await;
    assert_eq!(w.code, Some(0), "{}", w.stderr);
    assert!(w.stdout.contains("withdrawn"), "{}", w.stdout);
    let deadline = Instant::now() + Duration::from_secs(2);
    while matches(&c, &base, &key, &a_hash).await != 0 {
        assert!(Instant::now() < deadline, "the withdrawn hash still matches");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = consentry(&["case", "status", "--server", &base, &number], dir, Some(&pin), "").await;
    assert!(s.stdout.contains(": withdrawn\n") && s.stdout.contains("Codes active: 0 of 4"), "{}", s.stdout);
    // Once the service's retention deleted a withdrawn case's codes, the status says so.
    let store = consentry_store::Store::open_data_dir(&data).await.unwrap();
    let cut = consentry_store::Timestamp(consentry_store::Timestamp::now().0 + 1);
    let retention = consentry_store::Actor::named("test");
    assert_eq!(store.purge_withdrawn_cases(&retention, cut, 100).await.unwrap(), 4);
    store.close().await;
    let s = consentry(&["case", "status", "--server", &base, &number], dir, Some(&pin), "").await;
    assert!(s.stdout.contains("Codes: deleted from the service\n"), "{}", s.stdout);

    // A service that cannot be reached: the codes are saved all the same, and the error says
    // they were not sent.
    server.child.kill().await.unwrap();
    let p = consentry(&["protect", "--server", &base, "--save", "later.csv", "a.png"], dir, None, "").await;
    assert_eq!(p.code, Some(2));
    assert!(p.stderr.contains("the codes were not sent"), "{}", p.stderr);
    assert_eq!(std::fs::read_to_string(dir.join("later.csv")).unwrap().lines().count(), 3);
    assert!(p.stdout.is_empty());
}

/// What `consentry protect` sends, as a stand-in service receives it: codes only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protect_sends_codes_only() {
    use axum::{extract::State, routing::post, Json, Router};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    photos(dir);
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let app = Router::new()
        .route(
            "/v1/cases",
            post(|State(got): State<Arc<Mutex<Vec<Value>>>>, Json(body): Json<Value>| async move {
                got.lock().unwrap().push(body);
                (
                    axum::http::StatusCode::CREATED,
                    Json(json!({"case_number": "AAAA-BBBB-CCCC", "pin": "0123456789"})),
                )
            }),
        )
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let p = consentry(&["protect", "--server", &base, "a.png", "b.png"], dir, None, "").await;
    assert_eq!(p.code, Some(0), "{}", p.stderr);
    assert_eq!(p.stdout, "Case number: AAAA-BBBB-CCCC\nPIN: 0123456789\n");
    let bodies = got.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1);
    let hashes = bodies[0]["hashes"].as_array().unwrap();
    assert_eq!(bodies[0].as_object().unwrap().len(), 1, "nothing but the codes: {}", bodies[0]);
    assert_eq!(hashes.len(), 4);
    for pair in hashes.chunks(2) {
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&pair[0]), ["hash", "quality"]);
        assert_eq!(keys(&pair[1]), ["hash", "signal"]);
        assert_eq!(pair[1]["signal"], "derive");
    }
    let text = bodies[0].to_string();
    assert!(!text.contains("a.png") && !text.contains("b.png"), "no file name leaves the machine");

    // A refusal is shown with the service's own message.
    let refusing = Router::new().route(
        "/v1/cases",
        post(|| async {
            (
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                Json(json!({"error": {"code": "too_many_hashes", "message": "a case holds at most 1000 hashes"}})),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, refusing).await.unwrap() });
    let p = consentry(&["protect", "--server", &base, "a.png"], dir, None, "").await;
    assert_eq!(p.code, Some(2));
    assert!(p.stderr.contains("a case holds at most 1000 hashes"), "{}", p.stderr);
}
