//! Webhook mode: Telegram POSTs each update to the bot's HTTPS URL instead of the bot polling.
//!
//! The bot registers the URL with `setWebhook` and a secret token, serves `POST` on the URL's
//! path (axum) and rejects any request whose `X-Telegram-Bot-Api-Secret-Token` header is not the
//! secret (401, nothing handled). Each update goes to the same handler as long polling and uses
//! the same state file: updates already handled (`done`, or below `offset`) are answered 200 and
//! skipped, a second delivery of an update still being handled gets 503 (Telegram retries it
//! later). The answer is 200 only once the update is handled and the state saved, so an update
//! the bot did not finish (crash, shutdown) is delivered again by Telegram.
//!
//! TLS is not served here: put the bot behind a reverse proxy (or a local `telegram-bot-api`
//! server) that terminates HTTPS and forwards to `--webhook-listen`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};

use crate::api::{ApiError, BotApi};
use crate::handler::{self, Ctx};
use crate::matcher::Matcher;
use crate::state::StateFile;
use crate::{BotConfig, BotError};

/// The header Telegram puts the secret token in.
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

/// Above this many handled update ids remembered, the oldest are folded into `offset`.
const DONE_KEEP: usize = 5_000;

/// Where and how the bot receives updates in webhook mode.
#[derive(Debug)]
pub struct Webhook {
    /// The socket the bot serves on (already bound, so tests can use port 0).
    pub listener: tokio::net::TcpListener,
    /// The public HTTPS URL Telegram POSTs to (given to `setWebhook`); its path is the route.
    pub url: String,
    /// The secret token (1–256 characters `A-Z a-z 0-9 _ -`).
    pub secret: String,
}

/// Whether `s` is a valid webhook secret token for Telegram.
pub fn valid_secret(s: &str) -> bool {
    (1..=256).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The route the bot serves: the path of `url` (`/` when it has none).
pub fn route_of(url: &str) -> Result<String, String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("invalid webhook URL `{url}`: {e}"))?;
    if u.scheme() != "https" && u.scheme() != "http" {
        return Err(format!("invalid webhook URL `{url}`: not http(s)"));
    }
    Ok(u.path().to_owned())
}

fn same_secret(a: &[u8], b: &[u8]) -> bool {
    // Constant time over the expected length: the comparison does not reveal a matching prefix.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

struct Hook {
    ctx: Arc<Ctx>,
    secret: String,
    in_flight: Mutex<HashSet<i64>>,
    permits: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
}

async fn receive(State(hook): State<Arc<Hook>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let given = headers.get(SECRET_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
    if !same_secret(given, hook.secret.as_bytes()) {
        tracing::warn!("webhook request without the right secret token: rejected");
        return StatusCode::UNAUTHORIZED;
    }
    if *hook.stop.borrow() {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let raw: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            // Telegram would re-send it forever: log and acknowledge, like a malformed polled update.
            tracing::warn!(error = %e, "webhook body is not JSON: ignored");
            return StatusCode::OK;
        }
    };
    let Some(id) = raw.get("update_id").and_then(Value::as_i64) else {
        tracing::warn!("update without an update_id: ignored");
        return StatusCode::OK;
    };
    let state = &hook.ctx.state;
    if state.with(|p| id < p.offset || p.done.contains(&id)) {
        tracing::debug!(update = id, "already handled: skipped");
        return StatusCode::OK;
    }
    if !hook.in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(id) {
        tracing::debug!(update = id, "delivered again while being handled: retry later");
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    struct Release<'a>(&'a Mutex<HashSet<i64>>, i64);
    impl Drop for Release<'_> {
        fn drop(&mut self) {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.1);
        }
    }
    let _release = Release(&hook.in_flight, id);
    let _permit = hook.permits.acquire().await.expect("semaphore never closed");
    if handler::handle_update(&hook.ctx, raw).await == handler::Outcome::Deferred {
        // stopped while the image waited for the matcher: Telegram delivers it again later
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    state.with(|p| {
        p.done.insert(id);
        if p.done.len() > 2 * DONE_KEEP {
            if let Some(floor) = p.done.iter().rev().nth(DONE_KEEP).copied() {
                p.offset = p.offset.max(floor);
                let o = p.offset;
                p.done.retain(|d| *d >= o);
            }
        }
    });
    if let Err(e) = state.save().await {
        // Handled and remembered in memory; the next save will carry it.
        tracing::error!(update = id, error = %e, "cannot save the bot state");
    }
    StatusCode::OK
}

/// Runs the bot in webhook mode until `stop`: registers the webhook, serves updates, and on
/// shutdown finishes the requests in flight, saves the state and sends queued messages. The
/// webhook stays registered, so Telegram keeps the updates that arrive while the bot is down.
pub(crate) async fn run_webhook(
    api: BotApi,
    matcher: Matcher,
    state: Arc<StateFile>,
    cfg: BotConfig,
    webhook: Webhook,
    mut stop: watch::Receiver<bool>,
) -> Result<(), BotError> {
    let route = route_of(&webhook.url).map_err(BotError::Webhook)?;
    if !valid_secret(&webhook.secret) {
        return Err(BotError::Webhook("the webhook secret must be 1-256 characters A-Z a-z 0-9 _ -".into()));
    }
    let concurrency = cfg.concurrency.max(1);
    let Some((ctx, outbox)) = handler::start_ctx(&api, matcher, &state, cfg, &mut stop).await? else {
        return Ok(());
    };
    let params = json!({
        "url": webhook.url,
        "secret_token": webhook.secret,
        "max_connections": concurrency,
        "allowed_updates": ["message", "edited_message", "channel_post", "edited_channel_post"],
    });
    let registered: Result<bool, ApiError> = api.call("setWebhook", &params).await;
    if let Err(e) = registered {
        handler::finish(ctx, outbox, &state).await;
        return Err(BotError::Webhook(format!("setWebhook failed: {e}")));
    }
    let addr = webhook.listener.local_addr().ok();
    tracing::info!(listen = ?addr, path = %route, "webhook registered; serving updates");
    let hook = Arc::new(Hook {
        ctx: ctx.clone(),
        secret: webhook.secret,
        in_flight: Mutex::new(HashSet::new()),
        permits: Arc::new(Semaphore::new(concurrency)),
        stop: stop.clone(),
    });
    let app = Router::new().route(&route, post(receive)).with_state(hook.clone());
    let mut stop2 = stop.clone();
    let served = axum::serve(webhook.listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop2.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "webhook server failed");
    }
    drop(hook);
    handler::finish(ctx, outbox, &state).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_routes() {
        assert!(valid_secret("abc_DEF-123"));
        assert!(!valid_secret(""));
        assert!(!valid_secret("has space"));
        assert!(!valid_secret(&"a".repeat(257)));
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"ab", b"abc"));
        assert_eq!(route_of("https://example.org/tg/hook").unwrap(), "/tg/hook");
        assert_eq!(route_of("https://example.org").unwrap(), "/");
        assert!(route_of("not a url").is_err());
        assert!(route_of("ftp://example.org/x").is_err());
    }
}
