//! The derivative index: global PDQ hashes in `consentry-index` (exact
//! multi-index hashing) and the stored keypoints' descriptors in bucket
//! tables keyed by fixed bit subsets, then verification per candidate image.

use crate::verify::{hamming, inliers, Corr};
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

/// Per table, a bit set over the `2^lsh_bits` keys: the keys [`Params::stop_keys`] stops.
fn stop_sets(params: &Params, bits: &[Vec<u8>]) -> Vec<Vec<u64>> {
    let width = params.lsh_bits.min(32);
    let words = (1usize << width).div_ceil(64);
    if params.stop_keys == StopKeys::None {
        return vec![Vec::new(); bits.len()];
    }
    let ramps = crate::ramp_descriptors();
    let neighbours = params.stop_keys == StopKeys::RampNeighbours;
    let common = match params.stop_keys {
        StopKeys::Common(n) if bits == &key_bits(&Params::default())[..] => common_keys()
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
            let mut set = vec![0u64; words];
            let mut stop = |k: u32| set[k as usize / 64] |= 1 << (k % 64);
            for &k in common.get(t).into_iter().flatten() {
                stop(k);
            }
            for d in &ramps {
                let k = key(d, b);
                stop(k);
                if neighbours {
                    for i in 0..width {
                        stop(k ^ (1 << i));
                    }
                }
            }
            set
        })
        .collect()
}

/// The learnt stop-list ([`StopKeys::Common`]): per table of the default layout, its keys.
///
/// File: `CSTK`, version 1, tables (u8), key bits (u8), keys per table (u16 LE), then per table
/// that many distinct keys (u32 LE, most common first), then the FNV-1a 64 of everything before (u64 LE).
fn common_keys() -> Vec<Vec<u32>> {
    parse_common_keys(include_bytes!("../data/common-keys-v1.bin"))
        .expect("the embedded stop-list is well formed")
}

fn parse_common_keys(b: &[u8]) -> Result<Vec<Vec<u32>>, &'static str> {
    let d = Params::default();
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
/// for each table of the default layout.
#[doc(hidden)]
pub fn write_common_keys(keys: &[Vec<u32>]) -> Vec<u8> {
    let d = Params::default();
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
fn stopped(set: &[u64], k: u32) -> bool {
    set.get(k as usize / 64).is_some_and(|w| (w >> (k % 64)) & 1 == 1)
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

/// Rule 2: the inliers and score of the better of the two sets' best hypotheses, and whether
/// it is the mirrored set's; `(0, 0, false)` when neither passes.
fn local_rule(
    params: &Params,
    sig: &Signature,
    q: &QueryFeatures,
    corrs: &mut Vec<Corr>,
) -> (usize, u32, bool) {
    let sets = query_sets(params, q);
    let verify = |set: &[Keypoint], corrs: &mut Vec<Corr>| {
        let (n, sc) =
            if can_pass(params, corrs) { inliers(params, &sig.keypoints, set, corrs) } else { (0, 0) };
        if n >= params.min_inliers && sc >= params.min_score {
            (n, sc)
        } else {
            (0, 0)
        }
    };
    let n0 = sets[0].len() as u32;
    if sets[1].is_empty() || corrs.iter().all(|c| u32::from(c.q) < n0) {
        let (n, sc) = verify(sets[0], corrs);
        return (n, sc, false);
    }
    let (mut a, mut b): (Vec<Corr>, Vec<Corr>) = corrs.iter().partition(|c| u32::from(c.q) < n0);
    for c in &mut b {
        c.q -= n0 as u16;
    }
    let (ra, rb) = (verify(sets[0], &mut a), verify(sets[1], &mut b));
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
    match_pair_with(params, &bits, &stop_sets(params, &bits), id, sig, q)
}

fn match_pair_with(
    params: &Params,
    bits: &[Vec<u8>],
    stop: &[Vec<u64>],
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
    stop: &[Vec<u64>],
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
    let bits = key_bits(params);
    let mut corrs = brute_correspondences(params, &bits, &stop_sets(params, &bits), sig, q);
    // (the query as it is)
    let n0 = query_sets(params, q)[0].len();
    corrs.retain(|c| usize::from(c.q) < n0);
    crate::verify::best_inliers(params, &sig.keypoints, &q.keypoints, &mut corrs)
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
/// table a CSR directory of `2^lsh_bits + 1` offsets and the keypoint numbers
/// grouped by key, and the descriptors themselves in one array by keypoint
/// number, so scanning a bucket reads two flat arrays instead of chasing
/// pointers to each entry's signature.
#[derive(Default)]
struct Base {
    offsets: Vec<Vec<u32>>,
    postings: Vec<Vec<u32>>,
    descs: Vec<[u64; 4]>,
    /// Keypoint number → (slot, keypoint within the signature).
    owner: Vec<(u32, u16)>,
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
    stop: Vec<Vec<u64>>,
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
        let width = self.params.lsh_bits.min(32);
        let nkeys = 1usize << width;
        let (offsets, postings): (Vec<Vec<u32>>, Vec<Vec<u32>>) = {
            use rayon::prelude::*;
            self.key_fns
                .par_iter()
                .zip(&self.stop)
                .map(|(b, stop)| {
                    // counting sort of the keypoint numbers by key; stopped keys get empty buckets
                    let keys: Vec<u32> = descs.iter().map(|d| b.key(d)).collect();
                    let mut off = vec![0u32; nkeys + 1];
                    for &k in &keys {
                        if !stopped(stop, k) {
                            off[k as usize + 1] += 1;
                        }
                    }
                    for i in 1..=nkeys {
                        off[i] += off[i - 1];
                    }
                    let mut fill = off.clone();
                    let mut post = huge_vec(off[nkeys] as usize, 0u32);
                    for (g, &k) in keys.iter().enumerate() {
                        if !stopped(stop, k) {
                            let c = &mut fill[k as usize];
                            post[*c as usize] = g as u32;
                            *c += 1;
                        }
                    }
                    (off, post)
                })
                .unzip()
        };
        self.base = Base { offsets, postings, descs, owner };
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
        let base = self.bucket_sizes();
        for t in 0..self.key_fns.len() {
            let mut sizes: HashMap<u32, usize> =
                self.delta[t].iter().map(|(key, l)| (*key, l.len())).collect();
            for (key, &n) in base.get(t).into_iter().flatten().enumerate() {
                if n > 0 {
                    *sizes.entry(key as u32).or_default() += n as usize;
                }
            }
            v.extend(sizes.into_iter().map(|(key, n)| (n, key.count_ones(), self.params.lsh_bits)));
        }
        v.sort_unstable_by(|a, b| b.cmp(a));
        v.truncate(k);
        v
    }

    /// Tuning aid: the size of every bucket of the bulk-built tables, per table (empty before a build).
    #[doc(hidden)]
    pub fn bucket_sizes(&self) -> Vec<Vec<u32>> {
        self.base.offsets.iter().map(|off| off.windows(2).map(|w| w[1] - w[0]).collect()).collect()
    }

    /// Tuning aid: the (table, key) of every probe a query makes.
    #[doc(hidden)]
    pub fn probe_keys(&self, q: &QueryFeatures) -> Vec<(usize, u32)> {
        self.probes(&query_descs(&self.params, q))
    }

    fn probes(&self, descs: &[[u64; 4]]) -> Vec<(usize, u32)> {
        descs.iter().flat_map(|d| self.key_fns.iter().enumerate().map(|(t, f)| (t, f.key(d)))).collect()
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
                (*id, crate::verify::best_inliers(&self.params, &sig.keypoints, &q.keypoints, c))
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
        // probe i is query keypoint i / nt in table i % nt
        let qdescs = query_descs(&self.params, q);
        let probes = self.probes(&qdescs);
        let nt = self.key_fns.len();
        if !self.base.descs.is_empty() {
            let base = &self.base;
            // Stage 1: the directory slots of every probe.
            // (A stopped key's bucket is empty: its directory slot is not read at all.)
            for &(t, k) in &probes {
                if !stopped(&self.stop[t], k) {
                    prefetch(base.offsets[t].as_ptr().wrapping_add(k as usize));
                }
            }
            // Stage 2: non-empty buckets, as (start, end, probe).
            let mut ranges: Vec<(u32, u32, u32)> = Vec::new();
            for (i, &(t, k)) in probes.iter().enumerate() {
                if stopped(&self.stop[t], k) {
                    continue;
                }
                let off = &base.offsets[t];
                let (s, e) = (off[k as usize], off[k as usize + 1]);
                if s < e {
                    prefetch(base.postings[t].as_ptr().wrapping_add(s as usize));
                    ranges.push((s, e, i as u32));
                }
            }
            // Stage 3: scan the buckets, the descriptors fetched a few postings ahead.
            const AHEAD: usize = 12;
            let mut ahead = ranges.iter().flat_map(|&(s, e, i)| {
                base.postings[i as usize % nt][s as usize..e as usize].iter().copied()
            });
            for _ in 0..AHEAD {
                if let Some(g) = ahead.next() {
                    prefetch(base.descs.as_ptr().wrapping_add(g as usize));
                }
            }
            for &(s, e, i) in &ranges {
                let qi = i as usize / nt;
                let qd = &qdescs[qi];
                for &g in &base.postings[i as usize % nt][s as usize..e as usize] {
                    if let Some(n) = ahead.next() {
                        prefetch(base.descs.as_ptr().wrapping_add(n as usize));
                    }
                    let d = hamming(qd, &base.descs[g as usize]);
                    if d <= maxd {
                        let (slot, p) = base.owner[g as usize];
                        if self.entries[slot as usize].is_some() {
                            found.push((slot, Corr { dist: d as u16, p, q: qi as u16 }));
                        }
                    }
                }
            }
        }
        if self.delta_len > 0 {
            for (i, &(t, k)) in probes.iter().enumerate() {
                let Some(list) = self.delta[t].get(&k) else { continue };
                let qi = i / nt;
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
            if hash_hit || corrs.len() >= self.params.min_inliers {
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
        };
        let q = QueryFeatures {
            pdq: [consentry_pdq::Hash256::from_bytes([0xf0; 32]); 8],
            quality: 90,
            keypoints: sig.keypoints.clone(),
            mirrored: Vec::new(),
            band: None,
            trimmed_band: None,
        };
        for stop_keys in [StopKeys::None, StopKeys::Ramp, StopKeys::RampNeighbours, StopKeys::Common(16)] {
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
        let params = Params { stop_keys: StopKeys::Common(100), ..Params::default() };
        let bits = key_bits(&params);
        let sets = stop_sets(&params, &bits);
        let file = common_keys();
        let ramps = crate::ramp_descriptors();
        for (t, set) in sets.iter().enumerate() {
            let mut want: Vec<u32> = file[t][..100].to_vec();
            want.extend(ramps.iter().map(|d| key(d, &bits[t])));
            want.sort_unstable();
            want.dedup();
            let ones: u32 = set.iter().map(|w| w.count_ones()).sum();
            assert_eq!(ones as usize, want.len(), "table {t}");
            assert!(want.iter().all(|&k| stopped(set, k)));
            assert!(!stopped(set, file[t][100]) || want.contains(&file[t][100]));
        }
    }

    #[test]
    fn the_stop_list_file_is_checked() {
        let b = include_bytes!("../data/common-keys-v1.bin").to_vec();
        let keys = parse_common_keys(&b).unwrap();
        assert_eq!(keys.len(), Params::default().lsh_tables);
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
