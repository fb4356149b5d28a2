//! Keeps the in-memory PDQ index in step with the store's change feed.
//!
//! At start the index is filled from the active PDQ set, read in id-ordered pages from one
//! consistent snapshot (`Store::for_each_active_page`) straight into compact id and hash
//! vectors, and built in one pass; the feed position of that snapshot is where polling starts.
//! The task remembers only which ids the index holds (a bitmap, [`IdSet`]), not their hashes.
//! A background task then polls `changes_since(seq)` every `poll_interval` and applies each
//! batch: for every entry only its last op in the batch counts
//! (ops are absolute), `Deactivate` removes it, `Activate` inserts it unless it is already
//! there. Lookups read the index without waiting for this task; they only ever see a state
//! that is at most one poll interval behind the database.
//!
//! Batches applied one at a time leave the index in several segments (`Index::insert_many`
//! merges them LSM-style), each searched on its own: after a bulk import of a million hashes,
//! lookups were 1.65-1.85x slower until a restart. So once the feed has been quiet for
//! `compact_after_quiet` after a change, the task compacts the index into one segment on the
//! blocking pool (if `Index::compaction_worthwhile`; lookups keep reading the previous
//! snapshot meanwhile, and the memory of both is held while the new one is built). Feed
//! changes wait for it (about 0.2 s at 1M entries, a few seconds at 10M); a lookup still drops
//! an entry disabled meanwhile, because it reads the entry's details (cached at most 1 s).
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
    /// Compactions of the index into one segment since start.
    pub compactions: AtomicU64,
}

fn pdq(v: &SignalValue) -> Option<Hash256> {
    v.as_pdq()
}

/// Rows per page when the active set is read from the store (at start and on a reload).
const LOAD_PAGE: u32 = 50_000;

/// A set of entry ids as a bitmap in pages of 2^16 ids (8 KiB each). The store hands out entry
/// ids consecutively, so 10M entries take about 1.2 MiB here, where an id → hash map took
/// about half a gigabyte.
#[derive(Default)]
pub(crate) struct IdSet {
    pages: HashMap<u64, Box<[u64; 1024]>>,
}

impl IdSet {
    fn split(id: i64) -> (u64, usize, u64) {
        let id = id as u64;
        (id >> 16, ((id >> 6) & 1023) as usize, 1u64 << (id & 63))
    }

    pub(crate) fn contains(&self, id: i64) -> bool {
        let (p, w, b) = Self::split(id);
        self.pages.get(&p).is_some_and(|page| page[w] & b != 0)
    }

    /// True if `id` was not in the set.
    pub(crate) fn insert(&mut self, id: i64) -> bool {
        let (p, w, b) = Self::split(id);
        let page = self.pages.entry(p).or_insert_with(|| Box::new([0; 1024]));
        let new = page[w] & b == 0;
        page[w] |= b;
        new
    }

    /// True if `id` was in the set.
    pub(crate) fn remove(&mut self, id: i64) -> bool {
        let (p, w, b) = Self::split(id);
        let Some(page) = self.pages.get_mut(&p) else { return false };
        let had = page[w] & b != 0;
        page[w] &= !b;
        if had && page.iter().all(|&x| x == 0) {
            self.pages.remove(&p);
        }
        had
    }

    /// Every id, in no particular order.
    fn iter(&self) -> impl Iterator<Item = i64> + '_ {
        self.pages.iter().flat_map(|(&p, page)| {
            page.iter().enumerate().flat_map(move |(w, &bits)| {
                let base = (p << 16) | ((w as u64) << 6);
                (0..64u64).filter(move |i| bits & (1 << i) != 0).map(move |i| (base | i) as i64)
            })
        })
    }
}

/// The sync task's view of the index: which entry ids it holds. The hashes themselves are only
/// in the index. An entry's value never changes in the store (there is no update of `value`,
/// and ids are never reused), so "id present" is all the feed needs to stay idempotent.
pub(crate) struct Mirror {
    present: IdSet,
}

/// Reads the active PDQ set page by page into compact id and hash vectors (no row list, no
/// map); returns them with the feed position and the set of ids.
async fn read_active(store: &Store) -> Result<(Vec<u64>, Vec<Hash256>, IdSet, i64), StoreError> {
    let mut ids = Vec::new();
    let mut hashes = Vec::new();
    let mut present = IdSet::default();
    let seq = store
        .for_each_active_page(SignalType::Pdq, LOAD_PAGE, |page| {
            for (id, v) in page {
                if let Some(h) = pdq(&v) {
                    if present.insert(id) {
                        ids.push(id as u64);
                        hashes.push(h);
                    }
                }
            }
            Ok(())
        })
        .await?;
    Ok((ids, hashes, present, seq))
}

/// Hands freed heap pages back to the OS after a load (glibc keeps them otherwise).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator's arenas to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Mirror {
    /// Loads the active set into `index` (which must be empty) and returns the mirror and seq.
    pub(crate) async fn load(store: &Store, index: &Arc<Index>) -> Result<(Mirror, i64), StoreError> {
        let (ids, hashes, present, seq) = read_active(store).await?;
        let idx = index.clone();
        tokio::task::spawn_blocking(move || {
            let out = idx.insert_many(ids.into_iter().zip(hashes));
            release_free_memory();
            out
        })
        .await
        .map_err(|e| StoreError::Internal(format!("index load worker failed: {e}")))?
        .map_err(|e| StoreError::Internal(format!("index refused an entry: {e}")))?;
        Ok((Mirror { present }, seq))
    }

    /// Reconciles the index with a fresh active set (after the feed was pruned past us).
    async fn reload(&mut self, store: &Store, index: &Arc<Index>) -> Result<i64, StoreError> {
        let (ids, hashes, fresh, seq) = read_active(store).await?;
        let remove: Vec<u64> =
            self.present.iter().filter(|id| !fresh.contains(*id)).map(|id| id as u64).collect();
        let insert: Vec<(u64, Hash256)> =
            ids.into_iter().zip(hashes).filter(|(id, _)| !self.present.contains(*id as i64)).collect();
        apply(index, remove, insert).await?;
        self.present = fresh;
        release_free_memory();
        Ok(seq)
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
            match want {
                // Already indexed: its value cannot have changed (see `Mirror`).
                Some(_) if self.present.contains(id) => {}
                Some(h) => {
                    insert.push((id as u64, h));
                    self.present.insert(id);
                }
                None => {
                    if self.present.remove(id) {
                        remove.push(id as u64);
                    }
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

/// Compacts the index into one segment on the blocking pool (lookups keep reading the old
/// snapshot meanwhile).
async fn compact(index: &Arc<Index>, status: &SyncStatus) {
    let idx = index.clone();
    let started = std::time::Instant::now();
    match tokio::task::spawn_blocking(move || idx.compact()).await {
        Ok(()) => {
            status.compactions.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                entries = index.len(),
                ms = started.elapsed().as_millis() as u64,
                "index compacted"
            );
        }
        Err(e) => tracing::error!(error = %e, "index compaction failed"),
    }
}

/// Runs until `owner` is dropped: polls the feed and applies it to `index`; once the feed has
/// been quiet for `compact_after_quiet` after writes, compacts the index if that is worthwhile.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run<T: Send + Sync + 'static>(
    owner: Weak<T>,
    store: Store,
    index: Arc<Index>,
    status: Arc<SyncStatus>,
    mut mirror: Mirror,
    mut seq: i64,
    poll_interval: Duration,
    compact_after_quiet: Duration,
) {
    let mut backoff = poll_interval;
    // When the index last changed, while a compaction may still be due.
    let mut changed_at: Option<std::time::Instant> = None;
    loop {
        if owner.strong_count() == 0 {
            tracing::debug!("index sync stopped");
            return;
        }
        match store.changes_since(seq, BATCH).await {
            Ok(changes) => {
                backoff = poll_interval;
                if changes.is_empty() && changed_at.is_some_and(|t| t.elapsed() >= compact_after_quiet) {
                    changed_at = None;
                    if index.compaction_worthwhile() {
                        compact(&index, &status).await;
                    }
                }
                if let Some(last) = changes.last() {
                    let to = last.seq;
                    match mirror.apply_changes(&index, &changes).await {
                        Ok(n) => {
                            if n > 0 {
                                changed_at = Some(std::time::Instant::now());
                            }
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
                        changed_at = Some(std::time::Instant::now());
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

#[cfg(test)]
mod tests {
    use super::IdSet;

    #[test]
    fn id_set_tracks_inserts_and_removals_across_pages() {
        let mut s = IdSet::default();
        let ids = [1i64, 2, 63, 64, 65_535, 65_536, 7_000_001, 1 << 40];
        for &id in &ids {
            assert!(!s.contains(id));
            assert!(s.insert(id));
            assert!(!s.insert(id), "second insert of {id}");
            assert!(s.contains(id));
        }
        assert!(!s.contains(3) && !s.contains(65_537));
        let mut all: Vec<i64> = s.iter().collect();
        all.sort_unstable();
        assert_eq!(all, ids);
        assert!(s.remove(65_536));
        assert!(!s.remove(65_536));
        assert!(!s.contains(65_536) && s.contains(65_535));
        assert!(s.remove(1 << 40));
        assert_eq!(s.pages.len(), 2, "an emptied page is dropped");
        let left: Vec<i64> = s.iter().collect();
        assert_eq!(left.len(), 6);
    }
}
