//! The straightforward implementation the extraction started from (f32
//! images, one allocation per step), kept for the tests: the optimised
//! kernels of `gray` and `features` must give bit-identical output.

use crate::features::{Corner, Detection, Pyramid, Selection, LOW_PER_CELL, PATCH_RADIUS};
use consentry_pdq::PixelFormat;

const MARGIN: usize = PATCH_RADIUS as usize + 1;
const MIN_RESPONSE: f32 = 400.0;

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
}

#[inline(always)]
fn luma(r: u8, g: u8, b: u8) -> f32 {
    0.299 * f32::from(r) + 0.587 * f32::from(g) + 0.114 * f32::from(b)
}

fn luma_row(format: PixelFormat, row: &[u8], w: usize, out: &mut [f32]) {
    let c = format.channels();
    let row = &row[..w * c];
    match format {
        PixelFormat::Luma8 | PixelFormat::LumaA8 => {
            for (o, p) in out.iter_mut().zip(row.chunks_exact(c)) {
                *o = f32::from(p[0]);
            }
        }
        PixelFormat::Rgb8 => {
            for (o, p) in out.iter_mut().zip(row.chunks_exact(3)) {
                *o = luma(p[0], p[1], p[2]);
            }
        }
        PixelFormat::Rgba8 => {
            for (o, p) in out.iter_mut().zip(row.chunks_exact(4)) {
                *o = luma(p[0], p[1], p[2]);
            }
        }
    }
}

/// Weights of a 1-D area (box) reduction from `n` samples to `m ≤ n`: for
/// each source sample, up to two (target, weight) pairs.
fn area_weights(n: usize, m: usize) -> Vec<[(u32, f32); 2]> {
    let f = n as f64 / m as f64;
    (0..n)
        .map(|i| {
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
        })
        .collect()
}

/// Bilinear resampling (pixel centres aligned), for enlarging.
fn bilinear(src: &Gray, tw: usize, th: usize) -> Gray {
    let mut px = vec![0f32; tw * th];
    let sx = src.w as f32 / tw as f32;
    let sy = src.h as f32 / th as f32;
    for ty in 0..th {
        let fy = ((ty as f32 + 0.5) * sy - 0.5).clamp(0.0, (src.h - 1) as f32);
        let y0 = fy as usize;
        let y1 = (y0 + 1).min(src.h - 1);
        let wy = fy - y0 as f32;
        for tx in 0..tw {
            let fx = ((tx as f32 + 0.5) * sx - 0.5).clamp(0.0, (src.w - 1) as f32);
            let x0 = fx as usize;
            let x1 = (x0 + 1).min(src.w - 1);
            let wx = fx - x0 as f32;
            let top = src.at(x0, y0) * (1.0 - wx) + src.at(x1, y0) * wx;
            let bot = src.at(x0, y1) * (1.0 - wx) + src.at(x1, y1) * wx;
            px[ty * tw + tx] = top * (1.0 - wy) + bot * wy;
        }
    }
    Gray { w: tw, h: th, px }
}

/// Target size for a longest side of `side`.
pub(crate) fn fit(w: usize, h: usize, side: usize) -> (usize, usize) {
    let s = side as f64 / w.max(h) as f64;
    (((w as f64 * s).round() as usize).max(1), ((h as f64 * s).round() as usize).max(1))
}

/// Area-averaged reduction of a grey image (or bilinear enlargement).
pub(crate) fn resize(src: &Gray, tw: usize, th: usize) -> Gray {
    if tw > src.w || th > src.h {
        return bilinear(src, tw, th);
    }
    reduce_rows(src.w, src.h, tw, th, |y, out| {
        out[..src.w].copy_from_slice(&src.px[y * src.w..(y + 1) * src.w])
    })
}

/// Streaming separable area reduction; `row(y, buf)` fills source row `y`.
fn reduce_rows(w: usize, h: usize, tw: usize, th: usize, mut row: impl FnMut(usize, &mut [f32])) -> Gray {
    let wx = area_weights(w, tw);
    let wy = area_weights(h, th);
    let mut out = vec![0f32; tw * th];
    let mut line = vec![0f32; w];
    let mut hrow = vec![0f32; tw];
    for (y, wyy) in wy.iter().enumerate() {
        row(y, &mut line);
        hrow.iter_mut().for_each(|v| *v = 0.0);
        for (x, ww) in wx.iter().enumerate() {
            let v = line[x];
            hrow[ww[0].0 as usize] += v * ww[0].1;
            hrow[ww[1].0 as usize] += v * ww[1].1;
        }
        for &(t, k) in wyy {
            if k != 0.0 {
                let o = &mut out[t as usize * tw..(t as usize + 1) * tw];
                for (a, b) in o.iter_mut().zip(&hrow) {
                    *a += b * k;
                }
            }
        }
    }
    Gray { w: tw, h: th, px: out }
}

/// Luma of packed pixel rows reduced to a longest side of `side` (area
/// average), or enlarged bilinearly when smaller.
pub(crate) fn working_luma(
    w: usize,
    h: usize,
    stride: usize,
    format: PixelFormat,
    data: &[u8],
    side: usize,
) -> Gray {
    let (tw, th) = fit(w, h, side);
    if tw <= w && th <= h {
        reduce_rows(w, h, tw, th, |y, out| luma_row(format, &data[y * stride..], w, out))
    } else {
        let mut full = Gray { w, h, px: vec![0.0; w * h] };
        for y in 0..h {
            luma_row(format, &data[y * stride..], w, &mut full.px[y * w..(y + 1) * w]);
        }
        bilinear(&full, tw, th)
    }
}

/// Separable binomial [1 4 6 4 1]/16 smoothing (σ ≈ 1), edges clamped.
pub(crate) fn smooth(src: &Gray) -> Gray {
    let (w, h) = (src.w, src.h);
    const K: [f32; 5] = [1.0 / 16.0, 4.0 / 16.0, 6.0 / 16.0, 4.0 / 16.0, 1.0 / 16.0];
    // Vertical pass: whole rows at a time (vectorises).
    let mut tmp = vec![0f32; w * h];
    for y in 0..h {
        let o = &mut tmp[y * w..(y + 1) * w];
        for (i, kk) in K.iter().enumerate() {
            let yy = (y as isize + i as isize - 2).clamp(0, h as isize - 1) as usize;
            for (a, b) in o.iter_mut().zip(&src.px[yy * w..(yy + 1) * w]) {
                *a += b * kk;
            }
        }
    }
    // Horizontal pass: clamped ends, plain interior.
    let mut out = vec![0f32; w * h];
    for y in 0..h {
        let r = &tmp[y * w..(y + 1) * w];
        let o = &mut out[y * w..(y + 1) * w];
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
        for x in 2..w - 2 {
            o[x] = (r[x - 2] + r[x + 2]) * K[0] + (r[x - 1] + r[x + 1]) * K[1] + r[x] * K[2];
        }
    }
    Gray { w, h, px: out }
}

/// Harris response of a smoothed image.
fn harris(s: &Gray) -> Gray {
    let (w, h) = (s.w, s.h);
    let mut xx = Gray { w, h, px: vec![0.0; w * h] };
    let mut yy = xx.clone();
    let mut xy = xx.clone();
    for y in 1..h.saturating_sub(1) {
        for x in 1..w - 1 {
            let gx = 0.5 * (s.at(x + 1, y) - s.at(x - 1, y));
            let gy = 0.5 * (s.at(x, y + 1) - s.at(x, y - 1));
            let i = y * w + x;
            xx.px[i] = gx * gx;
            yy.px[i] = gy * gy;
            xy.px[i] = gx * gy;
        }
    }
    let (xx, yy, xy) = (smooth(&xx), smooth(&yy), smooth(&xy));
    let px = (0..w * h)
        .map(|i| {
            let (a, b, c) = (xx.px[i], yy.px[i], xy.px[i]);
            a * b - c * c - 0.04 * (a + b) * (a + b)
        })
        .collect();
    Gray { w, h, px }
}

/// One pyramid level: the smoothed image used by descriptors and the corners
/// (local maxima of the response, 5×5) found on it, best first within cells.
struct Level {
    blurred: Gray,
    /// Scale from this level's pixels to level 0's.
    to0: f32,
    cand: Vec<(f32, usize, usize)>,
}

fn level(img: &Gray, to0: f32, floor: f32) -> Level {
    let s1 = smooth(img);
    let r = harris(&s1);
    let blurred = smooth(&s1);
    let (w, h) = (img.w, img.h);
    let mut cand = Vec::new();
    if w > 2 * MARGIN && h > 2 * MARGIN {
        for y in MARGIN..h - MARGIN {
            for x in MARGIN..w - MARGIN {
                let v = r.at(x, y);
                if v < floor {
                    continue;
                }
                let mut max = true;
                'n: for dy in -2i32..=2 {
                    for dx in -2i32..=2 {
                        if (dx, dy) == (0, 0) {
                            continue;
                        }
                        let u = r.at((x as i32 + dx) as usize, (y as i32 + dy) as usize);
                        // Ties: the first in raster order wins.
                        if u > v || (u == v && (dy < 0 || (dy == 0 && dx < 0))) {
                            max = false;
                            break 'n;
                        }
                    }
                }
                if max {
                    cand.push((v, x, y));
                }
            }
        }
    }
    Level { blurred, to0, cand }
}

fn describe(b: &Gray, x: usize, y: usize, pairs: &[[i8; 4]]) -> [u64; 4] {
    let mut d = [0u64; 4];
    for (k, p) in pairs.iter().enumerate() {
        let a = b.at((x as i32 + i32::from(p[0])) as usize, (y as i32 + i32::from(p[1])) as usize);
        let c = b.at((x as i32 + i32::from(p[2])) as usize, (y as i32 + i32::from(p[3])) as usize);
        if a < c {
            d[k / 64] |= 1 << (k % 64);
        }
    }
    d
}

/// A `pyramid` over the level-0
/// image, corners selected per `sel`, described with `pairs`.
/// Every maximum at `det.low_response` or more is a candidate; a cell whose strongest is at
/// [`MIN_RESPONSE`] keeps those at it, any other cell its [`LOW_PER_CELL`] strongest.
/// Corners whose descriptor is within `det.plane_limit` bits of the descriptor of
/// a pure intensity ramp with the patch's gradient are dropped (0: none).
pub(crate) fn extract(
    l0: &Gray,
    pyramid: Pyramid,
    sel: Selection,
    pairs: &[[i8; 4]],
    det: Detection,
) -> Vec<Corner> {
    let plane_limit = det.plane_limit;
    // Keeps a cell's candidates (sorted strongest first) by the rule above.
    let keep = |c: &mut Vec<(f32, usize, usize)>| {
        if c.first().is_some_and(|f| f.0 >= MIN_RESPONSE) {
            c.retain(|f| f.0 >= MIN_RESPONSE);
        } else {
            c.truncate(LOW_PER_CELL);
        }
    };
    let mut out = Vec::new();
    for l in 0..pyramid.count {
        let to0 = pyramid.reduction(l);
        let img = if l == 0 {
            l0.clone()
        } else {
            let tw = ((l0.w as f32 / to0).round() as usize).max(1);
            let th = ((l0.h as f32 / to0).round() as usize).max(1);
            resize(l0, tw, th)
        };
        let lv = level(&img, to0, det.low_response.min(MIN_RESPONSE));
        let (w, h) = (img.w, img.h);
        let chosen: Vec<(f32, usize, usize)> = match sel {
            Selection::Dense { cell, per_cell } => {
                let (cw, ch) = (w.div_ceil(cell), h.div_ceil(cell));
                let mut cells: Vec<Vec<(f32, usize, usize)>> = vec![Vec::new(); cw * ch];
                for &c in &lv.cand {
                    cells[(c.2 / cell) * cw + c.1 / cell].push(c);
                }
                let mut v = Vec::new();
                for mut c in cells {
                    c.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.2, a.1).cmp(&(b.2, b.1))));
                    keep(&mut c);
                    v.extend(c.into_iter().take(per_cell));
                }
                v
            }
            Selection::Sparse { quota, grid } => {
                let q = quota.get(l).copied().unwrap_or(0);
                let mut cells: Vec<Vec<(f32, usize, usize)>> = vec![Vec::new(); grid * grid];
                for &c in &lv.cand {
                    let gx = (c.1 * grid / w).min(grid - 1);
                    let gy = (c.2 * grid / h).min(grid - 1);
                    cells[gy * grid + gx].push(c);
                }
                for c in &mut cells {
                    c.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.2, a.1).cmp(&(b.2, b.1))));
                    keep(c);
                }
                // The lower centre of the frame (where a body usually is, and what
                // a nudify bot replaces) gets a corner every other round only:
                // more of the signature sits on the face, hair and background.
                let lower_centre = |cell: usize| {
                    let (gx, gy) = (cell % grid, cell / grid);
                    gy * 2 >= grid && gx * 4 >= grid && gx * 4 < 3 * grid
                };
                let mut taken = vec![0usize; cells.len()];
                let mut v = Vec::new();
                let mut round = 0;
                while v.len() < q {
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
                    layer.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.2, a.1).cmp(&(b.2, b.1))));
                    v.extend(layer.into_iter().take(q - v.len()));
                    round += 1;
                }
                v
            }
        };
        for (resp, x, y) in chosen {
            let desc = describe(&lv.blurred, x, y, pairs);
            if plane_limit > 0 && crate::verify::hamming(&desc, &ramp(&lv.blurred, x, y, pairs)) < plane_limit
            {
                continue;
            }
            out.push(Corner {
                x: (x as f32 + 0.5) * lv.to0 - 0.5,
                y: (y as f32 + 0.5) * lv.to0 - 0.5,
                level: l as u8,
                response: resp,
                desc,
            });
        }
    }
    out
}

/// The descriptor a linear ramp with the patch's mean gradient would have.
fn ramp(b: &Gray, x: usize, y: usize, pairs: &[[i8; 4]]) -> [u64; 4] {
    let r = PATCH_RADIUS as usize / 2;
    let gx = b.at(x + r, y) - b.at(x - r, y);
    let gy = b.at(x, y + r) - b.at(x, y - r);
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

/// The reference's corners of `px`, as [`crate::Extractor`] computes them.
fn reference_corners(
    px: &crate::Pixels<'_>,
    pyramid: Pyramid,
    sel: Selection,
    det: Detection,
) -> Vec<Corner> {
    let g =
        working_luma(px.width as usize, px.height as usize, px.stride, px.format, px.data, crate::WORK_SIDE);
    extract(&g, pyramid, sel, &crate::features::brief_pairs(), det)
}

#[test]
fn optimised_extraction_is_bit_identical_to_the_reference() {
    use crate::features::{extract as extract_dispatch, extract_generic, Scratch};
    use crate::{synth, Pixels, PROTECTED_QUOTA};
    let pairs = crate::features::brief_pairs();
    // One scratch for all: buffers left by larger and smaller images must not matter.
    let mut sc = Scratch::default();
    let mut hasher = consentry_pdq::Hasher::new();
    // Extractions whose working luma came from PDQ's luminance (RGB reduced to the working size).
    let mut shared = 0;
    let sizes = [
        (640u32, 320u32),
        (300, 200),
        (100, 700),
        (37, 41),
        (16, 16),
        (900, 130),
        (150, 150),
        (513, 257),
        (1000, 35),
    ];
    let mut total = 0;
    for (i, &(w, h)) in sizes.iter().enumerate() {
        let rgb = synth::scene(w, h, i as u64 + 11);
        let n = (w * h) as usize;
        let rgba: Vec<u8> =
            (0..n).flat_map(|p| [rgb.data[3 * p], rgb.data[3 * p + 1], rgb.data[3 * p + 2], 255]).collect();
        let luma: Vec<u8> = (0..n).map(|p| rgb.data[3 * p + 1]).collect();
        let stride = 3 * w as usize + 7;
        let mut padded = vec![0x5A; stride * h as usize];
        for y in 0..h as usize {
            padded[y * stride..y * stride + 3 * w as usize]
                .copy_from_slice(&rgb.data[y * 3 * w as usize..(y + 1) * 3 * w as usize]);
        }
        let images = [
            rgb.pixels(),
            Pixels::new(w, h, PixelFormat::Rgba8, &rgba).unwrap(),
            Pixels::new(w, h, PixelFormat::Luma8, &luma).unwrap(),
            Pixels::with_stride(w, h, stride, PixelFormat::Rgb8, &padded).unwrap(),
        ];
        for px in &images {
            let dense = Selection::Dense { cell: 32, per_cell: 2 };
            let sparse = Selection::Sparse { quota: PROTECTED_QUOTA, grid: 4 };
            let (usual, before) =
                (Detection::default(), Detection { low_response: 400.0, ..Detection::default() });
            for (pyramid, sel, det) in [
                (crate::QUERY_PYRAMID, dense, usual),
                (crate::PROTECTED_PYRAMID, sparse, usual),
                (crate::QUERY_PYRAMID, dense, Detection { plane_limit: 40, ..usual }),
                (crate::HALF_OCTAVE_QUERY_PYRAMID, dense, usual),
                (crate::QUERY_PYRAMID, dense, before),
                (crate::PROTECTED_PYRAMID, sparse, before),
                (crate::QUERY_PYRAMID, dense, Detection { low_response: 1.0, ..usual }),
            ] {
                let plane = det.plane_limit;
                let want = reference_corners(px, pyramid, sel, det);
                let from_pdq = sc.begin_shared_luma(w as usize, h as usize, px.format) && {
                    let img =
                        consentry_pdq::ImageRef::with_stride(w, h, px.stride, px.format, px.data).unwrap();
                    hasher.hash_dihedral_with_top_and_luma(&img, h / 5, &mut |y0, n, block| {
                        sc.push_luma(y0, n, block)
                    });
                    sc.shared_luma_complete()
                };
                shared += usize::from(from_pdq);
                for (path, got) in [
                    (
                        "luma from PDQ",
                        extract_dispatch(px, pyramid, sel, &pairs, det, &mut sc, from_pdq, None),
                    ),
                    ("dispatched", extract_dispatch(px, pyramid, sel, &pairs, det, &mut sc, false, None)),
                    ("generic", extract_generic(px, pyramid, sel, &pairs, det, &mut sc, false, None)),
                ] {
                    let at = got.iter().zip(&want).position(|(a, b)| a != b);
                    assert!(
                        got.len() == want.len() && at.is_none(),
                        "{w}x{h} {:?} {sel:?} plane {plane} low {} ({path}): {} vs {} corners, first difference {:?}",
                        px.format,
                        det.low_response,
                        got.len(),
                        want.len(),
                        at.map(|i| (got[i], want[i])),
                    );
                }
                total += want.len();
            }
        }
    }
    assert!(total > 5000, "{total} corners");
    // 5 sizes reduced to the working size (640×320, 100×700, 900×130, 513×257, 1000×35) × 3 RGB
    // layouts × 7 detections
    assert_eq!(shared, 5 * 3 * 7, "extractions with the luma from PDQ");
}
