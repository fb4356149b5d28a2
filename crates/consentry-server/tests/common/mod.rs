//! Test harness: a real store (SQLite in a temporary directory, or a fresh PostgreSQL schema),
//! the real router driven with `oneshot`, API keys of each scope, and benign generated images.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use consentry_pdq::Hash256;
use consentry_server::{app, AppState, ServerConfig};
use consentry_store::{Actor, PinKdf, Scope, Store, StoreLocation, StoreOptions};
use http_body_util::BodyExt;
use rand::seq::SliceRandom;
use serde_json::Value;
use sqlx::Connection;
use tower::ServiceExt;

pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn pg_url() -> String {
    std::env::var("CONSENTRY_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned())
}

/// Cheap Argon2 so PIN tests stay fast (production uses the store's default).
pub fn test_store_options() -> StoreOptions {
    StoreOptions {
        pin_kdf: PinKdf { memory_kib: 1024, iterations: 1, parallelism: 1 },
        ..StoreOptions::default()
    }
}

pub fn test_config() -> ServerConfig {
    ServerConfig { poll_interval: Duration::from_millis(100), ..ServerConfig::default() }
}

/// Drops the PostgreSQL schema when the test ends, passed or panicked.
pub struct SchemaGuard(pub Option<String>);

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let Some(schema) = self.0.take() else { return };
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                if let Ok(mut c) = sqlx::PgConnection::connect(&pg_url()).await {
                    let _ = sqlx::raw_sql("SET lock_timeout = '10s'").execute(&mut c).await;
                    let _ = sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                        .execute(&mut c)
                        .await;
                }
            });
        })
        .join();
    }
}

/// A database for one test.
pub struct TestDb {
    pub location: StoreLocation,
    pub _dir: Option<tempfile::TempDir>,
    pub _guard: SchemaGuard,
}

impl TestDb {
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("tempdir");
        let location = StoreLocation::Sqlite(dir.path().join("data").join("consentry.db"));
        TestDb { location, _dir: Some(dir), _guard: SchemaGuard(None) }
    }

    pub async fn postgres() -> TestDb {
        let url = pg_url();
        if let Err(e) = sqlx::PgConnection::connect(&url).await {
            panic!(
                "PostgreSQL is not reachable at {url} ({e}); these tests are not skipped: start it with \
                 `pg_ctlcluster --skip-systemctl-redirect 15 main start` (or set CONSENTRY_TEST_PG_URL)"
            );
        }
        let schema = format!("t_{:016x}", rand::random::<u64>());
        let location = StoreLocation::Postgres { url, schema: Some(schema.clone()) };
        TestDb { location, _dir: None, _guard: SchemaGuard(Some(schema)) }
    }

    pub async fn store(&self) -> Store {
        Store::open(self.location.clone(), test_store_options()).await.expect("open store")
    }
}

/// One server instance (state + router) with keys of each scope.
pub struct TestApp {
    pub state: AppState,
    pub router: Router,
    pub admin: String,
    pub lookup: String,
    pub curate: String,
}

impl TestApp {
    pub async fn on(db: &TestDb, config: ServerConfig) -> TestApp {
        TestApp::with_store(db.store().await, config).await
    }

    /// A server on a store opened by the caller (e.g. with other [`StoreOptions`]).
    pub async fn with_store(store: Store, config: ServerConfig) -> TestApp {
        let admin = store.create_api_key(&Actor::system(), "admin", &[Scope::Admin]).await.unwrap().secret;
        let lookup = store.create_api_key(&Actor::system(), "lookup", &[Scope::Lookup]).await.unwrap().secret;
        let curate = store.create_api_key(&Actor::system(), "curate", &[Scope::Curate]).await.unwrap().secret;
        let state = AppState::start(store, config).await.expect("start app");
        let router = app(state.clone());
        TestApp { state, router, admin, lookup, curate }
    }

    /// Sends `req` through the router; every reply is also checked against `/openapi.json`
    /// ([`check_documented`]).
    pub async fn request(&self, req: Request<Body>) -> (StatusCode, Value) {
        let (method, path) = (req.method().clone(), req.uri().path().to_owned());
        let resp = self.router.clone().oneshot(req).await.expect("router");
        let status = resp.status();
        let content_type =
            resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        check_documented(&method, &path, status, content_type.as_deref(), !bytes.is_empty(), &v);
        (status, v)
    }

    /// A JSON request (`body` None → empty body).
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(k) = key {
            b = b.header(header::AUTHORIZATION, format!("Bearer {k}"));
        }
        let req = match body {
            Some(v) => b.header(header::CONTENT_TYPE, "application/json").body(Body::from(v.to_string())),
            None => b.body(Body::empty()),
        }
        .unwrap();
        self.request(req).await
    }

    /// Raw bytes with a content type.
    pub async fn upload(
        &self,
        uri: &str,
        key: Option<&str>,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut b =
            Request::builder().method(Method::POST).uri(uri).header(header::CONTENT_TYPE, content_type);
        if let Some(k) = key {
            b = b.header(header::AUTHORIZATION, format!("Bearer {k}"));
        }
        self.request(b.body(Body::from(bytes)).unwrap()).await
    }

    /// The bank names of `hash`'s matches (as a lookup-scoped client sees them).
    pub async fn matches(&self, hash: &Hash256) -> Vec<Value> {
        let (s, v) = self
            .call(Method::GET, &format!("/v1/lookup?hash={}", hash.to_hex()), Some(&self.lookup), None)
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["matches"].as_array().cloned().unwrap_or_default()
    }

    pub async fn create_bank(&self, name: &str) -> Value {
        let (s, v) = self
            .call(Method::POST, "/v1/banks", Some(&self.curate), Some(serde_json::json!({ "name": name })))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v
    }

    pub async fn add_entry(&self, bank: &str, hash: &Hash256, metadata: Value) -> i64 {
        let (s, v) = self
            .call(
                Method::POST,
                &format!("/v1/banks/{bank}/entries"),
                Some(&self.curate),
                Some(serde_json::json!({ "hash": hash.to_hex(), "metadata": metadata })),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["id"].as_i64().unwrap()
    }
}

/// Polls `f` until it is true or `limit` passes; returns the time it took.
pub async fn within<F, Fut>(limit: Duration, mut f: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if f().await {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A random hash that looks like a real PDQ hash: exactly 128 one bits.
pub fn random_pdq() -> Hash256 {
    let mut rng = rand::thread_rng();
    let mut bits: Vec<u32> = (0..256).collect();
    bits.shuffle(&mut rng);
    let mut h = Hash256::ZERO;
    for &b in &bits[..128] {
        h.set_bit(b);
    }
    h
}

/// `h` with its first `n` bits flipped (distance `n`).
pub fn flip(h: &Hash256, n: u32) -> Hash256 {
    let mut x = *h;
    for b in 0..n {
        x.flip_bit(b);
    }
    x
}

/// A benign generated image: smooth colour gradients with a few soft blobs placed by `seed`.
pub fn test_image(seed: u32, w: u32, h: u32) -> image::RgbImage {
    let s = seed as f32;
    image::RgbImage::from_fn(w, h, |x, y| {
        let fx = x as f32 / w as f32;
        let fy = y as f32 / h as f32;
        let blob = |cx: f32, cy: f32, r: f32| {
            let d = ((fx - cx).powi(2) + (fy - cy).powi(2)).sqrt();
            (1.0 - (d / r).min(1.0)) * 120.0
        };
        let b1 = blob(0.2 + 0.6 * ((s * 0.37).sin() * 0.5 + 0.5), 0.3, 0.25);
        let b2 = blob(0.7, 0.2 + 0.6 * ((s * 0.71).cos() * 0.5 + 0.5), 0.2);
        let wave = ((fx * (3.0 + s % 5.0) + fy * 2.0) * std::f32::consts::PI).sin() * 40.0;
        let r = (fx * 150.0 + b1 + wave).clamp(0.0, 255.0) as u8;
        let g = (fy * 150.0 + b2 - wave * 0.5).clamp(0.0, 255.0) as u8;
        let b = ((1.0 - fx) * 100.0 + b1 * 0.5 + b2 * 0.5).clamp(0.0, 255.0) as u8;
        image::Rgb([r, g, b])
    })
}

pub fn png_bytes(img: &image::RgbImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).expect("encode png");
    out.into_inner()
}

pub fn jpeg_bytes(img: &image::RgbImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).expect("encode jpeg");
    out.into_inner()
}

/// A multipart/form-data body with one field `name` holding `bytes`; returns (content type, body).
pub fn multipart(name: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = "consentry-test-boundary-7d1f";
    let mut body = Vec::new();
    body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
    body.extend_from_slice(
        format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"x.png\"\r\nContent-Type: image/png\r\n\r\n")
            .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// The operation of `/openapi.json` that serves `method` on `path` (a template segment such as
/// `{id}` matches any one segment; literal segments win), if the document has one.
pub fn documented_operation(method: &Method, path: &str) -> Option<(String, Value)> {
    static DOC: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(consentry_server::openapi_document);
    let segs: Vec<&str> = path.split('/').collect();
    let mut best: Option<(usize, String, Value)> = None;
    for (template, item) in doc["paths"].as_object()? {
        let Some(op) = item.get(method.as_str().to_ascii_lowercase()) else { continue };
        let t: Vec<&str> = template.split('/').collect();
        if t.len() != segs.len() {
            continue;
        }
        let mut holes = 0;
        let fits = t.iter().zip(&segs).all(|(a, b)| {
            let hole = a.starts_with('{');
            holes += usize::from(hole);
            (hole && !b.is_empty()) || a == b
        });
        if fits && best.as_ref().map_or(true, |(h, _, _)| holes < *h) {
            best = Some((holes, template.clone(), op.clone()));
        }
    }
    best.map(|(_, t, op)| (t, op))
}

/// Fails the test when a documented operation answers a status the document does not list for
/// it, a body of a media type not listed for that status, or an error without a documented
/// error code. Requests to undocumented routes (the protect page, unknown paths, other
/// methods) are not checked.
pub fn check_documented(
    method: &Method,
    path: &str,
    status: StatusCode,
    content_type: Option<&str>,
    has_body: bool,
    body: &Value,
) {
    let Some((template, op)) = documented_operation(method, path) else { return };
    let what = format!("{method} {path} ({template}) answered {status}");
    let Some(reply) = op["responses"].get(status.as_str()) else {
        panic!("{what}, which /openapi.json does not list: {body}");
    };
    if has_body {
        let media = content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
        let listed =
            reply["content"].as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
        assert!(
            media.as_ref().is_some_and(|m| listed.contains(m)),
            "{what} with content type {content_type:?}, not among {listed:?}"
        );
    }
    if status.is_client_error() || status.is_server_error() {
        let code = body["error"]["code"].as_str();
        assert!(
            code.is_some_and(|c| consentry_server::codes::ALL.contains(&c)),
            "{what} without a documented error code: {body}"
        );
    }
}

/// A TCP forwarder to the test PostgreSQL server that a test can cut, as a database restart, a
/// failover or the network would: [`PgProxy::cut`] closes every forwarded connection and refuses
/// new ones until [`PgProxy::restore`].
pub struct PgProxy {
    /// `pg_url()` with its host and port replaced by the forwarder's.
    pub url: String,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cuts: tokio::sync::watch::Sender<u64>,
}

impl PgProxy {
    pub async fn start() -> PgProxy {
        use std::sync::atomic::Ordering;
        let url = pg_url();
        let (scheme_user, rest) = url.split_once('@').expect("PostgreSQL URL with user@host");
        let (target, path) = rest.split_once('/').unwrap_or((rest, ""));
        let target = target.to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (cuts, _) = tokio::sync::watch::channel(0u64);
        let (u, c) = (up.clone(), cuts.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !u.load(Ordering::Acquire) {
                    continue; // dropped: the connection is refused
                }
                let mut cut = c.subscribe();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        PgProxy { url: format!("{scheme_user}@127.0.0.1:{port}/{path}"), up, cuts }
    }

    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::Release);
        self.cuts.send_modify(|n| *n += 1);
    }

    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::Release);
    }
}
