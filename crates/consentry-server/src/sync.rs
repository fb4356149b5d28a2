//! Keeps the in-memory PDQ index in step with the store's change feed.
//!
//! At start the index is filled from `load_all_active(Pdq)` (one consistent snapshot and the
//! feed position it corresponds to). A background task then polls `changes_since(seq)` every
//! `poll_interval` and applies each batch: for every entry only its last op in the batch counts
//! (ops are absolute), `Deactivate` removes it, `Activate` inserts it (or replaces it if its value
//! changed). Lookups read the index without waiting for this task; they only ever see a state
//! that is at most one poll interval behind the database.
//!
//! If the feed was pruned past our position, or anything but a database hiccup goes wrong, the
//! task reloads the active set and reconciles the index with it in place (no lookup ever sees an
//! empty index). Database errors are retried with a short backoff.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use consentry_index::Index;
use consentry_pdq::Hash256;
use consentry_store::{ChangeOp, SignalType, SignalValue, Store, StoreError};

/// How many changes one poll asks for.
const BATCH: u32 = 10_000;

/// What the sync task has done so far (read by `/ready` and `/metrics`).
#[derive(Debug, Default)]
pub struct SyncStatus {
    /// The index was loaded from the store.
    pub loaded: AtomicBool,
    /// The last change-feed seq applied to the index.
    pub applied_seq: AtomicI64,
    /// Changes applied since start.
    pub changes_applied: AtomicU64,
    /// Full reloads since start (initial load excluded).
    pub reloads: AtomicU64,
    /// Poll errors since start.
    pub poll_errors: AtomicU64,
}

/// The sync task's view of what is in the index (entry id → hash).
pub(crate) struct Mirror {
    entries: HashMap<i64, Hash256>,
}

fn pdq(v: &SignalValue) -> Option<Hash256> {
    v.as_pdq()
}

impl Mirror {
    /// Loads the active set into `index` (which must be empty) and returns the mirror and seq.
    pub(crate) async fn load(store: &Store, index: &Arc<Index>) -> Result<(Mirror, i64), StoreError> {
        let active = store.load_all_active(SignalType::Pdq).await?;
        let entries: HashMap<i64, Hash256> =
            active.entries.iter().filter_map(|(id, v)| pdq(v).map(|h| (*id, h))).collect();
        let idx = index.clone();
        let list: Vec<(u64, Hash256)> = entries.iter().map(|(id, h)| (*id as u64, *h)).collect();
        tokio::task::spawn_blocking(move || idx.insert_many(list))
            .await
            .map_err(|e| StoreError::Internal(format!("index load worker failed: {e}")))?
            .map_err(|e| StoreError::Internal(format!("index refused an entry: {e}")))?;
        Ok((Mirror { entries }, active.seq))
    }

    /// Reconciles the index with a fresh active set (after the feed was pruned past us).
    async fn reload(&mut self, store: &Store, index: &Arc<Index>) -> Result<i64, StoreError> {
        let active = store.load_all_active(SignalType::Pdq).await?;
        let fresh: HashMap<i64, Hash256> =
            active.entries.iter().filter_map(|(id, v)| pdq(v).map(|h| (*id, h))).collect();
        let mut remove = Vec::new();
        let mut insert = Vec::new();
        for (id, h) in &self.entries {
            if fresh.get(id) != Some(h) {
                remove.push(*id as u64);
            }
        }
        for (id, h) in &fresh {
            if self.entries.get(id) != Some(h) {
                insert.push((*id as u64, *h));
            }
        }
        apply(index, remove, insert).await?;
        self.entries = fresh;
        Ok(active.seq)
    }

    /// Applies a batch of changes (in seq order). Returns how many entries changed in the index.
    async fn apply_changes(
        &mut self,
        index: &Arc<Index>,
        changes: &[consentry_store::Change],
    ) -> Result<usize, StoreError> {
        // Ops are absolute: only the last op per entry in the batch matters.
        let mut last: HashMap<i64, Option<Hash256>> = HashMap::new();
        for c in changes {
            let v = match &c.op {
                ChangeOp::Activate(v) => match pdq(v) {
                    Some(h) => Some(h),
                    None => continue,
                },
                ChangeOp::Deactivate(SignalType::Pdq) => None,
                #[allow(unreachable_patterns)]
                ChangeOp::Deactivate(_) => continue,
            };
            last.insert(c.entry_id, v);
        }
        let mut remove = Vec::new();
        let mut insert = Vec::new();
        for (id, want) in last {
            let have = self.entries.get(&id).copied();
            if have == want {
                continue;
            }
            if have.is_some() {
                remove.push(id as u64);
            }
            match want {
                Some(h) => {
                    insert.push((id as u64, h));
                    self.entries.insert(id, h);
                }
                None => {
                    self.entries.remove(&id);
                }
            }
        }
        let n = remove.len() + insert.len();
        apply(index, remove, insert).await?;
        Ok(n)
    }
}

async fn apply(index: &Arc<Index>, remove: Vec<u64>, insert: Vec<(u64, Hash256)>) -> Result<(), StoreError> {
    if remove.is_empty() && insert.is_empty() {
        return Ok(());
    }
    let idx = index.clone();
    tokio::task::spawn_blocking(move || {
        if !remove.is_empty() {
            idx.remove_many(&remove);
        }
        idx.insert_many(insert).map(|_| ())
    })
    .await
    .map_err(|e| StoreError::Internal(format!("index worker failed: {e}")))?
    .map_err(|e| StoreError::Internal(format!("index refused an entry: {e}")))
}

/// Runs until `owner` is dropped: polls the feed and applies it to `index`.
pub(crate) async fn run<T: Send + Sync + 'static>(
    owner: Weak<T>,
    store: Store,
    index: Arc<Index>,
    status: Arc<SyncStatus>,
    mut mirror: Mirror,
    mut seq: i64,
    poll_interval: Duration,
) {
    let mut backoff = poll_interval;
    loop {
        if owner.strong_count() == 0 {
            tracing::debug!("index sync stopped");
            return;
        }
        match store.changes_since(seq, BATCH).await {
            Ok(changes) => {
                backoff = poll_interval;
                if let Some(last) = changes.last() {
                    let to = last.seq;
                    match mirror.apply_changes(&index, &changes).await {
                        Ok(n) => {
                            tracing::debug!(from = seq, to, changed = n, "applied change feed");
                            seq = to;
                            status.applied_seq.store(seq, Ordering::Release);
                            status.changes_applied.fetch_add(changes.len() as u64, Ordering::Relaxed);
                        }
                        Err(e) => tracing::error!(error = %e, "cannot apply changes to the index"),
                    }
                    if changes.len() as u32 == BATCH {
                        continue; // more waiting: no sleep
                    }
                }
            }
            Err(StoreError::Database(e)) => {
                status.poll_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, seq, "change feed poll failed; retrying");
                backoff = (backoff * 2).min(Duration::from_secs(5));
                tokio::time::sleep(backoff).await;
                continue;
            }
            Err(e) => {
                // Pruned feed (FeedTruncated) or anything unexpected: start again from a snapshot.
                status.poll_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, seq, "change feed unusable; reloading the active set");
                match mirror.reload(&store, &index).await {
                    Ok(s) => {
                        seq = s;
                        status.applied_seq.store(seq, Ordering::Release);
                        status.reloads.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "reloading the active set failed");
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        tokio::time::sleep(backoff).await;
                        continue;
                    }
                }
            }
        }
        tokio::time::sleep(poll_interval).await;
    }
}
