//! The fast path to PDQ's 64×64 downsample, bit-exact with the reference.
//!
//! The reference runs four full box-filter passes (rows, columns, rows,
//! columns), each a running sum with one division per pixel, and its column
//! passes walk memory a row apart. Here:
//!
//! * row passes run on eight rows at once: a block of eight rows is laid out
//!   column-major in a small tile, so one vector lane follows one row's
//!   running sum in exactly the reference's order;
//! * column passes run along whole rows of running sums (one lane per column),
//!   which is memory-order access;
//! * the luminance is computed straight into the first tile;
//! * the second column pass feeds the second row pass through a tile of eight
//!   rows instead of a full-size buffer;
//! * the second row pass only divides at the 64 sampled columns, and the last
//!   column pass only runs on those 64 columns and divides at the 64 sampled
//!   rows — every other output of the reference is computed and then thrown
//!   away by its decimation.
//!
//! Every value that reaches the output goes through the same sequence of
//! single-precision additions, subtractions and divisions as in the
//! reference, so the result is identical, not merely close.

use crate::{decimation_index, luma_of, window_size, ImageRef, LumaSink, PixelFormat};

const LANES: usize = 8;
type Lanes = [f32; LANES];

/// Working memory, reused between images.
#[derive(Debug, Default)]
pub(crate) struct Buffers {
    /// Output of the first row pass, full size, row-major.
    rows1: Vec<f32>,
    /// Tile of eight rows, column-major (`[col][lane]`).
    tile_in: Vec<Lanes>,
    /// Running column sums of the first column pass.
    col_sums: Vec<f32>,
    /// Output of the second row pass at the 64 sampled columns: `rows × 64`.
    rows2: Vec<f32>,
    /// The luminance of one row.
    line: Vec<f32>,
}

/// The luminance of one row, one loop per layout so each vectorises.
#[inline(always)]
fn luma_row(format: PixelFormat, row: &[u8], out: &mut [f32]) {
    match format {
        PixelFormat::Luma8 => {
            for (o, &g) in out.iter_mut().zip(row) {
                *o = luma_of(g, g, g);
            }
        }
        PixelFormat::LumaA8 => {
            for (o, p) in out.iter_mut().zip(row.chunks_exact(2)) {
                *o = luma_of(p[0], p[0], p[0]);
            }
        }
        PixelFormat::Rgb8 => {
            for (o, p) in out.iter_mut().zip(row.chunks_exact(3)) {
                *o = luma_of(p[0], p[1], p[2]);
            }
        }
        PixelFormat::Rgba8 => {
            for (o, p) in out.iter_mut().zip(row.chunks_exact(4)) {
                *o = luma_of(p[0], p[1], p[2]);
            }
        }
    }
}

/// The phases of the reference's running box sum over a vector of `len`.
#[derive(Clone, Copy)]
struct Phases {
    p1: usize,
    p2: usize,
    p3: usize,
    p4: usize,
}

impl Phases {
    fn new(len: usize, window: usize) -> Self {
        let half = (window + 2) / 2;
        Phases { p1: half - 1, p2: window - half + 1, p3: len - window, p4: half - 1 }
    }
}

/// One running box sum (or a bundle of them, one per lane): what to add,
/// what to subtract, and what to do at each output position.
trait BoxSum {
    fn add(&mut self, i: usize);
    fn sub(&mut self, i: usize);
    /// Output position `o`, whose window holds `count` inputs.
    fn emit(&mut self, o: usize, count: f32);
}

/// Drives `s` through the reference's four phases, in the reference's order.
#[inline(always)]
fn run_phases(ph: Phases, s: &mut impl BoxSum) {
    let (mut li, mut ri, mut oi) = (0usize, 0usize, 0usize);
    let mut cur = 0u32;
    for _ in 0..ph.p1 {
        s.add(ri);
        cur += 1;
        ri += 1;
    }
    for _ in 0..ph.p2 {
        s.add(ri);
        cur += 1;
        s.emit(oi, cur as f32);
        ri += 1;
        oi += 1;
    }
    for _ in 0..ph.p3 {
        s.add(ri);
        s.sub(li);
        s.emit(oi, cur as f32);
        li += 1;
        ri += 1;
        oi += 1;
    }
    for _ in 0..ph.p4 {
        s.sub(li);
        cur -= 1;
        s.emit(oi, cur as f32);
        li += 1;
        oi += 1;
    }
}

#[inline(always)]
fn add_to(s: &mut [f32], v: &[f32]) {
    for (a, b) in s.iter_mut().zip(v) {
        *a += b;
    }
}

#[inline(always)]
fn sub_from(s: &mut [f32], v: &[f32]) {
    for (a, b) in s.iter_mut().zip(v) {
        *a -= b;
    }
}

#[inline(always)]
fn div_into(out: &mut [f32], s: &[f32], d: f32) {
    for (o, a) in out.iter_mut().zip(s) {
        *o = a / d;
    }
}

/// The 64 source positions sampled along a dimension of `n`, ascending
/// (repeated where `n < 64`).
fn sample_positions(n: usize) -> [usize; 64] {
    let mut s = [0usize; 64];
    for (i, v) in s.iter_mut().enumerate() {
        *v = decimation_index(i, n);
    }
    s
}

/// Pass 1: along the rows of a tile of `n` rows (lane = row), every output
/// written back row-major into `out` (`n × len`).
struct RowPassFull<'a> {
    tile: &'a [Lanes],
    sum: Lanes,
    out: &'a mut [f32],
    len: usize,
    n: usize,
}

impl BoxSum for RowPassFull<'_> {
    #[inline(always)]
    fn add(&mut self, i: usize) {
        add_to(&mut self.sum, &self.tile[i]);
    }
    #[inline(always)]
    fn sub(&mut self, i: usize) {
        sub_from(&mut self.sum, &self.tile[i]);
    }
    #[inline(always)]
    fn emit(&mut self, o: usize, d: f32) {
        let mut v = [0f32; LANES];
        div_into(&mut v, &self.sum, d);
        for (l, x) in v.iter().enumerate().take(self.n) {
            self.out[l * self.len + o] = *x;
        }
    }
}

/// Pass 3: along the rows of a tile of `n` rows, divided only at the sampled
/// columns, written to `out` (`n × 64`).
struct RowPassSampled<'a> {
    tile: &'a [Lanes],
    sum: Lanes,
    samples: &'a [usize; 64],
    next: usize,
    out: &'a mut [f32],
    n: usize,
}

impl BoxSum for RowPassSampled<'_> {
    #[inline(always)]
    fn add(&mut self, i: usize) {
        add_to(&mut self.sum, &self.tile[i]);
    }
    #[inline(always)]
    fn sub(&mut self, i: usize) {
        sub_from(&mut self.sum, &self.tile[i]);
    }
    #[inline(always)]
    fn emit(&mut self, o: usize, d: f32) {
        while self.next < 64 && self.samples[self.next] == o {
            let mut v = [0f32; LANES];
            div_into(&mut v, &self.sum, d);
            for (l, x) in v.iter().enumerate().take(self.n) {
                self.out[l * 64 + self.next] = *x;
            }
            self.next += 1;
        }
    }
}

/// Pass 2: along the columns (lane = column) of the pass-1 output; each
/// finished row goes into the tile, and every eight rows the tile goes
/// through pass 3.
struct ColPassIntoTiles<'a> {
    input: &'a [f32],
    width: usize,
    height: usize,
    sums: &'a mut [f32],
    tile: &'a mut [Lanes],
    filled: usize,
    tile_row0: usize,
    row_phases: Phases,
    sample_cols: &'a [usize; 64],
    rows2: &'a mut [f32],
}

impl BoxSum for ColPassIntoTiles<'_> {
    #[inline(always)]
    fn add(&mut self, i: usize) {
        add_to(self.sums, &self.input[i * self.width..(i + 1) * self.width]);
    }
    #[inline(always)]
    fn sub(&mut self, i: usize) {
        sub_from(self.sums, &self.input[i * self.width..(i + 1) * self.width]);
    }
    #[inline(always)]
    fn emit(&mut self, _o: usize, d: f32) {
        let lane = self.filled;
        for (t, s) in self.tile.iter_mut().zip(self.sums.iter()) {
            t[lane] = s / d;
        }
        self.filled += 1;
        if self.filled == LANES || self.tile_row0 + self.filled == self.height {
            let (r0, n) = (self.tile_row0, self.filled);
            let mut p3 = RowPassSampled {
                tile: self.tile,
                sum: [0.0; LANES],
                samples: self.sample_cols,
                next: 0,
                out: &mut self.rows2[r0 * 64..(r0 + n) * 64],
                n,
            };
            run_phases(self.row_phases, &mut p3);
            self.tile_row0 += n;
            self.filled = 0;
        }
    }
}

/// Pass 4: along the 64 sampled columns, divided only at the sampled rows.
struct ColPassSampled<'a> {
    input: &'a [f32],
    sums: [f32; 64],
    samples: &'a [usize; 64],
    next: usize,
    out: &'a mut [[f32; 64]; 64],
}

impl BoxSum for ColPassSampled<'_> {
    #[inline(always)]
    fn add(&mut self, i: usize) {
        add_to(&mut self.sums, &self.input[i * 64..(i + 1) * 64]);
    }
    #[inline(always)]
    fn sub(&mut self, i: usize) {
        sub_from(&mut self.sums, &self.input[i * 64..(i + 1) * 64]);
    }
    #[inline(always)]
    fn emit(&mut self, o: usize, d: f32) {
        while self.next < 64 && self.samples[self.next] == o {
            div_into(&mut self.out[self.next], &self.sums, d);
            self.next += 1;
        }
    }
}

pub(crate) fn downsample_64(img: &ImageRef<'_>, bufs: &mut Buffers) -> [[f32; 64]; 64] {
    downsample_64_and_top(img, 0, bufs, None).0
}

/// The downsample of `img` and, when `top > 0`, of its first `top` rows (`top ≤` the height) as
/// an image of its own: the first pass runs along each row alone, with a window set by the
/// width, so the top rows' first pass is part of the whole image's and is computed once.
/// `luma`, if any, receives the luminance of every row as the first pass computes it (or of
/// none: a 64 × 64 image is its own downsample).
pub(crate) fn downsample_64_and_top(
    img: &ImageRef<'_>,
    top: usize,
    bufs: &mut Buffers,
    luma: Option<LumaSink<'_>>,
) -> ([[f32; 64]; 64], Option<[[f32; 64]; 64]>) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { downsample_64_avx2(img, top, bufs, luma) };
        }
    }
    downsample_64_generic(img, top, bufs, luma)
}

/// The same code compiled for AVX2: wider vectors, same operations. (Rust
/// never contracts a multiply and an add into an FMA, which would change the
/// rounding.)
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn downsample_64_avx2(
    img: &ImageRef<'_>,
    top: usize,
    bufs: &mut Buffers,
    luma: Option<LumaSink<'_>>,
) -> ([[f32; 64]; 64], Option<[[f32; 64]; 64]>) {
    downsample_64_generic(img, top, bufs, luma)
}

/// The reference's downsample of a 64×64 image: its luminance, unfiltered.
#[inline(always)]
fn luma_64(img: &ImageRef<'_>) -> [[f32; 64]; 64] {
    let mut out = [[0f32; 64]; 64];
    for (y, orow) in out.iter_mut().enumerate() {
        let row = img.row(y);
        for (x, o) in orow.iter_mut().enumerate() {
            let (r, g, b) = img.format.rgb_at(row, x);
            *o = luma_of(r, g, b);
        }
    }
    out
}

#[inline(always)]
fn downsample_64_generic(
    img: &ImageRef<'_>,
    top: usize,
    bufs: &mut Buffers,
    luma: Option<LumaSink<'_>>,
) -> ([[f32; 64]; 64], Option<[[f32; 64]; 64]>) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    debug_assert!(top <= h);
    // The reference takes a 64×64 luminance as the downsample itself, unfiltered.
    let unfiltered = |rows: usize| w == 64 && rows == 64;
    if !unfiltered(h) || (top > 0 && !unfiltered(top)) {
        // (The luminance goes out only with the whole image's own filtering.)
        first_pass(img, bufs, if unfiltered(h) { None } else { luma });
    }
    let whole = if unfiltered(h) { luma_64(img) } else { rest(w, h, bufs) };
    let top = (top > 0).then(|| {
        if unfiltered(top) {
            luma_64(&ImageRef { height: top as u32, ..*img })
        } else {
            rest(w, top, bufs)
        }
    });
    (whole, top)
}

/// Pass 1 (along the rows) over all of `img`, into `bufs.rows1`; each block of rows' luminance
/// also to `luma`.
#[inline(always)]
fn first_pass(img: &ImageRef<'_>, bufs: &mut Buffers, mut luma: Option<LumaSink<'_>>) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let row_phases = Phases::new(w, window_size(w));
    let Buffers { rows1, tile_in, line, .. } = bufs;
    line.clear();
    line.resize(w, 0.0);
    // Pass 1 writes every element of `rows1` before anything reads it, so a reused buffer is
    // not zeroed again (that fill was ~4% of a hash); only new elements are initialised.
    rows1.resize(w * h, 0.0);
    tile_in.clear();
    tile_in.resize(w, [0.0; LANES]);
    // Eight rows at a time; the luminance goes straight into the tile.
    for r0 in (0..h).step_by(LANES) {
        let n = LANES.min(h - r0);
        for l in 0..n {
            luma_row(img.format, img.row(r0 + l), line);
            for (t, v) in tile_in.iter_mut().zip(line.iter()) {
                t[l] = *v;
            }
        }
        if let Some(f) = luma.as_mut() {
            f(r0, n, tile_in);
        }
        let mut p1 = RowPassFull {
            tile: tile_in,
            sum: [0.0; LANES],
            out: &mut rows1[r0 * w..(r0 + n) * w],
            len: w,
            n,
        };
        run_phases(row_phases, &mut p1);
    }
}

/// Passes 2–4 over the first `h` rows of pass 1's output (`w` wide): the downsample of those
/// rows as an image.
#[inline(always)]
fn rest(w: usize, h: usize, bufs: &mut Buffers) -> [[f32; 64]; 64] {
    let mut out = [[0f32; 64]; 64];
    let row_phases = Phases::new(w, window_size(w));
    let col_phases = Phases::new(h, window_size(h));
    let sample_cols = sample_positions(w);
    let sample_rows = sample_positions(h);
    let Buffers { rows1, tile_in, col_sums, rows2, .. } = bufs;
    tile_in.clear();
    tile_in.resize(w, [0.0; LANES]);
    rows2.clear();
    rows2.resize(h * 64, 0.0);
    col_sums.clear();
    col_sums.resize(w, 0.0);

    // Passes 2 and 3.
    let mut p2 = ColPassIntoTiles {
        input: &rows1[..w * h],
        width: w,
        height: h,
        sums: col_sums,
        tile: tile_in,
        filled: 0,
        tile_row0: 0,
        row_phases,
        sample_cols: &sample_cols,
        rows2,
    };
    run_phases(col_phases, &mut p2);

    // Pass 4.
    let mut p4 =
        ColPassSampled { input: rows2, sums: [0.0; 64], samples: &sample_rows, next: 0, out: &mut out };
    run_phases(col_phases, &mut p4);
    out
}
