//! The service behaviours that need more than one request: webhooks (signed, retried from the
//! persisted outbox, surviving a restart, receiver down at first) over real sockets, rate
//! limits, slow clients on a real socket, bulk import/export formats, and two server instances
//! on one PostgreSQL database.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use axum::http::{HeaderMap, Method, StatusCode};
use consentry_pdq::Hash256;
use consentry_server::{codes, serve, webhooks, AppState, RateLimit, ServerConfig, WebhookConfig};
use consentry_store::WebhookState;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SECRET: &[u8] = b"test-webhook-secret-0123456789";

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<no code>")
}

type Received = Arc<Mutex<Vec<(HeaderMap, String)>>>;

/// An axum receiver on `addr` that records every delivery and answers 200.
async fn receiver(listener: TcpListener) -> Received {
    let got: Received = Arc::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let g = g.clone();
            async move {
                g.lock().unwrap().push((headers, body));
                StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    got
}

fn webhook_config(url: String) -> ServerConfig {
    ServerConfig {
        webhooks: WebhookConfig {
            urls: vec![url],
            secret: SECRET.to_vec(),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
            poll_interval: Duration::from_millis(50),
            timeout: Duration::from_secs(2),
            ..WebhookConfig::default()
        },
        ..test_config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_events_reach_the_case_urls_only() {
    let platform = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let helpline = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (p_url, h_url) = (
        format!("http://{}/hook", platform.local_addr().unwrap()),
        format!("http://{}/hook", helpline.local_addr().unwrap()),
    );
    let (to_platform, to_helpline) = (receiver(platform).await, receiver(helpline).await);
    let mut config = webhook_config(p_url);
    config.webhooks.case_urls = vec![h_url];
    let db = TestDb::sqlite();
    let app = TestApp::on(&db, config).await;
    let h = random_pdq();
    let (s, v) = app
        .call(Method::POST, "/v1/cases", None, Some(json!({ "hashes": [h.to_hex(), random_pdq().to_hex()] })))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (number, pin) =
        (v["case_number"].as_str().unwrap().to_owned(), v["pin"].as_str().unwrap().to_owned());
    let url = format!("/v1/cases/{number}");
    app.call(Method::PATCH, &url, Some(&app.curate), Some(json!({ "status": "active" }))).await;
    app.call(Method::PATCH, &url, Some(&app.curate), Some(json!({ "status": "active" }))).await; // no change
    app.call(Method::POST, &format!("{url}/withdraw"), None, Some(json!({ "pin": pin }))).await;
    // Withdrawn again, by her and by staff: nothing changes, no event.
    app.call(Method::POST, &format!("{url}/withdraw"), None, Some(json!({ "pin": pin }))).await;
    app.call(Method::PATCH, &url, Some(&app.curate), Some(json!({ "status": "withdrawn" }))).await;
    let three = within(Duration::from_secs(3), || async { to_helpline.lock().unwrap().len() == 3 }).await;
    assert!(three.is_some(), "{:?}", to_helpline.lock().unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(to_helpline.lock().unwrap().len(), 3, "one event per change");
    let events: Vec<(HeaderMap, Value)> = to_helpline
        .lock()
        .unwrap()
        .iter()
        .map(|(hd, body)| (hd.clone(), serde_json::from_str(body).unwrap()))
        .collect();
    let seen: Vec<(&str, &str)> =
        events.iter().map(|(_, e)| (e["action"].as_str().unwrap(), e["status"].as_str().unwrap())).collect();
    assert_eq!(seen, [("created", "received"), ("status", "active"), ("withdrawn", "withdrawn")]);
    assert!(events.iter().all(|(_, e)| e["codes"] == 2), "each event counts the case's codes");
    let (headers, first) = &events[0];
    assert_eq!(headers["x-consentry-event"], "case");
    assert_eq!(
        (first["case_number"].as_str(), first["bank"].as_str(), first["codes"].as_u64()),
        (Some(number.as_str()), Some("survivors"), Some(2))
    );
    let bodies = to_helpline.lock().unwrap().iter().map(|(_, b)| b.clone()).collect::<Vec<_>>().join(" ");
    assert!(!bodies.contains(&pin) && !bodies.contains(&h.to_hex()), "no PIN, no code in case events");
    // Signed like match events.
    let ts: i64 = headers["x-consentry-timestamp"].to_str().unwrap().parse().unwrap();
    let raw = to_helpline.lock().unwrap()[0].1.clone();
    assert_eq!(
        headers["x-consentry-signature"].to_str().unwrap(),
        webhooks::signature(SECRET, ts, raw.as_bytes())
    );
    // The platform's URL got no case event (the case's hashes were never looked up).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(to_platform.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn match_webhooks_are_signed_retried_and_survive_a_restart() {
    // The receiver is down at first: reserve a port and close it.
    let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let db = TestDb::sqlite();
    let app = TestApp::on(&db, webhook_config(url.clone())).await;
    app.create_bank("known").await;
    let h = random_pdq();
    let id = app.add_entry("known", &h, json!({"note": "never sent"})).await;
    // (Wait on the index itself: a lookup that matches would queue an event.)
    assert!(within(Duration::from_secs(1), || async { !app.state.index().search(&h, 0).is_empty() })
        .await
        .is_some());
    // A lookup that does not match queues nothing; this one matches (distance 3).
    assert!(app.matches(&random_pdq()).await.is_empty());
    let q = flip(&h, 3);
    assert_eq!(app.matches(&q).await.len(), 1);
    // The event is in the outbox before the reply; attempts fail while the receiver is down.
    let store = app.state.store().clone();
    let first = store.get_webhook(1).await.expect("the match event is persisted");
    assert_eq!(first.url, url);
    assert!(
        within(Duration::from_secs(3), || async { store.get_webhook(1).await.unwrap().attempts >= 2 })
            .await
            .is_some(),
        "the sender retries"
    );
    let w = store.get_webhook(1).await.unwrap();
    assert_eq!(w.state, WebhookState::Pending);
    assert!(w.last_error.is_some());

    // Restart: a new server on the same store (the first one is gone), then the receiver comes up.
    drop(app);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let app2 = TestApp::on(&db, webhook_config(url.clone())).await;
    let got = receiver(TcpListener::bind(("127.0.0.1", port)).await.unwrap()).await;
    assert!(
        within(Duration::from_secs(5), || async { !got.lock().unwrap().is_empty() }).await.is_some(),
        "the queued event is delivered after the restart"
    );
    let (headers, body) = got.lock().unwrap()[0].clone();
    let ts: i64 = headers["x-consentry-timestamp"].to_str().unwrap().parse().unwrap();
    assert_eq!(
        headers["x-consentry-signature"].to_str().unwrap(),
        webhooks::signature(SECRET, ts, body.as_bytes())
    );
    assert_ne!(
        headers["x-consentry-signature"].to_str().unwrap(),
        webhooks::signature(b"other key", ts, body.as_bytes())
    );
    assert_eq!(headers["x-consentry-event"], "match");
    assert_eq!(headers["x-consentry-delivery"], "1");
    let ev: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ev["event"], "match");
    assert_eq!(ev["results"][0]["hash"], q.to_hex());
    assert_eq!(ev["results"][0]["matches"][0]["entry_id"], id);
    assert_eq!(ev["results"][0]["matches"][0]["distance"], 3);
    assert_eq!(ev["results"][0]["matches"][0]["bank"], "known");
    assert!(!body.contains("never sent"), "metadata never leaves in events");
    assert!(within(Duration::from_secs(2), || async {
        store.get_webhook(1).await.unwrap().state == WebhookState::Delivered
    })
    .await
    .is_some());
    // A batch lookup with two matching hashes: one event listing both; delivered promptly.
    let (s, v) = app2
        .call(
            Method::POST,
            "/v1/lookup",
            Some(&app2.lookup),
            Some(json!({"hashes": [h.to_hex(), random_pdq().to_hex(), flip(&h, 1).to_hex()]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(within(Duration::from_secs(2), || async { got.lock().unwrap().len() == 2 }).await.is_some());
    let ev: Value = serde_json::from_str(&got.lock().unwrap()[1].1).unwrap();
    assert_eq!(ev["results"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_per_key_and_per_client_on_case_endpoints() {
    let db = TestDb::sqlite();
    let cfg = ServerConfig {
        key_rate_limit: Some(RateLimit { per_second: 1.0, burst: 3 }),
        case_rate_limit: Some(RateLimit { per_second: 0.1, burst: 2 }),
        ..test_config()
    };
    let app = TestApp::on(&db, cfg).await;
    let h = random_pdq().to_hex();
    for _ in 0..3 {
        let (s, v) = app.call(Method::GET, &format!("/v1/lookup?hash={h}"), Some(&app.lookup), None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (s, v) = app.call(Method::GET, &format!("/v1/lookup?hash={h}"), Some(&app.lookup), None).await;
    assert_eq!((s, code(&v)), (StatusCode::TOO_MANY_REQUESTS, codes::RATE_LIMITED));
    // Another key has its own budget.
    let (s, _) = app.call(Method::GET, &format!("/v1/lookup?hash={h}"), Some(&app.admin), None).await;
    assert_eq!(s, StatusCode::OK);
    // Case endpoints: per client address (in-process requests share one).
    for _ in 0..2 {
        let (s, v) =
            app.call(Method::POST, "/v1/cases/2222-2222-2222/status", None, Some(json!({"pin": "1"}))).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    }
    let req = axum::http::Request::post("/v1/cases")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(json!({"hashes": [h]}).to_string()))
        .unwrap();
    let resp = tower::ServiceExt::oneshot(app.router.clone(), req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry), "{retry}");
    // Nothing was created by the refused request.
    assert!(app.state.store().list_cases(None, 0, 10).await.unwrap().is_empty());
}

async fn socket_server(
    cfg: ServerConfig,
) -> (TestDb, TestApp, SocketAddr, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let db = TestDb::sqlite();
    let app = TestApp::on(&db, cfg).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let state: AppState = app.state.clone();
    let task = tokio::spawn(async move {
        serve(listener, state, async {
            let _ = rx.await;
        })
        .await
        .unwrap()
    });
    (db, app, addr, tx, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_graceful_shutdown_finishes_requests() {
    let cfg = ServerConfig {
        header_read_timeout: Duration::from_millis(300),
        body_idle_timeout: Duration::from_millis(300),
        // only the shutdown writes the match counts
        match_count_interval: Duration::from_secs(3600),
        ..test_config()
    };
    let (_db, app, addr, stop, task) = socket_server(cfg).await;
    app.create_bank("b").await;

    // Headers that never finish: the connection is closed.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf)).await;
    assert!(r.is_ok(), "the server must close a connection whose headers stall");

    // An import whose body stalls: 408 with what was committed.
    let h = random_pdq();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/banks/b/import HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 100000\r\n\r\n{}\n",
        app.curate,
        h.to_hex()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout") && text.contains("through line 1"), "{text}");

    // Graceful shutdown: a request in flight completes (a lookup that matches the imported hash),
    // and its match is counted in the store before `serve` returns.
    assert!(within(Duration::from_secs(2), || async { app.state.index().len() == 1 }).await.is_some());
    let c = reqwest::Client::new();
    let url = format!("http://{addr}/v1/lookup?hash={}", h.to_hex());
    let pending = tokio::spawn({
        let key = app.lookup.clone();
        async move { c.get(url).bearer_auth(key).send().await.map(|r| r.status().as_u16()) }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.send(()).unwrap();
    assert_eq!(pending.await.unwrap().unwrap(), 200);
    tokio::time::timeout(Duration::from_secs(10), task).await.expect("serve returns after shutdown").unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "no longer listening");
    let today = consentry_store::day_of(consentry_store::Timestamp::now());
    let q = consentry_store::StatsQuery::over(consentry_store::StatsGroup::Source, today - 1, today);
    let rows = app.state.store().match_stats(&q).await.unwrap();
    assert_eq!(
        rows.iter().map(|r| (r.key.clone(), r.matches)).collect::<Vec<_>>(),
        vec![(consentry_store::StatsKey::Source("lookup".into()), 1)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_import_formats_and_export_round_trip() {
    let db = TestDb::sqlite();
    let app = TestApp::on(&db, test_config()).await;
    app.create_bank("src").await;
    app.create_bank("copy").await;
    let hs: Vec<_> = (0..5).map(|_| random_pdq()).collect();
    let import = |bank: &str, format: &str, body: String| {
        let req =
            axum::http::Request::post(format!("/v1/banks/{bank}/import?format={format}&keep_paths=true"))
                .header("authorization", format!("Bearer {}", app.curate))
                .body(axum::body::Body::from(body))
                .unwrap();
        app.request(req)
    };
    // CSV with a header, quoted fields, a bad quality, a degenerate hash.
    let body = format!(
        "pdq,quality,path,metadata\n{},95,\"dir/a,b.jpg\",\"{{\"\"k\"\":1}}\"\n{},x,c.jpg,\n{},90,d.jpg,\n",
        hs[0].to_hex(),
        hs[1].to_hex(),
        "f".repeat(64)
    );
    let (s, v) = import("src", "csv", body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["added"], 1, "{v}");
    assert_eq!(v["rejected"][0]["line"], 3);
    assert!(v["rejected"][0]["reason"].as_str().unwrap().contains("quality `x`"), "{v}");
    assert_eq!(v["rejected"][1]["line"], 4);
    assert!(v["rejected"][1]["reason"].as_str().unwrap().contains("all bits are one"), "{v}");
    // JSON lines and HMA's file format.
    let body = format!("{{\"hash\":\"{}\",\"quality\":80}}\n{{\"nope\":1}}\nnot json\n", hs[2].to_hex());
    let (s, v) = import("src", "jsonl", body).await;
    assert_eq!((s, v["added"].as_u64()), (StatusCode::OK, Some(1)), "{v}");
    assert_eq!(
        v["rejected"].as_array().unwrap().iter().map(|r| r["line"].as_u64().unwrap()).collect::<Vec<_>>(),
        vec![2, 3]
    );
    let body = format!("pdq {}\nvideo_md5 {}\npdq {}\n", hs[3].to_hex(), "a".repeat(32), hs[4].to_hex());
    let (s, v) = import("src", "hma", body).await;
    assert_eq!((s, v["added"].as_u64()), (StatusCode::OK, Some(2)), "{v}");
    assert!(v["rejected"][0]["reason"].as_str().unwrap().contains("video_md5"), "{v}");
    let (s, v) = import("nobank", "csv", String::new()).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, codes::NOT_FOUND));
    let (s, v) = import("src", "xml", String::new()).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, codes::INVALID_REQUEST));

    // Export as CSV (with header) and re-import into another bank: same hashes, qualities, paths.
    let export = |bank: &str, format: &str| {
        let req = axum::http::Request::get(format!("/v1/banks/{bank}/export?format={format}"))
            .header("authorization", format!("Bearer {}", app.curate))
            .body(axum::body::Body::empty())
            .unwrap();
        app.request(req)
    };
    let (s, csv) = export("src", "csv").await;
    assert_eq!(s, StatusCode::OK);
    let csv = csv.as_str().unwrap().to_owned();
    assert!(csv.starts_with("hash,quality,id,source,added_at,disabled_at,metadata,signal_type\n"), "{csv}");
    assert_eq!(csv.lines().count(), 5);
    let (s, v) = import("copy", "csv", csv).await;
    assert_eq!((s, v["added"].as_u64()), (StatusCode::OK, Some(4)), "{v}");
    let (_, meta) = export("copy", "meta").await;
    let meta = meta.as_str().unwrap();
    assert!(meta.contains(&format!("{},95,\"dir/a,b.jpg\"", hs[0].to_hex())), "{meta}");
    assert!(meta.contains(&format!("{},80,entry-", hs[2].to_hex())), "{meta}");
    let (_, jl) = export("copy", "jsonl").await;
    let first: Value = serde_json::from_str(jl.as_str().unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(
        (first["hash"].as_str(), first["metadata"]["k"].as_i64()),
        (Some(hs[0].to_hex().as_str()), Some(1))
    );
    // Lookup-only keys cannot import.
    let req = axum::http::Request::post("/v1/banks/src/import")
        .header("authorization", format!("Bearer {}", app.lookup))
        .body(axum::body::Body::from(hs[0].to_hex()))
        .unwrap();
    let (s, v) = app.request(req).await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, codes::INSUFFICIENT_SCOPE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_postgres_database_see_each_others_writes_within_a_second() {
    let db = TestDb::postgres().await;
    let a = TestApp::on(&db, test_config()).await;
    let b = TestApp::on(&db, test_config()).await;
    a.create_bank("shared").await;
    let h = random_pdq();
    let id = a.add_entry("shared", &h, Value::Null).await;
    let t = within(Duration::from_secs(1), || async { b.matches(&h).await.len() == 1 }).await;
    assert!(t.is_some(), "an entry added on A matches on B within 1 s");
    // A survivor's case submitted on B matches on A; withdrawn on A, it stops matching on B.
    let mine = random_pdq();
    let (s, v) = b.call(Method::POST, "/v1/cases", None, Some(json!({"hashes": [mine.to_hex()]}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert!(within(Duration::from_secs(1), || async { a.matches(&mine).await.len() == 1 }).await.is_some());
    let number = v["case_number"].as_str().unwrap();
    let (s, _) = a
        .call(Method::POST, &format!("/v1/cases/{number}/withdraw"), None, Some(json!({"pin": v["pin"]})))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        within(Duration::from_secs(1), || async { b.matches(&mine).await.is_empty() }).await.is_some(),
        "withdrawn on A, gone on B within 1 s"
    );
    // Disabled on B: gone on A within 1 s.
    let (s, _) = b.call(Method::POST, &format!("/v1/entries/{id}/disable"), Some(&b.curate), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(within(Duration::from_secs(1), || async { a.state.index().search(&h, 0).is_empty() })
        .await
        .is_some());
}

/// The database goes away (a restart, a failover, the network) and comes back: lookups that need
/// no database go on answering from the index; what needs it answers 503 `store_unavailable`
/// with `Retry-After` within the pool's acquire timeout (not a 500, not a hang), `/ready` says
/// not ready; once the database is back, writes work again and reach the index, with nothing
/// lost that was acknowledged before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_going_away_and_coming_back() {
    let proxy = PgProxy::start().await;
    let db = TestDb::postgres().await;
    let consentry_store::StoreLocation::Postgres { schema, .. } = &db.location else { unreachable!() };
    let location =
        consentry_store::StoreLocation::Postgres { url: proxy.url.clone(), schema: schema.clone() };
    let opts = consentry_store::StoreOptions {
        pg_acquire_timeout: Duration::from_millis(1500),
        ..test_store_options()
    };
    let store = consentry_store::Store::open(location, opts).await.expect("store through the proxy");
    let app = TestApp::with_store(store, test_config()).await;
    app.create_bank("known").await;
    let kept = random_pdq();
    app.add_entry("known", &kept, json!({"note": "before"})).await;
    assert!(within(Duration::from_secs(2), || async { app.matches(&kept).await.len() == 1 }).await.is_some());

    proxy.cut();
    // The details cache serves a match for at most a second; after that a match needs the store.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let miss = random_pdq();
    let (s, v) =
        app.call(Method::GET, &format!("/v1/lookup?hash={}", miss.to_hex()), Some(&app.lookup), None).await;
    assert_eq!((s, v["matches"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)), "{v}");
    let add_miss = || {
        let body = json!({"hash": miss.to_hex()});
        app.call(Method::POST, "/v1/banks/known/entries", Some(&app.curate), Some(body))
    };
    let started = std::time::Instant::now();
    let (s, v) =
        app.call(Method::GET, &format!("/v1/lookup?hash={}", kept.to_hex()), Some(&app.lookup), None).await;
    assert_eq!((s, code(&v)), (StatusCode::SERVICE_UNAVAILABLE, codes::STORE_UNAVAILABLE), "{v}");
    assert!(started.elapsed() < Duration::from_secs(10), "answered in {:?}", started.elapsed());
    let (s, v) = add_miss().await;
    assert_eq!((s, code(&v)), (StatusCode::SERVICE_UNAVAILABLE, codes::STORE_UNAVAILABLE), "{v}");
    let (s, _) = app.call(Method::GET, "/ready", None, None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    // The reply tells a client when to try again.
    let req = axum::http::Request::builder()
        .uri(format!("/v1/lookup?hash={}", kept.to_hex()))
        .header("authorization", format!("Bearer {}", app.lookup))
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = tower::ServiceExt::oneshot(app.router.clone(), req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));

    proxy.restore();
    let back = within(Duration::from_secs(10), || async {
        app.call(Method::GET, "/ready", None, None).await.0 == StatusCode::OK
    })
    .await;
    assert!(back.is_some(), "ready again once the database is back");
    let (s, v) = add_miss().await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert!(within(Duration::from_secs(2), || async { app.matches(&miss).await.len() == 1 }).await.is_some());
    let found = app.matches(&kept).await;
    assert_eq!(found.len(), 1, "the entry acknowledged before the outage is still there: {found:?}");
}

/// The index sync's reload: when the change feed is pruned past the position the server has
/// applied, the next poll fails with `FeedTruncated` and the task reconciles the index with a
/// fresh read of the active set (added entries in, disabled ones out, the rest untouched).
async fn index_reconciles_after_the_feed_is_pruned_past_it(db: TestDb) {
    // A long poll interval: the writes and the prune below land between two polls.
    let config = ServerConfig { poll_interval: Duration::from_secs(2), ..test_config() };
    let store = db.store().await;
    let actor = consentry_store::Actor::system();
    let bank = store
        .create_bank(
            &actor,
            consentry_store::NewBank {
                name: "pruned".into(),
                description: String::new(),
                enabled: true,
                purpose: consentry_store::BankPurpose::KnownAbuse,
            },
        )
        .await
        .unwrap();
    let add = |h: Hash256| {
        let store = store.clone();
        let actor = actor.clone();
        async move {
            store
                .add_entry(
                    &actor,
                    consentry_store::NewEntry {
                        bank_id: bank.id,
                        value: consentry_store::SignalValue::Pdq(h),
                        quality: None,
                        source: consentry_store::EntrySourceKind::Moderator,
                        metadata: Value::Null,
                    },
                )
                .await
                .unwrap()
                .id
        }
    };
    let (kept, gone) = (random_pdq(), random_pdq());
    add(kept).await;
    let gone_id = add(gone).await;
    let app = TestApp::on(&db, config).await;
    let index = app.state.index().clone();
    assert_eq!(index.len(), 2);
    // Let the first poll pass, then write and prune before the next one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let new = random_pdq();
    add(new).await;
    store.disable_entry(&actor, gone_id).await.unwrap();
    let seq = store.current_seq().await.unwrap();
    assert!(store.prune_changes(&actor, seq).await.unwrap() > 0);
    let t = within(Duration::from_secs(5), || async {
        app.state.sync_status().reloads.load(std::sync::atomic::Ordering::Acquire) == 1
    })
    .await;
    assert!(t.is_some(), "the sync task reloaded after the prune");
    assert_eq!(index.search(&kept, 0).len(), 1, "an entry in both sets stays, once");
    assert_eq!(index.search(&new, 0).len(), 1, "an entry added before the prune is indexed");
    assert!(index.search(&gone, 0).is_empty(), "an entry disabled before the prune is gone");
    assert_eq!(index.len(), 2);
    assert_eq!(app.state.sync_status().applied_seq.load(std::sync::atomic::Ordering::Acquire), seq);
    // And the feed is followed again afterwards.
    let later = random_pdq();
    add(later).await;
    assert!(within(Duration::from_secs(5), || async { index.search(&later, 0).len() == 1 }).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_index_reconciles_after_the_feed_is_pruned_past_it() {
    index_reconciles_after_the_feed_is_pruned_past_it(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_index_reconciles_after_the_feed_is_pruned_past_it() {
    index_reconciles_after_the_feed_is_pruned_past_it(TestDb::postgres().await).await;
}

/// `consentry_lookup_details_cache_{hits,misses}` from `/metrics`.
async fn details_cache_counts(app: &TestApp) -> (u64, u64) {
    let req = axum::http::Request::get("/metrics").body(axum::body::Body::empty()).unwrap();
    let (s, v) = app.request(req).await;
    assert_eq!(s, StatusCode::OK);
    let text = v.as_str().expect("metrics text").to_owned();
    let read = |name: &str| -> u64 {
        let line =
            text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}"));
        line[name.len() + 1..].parse::<f64>().unwrap() as u64
    };
    (read("consentry_lookup_details_cache_hits"), read("consentry_lookup_details_cache_misses"))
}

/// A match's entry and bank details are cached between lookups, but a lookup made after a
/// write of this process has been answered never sees the state before it (here the index
/// itself cannot catch up: its poll interval is a minute), and a write of another process is
/// seen within a second.
async fn match_details_are_cached_but_never_outlive_a_write(db: TestDb) {
    let h = random_pdq();
    let id = {
        let setup = TestApp::on(&db, test_config()).await;
        setup.create_bank("cached").await;
        setup.add_entry("cached", &h, json!({"note": "first"})).await
    };
    let app =
        TestApp::on(&db, ServerConfig { poll_interval: Duration::from_secs(60), ..test_config() }).await;
    let bank_of = |m: &[Value]| m.iter().map(|v| v["bank"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    let near = flip(&h, 3);
    assert_eq!(bank_of(&app.matches(&near).await), ["cached"]);
    let (hits0, misses0) = details_cache_counts(&app).await;
    assert_eq!(bank_of(&app.matches(&near).await), ["cached"]);
    assert_eq!(bank_of(&app.matches(&h).await), ["cached"]);
    let (hits1, misses1) = details_cache_counts(&app).await;
    assert_eq!((hits1 - hits0, misses1 - misses0), (2, 0), "the second and third lookups read no row");

    // Writes through this server: seen by the very next lookup.
    let (s, v) = app
        .call(Method::PATCH, "/v1/banks/cached", Some(&app.curate), Some(json!({"name": "renamed"})))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(bank_of(&app.matches(&near).await), ["renamed"]);
    let (s, _) = app.call(Method::POST, &format!("/v1/entries/{id}/disable"), Some(&app.curate), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(app.state.index().search(&h, 0).len(), 1, "the index has not caught up");
    assert!(app.matches(&near).await.is_empty(), "disabled: no match at once");
    let (s, _) = app.call(Method::POST, &format!("/v1/entries/{id}/enable"), Some(&app.curate), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(bank_of(&app.matches(&near).await), ["renamed"]);
    let (s, _) = app
        .call(Method::PATCH, "/v1/banks/renamed", Some(&app.curate), Some(json!({"enabled": false})))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(app.matches(&near).await.is_empty(), "bank disabled: no match at once");
    let (s, _) =
        app.call(Method::PATCH, "/v1/banks/renamed", Some(&app.curate), Some(json!({"enabled": true}))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(bank_of(&app.matches(&near).await), ["renamed"]);
    assert_eq!(bank_of(&app.matches(&near).await), ["renamed"]);

    // Writes of another process (its own store handle): the index here is a minute behind, the
    // cached details are not; they go within a second.
    let other = db.store().await;
    let actor = consentry_store::Actor::system();
    let bank = other.get_bank_by_name("renamed").await.unwrap();
    let update =
        consentry_store::BankUpdate { name: Some("elsewhere".into()), description: None, purpose: None };
    other.update_bank(&actor, bank.id, update).await.unwrap();
    let t =
        within(Duration::from_millis(1500), || async { bank_of(&app.matches(&near).await) == ["elsewhere"] });
    assert!(t.await.is_some(), "renamed by another process: the new name within a second");
    other.disable_entry(&actor, id).await.unwrap();
    let t = within(Duration::from_millis(1500), || async { app.matches(&near).await.is_empty() }).await;
    assert!(t.is_some(), "disabled by another process: no match within a second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_match_details_are_cached_but_never_outlive_a_write() {
    match_details_are_cached_but_never_outlive_a_write(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_match_details_are_cached_but_never_outlive_a_write() {
    match_details_are_cached_but_never_outlive_a_write(TestDb::postgres().await).await;
}

/// A bulk import applied batch by batch leaves the index in more than one segment; once the
/// feed has been quiet for `compact_after_quiet`, the sync task compacts it into one, and
/// lookups still find everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_is_compacted_once_the_feed_is_quiet_after_an_import() {
    let db = TestDb::sqlite();
    let config = ServerConfig {
        poll_interval: Duration::from_millis(50),
        compact_after_quiet: Duration::from_millis(300),
        ..test_config()
    };
    let app = TestApp::on(&db, config).await;
    app.create_bank("bulk").await;
    let import = |hashes: Vec<Hash256>| {
        let body = hashes.iter().map(|h| h.to_hex()).collect::<Vec<_>>().join("\n");
        let req = axum::http::Request::post("/v1/banks/bulk/import")
            .header("authorization", format!("Bearer {}", app.curate))
            .header("content-type", "text/csv")
            .body(axum::body::Body::from(body))
            .unwrap();
        app.request(req)
    };
    let first: Vec<Hash256> = (0..40_000).map(|_| random_pdq()).collect();
    let (s, v) = import(first.clone()).await;
    assert_eq!((s, v["added"].as_u64()), (StatusCode::OK, Some(40_000)), "{v}");
    let settled = within(Duration::from_secs(10), || async {
        app.state.index().len() == 40_000 && app.state.index().stats().segments == 1
    });
    assert!(settled.await.is_some(), "the first import indexed, in one segment");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = app.state.sync_status().compactions.load(std::sync::atomic::Ordering::Relaxed);

    // 2,000 more (5 % of the first, under a third of it: the index's merge policy keeps them
    // in a segment of their own).
    let second: Vec<Hash256> = (0..2_000).map(|_| random_pdq()).collect();
    let (s, v) = import(second.clone()).await;
    assert_eq!((s, v["added"].as_u64()), (StatusCode::OK, Some(2_000)), "{v}");
    let compacted = within(Duration::from_secs(5), || async {
        app.state.index().len() == 42_000
            && app.state.sync_status().compactions.load(std::sync::atomic::Ordering::Relaxed) > before
            && app.state.index().stats().segments == 1
    });
    assert!(compacted.await.is_some(), "compacted: {:?}", app.state.index().stats());
    for h in [first[123], second[1_999], flip(&second[5], 4)] {
        assert_eq!(app.matches(&h).await.len(), 1, "still found after the compaction");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_feed_counts_and_withdrawn_codes_and_lookups_go_on() {
    use consentry_store::{
        day_of, Actor, MatchTally, StatsGroup, StatsKey, StatsQuery, StoreError, Timestamp,
    };
    let db = TestDb::sqlite();
    let config = ServerConfig {
        keep_changes: Some(Duration::from_millis(300)),
        keep_match_counts_days: Some(30),
        keep_withdrawn: Some(Duration::from_millis(300)),
        retention_interval: Duration::from_millis(100),
        ..test_config()
    };
    let app = TestApp::on(&db, config).await;
    app.create_bank("known").await;
    let h = random_pdq();
    let id = app.add_entry("known", &h, json!({})).await;
    let store = app.state.store().clone();
    let today = day_of(Timestamp::now());
    let tally = |day: i64| MatchTally {
        entry_id: id,
        source: "platform-x".into(),
        day,
        matches: 1,
        first_at: Timestamp(day * 86_400_000),
        last_at: Timestamp(day * 86_400_000),
    };
    store.record_matches(&[tally(today - 100), tally(today - 31), tally(today - 2)]).await.unwrap();
    let days = || async {
        let q = StatsQuery::over(StatsGroup::Day, today - 200, today);
        store.match_stats(&q).await.unwrap().into_iter().map(|r| r.key).collect::<Vec<_>>()
    };
    // Within a few passes the counts of days over 30 back are gone, the rest kept, and the feed
    // written more than 300 ms ago with them.
    let pruned = within(Duration::from_secs(5), || async {
        days().await == vec![StatsKey::Day(today - 2)]
            && matches!(store.changes_since(0, 10).await, Err(StoreError::FeedTruncated { .. }))
    })
    .await;
    assert!(pruned.is_some(), "still there: days {:?}", days().await);
    assert!(app.matches(&h).await.iter().any(|m| m["entry_id"] == id), "the entry still matches");
    // The index keeps following the feed: a new entry matches within the sync time.
    let h2 = random_pdq();
    app.add_entry("known", &h2, json!({})).await;
    let synced = within(Duration::from_secs(2), || async { !app.matches(&h2).await.is_empty() }).await;
    assert!(synced.is_some(), "the new entry never matched");
    let audit = store.audit_events(0, 1000).await.unwrap();
    assert!(audit.iter().any(|e| e.action == "match_counts.prune" && e.actor == Actor::system().to_string()));

    // A withdrawn case loses its codes once it has been withdrawn longer than `keep_withdrawn`;
    // it keeps its number and status, and an open case keeps its codes.
    let open = || async {
        let (s, v) = app
            .call(Method::POST, "/v1/cases", None, Some(json!({ "hashes": [random_pdq().to_hex()] })))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        (v["case_number"].as_str().unwrap().to_owned(), v["pin"].as_str().unwrap().to_owned())
    };
    let (gone, gone_pin) = open().await;
    let (kept, kept_pin) = open().await;
    let status = |number: String, pin: String| {
        let app = &app;
        async move {
            let url = format!("/v1/cases/{number}/status");
            app.call(Method::POST, &url, None, Some(json!({ "pin": pin }))).await.1
        }
    };
    let (s, _) = app
        .call(Method::POST, &format!("/v1/cases/{gone}/withdraw"), None, Some(json!({ "pin": gone_pin })))
        .await;
    assert_eq!(s, StatusCode::OK);
    let purged = within(Duration::from_secs(5), || async {
        status(gone.clone(), gone_pin.clone()).await["hashes"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
    assert!(purged.is_some(), "the withdrawn case's codes are still there");
    assert_eq!(status(gone.clone(), gone_pin.clone()).await["status"], "withdrawn");
    assert_eq!(status(kept, kept_pin).await["hashes"].as_array().unwrap().len(), 1);
}
