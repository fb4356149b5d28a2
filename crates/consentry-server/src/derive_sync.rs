//! Keeps the in-memory derivative index (`consentry_derive::DeriveIndex`) in step with the
//! store's change feed, for entries of `SignalType::Derive`.
//!
//! It works like the PDQ mirror in `sync.rs`, with its own task and its own feed position: at
//! start it loads `load_all_active(Derive)`, then polls `changes_since(seq)` every poll interval
//! and applies the `Derive` ops (only the last op per entry in a batch counts; `Deactivate`
//! removes, `Activate` inserts). A pruned feed or an unexpected error reloads the active set and
//! reconciles the index in place. Values that do not decode (which the store's validation makes
//! impossible short of a corrupted row) are logged by entry id and left out.
//!
//! Searches take a read lock; a batch of changes takes the write lock while it is applied
//! (decoding happens before, outside the lock).

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use consentry_derive::{DeriveIndex, Hit, Params, QueryFeatures, Signature};
use consentry_store::{Change, ChangeOp, SignalType, SignalValue, Store, StoreError};

/// How many changes one poll asks for.
const BATCH: u32 = 10_000;

/// The derivative index shared by lookups (read) and the sync task (write).
#[derive(Debug)]
pub struct DeriveMirror {
    index: RwLock<DeriveIndex>,
    /// The last change-feed seq applied.
    pub applied_seq: AtomicI64,
    /// The initial load is done.
    pub loaded: AtomicBool,
    /// Changes applied since start.
    pub changes_applied: AtomicU64,
    /// Feed poll errors since start.
    pub poll_errors: AtomicU64,
}

impl DeriveMirror {
    fn new(params: Params) -> DeriveMirror {
        DeriveMirror {
            index: RwLock::new(DeriveIndex::new(params)),
            applied_seq: AtomicI64::new(0),
            loaded: AtomicBool::new(false),
            changes_applied: AtomicU64::new(0),
            poll_errors: AtomicU64::new(0),
        }
    }

    /// Protected images in the index.
    pub fn len(&self) -> usize {
        self.index.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no derive entry is active (lookups then skip feature extraction).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every active derive entry the query matches (ids are store entry ids), sorted by id.
    pub fn search(&self, q: &QueryFeatures) -> Vec<Hit> {
        self.index.read().unwrap_or_else(|p| p.into_inner()).search(q)
    }
}

fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// The sync task's view of what is in the index: entry id → fingerprint of its value.
pub(crate) struct Tracker {
    entries: HashMap<i64, u64>,
}

fn decode(id: i64, v: &SignalValue) -> Option<Signature> {
    match v.derive_signature()? {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(entry = id, error = %e, "stored derive value does not decode: not indexed");
            None
        }
    }
}

/// Loads the active derive entries into a new mirror.
pub(crate) async fn load(
    store: &Store,
    params: Params,
) -> Result<(Arc<DeriveMirror>, Tracker, i64), StoreError> {
    let active = store.load_all_active(SignalType::Derive).await?;
    let mirror = Arc::new(DeriveMirror::new(params));
    let m = mirror.clone();
    let entries = tokio::task::spawn_blocking(move || {
        let mut idx = m.index.write().unwrap_or_else(|p| p.into_inner());
        let mut entries = HashMap::new();
        let mut sigs = Vec::with_capacity(active.entries.len());
        for (id, v) in &active.entries {
            if let Some(sig) = decode(*id, v) {
                entries.entry(*id).or_insert_with(|| fingerprint(&v.to_bytes()));
                sigs.push((*id as u64, sig));
            }
        }
        // One bulk build instead of one insert at a time. Entry ids are the store's keys, so
        // none is a duplicate; if one were, the first value stays indexed, as recorded above.
        let _ = idx.extend(sigs);
        entries
    })
    .await
    .map_err(|e| StoreError::Internal(format!("derive index load worker failed: {e}")))?;
    mirror.applied_seq.store(active.seq, Ordering::Release);
    mirror.loaded.store(true, Ordering::Release);
    Ok((mirror, Tracker { entries }, active.seq))
}

/// What to do to the index: remove these ids, then insert these.
type Plan = (Vec<i64>, Vec<(i64, u64, Signature)>);

impl Tracker {
    fn plan(&self, want: HashMap<i64, Option<SignalValue>>) -> Plan {
        let mut remove = Vec::new();
        let mut insert = Vec::new();
        for (id, v) in want {
            let have = self.entries.get(&id).copied();
            let fp = v.as_ref().map(|v| fingerprint(&v.to_bytes()));
            if have == fp {
                continue;
            }
            if have.is_some() {
                remove.push(id);
            }
            if let (Some(v), Some(fp)) = (v, fp) {
                if let Some(sig) = decode(id, &v) {
                    insert.push((id, fp, sig));
                }
            }
        }
        (remove, insert)
    }

    async fn apply(&mut self, mirror: &Arc<DeriveMirror>, plan: Plan) -> Result<usize, StoreError> {
        let (remove, insert) = plan;
        if remove.is_empty() && insert.is_empty() {
            return Ok(0);
        }
        for id in &remove {
            self.entries.remove(id);
        }
        for (id, fp, _) in &insert {
            self.entries.insert(*id, *fp);
        }
        let n = remove.len() + insert.len();
        let m = mirror.clone();
        tokio::task::spawn_blocking(move || {
            let mut idx = m.index.write().unwrap_or_else(|p| p.into_inner());
            for id in remove {
                idx.remove(id as u64);
            }
            for (id, _, sig) in insert {
                // A duplicate would mean the tracker and the index disagree: replace.
                idx.remove(id as u64);
                let _ = idx.insert(id as u64, sig);
            }
        })
        .await
        .map_err(|e| StoreError::Internal(format!("derive index worker failed: {e}")))?;
        Ok(n)
    }

    async fn apply_changes(
        &mut self,
        mirror: &Arc<DeriveMirror>,
        changes: &[Change],
    ) -> Result<usize, StoreError> {
        let mut last: HashMap<i64, Option<SignalValue>> = HashMap::new();
        for c in changes {
            match &c.op {
                ChangeOp::Activate(v @ SignalValue::Derive(_)) => {
                    last.insert(c.entry_id, Some(v.clone()));
                }
                ChangeOp::Deactivate(SignalType::Derive) => {
                    last.insert(c.entry_id, None);
                }
                _ => {}
            }
        }
        let plan = self.plan(last);
        self.apply(mirror, plan).await
    }

    async fn reload(&mut self, store: &Store, mirror: &Arc<DeriveMirror>) -> Result<i64, StoreError> {
        let active = store.load_all_active(SignalType::Derive).await?;
        let mut want: HashMap<i64, Option<SignalValue>> = self.entries.keys().map(|id| (*id, None)).collect();
        for (id, v) in active.entries {
            want.insert(id, Some(v));
        }
        let plan = self.plan(want);
        self.apply(mirror, plan).await?;
        Ok(active.seq)
    }
}

/// Runs until `owner` is dropped: polls the feed and applies its derive ops to `mirror`.
pub(crate) async fn run<T: Send + Sync + 'static>(
    owner: Weak<T>,
    store: Store,
    mirror: Arc<DeriveMirror>,
    mut tracker: Tracker,
    mut seq: i64,
    poll_interval: Duration,
) {
    let mut backoff = poll_interval;
    loop {
        if owner.strong_count() == 0 {
            tracing::debug!("derive index sync stopped");
            return;
        }
        match store.changes_since(seq, BATCH).await {
            Ok(changes) => {
                backoff = poll_interval;
                if let Some(last) = changes.last() {
                    let to = last.seq;
                    match tracker.apply_changes(&mirror, &changes).await {
                        Ok(n) => {
                            if n > 0 {
                                tracing::debug!(
                                    from = seq,
                                    to,
                                    changed = n,
                                    "applied change feed to the derive index"
                                );
                            }
                            seq = to;
                            mirror.applied_seq.store(seq, Ordering::Release);
                            mirror.changes_applied.fetch_add(changes.len() as u64, Ordering::Relaxed);
                        }
                        Err(e) => tracing::error!(error = %e, "cannot apply changes to the derive index"),
                    }
                    if changes.len() as u32 == BATCH {
                        continue;
                    }
                }
            }
            Err(StoreError::Database(e)) => {
                mirror.poll_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, seq, "change feed poll failed (derive index); retrying");
                backoff = (backoff * 2).min(Duration::from_secs(5));
                tokio::time::sleep(backoff).await;
                continue;
            }
            Err(e) => {
                mirror.poll_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, seq, "change feed unusable; reloading the derive active set");
                match tracker.reload(&store, &mirror).await {
                    Ok(s) => {
                        seq = s;
                        mirror.applied_seq.store(seq, Ordering::Release);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "reloading the derive active set failed");
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
