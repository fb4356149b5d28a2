//! Local features: Harris corners on a small pyramid and 256-bit BRIEF
//! descriptors (fixed, seeded test pairs) of the smoothed patch around each.

use crate::gray::{
    reduce, reduction, smooth, transpose, vsum5, working_luma, Bilinear, Gray, Plan, Reducer, K,
};
use crate::{Pixels, WORK_SIDE};
use consentry_pdq::PixelFormat;

/// Radius of the square patch a descriptor samples.
pub(crate) const PATCH_RADIUS: i32 = 15;
/// Corners closer than this to an edge of their level are dropped.
const MARGIN: usize = PATCH_RADIUS as usize + 1;
/// Minimum Harris response (intensities 0–255) of a corner in a textured cell: a cell (of the
/// query's dense grid or the signature's sparse one) with a corner this strong uses only those.
pub(crate) const MIN_RESPONSE: f32 = 400.0;
/// The floor of a cell with no corner at [`MIN_RESPONSE`] (soft cloud, sky, a plain wall, skin):
/// its strongest corner down to this response is used ([`LOW_PER_CELL`]). Without it a copy
/// cropped to such a region had few corners on either side (`bench/RESULTS.md`, "Corners in low
/// texture"). JPEG noise on a flat area measures well under 1.
pub(crate) const LOW_RESPONSE: f32 = 12.0;
/// Corners a cell without one at [`MIN_RESPONSE`] contributes.
pub(crate) const LOW_PER_CELL: usize = 1;

/// How corners are detected and kept.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Detection {
    /// Corners whose descriptor is within this many bits of the descriptor of a pure intensity
    /// ramp with the patch's gradient are dropped (0: none).
    pub plane_limit: u32,
    /// The floor of cells without a corner at [`MIN_RESPONSE`] ([`LOW_RESPONSE`]; at or above
    /// [`MIN_RESPONSE`]: such cells have no corner, the rule before 2026-12-06).
    pub low_response: f32,
}

impl Default for Detection {
    fn default() -> Self {
        Detection { plane_limit: 0, low_response: LOW_RESPONSE }
    }
}

/// A detected corner with its descriptor, in the coordinates of level 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Corner {
    pub x: f32,
    pub y: f32,
    pub level: u8,
    pub response: f32,
    pub desc: [u64; 4],
}

/// A pyramid over the working image: `count` levels, `per_octave` of them to an octave (level
/// `l` is the working image reduced by `2^(l / per_octave)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pyramid {
    pub count: usize,
    pub per_octave: u8,
}

impl Pyramid {
    /// How much smaller level `l` is than level 0.
    pub fn reduction(self, l: usize) -> f32 {
        if self.per_octave == 2 {
            std::f32::consts::SQRT_2.powi(l as i32)
        } else {
            2f32.powf(l as f32 / f32::from(self.per_octave))
        }
    }
}

/// BRIEF test pairs: 256 × (x1, y1, x2, y2), Gaussian around the centre
/// (σ = patch/5, as ORB), clipped to the patch; deterministic.
pub(crate) fn brief_pairs() -> Vec<[i8; 4]> {
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut gauss = move || -> i8 {
        // Box–Muller from two uniforms.
        let u1 = ((next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (next() >> 11) as f64 / (1u64 << 53) as f64;
        let g = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * 6.2;
        g.round().clamp(-f64::from(PATCH_RADIUS), f64::from(PATCH_RADIUS)) as i8
    };
    let mut v = Vec::with_capacity(256);
    while v.len() < 256 {
        let p = [gauss(), gauss(), gauss(), gauss()];
        if (p[0], p[1]) != (p[2], p[3]) {
            v.push(p);
        }
    }
    v
}

/// Margin of the Harris response that the 5×5 maximum test reads.
const RESP_MARGIN: usize = MARGIN - 2;
/// Margin of the gradient products that response needs (binomial radius 2).
const PROD_MARGIN: usize = RESP_MARGIN - 2;
const _: () = assert!(PROD_MARGIN >= 1, "products need a neighbour on every side");

/// Buffers reused from one extraction to the next (they grow to the largest
/// image seen: a few MB at most, the working image having at most 512² pixels).
#[derive(Default)]
pub(crate) struct Scratch {
    /// The working luma (level 0).
    l0: Gray,
    /// `l0` transposed, what the other levels are reduced from.
    l0t: Gray,
    /// Full-size luma of an image smaller than the working size.
    full: Gray,
    /// The current level (1 and up).
    img: Gray,
    /// The current level smoothed once (gradients), and twice (descriptors).
    s1: Gray,
    blurred: Gray,
    /// Harris response.
    resp: Gray,
    /// One row of the vertical smoothing pass.
    row: Vec<f32>,
    /// Gradient products xx, yy, xy: rings of 5 rows.
    ring: [Vec<f32>; 3],
    /// Their vertical sums, one row each.
    vsum: [Vec<f32>; 3],
    red: Reducer,
    bil: Bilinear,
    /// Corners of the current level, and the same keyed by cell.
    cand: Vec<(f32, usize, usize)>,
    keyed: Vec<(usize, f32, usize, usize)>,
    /// BRIEF tests of the current level as offsets in the patch, and the same mirrored left to right.
    offsets: Vec<[u32; 2]>,
    moffsets: Vec<[u32; 2]>,
}

impl Scratch {
    /// Starts the working luma of a `w`×`h` image of RGB pixels that PDQ hashes too, when it is
    /// a reduction (from PDQ's luminance, which is [`gray`]'s for RGB, fed to
    /// [`Scratch::push_luma`]); `false` (nothing started) otherwise.
    pub fn begin_shared_luma(&mut self, w: usize, h: usize, format: PixelFormat) -> bool {
        if w == 0 || h == 0 || !matches!(format, PixelFormat::Rgb8 | PixelFormat::Rgba8) {
            return false;
        }
        match reduction(w, h, WORK_SIDE) {
            Some(target) => {
                self.red.plan.begin((w, h), target, &mut self.l0);
                true
            }
            None => false,
        }
    }

    /// Rows `y0..y0 + n` of the luminance of the image [`Scratch::begin_shared_luma`] started,
    /// `block[x][r]` the sample `x` of row `y0 + r` (as PDQ hands them over).
    pub fn push_luma(&mut self, y0: usize, n: usize, block: &[[f32; 8]]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2, checked just above.
                return unsafe { push_luma_avx2(&mut self.red.plan, &mut self.l0, y0, n, block) };
            }
        }
        self.red.plan.push(y0, n, block.len(), &mut self.l0, |x| &block[x]);
    }

    /// The working luma of the last image whose corners were extracted.
    pub(crate) fn luma(&self) -> &Gray {
        &self.l0
    }

    /// Whether the working luma is complete: every row pushed.
    pub fn shared_luma_complete(&self) -> bool {
        self.red.plan.complete()
    }
}

/// [`Scratch::push_luma`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn push_luma_avx2(plan: &mut Plan, l0: &mut Gray, y0: usize, n: usize, block: &[[f32; 8]]) {
    plan.push(y0, n, block.len(), l0, |x| &block[x]);
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scratch").field("l0", &(self.l0.w, self.l0.h)).finish_non_exhaustive()
    }
}

/// Harris response `a·b − c² − 0.04 (a + b)²` of the binomially smoothed
/// gradient products (`a` = Σgx², `b` = Σgy², `c` = Σgx·gy) of the smoothed
/// image `s`, written to `resp` at the pixels at least [`RESP_MARGIN`] from
/// every edge: all that the 5×5 maximum test around the candidates reads.
/// Those need the products only at least [`PROD_MARGIN`] from the edges, away
/// from the zero border and clamped edges of the whole-image computation of
/// the reference, so the values are the same. Rows are streamed: the
/// products of 5 rows at a time, in rings.
#[inline(always)]
fn harris(s: &Gray, resp: &mut Gray, ring: &mut [Vec<f32>; 3], vsum: &mut [Vec<f32>; 3]) {
    let (w, h) = (s.w, s.h);
    debug_assert!(w > 2 * MARGIN && h > 2 * MARGIN);
    resp.reset(w, h);
    let pw = w - 2 * PROD_MARGIN;
    let [rxx, ryy, rxy] = ring;
    for r in [&mut *rxx, &mut *ryy, &mut *rxy] {
        r.resize(5 * pw, 0.0);
    }
    for v in vsum.iter_mut() {
        v.resize(pw, 0.0);
    }
    for y in PROD_MARGIN..RESP_MARGIN + 2 {
        products(s, y, [&mut rxx[..], &mut ryy[..], &mut rxy[..]]);
    }
    let n = w - 2 * RESP_MARGIN;
    let [vxx, vyy, vxy] = vsum;
    for y in RESP_MARGIN..h - RESP_MARGIN {
        products(s, y + 2, [&mut rxx[..], &mut ryy[..], &mut rxy[..]]);
        vsum5(vxx, ring_rows(rxx, pw, y));
        vsum5(vyy, ring_rows(ryy, pw, y));
        vsum5(vxy, ring_rows(rxy, pw, y));
        let o = &mut resp.px[y * w + RESP_MARGIN..y * w + RESP_MARGIN + n];
        // Horizontal pass (as `gray::hsum5`) and the response, fused.
        let (a, b, c) = (shifted(vxx, n), shifted(vyy, n), shifted(vxy, n));
        for i in 0..n {
            let h5 =
                |v: &[&[f32]; 5]| (v[0][i] + v[4][i]) * K[0] + (v[1][i] + v[3][i]) * K[1] + v[2][i] * K[2];
            let (a, b, c) = (h5(&a), h5(&b), h5(&c));
            o[i] = a * b - c * c - 0.04 * (a + b) * (a + b);
        }
    }
}

/// Gradient products gx², gy², gx·gy of row `y` of `s`, at the pixels at
/// least [`PROD_MARGIN`] from the left and right edges, into slot `y % 5` of
/// the rings `[xx, yy, xy]`.
#[inline(always)]
fn products(s: &Gray, y: usize, [rxx, ryy, rxy]: [&mut [f32]; 3]) {
    let pw = s.w - 2 * PROD_MARGIN;
    let slot = (y % 5) * pw;
    let (xx, yy, xy) = (&mut rxx[slot..slot + pw], &mut ryy[slot..slot + pw], &mut rxy[slot..slot + pw]);
    let (up, mid, dn) = (s.row(y - 1), s.row(y), s.row(y + 1));
    let (l, r) = (&mid[PROD_MARGIN - 1..PROD_MARGIN - 1 + pw], &mid[PROD_MARGIN + 1..PROD_MARGIN + 1 + pw]);
    let (u, d) = (&up[PROD_MARGIN..PROD_MARGIN + pw], &dn[PROD_MARGIN..PROD_MARGIN + pw]);
    for i in 0..pw {
        let gx = 0.5 * (r[i] - l[i]);
        let gy = 0.5 * (d[i] - u[i]);
        xx[i] = gx * gx;
        yy[i] = gy * gy;
        xy[i] = gx * gy;
    }
}

/// `v[k..k + n]` for k in 0..5.
#[inline(always)]
fn shifted(v: &[f32], n: usize) -> [&[f32]; 5] {
    [&v[..n], &v[1..n + 1], &v[2..n + 2], &v[3..n + 3], &v[4..n + 4]]
}

/// Rows `y - 2 ..= y + 2` of a ring of 5 rows of `pw` samples.
#[inline(always)]
fn ring_rows(r: &[f32], pw: usize, y: usize) -> [&[f32]; 5] {
    let at = |yy: usize| &r[(yy % 5) * pw..(yy % 5 + 1) * pw];
    [at(y - 2), at(y - 1), at(y), at(y + 1), at(y + 2)]
}

/// The corners ([`is_maximum`] at `floor`) of the response at least [`MARGIN`] from the edges,
/// at `x0 <= x < x1`, `y0 <= y < y1`, in raster order, appended to `cand`.
#[inline(always)]
fn maxima(r: &Gray, rect: [usize; 4], floor: f32, cand: &mut Vec<(f32, usize, usize)>) {
    // (no let-else: Rust 1.63 builds this for the protect page)
    let [x0, x1, y0, y1] = match within_margins(r, rect) {
        Some(c) => c,
        None => return,
    };
    const CHUNK: usize = 16;
    for y in y0..y1 {
        let rows = [r.row(y - 2), r.row(y - 1), r.row(y), r.row(y + 1), r.row(y + 2)];
        let span = &rows[2][x0..x1];
        // Most of a row is below the threshold: test 16 samples at once.
        let chunks = span.chunks_exact(CHUNK);
        let tail = chunks.remainder().len();
        for (i, c) in chunks.enumerate() {
            let c: &[f32; CHUNK] = c.try_into().expect("chunk");
            let mut any = false;
            for &v in c {
                any |= v >= floor;
            }
            if !any {
                continue;
            }
            let cx = x0 + i * CHUNK;
            for x in cx..cx + CHUNK {
                if is_maximum(&rows, x, floor) {
                    cand.push((rows[2][x], x, y));
                }
            }
        }
        for x in x1 - tail..x1 {
            if is_maximum(&rows, x, floor) {
                cand.push((rows[2][x], x, y));
            }
        }
    }
}

/// The part of `[x0, x1, y0, y1]` at least [`MARGIN`] from the edges of `r`, if any.
#[inline(always)]
fn within_margins(r: &Gray, [x0, x1, y0, y1]: [usize; 4]) -> Option<[usize; 4]> {
    let (x0, x1) = (x0.max(MARGIN), x1.min(r.w - MARGIN));
    let (y0, y1) = (y0.max(MARGIN), y1.min(r.h - MARGIN));
    (x0 < x1 && y0 < y1).then_some([x0, x1, y0, y1])
}

/// The corners of a level: every maximum at [`MIN_RESPONSE`], then, in each cell with none, its
/// strongest maximum at `low` (when under [`MIN_RESPONSE`]; [`strongest_maximum`]). The cells are
/// those `sel` spreads corners over: column `i` is `xs[i]..xs[i + 1]`, row `j` is `ys[j]..ys[j + 1]`.
#[inline(always)]
fn corners_by_cell(r: &Gray, sel: Selection, low: f32, cand: &mut Vec<(f32, usize, usize)>) {
    cand.clear();
    maxima(r, [0, r.w, 0, r.h], MIN_RESPONSE, cand);
    if low >= MIN_RESPONSE {
        return;
    }
    let (xs, ys) = match sel {
        Selection::Dense { cell, .. } => (fixed_bounds(r.w, cell), fixed_bounds(r.h, cell)),
        Selection::Sparse { grid, .. } => (grid_bounds(r.w, grid), grid_bounds(r.h, grid)),
    };
    let (xs, ys) = (&xs[..], &ys[..]);
    let index = |bounds: &[usize], len: usize| {
        let mut m = vec![0usize; len];
        for (i, b) in bounds.windows(2).enumerate() {
            m[b[0]..b[1]].iter_mut().for_each(|v| *v = i);
        }
        m
    };
    let (col, row) = (index(xs, r.w), index(ys, r.h));
    let ncols = xs.len() - 1;
    let mut textured = vec![false; ncols * (ys.len() - 1)];
    for &(_, x, y) in cand.iter() {
        textured[row[y] * ncols + col[x]] = true;
    }
    for (j, yb) in ys.windows(2).enumerate() {
        for (i, xb) in xs.windows(2).enumerate() {
            if !textured[j * ncols + i] {
                strongest_maximum(r, [xb[0], xb[1], yb[0], yb[1]], low, cand);
            }
        }
    }
}

// A cell without texture keeps only its strongest corner, which [`strongest_maximum`] finds alone.
const _: () = assert!(LOW_PER_CELL == 1, "strongest_maximum finds one corner per cell");

/// The strongest corner at `floor` or more in the rectangle (as [`maxima`] would list it first,
/// strongest first and then in raster order), appended to `cand`: the rectangle's strongest sample
/// (the first in raster order among equals) when it is a 5×5 maximum, as it usually is, found in
/// one pass; otherwise (a stronger neighbour just outside) every corner of the rectangle, of which
/// the caller keeps the strongest.
#[inline(always)]
fn strongest_maximum(
    r: &Gray,
    [x0, x1, y0, y1]: [usize; 4],
    floor: f32,
    cand: &mut Vec<(f32, usize, usize)>,
) {
    let [cx0, cx1, cy0, cy1] = match within_margins(r, [x0, x1, y0, y1]) {
        Some(c) => c,
        None => return,
    };
    let mut best = (f32::NEG_INFINITY, 0, 0);
    for y in cy0..cy1 {
        let row = &r.row(y)[cx0..cx1];
        let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        if m > best.0 {
            let x = row.iter().position(|&v| v == m).unwrap_or(0);
            best = (m, cx0 + x, y);
        }
    }
    if best.0 < floor {
        return;
    }
    let y = best.2;
    let rows = [r.row(y - 2), r.row(y - 1), r.row(y), r.row(y + 1), r.row(y + 2)];
    if is_maximum(&rows, best.1, floor) {
        cand.push(best);
    } else {
        maxima(r, [x0, x1, y0, y1], floor, cand);
    }
}

/// Cell boundaries `0, cell, 2·cell, …, len` (the last cell may be shorter).
fn fixed_bounds(len: usize, cell: usize) -> Vec<usize> {
    #[allow(clippy::manual_div_ceil)] // Rust 1.63 (the wasm build) has no div_ceil
    let n = (len + cell - 1) / cell;
    (0..=n).map(|i| (i * cell).min(len)).collect()
}

/// Boundaries of `grid` cells such that position `x` is in cell `x · grid / len`.
fn grid_bounds(len: usize, grid: usize) -> Vec<usize> {
    #[allow(clippy::manual_div_ceil)] // Rust 1.63 (the wasm build) has no div_ceil
    (0..=grid).map(|g| (g * len + grid - 1) / grid).collect()
}

/// Whether sample `x` of the middle one of `rows` is a corner: at least
/// `floor` and a maximum of its 5×5 neighbourhood (ties: the first in
/// raster order wins).
#[inline(always)]
fn is_maximum(rows: &[&[f32]; 5], x: usize, floor: f32) -> bool {
    let v = rows[2][x];
    if v < floor {
        return false;
    }
    for (dy, row) in rows.iter().enumerate() {
        let win = &row[x - 2..x + 3];
        for (dx, &u) in win.iter().enumerate() {
            if (dx, dy) == (2, 2) {
                continue;
            }
            if u > v || (u == v && (dy < 2 || (dy == 2 && dx < 2))) {
                return false;
            }
        }
    }
    true
}

/// BRIEF descriptor at (`x`, `y`); `offsets`: the pairs as index offsets in
/// `b` from the top left corner of the patch ([`PATCH_RADIUS`] up and left).
#[inline(always)]
fn describe(b: &Gray, x: usize, y: usize, offsets: &[[u32; 2]]) -> [u64; 4] {
    const R: usize = PATCH_RADIUS as usize;
    let start = (y - R) * b.w + x - R;
    let patch = &b.px[start..start + 2 * R * b.w + 2 * R + 1];
    let mut d = [0u64; 4];
    for (d, tests) in d.iter_mut().zip(offsets.chunks_exact(64)) {
        let mut bits = 0u64;
        for (k, o) in tests.iter().enumerate() {
            bits |= u64::from(patch[o[0] as usize] < patch[o[1] as usize]) << k;
        }
        *d = bits;
    }
    d
}

fn strongest_first(a: &(f32, usize, usize), b: &(f32, usize, usize)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then((a.2, a.1).cmp(&(b.2, b.1)))
}

/// How many corners to keep per level and how to spread them.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Selection {
    /// At most `per_cell` corners per `cell`×`cell` pixel cell of each level.
    Dense { cell: usize, per_cell: usize },
    /// `quota[l]` corners on level l, spread over a `grid`×`grid` partition
    /// (round robin over cells, strongest first).
    Sparse { quota: [usize; 4], grid: usize },
}

/// A `pyramid` over the working
/// luma of `px` (longest side [`WORK_SIDE`]), corners selected per `sel`,
/// described with `pairs`.
/// What is detected and kept: `det`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn extract(
    px: &Pixels<'_>,
    pyramid: Pyramid,
    sel: Selection,
    pairs: &[[i8; 4]],
    det: Detection,
    sc: &mut Scratch,
    luma_ready: bool,
    mirrored: Option<&mut Vec<Corner>>,
) -> Vec<Corner> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { extract_avx2(px, pyramid, sel, pairs, det, sc, luma_ready, mirrored) };
        }
    }
    extract_generic(px, pyramid, sel, pairs, det, sc, luma_ready, mirrored)
}

/// The same code compiled for AVX2: wider vectors, same operations.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn extract_avx2(
    px: &Pixels<'_>,
    pyramid: Pyramid,
    sel: Selection,
    pairs: &[[i8; 4]],
    det: Detection,
    sc: &mut Scratch,
    luma_ready: bool,
    mirrored: Option<&mut Vec<Corner>>,
) -> Vec<Corner> {
    extract_generic(px, pyramid, sel, pairs, det, sc, luma_ready, mirrored)
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn extract_generic(
    px: &Pixels<'_>,
    pyramid: Pyramid,
    sel: Selection,
    pairs: &[[i8; 4]],
    det: Detection,
    sc: &mut Scratch,
    luma_ready: bool,
    mut mirrored: Option<&mut Vec<Corner>>,
) -> Vec<Corner> {
    let Scratch {
        l0,
        l0t,
        full,
        img,
        s1,
        blurred,
        resp,
        row,
        ring,
        vsum,
        red,
        bil,
        cand,
        keyed,
        offsets,
        moffsets,
    } = sc;
    if !luma_ready {
        working_luma(
            px.width as usize,
            px.height as usize,
            px.stride,
            px.format,
            px.data,
            WORK_SIDE,
            l0,
            full,
            red,
            bil,
        );
    }
    if pyramid.count > 1 {
        transpose(l0, l0t);
    }
    let mut out = Vec::new();
    let mut chosen: Vec<(f32, usize, usize)> = Vec::new();
    for l in 0..pyramid.count {
        let to0 = pyramid.reduction(l);
        let img: &Gray = if l == 0 {
            l0
        } else {
            let tw = ((l0.w as f32 / to0).round() as usize).max(1);
            let th = ((l0.h as f32 / to0).round() as usize).max(1);
            // (Never an enlargement, for which the reference would resample bilinearly.)
            reduce(l0t, tw, th, img, red);
            img
        };
        let (w, h) = (img.w, img.h);
        if w <= 2 * MARGIN || h <= 2 * MARGIN {
            // No corner can be far enough from the edges.
            continue;
        }
        smooth(img, s1, row);
        harris(s1, resp, ring, vsum);
        corners_by_cell(resp, sel, det.low_response, cand);
        chosen.clear();
        match sel {
            Selection::Dense { cell, per_cell } => {
                // Per cell (in cell order), the strongest `per_cell`.
                #[allow(clippy::manual_div_ceil)] // Rust 1.63 (the wasm build) has no div_ceil
                let cw = (w + cell - 1) / cell;
                keyed.clear();
                keyed.extend(cand.iter().map(|&(v, x, y)| ((y / cell) * cw + x / cell, v, x, y)));
                keyed.sort_unstable_by(|a, b| {
                    a.0.cmp(&b.0).then(strongest_first(&(a.1, a.2, a.3), &(b.1, b.2, b.3)))
                });
                // (A cell's corners are all at MIN_RESPONSE or all under it: textured or not.)
                let mut run = (usize::MAX, 0, per_cell);
                for &(c, v, x, y) in keyed.iter() {
                    if c != run.0 {
                        run = (c, 0, if v >= MIN_RESPONSE { per_cell } else { LOW_PER_CELL });
                    }
                    if run.1 < run.2 {
                        chosen.push((v, x, y));
                        run.1 += 1;
                    }
                }
            }
            Selection::Sparse { quota, grid } => {
                let q = quota.get(l).copied().unwrap_or(0);
                let mut cells: Vec<Vec<(f32, usize, usize)>> = vec![Vec::new(); grid * grid];
                for &c in cand.iter() {
                    let gx = (c.1 * grid / w).min(grid - 1);
                    let gy = (c.2 * grid / h).min(grid - 1);
                    cells[gy * grid + gx].push(c);
                }
                for c in &mut cells {
                    c.sort_by(strongest_first);
                    if matches!(c.first(), Some(f) if f.0 < MIN_RESPONSE) {
                        c.truncate(LOW_PER_CELL);
                    }
                }
                // The lower centre of the frame (where a body usually is, and what
                // a nudify bot replaces) gets a corner every other round only:
                // more of the signature sits on the face, hair and background.
                let lower_centre = |cell: usize| {
                    let (gx, gy) = (cell % grid, cell / grid);
                    gy * 2 >= grid && gx * 4 >= grid && gx * 4 < 3 * grid
                };
                let mut taken = vec![0usize; cells.len()];
                let mut round = 0;
                while chosen.len() < q {
                    let mut layer: Vec<(f32, usize, usize)> = Vec::new();
                    for (ci, c) in cells.iter().enumerate() {
                        if lower_centre(ci) && round % 2 == 1 {
                            continue;
                        }
                        if let Some(&x) = c.get(taken[ci]) {
                            taken[ci] += 1;
                            layer.push(x);
                        }
                    }
                    if layer.is_empty() && cells.iter().enumerate().all(|(ci, c)| taken[ci] >= c.len()) {
                        break;
                    }
                    layer.sort_by(strongest_first);
                    let room = q - chosen.len();
                    chosen.extend(layer.into_iter().take(room));
                    round += 1;
                }
            }
        }
        if chosen.is_empty() {
            continue;
        }
        smooth(s1, blurred, row);
        let at = |dx: i8, dy: i8| {
            let r = PATCH_RADIUS as isize;
            ((isize::from(dy) + r) * w as isize + isize::from(dx) + r) as u32
        };
        offsets.clear();
        offsets.extend(pairs.iter().map(|p| [at(p[0], p[1]), at(p[2], p[3])]));
        if mirrored.is_some() {
            // The tests with x negated: this patch described as its mirror image would be.
            moffsets.clear();
            moffsets.extend(pairs.iter().map(|p| [at(-p[0], p[1]), at(-p[2], p[3])]));
        }
        for &(resp, x, y) in chosen.iter() {
            let desc = describe(blurred, x, y, offsets);
            if det.plane_limit > 0
                && crate::verify::hamming(&desc, &ramp(blurred, x, y, pairs)) < det.plane_limit
            {
                continue;
            }
            let at0 = |v: usize| (v as f32 + 0.5) * to0 - 0.5;
            out.push(Corner { x: at0(x), y: at0(y), level: l as u8, response: resp, desc });
            if let Some(m) = mirrored.as_deref_mut() {
                // Where the corner sits in the image mirrored left to right.
                let desc = describe(blurred, x, y, moffsets);
                m.push(Corner { x: at0(w - 1 - x), y: at0(y), level: l as u8, response: resp, desc });
            }
        }
    }
    out
}

/// The descriptor a linear ramp with the patch's mean gradient would have.
fn ramp(b: &Gray, x: usize, y: usize, pairs: &[[i8; 4]]) -> [u64; 4] {
    let r = PATCH_RADIUS as usize / 2;
    let gx = b.at(x + r, y) - b.at(x - r, y);
    let gy = b.at(x, y + r) - b.at(x, y - r);
    ramp_descriptor(gx, gy, pairs)
}

/// The descriptor of the patch `I(x, y) = gx·x + gy·y`: each test is a comparison of the ramp at
/// its two points.
fn ramp_descriptor(gx: f32, gy: f32, pairs: &[[i8; 4]]) -> [u64; 4] {
    let mut d = [0u64; 4];
    for (k, p) in pairs.iter().enumerate() {
        let a = gx * f32::from(p[0]) + gy * f32::from(p[1]);
        let c = gx * f32::from(p[2]) + gy * f32::from(p[3]);
        if a < c {
            d[k / 64] |= 1 << (k % 64);
        }
    }
    d
}

/// Every distinct descriptor of a pure intensity ramp (the patch `I(x, y) = a·x + b·y`), over all
/// gradient directions, and the flat patch's (all zeros): what a smooth sky or wall gives in any
/// photo. A test pair's bit flips where the gradient is perpendicular to the pair, at directions
/// whose slope is a ratio of integers of at most 2 × [`PATCH_RADIUS`]; the integer directions with
/// coordinates up to twice that reach every direction between two such breakpoints and every
/// breakpoint itself, so the list is complete. (The products are integers below 2¹², exact in
/// `f32`.)
pub(crate) fn ramp_descriptors(pairs: &[[i8; 4]]) -> Vec<[u64; 4]> {
    let lim = 4 * PATCH_RADIUS;
    let mut out = vec![[0u64; 4]];
    for gx in -lim..=lim {
        for gy in -lim..=lim {
            out.push(ramp_descriptor(gx as f32, gy as f32, pairs));
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod ramp_tests {
    use super::*;

    /// The list is complete: the ramp in any direction (and at any strength) gives one of its
    /// descriptors, including directions close to a breakpoint.
    #[test]
    fn every_ramp_direction_gives_a_listed_descriptor() {
        let pairs = brief_pairs();
        let list = ramp_descriptors(&pairs);
        assert!(list.contains(&[0; 4]), "the flat patch");
        let mut s = 0x2545_f491_4f6c_dd1du64;
        for i in 0..20_000 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let theta = (s >> 11) as f64 / (1u64 << 53) as f64 * std::f64::consts::TAU;
            // every other direction a hair away from a pair's breakpoint
            let theta = if i % 2 == 0 {
                let p = pairs[(s % 256) as usize];
                let (vx, vy) = (f64::from(p[2] - p[0]), f64::from(p[3] - p[1]));
                vy.atan2(vx) + std::f64::consts::FRAC_PI_2 + if s & 1 == 0 { 1e-4 } else { -1e-4 }
            } else {
                theta
            };
            let strength = 0.5 + (i % 7) as f64;
            let d = ramp_descriptor((theta.cos() * strength) as f32, (theta.sin() * strength) as f32, &pairs);
            assert!(list.binary_search(&d).is_ok(), "direction {theta} is missing");
        }
    }
}
