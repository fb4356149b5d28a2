//! Luma working images: area-averaged reduction to a fixed longest side, a
//! small image pyramid, and binomial smoothing.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn area_reduction_preserves_the_mean_and_a_constant() {
        let (w, h) = (37usize, 23usize);
        let data: Vec<u8> = (0..w * h).map(|i| (i * 31 % 256) as u8).collect();
        let g = working_luma(w, h, w, PixelFormat::Luma8, &data, 16);
        assert_eq!((g.w, g.h), (16, 10));
        let mean_src: f64 = data.iter().map(|&v| f64::from(v)).sum::<f64>() / (w * h) as f64;
        let mean_dst: f64 = g.px.iter().map(|&v| f64::from(v)).sum::<f64>() / (g.w * g.h) as f64;
        assert!((mean_src - mean_dst).abs() < 2.0, "{mean_src} vs {mean_dst}");
        let c = vec![77u8; w * h];
        let g = working_luma(w, h, w, PixelFormat::Luma8, &c, 16);
        assert!(g.px.iter().all(|&v| (v - 77.0).abs() < 1e-3));
        // Enlarging keeps a constant too.
        let g = working_luma(w, h, w, PixelFormat::Luma8, &c, 64);
        assert_eq!(g.w, 64);
        assert!(g.px.iter().all(|&v| (v - 77.0).abs() < 1e-3));
    }
}
