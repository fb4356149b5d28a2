//! consentry-telegram: a Telegram moderation bot that deletes images matching protected hashes
//! (survivors' cases, known abusive material) and each chat's own admin-approved bank.
//!
//! - [`api`]: a thin reqwest client for the Bot API (why not teloxide: see the README) with 429
//!   `retry_after`, back-off and 20 MB in-memory downloads.
//! - [`matcher`]: the embedded store + index (same banks as `consentry serve`) or a remote server.
//! - [`state`]: the update offset, chat settings, review queues and strikes, in a JSON file
//!   written atomically after every handled update.
//! - [`outbox`]: rate-limited sending.
//! - [`run`]: long polling; each batch of updates is handled concurrently.
//! - [`run_webhook`] / [`webhook`]: webhook mode (same handler, same state file).
//!
//! Media is downloaded into memory, hashed and dropped: never written to disk, never logged.
//! Logs carry chat / message / user ids, file unique ids, hashes and distances.

#![warn(missing_docs)]

pub mod api;
#[cfg(feature = "fake-api")]
pub mod fake;
mod handler;
pub mod matcher;
pub mod outbox;
pub mod state;
pub mod texts;
pub mod webhook;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use api::{ApiError, ApiOptions, BotApi};
pub use matcher::{Matcher, Remote};
pub use outbox::RateLimits;
pub use state::{Action, DerivePolicy, StateFile};
pub use texts::Lang;
pub use webhook::Webhook;

/// The bot's settings. `Default` is what `consentry telegram` uses without flags.
#[derive(Clone, Debug)]
pub struct BotConfig {
    /// getUpdates long-poll timeout, seconds.
    pub poll_timeout_secs: u64,
    /// Most updates per getUpdates (1..=100).
    pub poll_limit: u32,
    /// Updates of one batch handled at once (downloads and hashing overlap).
    pub concurrency: usize,
    /// Match radius (PDQ's 31).
    pub radius: u32,
    /// Images whose PDQ quality is below this are not matched (their hashes are unreliable).
    pub min_quality: u8,
    /// Policy of chats that have not chosen one.
    pub default_action: Action,
    /// Whether chats that have not chosen post a notice after a removal.
    pub default_notice: bool,
    /// What chats that have not chosen do with matches on local evidence only.
    pub default_derive: DerivePolicy,
    /// Language of chats that have not chosen one.
    pub default_lang: Lang,
    /// Largest file downloaded (the Bot API's 20 MB).
    pub max_download: u64,
    /// Sending limits.
    pub rate: RateLimits,
    /// How long an admin check (getChatMember) is trusted.
    pub admin_cache_ttl: Duration,
    /// File hashes remembered (by `file_unique_id`).
    pub hash_cache_entries: usize,
    /// Delay before polling again after getUpdates failed (doubled up to 30 s).
    pub poll_backoff: Duration,
    /// Cases one user may open with `/protect` per hour (0: no limit).
    pub protect_per_hour: u32,
    /// Whether `/status` tells a survivor how often her hashes matched (counts only).
    pub show_case_matches: bool,
    /// How long a lookup is retried while the store or the server cannot be reached (a restart,
    /// a failover), with back-off from 200 ms to 5 s, before the image is left unchecked: an
    /// image posted during a short outage is checked late rather than never.
    pub lookup_patience: Duration,
}

impl Default for BotConfig {
    fn default() -> Self {
        BotConfig {
            poll_timeout_secs: 30,
            poll_limit: 100,
            concurrency: 8,
            radius: consentry_index::DEFAULT_RADIUS,
            min_quality: 50,
            default_action: Action::Escalate,
            default_notice: true,
            default_derive: DerivePolicy::Act,
            default_lang: Lang::En,
            max_download: api::MAX_DOWNLOAD_BYTES,
            rate: RateLimits::default(),
            admin_cache_ttl: Duration::from_secs(60),
            hash_cache_entries: 200_000,
            poll_backoff: Duration::from_millis(500),
            protect_per_hour: 5,
            show_case_matches: true,
            lookup_patience: Duration::from_secs(120),
        }
    }
}

/// Why the bot stopped with an error.
#[derive(Debug)]
pub enum BotError {
    /// getMe failed at start (bad token, no network).
    Start(ApiError),
    /// Webhook mode could not start (bad URL or secret, setWebhook refused).
    Webhook(String),
}

impl std::fmt::Display for BotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BotError::Start(e) => write!(f, "cannot start the bot (getMe): {e}"),
            BotError::Webhook(e) => write!(f, "webhook mode: {e}"),
        }
    }
}

impl std::error::Error for BotError {}

/// Runs the bot until `shutdown` completes: long polling, each batch handled concurrently,
/// progress saved to `state` after every update. On shutdown the updates in flight are finished,
/// the state saved and the queued messages sent.
pub async fn run(
    api: BotApi,
    matcher: Matcher,
    state: Arc<StateFile>,
    config: BotConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BotError> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let r = handler::run_loop(api, matcher, state, config, stop_rx).await;
    watcher.abort();
    r
}

/// Runs the bot in webhook mode until `shutdown` completes (see [`webhook`]): the same handling
/// and state file as [`run`], updates POSTed by Telegram instead of polled.
pub async fn run_webhook(
    api: BotApi,
    matcher: Matcher,
    state: Arc<StateFile>,
    config: BotConfig,
    webhook: Webhook,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BotError> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let r = webhook::run_webhook(api, matcher, state, config, webhook, stop_rx).await;
    watcher.abort();
    r
}
