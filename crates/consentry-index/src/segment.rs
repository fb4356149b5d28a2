//! One immutable segment: hashes, ids and the multi-index tables over them.
//!
//! Layout (n entries, m chunks):
//! * `hashes`: `n` × 32 bytes, 32-byte aligned, **sorted by the key of chunk 0**,
//!   so chunk 0's inverted lists are implicit (a bucket is a range of entries).
//! * `ids`: `n` × 8 bytes, parallel to `hashes`.
//! * for every chunk `t`: `offsets[t]` (CSR directory, `2^width + 1` u32) and,
//!   for `t > 0`, `positions[t]` (`n` u32, entry indices grouped by key).
//!
//! Search is exact by the generalised pigeonhole principle: the 256 bits are
//! partitioned into `m` chunks; if the chunk radii `rho_t` satisfy
//! `sum(rho_t + 1) >= r + 1`, any entry within distance `r` of the query is
//! within `rho_t` of the query on at least one chunk `t`, so it is in one of
//! the probed buckets. A candidate found through table `t` is reported only
//! if no earlier table would also have found it, so results need no
//! de-duplication set.

use crate::scan;

/// A hash stored 32-byte aligned, so one hash never straddles two cache lines.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[repr(C, align(32))]
pub(crate) struct H(pub [u64; 4]);

/// `CONSENTRY_INDEX_NO_THP=1` turns the huge-page advice off (for benchmarks).
static NO_THP: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::env::var_os("CONSENTRY_INDEX_NO_THP").is_some_and(|v| v == "1"));

/// A vector of `n` copies of `fill` whose pages the kernel is asked to back
/// with transparent huge pages (Linux, `madvise` mode): the tables are read at
/// random, and 2 MiB pages remove most TLB misses.
pub fn huge_vec<T: Copy>(n: usize, fill: T) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(n);
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
    v.resize(n, fill);
    v
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
        let mut starts = Vec::with_capacity(m);
        let mut s = 0;
        for &w in &widths {
            starts.push(s);
            s += w;
        }
        ChunkPlan { widths, starts }
    }

    /// The plan used for a segment of `n` entries: key width close to
    /// `log2(n)` (about one entry per bucket), capped by [`MAX_WIDTH`].
    pub fn for_len(n: usize) -> ChunkPlan {
        let lg = (n.max(2) as f64).log2().round() as u32;
        let target = lg.clamp(MIN_WIDTH, MAX_WIDTH);
        let mut m = (256.0 / f64::from(target)).round() as usize;
        // never wider than MAX_WIDTH
        while 256usize.div_ceil(m) > MAX_WIDTH as usize {
            m += 1;
        }
        ChunkPlan::with_chunks(m.clamp(1, MAX_CHUNKS))
    }

    pub fn len(&self) -> usize {
        self.widths.len()
    }

    /// Chunk radii for search radius `r`: `sum(rho + 1) = r + 1` (`-1` = not probed).
    /// The larger radii go to the wider chunks (fewer candidates per probe).
    pub fn rhos(&self, r: u32) -> [i32; MAX_CHUNKS] {
        let m = self.len() as u32;
        let total = r + 1;
        let base = (total / m) as i32;
        let extra = total % m;
        let mut out = [-1i32; MAX_CHUNKS];
        for (i, o) in out.iter_mut().enumerate().take(m as usize) {
            *o = base - 1 + i32::from((i as u32) < extra);
        }
        out
    }

    #[inline(always)]
    pub fn key(&self, h: &[u64; 4], t: usize) -> u32 {
        extract(h, self.starts[t], self.widths[t])
    }
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

#[derive(Clone, Debug)]
pub(crate) struct Table {
    /// `2^width + 1` bucket starts.
    pub offsets: Vec<u32>,
    /// Entry index for each slot; empty for table 0 (implicit: entries are sorted by key 0).
    pub positions: Vec<u32>,
}

/// Immutable segment.
#[derive(Clone, Debug)]
pub(crate) struct Segment {
    pub hashes: Vec<H>,
    pub ids: Vec<u64>,
    /// `None` for a scan-only segment.
    pub plan: Option<ChunkPlan>,
    pub tables: Vec<Table>,
}

/// Asks the CPU to bring the cache line at `p` closer (a hint: any address is fine). Shared
/// with `consentry-derive`'s descriptor scan through [`crate::prefetch`].
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint; it never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch(p as *const i8, core::arch::x86_64::_MM_HINT_T0);
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
    ranges: Vec<(u32, u32, u32)>,
    cands: Vec<(u32, u32)>,
}

impl Segment {
    pub fn len(&self) -> usize {
        self.ids.len()
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
            return Segment { hashes, ids, plan: None, tables: Vec::new() };
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
        let mut tables = vec![Table { offsets: off0, positions: Vec::new() }];
        let rest: Vec<Table> = {
            use rayon::prelude::*;
            (1..m)
                .into_par_iter()
                .map(|t| {
                    let (offsets, positions) = csr(&hashes, &plan, t);
                    Table { offsets, positions }
                })
                .collect()
        };
        tables.extend(rest);
        if trace {
            eprintln!("build: all tables {:?}", t0.elapsed());
        }
        Segment { hashes, ids, plan: Some(plan), tables }
    }

    /// Bytes of heap memory held.
    pub fn heap_bytes(&self) -> usize {
        self.hashes.capacity() * 32
            + self.ids.capacity() * 8
            + self.tables.iter().map(|t| (t.offsets.capacity() + t.positions.capacity()) * 4).sum::<usize>()
    }

    /// Estimated cost of a multi-index search vs a scan; true when scanning is cheaper.
    pub fn prefers_scan(&self, r: u32) -> bool {
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
        if std::arch::is_x86_feature_detected!("popcnt") {
            // SAFETY: the CPU supports popcnt (checked just above).
            unsafe { self.search_mih_popcnt(q, r, scratch, out) };
            return;
        }
        self.search_mih_generic(q, r, scratch, out)
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
        self.search_mih_generic(q, r, scratch, out)
    }

    #[inline(always)]
    fn search_mih_generic(
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
        // Stage 1: all probe keys, prefetching their directory slots.
        let Scratch { probes, ranges, cands } = scratch;
        probes.clear();
        ranges.clear();
        cands.clear();
        for t in 0..m {
            let off = &self.tables[t].offsets;
            for_ball(qkeys[t], plan.widths[t], rhos[t], &mut |k| {
                prefetch(off.as_ptr().wrapping_add(k as usize));
                probes.push((t as u32, k));
            });
        }
        // Stage 2: non-empty buckets, prefetching their first slots.
        for &(t, k) in probes.iter() {
            let tab = &self.tables[t as usize];
            let s = tab.offsets[k as usize];
            let e = tab.offsets[k as usize + 1];
            if s < e {
                if t == 0 {
                    prefetch(self.hashes.as_ptr().wrapping_add(s as usize));
                } else {
                    prefetch(tab.positions.as_ptr().wrapping_add(s as usize));
                }
                ranges.push((t, s, e));
            }
        }
        // Stage 3: candidate entries, prefetching their hashes.
        for &(t, s, e) in ranges.iter() {
            if t == 0 {
                for p in s..e {
                    cands.push((0, p));
                }
            } else {
                for &p in &self.tables[t as usize].positions[s as usize..e as usize] {
                    prefetch(self.hashes.as_ptr().wrapping_add(p as usize));
                    cands.push((t, p));
                }
            }
        }
        STATS.with(|st| {
            let mut v = st.get();
            v[0] += probes.len() as u64;
            v[1] += ranges.len() as u64;
            v[2] += cands.len() as u64;
            st.set(v);
        });
        // Stage 4: verify; report each entry through the first table that holds it.
        for &(t, p) in cands.iter() {
            let h = &self.hashes[p as usize].0;
            let d = scan::dist(q, h);
            if d <= r {
                let first = (0..t as usize)
                    .all(|j| rhos[j] < 0 || ((plan.key(h, j) ^ qkeys[j]).count_ones() as i32) > rhos[j]);
                if first {
                    out(p, d);
                }
            }
        }
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
                for (t, tab) in self.tables.iter().enumerate() {
                    if tab.offsets.len() != (1usize << plan.widths[t]) + 1 {
                        return Err(format!("table {t}: directory size"));
                    }
                    if tab.offsets[0] != 0 || *tab.offsets.last().unwrap() as usize != n {
                        return Err(format!("table {t}: directory bounds"));
                    }
                    if tab.offsets.windows(2).any(|w| w[0] > w[1]) {
                        return Err(format!("table {t}: directory not monotone"));
                    }
                    if t == 0 {
                        if !tab.positions.is_empty() {
                            return Err("table 0 has positions".into());
                        }
                    } else if tab.positions.len() != n || tab.positions.iter().any(|&p| p as usize >= n) {
                        return Err(format!("table {t}: positions"));
                    }
                }
                // bucket membership of table 0 (implicit) must match the keys
                let off = &self.tables[0].offsets;
                let mut k = 0usize;
                for (i, h) in self.hashes.iter().enumerate() {
                    while off[k + 1] as usize <= i {
                        k += 1;
                    }
                    if plan.key(&h.0, 0) as usize != k {
                        return Err("entries not sorted by chunk 0".into());
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
