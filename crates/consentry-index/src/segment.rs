//! One immutable segment: hashes, ids and the multi-index tables over them.
//!
//! Layout (n entries, m chunks):
//! * `hashes`: `n` × 32 bytes, 32-byte aligned, **sorted by the key of chunk 0**,
//!   so chunk 0's inverted lists are implicit (a bucket is a range of entries).
//! * `ids`: `n` × 4 bytes (8 if an id needs more than 32 bits), parallel to `hashes`.
//! * for every chunk `t`: a CSR directory of `2^width + 1` bucket starts ([`Dir`]:
//!   one u32 per block of 256 buckets plus one u16 per bucket, or plain u32
//!   where a block holds more than 65,535 entries) and, for `t > 0`,
//!   `positions[t]` (`n` entry indices grouped by key, 3 bytes each up to 2^24 entries)
//!   and, slot for slot in a separate array, each entry's **sketch**: the low 16 bits of
//!   its key in the next table (table 0 after the last), 5 bytes per entry in all. Table
//!   0 holds the sketches alone (its slot `i` is entry `i`; computed at build and load, never
//!   saved), so its buckets are filtered like the others' instead of having every hash read.
//!   A bucket's sketches are contiguous, so they are checked 16 or 32 at a time (AVX2) and
//!   an entry's position is read only when its sketch passes.
//!
//! Search is exact by the generalised pigeonhole principle: the 256 bits are
//! partitioned into `m` chunks; if the chunk radii `rho_t` satisfy
//! `sum(rho_t + 1) = r + 1`, any entry within distance `r` of the query is
//! within `rho_t` of the query on at least one chunk `t`, so it is in one of
//! the probed buckets. The stronger "pigeonring" form of the principle (Qin et
//! al., VLDB 2018) holds too: there is a chunk `t` from which every run of
//! consecutive chunks around the ring satisfies `sum(d_j) <= sum(rho_j + 1) - 1`;
//! [`ring_start`] names one such chunk for each entry. Taking runs of one and two
//! chunks: the entry is in table `t`'s probed buckets, and `d_t + d_{t+1} <=
//! rho_t + rho_{t+1} + 1`. The sketch gives a lower bound of `d_{t+1}` without
//! reading the entry's hash, so most candidates (random ones: all but ~1 %) are
//! dropped in the list they sit in, and the entry is reported only through its
//! ring start, so results need no de-duplication set.

use crate::scan;

/// A hash stored 32-byte aligned, so one hash never straddles two cache lines.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[repr(C, align(32))]
pub(crate) struct H(pub [u64; 4]);

/// `CONSENTRY_INDEX_NO_THP=1` turns the huge-page advice off (for benchmarks).
static NO_THP: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::env::var_os("CONSENTRY_INDEX_NO_THP").is_some_and(|v| v == "1"));

/// How many probes ahead the search pipeline reads (see `search_mih_generic`): 8 to 24 measured
/// alike at 10 M entries; about 2 × `AHEAD` cache lines are then in flight.
const AHEAD: usize = 16;

/// `CONSENTRY_INDEX_NO_SKETCH=1` builds tables without sketches (for A/B benchmarks).
static NO_SKETCH: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::env::var_os("CONSENTRY_INDEX_NO_SKETCH").is_some_and(|v| v == "1"));

/// `CONSENTRY_INDEX_WIDE_DIR=1` keeps directories, positions and ids in their plain u32 / u64
/// forms (for A/B benchmarks of the narrow ones).
static WIDE_DIR: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::env::var_os("CONSENTRY_INDEX_WIDE_DIR").is_some_and(|v| v == "1"));

/// A vector of `n` copies of `fill` whose pages the kernel is asked to back
/// with transparent huge pages (Linux, `madvise` mode): the tables are read at
/// random, and 2 MiB pages remove most TLB misses.
pub fn huge_vec<T: Copy>(n: usize, fill: T) -> Vec<T> {
    let mut v = huge_capacity(n);
    v.resize(n, fill);
    v
}

/// An empty vector with room for `n` elements, its pages advised as in [`huge_vec`].
pub(crate) fn huge_capacity<T>(n: usize) -> Vec<T> {
    let v: Vec<T> = Vec::with_capacity(n);
    let bytes = n * std::mem::size_of::<T>();
    #[cfg(target_os = "linux")]
    if bytes >= 4 << 20 && !*NO_THP {
        let start = v.as_ptr() as usize;
        let aligned = (start + 4095) & !4095;
        let len = (start + bytes).saturating_sub(aligned) & !4095;
        // SAFETY: the range lies inside this vector's allocation; MADV_HUGEPAGE only changes
        // how the kernel backs untouched pages and never invalidates memory.
        unsafe {
            libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        }
    }
    let _ = bytes;
    v
}

/// Whether the CPU has AVX2 and popcnt (the searches' fastest instance);
/// `CONSENTRY_INDEX_NO_AVX2=1` says no (for A/B benchmarks).
#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    static YES: std::sync::LazyLock<bool> = std::sync::LazyLock::new(|| {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("popcnt")
            && std::env::var_os("CONSENTRY_INDEX_NO_AVX2").is_none_or(|v| v != "1")
    });
    *YES
}

/// Whether the CPU counts bits in 16-bit lanes (AVX-512 BITALG, with AVX-512 BW): the batch
/// kernel then checks a bucket of up to 32 sketches with one popcount and one compare;
/// `CONSENTRY_INDEX_NO_AVX512=1` says no (for A/B benchmarks).
#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    static YES: std::sync::LazyLock<bool> = std::sync::LazyLock::new(|| {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512bitalg")
            && std::env::var_os("CONSENTRY_INDEX_NO_AVX512").is_none_or(|v| v != "1")
    });
    *YES
}

/// Segments smaller than this are searched by a linear scan (no tables).
pub(crate) const SCAN_ONLY_BELOW: usize = 4096;
/// Widest chunk key: the directory of a table has `2^MAX_WIDTH + 1` u32.
pub(crate) const MAX_WIDTH: u32 = 26;
pub(crate) const MIN_WIDTH: u32 = 10;
pub(crate) const MAX_CHUNKS: usize = 26;

/// Bits `start..start+width` (counting from the most significant bit of word 0).
#[inline(always)]
pub(crate) fn extract(w: &[u64; 4], start: u32, width: u32) -> u32 {
    let wi = (start / 64) as usize;
    let off = start % 64;
    let end = off + width;
    let hi = (w[wi] << off) >> (64 - width);
    if end <= 64 {
        hi as u32
    } else {
        (hi | (w[wi + 1] >> (128 - end))) as u32
    }
}

/// How the 256 bits are cut into chunks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ChunkPlan {
    pub widths: Vec<u32>,
    pub starts: Vec<u32>,
}

impl ChunkPlan {
    /// A plan with `m` chunks of (nearly) equal width; wider chunks first.
    pub fn with_chunks(m: usize) -> ChunkPlan {
        assert!((1..=MAX_CHUNKS).contains(&m));
        let base = 256 / m as u32;
        let extra = 256 % m as u32;
        let widths: Vec<u32> = (0..m as u32).map(|i| base + u32::from(i < extra)).collect();
        assert!(widths.iter().all(|&w| (1..=MAX_WIDTH).contains(&w)), "chunks wider than MAX_WIDTH");
        ChunkPlan::from_widths(widths)
    }

    /// The plan used for a segment of `n` entries: keys of 16 bits up to 2^21 entries (of
    /// `log2(n)` bits below 2^16), of `log2(n) - 2` bits beyond, at most 23.
    pub fn for_len(n: usize) -> ChunkPlan {
        let lg = (n.max(2) as f64).log2().round() as u32;
        // With sketches a bucket's entries cost little beyond its first cache line, so keys are
        // narrower than log2(n): fewer probes, more entries per bucket. Measured (bench_index,
        // 2026-12-06): up to 2^21 entries 16-bit keys, whose directories stay in the cache
        // (1 M: 16 chunks 1.33× 14, 1.4× 17; 100 k: 1.5× 15), log2(n) below 2^16 entries (where
        // 16-bit directories would outweigh the entries); beyond 2^21, log2(n) - 2 (10 M:
        // 12 chunks 1.04–1.08× 11, 1.07× 13, 1.2–1.3× 14 or 16), at most 23 bits (100 M: 11 chunks
        // 1.4–1.9× the 10 of 26 bits, whose radius-3 balls made ~8,600 probes; 1.2× 12 chunks).
        let target = if n <= 1 << 21 { lg.min(16) } else { lg.saturating_sub(2).min(23) };
        let target = target.clamp(MIN_WIDTH, MAX_WIDTH);
        let mut m = (256.0 / f64::from(target)).round() as usize;
        // never wider than MAX_WIDTH
        while 256usize.div_ceil(m) > MAX_WIDTH as usize {
            m += 1;
        }
        ChunkPlan::with_chunks(m.clamp(1, MAX_CHUNKS))
    }

    /// The plan of these chunk widths (they must add up to 256).
    pub(crate) fn from_widths(widths: Vec<u32>) -> ChunkPlan {
        let mut starts = Vec::with_capacity(widths.len());
        let mut s = 0;
        for &w in &widths {
            starts.push(s);
            s += w;
        }
        debug_assert_eq!(s, 256);
        ChunkPlan { widths, starts }
    }

    pub fn len(&self) -> usize {
        self.widths.len()
    }

    /// Chunk radii for search radius `r`: `sum(rho + 1) = r + 1` (`-1` = not probed). When
    /// they differ, the larger go to chunks `1..`, so that table 0 takes the smaller ball.
    pub fn rhos(&self, r: u32) -> [i32; MAX_CHUNKS] {
        let m = self.len() as u32;
        let total = r + 1;
        let base = (total / m) as i32;
        let extra = total % m;
        let mut out = [-1i32; MAX_CHUNKS];
        for (i, o) in out.iter_mut().enumerate().take(m as usize) {
            // the larger radii go to chunks 1..=extra: table 0's lists are the hashes themselves
            // and carry no sketches, so it takes the smaller ball
            let j = if extra < m { (i as u32 + m - 1) % m } else { i as u32 };
            *o = base - 1 + i32::from(j < extra);
        }
        out
    }

    #[inline(always)]
    pub fn key(&self, h: &[u64; 4], t: usize) -> u32 {
        extract(h, self.starts[t], self.widths[t])
    }
}

/// The table through which an entry within the search radius is reported: with `d_j` its
/// distance to the query on chunk `j` and `S_k = sum over j < k of (d_j - rho_j - 1)`, the
/// last `k` in `0..m` where `S_k` is largest.
///
/// Since `sum(rho_j + 1) = r + 1` and the entry is within `r`, every run of consecutive chunks
/// (around the ring) starting there has `sum(d_j) <= sum(rho_j + 1) - 1` (the "pigeonring"
/// principle): for one chunk that is `d <= rho`, so that table's probes find the entry, and
/// for two chunks `d_t + d_{t+1} <= rho_t + rho_{t+1} + 1`, the condition the sketches check.
#[inline(always)]
pub(crate) fn ring_start(
    plan: &ChunkPlan,
    h: &[u64; 4],
    qkeys: &[u32; MAX_CHUNKS],
    rhos: &[i32; MAX_CHUNKS],
) -> usize {
    let (mut sum, mut best, mut start) = (0i32, 0i32, 0usize);
    for k in 1..plan.len() {
        let j = k - 1;
        sum += (plan.key(h, j) ^ qkeys[j]).count_ones() as i32 - rhos[j] - 1;
        if sum >= best {
            best = sum;
            start = k;
        }
    }
    start
}

/// Number of keys within Hamming distance `rho` of a `width`-bit key.
pub(crate) fn ball_size(width: u32, rho: i32) -> f64 {
    if rho < 0 {
        return 0.0;
    }
    let mut total = 0.0;
    let mut c = 1.0;
    for i in 0..=rho.min(width as i32) as u32 {
        if i > 0 {
            c = c * f64::from(width - i + 1) / f64::from(i);
        }
        total += c;
    }
    total
}

/// Calls `f` for every key within distance `rho` of `key` (bits `0..width`).
#[inline]
pub(crate) fn for_ball(key: u32, width: u32, rho: i32, f: &mut impl FnMut(u32)) {
    if rho < 0 {
        return;
    }
    f(key);
    fn rec(key: u32, below: u32, left: i32, f: &mut impl FnMut(u32)) {
        for i in 0..below {
            let k = key ^ (1 << i);
            f(k);
            if left > 1 {
                rec(k, i, left - 1, f);
            }
        }
    }
    if rho > 0 {
        rec(key, width, rho, f);
    }
}

/// CSR inverted lists of chunk `t`: `(offsets, positions)` with the entry
/// indices of each key in increasing order.
///
/// Two-pass radix build: entries are first partitioned by the top (up to 10)
/// bits of their key — sequential writes into at most 1024 streams — then each
/// partition is counting-sorted on the remaining bits with a counter array
/// that stays in cache. A direct counting sort over the `2^width` directory
/// would take two cache misses per entry instead.
fn csr(hashes: &[H], plan: &ChunkPlan, t: usize) -> (Vec<u32>, Vec<u32>) {
    let n = hashes.len();
    let w = plan.widths[t];
    let hb = w.min(10);
    let lb = w - hb;
    let low_mask = (1u32 << lb) - 1;
    let np = 1usize << hb;
    let mut pc = vec![0u32; np + 1];
    for h in hashes {
        pc[(plan.key(&h.0, t) >> lb) as usize + 1] += 1;
    }
    for p in 1..=np {
        pc[p] += pc[p - 1];
    }
    // (low key bits, entry index), grouped by high key bits, in entry order
    let mut tmp: Vec<(u32, u32)> = huge_vec(n, (0, 0));
    {
        let mut cur = pc.clone();
        for (i, h) in hashes.iter().enumerate() {
            let k = plan.key(&h.0, t);
            let c = &mut cur[(k >> lb) as usize];
            tmp[*c as usize] = (k & low_mask, i as u32);
            *c += 1;
        }
    }
    let mut offsets = huge_vec((1usize << w) + 1, 0u32);
    let mut positions = huge_vec(n, 0u32);
    let mut cnt = vec![0u32; (1usize << lb) + 1];
    for p in 0..np {
        let (s, e) = (pc[p] as usize, pc[p + 1] as usize);
        let part = &tmp[s..e];
        cnt.fill(0);
        for &(lo, _) in part {
            cnt[lo as usize + 1] += 1;
        }
        for j in 1..cnt.len() {
            cnt[j] += cnt[j - 1];
        }
        let base = p << lb;
        for (j, o) in offsets[base..base + (1usize << lb)].iter_mut().enumerate() {
            *o = s as u32 + cnt[j];
        }
        for &(lo, i) in part {
            let c = &mut cnt[lo as usize];
            positions[s + *c as usize] = i;
            *c += 1;
        }
    }
    offsets[1usize << w] = n as u32;
    (offsets, positions)
}

/// The sketch of an entry in table `t`: the low [`SKETCH_BITS`] of its key in the next table
/// (table 0 after the last).
#[inline(always)]
pub(crate) fn sketch_of(plan: &ChunkPlan, h: &[u64; 4], t: usize) -> u32 {
    plan.key(h, (t + 1) % plan.len()) & ((1 << SKETCH_BITS) - 1)
}

/// Table 0's sketches (its slots are the entries themselves) where its buckets are large (12
/// or more entries on average: reading ~30 bytes of sketches instead of ~500 of hashes per
/// bucket at 1 M entries; with buckets of ~5 at 10 M, reading the hashes is as fast); none with
/// `CONSENTRY_INDEX_NO_SKETCH=1` or `CONSENTRY_INDEX_WIDE_DIR=1`.
fn implicit_sketches(hashes: &[H], plan: &ChunkPlan) -> Positions {
    if *NO_SKETCH || *WIDE_DIR || !sketch_table0(hashes.len(), plan) {
        return Positions::none();
    }
    use rayon::prelude::*;
    let mut sk = huge_vec(hashes.len(), 0u16);
    sk.par_chunks_mut(1 << 16)
        .zip(hashes.par_chunks(1 << 16))
        .for_each(|(d, h)| d.iter_mut().zip(h).for_each(|(d, h)| *d = sketch_of(plan, &h.0, 0) as u16));
    Positions::Implicit { sk }
}

/// Whether table 0 of a segment of `n` entries holds sketches.
fn sketch_table0(n: usize, plan: &ChunkPlan) -> bool {
    large_buckets(n, plan.widths[0])
}

/// Whether the buckets of `n` entries under keys of `width` bits hold 12 or more entries on
/// average (~15 at 1 M entries and 16 bits; ~2–5 at 10 M and 21–22 bits).
#[inline(always)]
fn large_buckets(n: usize, width: u32) -> bool {
    n >> width >= 12
}
/// Table `t`'s positions with each entry's sketch beside it. The sketches are computed in entry
/// order first (a sequential pass), then gathered in list order from that 2-byte array.
fn sketch_positions(hashes: &[H], plan: &ChunkPlan, t: usize, positions: Vec<u32>) -> Positions {
    let sk: Vec<u16> = hashes.iter().map(|h| sketch_of(plan, &h.0, t) as u16).collect();
    Positions::with_sketches(positions, |p| sk[p as usize])
}

/// log2 of the buckets per block of a compact directory.
pub(crate) const DIR_BLOCK_BITS: u32 = 8;

/// A table's directory: where each of its `2^width` buckets starts, plus the end.
///
/// `Compact` halves the memory of the plain form (2 bytes per bucket instead of 4,
/// plus 4 bytes per block of 256 buckets): bucket `k` starts at
/// `base[k >> 8] + rel[k]`. Its `base` array (1/128 of `rel`'s size) stays in the
/// cache, so a probe still costs one random read. A table falls back to `Wide`
/// when one block holds more than 65,535 entries (e.g. many identical hashes
/// accepted on purpose) or its key is narrower than a block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    /// `2^width + 1` bucket starts.
    Wide(Vec<u32>),
    /// `base`: `2^width / 256 + 1` block starts; `rel`: `2^width + 1` starts relative to their block.
    Compact { base: Vec<u32>, rel: Vec<u16> },
}

impl Dir {
    /// The compact form of `offsets` (`2^width + 1` starts) when it fits, else `offsets` as is.
    /// Any input is accepted: a non-monotone directory (a corrupt file) stays `Wide` and is
    /// refused by [`Segment::validate`].
    pub fn from_offsets(offsets: Vec<u32>) -> Dir {
        let buckets = offsets.len().saturating_sub(1);
        let bsz = 1usize << DIR_BLOCK_BITS;
        if buckets < bsz || !buckets.is_power_of_two() || *WIDE_DIR {
            return Dir::Wide(offsets);
        }
        let nblocks = buckets >> DIR_BLOCK_BITS;
        let mut base = Vec::with_capacity(nblocks + 1);
        let mut rel = huge_vec(buckets + 1, 0u16);
        for (j, block) in offsets[..buckets].chunks_exact(bsz).enumerate() {
            let b = block[0];
            base.push(b);
            for (r, &o) in rel[j * bsz..(j + 1) * bsz].iter_mut().zip(block) {
                match o.checked_sub(b).and_then(|d| u16::try_from(d).ok()) {
                    Some(d) => *r = d,
                    None => return Dir::Wide(offsets),
                }
            }
        }
        base.push(offsets[buckets]);
        Dir::Compact { base, rel }
    }

    /// Number of bucket starts held (`2^width + 1`).
    pub fn len(&self) -> usize {
        match self {
            Dir::Wide(o) => o.len(),
            Dir::Compact { rel, .. } => rel.len(),
        }
    }

    /// Start of bucket `k` (`k == 2^width`: the end of the last bucket).
    #[inline(always)]
    pub fn get(&self, k: usize) -> u32 {
        match self {
            Dir::Wide(o) => o[k],
            Dir::Compact { base, rel } => base[k >> DIR_BLOCK_BITS] + u32::from(rel[k]),
        }
    }

    /// The entry range of bucket `k`.
    #[inline(always)]
    pub fn range(&self, k: usize) -> (u32, u32) {
        (self.get(k), self.get(k + 1))
    }

    /// Address of bucket `k`'s slot, for prefetching.
    #[inline(always)]
    pub fn slot_ptr(&self, k: usize) -> *const u8 {
        match self {
            Dir::Wide(o) => o.as_ptr().wrapping_add(k) as *const u8,
            Dir::Compact { rel, .. } => rel.as_ptr().wrapping_add(k) as *const u8,
        }
    }

    pub fn heap_bytes(&self) -> usize {
        match self {
            Dir::Wide(o) => o.capacity() * 4,
            Dir::Compact { base, rel } => base.capacity() * 4 + rel.capacity() * 2,
        }
    }

    /// The plain form (for tests).
    #[cfg(test)]
    pub fn to_offsets(&self) -> Vec<u32> {
        (0..self.len()).map(|k| self.get(k)).collect()
    }

    /// Checks that the starts are `0 ..= n`, non-decreasing, and that a compact form is well formed.
    fn validate(&self, buckets: usize, n: usize) -> Result<(), String> {
        if self.len() != buckets + 1 {
            return Err("directory size".into());
        }
        if let Dir::Compact { base, rel } = self {
            if buckets < (1 << DIR_BLOCK_BITS) || base.len() != (buckets >> DIR_BLOCK_BITS) + 1 {
                return Err("compact directory: block count".into());
            }
            // each block's first bucket starts at its base, so base and rel agree
            if (0..base.len()).any(|j| rel[j << DIR_BLOCK_BITS] != 0) {
                return Err("compact directory: block start".into());
            }
            if base.windows(2).any(|w| w[0] > w[1]) || base.iter().any(|&b| b as usize > n) {
                return Err("compact directory: block bases".into());
            }
        }
        if self.get(0) != 0 || self.get(buckets) as usize != n {
            return Err("directory bounds".into());
        }
        // Non-decreasing and at most `n`, checked form by form (u64 sums: a corrupt base + rel must
        // not wrap around).
        let monotone = match self {
            Dir::Wide(o) => o.windows(2).all(|w| w[0] <= w[1]),
            Dir::Compact { base, rel } => {
                let bsz = 1usize << DIR_BLOCK_BITS;
                // within a block the starts are base + rel: rel non-decreasing; across blocks the
                // last start of a block is at most the next block's base (its first start, rel 0)
                rel.chunks(bsz).all(|b| b.windows(2).all(|w| w[0] <= w[1]))
                    && base.windows(2).enumerate().all(|(j, w)| {
                        u64::from(w[0]) + u64::from(rel[((j + 1) << DIR_BLOCK_BITS) - 1]) <= u64::from(w[1])
                    })
                    && u64::from(base[base.len() - 1]) + u64::from(rel[buckets]) <= n as u64
            }
        };
        if !monotone {
            return Err("directory not monotone".into());
        }
        Ok(())
    }
}

/// A table's entry indices grouped by key: 3 bytes each when the segment has at most 2^24
/// entries (every segment up to 16.7 M entries), else 4; each followed by the entry's
/// sketch (see the module documentation) in the `S` forms (the forms a segment is built with).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Positions {
    U32(Vec<u32>),
    /// Little-endian 3-byte indices, then one zero byte so that a 4-byte read of the last one
    /// stays in bounds.
    U24(Vec<u8>),
    /// Little-endian 3-byte indices as in `U24`, and the sketch of each slot.
    S24 {
        pos: Vec<u8>,
        sk: Vec<u16>,
    },
    /// Indices of 4 bytes, and the sketch of each slot.
    S32 {
        pos: Vec<u32>,
        sk: Vec<u16>,
    },
    /// Table 0's: slot `i` is entry `i` (the entries are sorted by key 0), so only the sketch of
    /// each entry is held (computed when the segment is built or loaded, never saved).
    Implicit {
        sk: Vec<u16>,
    },
}
/// Little-endian 3-byte forms of `v`, then one zero byte (so that a 4-byte read of the last
/// one stays in bounds).
fn u24_bytes(v: &[u32]) -> Vec<u8> {
    let mut b = huge_vec(v.len() * 3 + 1, 0u8);
    for (c, &p) in b.chunks_exact_mut(3).zip(v) {
        c.copy_from_slice(&p.to_le_bytes()[..3]);
    }
    b
}

#[inline(always)]
fn read_u24(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(b[3 * i..3 * i + 4].try_into().unwrap()) & 0xff_ffff
}

/// The AVX2 sketch check of both searches: two mask bits per 16-bit lane of the 16 sketches at
/// `p`, set where the sketch is within `lim` (each lane the same limit) bits of `q` — its bits
/// counted per nibble with a table lookup, then summed per lane with one `maddubs`.
///
/// # Safety
/// The CPU supports AVX2, and 16 sketches can be read at `p`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn sketches_within(
    p: *const u16,
    q: std::arch::x86_64::__m256i,
    lim: std::arch::x86_64::__m256i,
) -> u32 {
    use std::arch::x86_64::*;
    // SAFETY: the caller's guarantees.
    unsafe {
        // bits set in each nibble
        let lut = _mm256_setr_epi8(
            0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
        );
        let nib = _mm256_set1_epi8(0x0f);
        let x = _mm256_xor_si256(_mm256_loadu_si256(p as *const __m256i), q);
        let lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(x, nib));
        let hi = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(x, 4), nib));
        let bits = _mm256_maddubs_epi16(_mm256_add_epi8(lo, hi), _mm256_set1_epi8(1));
        !(_mm256_movemask_epi8(_mm256_cmpgt_epi16(bits, lim)) as u32) & 0x5555_5555
    }
}

/// [`sketches_within`] over the 32 sketches at `p`, of which the first `len` (1 to 32) are a
/// bucket's: two mask bits per slot, none past the bucket.
///
/// # Safety
/// The CPU supports AVX2, and 32 sketches can be read at `p`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn sketches32_within(
    p: *const u16,
    len: usize,
    q: std::arch::x86_64::__m256i,
    lim: std::arch::x86_64::__m256i,
) -> u64 {
    // SAFETY: the caller's guarantees.
    let (a, b) = unsafe { (sketches_within(p, q, lim), sketches_within(p.add(16), q, lim)) };
    (u64::from(a) | u64::from(b) << 32) & (u64::MAX >> (64 - 2 * len))
}

/// Calls `keep(slot)` for every slot `j` in `s..e` whose sketch `sk[j]` is within `allow` bits
/// of `qs`. With `AVX2`, 16 sketches at a time, or 32 when the buckets are `wide` (holding
/// 12 or more slots on average: a bucket of up to 32 then takes one step, with no branch on its
/// length); the last slots of `sk` one by one.
///
/// # Safety
/// `AVX2` only on a CPU with AVX2.
#[inline(always)]
unsafe fn filter_sketches<const AVX2: bool>(
    sk: &[u16],
    s: usize,
    e: usize,
    qs: u32,
    allow: i32,
    wide: bool,
    mut keep: impl FnMut(usize),
) {
    let mut j = s;
    #[cfg(target_arch = "x86_64")]
    if AVX2 {
        use std::arch::x86_64::*;
        // SAFETY: the caller guarantees AVX2; every 16-slot read ends at or before sk.len().
        unsafe {
            let q = _mm256_set1_epi16(qs as u16 as i16);
            let lim = _mm256_set1_epi16(allow.clamp(-1, 16) as i16);
            let within = |at: usize| sketches_within(sk.as_ptr().add(at), q, lim);
            while wide && j < e && j + 32 <= sk.len() {
                let mut m = sketches32_within(sk.as_ptr().add(j), (e - j).min(32), q, lim);
                while m != 0 {
                    keep(j + m.trailing_zeros() as usize / 2);
                    m &= m - 1;
                }
                j += 32;
            }
            while j < e && j + 16 <= sk.len() {
                let mut m = within(j);
                if e - j < 16 {
                    m &= (1u32 << (2 * (e - j))) - 1;
                }
                while m != 0 {
                    keep(j + m.trailing_zeros() as usize / 2);
                    m &= m - 1;
                }
                j += 16;
            }
        }
    }
    while j < e {
        if (u32::from(sk[j]) ^ qs).count_ones() as i32 <= allow {
            keep(j);
        }
        j += 1;
    }
}

/// One run of a batch sweep (see `Segment::search_join`) over a sketched table: for every packed
/// probe of `run`, the bucket of its key XOR `f` (`range(k)` gives a bucket's slots `s..e`) is
/// checked by `check(s, len, sketch)`, which returns a mask of the slots within the limit
/// (`SLOT_BITS` bits per slot, the lowest set), or `None` for a bucket it does not take, whose
/// probe is pushed to `rest` for the caller. The slots found are pushed to `cands` with the
/// probe's query. Each probe prefetches the bucket `AHEAD` probes on.
#[inline(always)]
fn sweep_run<const SLOT_BITS: u32>(
    run: &[u64],
    f: u32,
    range: impl Fn(usize) -> (u32, u32),
    sk: &[u16],
    check: impl Fn(usize, usize, u32) -> Option<u64>,
    cands: &mut Vec<(u32, u32)>,
    rest: &mut Vec<u64>,
) {
    for (i, &pr) in run.iter().enumerate() {
        if let Some(&ahead) = run.get(i + AHEAD) {
            let (a, _) = range((JoinQuery::key(ahead) ^ f) as usize);
            prefetch(sk.as_ptr().wrapping_add(a as usize));
        }
        let (s, e) = range((JoinQuery::key(pr) ^ f) as usize);
        let (s, len) = (s as usize, (e - s) as usize);
        let Some(mut m) = check(s, len, JoinQuery::sketch(pr)) else {
            rest.push(pr);
            continue;
        };
        while m != 0 {
            cands.push(((s + (m.trailing_zeros() / SLOT_BITS) as usize) as u32, JoinQuery::query(pr)));
            m &= m - 1;
        }
    }
}

/// [`sweep_run`] with AVX2: a bucket of up to 32 slots is checked 32 sketches at a time, in one
/// branch-free step; buckets of more than 32 slots, or ending within 32 slots of the array's end,
/// are left to the caller.
///
/// # Safety
/// The CPU supports AVX2; every `range(k)` for a key of a probe XOR `f`, and for the probe
/// `AHEAD` further on, is within `sk` and `s <= e`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt")]
unsafe fn sweep_run_avx2(
    run: &[u64],
    f: u32,
    range: impl Fn(usize) -> (u32, u32),
    sk: &[u16],
    allow: i32,
    cands: &mut Vec<(u32, u32)>,
    rest: &mut Vec<u64>,
) {
    use std::arch::x86_64::*;
    let lim = _mm256_set1_epi16(allow.clamp(-1, 16) as i16);
    let n = sk.len();
    let p = sk.as_ptr();
    let check = |s: usize, len: usize, qs: u32| {
        if len == 0 {
            return Some(0);
        }
        if len > 32 || s + 32 > n {
            return None;
        }
        let q = _mm256_set1_epi16(qs as u16 as i16);
        // SAFETY: AVX2 (this function's feature); `s + 32 <= n` (just above).
        Some(unsafe { sketches32_within(p.add(s), len, q, lim) })
    };
    sweep_run::<2>(run, f, range, sk, check, cands, rest)
}

/// [`sweep_run`] with AVX-512: a bucket of up to 32 sketches is one masked 64-byte read (the slots
/// past the bucket are not read, so a bucket near the array's end needs no other path), one XOR,
/// one popcount of each 16-bit lane and one compare into a bit mask; buckets of more than 32 slots
/// are left to the caller.
///
/// # Safety
/// The CPU supports AVX-512 F, BW and BITALG; every `range(k)` for a key of a probe XOR `f`, and
/// for the probe `AHEAD` further on, is within `sk` and `s <= e`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bitalg,popcnt")]
unsafe fn sweep_run_avx512(
    run: &[u64],
    f: u32,
    range: impl Fn(usize) -> (u32, u32),
    sk: &[u16],
    allow: i32,
    cands: &mut Vec<(u32, u32)>,
    rest: &mut Vec<u64>,
) {
    use std::arch::x86_64::*;
    let lim = _mm512_set1_epi16(allow.clamp(-1, 16) as i16);
    let p = sk.as_ptr();
    let check = |s: usize, len: usize, qs: u32| {
        if len > 32 {
            return None;
        }
        let slots: __mmask32 = ((1u64 << len) - 1) as u32;
        // SAFETY: AVX-512 (this function's features); the masked read touches the bucket's
        // `len` slots only, which lie within `sk` (the caller's guarantee).
        let m = unsafe {
            let x = _mm512_xor_si512(
                _mm512_maskz_loadu_epi16(slots, p.add(s) as *const i16),
                _mm512_set1_epi16(qs as u16 as i16),
            );
            _mm512_mask_cmple_epi16_mask(slots, _mm512_popcnt_epi16(x), lim)
        };
        Some(u64::from(m))
    };
    sweep_run::<1>(run, f, range, sk, check, cands, rest)
}

/// One run of a batch sweep with [`sweep_run_avx512`] if `avx512`, else [`sweep_run_avx2`].
///
/// # Safety
/// The CPU supports AVX2, and AVX-512 F, BW and BITALG if `avx512`; the ranges as for
/// [`sweep_run_avx2`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)] // the kernels' seven and the choice between them
unsafe fn sweep_run_simd(
    run: &[u64],
    f: u32,
    range: impl Fn(usize) -> (u32, u32),
    sk: &[u16],
    allow: i32,
    avx512: bool,
    cands: &mut Vec<(u32, u32)>,
    rest: &mut Vec<u64>,
) {
    // SAFETY: the caller's guarantees.
    unsafe {
        if avx512 {
            sweep_run_avx512(run, f, range, sk, allow, cands, rest)
        } else {
            sweep_run_avx2(run, f, range, sk, allow, cands, rest)
        }
    }
}

/// Bits of the next table's key kept beside each position (the sketch).
pub(crate) const SKETCH_BITS: u32 = 16;

impl Positions {
    pub fn none() -> Positions {
        Positions::U32(Vec::new())
    }

    /// The sketched form of `v`, each index `p` with `sketch(p)`: indices of 3 bytes when
    /// every index fits 24 bits, else 4. `CONSENTRY_INDEX_NO_SKETCH=1` (benchmarks) and
    /// `CONSENTRY_INDEX_WIDE_DIR=1` keep the plain forms.
    pub fn with_sketches(v: Vec<u32>, sketch: impl Fn(u32) -> u16) -> Positions {
        if *NO_SKETCH || *WIDE_DIR {
            return Positions::from_u32(v);
        }
        let narrow = v.len() <= 1 << 24 && v.iter().all(|&p| p < 1 << 24);
        Positions::sketched_form(v, sketch, narrow)
    }

    /// `v` with its sketches, its indices in 3 bytes (`narrow`: every index below 2^24) or 4.
    fn sketched_form(v: Vec<u32>, sketch: impl Fn(u32) -> u16, narrow: bool) -> Positions {
        let mut sk = huge_vec(v.len(), 0u16);
        for (d, &p) in sk.iter_mut().zip(&v) {
            *d = sketch(p);
        }
        if narrow {
            Positions::S24 { pos: u24_bytes(&v), sk }
        } else {
            Positions::S32 { pos: v, sk }
        }
    }

    /// The sketched form of version 3 snapshots' records: each index (3 bytes if `narrow`,
    /// else 4, little-endian) followed by its 2-byte sketch.
    pub fn from_records(records: &[u8], narrow: bool) -> Positions {
        let stride = if narrow { 5 } else { 6 };
        let n = records.len() / stride;
        let mut sk = huge_vec(n, 0u16);
        for (d, r) in sk.iter_mut().zip(records.chunks_exact(stride)) {
            *d = u16::from_le_bytes([r[stride - 2], r[stride - 1]]);
        }
        if narrow {
            let mut pos = huge_vec(3 * n + 1, 0u8);
            for (d, r) in pos.chunks_exact_mut(3).zip(records.chunks_exact(stride)) {
                d.copy_from_slice(&r[..3]);
            }
            Positions::S24 { pos, sk }
        } else {
            let mut pos = huge_vec(n, 0u32);
            for (d, r) in pos.iter_mut().zip(records.chunks_exact(stride)) {
                *d = u32::from_le_bytes([r[0], r[1], r[2], r[3]]);
            }
            Positions::S32 { pos, sk }
        }
    }

    /// The narrow form when every index fits 24 bits.
    pub fn from_u32(v: Vec<u32>) -> Positions {
        if v.len() > 1 << 24 || v.iter().any(|&p| p >= 1 << 24) || *WIDE_DIR {
            return Positions::U32(v);
        }
        Positions::U24(u24_bytes(&v))
    }

    pub fn len(&self) -> usize {
        match self {
            Positions::U32(v) => v.len(),
            Positions::U24(b) => b.len().saturating_sub(1) / 3,
            Positions::S24 { sk, .. } | Positions::S32 { sk, .. } | Positions::Implicit { sk } => sk.len(),
        }
    }

    /// The indices as a plain vector.
    pub fn to_vec(&self) -> Vec<u32> {
        (0..self.len()).map(|i| self.get(i)).collect()
    }

    /// The sketch of every slot, where the form holds them.
    #[inline(always)]
    pub fn sketches(&self) -> Option<&[u16]> {
        match self {
            Positions::S24 { sk, .. } | Positions::S32 { sk, .. } | Positions::Implicit { sk } => Some(sk),
            _ => None,
        }
    }

    /// Whether the records carry sketches.
    pub fn sketched(&self) -> bool {
        matches!(self, Positions::S24 { .. } | Positions::S32 { .. } | Positions::Implicit { .. })
    }

    /// The largest index held (`None` when empty).
    pub fn max(&self) -> Option<u32> {
        match self {
            Positions::U32(v) => v.iter().copied().max(),
            Positions::S32 { pos, .. } => pos.iter().copied().max(),
            Positions::Implicit { sk } => sk.len().checked_sub(1).map(|m| m as u32),
            Positions::U24(_) | Positions::S24 { .. } => (0..self.len()).map(|i| self.get(i)).max(),
        }
    }

    #[inline(always)]
    pub fn get(&self, i: usize) -> u32 {
        match self {
            Positions::U32(v) => v[i],
            Positions::U24(b) | Positions::S24 { pos: b, .. } => read_u24(b, i),
            Positions::S32 { pos, .. } => pos[i],
            Positions::Implicit { .. } => i as u32,
        }
    }

    /// Index and sketch of slot `i` (sketch 0 in the plain forms; for tests: the search decodes
    /// the records in a loop per form).
    #[cfg(test)]
    pub fn get_sketched(&self, i: usize) -> (u32, u32) {
        match self {
            Positions::S24 { sk, .. } | Positions::S32 { sk, .. } | Positions::Implicit { sk } => {
                (self.get(i), u32::from(sk[i]))
            }
            _ => (self.get(i), 0),
        }
    }

    /// Address of slot `i`, for prefetching.
    #[inline(always)]
    pub fn slot_ptr(&self, i: usize) -> *const u8 {
        match self {
            Positions::U32(v) => v.as_ptr().wrapping_add(i) as *const u8,
            Positions::U24(b) => b.as_ptr().wrapping_add(3 * i),
            // what a search reads first: the sketch
            Positions::S24 { sk, .. } | Positions::S32 { sk, .. } | Positions::Implicit { sk } => {
                sk.as_ptr().wrapping_add(i) as *const u8
            }
        }
    }

    /// Address of slot `i`'s index, for prefetching.
    #[inline(always)]
    pub fn index_ptr(&self, i: usize) -> *const u8 {
        match self {
            Positions::U32(v) | Positions::S32 { pos: v, .. } => v.as_ptr().wrapping_add(i) as *const u8,
            Positions::U24(b) | Positions::S24 { pos: b, .. } => b.as_ptr().wrapping_add(3 * i),
            // nothing to read: the slot is the entry
            Positions::Implicit { sk } => sk.as_ptr() as *const u8,
        }
    }

    /// Calls `keep(slot)` for every slot in `s..e` whose sketch is within `allow` bits of `qs`
    /// (every slot in the plain forms, which carry no sketch): in a sketched table an entry can
    /// be within the radius through this table only if the two-chunk condition can hold, and
    /// the sketch's distance is at most the next chunk's.
    ///
    /// # Safety
    /// `AVX2` only on a CPU with AVX2.
    #[inline(always)]
    pub unsafe fn filter<const AVX2: bool>(
        &self,
        s: usize,
        e: usize,
        qs: u32,
        allow: i32,
        wide: bool,
        keep: impl FnMut(usize),
    ) {
        match self {
            // SAFETY: the caller's guarantee about AVX2, passed on.
            Positions::S24 { sk, .. } | Positions::S32 { sk, .. } | Positions::Implicit { sk } => unsafe {
                filter_sketches::<AVX2>(sk, s, e, qs, allow, wide, keep)
            },
            _ => (s..e).for_each(keep),
        }
    }

    pub fn heap_bytes(&self) -> usize {
        match self {
            Positions::U32(v) => v.capacity() * 4,
            Positions::U24(b) => b.capacity(),
            Positions::S24 { pos, sk } => pos.capacity() + 2 * sk.capacity(),
            Positions::S32 { pos, sk } => 4 * pos.capacity() + 2 * sk.capacity(),
            Positions::Implicit { sk } => 2 * sk.capacity(),
        }
    }
}

/// A segment's entry ids: 4 bytes each when every id is below 2^32 (store ids are counters),
/// else 8.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Ids {
    U64(Vec<u64>),
    U32(Vec<u32>),
}

impl Ids {
    pub fn from_u64(v: Vec<u64>) -> Ids {
        if v.iter().all(|&id| id <= u64::from(u32::MAX)) && !*WIDE_DIR {
            let mut n = huge_vec(v.len(), 0u32);
            for (d, &id) in n.iter_mut().zip(&v) {
                *d = id as u32;
            }
            Ids::U32(n)
        } else {
            Ids::U64(v)
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Ids::U64(v) => v.len(),
            Ids::U32(v) => v.len(),
        }
    }

    #[inline(always)]
    pub fn get(&self, i: usize) -> u64 {
        match self {
            Ids::U64(v) => v[i],
            Ids::U32(v) => u64::from(v[i]),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    pub fn heap_bytes(&self) -> usize {
        match self {
            Ids::U64(v) => v.capacity() * 8,
            Ids::U32(v) => v.capacity() * 4,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Table {
    /// `2^width + 1` bucket starts.
    pub dir: Dir,
    /// Entry index for each slot; empty for table 0 (implicit: entries are sorted by key 0).
    pub positions: Positions,
}

/// Immutable segment.
#[derive(Clone, Debug)]
pub(crate) struct Segment {
    pub hashes: Vec<H>,
    pub ids: Ids,
    /// `None` for a scan-only segment.
    pub plan: Option<ChunkPlan>,
    pub tables: Vec<Table>,
    /// The smallest radius from which a scan is expected to be cheaper than probing
    /// ([`Segment::scan_is_cheaper`], computed once: it costs ~100 ns, a fifth of a search at
    /// radius 0).
    scan_from: u32,
}

/// Asks the CPU to bring the cache line at `p` closer (a hint: any address is fine). Shared
/// with `consentry-derive`'s descriptor scan through [`crate::prefetch`].
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    prefetch_to::<HINT_L1, T>(p)
}

/// [`prefetch`] into the level-2 cache only.
#[inline(always)]
fn prefetch_l2<T>(p: *const T) {
    prefetch_to::<HINT_L2, T>(p)
}

/// x86's prefetch hints (`_MM_HINT_T0`, `_MM_HINT_T1`): into every cache level, into L2 and
/// beyond.
const HINT_L1: i32 = 3;
const HINT_L2: i32 = 2;

#[inline(always)]
fn prefetch_to<const HINT: i32, T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint; it never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<HINT>(p as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

thread_local! {
    /// Probe / non-empty bucket / candidate counters (for benchmarks).
    pub(crate) static STATS: std::cell::Cell<[u64; 3]> = const { std::cell::Cell::new([0; 3]) };
}

/// Per-thread scratch buffers for a search.
#[derive(Default)]
pub(crate) struct Scratch {
    probes: Vec<(u32, u32)>,
    /// (table, start, end, the probe's distance on the table's chunk, pipeline step)
    ranges: Vec<(u32, u32, u32, i32, u32)>,
    cands: Vec<(u32, u32)>,
}

/// Part `k` of `of` of the tables a search probes ([`Segment::search_join`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    pub k: usize,
    pub of: usize,
}

impl Part {
    /// All the tables.
    pub const WHOLE: Part = Part { k: 0, of: 1 };

    /// This part's share of the probed tables (those of the `m` whose radius in `rhos` is not
    /// negative): with `p` of them, the `k·p/of`-th up to the `(k+1)·p/of`-th, so the parts
    /// take each once and as many as they can alike.
    pub fn tables(self, m: usize, rhos: &[i32]) -> Vec<usize> {
        debug_assert!(self.k < self.of);
        let probed: Vec<usize> = (0..m).filter(|&t| rhos[t] >= 0).collect();
        let p = probed.len();
        probed[self.k * p / self.of..(self.k + 1) * p / self.of].to_vec()
    }
}

/// Scratch buffers for [`Segment::search_join`].
#[derive(Default)]
pub(crate) struct JoinScratch {
    qkeys: Vec<[u32; MAX_CHUNKS]>,
    /// The queries packed ([`JoinQuery`]), sorted by their key on the table searched.
    sorted: Vec<u64>,
    tmp: Vec<u64>,
    /// The flip masks of a table's ball.
    masks: Vec<u32>,
    cands: Vec<(u32, u32)>,
    /// Probes left to the general loop by the AVX2 kernel.
    rest: Vec<u64>,
    /// Where each block's queries start in `sorted`.
    starts: Vec<u32>,
    /// A sparse table's probes (the queries' keys XOR a flip mask), sorted by key.
    probes: Vec<u64>,
    /// The AVX2 kernel even where the CPU has AVX-512 (for tests).
    pub(crate) avx2_only: bool,
}

/// A batch search takes a table's key space in blocks whose lists span about this many bytes
/// (`Segment::search_join`): 64 KiB measured best at 10 M entries (1.05× 16 KiB, 1.14× 256 KiB,
/// 1.3× one block), alike at 1 M.
const JOIN_BLOCK_BYTES: usize = 64 * 1024;

/// A table is probed by sorted probes instead of blocks when a batch makes fewer probes than one
/// per this many buckets (100 M entries, 2,000 queries: ~1 per 15 buckets, sorted probes 1.2× the
/// blocks; 10 M, 5,000 queries: ~1 per 2, blocks 1.7× sorted probes).
const SPARSE_PROBES: usize = 4;

/// Whether a batch of `n` queries probing `ball` keys each in a table of `width`-bit keys
/// probes it sparsely (see [`SPARSE_PROBES`]).
fn sparse(n: usize, ball: usize, width: u32) -> bool {
    n * ball * SPARSE_PROBES < 1 << width
}

/// Probes sorted at once in a sparse table (two buffers of 32 MiB).
const JOIN_PROBES: usize = 1 << 22;

/// A query of a batch search packed in a u64, sorted on its key: bits 0..16 the query's index
/// in the block, 16..32 its sketch of the next table, 32.. its key on the table searched (at
/// most 26 bits).
struct JoinQuery;

impl JoinQuery {
    const KEY_SHIFT: u32 = 32;
    const MAX_QUERIES: usize = 1 << 16;

    #[inline(always)]
    fn pack(key: u32, sketch: u32, query: u32) -> u64 {
        debug_assert!(key < 1 << MAX_WIDTH && sketch < 1 << 16 && query < 1 << 16);
        u64::from(key) << Self::KEY_SHIFT | u64::from(sketch) << 16 | u64::from(query)
    }
    #[inline(always)]
    fn key(p: u64) -> u32 {
        (p >> Self::KEY_SHIFT) as u32
    }
    #[inline(always)]
    fn sketch(p: u64) -> u32 {
        (p >> 16) as u32 & 0xffff
    }
    #[inline(always)]
    fn query(p: u64) -> u32 {
        p as u32 & 0xffff
    }
}

/// Sorts `v` by bits `from..from + bits` of each value (a least-significant-digit radix sort,
/// one pass per 11 bits or fewer; stable, so equal keys keep their order).
fn sort_by_bits(v: &mut Vec<u64>, tmp: &mut Vec<u64>, from: u32, bits: u32) {
    let passes = bits.div_ceil(11).max(1);
    let digit = bits.div_ceil(passes);
    let mut count = vec![0usize; 1 << digit];
    let mut shift = from;
    let mut left = bits;
    while left > 0 {
        let db = digit.min(left);
        let mask = (1u64 << db) - 1;
        count[..1 << db].fill(0);
        for &x in v.iter() {
            count[((x >> shift) & mask) as usize] += 1;
        }
        let mut sum = 0;
        for c in count[..1 << db].iter_mut() {
            let n = *c;
            *c = sum;
            sum += n;
        }
        // every slot is written below: only growth is zeroed
        tmp.resize(v.len(), 0);
        for &x in v.iter() {
            let b = ((x >> shift) & mask) as usize;
            tmp[count[b]] = x;
            count[b] += 1;
        }
        std::mem::swap(v, tmp);
        shift += db;
        left -= db;
    }
}

impl Segment {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// A segment of these parts (the search's scan threshold computed here).
    pub fn assemble(hashes: Vec<H>, ids: Ids, plan: Option<ChunkPlan>, tables: Vec<Table>) -> Segment {
        let mut seg = Segment { hashes, ids, plan, tables, scan_from: 0 };
        seg.scan_from = (0..=256).find(|&r| seg.scan_is_cheaper(r)).unwrap_or(257);
        seg
    }

    /// Builds a segment from entries (any order).
    pub fn build(ids: Vec<u64>, hashes: Vec<H>) -> Segment {
        let n = ids.len();
        let plan = if n < SCAN_ONLY_BELOW { None } else { Some(ChunkPlan::for_len(n)) };
        Self::build_with(ids, hashes, plan)
    }

    /// Builds a segment with this chunk plan (`None`: scan-only).
    pub fn build_with(mut ids: Vec<u64>, mut hashes: Vec<H>, plan: Option<ChunkPlan>) -> Segment {
        assert_eq!(ids.len(), hashes.len());
        let n = ids.len();
        assert!(n < u32::MAX as usize, "a segment holds fewer than 2^32 entries");
        let Some(plan) = plan else {
            return Segment::assemble(hashes, Ids::from_u64(ids), None, Vec::new());
        };
        let trace = std::env::var_os("CONSENTRY_INDEX_TRACE").is_some();
        let t0 = std::time::Instant::now();
        let m = plan.len();
        // Table 0: sort the entries by key 0 (its lists are then implicit).
        let (off0, perm) = csr(&hashes, &plan, 0);
        {
            let mut h2 = huge_vec(n, H::default());
            for (d, &p) in h2.iter_mut().zip(&perm) {
                *d = hashes[p as usize];
            }
            hashes = h2;
            let mut i2 = huge_vec(n, 0u64);
            for (d, &p) in i2.iter_mut().zip(&perm) {
                *d = ids[p as usize];
            }
            ids = i2;
        }
        drop(perm);
        if trace {
            eprintln!("build: table 0 + reorder {:?}", t0.elapsed());
        }
        let positions = implicit_sketches(&hashes, &plan);
        let mut tables = vec![Table { dir: Dir::from_offsets(off0), positions }];
        let rest: Vec<Table> = {
            use rayon::prelude::*;
            (1..m)
                .into_par_iter()
                .map(|t| {
                    let (offsets, positions) = csr(&hashes, &plan, t);
                    Table {
                        dir: Dir::from_offsets(offsets),
                        positions: sketch_positions(&hashes, &plan, t, positions),
                    }
                })
                .collect()
        };
        tables.extend(rest);
        if trace {
            eprintln!("build: all tables {:?}", t0.elapsed());
        }
        Segment::assemble(hashes, Ids::from_u64(ids), Some(plan), tables)
    }

    /// Whether a table lacks the sketches this build would give it (a snapshot of version 2 or
    /// earlier).
    pub fn needs_sketches(&self) -> bool {
        let Some(plan) = &self.plan else { return false };
        let table0 = sketch_table0(self.len(), plan);
        !*NO_SKETCH
            && !*WIDE_DIR
            && self.tables.iter().enumerate().any(|(t, tab)| !tab.positions.sketched() && (t > 0 || table0))
    }
    /// Gives every table its sketches (table 0's are never saved: a loaded segment gets them
    /// here).
    pub fn add_sketches(&mut self) {
        let Some(plan) = &self.plan else { return };
        let hashes = &self.hashes;
        use rayon::prelude::*;
        self.tables.par_iter_mut().enumerate().filter(|(_, tab)| !tab.positions.sketched()).for_each(
            |(t, tab)| {
                tab.positions = if t == 0 {
                    implicit_sketches(hashes, plan)
                } else {
                    sketch_positions(hashes, plan, t, tab.positions.to_vec())
                }
            },
        );
    }

    /// Bytes of heap memory held.
    pub fn heap_bytes(&self) -> usize {
        self.hashes.capacity() * 32
            + self.ids.heap_bytes()
            + self.tables.iter().map(|t| t.dir.heap_bytes() + t.positions.heap_bytes()).sum::<usize>()
    }

    /// Whether a search at radius `r` scans the segment instead of probing its tables.
    #[inline]
    pub fn prefers_scan(&self, r: u32) -> bool {
        r >= self.scan_from
    }

    /// Estimated cost of a multi-index search vs a scan; true when scanning is cheaper (the cost
    /// grows with the radius, so this holds from one radius on).
    fn scan_is_cheaper(&self, r: u32) -> bool {
        let Some(plan) = &self.plan else { return true };
        let rhos = plan.rhos(r);
        let n = self.len() as f64;
        let mut cost = 0.0;
        for (t, &w) in plan.widths.iter().enumerate() {
            let b = ball_size(w, rhos[t]);
            cost += b * (1.5 + n / (1u64 << w) as f64);
        }
        // a random access costs roughly as much as scanning 16 hashes
        cost * 16.0 > n
    }

    /// Calls `out(position, distance)` once for every entry within `r` of `q`.
    pub fn search(&self, q: &[u64; 4], r: u32, scratch: &mut Scratch, out: &mut impl FnMut(u32, u32)) {
        if self.prefers_scan(r) {
            scan::scan(&self.hashes, q, r, 0, out);
        } else {
            self.search_mih(q, r, scratch, out);
        }
    }

    /// Multi-index search (exact for any radius; slow for large ones).
    pub fn search_mih(&self, q: &[u64; 4], r: u32, scratch: &mut Scratch, out: &mut impl FnMut(u32, u32)) {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: the CPU supports AVX2 and popcnt (checked just above).
            unsafe { self.search_mih_avx2(q, r, scratch, out) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("popcnt") {
            // SAFETY: the CPU supports popcnt (checked just above).
            unsafe { self.search_mih_popcnt(q, r, scratch, out) };
            return;
        }
        self.search_mih_generic::<false>(q, r, scratch, out)
    }

    /// The search compiled with AVX2 and popcnt: sketches are checked 16 at a time.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "popcnt,avx2")]
    unsafe fn search_mih_avx2(
        &self,
        q: &[u64; 4],
        r: u32,
        scratch: &mut Scratch,
        out: &mut impl FnMut(u32, u32),
    ) {
        self.search_mih_generic::<true>(q, r, scratch, out)
    }

    /// The search compiled with the popcnt instruction: without it the candidates' distances
    /// and chunk checks use a multi-instruction bit-count sequence.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "popcnt")]
    unsafe fn search_mih_popcnt(
        &self,
        q: &[u64; 4],
        r: u32,
        scratch: &mut Scratch,
        out: &mut impl FnMut(u32, u32),
    ) {
        self.search_mih_generic::<false>(q, r, scratch, out)
    }

    /// The multi-index search. `AVX2` is true only in the instance compiled for AVX2
    /// (`search_mih_avx2`, called once the CPU is known to have it).
    #[inline(always)]
    fn search_mih_generic<const AVX2: bool>(
        &self,
        q: &[u64; 4],
        r: u32,
        scratch: &mut Scratch,
        out: &mut impl FnMut(u32, u32),
    ) {
        let plan = self.plan.as_ref().expect("indexed segment");
        let m = plan.len();
        let rhos = plan.rhos(r);
        let mut qkeys = [0u32; MAX_CHUNKS];
        for (t, k) in qkeys.iter_mut().enumerate().take(m) {
            *k = plan.key(q, t);
        }
        let Scratch { probes, ranges, cands } = scratch;
        probes.clear();
        ranges.clear();
        cands.clear();
        for t in 0..m {
            for_ball(qkeys[t], plan.widths[t], rhos[t], &mut |k| probes.push((t as u32, k)));
        }
        let mut qsk = [0u32; MAX_CHUNKS];
        for (t, x) in qsk.iter_mut().enumerate().take(m) {
            *x = qkeys[(t + 1) % m] & ((1 << SKETCH_BITS) - 1);
        }
        // A software pipeline over the probes, a fixed number of reads ahead: at step `i` the
        // directory slot of probe `i` is prefetched, probe `i - AHEAD`'s bucket is read from its
        // directory (its list prefetched), and the lists read at least `AHEAD` steps ago are
        // expanded into candidates (their hashes prefetched). Prefetching every probe of the
        // query first would overflow the L1 cache and the CPU's miss buffers in bursts.
        let np = probes.len();
        let d_ahead = AHEAD.min(np.max(1));
        let mut next_range = 0;
        for i in 0..np + 2 * d_ahead {
            if let Some(&(t, k)) = probes.get(i) {
                prefetch(self.tables[t as usize].dir.slot_ptr(k as usize));
            }
            if i >= d_ahead {
                if let Some(&(t, k)) = probes.get(i - d_ahead) {
                    let tab = &self.tables[t as usize];
                    let (s, e) = tab.dir.range(k as usize);
                    if s < e {
                        // the bucket's first and last lines (a list of 16-bit keys holds ~15
                        // records at 1 M entries: 75 bytes, often across two lines)
                        if t == 0 && !tab.positions.sketched() {
                            prefetch(self.hashes.as_ptr().wrapping_add(s as usize));
                            prefetch(self.hashes.as_ptr().wrapping_add(e as usize - 1));
                        } else {
                            prefetch(tab.positions.slot_ptr(s as usize));
                            prefetch(tab.positions.slot_ptr(e as usize - 1).wrapping_add(4));
                        }
                        ranges.push((t, s, e, (k ^ qkeys[t as usize]).count_ones() as i32, i as u32));
                    }
                }
            }
            while let Some(&(t, s, e, d, at)) = ranges.get(next_range) {
                if at as usize + d_ahead > i && i < np + d_ahead {
                    break;
                }
                next_range += 1;
                // In a sketched table an entry goes on only if the two-chunk condition can
                // hold (the sketch's distance is at most the next chunk's).
                let t = t as usize;
                let allow = rhos[t] + rhos[(t + 1) % m] + 1 - d;
                // the slots whose sketch passes (their indices are read in stage 4, prefetched)
                // SAFETY: `AVX2` only in the AVX2 instance (see above).
                unsafe {
                    let wide = self.wide_buckets(t);
                    self.tables[t].positions.filter::<AVX2>(
                        s as usize,
                        e as usize,
                        qsk[t],
                        allow,
                        wide,
                        |j| {
                            cands.push((t as u32, j as u32));
                        },
                    )
                };
            }
        }
        STATS.with(|st| {
            let mut v = st.get();
            v[0] += probes.len() as u64;
            v[1] += ranges.len() as u64;
            v[2] += cands.len() as u64;
            st.set(v);
        });
        // Stage 4: verify; report each entry through its ring start (one table per entry). A
        // candidate is an entry of table 0 or a slot of another table: its index is read (two
        // steps ahead, prefetched), then its hash (one step ahead, prefetched).
        let entry =
            |t: u32, j: u32| if t == 0 { j } else { self.tables[t as usize].positions.get(j as usize) };
        for i in 0..cands.len() {
            if let Some(&(t, j)) = cands.get(i + 2 * AHEAD) {
                if t > 0 {
                    prefetch(self.tables[t as usize].positions.index_ptr(j as usize));
                }
            }
            if let Some(&(t, j)) = cands.get(i + AHEAD) {
                prefetch(self.hashes.as_ptr().wrapping_add(entry(t, j) as usize));
            }
            let (t, j) = cands[i];
            let p = entry(t, j);
            if let Some(d) = self.reported(plan, q, &qkeys, &rhos, r, t as usize, p) {
                out(p, d);
            }
        }
    }

    /// The distance of entry `p` to query `q` when it is within `r` and table `t` is its ring
    /// start (the one table that reports it); `None` otherwise.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn reported(
        &self,
        plan: &ChunkPlan,
        q: &[u64; 4],
        qkeys: &[u32; MAX_CHUNKS],
        rhos: &[i32; MAX_CHUNKS],
        r: u32,
        t: usize,
        p: u32,
    ) -> Option<u32> {
        let h = &self.hashes[p as usize].0;
        let d = scan::dist(q, h);
        (d <= r && ring_start(plan, h, qkeys, rhos) == t).then_some(d)
    }

    /// Searches for many queries at once (`qs` in storage bit order), calling
    /// `out(query index, position, distance)` once for every entry within `r` of each — the
    /// same entries [`Segment::search_mih`] finds for each query alone.
    ///
    /// Table by table, the queries are sorted by their key, and the buckets within the ball of
    /// each are probed flip mask by flip mask: for one mask the probed keys are the sorted keys
    /// XOR the mask, so the directory and the lists are read block by block of the key space
    /// (a block's lines are read into the cache once for all the probes that land in it), where
    /// one query's probes are random reads. A table that the batch probes sparsely (fewer
    /// probes than one per `SPARSE_PROBES` buckets) has all its probes packed and sorted by key
    /// instead. With AVX2 a bucket of up to 32 slots is checked in one step, without a branch on
    /// its length (`sweep_run_avx2`); with AVX-512 BITALG in one masked read, popcount and compare
    /// (`sweep_run_avx512`).
    ///
    /// With a `part` other than [`Part::WHOLE`], only that share of the tables is searched: the
    /// entries whose ring start is one of them. The parts of a split together find every entry
    /// within `r` once, so they can run on different threads for the same queries, each table
    /// still taken once for all of them (split by queries instead, every table pass would hold
    /// a thread's share: at 1 M entries a pass for 10,000 queries is ~1.3–1.6× as fast per query
    /// as one for 5,000).
    pub fn search_join(
        &self,
        qs: &[[u64; 4]],
        r: u32,
        part: Part,
        sc: &mut JoinScratch,
        out: &mut impl FnMut(u32, u32, u32),
    ) {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: the CPU supports AVX2 and popcnt (checked just above).
            unsafe { self.search_join_avx2(qs, r, part, sc, out) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("popcnt") {
            // SAFETY: the CPU supports popcnt (checked just above).
            unsafe { self.search_join_popcnt(qs, r, part, sc, out) };
            return;
        }
        self.search_join_generic::<false>(qs, r, part, sc, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "popcnt,avx2")]
    unsafe fn search_join_avx2(
        &self,
        qs: &[[u64; 4]],
        r: u32,
        part: Part,
        sc: &mut JoinScratch,
        out: &mut impl FnMut(u32, u32, u32),
    ) {
        self.search_join_generic::<true>(qs, r, part, sc, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "popcnt")]
    unsafe fn search_join_popcnt(
        &self,
        qs: &[[u64; 4]],
        r: u32,
        part: Part,
        sc: &mut JoinScratch,
        out: &mut impl FnMut(u32, u32, u32),
    ) {
        self.search_join_generic::<false>(qs, r, part, sc, out)
    }

    /// The batch search; `AVX2` as in [`Segment::search_mih_generic`].
    #[inline(always)]
    fn search_join_generic<const AVX2: bool>(
        &self,
        qs: &[[u64; 4]],
        r: u32,
        part: Part,
        sc: &mut JoinScratch,
        out: &mut impl FnMut(u32, u32, u32),
    ) {
        let plan = self.plan.as_ref().expect("indexed segment");
        assert!(qs.len() <= JoinQuery::MAX_QUERIES, "at most 2^16 queries at once");
        let m = plan.len();
        let rhos = plan.rhos(r);
        let JoinScratch { qkeys, sorted, tmp, masks, cands, rest, starts, probes, avx2_only } = sc;
        #[cfg(target_arch = "x86_64")]
        let avx512 = AVX2 && !*avx2_only && has_avx512();
        qkeys.clear();
        qkeys.extend(qs.iter().map(|q| {
            let mut k = [0u32; MAX_CHUNKS];
            for (t, x) in k.iter_mut().enumerate().take(m) {
                *x = plan.key(q, t);
            }
            k
        }));
        let hashes = &self.hashes;
        let mask = (1u32 << SKETCH_BITS) - 1;
        for t in part.tables(m, &rhos) {
            let width = plan.widths[t];
            let next = (t + 1) % m;
            let tab = &self.tables[t];
            let wide = self.wide_buckets(t);
            let unsketched0 = t == 0 && !tab.positions.sketched();
            // the queries sorted by their key on this table, each packed with its sketch of
            // the next table (everything the list check needs of it)
            sorted.clear();
            sorted.extend(
                qkeys.iter().enumerate().map(|(qi, k)| JoinQuery::pack(k[t], k[next] & mask, qi as u32)),
            );
            sort_by_bits(sorted, tmp, JoinQuery::KEY_SHIFT, width);
            masks.clear();
            for_ball(0, width, rhos[t], &mut |f| masks.push(f));
            cands.clear();
            // Probes a run of packed queries (or probes) on the buckets of their keys XOR `f`:
            // the slots whose sketch is within `allow` go to `cands` (table 0's hashes, where it
            // holds no sketches, are verified in place).
            let mut probe_run = |run: &[u64], f: u32, allow: i32| {
                let mut run = run;
                #[cfg(target_arch = "x86_64")]
                if let Some(sk) = tab.positions.sketches().filter(|_| AVX2) {
                    rest.clear();
                    // SAFETY: AVX2 (this instance). Keys and `f` are below 2^width, so `k + 1` is a
                    // slot of the directory (2^width + 1 of them; `base` holds one start per
                    // block and the end), and a validated directory's buckets are within the
                    // sketches.
                    unsafe {
                        match &tab.dir {
                            Dir::Compact { base, rel } => sweep_run_simd(
                                run,
                                f,
                                |k| {
                                    let at = |k: usize| {
                                        base.get_unchecked(k >> DIR_BLOCK_BITS)
                                            + u32::from(*rel.get_unchecked(k))
                                    };
                                    (at(k), at(k + 1))
                                },
                                sk,
                                allow,
                                avx512,
                                cands,
                                rest,
                            ),
                            Dir::Wide(o) => sweep_run_simd(
                                run,
                                f,
                                |k| (*o.get_unchecked(k), *o.get_unchecked(k + 1)),
                                sk,
                                allow,
                                avx512,
                                cands,
                                rest,
                            ),
                        }
                    }
                    // what the kernel left: buckets of more than 32 slots, or near the end
                    run = rest.as_slice();
                }
                for (i, &pr) in run.iter().enumerate() {
                    // the bucket `AHEAD` probes on: its list (or hashes) prefetched
                    if let Some(&ahead) = run.get(i + AHEAD) {
                        let a = tab.dir.get((JoinQuery::key(ahead) ^ f) as usize) as usize;
                        if unsketched0 {
                            prefetch(hashes.as_ptr().wrapping_add(a));
                        } else {
                            prefetch(tab.positions.slot_ptr(a));
                        }
                    }
                    let (s, e) = tab.dir.range((JoinQuery::key(pr) ^ f) as usize);
                    if s == e {
                        continue;
                    }
                    let qi = JoinQuery::query(pr);
                    if unsketched0 {
                        // table 0's buckets are ranges of the hashes themselves: verified in place
                        for p in s..e {
                            if let Some(d) =
                                self.reported(plan, &qs[qi as usize], &qkeys[qi as usize], &rhos, r, 0, p)
                            {
                                out(qi, p, d);
                            }
                        }
                        continue;
                    }
                    // the slots whose sketch passes (their indices are read below, prefetched)
                    // SAFETY: `AVX2` only in the AVX2 instance.
                    unsafe {
                        tab.positions.filter::<AVX2>(
                            s as usize,
                            e as usize,
                            JoinQuery::sketch(pr),
                            allow,
                            wide,
                            |j| cands.push((j as u32, qi)),
                        )
                    };
                }
            };
            let allow_at = |d: u32| rhos[t] + rhos[next] + 1 - d as i32;
            if sparse(sorted.len(), masks.len(), width) {
                // Sparse (a large table, a small batch): blocks would share no lines, so every
                // probe is packed and all are sorted by key, one distance class at a time (its
                // sketch limit is one), in runs of at most JOIN_PROBES probes.
                masks.sort_unstable_by_key(|f| f.count_ones());
                for class in masks.chunk_by(|a, b| a.count_ones() == b.count_ones()) {
                    for part in sorted.chunks((JOIN_PROBES / class.len()).max(1)) {
                        probes.clear();
                        for &q in part {
                            probes.extend(class.iter().map(|&f| q ^ u64::from(f) << JoinQuery::KEY_SHIFT));
                        }
                        sort_by_bits(probes, tmp, JoinQuery::KEY_SHIFT, width);
                        probe_run(probes, 0, allow_at(class[0].count_ones()));
                    }
                }
            } else {
                // The key space in blocks of 2^cb buckets whose lists take ~64 KiB: the probes
                // of one block are made together, so its lines are read into the cache once.
                // For a flip mask `f`, the queries probing block `c` are those of block
                // `c ^ (f >> cb)`, a run of `sorted`.
                let per_bucket = (self.len() >> width).max(1);
                let cb = (JOIN_BLOCK_BYTES / 2 / per_bucket).max(1).ilog2().clamp(1, width);
                let nblocks = 1usize << (width - cb);
                starts.clear();
                starts.resize(nblocks + 1, 0);
                for &pr in sorted.iter() {
                    starts[(JoinQuery::key(pr) >> cb) as usize + 1] += 1;
                }
                for b in 0..nblocks {
                    starts[b + 1] += starts[b];
                }
                // The sketches of block `c` if its probes are at least as many as its lines
                // (else each probe's own prefetch serves): their range.
                let dense = |c: usize| {
                    let (a, b) = (tab.dir.get(c << cb) as usize, tab.dir.get((c + 1) << cb) as usize);
                    let landing: u32 = masks
                        .iter()
                        .map(|&f| c ^ (f >> cb) as usize)
                        .map(|x| starts[x + 1] - starts[x])
                        .sum();
                    (landing as usize * 32 >= b - a).then_some((a, b))
                };
                let sk = tab.positions.sketches();
                let mut here = sk.and_then(|_| dense(0));
                for c in 0..nblocks {
                    // A dense block's sketches are brought into L2 while the block before is
                    // probed, a share with each flip mask's run (1.02–1.15× at 1 M entries with
                    // batches of 10,000 on both threads, 2026-12-07, AMD EPYC), and into L1 line
                    // by line before its own probes (each probe also prefetches its own bucket a
                    // few probes ahead: 1.07–1.1× at 1 M and 10 M).
                    let coming = sk.filter(|_| c + 1 < nblocks).and_then(|_| dense(c + 1));
                    if let (Some(sk), Some((a, b))) = (sk, here) {
                        for x in (a..b).step_by(32) {
                            prefetch(sk.as_ptr().wrapping_add(x));
                        }
                    }
                    for (mi, &f) in masks.iter().enumerate() {
                        if let (Some(sk), Some((a, b))) = (sk, coming) {
                            let per = (b - a).div_ceil(32).div_ceil(masks.len()) * 32;
                            for x in (a + mi * per..(a + (mi + 1) * per).min(b)).step_by(32) {
                                prefetch_l2(sk.as_ptr().wrapping_add(x));
                            }
                        }
                        let src = c ^ (f >> cb) as usize;
                        probe_run(
                            &sorted[starts[src] as usize..starts[src + 1] as usize],
                            f,
                            allow_at(f.count_ones()),
                        );
                    }
                    here = coming;
                }
            }
            // the candidates' indices, then their hashes, are random reads: a pipeline of
            // prefetches ahead (the index two steps ahead, the hash one step)
            for i in 0..cands.len() {
                if let Some(&(j, _)) = cands.get(i + 2 * AHEAD) {
                    prefetch(tab.positions.index_ptr(j as usize));
                }
                if let Some(&(j, _)) = cands.get(i + AHEAD) {
                    prefetch(hashes.as_ptr().wrapping_add(tab.positions.get(j as usize) as usize));
                }
                let (j, qi) = cands[i];
                let p = tab.positions.get(j as usize);
                if let Some(d) = self.reported(plan, &qs[qi as usize], &qkeys[qi as usize], &rhos, r, t, p) {
                    out(qi, p, d);
                }
            }
        }
    }

    /// How many of the tables a batch search of `n` queries within `r` probes densely (by blocks
    /// of the key space, not by sorted probes; see [`Segment::search_join`]): 0 for a segment
    /// without tables.
    pub fn dense_tables(&self, n: usize, r: u32) -> usize {
        self.plan.as_ref().map_or(0, |p| {
            let rhos = p.rhos(r);
            (0..p.len())
                .filter(|&t| {
                    rhos[t] >= 0 && !sparse(n, ball_size(p.widths[t], rhos[t]) as usize, p.widths[t])
                })
                .count()
        })
    }

    /// Whether table `t`'s buckets hold 12 or more entries on average (their sketches are then
    /// checked 32 at a time).
    #[inline(always)]
    fn wide_buckets(&self, t: usize) -> bool {
        self.plan.as_ref().is_some_and(|p| large_buckets(self.len(), p.widths[t]))
    }
    /// Checks the structural invariants (used after loading a file).
    pub fn validate(&self) -> Result<(), String> {
        let n = self.len();
        if self.hashes.len() != n {
            return Err("hash and id counts differ".into());
        }
        match &self.plan {
            None => {
                if !self.tables.is_empty() {
                    return Err("scan-only segment with tables".into());
                }
            }
            Some(plan) => {
                if plan.widths.iter().sum::<u32>() != 256 || self.tables.len() != plan.len() {
                    return Err("chunk plan does not cover 256 bits".into());
                }
                // The tables, and table 0's implicit buckets, checked in parallel: at 10 M entries
                // this reads ~0.8 GB, and it is most of the time a snapshot takes to load.
                use rayon::prelude::*;
                let tables = || {
                    self.tables.par_iter().enumerate().try_for_each(|(t, tab)| {
                        tab.dir
                            .validate(1usize << plan.widths[t], n)
                            .map_err(|e| format!("table {t}: {e}"))?;
                        if t == 0 {
                            match &tab.positions {
                                Positions::U32(v) if v.is_empty() => {}
                                Positions::Implicit { sk } if sk.len() == n => {}
                                _ => return Err("table 0 has positions".into()),
                            }
                        } else if tab.positions.len() != n
                            || tab.positions.max().is_some_and(|m| m as usize >= n)
                        {
                            return Err(format!("table {t}: positions"));
                        }
                        Ok(())
                    })
                };
                // table 0's buckets (ranges of entries) must hold exactly the entries of their key
                let sorted = || {
                    let dir = &self.tables[0].dir;
                    let buckets = 1usize << plan.widths[0];
                    if dir.len() != buckets + 1 {
                        return false; // reported by the directory check
                    }
                    (0..buckets).into_par_iter().with_min_len(1 << 14).all(|k| {
                        let (a, b) = (dir.get(k) as usize, dir.get(k + 1) as usize);
                        a <= b && b <= n && self.hashes[a..b].iter().all(|h| plan.key(&h.0, 0) as usize == k)
                    })
                };
                let (tables, sorted) = rayon::join(tables, sorted);
                tables?;
                if !sorted {
                    return Err("entries not sorted by chunk 0".into());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::Rng;

    #[test]
    fn extract_matches_bit_by_bit() {
        let w = [0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210, 0xdead_beef_0bad_f00d, 0x5555_aaaa_3333_cccc];
        let bit = |i: u32| (w[(i / 64) as usize] >> (63 - i % 64)) & 1;
        for start in 0..256u32 {
            for width in 1..=32u32 {
                if start + width > 256 {
                    continue;
                }
                let want = (0..width).fold(0u64, |acc, i| (acc << 1) | bit(start + i)) as u32;
                assert_eq!(extract(&w, start, width), want, "start {start} width {width}");
            }
        }
    }

    /// Bucket starts for `buckets` buckets holding `sizes` entries each (cycled).
    fn starts(buckets: usize, sizes: &[u32]) -> Vec<u32> {
        let mut v = vec![0u32];
        for k in 0..buckets {
            v.push(v[k] + sizes[k % sizes.len()]);
        }
        v
    }

    #[test]
    fn compact_directory_holds_the_same_starts_in_half_the_memory() {
        for sizes in [&[0u32][..], &[1, 0, 3, 0, 0, 2], &[255, 0, 1], &[0, 0, 0, 0, 0, 0, 0, 7]] {
            let plain = starts(1 << 12, sizes);
            let n = *plain.last().unwrap() as usize;
            let dir = Dir::from_offsets(plain.clone());
            assert!(matches!(dir, Dir::Compact { .. }), "sizes {sizes:?}");
            assert_eq!(dir.to_offsets(), plain);
            for k in 0..1 << 12 {
                assert_eq!(dir.range(k), (plain[k], plain[k + 1]));
            }
            dir.validate(1 << 12, n).unwrap();
            assert!(dir.heap_bytes() * 2 <= Dir::Wide(plain).heap_bytes() + 64);
        }
    }

    #[test]
    fn a_crowded_block_or_a_narrow_key_keeps_the_plain_directory() {
        // one block of 256 buckets holding 65,536 entries no longer fits u16 starts
        let mut sizes = vec![0u32; 300];
        sizes[10] = 65_000;
        sizes[200] = 536;
        let plain = starts(1 << 10, &sizes);
        assert!(matches!(Dir::from_offsets(plain.clone()), Dir::Wide(ref o) if *o == plain));
        // 65,535 in one block still fits
        sizes[200] = 535;
        assert!(matches!(Dir::from_offsets(starts(1 << 10, &sizes)), Dir::Compact { .. }));
        // fewer buckets than a block
        assert!(matches!(Dir::from_offsets(starts(128, &[1])), Dir::Wide(_)));
        // not monotone (a corrupt file): kept as is, and refused
        let mut bad = starts(1 << 10, &[2]);
        bad[700] = 1;
        let dir = Dir::from_offsets(bad);
        assert!(matches!(dir, Dir::Wide(_)));
        assert!(dir.validate(1 << 10, 2048).is_err());
    }

    #[test]
    fn narrow_positions_and_ids_hold_the_same_values() {
        let v: Vec<u32> = (0..5000u32).map(|i| i.wrapping_mul(2_654_435_761) % (1 << 24)).collect();
        let p = Positions::from_u32(v.clone());
        assert!(matches!(p, Positions::U24(_)));
        assert_eq!(p.len(), v.len());
        assert!((0..v.len()).all(|i| p.get(i) == v[i]));
        assert!(p.heap_bytes() < v.len() * 4);
        // an index of 2^24 or more keeps 4 bytes
        let mut w = v.clone();
        w[17] = 1 << 24;
        assert!(matches!(Positions::from_u32(w.clone()), Positions::U32(ref x) if *x == w));
        assert_eq!(Positions::from_u32(Vec::new()).len(), 0);

        let ids: Vec<u64> = (0..1000u64).map(|i| i * 4_000_000).collect();
        let narrow = Ids::from_u64(ids.clone());
        assert!(matches!(narrow, Ids::U32(_)));
        assert_eq!(narrow.iter().collect::<Vec<_>>(), ids);
        let mut big = ids.clone();
        big[999] = u64::from(u32::MAX) + 1;
        let wide = Ids::from_u64(big.clone());
        assert!(matches!(wide, Ids::U64(_)));
        assert_eq!(wide.iter().collect::<Vec<_>>(), big);
    }

    #[test]
    fn sketched_positions_hold_each_index_and_its_sketch() {
        let v: Vec<u32> = (0..5000u32).map(|i| i.wrapping_mul(2_654_435_761) % (1 << 24)).collect();
        let sk = |p: u32| (p ^ (p >> 7)) as u16;
        let narrow = Positions::with_sketches(v.clone(), sk);
        assert!(matches!(narrow, Positions::S24 { .. }) && narrow.sketched());
        assert_eq!(narrow.len(), v.len());
        assert_eq!(narrow.heap_bytes(), 5 * v.len() + 1);
        assert!((0..v.len())
            .all(|i| narrow.get(i) == v[i] && narrow.get_sketched(i) == (v[i], u32::from(sk(v[i])))));
        // an index of 2^24 or more: 6-byte records
        let mut w = v.clone();
        w[17] = (1 << 24) + 5;
        w[4999] = u32::MAX - 1;
        let wide = Positions::with_sketches(w.clone(), sk);
        assert!(matches!(wide, Positions::S32 { .. }) && wide.sketched());
        assert_eq!(wide.len(), w.len());
        assert!(
            (0..w.len()).all(|i| wide.get(i) == w[i] && wide.get_sketched(i) == (w[i], u32::from(sk(w[i]))))
        );
        assert_eq!(wide.max(), Some(u32::MAX - 1));
        // version 3 snapshots' interleaved records give the same positions
        for (p, stride, narrow) in [(&narrow, 5, true), (&wide, 6, false)] {
            let src = if narrow { &v } else { &w };
            let records: Vec<u8> = src
                .iter()
                .flat_map(|&x| {
                    let mut r = x.to_le_bytes()[..stride - 2].to_vec();
                    r.extend(sk(x).to_le_bytes());
                    r
                })
                .collect();
            assert_eq!(&Positions::from_records(&records, narrow), p);
        }
        assert!(!Positions::from_u32(v).sketched());
    }

    #[test]
    fn sketch_filters_agree_with_the_definition() {
        let mut rng = Rng(5);
        let v: Vec<u32> = (0..1000).collect();
        let sketches: Vec<u16> = (0..1000).map(|_| rng.next() as u16).collect();
        let pos = Positions::with_sketches(v, |p| sketches[p as usize]);
        #[cfg(target_arch = "x86_64")]
        let avx2 = std::arch::is_x86_feature_detected!("avx2");
        #[cfg(not(target_arch = "x86_64"))]
        let avx2 = false;
        for case in 0..3000 {
            // buckets of every length up to 40, some ending at the array's last slots
            let len = (rng.next() % 41) as usize;
            let s = if case % 5 == 0 { 1000 - len } else { (rng.next() % (1001 - len as u64)) as usize };
            let e = s + len;
            let qs = rng.next() as u32 & 0xffff;
            let allow = (rng.next() % 20) as i32 - 2;
            let want: Vec<u32> = (s..e)
                .filter(|&j| (u32::from(sketches[j]) ^ qs).count_ones() as i32 <= allow)
                .map(|j| j as u32)
                .collect();
            let mut scalar = Vec::new();
            // SAFETY: the scalar instance.
            unsafe { pos.filter::<false>(s, e, qs, allow, case % 2 == 0, |j| scalar.push(j as u32)) };
            assert_eq!(scalar, want, "scalar, {s}..{e}");
            if avx2 {
                for wide in [false, true] {
                    let mut got = Vec::new();
                    // SAFETY: the CPU has AVX2 (checked above).
                    unsafe { pos.filter::<true>(s, e, qs, allow, wide, |j| got.push(j as u32)) };
                    assert_eq!(got, want, "AVX2, {s}..{e}, allow {allow}, wide {wide}");
                }
            }
        }
    }

    #[test]
    fn validate_refuses_a_corrupt_compact_directory() {
        let plain = starts(1 << 10, &[1, 2, 0]);
        let n = *plain.last().unwrap() as usize;
        let good = Dir::from_offsets(plain);
        good.validate(1 << 10, n).unwrap();
        let Dir::Compact { base, rel } = good else { panic!("compact expected") };
        let corrupt = |base: &Vec<u32>, rel: &Vec<u16>| Dir::Compact { base: base.clone(), rel: rel.clone() };
        let mut r = rel.clone();
        r[5] = 60_000; // a start beyond the next one
        assert!(corrupt(&base, &r).validate(1 << 10, n).is_err());
        let mut r = rel.clone();
        r[256] = 1; // a block's first bucket must start at the block's base
        assert!(corrupt(&base, &r).validate(1 << 10, n).is_err());
        let mut b = base.clone();
        b[2] = u32::MAX - 3; // would wrap around in u32 arithmetic
        assert!(corrupt(&b, &rel).validate(1 << 10, n).is_err());
        assert!(corrupt(&base[..3].to_vec(), &rel).validate(1 << 10, n).is_err());
        assert!(corrupt(&base, &rel).validate(1 << 11, n).is_err());
        // non-decreasing within every block, but a block's last start beyond the next block's base
        let mut r = rel.clone();
        r[255] = (base[1] - base[0] + 1) as u16;
        assert!(r[254] <= r[255]);
        assert!(corrupt(&base, &r).validate(1 << 10, n).is_err());
        let mut r = rel.clone();
        r[255] = (base[1] - base[0]) as u16; // at the next base: still valid (an empty last bucket)
        corrupt(&base, &r).validate(1 << 10, n).unwrap();
        // the end beyond the entry count
        let mut r = rel.clone();
        r[1 << 10] += 1;
        assert!(corrupt(&base, &r).validate(1 << 10, n).is_err());
    }

    #[test]
    fn validate_refuses_a_position_out_of_range_and_unsorted_entries() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            x ^ (x >> 29)
        };
        let n = 20_000;
        let hashes: Vec<H> = (0..n).map(|_| H([next(), next(), next(), next()])).collect();
        let good = Segment::build((0..n as u64).collect(), hashes);
        good.validate().unwrap();
        let plan = good.plan.clone().unwrap();
        for wide in [false, true] {
            for t in 1..plan.len() {
                let mut v = good.tables[t].positions.to_vec();
                v[n / 2] = n as u32; // one past the last entry
                let mut bad = good.clone();
                bad.tables[t].positions = if wide { Positions::U32(v) } else { Positions::from_u32(v) };
                let e = bad.validate().unwrap_err();
                assert!(e.contains(&format!("table {t}: positions")), "{e}");
            }
        }
        // two entries of different chunk-0 keys swapped: each is now outside its bucket
        let (a, b) = (10, n - 10);
        assert_ne!(plan.key(&good.hashes[a].0, 0), plan.key(&good.hashes[b].0, 0));
        let mut bad = good.clone();
        bad.hashes.swap(a, b);
        assert_eq!(bad.validate().unwrap_err(), "entries not sorted by chunk 0");
    }

    /// `h` with exactly `k` bits flipped (the crate's test generator works on `Hash256`).
    fn flip(h: &[u64; 4], k: u32, rng: &mut Rng) -> [u64; 4] {
        rng.flip(&crate::Hash256::from_words(*h), k).words()
    }

    #[test]
    fn the_ring_start_finds_the_entry_and_passes_every_run_condition() {
        let mut rng = Rng(5);
        for m in [10, 11, 13, 16, 26] {
            let plan = ChunkPlan::with_chunks(m);
            for r in 0..=64u32 {
                let rhos = plan.rhos(r);
                for _ in 0..60 {
                    let q = rng.hash().words();
                    let h = flip(&q, rng.below(u64::from(r + 1)) as u32, &mut rng);
                    let mut qkeys = [0u32; MAX_CHUNKS];
                    for (t, k) in qkeys.iter_mut().enumerate().take(m) {
                        *k = plan.key(&q, t);
                    }
                    let d = |j: usize| (plan.key(&h, j % m) ^ qkeys[j % m]).count_ones() as i32;
                    let i = ring_start(&plan, &h, &qkeys, &rhos);
                    assert!(i < m);
                    // every run of consecutive chunks from the start, around the ring
                    let mut sum = 0;
                    for l in 0..m {
                        sum += d(i + l) - rhos[(i + l) % m] - 1;
                        assert!(sum <= -1, "m {m} r {r} start {i} run {}", l + 1);
                    }
                    // so the start's probes hold it, and its sketch check lets it through
                    assert!(d(i) <= rhos[i]);
                    let sk = (sketch_of(&plan, &h, i) ^ sketch_of(&plan, &q, i)).count_ones() as i32;
                    assert!(d(i) + sk <= rhos[i] + rhos[(i + 1) % m] + 1);
                }
            }
        }
    }

    /// A copy of `seg` whose tables listed in `plain` keep positions without sketches.
    fn without_sketches(seg: &Segment, plain: impl Fn(usize) -> bool) -> Segment {
        let mut out = seg.clone();
        for (t, tab) in out.tables.iter_mut().enumerate() {
            if plain(t) {
                tab.positions =
                    if t == 0 { Positions::none() } else { Positions::from_u32(tab.positions.to_vec()) };
            }
        }
        out
    }

    #[test]
    fn sketched_tables_find_the_same_entries_from_far_fewer_candidates() {
        let mut rng = Rng(11);
        let n = 40_000;
        let mut hashes: Vec<H> = (0..n / 2).map(|_| H(rng.hash().words())).collect();
        // clusters of near-duplicates
        for _ in 0..n / 2 {
            let base = hashes[rng.below(500) as usize].0;
            let k = rng.below(40) as u32;
            hashes.push(H(flip(&base, k, &mut rng)));
        }
        let seg = Segment::build((0..n as u64).collect(), hashes.clone());
        let m = seg.plan.as_ref().unwrap().len();
        assert!(seg.tables.iter().skip(1).all(|t| t.positions.sketched()));
        // 15-bit keys over 40,000 entries: table 0's buckets are small, its hashes read as they are
        assert!(!seg.tables[0].positions.sketched());
        assert!(!seg.needs_sketches());
        // keys of 10-11 bits: ~20 entries per bucket, and table 0 holds sketches too
        let big =
            Segment::build_with((0..n as u64).collect(), hashes.clone(), Some(ChunkPlan::with_chunks(24)));
        assert!(matches!(&big.tables[0].positions, Positions::Implicit { sk } if sk.len() == n));
        assert!(!big.needs_sketches() && big.validate().is_ok());
        let mut reloaded = big.clone();
        reloaded.tables[0].positions = Positions::none();
        assert!(reloaded.needs_sketches());
        reloaded.add_sketches();
        assert_eq!(reloaded.tables[0].positions, big.tables[0].positions);
        let plain = without_sketches(&seg, |_| true);
        let mixed = without_sketches(&seg, |t| t % 2 == 1);
        // the 6-byte records of segments above 2^24 entries, on this small one
        let mut wide = seg.clone();
        let plan = seg.plan.clone().unwrap();
        for (t, tab) in wide.tables.iter_mut().enumerate().skip(1) {
            let sk = |p: u32| sketch_of(&plan, &seg.hashes[p as usize].0, t) as u16;
            tab.positions = Positions::sketched_form(tab.positions.to_vec(), sk, false);
            assert!(matches!(tab.positions, Positions::S32 { .. }));
        }
        assert!(plain.needs_sketches());
        let mut readded = mixed.clone();
        readded.add_sketches();
        assert_eq!(
            readded.tables.iter().map(|t| &t.positions).collect::<Vec<_>>(),
            seg.tables.iter().map(|t| &t.positions).collect::<Vec<_>>()
        );

        let mut queries: Vec<[u64; 4]> = (0..20).map(|_| rng.hash().words()).collect();
        for _ in 0..60 {
            let base = seg.hashes[rng.below(n as u64) as usize].0;
            let k = rng.below(48) as u32;
            queries.push(flip(&base, k, &mut rng));
        }
        let mut scratch = Scratch::default();
        let mut run = |s: &Segment, q: &[u64; 4], r: u32| {
            let mut got = Vec::new();
            s.search_mih(q, r, &mut scratch, &mut |p, d| got.push((s.ids.get(p as usize), d)));
            got.sort_unstable();
            got
        };
        let mut cands = [0u64; 5];
        let radii = [0, 5, 10, 16, 24, 31, 40, 64];
        let mut wants = Vec::new();
        for q in &queries {
            for r in radii {
                let mut want: Vec<(u64, u32)> = hashes
                    .iter()
                    .enumerate()
                    .filter_map(|(i, h)| {
                        let d = scan::dist(q, &h.0);
                        (d <= r).then_some((i as u64, d))
                    })
                    .collect();
                want.sort_unstable();
                for (k, s) in [&seg, &plain, &mixed, &wide, &big].into_iter().enumerate() {
                    STATS.with(|st| st.set([0; 3]));
                    assert_eq!(run(s, q, r), want, "segment {k} radius {r} ({m} chunks)");
                    if r == 31 {
                        cands[k] += STATS.with(|st| st.get())[2];
                    }
                }
                wants.push(want);
            }
        }
        // the batch search of all the queries at once finds the same, in every record form, and
        // without the AVX2 kernel (4), and with the AVX2 kernel where the CPU has AVX-512 (6)
        let mut js = JoinScratch::default();
        for (k, s) in [&seg, &plain, &mixed, &wide, &seg, &big, &seg, &big].into_iter().enumerate() {
            js.avx2_only = k >= 6;
            for (ri, &r) in radii.iter().enumerate() {
                let mut got = vec![Vec::new(); queries.len()];
                let mut found = |qi: u32, p: u32, d: u32| got[qi as usize].push((s.ids.get(p as usize), d));
                if k == 4 {
                    s.search_join_generic::<false>(&queries, r, Part::WHOLE, &mut js, &mut found)
                } else {
                    s.search_join(&queries, r, Part::WHOLE, &mut js, &mut found)
                }
                for (qi, g) in got.iter_mut().enumerate() {
                    g.sort_unstable();
                    assert_eq!(g, &wants[qi * radii.len() + ri], "join: segment {k} radius {r} query {qi}");
                }
            }
        }
        // at radius 31 the sketches leave table 0's candidates and a few others
        assert!(cands[0] * 4 < cands[1], "candidates sketched {} plain {}", cands[0], cands[1]);
        assert!(cands[0] < cands[2] && cands[2] < cands[1], "{cands:?}");
        assert_eq!(cands[3], cands[0], "the 6-byte records filter alike");
    }

    #[test]
    fn packed_queries_sort_by_their_key_bits_alone_and_stably() {
        let mut rng = Rng(5);
        for bits in [1, 10, 11, 12, 16, 21, 23, 26] {
            let v: Vec<u64> =
                (0..5000).map(|i| JoinQuery::pack(rng.below(1 << bits) as u32, 0xabcd, i)).collect();
            let (mut sorted, mut tmp) = (v.clone(), Vec::new());
            sort_by_bits(&mut sorted, &mut tmp, JoinQuery::KEY_SHIFT, bits);
            let mut want = v.clone();
            want.sort_by_key(|&p| JoinQuery::key(p)); // stable: equal keys keep the query order
            assert_eq!(sorted, want, "{bits} bits");
            let p = sorted[17];
            assert_eq!(JoinQuery::sketch(p), 0xabcd);
        }
    }

    #[test]
    fn rhos_satisfy_pigeonhole() {
        for m in 10..=MAX_CHUNKS {
            let plan = ChunkPlan::with_chunks(m);
            assert_eq!(plan.widths.iter().sum::<u32>(), 256);
            for r in 0..=64 {
                let rh = plan.rhos(r);
                let s: i32 = rh[..m].iter().map(|&x| x + 1).sum();
                assert_eq!(s, r as i32 + 1, "m {m} r {r}");
            }
        }
    }

    #[test]
    fn ball_enumeration_is_complete_and_unique() {
        for width in [5u32, 9] {
            for rho in -1..=3 {
                let mut seen = std::collections::HashSet::new();
                for_ball(0b10110 & ((1 << width) - 1), width, rho, &mut |k| {
                    assert!(k < (1 << width));
                    assert!(seen.insert(k), "duplicate {k}");
                });
                let want = (0..1u32 << width)
                    .filter(|k| ((k ^ (0b10110 & ((1 << width) - 1))).count_ones() as i32) <= rho)
                    .count();
                assert_eq!(seen.len(), want);
                assert_eq!(ball_size(width, rho) as usize, want);
            }
        }
    }
}
