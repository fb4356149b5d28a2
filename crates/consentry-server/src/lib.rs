//! consentry-server: the HTTP API of consentry (axum 0.8 + tokio).
//!
//! [`app`] builds the router over an [`AppState`] (the [`Store`], the in-memory PDQ
//! [`Index`] kept in step with the store's change feed, configuration, metrics and the API key
//! cache); [`serve`] runs it on a listener with graceful shutdown. This is the only crate that
//! knows HTTP, JSON wire types and status codes: the store and the index know nothing of them.
//!
//! Uploaded images are hashed in memory (on the blocking pool, bounded by a semaphore) and
//! dropped: never written, never logged. Logs carry routes, statuses, hashes, ids and distances.
//!
//! Errors are `{"error": {"code": "...", "message": "..."}}`; the codes are listed in
//! [`error::codes`].

#![warn(missing_docs)]

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::Router;
use consentry_index::{DegeneratePolicy, Index, IndexConfig};
use consentry_store::{Actor, BankPurpose, NewBank, Store, StoreError};
use tokio::net::TcpListener;

mod api;
mod auth;
mod body;
mod bulk;
mod derive_sync;
mod details;
pub mod error;
mod hma;
mod metrics;
mod openapi;
pub mod protect;
mod ratelimit;
mod retention;
mod sync;
mod tally;
pub mod webhooks;

pub use derive_sync::DeriveMirror;
pub use error::{codes, ApiError};
pub use metrics::Metrics;
pub use openapi::openapi_document;
pub use ratelimit::RateLimit;
pub use sync::SyncStatus;
pub use webhooks::WebhookConfig;

/// Server settings. `Default` is what `consentry serve` uses without flags.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Largest request body in bytes (images included); larger → 413 `payload_too_large`.
    pub max_body_bytes: usize,
    /// Most hashes in one `POST /v1/lookup` or one entries array (default 10,000).
    pub max_batch: usize,
    /// Default match radius (PDQ's 31).
    pub default_radius: u32,
    /// Largest radius a client may ask for.
    pub max_radius: u32,
    /// Most matches returned per query hash (closest first; `truncated` says when cut).
    pub max_matches_per_hash: usize,
    /// How often the change feed is polled.
    pub poll_interval: Duration,
    /// How long the change feed must stay quiet after writes before the PDQ index is
    /// compacted into one segment (when `Index::compaction_worthwhile`): after a bulk import,
    /// lookups regain the speed of a freshly loaded index without a restart.
    pub compact_after_quiet: Duration,
    /// How long a verified API key is trusted without asking the store again.
    pub key_cache_ttl: Duration,
    /// Requests running longer are answered 503 `timeout`.
    pub request_timeout: Duration,
    /// Images hashed at once (the rest wait).
    pub hash_concurrency: usize,
    /// The survivor-protected bank that receives cases' hashes (created at start if missing).
    pub case_bank: String,
    /// Match webhooks (URLs, HMAC secret, retry policy).
    pub webhooks: WebhookConfig,
    /// Requests per API key (every authenticated endpoint); `None` = unlimited.
    pub key_rate_limit: Option<RateLimit>,
    /// Requests per client address on the survivor case endpoints; `None` = unlimited.
    pub case_rate_limit: Option<RateLimit>,
    /// Take the client address for `case_rate_limit` from the last `X-Forwarded-For` hop
    /// (only behind a reverse proxy that sets it).
    pub trust_forwarded_for: bool,
    /// Time allowed for a bulk import (instead of `request_timeout`).
    pub bulk_timeout: Duration,
    /// Slow clients: longest wait for the next piece of a streamed (import) body.
    pub body_idle_timeout: Duration,
    /// Slow clients: time allowed to send the request line and headers.
    pub header_read_timeout: Duration,
    /// Largest bulk import body in bytes.
    pub max_import_bytes: u64,
    /// The derivative match rule (`consentry_derive::Params`); operators of large banks may
    /// stop more common descriptor keys (`stop_keys`) or leave out the mirrored keypoints
    /// (`mirrored`) to trade a little recall for speed.
    pub derive_params: consentry_derive::Params,
    /// How often the match counts kept in memory are added to the store's (at most this much
    /// of them is lost if the process is killed).
    pub match_count_interval: Duration,
    /// Change-feed rows older than this are deleted (a replica further behind reloads its index
    /// from the entries); `None` keeps them all. Default 30 days.
    pub keep_changes: Option<Duration>,
    /// Match counts of days further back than this are deleted; `None` (the default) keeps them.
    pub keep_match_counts_days: Option<u32>,
    /// The codes (entries) of cases withdrawn longer ago than this are deleted; the cases stay,
    /// with their number and status. `None` (the default) keeps them, disabled.
    pub keep_withdrawn: Option<Duration>,
    /// How often the retention runs (and once at start).
    pub retention_interval: Duration,
    /// Whether a survivor's case status says how often her hashes matched (counts only, never
    /// where). A helpline that would rather give such news in person turns it off.
    pub case_matches_shown: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body_bytes: 20 * 1024 * 1024,
            max_batch: 10_000,
            default_radius: consentry_index::DEFAULT_RADIUS,
            max_radius: 64,
            max_matches_per_hash: 100,
            poll_interval: Duration::from_millis(150),
            compact_after_quiet: Duration::from_secs(2),
            key_cache_ttl: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            hash_concurrency: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            case_bank: "survivors".to_owned(),
            webhooks: WebhookConfig::default(),
            key_rate_limit: None,
            case_rate_limit: Some(RateLimit { per_second: 0.5, burst: 30 }),
            trust_forwarded_for: false,
            bulk_timeout: Duration::from_secs(3600),
            body_idle_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            max_import_bytes: 4 << 30,
            derive_params: consentry_derive::Params::default(),
            match_count_interval: Duration::from_secs(1),
            keep_changes: Some(Duration::from_secs(30 * 86_400)),
            keep_match_counts_days: None,
            keep_withdrawn: None,
            retention_interval: Duration::from_secs(3600),
            case_matches_shown: true,
        }
    }
}

pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) index: Arc<Index>,
    pub(crate) derive: Arc<DeriveMirror>,
    pub(crate) config: ServerConfig,
    pub(crate) metrics: Metrics,
    pub(crate) sync: Arc<SyncStatus>,
    pub(crate) keys: auth::KeyCache,
    pub(crate) hash_permits: tokio::sync::Semaphore,
    pub(crate) case_bank_id: i64,
    pub(crate) key_limiter: ratelimit::Limiter<i64>,
    pub(crate) case_limiter: ratelimit::Limiter<std::net::IpAddr>,
    pub(crate) webhook_wake: Arc<tokio::sync::Notify>,
    pub(crate) details: details::DetailsCache,
    pub(crate) tally: tally::Tally,
}

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.inner.config)
            .field("index_entries", &self.inner.index.len())
            .field("applied_seq", &self.inner.sync.applied_seq.load(Ordering::Relaxed))
            .finish()
    }
}

impl AppState {
    /// Loads the PDQ index from the store, makes sure the case bank exists, and starts the
    /// background task that follows the change feed (it stops when the last clone of this
    /// state is dropped). Needs a tokio runtime.
    pub async fn start(store: Store, config: ServerConfig) -> Result<AppState, StoreError> {
        let case_bank_id = ensure_case_bank(&store, &config.case_bank).await?;
        store.set_case_outbox(webhooks::case_outbox(&config.webhooks));
        let index = Arc::new(Index::with_config(IndexConfig { degenerate: DegeneratePolicy::Accept }));
        let status = Arc::new(SyncStatus::default());
        let (mirror, seq) = sync::Mirror::load(&store, &index).await?;
        status.applied_seq.store(seq, Ordering::Release);
        status.loaded.store(true, Ordering::Release);
        tracing::info!(entries = index.len(), seq, "PDQ index loaded");
        let (derive, derive_tracker, derive_seq) = derive_sync::load(&store, config.derive_params).await?;
        tracing::info!(entries = derive.len(), seq = derive_seq, "derive index loaded");
        let inner = Arc::new(Inner {
            store: store.clone(),
            index: index.clone(),
            derive: derive.clone(),
            metrics: Metrics::default(),
            sync: status.clone(),
            keys: auth::KeyCache::new(config.key_cache_ttl),
            hash_permits: tokio::sync::Semaphore::new(config.hash_concurrency.max(1)),
            case_bank_id,
            key_limiter: ratelimit::Limiter::new(config.key_rate_limit),
            case_limiter: ratelimit::Limiter::new(config.case_rate_limit),
            webhook_wake: Arc::new(tokio::sync::Notify::new()),
            details: details::DetailsCache::new(),
            tally: tally::Tally::default(),
            config,
        });
        tokio::spawn(tally::run(Arc::downgrade(&inner), store.clone(), inner.config.match_count_interval));
        tokio::spawn(retention::run(Arc::downgrade(&inner), store.clone()));
        let poll = inner.config.poll_interval;
        if inner.config.webhooks.run_sender {
            tokio::spawn(webhooks::run(
                Arc::downgrade(&inner),
                store.clone(),
                inner.config.webhooks.clone(),
                inner.webhook_wake.clone(),
            ));
        }
        tokio::spawn(derive_sync::run(
            Arc::downgrade(&inner),
            store.clone(),
            derive,
            derive_tracker,
            derive_seq,
            poll,
        ));
        let quiet = inner.config.compact_after_quiet;
        tokio::spawn(sync::run(Arc::downgrade(&inner), store, index, status, mirror, seq, poll, quiet));
        Ok(AppState { inner })
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }
    /// The in-memory PDQ index.
    pub fn index(&self) -> &Arc<Index> {
        &self.inner.index
    }
    /// The in-memory derivative index (`SignalType::Derive` entries), following the change feed
    /// like the PDQ index.
    pub fn derive_index(&self) -> &Arc<DeriveMirror> {
        &self.inner.derive
    }
    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }
    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
    /// The index sync status (last applied seq, ...).
    pub fn sync_status(&self) -> &SyncStatus {
        &self.inner.sync
    }
    /// Counts one match of each of `entry_ids` for `source` (e.g. `telegram:<chat id>`) in the
    /// match counts (`GET /v1/stats/matches`); the lookup endpoints count theirs under the API
    /// key's name. Written to the store within `match_count_interval`.
    pub fn count_matches(&self, source: &str, entry_ids: impl IntoIterator<Item = i64>) {
        self.inner.tally.add(source, entry_ids, consentry_store::Timestamp::now());
    }
    /// Wakes the webhook sender after a case change (its `case` events are already in the
    /// outbox, written with the change; without this call they are sent at the sender's next
    /// poll).
    pub fn wake_webhooks(&self) {
        self.inner.webhook_wake.notify_one();
    }
    /// Writes the match counts not yet written before `reading` them (a case status, a stats
    /// request), so that a lookup answered before is counted; a failure is logged and the read
    /// goes on with what the store has (the counts are kept for the next attempt).
    pub async fn flush_match_counts_before(&self, reading: &str) {
        if let Err(e) = self.flush_match_counts().await {
            tracing::warn!(error = %e, reading, "match counts not written before a read");
        }
    }
    /// Writes the match counts not yet written (done every `match_count_interval`, and at
    /// shutdown by [`serve`]); on failure they are kept for the next attempt.
    pub async fn flush_match_counts(&self) -> Result<usize, StoreError> {
        self.inner.tally.flush(&self.inner.store).await
    }
}

async fn ensure_case_bank(store: &Store, name: &str) -> Result<i64, StoreError> {
    match store.get_bank_by_name(name).await {
        Ok(b) => return Ok(b.id),
        Err(StoreError::NotFound(_)) => {}
        Err(e) => return Err(e),
    }
    let new = NewBank {
        name: name.to_owned(),
        description: "Hashes submitted by survivors through cases".to_owned(),
        enabled: true,
        purpose: BankPurpose::SurvivorProtected,
    };
    match store.create_bank(&Actor::system(), new).await {
        Ok(b) => Ok(b.id),
        // Another process created it at the same moment.
        Err(StoreError::Conflict(_)) => Ok(store.get_bank_by_name(name).await?.id),
        Err(e) => Err(e),
    }
}

/// Collects routes so that every route registered is also described in `/openapi.json`.
pub(crate) struct Routes {
    router: Router<AppState>,
    seen: Vec<(String, String)>,
}

impl Routes {
    fn new() -> Routes {
        Routes { router: Router::new(), seen: Vec::new() }
    }
    /// Registers `path` with the handlers of `methods` (e.g. `["GET", "POST"]`).
    fn add(mut self, path: &str, methods: &[&str], handler: MethodRouter<AppState>) -> Routes {
        for m in methods {
            self.seen.push(((*m).to_owned(), path.to_owned()));
        }
        self.router = self.router.route(path, handler);
        self
    }
}

/// Every (method, path) the router serves, in axum's path syntax (`/v1/banks/{name}`).
pub fn registered_routes() -> BTreeSet<(String, String)> {
    api::routes().seen.into_iter().collect()
}

/// The router over `state`: every endpoint, JSON errors for unknown routes and methods, the
/// body-size limit, the request timeout and request metrics.
pub fn app(state: AppState) -> Router {
    let routes = api::routes();
    debug_assert_eq!(
        routes.seen.iter().cloned().collect::<BTreeSet<_>>(),
        openapi::documented_routes(),
        "every route must be described in /openapi.json and vice versa"
    );
    routes
        .router
        // The protect page's static files (outside the API's documented routes).
        .merge(protect::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(state.inner.config.max_body_bytes))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        codes::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint",
    )
}

/// Counts every request by route and status, logs one line (route, method, status, time — never
/// bodies or query strings, which can hold hashes of survivors' images), and enforces the
/// request timeout.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    // The survivors' case endpoints, which need no key (the staff's need one instead).
    const SURVIVOR_ROUTES: [&str; 3] =
        ["/v1/cases", "/v1/cases/{number}/status", "/v1/cases/{number}/withdraw"];
    if method == "POST" && SURVIVOR_ROUTES.contains(&route.as_str()) {
        let ip = client_ip(&req, state.inner.config.trust_forwarded_for);
        if let Err(wait) = state.inner.case_limiter.check(&ip) {
            tracing::info!(%route, "case endpoint rate limit hit");
            let resp =
                ApiError::rate_limited(wait, "too many requests from this address to the case endpoints")
                    .into_response();
            state.inner.metrics.count_request(&route, &method, resp.status().as_u16());
            return resp;
        }
    }
    let limit = if route.ends_with("/import") {
        state.inner.config.bulk_timeout
    } else {
        state.inner.config.request_timeout
    };
    let resp = match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, codes::TIMEOUT, "the request took too long")
            .into_response(),
    };
    let status = resp.status().as_u16();
    state.inner.metrics.count_request(&route, &method, status);
    tracing::info!(%method, %route, status, micros = started.elapsed().as_micros() as u64, "request");
    resp
}

/// The client address of a request: the TCP peer, or with `trust_forwarded_for` the last hop of
/// `X-Forwarded-For`. Requests without either (in-process tests) share one address.
fn client_ip(req: &Request, trust_forwarded_for: bool) -> std::net::IpAddr {
    if trust_forwarded_for {
        let fwd = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse().ok());
        if let Some(ip) = fwd {
            return ip;
        }
    }
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED))
}

/// Serves `state` on `listener` (HTTP/1.1) until `shutdown` completes, then stops accepting
/// connections, waits for the requests in flight to finish (at most `drain`), and delivers the
/// webhook events that are due (at most 5 s; the rest stay in the outbox).
///
/// Slow clients: a connection that does not send its request headers within
/// `header_read_timeout` is closed; a streamed body that stalls longer than `body_idle_timeout`
/// ends the import with 408; every other request is answered within `request_timeout`.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt as _;

    let router = app(state.clone());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let header_timeout = state.inner.config.header_read_timeout;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(remote));
            router.clone().oneshot(req.map(axum::body::Body::new))
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("no longer accepting connections; finishing the requests in flight");
    if tokio::time::timeout(state.inner.config.request_timeout, graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still running after the drain period; closing");
    }
    state.flush_webhooks(Duration::from_secs(5)).await;
    if let Err(e) = state.flush_match_counts().await {
        tracing::warn!(error = %e, "match counts of the last second not written");
    }
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
        _ = term => tracing::info!("SIGTERM: shutting down"),
    }
}
