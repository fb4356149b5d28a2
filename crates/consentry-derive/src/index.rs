//! The derivative index: global PDQ hashes in `consentry-index` (exact
//! multi-index hashing) and the stored keypoints' descriptors in bucket
//! tables keyed by fixed bit subsets, then verification per candidate image.

use crate::verify::{hamming, inliers, Corr};
use crate::{Params, QueryFeatures, Signature};
use consentry_index::{DegeneratePolicy, Index, IndexConfig};
use std::collections::HashMap;

/// One matched protected image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// Its id.
    pub id: u64,
    /// Smallest PDQ distance over the query's dihedral hashes, when within the radius.
    pub pdq_distance: Option<u32>,
    /// Geometrically consistent correspondences of the best hypothesis (0 when it does not pass).
    pub inliers: usize,
    /// Their score, Σ (max_hamming + 1 − distance) (0 when it does not pass).
    pub score: u32,
}

/// Bit positions of each table's key (deterministic).
fn key_bits(params: &Params) -> Vec<Vec<u8>> {
    let mut s: u64 = 0xD1B5_4A32_D192_ED03;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    (0..params.lsh_tables)
        .map(|_| {
            let mut all: Vec<u8> = (0..=255u8).collect();
            for i in (1..all.len()).rev() {
                let j = (next() % (i as u64 + 1)) as usize;
                all.swap(i, j);
            }
            all.truncate(params.lsh_bits.min(32));
            all
        })
        .collect()
}

#[inline]
fn key(desc: &[u64; 4], bits: &[u8]) -> u32 {
    let mut k = 0u32;
    for (i, &b) in bits.iter().enumerate() {
        k |= (((desc[usize::from(b) / 64] >> (b % 64)) & 1) as u32) << i;
    }
    k
}

fn judge(params: &Params, id: u64, sig: &Signature, q: &QueryFeatures, corrs: &mut Vec<Corr>) -> Option<Hit> {
    let d = q.pdq.iter().map(|h| h.distance(&sig.pdq)).min().unwrap_or(u32::MAX);
    let pdq_distance = (d <= params.pdq_radius).then_some(d);
    let (n, sc) =
        if can_pass(params, corrs) { inliers(params, &sig.keypoints, &q.keypoints, corrs) } else { (0, 0) };
    let pass = n >= params.min_inliers && sc >= params.min_score;
    let (n, sc) = if pass { (n, sc) } else { (0, 0) };
    (pdq_distance.is_some() || pass).then_some(Hit { id, pdq_distance, inliers: n, score: sc })
}

/// Whether the correspondences could pass the local rule at all: the inliers use each stored
/// and each query keypoint once, so there must be `min_inliers` distinct ones of each, and the
/// score cannot exceed the sum, over the stored keypoints, of each one's best correspondence.
/// An exact pre-check (it never rejects a set that [`inliers`] would pass) that spares the
/// hypothesis loop, cubic in the correspondences, for the many protected images that share a
/// few descriptors with a query by chance.
fn can_pass(params: &Params, corrs: &mut [Corr]) -> bool {
    if corrs.len() < params.min_inliers {
        return false;
    }
    // best (smallest) distance per stored keypoint
    corrs.sort_unstable_by_key(|c| (c.p, c.dist));
    let mut bound = 0u32;
    let mut stored = 0usize;
    let mut last = None;
    for c in corrs.iter() {
        if last != Some(c.p) {
            last = Some(c.p);
            stored += 1;
            bound += (params.max_hamming + 1).saturating_sub(u32::from(c.dist));
        }
    }
    let mut qs: Vec<u16> = corrs.iter().map(|c| c.q).collect();
    qs.sort_unstable();
    qs.dedup();
    stored >= params.min_inliers && qs.len() >= params.min_inliers && bound >= params.min_score
}

/// The match rule on one (protected, query) pair, by brute force: `Some` when they match.
pub fn match_pair(params: &Params, id: u64, sig: &Signature, q: &QueryFeatures) -> Option<Hit> {
    let bits = key_bits(params);
    match_pair_with(params, &bits, id, sig, q)
}

fn match_pair_with(
    params: &Params,
    bits: &[Vec<u8>],
    id: u64,
    sig: &Signature,
    q: &QueryFeatures,
) -> Option<Hit> {
    let pkeys: Vec<Vec<u32>> =
        sig.keypoints.iter().map(|k| bits.iter().map(|b| key(&k.desc, b)).collect()).collect();
    let mut corrs = Vec::new();
    for (qi, qk) in q.keypoints.iter().enumerate() {
        let qkeys: Vec<u32> = bits.iter().map(|b| key(&qk.desc, b)).collect();
        for (pi, pk) in sig.keypoints.iter().enumerate() {
            let d = hamming(&qk.desc, &pk.desc);
            if d <= params.max_hamming && pkeys[pi].iter().zip(&qkeys).any(|(a, b)| a == b) {
                corrs.push(Corr { dist: d as u16, p: pi as u16, q: qi as u16 });
            }
        }
    }
    judge(params, id, sig, q, &mut corrs)
}

/// Tuning aid: descriptor distances of the inliers of the best hypothesis
/// between a protected signature and a query (brute-force correspondences).
#[doc(hidden)]
pub fn inlier_distances(params: &Params, sig: &Signature, q: &QueryFeatures) -> Vec<u16> {
    let bits = key_bits(params);
    let pkeys: Vec<Vec<u32>> =
        sig.keypoints.iter().map(|k| bits.iter().map(|b| key(&k.desc, b)).collect()).collect();
    let mut corrs = Vec::new();
    for (qi, qk) in q.keypoints.iter().enumerate() {
        let qkeys: Vec<u32> = bits.iter().map(|b| key(&qk.desc, b)).collect();
        for (pi, pk) in sig.keypoints.iter().enumerate() {
            let d = hamming(&qk.desc, &pk.desc);
            if d <= params.max_hamming && pkeys[pi].iter().zip(&qkeys).any(|(a, b)| a == b) {
                corrs.push(Corr { dist: d as u16, p: pi as u16, q: qi as u16 });
            }
        }
    }
    crate::verify::best_inliers(params, &sig.keypoints, &q.keypoints, &mut corrs)
}

/// Every protected entry the query matches, by brute force over all of them
/// (the reference the index is tested against), sorted by id.
pub fn brute_force_search(params: &Params, entries: &[(u64, Signature)], q: &QueryFeatures) -> Vec<Hit> {
    let bits = key_bits(params);
    let mut v: Vec<Hit> =
        entries.iter().filter_map(|(id, s)| match_pair_with(params, &bits, *id, s, q)).collect();
    v.sort_by_key(|h| h.id);
    v
}

/// Why an insert was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertError {
    /// The id is already present.
    DuplicateId(u64),
}

impl std::fmt::Display for InsertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InsertError::DuplicateId(id) => write!(f, "id {id} is already indexed"),
        }
    }
}

impl std::error::Error for InsertError {}

/// Index of protected signatures, exact with respect to the match rule (see
/// the crate docs): [`DeriveIndex::search`] = [`brute_force_search`].
pub struct DeriveIndex {
    params: Params,
    bits: Vec<Vec<u8>>,
    pdq: Index,
    /// Slots; `None` once removed (the slot is reused by a later insert).
    entries: Vec<Option<(u64, Signature)>>,
    /// Removed slots, reused first.
    free: Vec<u32>,
    by_id: HashMap<u64, u32>,
    /// Per table: key → (entry, keypoint) slots.
    tables: Vec<HashMap<u32, Vec<(u32, u16)>>>,
}

impl std::fmt::Debug for DeriveIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeriveIndex").field("params", &self.params).field("len", &self.len()).finish()
    }
}

impl DeriveIndex {
    /// An empty index with these rule parameters.
    pub fn new(params: Params) -> Self {
        let bits = key_bits(&params);
        let tables = vec![HashMap::new(); bits.len()];
        DeriveIndex {
            params,
            bits,
            pdq: Index::with_config(IndexConfig { degenerate: DegeneratePolicy::Accept }),
            entries: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            tables,
        }
    }

    /// The rule parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Number of protected images.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Whether `id` is indexed.
    pub fn contains(&self, id: u64) -> bool {
        self.by_id.contains_key(&id)
    }

    /// The live entry in `slot`.
    fn slot(&self, slot: u32) -> &(u64, Signature) {
        self.entries[slot as usize].as_ref().expect("tables and the PDQ index only name live slots")
    }

    /// Add a protected image.
    pub fn insert(&mut self, id: u64, sig: Signature) -> Result<(), InsertError> {
        if self.by_id.contains_key(&id) {
            return Err(InsertError::DuplicateId(id));
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.entries.push(None);
                (self.entries.len() - 1) as u32
            }
        };
        self.pdq.insert(u64::from(slot), sig.pdq).expect("degenerate hashes accepted");
        for (ki, k) in sig.keypoints.iter().enumerate() {
            for (t, b) in self.bits.iter().enumerate() {
                self.tables[t].entry(key(&k.desc, b)).or_default().push((slot, ki as u16));
            }
        }
        self.by_id.insert(id, slot);
        self.entries[slot as usize] = Some((id, sig));
        Ok(())
    }

    /// Remove a protected image: it no longer matches, and its id may be
    /// inserted again. Returns whether it was present.
    pub fn remove(&mut self, id: u64) -> bool {
        let Some(slot) = self.by_id.remove(&id) else { return false };
        let (_, sig) = self.entries[slot as usize].take().expect("by_id names live slots");
        self.pdq.remove(u64::from(slot));
        for k in &sig.keypoints {
            for (t, b) in self.bits.iter().enumerate() {
                let k = key(&k.desc, b);
                if let Some(list) = self.tables[t].get_mut(&k) {
                    list.retain(|&(s, _)| s != slot);
                    if list.is_empty() {
                        self.tables[t].remove(&k);
                    }
                }
            }
        }
        self.free.push(slot);
        true
    }

    /// Tuning aid: the largest buckets over all tables, as (slots, key popcount, key width).
    #[doc(hidden)]
    pub fn largest_buckets(&self, k: usize) -> Vec<(usize, u32, usize)> {
        let mut v: Vec<(usize, u32, usize)> = self
            .tables
            .iter()
            .flat_map(|t| t.iter().map(|(key, list)| (list.len(), key.count_ones(), self.params.lsh_bits)))
            .collect();
        v.sort_unstable_by(|a, b| b.cmp(a));
        v.truncate(k);
        v
    }

    /// Tuning aid: for every protected image with at least
    /// `min_inliers` correspondences, the descriptor distances of the best
    /// hypothesis's inliers.
    #[doc(hidden)]
    pub fn search_details(&self, q: &QueryFeatures) -> Vec<(u64, Vec<u16>)> {
        let mut per = self.correspondences(q);
        let mut v: Vec<(u64, Vec<u16>)> = per
            .iter_mut()
            .filter(|(_, c)| c.len() >= self.params.min_inliers)
            .map(|(slot, c)| {
                let (id, sig) = self.slot(*slot);
                (*id, crate::verify::best_inliers(&self.params, &sig.keypoints, &q.keypoints, c))
            })
            .collect();
        v.sort_by_key(|x| x.0);
        v
    }

    fn correspondences(&self, q: &QueryFeatures) -> HashMap<u32, Vec<Corr>> {
        let mut per: HashMap<u32, Vec<Corr>> = HashMap::new();
        for (qi, qk) in q.keypoints.iter().enumerate() {
            for (t, b) in self.bits.iter().enumerate() {
                let Some(list) = self.tables[t].get(&key(&qk.desc, b)) else { continue };
                for &(slot, pi) in list {
                    let pk = &self.slot(slot).1.keypoints[usize::from(pi)];
                    let d = hamming(&qk.desc, &pk.desc);
                    if d <= self.params.max_hamming {
                        per.entry(slot).or_default().push(Corr { dist: d as u16, p: pi, q: qi as u16 });
                    }
                }
            }
        }
        per
    }

    /// Every protected image the query matches, sorted by id.
    pub fn search(&self, q: &QueryFeatures) -> Vec<Hit> {
        let mut per = self.correspondences(q);
        let mut cand: Vec<u32> = self
            .pdq
            .search_dihedral(&q.pdq, self.params.pdq_radius)
            .into_iter()
            .map(|m| m.id as u32)
            .collect();
        cand.extend(per.iter().filter(|(_, c)| c.len() >= self.params.min_inliers).map(|(s, _)| *s));
        cand.sort_unstable();
        cand.dedup();
        let mut out: Vec<Hit> = cand
            .into_iter()
            .filter_map(|slot| {
                let (id, sig) = self.slot(slot);
                let mut corrs = per.remove(&slot).unwrap_or_default();
                judge(&self.params, *id, sig, q, &mut corrs)
            })
            .collect();
        out.sort_by_key(|h| h.id);
        out
    }
}
