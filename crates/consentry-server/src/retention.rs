//! Retention: what the service keeps only for a while. Once at start and then every
//! `retention_interval`, the change feed older than `keep_changes` is deleted (a replica further
//! behind than that reloads its index from the entries, which stay) and, when
//! `keep_match_counts_days` is set, the match counts of older days (they name who looked an entry
//! up: API keys and Telegram chats). Several processes on one database may all run it: each
//! deletion is idempotent and logged in the audit log.

use std::sync::Weak;
use std::time::Duration;

use consentry_store::{day_of, Actor, Store, Timestamp};

/// Rows deleted per transaction.
const STEP: u32 = 20_000;

/// One pass: returns (feed rows, match-count rows) deleted.
pub(crate) async fn prune_once(
    store: &Store,
    keep_changes: Option<Duration>,
    keep_match_counts_days: Option<u32>,
    now: Timestamp,
) -> Result<(u64, u64), consentry_store::StoreError> {
    let actor = Actor::system();
    let mut done = (0, 0);
    if let Some(keep) = keep_changes {
        let before = Timestamp(now.0.saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX)));
        done.0 = in_steps(|| store.prune_changes_before(&actor, before, STEP)).await?;
    }
    if let Some(days) = keep_match_counts_days {
        done.1 = in_steps(|| store.prune_match_counts(&actor, day_of(now) - i64::from(days), STEP)).await?;
    }
    Ok(done)
}

/// Calls `step` (a deletion of at most `STEP` rows) until it deletes fewer; returns the rows
/// deleted. Short transactions, so that writers never wait long: a first pass over a large
/// database may have millions of rows to delete.
async fn in_steps<F, Fut>(mut step: F) -> Result<u64, consentry_store::StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, consentry_store::StoreError>>,
{
    let mut total = 0;
    loop {
        let n = step().await?;
        total += n;
        if n < u64::from(STEP) {
            return Ok(total);
        }
    }
}

pub(crate) async fn run(inner: Weak<crate::Inner>, store: Store) {
    loop {
        let Some(config) = inner.upgrade().map(|i| i.config.clone()) else { return };
        if config.keep_changes.is_none() && config.keep_match_counts_days.is_none() {
            return;
        }
        match prune_once(&store, config.keep_changes, config.keep_match_counts_days, Timestamp::now()).await {
            Ok((0, 0)) => {}
            Ok((changes, counts)) => tracing::info!(changes, counts, "retention: old rows deleted"),
            Err(e) => tracing::warn!(error = %e, "retention: nothing deleted this time"),
        }
        tokio::time::sleep(config.retention_interval).await;
    }
}
