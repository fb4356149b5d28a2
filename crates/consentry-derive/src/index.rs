//! The derivative index: global PDQ hashes in `consentry-index` (exact
//! multi-index hashing) and the stored keypoints' descriptors in bucket
//! tables keyed by fixed bit subsets, then verification per candidate image.

use crate::grid::agreement;
use crate::verify::{best_hypothesis, hamming, score, Corr};
use crate::{Keypoint, Params, QueryFeatures, Signature, StopKeys};
use consentry_index::{huge_vec, prefetch, DegeneratePolicy, Index, IndexConfig};
use std::collections::HashMap;

/// One matched protected image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// Its id.
    pub id: u64,
    /// Smallest PDQ distance over the query's dihedral hashes, when within the radius.
    pub pdq_distance: Option<u32>,
    /// Smallest distance between the query's top-band hashes and the stored one, when within
    /// [`Params::band_radius`] and both bands are of sufficient quality (rule 3).
    pub band_distance: Option<u32>,
    /// Geometrically consistent correspondences of the best hypothesis (0 when it does not pass).
    pub inliers: usize,
    /// Their score, Σ (max_hamming + 1 − distance) (0 when it does not pass).
    pub score: u32,
    /// Whether those inliers are the query's mirrored keypoints ([`Params::mirrored`]): the
    /// query is a mirror image of the protected photo.
    pub mirrored: bool,
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

/// A table's stopped keys ([`Params::stop_keys`]). A bit set over the keys' low `filter_bits`
/// (at most [`STOP_FILTER_BITS`]) bits says whether a stopped key may end so, and, for keys
/// longer than that, the sorted keys decide: 32 KB and 4 bytes per stopped key per table
/// whatever the key width (a bit set over all `2^lsh_bits` keys would take 2 MB per table at
/// 24 bits, and a query tests a key of every table for each of its keypoints).
#[derive(Debug, Clone, Default)]
struct StopSet {
    filter_bits: u32,
    filter: Vec<u64>,
    /// Sorted; empty when the filter is exact.
    keys: Vec<u32>,
}

/// Largest number of low key bits of a [`StopSet`]'s filter.
const STOP_FILTER_BITS: u32 = 18;

impl StopSet {
    fn new(mut keys: Vec<u32>, width: u32) -> StopSet {
        if keys.is_empty() {
            return StopSet::default();
        }
        keys.sort_unstable();
        keys.dedup();
        let filter_bits = width.min(STOP_FILTER_BITS);
        let mut filter = vec![0u64; (1usize << filter_bits).div_ceil(64)];
        for &k in &keys {
            let f = k & ((1 << filter_bits) - 1);
            filter[f as usize / 64] |= 1 << (f % 64);
        }
        if filter_bits == width {
            keys = Vec::new();
        }
        StopSet { filter_bits, filter, keys }
    }

    /// The stopped keys, sorted.
    #[cfg(test)]
    fn list(&self) -> Vec<u32> {
        if !self.keys.is_empty() {
            return self.keys.clone();
        }
        (0..self.filter.len() as u32 * 64)
            .filter(|&f| (self.filter[f as usize / 64] >> (f % 64)) & 1 == 1)
            .collect()
    }
}

/// Per table, the keys [`Params::stop_keys`] stops.
fn stop_sets(params: &Params, bits: &[Vec<u8>]) -> Vec<StopSet> {
    let width = params.lsh_bits.min(32);
    if params.stop_keys == StopKeys::None {
        return vec![StopSet::default(); bits.len()];
    }
    let ramps = crate::ramp_descriptors();
    let learnt = bits == &key_bits(&learnt_layout())[..];
    let neighbours = match params.stop_keys {
        StopKeys::RampNeighbours => 1,
        StopKeys::RampNeighbours2 => 2,
        // no learnt list for this layout: stop what `RampNeighbours2` stops
        StopKeys::Common(_) if !learnt => 2,
        _ => 0,
    };
    let common = match params.stop_keys {
        StopKeys::Common(n) if learnt => common_keys()
            .into_iter()
            .map(|mut t| {
                t.truncate(usize::from(n));
                t
            })
            .collect(),
        _ => Vec::new(),
    };
    bits.iter()
        .enumerate()
        .map(|(t, b)| {
            let mut keys: Vec<u32> = common.get(t).cloned().unwrap_or_default();
            for d in &ramps {
                let k = key(d, b);
                keys.push(k);
                if neighbours >= 1 {
                    keys.extend((0..width).map(|i| k ^ (1 << i)));
                }
                if neighbours >= 2 {
                    keys.extend((0..width).flat_map(|i| (0..i).map(move |j| k ^ (1 << i) ^ (1 << j))));
                }
            }
            StopSet::new(keys, width as u32)
        })
        .collect()
}

/// The key layout the learnt stop-list was made for: 16 tables of 18 bits (the default layout
/// until 2026-12-05). Under any other layout [`StopKeys::Common`] stops what
/// [`StopKeys::RampNeighbours2`] stops.
#[doc(hidden)]
pub fn learnt_layout() -> Params {
    Params { lsh_tables: 16, lsh_bits: 18, ..Params::default() }
}

/// The learnt stop-list ([`StopKeys::Common`]): per table of [`learnt_layout`], its keys.
///
/// File: `CSTK`, version 1, tables (u8), key bits (u8), keys per table (u16 LE), then per table
/// that many distinct keys (u32 LE, most common first), then the FNV-1a 64 of everything before (u64 LE).
fn common_keys() -> Vec<Vec<u32>> {
    parse_common_keys(include_bytes!("../data/common-keys-v1.bin"))
        .expect("the embedded stop-list is well formed")
}

fn parse_common_keys(b: &[u8]) -> Result<Vec<Vec<u32>>, &'static str> {
    let d = learnt_layout();
    if b.len() < 17 || &b[..4] != b"CSTK" || b[4] != 1 {
        return Err("not a version-1 stop-list");
    }
    let (body, sum) = b.split_at(b.len() - 8);
    if fnv1a(body).to_le_bytes() != sum {
        return Err("checksum");
    }
    let (nt, width, k) =
        (usize::from(b[5]), usize::from(b[6]), usize::from(u16::from_le_bytes([b[7], b[8]])));
    if nt != d.lsh_tables
        || width != d.lsh_bits
        || k != crate::COMMON_KEYS_PER_TABLE
        || body.len() != 9 + nt * k * 4
    {
        return Err("layout");
    }
    let keys: Vec<Vec<u32>> = body[9..]
        .chunks_exact(k * 4)
        .map(|t| t.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
        .collect();
    for t in &keys {
        let mut u = t.clone();
        u.sort_unstable();
        u.dedup();
        if u.len() != t.len() || t.iter().any(|&x| x >> width != 0) {
            return Err("keys repeated or out of range");
        }
    }
    Ok(keys)
}

/// Writes a stop-list file ([`common_keys`]'s format): `keys[t]` (distinct, most common first)
/// for each table of [`learnt_layout`].
#[doc(hidden)]
pub fn write_common_keys(keys: &[Vec<u32>]) -> Vec<u8> {
    let d = learnt_layout();
    let mut b = b"CSTK".to_vec();
    b.extend([1, d.lsh_tables as u8, d.lsh_bits as u8]);
    b.extend((crate::COMMON_KEYS_PER_TABLE as u16).to_le_bytes());
    for t in keys {
        assert_eq!(t.len(), crate::COMMON_KEYS_PER_TABLE, "keys per table");
        for k in t {
            b.extend(k.to_le_bytes());
        }
    }
    let sum = fnv1a(&b);
    b.extend(sum.to_le_bytes());
    b
}

/// The stop-list file's checksum: FNV-1a, 64 bits.
fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3))
}

/// Whether `k` is in a table's stop set (an empty set stops nothing).
#[inline(always)]
fn stopped(set: &StopSet, k: u32) -> bool {
    let f = k & ((1 << set.filter_bits) - 1);
    set.filter.get(f as usize / 64).is_some_and(|w| (w >> (f % 64)) & 1 == 1)
        && (set.keys.is_empty() || set.keys.binary_search(&k).is_ok())
}

#[inline]
fn key(desc: &[u64; 4], bits: &[u8]) -> u32 {
    let mut k = 0u32;
    for (i, &b) in bits.iter().enumerate() {
        k |= (((desc[usize::from(b) / 64] >> (b % 64)) & 1) as u32) << i;
    }
    k
}

/// A table's key function by byte lookups: the key bits that fall in byte `j` of the
/// descriptor are looked up in one 256-entry table, so a key costs one lookup per byte that
/// holds key bits instead of one shift-and-mask per bit. Same value as [`key`].
struct KeyLut {
    parts: Vec<(usize, [u32; 256])>,
}

impl KeyLut {
    fn new(bits: &[u8]) -> KeyLut {
        let mut parts: Vec<(usize, [u32; 256])> = Vec::new();
        for j in 0..32usize {
            let mut t = [0u32; 256];
            let mut any = false;
            for (i, &b) in bits.iter().enumerate() {
                if usize::from(b) / 8 == j {
                    any = true;
                    for (v, e) in t.iter_mut().enumerate() {
                        *e |= ((v as u32 >> (b % 8)) & 1) << i;
                    }
                }
            }
            if any {
                parts.push((j, t));
            }
        }
        KeyLut { parts }
    }

    #[inline]
    fn key(&self, desc: &[u64; 4]) -> u32 {
        self.parts.iter().fold(0, |k, (j, t)| k | t[((desc[j / 8] >> (8 * (j % 8))) & 0xff) as usize])
    }
}

/// Whether a stored band takes part in rule 3 (a radius is set and its quality suffices).
fn band_usable(params: &Params, band: Option<consentry_pdq::PdqHash>) -> Option<consentry_pdq::Hash256> {
    params.band_radius?;
    band.filter(|b| b.quality >= params.band_min_quality).map(|b| b.hash)
}

/// The query's band hashes rule 3 uses: its band's and, with [`Params::band_trimmed`], its
/// trimmed band's, each as it is and mirrored, when of sufficient quality (none with the rule off).
fn query_bands(params: &Params, q: &QueryFeatures) -> Vec<consentry_pdq::Hash256> {
    let trimmed = if params.band_trimmed { q.trimmed_band } else { None };
    [q.band, trimmed]
        .into_iter()
        .flatten()
        .filter(|b| params.band_radius.is_some() && b.quality >= params.band_min_quality)
        .flat_map(|b| b.hashes)
        .collect()
}

/// Rule 3: the smallest band distance, when within the radius.
fn band_distance(params: &Params, sig: &Signature, q: &QueryFeatures) -> Option<u32> {
    let stored = band_usable(params, sig.band)?;
    let d = query_bands(params, q).iter().map(|h| h.distance(&stored)).min()?;
    (d <= params.band_radius?).then_some(d)
}

/// Largest keypoint set of a query that rule 2 uses (the two sets are numbered together by a u16).
const MAX_SET: usize = 1 << 15;

/// The query's keypoint sets rule 2 verifies, each on its own: as it is, and (with
/// [`Params::mirrored`]) mirrored left to right. A correspondence's query keypoint `q` numbers
/// both together: the first set, then the second.
fn query_sets<'q>(params: &Params, q: &'q QueryFeatures) -> [&'q [Keypoint]; 2] {
    let cap = |k: &'q [Keypoint]| &k[..k.len().min(MAX_SET)];
    [cap(&q.keypoints), if params.mirrored { cap(&q.mirrored) } else { &[] }]
}

/// The descriptors of both sets, numbered as the correspondences number them.
fn query_descs(params: &Params, q: &QueryFeatures) -> Vec<[u64; 4]> {
    query_sets(params, q).iter().flat_map(|s| s.iter().map(|k| k.desc)).collect()
}

/// The score rule 4 needs for the pair, when it applies: it is on, both sides have a grid, and
/// it asks less than rule 2.
fn dense_score(params: &Params, sig: &Signature, q: &QueryFeatures, min_score: u32) -> Option<u32> {
    let d = params.dense_min_score?;
    (sig.grid.is_some() && q.grid.is_some() && d < min_score).then_some(d)
}

/// The fewest correspondences any rule on keypoints can match a pair with.
fn fewest_inliers(params: &Params) -> usize {
    if params.dense_min_score.is_some() {
        params.min_inliers.min(params.dense_min_inliers).max(2)
    } else {
        params.min_inliers
    }
}

/// Rule 2 or rule 4: the inliers and score of the better of the two sets' best hypotheses that
/// pass, and whether it is the mirrored set's; `(0, 0, false)` when neither passes.
fn local_rule(
    params: &Params,
    sig: &Signature,
    q: &QueryFeatures,
    corrs: &mut Vec<Corr>,
) -> (usize, u32, bool) {
    let sets = query_sets(params, q);
    let min_score = params.min_score_for(sig, q);
    let dense = dense_score(params, sig, q, min_score);
    let (gate, fewest) = match dense {
        Some(d) => (d, fewest_inliers(params)),
        None => (min_score, params.min_inliers),
    };
    let hp = Params { min_inliers: fewest, ..*params };
    let verify = |set: &[Keypoint], corrs: &mut Vec<Corr>, mirrored: bool| {
        if !can_pass(&hp, gate, corrs) {
            return (0, 0);
        }
        let (d, t) = best_hypothesis(&hp, &sig.keypoints, set, q.levels_per_octave, corrs);
        let (n, sc) = (d.len(), score(params, &d));
        if n >= params.min_inliers && sc >= min_score {
            return (n, sc);
        }
        if let (Some(ds), Some(sg), Some(qg)) = (dense, &sig.grid, &q.grid) {
            if n >= params.dense_min_inliers && sc >= ds {
                let a = agreement(sg, qg, t, mirrored);
                let (need, across) = if params.is_small(sig, q) {
                    let need = if sc >= params.dense_small_strong_score {
                        params.dense_small_min_r.min(params.dense_small_strong_r)
                    } else {
                        params.dense_small_min_r
                    };
                    (need, params.dense_small_min_r_across)
                } else {
                    (params.dense_min_r, params.dense_min_r_across)
                };
                if a.inside >= params.dense_min_cells && a.r >= need && a.r_across >= across {
                    return (n, sc);
                }
            }
        }
        (0, 0)
    };
    let n0 = sets[0].len() as u32;
    if sets[1].is_empty() || corrs.iter().all(|c| u32::from(c.q) < n0) {
        let (n, sc) = verify(sets[0], corrs, false);
        return (n, sc, false);
    }
    let (mut a, mut b): (Vec<Corr>, Vec<Corr>) = corrs.iter().partition(|c| u32::from(c.q) < n0);
    for c in &mut b {
        c.q -= n0 as u16;
    }
    let (ra, rb) = (verify(sets[0], &mut a, false), verify(sets[1], &mut b, true));
    if rb.1 > ra.1 {
        (rb.0, rb.1, true)
    } else {
        (ra.0, ra.1, false)
    }
}

fn judge(params: &Params, id: u64, sig: &Signature, q: &QueryFeatures, corrs: &mut Vec<Corr>) -> Option<Hit> {
    let d = q.pdq.iter().map(|h| h.distance(&sig.pdq)).min().unwrap_or(u32::MAX);
    let pdq_distance = (d <= params.pdq_radius).then_some(d);
    let band_distance = band_distance(params, sig, q);
    let (n, sc, mirrored) = local_rule(params, sig, q, corrs);
    let pass = n > 0;
    (pdq_distance.is_some() || band_distance.is_some() || pass).then_some(Hit {
        id,
        pdq_distance,
        band_distance,
        inliers: n,
        score: sc,
        mirrored,
    })
}

/// Whether the correspondences could pass the local rule at all: the inliers use each stored
/// and each query keypoint once, so there must be `min_inliers` distinct ones of each, and the
/// score cannot exceed the sum, over the stored keypoints, of each one's best correspondence.
/// An exact pre-check (it never rejects a set that [`inliers`] would pass) that spares the
/// hypothesis loop, cubic in the correspondences, for the many protected images that share a
/// few descriptors with a query by chance.
fn can_pass(params: &Params, min_score: u32, corrs: &mut [Corr]) -> bool {
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
    stored >= params.min_inliers && qs.len() >= params.min_inliers && bound >= min_score
}

/// The match rule on one (protected, query) pair, by brute force: `Some` when they match.
pub fn match_pair(params: &Params, id: u64, sig: &Signature, q: &QueryFeatures) -> Option<Hit> {
    let bits = key_bits(params);
    match_pair_with(params, &bits, &stop_sets(params, &bits), id, sig, q)
}

fn match_pair_with(
    params: &Params,
    bits: &[Vec<u8>],
    stop: &[StopSet],
    id: u64,
    sig: &Signature,
    q: &QueryFeatures,
) -> Option<Hit> {
    judge(params, id, sig, q, &mut brute_correspondences(params, bits, stop, sig, q))
}

/// Every correspondence of the pair, by comparing every stored keypoint with every query keypoint.
fn brute_correspondences(
    params: &Params,
    bits: &[Vec<u8>],
    stop: &[StopSet],
    sig: &Signature,
    q: &QueryFeatures,
) -> Vec<Corr> {
    let pkeys: Vec<Vec<u32>> =
        sig.keypoints.iter().map(|k| bits.iter().map(|b| key(&k.desc, b)).collect()).collect();
    let mut corrs = Vec::new();
    for (qi, qd) in query_descs(params, q).iter().enumerate() {
        let qkeys: Vec<u32> = bits.iter().map(|b| key(qd, b)).collect();
        for (pi, pk) in sig.keypoints.iter().enumerate() {
            let d = hamming(qd, &pk.desc);
            let agree = pkeys[pi].iter().zip(&qkeys).zip(stop).any(|((a, b), s)| a == b && !stopped(s, *a));
            if d <= params.max_hamming && agree {
                corrs.push(Corr { dist: d as u16, p: pi as u16, q: qi as u16 });
            }
        }
    }
    corrs
}

/// Tuning aid: descriptor distances of the inliers of the best hypothesis
/// between a protected signature and a query (brute-force correspondences).
#[doc(hidden)]
pub fn inlier_distances(params: &Params, sig: &Signature, q: &QueryFeatures) -> Vec<u16> {
    inlier_transform(params, sig, q).0
}

/// Tuning aid: [`inlier_distances`] with the best hypothesis's transform from stored to query
/// working-image positions, `[s·cos, s·sin, tx, ty]`.
#[doc(hidden)]
pub fn inlier_transform(params: &Params, sig: &Signature, q: &QueryFeatures) -> (Vec<u16>, [f32; 4]) {
    let bits = key_bits(params);
    let mut corrs = brute_correspondences(params, &bits, &stop_sets(params, &bits), sig, q);
    let n0 = query_sets(params, q)[0].len();
    corrs.retain(|c| usize::from(c.q) < n0);
    crate::verify::best_hypothesis(params, &sig.keypoints, &q.keypoints, q.levels_per_octave, &mut corrs)
}

/// Every protected entry the query matches, by brute force over all of them
/// (the reference the index is tested against), sorted by id.
pub fn brute_force_search(params: &Params, entries: &[(u64, Signature)], q: &QueryFeatures) -> Vec<Hit> {
    let bits = key_bits(params);
    let stop = stop_sets(params, &bits);
    let mut v: Vec<Hit> =
        entries.iter().filter_map(|(id, s)| match_pair_with(params, &bits, &stop, *id, s, q)).collect();
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

/// Descriptor tables built in bulk over the entries live at build time: per
/// table a CSR directory over the low `dir_bits` bits of the key and the keypoint
/// numbers grouped by key, and the descriptors themselves in one array by keypoint
/// number, so scanning a bucket reads two flat arrays instead of chasing
/// pointers to each entry's signature.
///
/// A posting is one `u32`: the keypoint number in its low `num_bits` bits and the key's
/// remaining high bits above them, so the directory needs no more buckets than there are
/// keypoints (a directory over every key would take 64 MB per table at 24 bits, even for a
/// handful of entries) and a probe reads only the descriptors of postings with its full key.
/// Within a bucket the postings are in ascending order, so those of one key are a run that a
/// probe finds by binary search.
#[derive(Default)]
struct Base {
    dir_bits: u32,
    num_bits: u32,
    offsets: Vec<Vec<u32>>,
    postings: Vec<Vec<u32>>,
    descs: Vec<[u64; 4]>,
    /// Keypoint number → (slot, keypoint within the signature).
    owner: Vec<(u32, u16)>,
}

impl Base {
    /// The directory's bits and the keypoint number's bits for `total` keypoints and keys of
    /// `width` bits: about one bucket per 16 keypoints (at most `2^width`; a bucket's postings
    /// then fill a cache line or two), and at least as many as leave the key's remaining bits
    /// room beside the keypoint number.
    fn layout(total: usize, width: u32) -> (u32, u32) {
        let need = (usize::BITS - total.saturating_sub(1).leading_zeros()).max(1);
        let room = 32 - need;
        let dir_bits = need.saturating_sub(4).min(width).max(width.saturating_sub(room));
        (dir_bits, 32 - (width - dir_bits))
    }

    #[inline(always)]
    fn bucket(&self, key: u32) -> usize {
        (u64::from(key) & ((1u64 << self.dir_bits) - 1)) as usize
    }

    /// The bits of `key` a posting holds beside its keypoint number.
    #[inline(always)]
    fn high(&self, key: u32) -> u32 {
        (u64::from(key) >> self.dir_bits) as u32
    }

    /// The posting of keypoint number `g` under `key` (the inverse of [`Base::unpack`]).
    #[inline(always)]
    fn pack(&self, key: u32, g: u32) -> u32 {
        ((u64::from(self.high(key)) << self.num_bits) | u64::from(g)) as u32
    }

    /// The postings under `key` are those in `lo..hi` (as numbers).
    #[inline(always)]
    fn run(&self, key: u32) -> (u32, u64) {
        let lo = self.pack(key, 0);
        (lo, u64::from(lo) + (1u64 << self.num_bits))
    }

    /// A posting's (high key bits, keypoint number).
    #[inline(always)]
    fn unpack(&self, posting: u32) -> (u32, u32) {
        let p = u64::from(posting);
        ((p >> self.num_bits) as u32, (p & ((1u64 << self.num_bits) - 1)) as u32)
    }
}

/// Entries inserted since the last build are kept in small hash tables
/// until there are more than this many, or more than 1/8 of the built ones.
const DELTA_MIN: usize = 4096;

/// Index of protected signatures, exact with respect to the match rule (see
/// the crate docs): [`DeriveIndex::search`] = [`brute_force_search`].
///
/// Layout: a [`Base`] built in bulk (by [`DeriveIndex::extend`] or when the
/// recent inserts outgrow their limit), plus hash tables for the entries
/// inserted since. A removed entry of the base is only marked dead (its
/// postings are skipped) and its slot is reused after the next build; the
/// base is rebuilt when a quarter of it is dead.
pub struct DeriveIndex {
    params: Params,
    /// Per table, its key function.
    key_fns: Vec<KeyLut>,
    /// Per table, the stopped keys (bit sets; empty when none are).
    stop: Vec<StopSet>,
    pdq: Index,
    /// Top-band hashes of the slots whose band takes part in rule 3.
    band: Index,
    /// Slots; `None` once removed.
    entries: Vec<Option<(u64, Signature)>>,
    /// Whether the slot's keypoints are in the base.
    in_base: Vec<bool>,
    /// Free slots (not named by the base), reused first.
    free: Vec<u32>,
    /// Base slots removed since the build: free after the next one.
    retired: Vec<u32>,
    by_id: HashMap<u64, u32>,
    base: Base,
    base_live: usize,
    /// Per table: key → (slot, keypoint) of the entries inserted since the build.
    delta: Vec<HashMap<u32, Vec<(u32, u16)>>>,
    delta_len: usize,
    delta_limit: usize,
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
        let key_fns: Vec<KeyLut> = bits.iter().map(|b| KeyLut::new(b)).collect();
        let delta = vec![HashMap::new(); key_fns.len()];
        DeriveIndex {
            params,
            key_fns,
            stop: stop_sets(&params, &bits),
            pdq: Index::with_config(IndexConfig { degenerate: DegeneratePolicy::Accept }),
            band: Index::with_config(IndexConfig { degenerate: DegeneratePolicy::Accept }),
            entries: Vec::new(),
            in_base: Vec::new(),
            free: Vec::new(),
            retired: Vec::new(),
            by_id: HashMap::new(),
            base: Base::default(),
            base_live: 0,
            delta,
            delta_len: 0,
            delta_limit: DELTA_MIN,
        }
    }

    /// Tests: rebuild the base once more than `n` entries wait in the hash tables.
    #[doc(hidden)]
    pub fn set_delta_limit(&mut self, n: usize) {
        self.delta_limit = n;
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

    fn place(&mut self, id: u64, sig: Signature) -> Result<u32, InsertError> {
        if self.by_id.contains_key(&id) {
            return Err(InsertError::DuplicateId(id));
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.entries.push(None);
                self.in_base.push(false);
                (self.entries.len() - 1) as u32
            }
        };
        self.pdq.insert(u64::from(slot), sig.pdq).expect("degenerate hashes accepted");
        if let Some(h) = band_usable(&self.params, sig.band) {
            self.band.insert(u64::from(slot), h).expect("degenerate hashes accepted");
        }
        self.by_id.insert(id, slot);
        self.entries[slot as usize] = Some((id, sig));
        Ok(slot)
    }

    /// Add a protected image.
    pub fn insert(&mut self, id: u64, sig: Signature) -> Result<(), InsertError> {
        let slot = self.place(id, sig)?;
        let (_, sig) = self.slot(slot);
        let keys: Vec<(usize, u32, u16)> = sig
            .keypoints
            .iter()
            .enumerate()
            .flat_map(|(ki, k)| {
                self.key_fns.iter().enumerate().map(move |(t, b)| (t, b.key(&k.desc), ki as u16))
            })
            .collect();
        for (t, k, ki) in keys {
            if stopped(&self.stop[t], k) {
                continue;
            }
            self.delta[t].entry(k).or_default().push((slot, ki));
        }
        self.delta_len += 1;
        if self.delta_len > self.delta_limit.max(self.base_live / 8) {
            self.rebuild();
        }
        Ok(())
    }

    /// Add many protected images and build the tables once (the fast way to
    /// load a large set). Returns the ids refused as duplicates.
    pub fn extend(&mut self, items: impl IntoIterator<Item = (u64, Signature)>) -> Vec<u64> {
        let mut refused = Vec::new();
        let mut added = false;
        for (id, sig) in items {
            match self.place(id, sig) {
                Ok(_) => added = true,
                Err(_) => refused.push(id),
            }
        }
        if added {
            self.rebuild();
        }
        refused
    }

    /// Remove a protected image: it no longer matches, and its id may be
    /// inserted again. Returns whether it was present.
    pub fn remove(&mut self, id: u64) -> bool {
        let Some(slot) = self.by_id.remove(&id) else { return false };
        let (_, sig) = self.entries[slot as usize].take().expect("by_id names live slots");
        self.pdq.remove(u64::from(slot));
        self.band.remove(u64::from(slot));
        if self.in_base[slot as usize] {
            // its postings stay until the next build; searches skip dead slots
            self.base_live -= 1;
            self.retired.push(slot);
            if self.retired.len() * 4 > self.base_live + self.retired.len() {
                self.rebuild();
            }
            return true;
        }
        for k in &sig.keypoints {
            for (t, b) in self.key_fns.iter().enumerate() {
                let k = b.key(&k.desc);
                if let Some(list) = self.delta[t].get_mut(&k) {
                    list.retain(|&(s, _)| s != slot);
                    if list.is_empty() {
                        self.delta[t].remove(&k);
                    }
                }
            }
        }
        self.delta_len -= 1;
        self.free.push(slot);
        true
    }

    /// Builds the base over every live entry and empties the hash tables.
    fn rebuild(&mut self) {
        // The descriptors and postings are read at random: huge pages spare most TLB misses.
        let total: usize = self.entries.iter().flatten().map(|(_, s)| s.keypoints.len()).sum();
        assert!(total < u32::MAX as usize, "fewer than 2^32 keypoints");
        let mut owner: Vec<(u32, u16)> = Vec::with_capacity(total);
        let mut descs: Vec<[u64; 4]> = huge_vec(total, [0; 4]);
        let mut g = 0;
        for (slot, e) in self.entries.iter().enumerate() {
            self.in_base[slot] = e.is_some();
            if let Some((_, sig)) = e {
                for (ki, k) in sig.keypoints.iter().enumerate() {
                    owner.push((slot as u32, ki as u16));
                    descs[g] = k.desc;
                    g += 1;
                }
            }
        }
        let width = self.params.lsh_bits.min(32) as u32;
        let (dir_bits, num_bits) = Base::layout(total, width);
        let shape = Base { dir_bits, num_bits, ..Base::default() };
        let nbuckets = 1usize << dir_bits;
        let (offsets, postings): (Vec<Vec<u32>>, Vec<Vec<u32>>) = {
            use rayon::prelude::*;
            self.key_fns
                .par_iter()
                .zip(&self.stop)
                .map(|(b, stop)| {
                    // counting sort of the keypoint numbers by bucket; stopped keys get no posting
                    let keys: Vec<u32> = descs.iter().map(|d| b.key(d)).collect();
                    let mut off = vec![0u32; nbuckets + 1];
                    for &k in &keys {
                        if !stopped(stop, k) {
                            off[shape.bucket(k) + 1] += 1;
                        }
                    }
                    for i in 1..=nbuckets {
                        off[i] += off[i - 1];
                    }
                    // Within a bucket the postings are in ascending order (the key's high bits, then the
                    // keypoint number), so a probe finds its key's run by binary search: the keypoint
                    // numbers are visited ordered by their keys' high bits (a stable counting sort; in
                    // keypoint order when the directory holds the whole key), then placed by bucket.
                    let mut at = vec![0u32; (1usize << (width - shape.dir_bits)) + 1];
                    for &k in &keys {
                        at[shape.high(k) as usize + 1] += 1;
                    }
                    for i in 1..at.len() {
                        at[i] += at[i - 1];
                    }
                    let mut order = vec![0u32; keys.len()];
                    for (g, &k) in keys.iter().enumerate() {
                        let c = &mut at[shape.high(k) as usize];
                        order[*c as usize] = g as u32;
                        *c += 1;
                    }
                    let mut fill = off.clone();
                    let mut post = huge_vec(off[nbuckets] as usize, 0u32);
                    for g in order {
                        let k = keys[g as usize];
                        if !stopped(stop, k) {
                            let c = &mut fill[shape.bucket(k)];
                            post[*c as usize] = shape.pack(k, g);
                            *c += 1;
                        }
                    }
                    (off, post)
                })
                .unzip()
        };
        self.base = Base { dir_bits, num_bits, offsets, postings, descs, owner };
        self.base_live = self.by_id.len();
        self.free.append(&mut self.retired);
        for d in &mut self.delta {
            *d = HashMap::new();
        }
        self.delta_len = 0;
    }

    /// Tuning aid: the largest buckets over all tables, as (slots, key popcount, key width).
    #[doc(hidden)]
    pub fn largest_buckets(&self, k: usize) -> Vec<(usize, u32, usize)> {
        let mut v: Vec<(usize, u32, usize)> = Vec::new();
        let width = self.params.lsh_bits.min(32) as u32;
        // one table's counts at a time, keeping its k largest (a table's counts take 64 MB at 24 bits)
        for t in 0..self.key_fns.len() {
            let mut n = self.table_sizes(t);
            for (key, l) in &self.delta[t] {
                n[*key as usize] += l.len() as u32;
            }
            let mut sizes: Vec<(usize, u32, usize)> = n
                .iter()
                .enumerate()
                .filter(|&(_, &c)| c > 0)
                .map(|(key, &c)| (c as usize, (key as u32).count_ones(), width as usize))
                .collect();
            sizes.sort_unstable_by(|a, b| b.cmp(a));
            sizes.truncate(k);
            v.append(&mut sizes);
        }
        v.sort_unstable_by(|a, b| b.cmp(a));
        v.truncate(k);
        v
    }

    /// The number of postings of every key of table `t` of the base (indexed by key).
    fn table_sizes(&self, t: usize) -> Vec<u32> {
        let b = &self.base;
        let mut n = vec![0u32; 1usize << self.params.lsh_bits.min(32)];
        if let (Some(off), Some(post)) = (b.offsets.get(t), b.postings.get(t)) {
            for (bucket, w) in off.windows(2).enumerate() {
                for &p in &post[w[0] as usize..w[1] as usize] {
                    n[((b.unpack(p).0 as usize) << b.dir_bits) | bucket] += 1;
                }
            }
        }
        n
    }

    /// Tuning aid: the number of postings of every key of the bulk-built tables, per table
    /// (indexed by key; empty before a build).
    #[doc(hidden)]
    pub fn bucket_sizes(&self) -> Vec<Vec<u32>> {
        (0..self.base.offsets.len()).map(|t| self.table_sizes(t)).collect()
    }

    /// Tuning aid: the (table, key) of every probe a query makes.
    #[doc(hidden)]
    pub fn probe_keys(&self, q: &QueryFeatures) -> Vec<(usize, u32)> {
        self.probes(&query_descs(&self.params, q)).map(|(t, k, _)| (t, k)).collect()
    }

    /// Every (table, key, query keypoint) the descriptors probe, stopped keys included; table by
    /// table, so that one table's key lookups and stop set stay in cache.
    fn probes<'a>(&'a self, descs: &'a [[u64; 4]]) -> impl Iterator<Item = (usize, u32, u16)> + 'a {
        self.key_fns
            .iter()
            .enumerate()
            .flat_map(move |(t, f)| descs.iter().enumerate().map(move |(qi, d)| (t, f.key(d), qi as u16)))
    }

    /// Tuning aid: for every protected image with at least
    /// `min_inliers` correspondences, the descriptor distances of the best
    /// hypothesis's inliers.
    #[doc(hidden)]
    pub fn search_details(&self, q: &QueryFeatures) -> Vec<(u64, Vec<u16>)> {
        let mut per = self.correspondences(q);
        // (the query as it is)
        let n0 = query_sets(&self.params, q)[0].len();
        for (_, c) in &mut per {
            c.retain(|c| usize::from(c.q) < n0);
        }
        let mut v: Vec<(u64, Vec<u16>)> = per
            .iter_mut()
            .filter(|(_, c)| c.len() >= self.params.min_inliers)
            .map(|(slot, c)| {
                let (id, sig) = self.slot(*slot);
                (
                    *id,
                    crate::verify::best_inliers(
                        &self.params,
                        &sig.keypoints,
                        &q.keypoints,
                        q.levels_per_octave,
                        c,
                    ),
                )
            })
            .collect();
        v.sort_by_key(|x| x.0);
        v
    }

    /// Every correspondence of the query, grouped by slot (in slot order).
    fn correspondences(&self, q: &QueryFeatures) -> Vec<(u32, Vec<Corr>)> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("popcnt") {
            // SAFETY: the CPU supports popcnt (checked just above).
            return unsafe { self.correspondences_popcnt(q) };
        }
        self.correspondences_generic(q)
    }

    /// The scan compiled with the popcnt instruction (the x86-64 baseline counts bits with a
    /// multi-instruction sequence, and every posting scanned costs a 256-bit distance).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "popcnt")]
    unsafe fn correspondences_popcnt(&self, q: &QueryFeatures) -> Vec<(u32, Vec<Corr>)> {
        self.correspondences_generic(q)
    }

    #[inline(always)]
    fn correspondences_generic(&self, q: &QueryFeatures) -> Vec<(u32, Vec<Corr>)> {
        let maxd = self.params.max_hamming;
        let mut found: Vec<(u32, Corr)> = Vec::new();
        let qdescs = query_descs(&self.params, q);
        // The probes whose keys are not stopped: a stopped key has no postings, in the base or
        // among the recent inserts.
        let probes: Vec<(usize, u32, u16)> =
            self.probes(&qdescs).filter(|&(t, k, _)| !stopped(&self.stop[t], k)).collect();
        if !self.base.descs.is_empty() {
            if self.base.dir_bits == self.params.lsh_bits.min(32) as u32 {
                // every key its own bucket: a posting is the keypoint number
                self.scan_base::<false>(&probes, &qdescs, &mut found);
            } else {
                self.scan_base::<true>(&probes, &qdescs, &mut found);
            }
        }
        if self.delta_len > 0 {
            for &(t, k, qi) in &probes {
                let Some(list) = self.delta[t].get(&k) else { continue };
                let qi = usize::from(qi);
                for &(slot, p) in list {
                    let pk = &self.slot(slot).1.keypoints[usize::from(p)];
                    let d = hamming(&qdescs[qi], &pk.desc);
                    if d <= maxd {
                        found.push((slot, Corr { dist: d as u16, p, q: qi as u16 }));
                    }
                }
            }
        }
        found.sort_unstable_by_key(|x| x.0);
        let mut out: Vec<(u32, Vec<Corr>)> = Vec::new();
        for (slot, c) in found {
            match out.last_mut() {
                Some((s, v)) if *s == slot => v.push(c),
                _ => out.push((slot, vec![c])),
            }
        }
        out
    }

    /// The base's correspondences for `probes`, as a pipeline of three passes, each reading
    /// memory a fixed number of steps ahead of its use: the directory slots of the probes, then the
    /// postings of the non-empty buckets (keeping the keypoints with the probe's full key; `SPLIT`:
    /// postings hold the key's high bits beside the keypoint number), then those keypoints'
    /// descriptors. Counting the look-ahead in candidates rather than in postings keeps as many
    /// descriptor reads in flight when few of a bucket's postings have the probe's key.
    #[inline(always)]
    fn scan_base<const SPLIT: bool>(
        &self,
        probes: &[(usize, u32, u16)],
        qdescs: &[[u64; 4]],
        found: &mut Vec<(u32, Corr)>,
    ) {
        // look-ahead of each pass, in probes, buckets and candidates
        const DIR_AHEAD: usize = 16;
        const BUCKET_AHEAD: usize = 8;
        const DESC_AHEAD: usize = 16;
        let base = &self.base;
        let maxd = self.params.max_hamming;
        let slot_ptr = |&(t, k, _): &(usize, u32, u16)| base.offsets[t].as_ptr().wrapping_add(base.bucket(k));
        // Pass 1: the non-empty buckets, as (start, end, probe).
        let mut ranges: Vec<(u32, u32, u32)> = Vec::with_capacity(probes.len());
        for p in probes.iter().take(DIR_AHEAD) {
            prefetch(slot_ptr(p));
        }
        for (i, &(t, k, _)) in probes.iter().enumerate() {
            if let Some(p) = probes.get(i + DIR_AHEAD) {
                prefetch(slot_ptr(p));
            }
            let b = base.bucket(k);
            let off = &base.offsets[t];
            let (s, e) = (off[b], off[b + 1]);
            if s < e {
                ranges.push((s, e, i as u32));
            }
        }
        // Pass 2: the postings with the probe's full key, as (keypoint number, query keypoint).
        let fetch_bucket = |&(s, e, i): &(u32, u32, u32)| {
            let list = &base.postings[probes[i as usize].0][s as usize..e as usize];
            // every cache line of the bucket (16 postings per line)
            for j in (0..list.len()).step_by(16) {
                prefetch(list.as_ptr().wrapping_add(j));
            }
        };
        for r in ranges.iter().take(BUCKET_AHEAD) {
            fetch_bucket(r);
        }
        let mut cands: Vec<(u32, u16)> = Vec::new();
        for (j, &(s, e, i)) in ranges.iter().enumerate() {
            if let Some(r) = ranges.get(j + BUCKET_AHEAD) {
                fetch_bucket(r);
            }
            let (t, k, qi) = probes[i as usize];
            let list = &base.postings[t][s as usize..e as usize];
            if SPLIT {
                // the run of postings with the probe's high key bits (ascending within a bucket)
                let (lo, hi) = base.run(k);
                let a = list.partition_point(|&p| p < lo);
                let b = a + list[a..].partition_point(|&p| u64::from(p) < hi);
                cands.extend(list[a..b].iter().map(|&p| (base.unpack(p).1, qi)));
            } else {
                cands.extend(list.iter().map(|&g| (g, qi)));
            }
        }
        // Pass 3: the descriptors, and the pairs within the rule's distance.
        let desc_ptr = |&(g, _): &(u32, u16)| base.descs.as_ptr().wrapping_add(g as usize);
        for c in cands.iter().take(DESC_AHEAD) {
            prefetch(desc_ptr(c));
        }
        for (j, &(g, qi)) in cands.iter().enumerate() {
            if let Some(c) = cands.get(j + DESC_AHEAD) {
                prefetch(desc_ptr(c));
            }
            let d = hamming(&qdescs[usize::from(qi)], &base.descs[g as usize]);
            if d <= maxd {
                let (slot, p) = base.owner[g as usize];
                if self.entries[slot as usize].is_some() {
                    found.push((slot, Corr { dist: d as u16, p, q: qi }));
                }
            }
        }
    }

    /// Every protected image the query matches, sorted by id.
    pub fn search(&self, q: &QueryFeatures) -> Vec<Hit> {
        let per = self.correspondences(q);
        // slots that rules 1 and 3 may match, judged whatever their correspondences
        let mut hashed: Vec<u32> = self
            .pdq
            .search_dihedral(&q.pdq, self.params.pdq_radius)
            .into_iter()
            .map(|m| m.id as u32)
            .collect();
        if let Some(r) = self.params.band_radius {
            for h in query_bands(&self.params, q) {
                hashed.extend(self.band.search(&h, r).into_iter().map(|m| m.id as u32));
            }
        }
        hashed.sort_unstable();
        hashed.dedup();
        let mut out: Vec<Hit> = Vec::new();
        let mut pi = hashed.into_iter().peekable();
        let mut judge_slot = |slot: u32, corrs: &mut Vec<Corr>| {
            let (id, sig) = self.slot(slot);
            if let Some(h) = judge(&self.params, *id, sig, q, corrs) {
                out.push(h);
            }
        };
        for (slot, mut corrs) in per {
            while let Some(&p) = pi.peek().filter(|&&p| p < slot) {
                judge_slot(p, &mut Vec::new());
                pi.next();
            }
            let hash_hit = pi.peek() == Some(&slot);
            if hash_hit {
                pi.next();
            }
            if hash_hit || corrs.len() >= fewest_inliers(&self.params) {
                judge_slot(slot, &mut corrs);
            }
        }
        for p in pi {
            judge_slot(p, &mut Vec::new());
        }
        out.sort_by_key(|h| h.id);
        out
    }
}

#[cfg(test)]
mod key_tests {
    use super::*;

    #[test]
    fn stopped_keys_make_no_correspondence() {
        let sig = Signature {
            pdq: consentry_pdq::Hash256::from_bytes([0x0f; 32]),
            quality: 90,
            keypoints: crate::synth::ramp_keypoints(),
            band: None,
            source_side: 0,
            grid: None,
        };
        let q = QueryFeatures {
            pdq: [consentry_pdq::Hash256::from_bytes([0xf0; 32]); 8],
            quality: 90,
            keypoints: sig.keypoints.clone(),
            mirrored: Vec::new(),
            band: None,
            trimmed_band: None,
            levels_per_octave: crate::QUERY_LEVELS_PER_OCTAVE,
            source_side: 0,
            grid: None,
        };
        for stop_keys in [
            StopKeys::None,
            StopKeys::Ramp,
            StopKeys::RampNeighbours,
            StopKeys::RampNeighbours2,
            StopKeys::Common(16),
        ] {
            let params = Params { stop_keys, ..Params::default() };
            let mut index = DeriveIndex::new(params);
            index.insert(7, sig.clone()).unwrap();
            let got = index.search(&q);
            assert_eq!(got, brute_force_search(&params, &[(7, sig.clone())], &q), "{stop_keys:?}");
            // six identical flat or ramp keypoints: a match only when their keys are not stopped
            assert_eq!(got.len(), usize::from(stop_keys == StopKeys::None), "{stop_keys:?}");
        }
    }

    #[test]
    fn common_stop_sets_are_the_file_and_the_ramp_keys() {
        let params = Params { stop_keys: StopKeys::Common(100), ..learnt_layout() };
        let bits = key_bits(&params);
        let sets = stop_sets(&params, &bits);
        let file = common_keys();
        let ramps = crate::ramp_descriptors();
        for (t, set) in sets.iter().enumerate() {
            let mut want: Vec<u32> = file[t][..100].to_vec();
            want.extend(ramps.iter().map(|d| key(d, &bits[t])));
            want.sort_unstable();
            want.dedup();
            assert_eq!(set.list(), want, "table {t}");
            assert!(want.iter().all(|&k| stopped(set, k)));
            assert!(!stopped(set, file[t][100]) || want.contains(&file[t][100]));
        }
    }

    #[test]
    fn a_posting_holds_its_keypoint_number_and_the_rest_of_its_key() {
        for width in [1u32, 10, 18, 22, 24, 26, 32] {
            for total in [0usize, 1, 2, 1000, 50_000, 5_000_000, 50_000_000, 1 << 28, u32::MAX as usize - 1] {
                let (dir_bits, num_bits) = Base::layout(total, width);
                let b = Base { dir_bits, num_bits, ..Base::default() };
                assert!(dir_bits <= width, "{width} bits, {total}");
                // every keypoint number fits beside the key's high bits, and they come back
                let last = total.saturating_sub(1) as u32;
                assert!(num_bits == 32 || u64::from(last) < 1u64 << num_bits, "{width} bits, {total}");
                assert_eq!(dir_bits + (32 - num_bits), width, "{width} bits, {total}");
                for key in
                    [0u32, 1, (((1u64 << width) - 1) as u32), 0x5555_5555 & (((1u64 << width) - 1) as u32)]
                {
                    assert_eq!(b.unpack(b.pack(key, last)), (b.high(key), last));
                    assert_eq!(((b.high(key) as u64) << dir_bits) as u32 | b.bucket(key) as u32, key);
                    // the key's run holds its postings and no posting of another key of its bucket
                    let (lo, hi) = b.run(key);
                    let inside = |p: u32| p >= lo && u64::from(p) < hi;
                    assert!(inside(b.pack(key, 0)) && inside(b.pack(key, last)), "{width} bits, {total}");
                    if dir_bits < width {
                        let other = key ^ (1 << dir_bits);
                        assert!(
                            !inside(b.pack(other, 0)) && !inside(b.pack(other, last)),
                            "{width} bits, {total}"
                        );
                    }
                }
                // about one bucket per 16 keypoints, unless the high bits need more
                let forced = width.saturating_sub(32 - (u32::BITS - last.leading_zeros()).max(1));
                if total >= 1 << 20 && width >= 18 && dir_bits > forced {
                    assert!(
                        1usize << dir_bits <= total.div_ceil(8),
                        "{width} bits, {total}: 2^{dir_bits} buckets"
                    );
                }
            }
        }
        // 16 tables of 18 bits at 1 M protected images (50 M keypoints): every key its own bucket
        assert_eq!(Base::layout(50_000_000, 18), (18, 32));
        // 24 bits there: 2^22 buckets, 2 bits of the key in each posting; 26 bits: 4 bits
        assert_eq!(Base::layout(50_000_000, 24), (22, 30));
        assert_eq!(Base::layout(50_000_000, 26), (22, 28));
    }

    #[test]
    fn the_postings_of_a_bucket_are_ascending_so_a_key_is_one_run() {
        // 10-bit keys over a few thousand keypoints: 2^8 buckets, several keys in each
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let params = Params { lsh_bits: 10, stop_keys: StopKeys::None, ..Params::default() };
        let mut index = DeriveIndex::new(params);
        let entries: Vec<(u64, Signature)> = (0..100u64)
            .map(|id| {
                let keypoints = (0..40)
                    .map(|i| Keypoint {
                        x: i * 20,
                        y: i * 10,
                        level: 0,
                        desc: [next(), next(), next(), next()],
                    })
                    .collect();
                let pdq = consentry_pdq::Hash256::from_words([next(), next(), next(), next()]);
                (id, Signature { pdq, quality: 90, keypoints, band: None, source_side: 0, grid: None })
            })
            .collect();
        assert!(index.extend(entries).is_empty());
        let base = &index.base;
        assert!(base.dir_bits < 10, "keys share buckets: {} directory bits", base.dir_bits);
        let mut keys_per_bucket = 0usize;
        for (t, f) in index.key_fns.iter().enumerate() {
            let (off, post) = (&base.offsets[t], &base.postings[t]);
            for b in 0..off.len() - 1 {
                let list = &post[off[b] as usize..off[b + 1] as usize];
                assert!(list.windows(2).all(|w| w[0] < w[1]), "table {t}, bucket {b}");
                let mut highs: Vec<u32> = list.iter().map(|&p| base.unpack(p).0).collect();
                highs.dedup();
                keys_per_bucket = keys_per_bucket.max(highs.len());
                // every posting is in its key's run and its key is the key of its descriptor
                for &p in list {
                    let g = base.unpack(p).1;
                    let k = f.key(&base.descs[g as usize]);
                    assert_eq!(base.bucket(k), b);
                    let (lo, hi) = base.run(k);
                    assert!(p >= lo && u64::from(p) < hi);
                }
            }
        }
        assert!(keys_per_bucket > 1);
    }

    #[test]
    fn neighbour_stop_sets_hold_every_key_near_a_ramp_key() {
        for (stop_keys, radius) in
            [(StopKeys::Ramp, 0), (StopKeys::RampNeighbours, 1), (StopKeys::RampNeighbours2, 2)]
        {
            let params = Params { stop_keys, ..Params::default() };
            let bits = key_bits(&params);
            let sets = stop_sets(&params, &bits);
            let width = params.lsh_bits as u32;
            for (t, set) in sets.iter().enumerate() {
                let ramp: Vec<u32> = crate::ramp_descriptors().iter().map(|d| key(d, &bits[t])).collect();
                // exactly the keys within `radius` bits of a ramp key
                let near = |k: u32| ramp.iter().any(|&r| (r ^ k).count_ones() <= radius);
                assert!(set.list().iter().all(|&k| near(k) && k >> width == 0), "{stop_keys:?} table {t}");
                let r = ramp[t % ramp.len()];
                for i in 0..width {
                    for j in 0..width {
                        let k = r ^ (1 << i) ^ (1 << j);
                        assert_eq!(stopped(set, k), near(k), "{stop_keys:?} table {t}");
                        assert_eq!(set.list().binary_search(&k).is_ok(), near(k));
                    }
                }
                assert!(
                    !stopped(set, !r & ((1u64 << width) - 1) as u32)
                        || near(!r & ((1u64 << width) - 1) as u32)
                );
            }
        }
        // without a learnt list for the layout, Common(n) stops what RampNeighbours2 stops
        assert_ne!(key_bits(&Params::default()), key_bits(&learnt_layout()));
        let common = Params { stop_keys: StopKeys::Common(100), ..Params::default() };
        let ramp2 = Params { stop_keys: StopKeys::RampNeighbours2, ..Params::default() };
        let bits = key_bits(&common);
        let (a, b) = (stop_sets(&common, &bits), stop_sets(&ramp2, &bits));
        assert!(a.iter().zip(&b).all(|(a, b)| a.list() == b.list()));
    }

    #[test]
    fn the_stop_list_file_is_checked() {
        let b = include_bytes!("../data/common-keys-v1.bin").to_vec();
        let keys = parse_common_keys(&b).unwrap();
        assert_eq!(keys.len(), learnt_layout().lsh_tables);
        assert!(keys.iter().all(|t| t.len() == crate::COMMON_KEYS_PER_TABLE));
        assert_eq!(write_common_keys(&keys), b);
        let mut bad = b.clone();
        bad[100] ^= 1;
        assert_eq!(parse_common_keys(&bad), Err("checksum"));
        assert!(parse_common_keys(&b[..b.len() - 1]).is_err());
        assert!(parse_common_keys(&b[..10]).is_err());
        let mut dup = keys.clone();
        dup[3][5] = dup[3][4];
        assert_eq!(parse_common_keys(&write_common_keys(&dup)), Err("keys repeated or out of range"));
    }

    #[test]
    fn byte_lookup_keys_equal_bit_by_bit_keys() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for lsh_bits in [1usize, 10, 18, 24, 32] {
            let params = Params { lsh_bits, ..Params::default() };
            for bits in key_bits(&params) {
                let lut = KeyLut::new(&bits);
                for _ in 0..200 {
                    let d = [next(), next(), next(), next()];
                    assert_eq!(lut.key(&d), key(&d, &bits), "{lsh_bits} bits");
                }
                assert_eq!(lut.key(&[u64::MAX; 4]), key(&[u64::MAX; 4], &bits));
            }
        }
    }
}
