//! Luma working images: area-averaged reduction to a fixed longest side, a
//! small image pyramid, and binomial smoothing.
//!
//! The kernels write into buffers the [`crate::Extractor`] keeps between
//! calls, and are laid out so that the compiler vectorises them (whole rows at
//! a time). Each output sample is still computed with the same `f32`
//! operations in the same order as the straightforward implementation the
//! crate started from (`reference.rs`, tests only): signatures do not depend
//! on these optimisations, bit for bit. (Rust never contracts a multiply and
//! an add into an FMA, and vector lanes round like scalars.) The only
//! liberties taken: a sum of non-negative terms is not changed by starting it
//! at its first term rather than at +0.0, nor by adding or leaving out terms
//! of weight zero.

use consentry_pdq::PixelFormat;

/// A grey image of `f32` samples (0–255), row-major.
#[derive(Debug, Clone, Default)]
pub(crate) struct Gray {
    pub w: usize,
    pub h: usize,
    pub px: Vec<f32>,
}

impl Gray {
    #[inline(always)]
    pub fn at(&self, x: usize, y: usize) -> f32 {
        self.px[y * self.w + x]
    }

    #[inline(always)]
    pub fn row(&self, y: usize) -> &[f32] {
        &self.px[y * self.w..(y + 1) * self.w]
    }

    /// Makes this a `w`×`h` image, keeping the allocation; the samples are
    /// left as they are (callers overwrite all of them), and `px` may be
    /// longer than `w × h` (what a larger image left).
    #[inline(always)]
    pub fn reset(&mut self, w: usize, h: usize) {
        self.w = w;
        self.h = h;
        if self.px.len() < w * h {
            self.px.resize(w * h, 0.0);
        }
    }
}

#[inline(always)]
fn luma(p: &[u8]) -> f32 {
    0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])
}

#[inline(always)]
fn luma_row(format: PixelFormat, row: &[u8], out: &mut [f32]) {
    let c = format.channels();
    let row = &row[..out.len() * c];
    match format {
        PixelFormat::Luma8 | PixelFormat::LumaA8 => {
            for (o, p) in out.iter_mut().zip(row.chunks_exact(c)) {
                *o = f32::from(p[0]);
            }
        }
        PixelFormat::Rgb8 => {
            for (o, p) in out.iter_mut().zip(row.chunks_exact(3)) {
                *o = luma(p);
            }
        }
        PixelFormat::Rgba8 => {
            for (o, p) in out.iter_mut().zip(row.chunks_exact(4)) {
                *o = luma(p);
            }
        }
    }
}

/// [`luma_row`] into column `r` of a transposed block.
#[inline(always)]
fn luma_column(format: PixelFormat, row: &[u8], out: &mut [[f32; B]], r: usize) {
    let c = format.channels();
    let row = &row[..out.len() * c];
    match format {
        PixelFormat::Luma8 | PixelFormat::LumaA8 => {
            for (o, p) in out.iter_mut().zip(row.chunks_exact(c)) {
                o[r] = f32::from(p[0]);
            }
        }
        PixelFormat::Rgb8 => {
            for (o, p) in out.iter_mut().zip(row.chunks_exact(3)) {
                o[r] = luma(p);
            }
        }
        PixelFormat::Rgba8 => {
            for (o, p) in out.iter_mut().zip(row.chunks_exact(4)) {
                o[r] = luma(p);
            }
        }
    }
}

/// Weights of a 1-D area (box) reduction from `n` samples to `m ≤ n`: for
/// each source sample, up to two (target, weight) pairs (a zero weight for
/// none).
#[inline(always)]
fn area_weights(n: usize, m: usize, out: &mut Vec<[(u32, f32); 2]>) {
    let f = n as f64 / m as f64;
    out.clear();
    out.extend((0..n).map(|i| {
        let (a, b) = (i as f64 / f, (i + 1) as f64 / f);
        let t0 = (a.floor() as usize).min(m - 1);
        let t1 = ((b - 1e-9).floor() as usize).min(m - 1);
        if t0 == t1 {
            [(t0 as u32, 1.0 / f as f32), (t0 as u32, 0.0)]
        } else {
            // Overlap lengths in target units (a target pixel has length 1).
            let w0 = t1 as f64 - a;
            let w1 = b - t1 as f64;
            [(t0 as u32, w0 as f32), (t1 as u32, w1 as f32)]
        }
    }));
}

/// Rows an area reduction handles at once (one AVX2 vector of `f32`).
const B: usize = 8;

/// The source of an area reduction. (A trait rather than a closure: its
/// method is inlined into the AVX2 build of the caller.)
trait Rows {
    /// Feeds rows `y0..y0 + n` (`n ≤ B`) to `plan` ([`Plan::push`]), transposed — sample `x` of
    /// the `B` rows at once — written into `block` first (room for `w` samples) or read where
    /// they already lie so.
    fn push(&mut self, y0: usize, n: usize, block: &mut [[f32; B]], plan: &mut Plan, out: &mut Gray);
}

/// Rows of a grey image, from its transpose (columns are rows there): `B` samples of a column
/// of the transpose are `B` rows' samples at one `x`, read in place (copied only for a last,
/// partial block, which would read past the last column).
struct TransposedRows<'a>(&'a Gray);

impl Rows for TransposedRows<'_> {
    #[inline(always)]
    fn push(&mut self, y0: usize, n: usize, block: &mut [[f32; B]], plan: &mut Plan, out: &mut Gray) {
        let (px, h) = (&self.0.px[..self.0.w * self.0.h], self.0.w);
        let w = self.0.h;
        if n == B {
            plan.push(y0, n, w, out, |x| px[x * h + y0..x * h + y0 + B].try_into().expect("B samples"));
        } else {
            for (b, col) in block.iter_mut().zip(px.chunks_exact(h)) {
                b[..n].copy_from_slice(&col[y0..y0 + n]);
            }
            plan.push(y0, n, w, out, |x| &block[x]);
        }
    }
}

/// `out` = `src` transposed.
#[inline(always)]
pub(crate) fn transpose(src: &Gray, out: &mut Gray) {
    let (w, h) = (src.w, src.h);
    out.reset(h, w);
    // B rows at a time: B adjacent samples written per column.
    for y0 in (0..h).step_by(B) {
        let n = B.min(h - y0);
        if n == B {
            let rows: [&[f32]; B] = std::array::from_fn(|r| &src.row(y0 + r)[..w]);
            #[allow(clippy::needless_range_loop)] // `x < w` lets the row accesses go unchecked
            for x in 0..w {
                let col: &mut [f32; B] = (&mut out.px[x * h + y0..x * h + y0 + B]).try_into().expect("B");
                for r in 0..B {
                    col[r] = rows[r][x];
                }
            }
        } else {
            for r in 0..n {
                for (x, &v) in src.row(y0 + r).iter().enumerate() {
                    out.px[x * h + y0 + r] = v;
                }
            }
        }
    }
}

/// Luma of packed pixel rows.
struct LumaRows<'a> {
    /// Pixels per row.
    w: usize,
    format: PixelFormat,
    data: &'a [u8],
    stride: usize,
}

impl Rows for LumaRows<'_> {
    #[inline(always)]
    fn push(&mut self, y0: usize, n: usize, block: &mut [[f32; B]], plan: &mut Plan, out: &mut Gray) {
        let block = &mut block[..self.w];
        for r in 0..n {
            luma_column(self.format, &self.data[(y0 + r) * self.stride..], block, r);
        }
        plan.push(y0, n, self.w, out, |x| &block[x]);
    }
}

/// A separable area reduction: the per-source weights of each axis, and the
/// horizontal weights regrouped per target (so that each target sums its
/// sources in source order, as a scatter over the sources would).
///
/// The horizontal pass works on [`B`] source rows at a time, transposed
/// (sample `x` of the `B` rows at once), so that one target's sum for
/// the `B` rows is a vector operation per source sample; the sums are
/// transposed back for the vertical pass, which works on whole rows.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    wx: Vec<[(u32, f32); 2]>,
    wy: Vec<[(u32, f32); 2]>,
    /// Per target: the first source sample; its weights are
    /// `taps[t * k..(t + 1) * k]`, `k` the most any target has, padded with
    /// zeros (a zero weight adds +0.0 to a sum of non-negative terms: no change).
    first: Vec<u32>,
    taps: Vec<f32>,
    k: usize,
    /// Per target: first source sample, number of terms.
    spans: Vec<(usize, usize)>,
    hblock: Vec<[f32; B]>,
    hrow: Vec<f32>,
    /// Target width and height; output rows written so far (each row's first term is stored,
    /// not added to a zero: the same value, the terms being non-negative); source rows fed.
    tw: usize,
    th: usize,
    done: usize,
    fed: usize,
}

impl Plan {
    /// Starts a reduction of a `w`×`h` image to `tw`×`th` (`tw ≤ w`, `th ≤ h`) into `out`.
    #[inline(always)]
    pub fn begin(&mut self, (w, h): (usize, usize), (tw, th): (usize, usize), out: &mut Gray) {
        debug_assert!(tw <= w && th <= h);
        area_weights(w, tw, &mut self.wx);
        area_weights(h, th, &mut self.wy);
        // Per target, its (source, weight) terms in source order.
        self.first.clear();
        self.taps.clear();
        let spans = &mut self.spans;
        spans.clear();
        let mut cur = u32::MAX;
        for (x, ww) in self.wx.iter().enumerate() {
            for &(t, k) in ww {
                // A zero weight adds +0.0 to a sum of non-negative terms: no change.
                if k == 0.0 {
                    continue;
                }
                if t != cur {
                    debug_assert!(cur == u32::MAX || t == cur + 1, "targets in order");
                    cur = t;
                    spans.push((x, 0));
                }
                spans.last_mut().expect("pushed").1 += 1;
            }
        }
        debug_assert_eq!(spans.len(), tw);
        self.k = spans.iter().map(|s| s.1).max().unwrap_or(1);
        self.taps.resize(tw * self.k, 0.0);
        for (x, ww) in self.wx.iter().enumerate() {
            for &(t, k) in ww {
                if k == 0.0 {
                    continue;
                }
                let t = t as usize;
                let j = x - spans[t].0;
                self.taps[t * self.k + j] = k;
            }
        }
        self.first.extend(spans.iter().map(|s| s.0 as u32));
        self.hblock.resize(tw, [0.0; B]);
        self.hrow.resize(tw, 0.0);
        (self.tw, self.th, self.done, self.fed) = (tw, th, 0, 0);
        out.reset(tw, th);
    }

    /// Whether every source row has been fed.
    pub fn complete(&self) -> bool {
        self.fed == self.wy.len()
    }

    /// Feeds source rows `y0..y0 + n` (`n ≤ B`, `y0` the first row not fed yet): `src(x)` is
    /// sample `x < w` of the `B` rows (lanes from `n` on are not read).
    #[inline(always)]
    pub fn push<'s>(
        &mut self,
        y0: usize,
        n: usize,
        w: usize,
        out: &mut Gray,
        src: impl Fn(usize) -> &'s [f32; B],
    ) {
        debug_assert_eq!(y0, self.fed, "rows in order");
        let Plan { wy, first, taps, k, hblock, hrow, tw, done, fed, .. } = self;
        hpass(*k, first, taps, hblock, w, src);
        for (r, wyy) in wy[y0..y0 + n].iter().enumerate() {
            for (d, s) in hrow.iter_mut().zip(hblock.iter()) {
                *d = s[r];
            }
            for &(t, k) in wyy {
                if k != 0.0 {
                    let t = t as usize;
                    let o = &mut out.px[t * *tw..(t + 1) * *tw];
                    if t == *done {
                        for (a, b) in o.iter_mut().zip(hrow.iter()) {
                            *a = b * k;
                        }
                        *done += 1;
                    } else {
                        debug_assert!(t + 1 == *done, "rows in order");
                        for (a, b) in o.iter_mut().zip(hrow.iter()) {
                            *a += b * k;
                        }
                    }
                }
            }
        }
        *fed = y0 + n;
        debug_assert!(!self.complete() || self.done == self.th);
    }
}

/// A [`Plan`] and the block its sources are transposed into.
#[derive(Debug, Default)]
pub(crate) struct Reducer {
    pub plan: Plan,
    block: Vec<[f32; B]>,
}

impl Reducer {
    /// Area reduction of the `w`×`h` image `rows` to `tw`×`th` (`tw ≤ w`,
    /// `th ≤ h`) into `out`.
    #[inline(always)]
    fn reduce(
        &mut self,
        (w, h): (usize, usize),
        (tw, th): (usize, usize),
        out: &mut Gray,
        mut rows: impl Rows,
    ) {
        self.plan.begin((w, h), (tw, th), out);
        self.block.resize(w, [0.0; B]);
        for y0 in (0..h).step_by(B) {
            let n = B.min(h - y0);
            rows.push(y0, n, &mut self.block, &mut self.plan, out);
        }
        debug_assert!(self.plan.complete());
    }
}

/// Horizontal pass of an area reduction: `out[t][r]` = Σ_j `src(first[t] + j)[r]` ×
/// `taps[t·k + j]`, in order, `src(x)` being sample `x` of the `B` rows; the zero-weight terms
/// that pad the last targets past the last sample (`len`) are left out.
#[inline(always)]
fn hpass<'s>(
    k: usize,
    first: &[u32],
    taps: &[f32],
    out: &mut [[f32; B]],
    len: usize,
    src: impl Fn(usize) -> &'s [f32; B],
) {
    match k {
        1 => hpass_k::<1>(first, taps, out, len, src),
        2 => hpass_k::<2>(first, taps, out, len, src),
        3 => hpass_k::<3>(first, taps, out, len, src),
        4 => hpass_k::<4>(first, taps, out, len, src),
        5 => hpass_k::<5>(first, taps, out, len, src),
        6 => hpass_k::<6>(first, taps, out, len, src),
        7 => hpass_k::<7>(first, taps, out, len, src),
        8 => hpass_k::<8>(first, taps, out, len, src),
        _ => hpass_any(k, first, taps, out, len, src),
    }
}

/// [`hpass`] with `K` (padded) terms per target.
#[inline(always)]
fn hpass_k<'s, const K: usize>(
    first: &[u32],
    taps: &[f32],
    out: &mut [[f32; B]],
    len: usize,
    src: impl Fn(usize) -> &'s [f32; B],
) {
    for ((o, &f), ks) in out.iter_mut().zip(first).zip(taps.chunks_exact(K)) {
        let f = f as usize;
        let mut s = [0f32; B];
        if f + K <= len {
            let ks: &[f32; K] = ks.try_into().expect("K taps");
            for (j, &kk) in ks.iter().enumerate() {
                let v = src(f + j);
                for r in 0..B {
                    s[r] += v[r] * kk;
                }
            }
        } else {
            s = weighted_sum(f, &ks[..len - f], &src);
        }
        *o = s;
    }
}

/// Σ_j `src(f + j)` × `ks[j]`, lane by lane, in order.
#[inline(always)]
fn weighted_sum<'s>(f: usize, ks: &[f32], src: &impl Fn(usize) -> &'s [f32; B]) -> [f32; B] {
    let mut s = [0f32; B];
    for (j, &kk) in ks.iter().enumerate() {
        let v = src(f + j);
        for r in 0..B {
            s[r] += v[r] * kk;
        }
    }
    s
}

/// [`hpass`] for any number of terms.
#[inline(always)]
fn hpass_any<'s>(
    k: usize,
    first: &[u32],
    taps: &[f32],
    out: &mut [[f32; B]],
    len: usize,
    src: impl Fn(usize) -> &'s [f32; B],
) {
    for ((o, &f), ks) in out.iter_mut().zip(first).zip(taps.chunks_exact(k)) {
        let f = f as usize;
        *o = weighted_sum(f, &ks[..k.min(len - f)], &src);
    }
}

/// Bilinear resampling (pixel centres aligned), for enlarging. Each source
/// row is interpolated horizontally once and reused by the output rows
/// between it and the next.
#[inline(always)]
fn bilinear(src: &Gray, tw: usize, th: usize, out: &mut Gray, bufs: &mut Bilinear) {
    out.reset(tw, th);
    let sx = src.w as f32 / tw as f32;
    let sy = src.h as f32 / th as f32;
    bufs.cols.clear();
    bufs.cols.extend((0..tw).map(|tx| {
        let fx = ((tx as f32 + 0.5) * sx - 0.5).clamp(0.0, (src.w - 1) as f32);
        let x0 = fx as usize;
        let x1 = (x0 + 1).min(src.w - 1);
        let wx = fx - x0 as f32;
        (x0 as u32, x1 as u32, 1.0 - wx, wx)
    }));
    let interp = |y: usize, dst: &mut Vec<f32>, cols: &[(u32, u32, f32, f32)]| {
        let r = src.row(y);
        dst.clear();
        dst.extend(cols.iter().map(|&(x0, x1, a, b)| r[x0 as usize] * a + r[x1 as usize] * b));
    };
    let (mut ya, mut yb) = (usize::MAX, usize::MAX);
    for ty in 0..th {
        let fy = ((ty as f32 + 0.5) * sy - 0.5).clamp(0.0, (src.h - 1) as f32);
        let y0 = fy as usize;
        let y1 = (y0 + 1).min(src.h - 1);
        let wy = fy - y0 as f32;
        if ya != y0 {
            if yb == y0 {
                std::mem::swap(&mut bufs.top, &mut bufs.bot);
                ya = yb;
                yb = usize::MAX;
            } else {
                interp(y0, &mut bufs.top, &bufs.cols);
                ya = y0;
            }
        }
        if yb != y1 {
            interp(y1, &mut bufs.bot, &bufs.cols);
            yb = y1;
        }
        let (a, b) = (1.0 - wy, wy);
        let o = &mut out.px[ty * tw..(ty + 1) * tw];
        for ((o, t), u) in o.iter_mut().zip(&bufs.top).zip(&bufs.bot) {
            *o = t * a + u * b;
        }
    }
}

/// Buffers of [`bilinear`].
#[derive(Debug, Default)]
pub(crate) struct Bilinear {
    cols: Vec<(u32, u32, f32, f32)>,
    top: Vec<f32>,
    bot: Vec<f32>,
}

/// Target size for a longest side of `side`.
pub(crate) fn fit(w: usize, h: usize, side: usize) -> (usize, usize) {
    let s = side as f64 / w.max(h) as f64;
    (((w as f64 * s).round() as usize).max(1), ((h as f64 * s).round() as usize).max(1))
}

/// The size a `w`×`h` image is reduced to for a longest side of `side` ([`fit`]), when that is a
/// reduction (no side grows); `None` when it would be enlarged instead.
pub(crate) fn reduction(w: usize, h: usize, side: usize) -> Option<(usize, usize)> {
    let (tw, th) = fit(w, h, side);
    (tw <= w && th <= h).then_some((tw, th))
}

/// Area-averaged reduction of a grey image to `tw`×`th` (`tw ≤ w`, `th ≤ h`)
/// into `out`; `src_t`: the image transposed ([`transpose`]).
#[inline(always)]
pub(crate) fn reduce(src_t: &Gray, tw: usize, th: usize, out: &mut Gray, red: &mut Reducer) {
    let (w, h) = (src_t.h, src_t.w);
    debug_assert!(tw <= w && th <= h);
    red.reduce((w, h), (tw, th), out, TransposedRows(src_t));
}

/// Luma of packed pixel rows reduced to a longest side of `side` (area
/// average), or enlarged bilinearly when smaller, into `out` (`full`: scratch).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn working_luma(
    w: usize,
    h: usize,
    stride: usize,
    format: PixelFormat,
    data: &[u8],
    side: usize,
    out: &mut Gray,
    full: &mut Gray,
    red: &mut Reducer,
    bil: &mut Bilinear,
) {
    if let Some((tw, th)) = reduction(w, h, side) {
        red.reduce((w, h), (tw, th), out, LumaRows { w, format, data, stride });
    } else {
        let (tw, th) = fit(w, h, side);
        full.reset(w, h);
        for y in 0..h {
            luma_row(format, &data[y * stride..], &mut full.px[y * w..(y + 1) * w]);
        }
        bilinear(full, tw, th, out, bil);
    }
}

/// Binomial [1 4 6 4 1]/16 kernel (σ ≈ 1).
pub(crate) const K: [f32; 5] = [1.0 / 16.0, 4.0 / 16.0, 6.0 / 16.0, 4.0 / 16.0, 1.0 / 16.0];

/// Vertical binomial pass: `o = 0 + r0·K0 + r1·K1 + … + r4·K4`, left to right.
#[inline(always)]
pub(crate) fn vsum5(o: &mut [f32], r: [&[f32]; 5]) {
    let n = o.len();
    let (r0, r1, r2, r3, r4) = (&r[0][..n], &r[1][..n], &r[2][..n], &r[3][..n], &r[4][..n]);
    for i in 0..n {
        o[i] = 0.0 + r0[i] * K[0] + r1[i] * K[1] + r2[i] * K[2] + r3[i] * K[3] + r4[i] * K[4];
    }
}

/// Horizontal binomial pass away from the edges: `o[i]` centred on `r[i + 2]`.
#[inline(always)]
pub(crate) fn hsum5(o: &mut [f32], r: &[f32]) {
    let n = o.len();
    let (r0, r1, r2, r3, r4) = (&r[..n], &r[1..n + 1], &r[2..n + 2], &r[3..n + 3], &r[4..n + 4]);
    for i in 0..n {
        o[i] = (r0[i] + r4[i]) * K[0] + (r1[i] + r3[i]) * K[1] + r2[i] * K[2];
    }
}

/// Separable binomial [1 4 6 4 1]/16 smoothing (σ ≈ 1), edges clamped, into
/// `out` (`tmp`: scratch row).
#[inline(always)]
pub(crate) fn smooth(src: &Gray, out: &mut Gray, tmp: &mut Vec<f32>) {
    let (w, h) = (src.w, src.h);
    out.reset(w, h);
    tmp.resize(w, 0.0);
    for y in 0..h {
        // Vertical pass (clamped rows).
        let yy = |i: isize| (y as isize + i - 2).clamp(0, h as isize - 1) as usize;
        vsum5(tmp, [src.row(yy(0)), src.row(yy(1)), src.row(yy(2)), src.row(yy(3)), src.row(yy(4))]);
        // Horizontal pass: clamped ends, plain interior.
        let r = &tmp[..];
        let o = &mut out.px[y * w..(y + 1) * w];
        let edge = |x: usize| -> f32 {
            let mut s = 0.0;
            for (i, kk) in K.iter().enumerate() {
                s += r[(x as isize + i as isize - 2).clamp(0, w as isize - 1) as usize] * kk;
            }
            s
        };
        if w < 5 {
            for (x, v) in o.iter_mut().enumerate() {
                *v = edge(x);
            }
            continue;
        }
        o[0] = edge(0);
        o[1] = edge(1);
        o[w - 2] = edge(w - 2);
        o[w - 1] = edge(w - 1);
        hsum5(&mut o[2..w - 2], r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn luma(w: usize, h: usize, data: &[u8], side: usize) -> Gray {
        let mut out = Gray::default();
        working_luma(
            w,
            h,
            w,
            PixelFormat::Luma8,
            data,
            side,
            &mut out,
            &mut Gray::default(),
            &mut Reducer::default(),
            &mut Bilinear::default(),
        );
        out
    }

    #[test]
    fn area_reduction_preserves_the_mean_and_a_constant() {
        let (w, h) = (37usize, 23usize);
        let data: Vec<u8> = (0..w * h).map(|i| (i * 31 % 256) as u8).collect();
        let g = luma(w, h, &data, 16);
        assert_eq!((g.w, g.h), (16, 10));
        let mean_src: f64 = data.iter().map(|&v| f64::from(v)).sum::<f64>() / (w * h) as f64;
        let mean_dst: f64 = g.px[..g.w * g.h].iter().map(|&v| f64::from(v)).sum::<f64>() / (g.w * g.h) as f64;
        assert!((mean_src - mean_dst).abs() < 2.0, "{mean_src} vs {mean_dst}");
        let c = vec![77u8; w * h];
        let g = luma(w, h, &c, 16);
        assert!(g.px[..g.w * g.h].iter().all(|&v| (v - 77.0).abs() < 1e-3));
        // Enlarging keeps a constant too.
        let g = luma(w, h, &c, 64);
        assert_eq!(g.w, 64);
        assert!(g.px[..g.w * g.h].iter().all(|&v| (v - 77.0).abs() < 1e-3));
    }
}
