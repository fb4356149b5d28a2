//! The entry and bank details that lookup replies carry, cached between writes.
//!
//! A match names its bank, metadata, quality and source, and a match is only reported if its
//! entry and bank are still enabled (the index may be a poll interval behind the store). Reading
//! those two rows from the store for every match made a matching lookup cost twice a miss; this
//! cache keeps them in memory and throws everything away whenever they may have changed:
//!
//! * a write of this process that may change an existing entry, bank or case
//!   ([`Store::details_generation`]; it moves before the write's reply is sent, so a lookup made
//!   after a disable, withdrawal or rename has been answered never sees the old state);
//! * a change-feed batch applied by the index sync (`applied_seq`): writes of other processes on
//!   the same database, seen as soon as the index sees them;
//! * the start of every [`EPOCH`] (a bank renamed by another process leaves no trace in the
//!   feed; its new name shows within this time).
//!
//! A value read from the store is cached only if none of the three moved while it was read, so
//! a read racing a write can never leave the old state behind.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use consentry_store::{Bank, Entry, Store, StoreError};

/// How long a cached value may be served at most.
pub(crate) const EPOCH: Duration = Duration::from_secs(1);
/// Entries kept at most; the cache starts afresh when it is full.
pub(crate) const CAPACITY: usize = 65_536;

/// An entry and its bank, or `None` when either no longer exists.
pub(crate) type Details = Option<(Arc<Entry>, Arc<Bank>)>;

/// `(details generation, applied seq, epoch)` that cached values were read under.
type Generation = (u64, i64, u64);

struct Cached {
    generation: Generation,
    entries: HashMap<i64, Details>,
    banks: HashMap<i64, Option<Arc<Bank>>>,
}

pub(crate) struct DetailsCache {
    cached: Mutex<Cached>,
    started: Instant,
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
}

impl DetailsCache {
    pub(crate) fn new() -> DetailsCache {
        DetailsCache {
            cached: Mutex::new(Cached {
                generation: (0, 0, 0),
                entries: HashMap::new(),
                banks: HashMap::new(),
            }),
            started: Instant::now(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn generation(&self, store: &Store, applied_seq: &AtomicI64) -> Generation {
        (
            store.details_generation(),
            applied_seq.load(Ordering::Acquire),
            (self.started.elapsed().as_millis() / EPOCH.as_millis()) as u64,
        )
    }

    /// Locks the cache, emptied first if `generation` is newer than the one it was filled under.
    /// `None` if the cache already holds values of a newer generation than `generation` (a
    /// request that started before a write must neither serve nor discard them).
    fn lock_at(&self, generation: Generation) -> Option<std::sync::MutexGuard<'_, Cached>> {
        let mut c = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if c.generation != generation {
            let (a, b) = (c.generation, generation);
            if a.0 > b.0 || a.1 > b.1 || a.2 > b.2 {
                return None;
            }
            c.entries.clear();
            c.banks.clear();
            c.generation = generation;
        }
        Some(c)
    }

    /// The details of entry `id` and its bank, from the cache or read from `store`.
    pub(crate) async fn get(
        &self,
        store: &Store,
        applied_seq: &AtomicI64,
        id: i64,
    ) -> Result<Details, StoreError> {
        let before = self.generation(store, applied_seq);
        if let Some(d) = self.lock_at(before).and_then(|c| c.entries.get(&id).cloned()) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(d);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let entry = match store.get_entry(id).await {
            Ok(e) => Arc::new(e),
            Err(StoreError::NotFound(_)) => return Ok(self.keep(store, applied_seq, before, id, None, None)),
            Err(e) => return Err(e),
        };
        let cached_bank = self.lock_at(before).and_then(|c| c.banks.get(&entry.bank_id).cloned());
        let bank = match cached_bank {
            Some(b) => b,
            None => match store.get_bank(entry.bank_id).await {
                Ok(b) => Some(Arc::new(b)),
                Err(StoreError::NotFound(_)) => None,
                Err(e) => return Err(e),
            },
        };
        let details = bank.clone().map(|b| (entry.clone(), b));
        Ok(self.keep(store, applied_seq, before, id, details, Some((entry.bank_id, bank))))
    }

    /// Caches what was read under `before` if nothing moved since; returns it either way.
    fn keep(
        &self,
        store: &Store,
        applied_seq: &AtomicI64,
        before: Generation,
        id: i64,
        details: Details,
        bank: Option<(i64, Option<Arc<Bank>>)>,
    ) -> Details {
        if self.generation(store, applied_seq) == before {
            if let Some(mut c) = self.lock_at(before) {
                if c.entries.len() >= CAPACITY {
                    c.entries.clear();
                    c.banks.clear();
                }
                c.entries.insert(id, details.clone());
                if let Some((bank_id, b)) = bank {
                    c.banks.insert(bank_id, b);
                }
            }
        }
        details
    }
}
