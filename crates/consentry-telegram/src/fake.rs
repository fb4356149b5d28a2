//! A scripted fake Bot API server on loopback (feature `fake-api`), for the end-to-end tests and
//! the benchmark. It keeps Telegram's getUpdates semantics (an offset confirms every update
//! below it; long polling waits for new updates), serves getFile and file downloads from bytes
//! held in memory, answers the moderation methods, and records every call with its time.
//! Errors, delays and 429s can be scripted per method.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::Notify;

/// The bot token the fake server expects.
pub const TOKEN: &str = "123456:TEST-token";
/// The bot's username.
pub const BOT_USERNAME: &str = "consentry_test_bot";

/// One recorded call.
#[derive(Clone, Debug)]
pub struct Call {
    /// Bot API method, or `download` for file downloads.
    pub method: String,
    /// JSON parameters (for downloads: `{"path": ...}`).
    pub params: Value,
    /// When it arrived.
    pub at: Instant,
    /// Whether it was answered with a scripted failure.
    pub failed: bool,
}

/// A scripted answer for the next call of a method.
#[derive(Clone, Debug)]
pub enum Scripted {
    /// `ok: false` with this HTTP status / error code and description.
    Error(u16, String),
    /// 429 with `retry_after` seconds.
    TooManyRequests(u64),
    /// Wait this long, then answer normally (to trigger client timeouts).
    Delay(Duration),
    /// A 502 with an HTML body (a proxy in the way).
    BadGateway,
}

/// A file the fake server holds.
#[derive(Clone, Debug)]
pub struct FileSpec {
    /// Stable id.
    pub unique_id: String,
    /// Bytes served by the download URL.
    pub bytes: Arc<Vec<u8>>,
    /// `file_size` reported by getFile (`None`: absent).
    pub reported_size: Option<u64>,
}

#[derive(Default)]
struct Inner {
    updates: VecDeque<Value>,
    next_id: i64,
    files: HashMap<String, FileSpec>,
    calls: Vec<Call>,
    served: HashMap<i64, Instant>,
    scripts: HashMap<String, VecDeque<Scripted>>,
    members: HashMap<(i64, i64), String>,
    next_message_id: i64,
}

struct Shared {
    inner: Mutex<Inner>,
    new_update: Notify,
    new_call: Notify,
}

/// The running fake server (stops when dropped).
#[derive(Clone)]
pub struct FakeTelegram {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for FakeTelegram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeTelegram").field("addr", &self.addr).finish()
    }
}

impl Drop for FakeTelegram {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}

impl FakeTelegram {
    /// Starts the server on 127.0.0.1 (random port).
    pub async fn start() -> FakeTelegram {
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner { next_id: 1000, next_message_id: 100_000, ..Inner::default() }),
            new_update: Notify::new(),
            new_call: Notify::new(),
        });
        let app = Router::new()
            .route("/{bot}/{method}", post(method).get(method))
            .route("/file/{bot}/{*path}", get(download))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeTelegram { addr, shared, task: Arc::new(task) }
    }

    /// `http://127.0.0.1:port` (the bot's API URL).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an update, giving it the next `update_id` (returned).
    pub fn push_update(&self, mut update: Value) -> i64 {
        let id = {
            let mut g = self.lock();
            g.next_id += 1;
            let id = g.next_id;
            update["update_id"] = json!(id);
            g.updates.push_back(update);
            id
        };
        self.shared.new_update.notify_waiters();
        id
    }

    /// Queues a value as it is (malformed updates).
    pub fn push_raw(&self, update: Value) {
        self.lock().updates.push_back(update);
        self.shared.new_update.notify_waiters();
    }

    /// The id the next `push_update` will give.
    pub fn next_update_id(&self) -> i64 {
        self.lock().next_id + 1
    }

    /// Serves `bytes` for `file_id` (getFile reports their size).
    pub fn add_file(&self, file_id: &str, unique_id: &str, bytes: Vec<u8>) {
        let n = bytes.len() as u64;
        self.add_file_spec(
            file_id,
            FileSpec { unique_id: unique_id.into(), bytes: Arc::new(bytes), reported_size: Some(n) },
        );
    }

    /// Serves a file as specified.
    pub fn add_file_spec(&self, file_id: &str, spec: FileSpec) {
        self.lock().files.insert(file_id.to_owned(), spec);
    }

    /// Scripts the next answer(s) of `method` (`download` for file downloads).
    pub fn script(&self, method: &str, s: Scripted) {
        self.lock().scripts.entry(method.to_owned()).or_default().push_back(s);
    }

    /// getChatMember answers `status` for (chat, user); default "member".
    pub fn set_member(&self, chat: i64, user: i64, status: &str) {
        self.lock().members.insert((chat, user), status.to_owned());
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The parameters of every successful call of `method`.
    pub fn calls_to(&self, method: &str) -> Vec<Value> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.method == method && !c.failed)
            .map(|c| c.params.clone())
            .collect()
    }

    /// Successful calls of `method` with their times.
    pub fn timed_calls(&self, method: &str) -> Vec<(Value, Instant)> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.method == method && !c.failed)
            .map(|c| (c.params.clone(), c.at))
            .collect()
    }

    /// Forgets the recorded calls.
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// When an update was first handed to the bot.
    pub fn served_at(&self, update_id: i64) -> Option<Instant> {
        self.lock().served.get(&update_id).copied()
    }

    /// Updates not yet confirmed by an offset.
    pub fn pending(&self) -> usize {
        self.lock().updates.len()
    }

    /// Waits until `pred(calls)` holds (true) or `timeout` passes (false).
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&[Call]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.new_call.notified();
            if pred(&self.lock().calls) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return pred(&self.lock().calls);
            }
        }
    }
}

fn ok(result: Value) -> Response {
    axum::Json(json!({ "ok": true, "result": result })).into_response()
}

fn err(code: u16, description: &str) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
    (status, axum::Json(json!({ "ok": false, "error_code": code, "description": description })))
        .into_response()
}

/// Applies a scripted answer, if one is queued. `Some` means answer with it now.
/// `Some(None)`: the call was delayed and already recorded; answer normally without recording.
async fn scripted(shared: &Shared, method: &str, params: &Value) -> Option<Option<Response>> {
    let s = shared
        .inner
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .scripts
        .get_mut(method)
        .and_then(VecDeque::pop_front);
    match s? {
        Scripted::Error(code, d) => Some(Some(err(code, &d))),
        Scripted::TooManyRequests(secs) => Some(Some(
            (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(json!({
                    "ok": false, "error_code": 429,
                    "description": format!("Too Many Requests: retry after {secs}"),
                    "parameters": { "retry_after": secs },
                })),
            )
                .into_response(),
        )),
        Scripted::Delay(d) => {
            // Recorded now (the answer may come after the client gave up).
            record(shared, method, params.clone(), false);
            tokio::time::sleep(d).await;
            Some(None)
        }
        Scripted::BadGateway => Some(Some(
            (StatusCode::BAD_GATEWAY, [(header::CONTENT_TYPE, "text/html")], "<html>502</html>")
                .into_response(),
        )),
    }
}

fn record(shared: &Shared, method: &str, params: Value, failed: bool) {
    shared.inner.lock().unwrap_or_else(|p| p.into_inner()).calls.push(Call {
        method: method.to_owned(),
        params,
        at: Instant::now(),
        failed,
    });
    shared.new_call.notify_waiters();
}

async fn method(
    State(shared): State<Arc<Shared>>,
    Path((bot, method)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if bot != format!("bot{TOKEN}") {
        return err(401, "Unauthorized");
    }
    let params: Value =
        if body.is_empty() { json!({}) } else { serde_json::from_slice(&body).unwrap_or(json!({})) };
    let delayed = match scripted(&shared, &method, &params).await {
        Some(Some(r)) => {
            record(&shared, &method, params, true);
            return r;
        }
        Some(None) => true,
        None => false,
    };
    if method == "getUpdates" {
        // Recorded before waiting, so the time is when the bot asked.
        if !delayed {
            record(&shared, &method, params.clone(), false);
        }
        return get_updates(&shared, &params).await;
    }
    if !delayed {
        record(&shared, &method, params.clone(), false);
    }
    let mut g = shared.inner.lock().unwrap_or_else(|p| p.into_inner());
    match method.as_str() {
        "getMe" => {
            ok(json!({ "id": 42, "is_bot": true, "first_name": "consentry", "username": BOT_USERNAME }))
        }
        "getFile" => {
            let id = params["file_id"].as_str().unwrap_or("");
            match g.files.get(id) {
                Some(f) => ok(json!({
                    "file_id": id, "file_unique_id": f.unique_id, "file_size": f.reported_size,
                    "file_path": format!("files/{id}.bin"),
                })),
                None => err(400, "Bad Request: invalid file_id"),
            }
        }
        "getChatMember" => {
            let key = (params["chat_id"].as_i64().unwrap_or(0), params["user_id"].as_i64().unwrap_or(0));
            let status = g.members.get(&key).cloned().unwrap_or_else(|| "member".into());
            ok(json!({ "status": status, "user": { "id": key.1, "is_bot": false, "first_name": "u" } }))
        }
        "deleteMessage" | "banChatMember" | "restrictChatMember" | "setWebhook" | "deleteWebhook" => {
            ok(json!(true))
        }
        "sendMessage" => {
            g.next_message_id += 1;
            ok(json!({
                "message_id": g.next_message_id, "date": 0,
                "chat": { "id": params["chat_id"], "type": "supergroup" }, "text": params["text"],
            }))
        }
        _ => err(404, "Not Found"),
    }
}

async fn get_updates(shared: &Shared, params: &Value) -> Response {
    let offset = params["offset"].as_i64().unwrap_or(0);
    let limit = params["limit"].as_u64().unwrap_or(100).clamp(1, 100) as usize;
    let timeout = Duration::from_secs(params["timeout"].as_u64().unwrap_or(0));
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let notified = shared.new_update.notified();
        {
            let mut g = shared.inner.lock().unwrap_or_else(|p| p.into_inner());
            // An offset confirms every update below it (malformed ones without an id are
            // dropped once anything after them is confirmed).
            while let Some(front) = g.updates.front() {
                match front.get("update_id").and_then(Value::as_i64) {
                    Some(id) if id >= offset => break,
                    Some(_) => {
                        g.updates.pop_front();
                    }
                    None if offset > 0
                        && g.updates.iter().any(|u| u["update_id"].as_i64().is_some_and(|i| i < offset)) =>
                    {
                        g.updates.pop_front();
                    }
                    None => break,
                }
            }
            let batch: Vec<Value> = g.updates.iter().take(limit).cloned().collect();
            if !batch.is_empty() {
                let now = Instant::now();
                for u in &batch {
                    if let Some(id) = u["update_id"].as_i64() {
                        g.served.entry(id).or_insert(now);
                    }
                }
                return ok(Value::Array(batch));
            }
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return ok(json!([]));
        }
    }
}

async fn download(State(shared): State<Arc<Shared>>, Path((bot, path)): Path<(String, String)>) -> Response {
    if bot != format!("bot{TOKEN}") {
        return err(401, "Unauthorized");
    }
    let params = json!({ "path": path });
    match scripted(&shared, "download", &params).await {
        Some(Some(r)) => {
            record(&shared, "download", params, true);
            return r;
        }
        Some(None) => {}
        None => record(&shared, "download", params, false),
    }
    let id = path.trim_start_matches("files/").trim_end_matches(".bin").to_owned();
    let bytes =
        shared.inner.lock().unwrap_or_else(|p| p.into_inner()).files.get(&id).map(|f| f.bytes.clone());
    match bytes {
        Some(b) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/octet-stream")], b.as_ref().clone())
            .into_response(),
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

/// A message update in `chat` (supergroup) from `user` carrying a photo (three sizes, the
/// largest `file_id`; no `file_size`, so the bot asks getFile).
pub fn photo_update(chat: i64, message_id: i64, user: i64, file_id: &str, unique_id: &str) -> Value {
    json!({
        "message": {
            "message_id": message_id, "date": 1_700_000_000,
            "chat": { "id": chat, "type": "supergroup", "title": "Test group" },
            "from": { "id": user, "is_bot": false, "first_name": "Poster", "username": format!("user{user}") },
            "photo": [
                { "file_id": format!("{file_id}-s"), "file_unique_id": format!("{unique_id}-s"), "width": 90, "height": 60 },
                { "file_id": file_id, "file_unique_id": unique_id, "width": 1280, "height": 853 },
            ],
        }
    })
}

/// A text message update (commands) in `chat` of `kind` from `user`.
pub fn text_update(chat: i64, kind: &str, message_id: i64, user: i64, text: &str) -> Value {
    json!({
        "message": {
            "message_id": message_id, "date": 1_700_000_000,
            "chat": { "id": chat, "type": kind, "title": "Test group" },
            "from": { "id": user, "is_bot": false, "first_name": "Member", "language_code": "en" },
            "text": text,
        }
    })
}
