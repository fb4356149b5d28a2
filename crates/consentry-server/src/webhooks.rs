//! Webhooks. A lookup that matches persists one `match` event per configured URL in the
//! store's outbox *before* the lookup is answered; a case opened, withdrawn or given a status by
//! staff persists one `case` event per case URL (`case_urls`, the helpline's own systems: they
//! name the case, so they never go to the match URLs) in the transaction that changes the case
//! (the store's case outbox, set by `AppState::start`), so a committed change always has its
//! event and a request that changes nothing (a second withdrawal) has none. A sender task
//! delivers the outbox with retries and exponential backoff, so a crash or restart loses no
//! queued event (a delivery may be repeated after a crash: receivers de-duplicate on
//! `X-Consentry-Delivery`).
//!
//! Each delivery is `POST <url>` with the JSON event as body and the headers
//! - `X-Consentry-Event: match` or `case`
//! - `X-Consentry-Delivery: <outbox id>` (stable across retries)
//! - `X-Consentry-Timestamp: <unix seconds>`
//! - `X-Consentry-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`
//!
//! A 2xx answer marks it delivered; anything else (or no answer within the timeout) schedules
//! another attempt after `initial_backoff × 2^attempts` (capped at `max_backoff`), until
//! `max_attempts`, after which the event is kept as dead. A match event carries hashes, bank
//! names, entry ids and distances only: never images, never metadata; a case event the case's
//! number, status, bank and number of codes: never its codes, never a PIN.

use std::sync::{Arc, Weak};
use std::time::Duration;

use consentry_pdq::Hash256;
use consentry_store::{CaseEvent, CaseOutbox, NewWebhook, Store, Timestamp, Webhook};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::error::ApiResult;
use crate::{AppState, Inner};

/// Webhook settings.
#[derive(Clone)]
pub struct WebhookConfig {
    /// URLs that receive `match` events (none: no events).
    pub urls: Vec<String>,
    /// URLs that receive `case` events (a case opened, withdrawn, or given a status by staff):
    /// the helpline's own systems. None: no case events.
    pub case_urls: Vec<String>,
    /// HMAC-SHA256 key for `X-Consentry-Signature`.
    pub secret: Vec<u8>,
    /// Attempts before an event is given up (kept as dead in the outbox).
    pub max_attempts: u32,
    /// Wait after the first failure (doubles each time).
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// How often the outbox is checked when nothing wakes the sender.
    pub poll_interval: Duration,
    /// Time allowed for one delivery.
    pub timeout: Duration,
    /// Run the sender in this process (several processes may share one outbox: leases keep
    /// them from sending the same event at once).
    pub run_sender: bool,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            urls: Vec::new(),
            case_urls: Vec::new(),
            secret: Vec::new(),
            max_attempts: 15,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(15 * 60),
            poll_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            run_sender: true,
        }
    }
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("urls", &self.urls)
            .field("case_urls", &self.case_urls)
            .field("secret", &if self.secret.is_empty() { "<none>" } else { "<redacted>" })
            .field("max_attempts", &self.max_attempts)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>.<body>").
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(71);
    hex.push_str("sha256=");
    for b in bytes {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

/// Persists one `match` event per configured URL for the queries that matched (called by the
/// lookup handlers before they answer).
pub(crate) async fn enqueue_matches(
    state: &AppState,
    queries: &[Hash256],
    results: &[(Vec<Value>, bool)],
) -> ApiResult<()> {
    let cfg = &state.inner.config.webhooks;
    if cfg.urls.is_empty() {
        return Ok(());
    }
    let matched: Vec<Value> = queries
        .iter()
        .zip(results)
        .filter(|(_, (m, _))| !m.is_empty())
        .map(|(h, (m, _))| {
            let ms: Vec<Value> = m
                .iter()
                .map(|x| {
                    let mut m =
                        json!({ "bank": x["bank"], "entry_id": x["entry_id"], "distance": x["distance"] });
                    // Derive matches say so, with their evidence (hashes, ids and numbers only).
                    if x["signal"] == "derive" {
                        m["signal"] = x["signal"].clone();
                        m["band_distance"] = x["band_distance"].clone();
                        m["inliers"] = x["inliers"].clone();
                        m["score"] = x["score"].clone();
                        m["mirrored"] = x["mirrored"].clone();
                    }
                    m
                })
                .collect();
            json!({ "hash": h.to_hex(), "matches": ms })
        })
        .collect();
    if matched.is_empty() {
        return Ok(());
    }
    let payload = json!({ "event": "match", "at": Timestamp::now().as_millis(), "results": matched });
    Ok(enqueue(state, &cfg.urls, "match", payload).await?)
}

/// The store hook (see `Store::set_case_outbox`) that makes one `case` event per case URL of a
/// case change, persisted in the change's own transaction; `None` without case URLs.
pub(crate) fn case_outbox(cfg: &WebhookConfig) -> Option<CaseOutbox> {
    if cfg.case_urls.is_empty() {
        return None;
    }
    let urls = cfg.case_urls.clone();
    Some(Arc::new(move |event: &CaseEvent| {
        let payload = json!({
            "event": "case",
            "action": event.kind.as_str(),
            "at": Timestamp::now().as_millis(),
            "case_number": event.case.display_number(),
            "status": event.case.status.as_str(),
            "bank": event.bank,
            "codes": event.codes,
        });
        urls.iter()
            .map(|u| NewWebhook { url: u.clone(), event_type: "case".to_owned(), payload: payload.clone() })
            .collect()
    }))
}

/// One event of `kind` to each of `urls`, in the outbox; wakes the sender.
async fn enqueue(
    state: &AppState,
    urls: &[String],
    kind: &str,
    payload: Value,
) -> Result<(), consentry_store::StoreError> {
    let hooks: Vec<NewWebhook> = urls
        .iter()
        .map(|u| NewWebhook { url: u.clone(), event_type: kind.to_owned(), payload: payload.clone() })
        .collect();
    let ids = state.inner.store.enqueue_webhooks(&hooks).await?;
    tracing::info!(events = ids.len(), kind, "webhook events queued");
    state.inner.webhook_wake.notify_one();
    Ok(())
}

fn backoff(cfg: &WebhookConfig, failed_before: i32) -> Duration {
    let exp = failed_before.clamp(0, 30) as u32;
    cfg.initial_backoff.saturating_mul(1u32 << exp.min(20)).min(cfg.max_backoff)
}

async fn deliver(client: &reqwest::Client, store: &Store, cfg: &WebhookConfig, hook: Webhook) {
    let Some(token) = hook.lease_token else { return };
    let body = hook.payload.to_string();
    let ts = Timestamp::now().as_millis() / 1000;
    let sig = signature(&cfg.secret, ts, body.as_bytes());
    let res = client
        .post(&hook.url)
        .header("content-type", "application/json")
        .header("x-consentry-event", &hook.event_type)
        .header("x-consentry-delivery", hook.id.to_string())
        .header("x-consentry-timestamp", ts.to_string())
        .header("x-consentry-signature", sig)
        .body(body)
        .send()
        .await;
    let error = match res {
        Ok(r) if r.status().is_success() => None,
        Ok(r) => Some(format!("HTTP {}", r.status().as_u16())),
        Err(e) => Some(if e.is_timeout() {
            "timed out".to_owned()
        } else if e.is_connect() {
            "connection failed".to_owned()
        } else {
            "request failed".to_owned()
        }),
    };
    let outcome = match &error {
        None => store.mark_webhook_delivered(hook.id, token).await,
        Some(err) => {
            let attempts = hook.attempts + 1;
            let next = (attempts < cfg.max_attempts as i32)
                .then(|| Timestamp::now().plus(backoff(cfg, hook.attempts)));
            if next.is_none() {
                tracing::warn!(delivery = hook.id, attempts, error = %err, "webhook given up");
            } else {
                tracing::info!(delivery = hook.id, attempts, error = %err, "webhook delivery failed; will retry");
            }
            store.mark_webhook_failed(hook.id, token, err, next).await
        }
    };
    match outcome {
        Ok(true) => {
            if error.is_none() {
                tracing::info!(delivery = hook.id, "webhook delivered");
            }
        }
        Ok(false) => tracing::warn!(delivery = hook.id, "webhook lease lost (another sender took it over)"),
        Err(e) => tracing::warn!(delivery = hook.id, error = %e, "cannot record the webhook outcome"),
    }
}

/// Claims and delivers every event due now. Returns how many were attempted.
pub(crate) async fn deliver_due(client: &reqwest::Client, store: &Store, cfg: &WebhookConfig) -> usize {
    let lease = cfg.timeout * 3 + Duration::from_secs(5);
    match store.claim_due_webhooks(Timestamp::now(), 32, lease).await {
        Ok(hooks) => {
            let n = hooks.len();
            futures_util::future::join_all(hooks.into_iter().map(|h| deliver(client, store, cfg, h))).await;
            n
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the webhook outbox");
            0
        }
    }
}

pub(crate) fn client(cfg: &WebhookConfig) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

/// The sender task: runs until the last `AppState` clone is dropped.
pub(crate) async fn run(
    owner: Weak<Inner>,
    store: Store,
    cfg: WebhookConfig,
    wake: Arc<tokio::sync::Notify>,
) {
    let client = client(&cfg);
    loop {
        if owner.strong_count() == 0 {
            return;
        }
        let n = deliver_due(&client, &store, &cfg).await;
        if n == 0 {
            let _ = tokio::time::timeout(cfg.poll_interval, wake.notified()).await;
        }
    }
}

impl AppState {
    /// Delivers what is due in the outbox until nothing is due or `deadline` passes (called at
    /// shutdown: events not delivered stay in the outbox for the next start).
    pub async fn flush_webhooks(&self, deadline: Duration) {
        let cfg = self.inner.config.webhooks.clone();
        let client = client(&cfg);
        let store = self.inner.store.clone();
        let _ =
            tokio::time::timeout(deadline, async { while deliver_due(&client, &store, &cfg).await > 0 {} })
                .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // RFC 4231 test case 2 style check: key "Jefe", message "what do ya want for nothing?"
        // split as "<ts>.<body>" is not possible, so check against a direct HMAC computation.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"k").unwrap();
        mac.update(b"12.{}");
        let want: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(signature(b"k", 12, b"{}"), format!("sha256={want}"));
        assert_ne!(signature(b"k", 13, b"{}"), signature(b"k", 12, b"{}"));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let cfg = WebhookConfig {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            ..Default::default()
        };
        let got: Vec<u64> = (0..6).map(|a| backoff(&cfg, a).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 10, 10]);
    }
}
