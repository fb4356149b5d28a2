//! Retention: what the service keeps only for a while. Once at start and then every
//! `retention_interval`, the change feed older than `keep_changes` is deleted (a replica further
//! behind than that reloads its index from the entries, which stay); when
//! `keep_match_counts_days` is set, the match counts of older days (they name who looked an entry
//! up: API keys and Telegram chats); and when `keep_withdrawn` is set, the codes of cases
//! withdrawn longer ago than that (the cases stay, with their number and status). Several
//! processes on one database may all run it: each deletion is idempotent and logged in the audit
//! log.

use std::sync::Weak;
use std::time::Duration;

use consentry_store::{day_of, Actor, Store, Timestamp};

use crate::ServerConfig;

/// Rows deleted per transaction.
const STEP: u32 = 20_000;

/// Rows one pass deleted.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Pruned {
    changes: u64,
    match_counts: u64,
    withdrawn_codes: u64,
}

/// One pass over what `config` keeps only for a while.
pub(crate) async fn prune_once(
    store: &Store,
    config: &ServerConfig,
    now: Timestamp,
) -> Result<Pruned, consentry_store::StoreError> {
    let actor = Actor::system();
    let ago =
        |keep: Duration| Timestamp(now.0.saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX)));
    let mut done = Pruned::default();
    if let Some(keep) = config.keep_changes {
        done.changes = in_steps(|| store.prune_changes_before(&actor, ago(keep), STEP)).await?;
    }
    if let Some(days) = config.keep_match_counts_days {
        done.match_counts =
            in_steps(|| store.prune_match_counts(&actor, day_of(now) - i64::from(days), STEP)).await?;
    }
    if let Some(keep) = config.keep_withdrawn {
        done.withdrawn_codes = in_steps(|| store.purge_withdrawn_cases(&actor, ago(keep), STEP)).await?;
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
        if config.keep_changes.is_none()
            && config.keep_match_counts_days.is_none()
            && config.keep_withdrawn.is_none()
        {
            return;
        }
        match prune_once(&store, &config, Timestamp::now()).await {
            Ok(p) if p == Pruned::default() => {}
            Ok(p) => tracing::info!(
                changes = p.changes,
                counts = p.match_counts,
                withdrawn_codes = p.withdrawn_codes,
                "retention: old rows deleted"
            ),
            Err(e) => tracing::warn!(error = %e, "retention: nothing deleted this time"),
        }
        tokio::time::sleep(config.retention_interval).await;
    }
}
