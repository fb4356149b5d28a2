//! Exact Hamming-radius index for 256-bit perceptual hashes (PDQ).
//!
//! [`Index`] returns **every** entry within a radius (0..=256, PDQ's match
//! threshold is 31) of a query, with its distance — no approximation. It uses
//! multi-index hashing (Norouzi, Punjani & Fleet): the 256 bits are cut into
//! `m` chunks of 16 bits up to 2^21 entries, `log2(n) - 2` (at most 23) beyond; by the
//! generalised pigeonhole principle an entry within `r` agrees with the query
//! within `rho_t` bits on some chunk `t`, where `sum(rho_t + 1) = r + 1`; those
//! buckets are probed. By its "pigeonring" form (Qin et al.) the entry's next
//! chunk is then close too, which a 16-bit sketch stored beside each list entry
//! checks before the entry's hash is read; the candidates left are verified with
//! a popcount. When probing would cost more than a scan (large radius, small
//! segment), the segment is scanned linearly. [`Index::search_batch`] searches a
//! large batch as one (blocks of 1,024 to 16,384 queries, each block's tables shared
//! out between the threads): table by table, the queries are sorted by key and probed
//! flip mask by flip mask, block by block of the key space, so each block of a table's
//! lists is read into the cache once instead of at random for every query (a table
//! probed sparsely: all its probes sorted by key).
//!
//! Concurrency: the index is a list of immutable segments plus a small
//! insert buffer, published as one `Arc`. Readers clone the `Arc` (a lock held
//! for nanoseconds) and search without blocking; writers build new segments
//! off to the side (LSM-style merging) and swap the `Arc`.
//!
//! Persistence: [`Index::save`] / [`Index::load`] (snapshot with version and
//! CRC-32 footer) and [`Store`] (snapshot + append-only journal, checkpoints).
//!
//! Degenerate hashes (all-zero, all-ones, far from PDQ's ~128 one bits) are
//! rejected at insert by default ([`DegeneratePolicy`]); see [`is_degenerate`].

mod perm;
mod persist;
mod scan;
mod segment;

pub use consentry_pdq::Hash256;
pub use persist::{LoadError, Store};
#[doc(hidden)]
pub use segment::{huge_vec, prefetch};

use segment::{JoinScratch, Part, Scratch, Segment, H};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};

/// PDQ's usual match threshold: distance ≤ 31 is a match.
pub const DEFAULT_RADIUS: u32 = 31;

/// Insert buffer size: beyond it, the buffer becomes an indexed segment.
const BUFFER_MAX: usize = 1024;

/// One search result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Match {
    /// The id given at insert.
    pub id: u64,
    /// The indexed hash.
    pub hash: Hash256,
    /// Hamming distance to the query (for dihedral search: the smallest over the variants).
    pub distance: u32,
}

/// What to do with a degenerate hash at insert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DegeneratePolicy {
    /// Refuse it: [`Index::insert`] returns [`InsertError::Degenerate`].
    #[default]
    Reject,
    /// Index it like any other hash (it is then found by queries near it).
    Accept,
}

/// Index settings.
#[derive(Clone, Copy, Debug, Default)]
pub struct IndexConfig {
    /// Degenerate hashes at insert.
    pub degenerate: DegeneratePolicy,
}

/// Why an insert was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InsertError {
    /// The hash is degenerate (see [`is_degenerate`]) and the policy is `Reject`.
    Degenerate {
        /// The entry's id.
        id: u64,
        /// Its hash.
        hash: Hash256,
    },
}

impl fmt::Display for InsertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InsertError::Degenerate { id, hash } => write!(
                f,
                "hash {hash} (id {id}) is degenerate ({} one bits; a PDQ hash has about 128)",
                hash.count_ones()
            ),
        }
    }
}

impl std::error::Error for InsertError {}

/// True for hashes no real image produces: PDQ thresholds its 256 DCT
/// coefficients at their median, so a real hash has about 128 one bits. A
/// hash with fewer than 32 or more than 224 one bits (all-zero, all-ones, a
/// zero-filled corrupt record...) is degenerate. Such hashes are all close to
/// each other, so indexing them makes every query near them match them all.
pub fn is_degenerate(h: &Hash256) -> bool {
    let c = h.count_ones();
    !(32..=224).contains(&c)
}

/// A segment with its deletions.
#[derive(Clone, Debug)]
struct SegRef {
    seg: Arc<Segment>,
    deleted: Arc<HashSet<u32>>,
}

impl SegRef {
    fn live(&self) -> usize {
        self.seg.len() - self.deleted.len()
    }
}

/// A published, immutable view of the index.
#[derive(Clone, Debug, Default)]
struct State {
    segments: Vec<SegRef>,
    buffer: Arc<Vec<(u64, H)>>,
}

impl State {
    fn len(&self) -> usize {
        self.segments.iter().map(SegRef::live).sum::<usize>() + self.buffer.len()
    }

    /// Calls `out(entry_key, id, hash, distance)`; the entry key identifies the entry in this state.
    /// Hashes given to `out` are in the original bit order.
    fn search(&self, q: &[u64; 4], r: u32, out: &mut impl FnMut((u32, u32), u64, &[u64; 4], u32)) {
        self.search_many(std::slice::from_ref(q), r, Part::WHOLE, &mut |_, key, id, h, d| out(key, id, h, d));
    }

    /// [`State::search`] for many queries: `out(query index, entry_key, id, hash, distance)`.
    /// A segment searched by multi-index hashing is searched for all the queries at once
    /// ([`Segment::search_join`]) when they are at least [`JOIN_MIN`], on `part`'s share of its
    /// tables; everything else (segments searched query by query, the insert buffer) in part 0
    /// only. The parts of a split together find each match once.
    fn search_many(
        &self,
        qs: &[[u64; 4]],
        r: u32,
        part: Part,
        out: &mut impl FnMut(usize, (u32, u32), u64, &[u64; 4], u32),
    ) {
        if !self.segments.is_empty() {
            let pqs: Vec<[u64; 4]> = qs.iter().map(perm::permute).collect();
            for (si, sr) in self.segments.iter().enumerate() {
                let seg = &sr.seg;
                let mut found = |qi: usize, p: u32, d: u32| {
                    if sr.deleted.is_empty() || !sr.deleted.contains(&p) {
                        let h = perm::unpermute(&seg.hashes[p as usize].0);
                        out(qi, (si as u32, p), seg.ids.get(p as usize), &h, d);
                    }
                };
                if seg.plan.is_some() && !seg.prefers_scan(r) && qs.len() >= JOIN_MIN {
                    JOIN_SCRATCH.with(|s| {
                        let mut s = s.borrow_mut();
                        // (a block is at most JOIN_BLOCK hashes unless one query holds more)
                        for (c, block) in pqs.chunks(JOIN_BLOCK).enumerate() {
                            let base = c * JOIN_BLOCK;
                            seg.search_join(block, r, part, &mut s, &mut |qi, p, d| {
                                found(base + qi as usize, p, d)
                            })
                        }
                    });
                } else if part.k == 0 {
                    SCRATCH.with(|s| {
                        let mut scratch = s.borrow_mut();
                        for (qi, pq) in pqs.iter().enumerate() {
                            seg.search(pq, r, &mut scratch, &mut |p, d| found(qi, p, d));
                        }
                    });
                }
            }
        }
        let bi = self.segments.len() as u32;
        if part.k != 0 {
            return;
        }
        for (qi, q) in qs.iter().enumerate() {
            for (p, (id, h)) in self.buffer.iter().enumerate() {
                let d = scan::dist(q, &h.0);
                if d <= r {
                    out(qi, (bi, p as u32), *id, &h.0, d);
                }
            }
        }
    }

    /// How many tables a batch search of `n` queries within `r` probes densely in the largest
    /// segment ([`Segment::dense_tables`]).
    fn dense_tables(&self, n: usize, r: u32) -> usize {
        self.segments.iter().max_by_key(|sr| sr.seg.len()).map_or(0, |sr| sr.seg.dense_tables(n, r))
    }

    /// All live entries, hashes in storage (permuted) bit order.
    fn entries(&self) -> (Vec<u64>, Vec<H>) {
        let n = self.len();
        let mut ids = Vec::with_capacity(n);
        let mut hashes = Vec::with_capacity(n);
        for sr in &self.segments {
            for i in 0..sr.seg.len() {
                if !sr.deleted.contains(&(i as u32)) {
                    ids.push(sr.seg.ids.get(i));
                    hashes.push(sr.seg.hashes[i]);
                }
            }
        }
        for (id, h) in self.buffer.iter() {
            ids.push(*id);
            hashes.push(H(perm::permute(&h.0)));
        }
        (ids, hashes)
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
    static JOIN_SCRATCH: RefCell<JoinScratch> = RefCell::new(JoinScratch::default());
}

/// From this many queries a batch search takes each segment's tables once for all of them
/// ([`Segment::search_join`]) instead of query by query (1 M entries, one thread: 512 queries
/// as one ~0.85× query by query, 1,024 ~1.3×, 10,000 ~3.5×).
const JOIN_MIN: usize = 1024;

/// Hashes per block of a batch search, at most (a block's scratch is a few bytes per hash and
/// candidate): the service's largest batch, 10,000 hashes, is one block, its tables split
/// between the threads (`in_blocks`). (1 M entries, one thread: a table pass for 10,000–16,384
/// queries 1.3–1.6× as fast per query as one for 5,000.)
const JOIN_BLOCK: usize = 16384;

/// Memory use of an index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexStats {
    /// Live entries.
    pub entries: usize,
    /// Immutable segments.
    pub segments: usize,
    /// Entries waiting in the insert buffer.
    pub buffered: usize,
    /// Heap bytes held by segments and buffer.
    pub heap_bytes: usize,
}

/// The exact Hamming-radius index. `Sync`: share it with `Arc` and search from
/// any number of threads while another thread inserts or removes.
pub struct Index {
    state: RwLock<Arc<State>>,
    writer: Mutex<()>,
    config: IndexConfig,
}

impl fmt::Debug for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Index").field("stats", &self.stats()).field("config", &self.config).finish()
    }
}

impl Default for Index {
    fn default() -> Self {
        Index::new()
    }
}

impl Index {
    /// An empty index with the default configuration.
    pub fn new() -> Index {
        Index::with_config(IndexConfig::default())
    }

    /// An empty index.
    pub fn with_config(config: IndexConfig) -> Index {
        Index { state: RwLock::new(Arc::new(State::default())), writer: Mutex::new(()), config }
    }

    /// Builds an index from entries in one pass (the fast way to load a hash list).
    pub fn build(
        entries: impl IntoIterator<Item = (u64, Hash256)>,
        config: IndexConfig,
    ) -> Result<Index, InsertError> {
        let idx = Index::with_config(config);
        idx.insert_many(entries)?;
        Ok(idx)
    }

    fn snapshot(&self) -> Arc<State> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn publish(&self, st: State) {
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(st);
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The configuration.
    pub fn config(&self) -> IndexConfig {
        self.config
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.snapshot().len()
    }

    /// True when the index holds no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entry counts and memory.
    pub fn stats(&self) -> IndexStats {
        let st = self.snapshot();
        IndexStats {
            entries: st.len(),
            segments: st.segments.len(),
            buffered: st.buffer.len(),
            heap_bytes: st.segments.iter().map(|s| s.seg.heap_bytes() + s.deleted.len() * 8).sum::<usize>()
                + st.buffer.capacity() * 48,
        }
    }

    fn check(&self, id: u64, h: &Hash256) -> Result<(), InsertError> {
        if self.config.degenerate == DegeneratePolicy::Reject && is_degenerate(h) {
            return Err(InsertError::Degenerate { id, hash: *h });
        }
        Ok(())
    }

    /// Adds one entry. Ids need not be unique.
    pub fn insert(&self, id: u64, hash: Hash256) -> Result<(), InsertError> {
        self.insert_many(std::iter::once((id, hash))).map(|_| ())
    }

    /// Adds entries; all or none (a degenerate hash under `Reject` refuses the batch).
    /// Returns how many were added.
    pub fn insert_many(
        &self,
        entries: impl IntoIterator<Item = (u64, Hash256)>,
    ) -> Result<usize, InsertError> {
        let entries = entries.into_iter();
        // Sized up front (a load of millions must not double its vectors while growing).
        let hint = entries.size_hint().0;
        let mut ids = Vec::with_capacity(hint);
        let mut hashes = Vec::with_capacity(hint);
        for (id, h) in entries {
            self.check(id, &h)?;
            ids.push(id);
            hashes.push(H(h.words()));
        }
        let added = ids.len();
        if added == 0 {
            return Ok(0);
        }
        let _w = self.lock_writer();
        let mut st = (*self.snapshot()).clone();
        if st.buffer.len() + added <= BUFFER_MAX {
            let mut buf = Vec::with_capacity(st.buffer.len() + added);
            buf.extend_from_slice(&st.buffer);
            buf.extend(ids.into_iter().zip(hashes));
            st.buffer = Arc::new(buf);
        } else {
            // The buffer and the new entries become one segment (built in the vectors just
            // filled: no second copy).
            let (mut all_ids, mut all_h) = (ids, hashes);
            if !st.buffer.is_empty() {
                all_ids.splice(0..0, st.buffer.iter().map(|e| e.0));
                all_h.splice(0..0, st.buffer.iter().map(|e| e.1));
            }
            {
                use rayon::prelude::*;
                all_h.par_iter_mut().for_each(|h| h.0 = perm::permute(&h.0));
            }
            st.buffer = Arc::new(Vec::new());
            if std::env::var_os("CONSENTRY_INDEX_TRACE").is_some() {
                eprintln!("insert_many: collected and permuted {} entries", all_ids.len());
            }
            st.segments
                .push(SegRef { seg: Arc::new(Segment::build(all_ids, all_h)), deleted: Arc::default() });
            Self::merge_policy(&mut st);
        }
        self.publish(st);
        Ok(added)
    }

    /// LSM merging: segments stay in decreasing size order, each at least
    /// three times the next, so there are O(log n) of them.
    fn merge_policy(st: &mut State) {
        while st.segments.len() >= 2 {
            let k = st.segments.len();
            if st.segments[k - 1].live() * 3 < st.segments[k - 2].live() {
                break;
            }
            let b = st.segments.pop().unwrap();
            let a = st.segments.pop().unwrap();
            st.segments.push(Self::merge(&[a, b]));
        }
    }

    fn merge(parts: &[SegRef]) -> SegRef {
        let n: usize = parts.iter().map(SegRef::live).sum();
        let mut ids = Vec::with_capacity(n);
        let mut hashes = Vec::with_capacity(n);
        for sr in parts {
            for i in 0..sr.seg.len() {
                if !sr.deleted.contains(&(i as u32)) {
                    ids.push(sr.seg.ids.get(i));
                    hashes.push(sr.seg.hashes[i]);
                }
            }
        }
        SegRef { seg: Arc::new(Segment::build(ids, hashes)), deleted: Arc::default() }
    }

    /// Removes every entry with this id; returns how many were removed.
    pub fn remove(&self, id: u64) -> usize {
        self.remove_many(&[id])
    }

    /// Removes every entry whose id is in `ids`; returns how many were removed.
    /// Deletions are tombstones until a segment is one-eighth deleted, then
    /// that segment is rebuilt without them (compaction).
    pub fn remove_many(&self, ids: &[u64]) -> usize {
        // Every segment id is tested: for a few ids (a case withdrawn, an entry disabled) a
        // comparison with each beats hashing millions of ids.
        const FEW: usize = 16;
        let set: HashSet<u64> = if ids.len() > FEW { ids.iter().copied().collect() } else { HashSet::new() };
        let wanted = |id: &u64| if ids.len() > FEW { set.contains(id) } else { ids.contains(id) };
        let _w = self.lock_writer();
        let mut st = (*self.snapshot()).clone();
        let mut removed = 0;
        for sr in st.segments.iter_mut() {
            let hits: Vec<u32> = sr
                .seg
                .ids
                .iter()
                .enumerate()
                .filter(|(i, id)| wanted(id) && !sr.deleted.contains(&(*i as u32)))
                .map(|(i, _)| i as u32)
                .collect();
            if !hits.is_empty() {
                removed += hits.len();
                let mut d = (*sr.deleted).clone();
                d.extend(hits);
                sr.deleted = Arc::new(d);
                if sr.deleted.len() * 8 >= sr.seg.len() {
                    *sr = Self::merge(std::slice::from_ref(sr));
                }
            }
        }
        let before = st.buffer.len();
        if st.buffer.iter().any(|(id, _)| wanted(id)) {
            st.buffer = Arc::new(st.buffer.iter().filter(|(id, _)| !wanted(id)).copied().collect());
        }
        removed += before - st.buffer.len();
        st.segments.retain(|s| s.seg.len() > 0);
        Self::merge_policy(&mut st);
        self.publish(st);
        removed
    }

    /// Whether [`Index::compact`] would make searches noticeably cheaper: the index holds more
    /// than one segment and the ones beside the largest hold at least 1 % as many live entries as
    /// it does. (Inserts made one batch at a time leave O(log n) segments, each searched on its
    /// own: three segments for a million entries inserted 10,000 at a time search 1.65-1.85x
    /// slower than one. A segment under 1 % of the largest costs little, and compacting would
    /// rebuild the largest for it.)
    pub fn compaction_worthwhile(&self) -> bool {
        let st = self.snapshot();
        let sizes: Vec<usize> = st.segments.iter().map(SegRef::live).collect();
        let largest = sizes.iter().copied().max().unwrap_or(0);
        sizes.len() > 1 && (sizes.iter().sum::<usize>() - largest) * 100 >= largest
    }

    /// Merges everything into one segment without deleted entries.
    pub fn compact(&self) {
        let _w = self.lock_writer();
        let st = self.snapshot();
        let (ids, hashes) = st.entries();
        let mut new = State::default();
        if !ids.is_empty() {
            new.segments.push(SegRef { seg: Arc::new(Segment::build(ids, hashes)), deleted: Arc::default() });
        }
        self.publish(new);
    }

    /// Every entry within `radius` of `query`, sorted by (distance, id).
    pub fn search(&self, query: &Hash256, radius: u32) -> Vec<Match> {
        let st = self.snapshot();
        let mut out = Vec::new();
        st.search(&query.words(), radius, &mut |_, id, h, d| {
            out.push(Match { id, hash: Hash256::from_words(*h), distance: d })
        });
        sort_matches(&mut out);
        out
    }

    /// Every entry within `radius` of any of `queries` (e.g. the 8 dihedral
    /// hashes of an image), each entry once with its smallest distance.
    pub fn search_dihedral(&self, queries: &[Hash256], radius: u32) -> Vec<Match> {
        let st = self.snapshot();
        let mut best: HashMap<(u32, u32), Match> = HashMap::new();
        for q in queries {
            st.search(&q.words(), radius, &mut |key, id, h, d| {
                let m = best.entry(key).or_insert(Match { id, hash: Hash256::from_words(*h), distance: d });
                m.distance = m.distance.min(d);
            });
        }
        let mut out: Vec<Match> = best.into_values().collect();
        sort_matches(&mut out);
        out
    }

    /// The `k` nearest entries within `radius` (ties broken by id).
    pub fn nearest(&self, query: &Hash256, k: usize, radius: u32) -> Vec<Match> {
        // Grow the radius so a near query does not pay for the full radius.
        let mut r = radius.min(7);
        loop {
            let mut m = self.search(query, r);
            if m.len() >= k || r >= radius {
                m.truncate(k);
                return m;
            }
            r = (r * 2 + 1).min(radius);
        }
    }

    /// [`Index::search`] for many queries on all cores; results in query order.
    ///
    /// A batch of at least 1,024 queries is searched as one, in blocks of up to 16,384: table by
    /// table, the block's queries sorted by key, so the tables are read block by block instead
    /// of at random (see `Segment::search_join`); each block's tables are split between the
    /// threads. A smaller batch is cut into one block per thread, searched query by query; where
    /// fewer than four tables would be probed densely (a small radius) the blocks are split by
    /// queries alone.
    pub fn search_batch(&self, queries: &[Hash256], radius: u32) -> Vec<Vec<Match>> {
        let st = self.snapshot();
        in_blocks(
            queries.len(),
            |_| 1,
            st.dense_tables(queries.len().min(JOIN_BLOCK), radius),
            |range, part| {
                let words: Vec<[u64; 4]> = queries[range].iter().map(Hash256::words).collect();
                let mut res = vec![Vec::new(); words.len()];
                st.search_many(&words, radius, part, &mut |qi, _, id, h, d| {
                    res[qi].push(Match { id, hash: Hash256::from_words(*h), distance: d })
                });
                res.iter_mut().for_each(|m| sort_matches(m));
                res
            },
            |all, more| {
                if !more.is_empty() {
                    all.extend(more);
                    sort_matches(all);
                }
            },
        )
    }

    /// [`Index::search_dihedral`] for many queries (each a list of hashes, such as an image's 8
    /// dihedral hashes, or a single hash) on all cores, their hashes searched as one batch as in
    /// [`Index::search_batch`]; results in query order.
    pub fn search_batch_dihedral(&self, queries: &[Vec<Hash256>], radius: u32) -> Vec<Vec<Match>> {
        if queries.iter().all(|q| q.len() == 1) {
            // one hash each: nothing to merge
            let flat: Vec<Hash256> = queries.iter().map(|q| q[0]).collect();
            return self.search_batch(&flat, radius);
        }
        let st = self.snapshot();
        let best = in_blocks(
            queries.len(),
            |i| queries[i].len(),
            st.dense_tables(queries.iter().map(Vec::len).sum::<usize>().min(JOIN_BLOCK), radius),
            |range, part| {
                let qs = &queries[range];
                let (mut owner, mut words) = (Vec::new(), Vec::new());
                for (i, q) in qs.iter().enumerate() {
                    owner.extend(std::iter::repeat_n(i, q.len()));
                    words.extend(q.iter().map(Hash256::words));
                }
                let mut best: Vec<HashMap<(u32, u32), Match>> = vec![HashMap::new(); qs.len()];
                st.search_many(&words, radius, part, &mut |vi, key, id, h, d| {
                    keep_nearest(
                        &mut best[owner[vi]],
                        key,
                        Match { id, hash: Hash256::from_words(*h), distance: d },
                    )
                });
                best
            },
            // one entry can be found by one variant in one part and by another in another
            |all, more| more.into_iter().for_each(|(key, m)| keep_nearest(all, key, m)),
        );
        best.into_iter()
            .map(|b| {
                let mut v: Vec<Match> = b.into_values().collect();
                sort_matches(&mut v);
                v
            })
            .collect()
    }

    /// Brute-force search (linear scan of every entry); the reference for tests and benchmarks.
    pub fn search_exhaustive(&self, query: &Hash256, radius: u32) -> Vec<Match> {
        let st = self.snapshot();
        let q = query.words();
        let pq = perm::permute(&q);
        let mut out = Vec::new();
        for sr in &st.segments {
            scan::scan(&sr.seg.hashes, &pq, radius, 0, &mut |p, d| {
                if !sr.deleted.contains(&p) {
                    let h = perm::unpermute(&sr.seg.hashes[p as usize].0);
                    out.push(Match {
                        id: sr.seg.ids.get(p as usize),
                        hash: Hash256::from_words(h),
                        distance: d,
                    });
                }
            });
        }
        for (id, h) in st.buffer.iter() {
            let d = scan::dist(&q, &h.0);
            if d <= radius {
                out.push(Match { id: *id, hash: Hash256::from_words(h.0), distance: d });
            }
        }
        sort_matches(&mut out);
        out
    }

    /// All live entries (in storage order).
    pub fn entries(&self) -> Vec<(u64, Hash256)> {
        let (ids, hashes) = self.snapshot().entries();
        ids.into_iter().zip(hashes.into_iter().map(|h| Hash256::from_words(perm::unpermute(&h.0)))).collect()
    }
}

/// Keeps `m` for `key` unless a match as near is held.
fn keep_nearest(best: &mut HashMap<(u32, u32), Match>, key: (u32, u32), m: Match) {
    let held = best.entry(key).or_insert(m);
    held.distance = held.distance.min(m.distance);
}

/// Runs `search(range, part)` over blocks of whole queries (`0..n`, query `i` holding `hashes(i)`
/// hashes) in parallel; the blocks' results in query order, `merge(into, from)` combining one
/// query's results from the parts of its block.
///
/// The blocks hold about equal shares of at most [`JOIN_BLOCK`] hashes (more only for a single
/// query that holds more). From [`JOIN_MIN`] hashes, with `dense` tables probed densely by a
/// block ([`Segment::dense_tables`]), each block is searched in up to one part per thread, each
/// part taking two or more of the tables ([`Part`]), and the blocks are as few as give every
/// thread a part: split by tables, every dense table pass is as large as the block, where split
/// by queries it would be a thread's share (a sparse pass gains nothing from its size, and a
/// split by queries shares the work out evenly). Otherwise (a small batch, or fewer than four
/// dense tables) one block per thread, in one part.
fn in_blocks<T: Send>(
    n: usize,
    hashes: impl Fn(usize) -> usize,
    dense: usize,
    search: impl Fn(std::ops::Range<usize>, Part) -> Vec<T> + Sync + Send,
    merge: impl Fn(&mut T, T) + Sync + Send,
) -> Vec<T> {
    use rayon::prelude::*;
    let total: usize = (0..n).map(&hashes).sum();
    let threads = rayon::current_num_threads().max(1);
    let mut parts = if total >= JOIN_MIN { (dense / 2).clamp(1, threads) } else { 1 };
    let mut per = total.div_ceil(total.div_ceil(JOIN_BLOCK).max(threads.div_ceil(parts))).max(1);
    if parts > 1 && per < JOIN_MIN {
        // blocks too small to be joined are searched query by query, in one part
        parts = 1;
        per = total.div_ceil(threads).max(1);
    }
    let mut blocks = Vec::new();
    let (mut start, mut held) = (0, 0);
    for i in 0..n {
        let h = hashes(i);
        if held > 0 && held + h > per {
            blocks.push(start..i);
            (start, held) = (i, 0);
        }
        held += h;
    }
    if start < n {
        blocks.push(start..n);
    }
    let tasks: Vec<(std::ops::Range<usize>, Part)> =
        blocks.iter().flat_map(|b| (0..parts).map(move |k| (b.clone(), Part { k, of: parts }))).collect();
    let mut done: Vec<Vec<T>> = tasks.into_par_iter().map(|(b, part)| search(b, part)).collect();
    let mut out = Vec::with_capacity(n);
    for block in done.chunks_mut(parts) {
        let (first, rest) = block.split_first_mut().expect("a block has one part or more");
        for more in rest {
            for (into, from) in first.iter_mut().zip(std::mem::take(more)) {
                merge(into, from);
            }
        }
        out.append(first);
    }
    out
}

/// Counters of this thread's multi-index searches since the last call:
/// `[probes, non-empty buckets, candidates verified]`; resets them.
#[doc(hidden)]
pub fn take_search_counters() -> [u64; 3] {
    segment::STATS.with(|s| s.replace([0; 3]))
}

fn sort_matches(m: &mut [Match]) {
    m.sort_unstable_by_key(|a| (a.distance, a.id, a.hash));
}

#[cfg(test)]
mod tests;
