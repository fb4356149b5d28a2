//! Synthetic test images (generated in-test: no corpus, no files).

use crate::rng::Rng;
use image::{Rgb, RgbImage};

/// A smooth random "photo": a few random coloured blobs and waves on a gradient.
/// Different seeds give images whose PDQ hashes are far apart. The texture is
/// kept smooth: PDQ's dihedral hashes are exact only up to its downsampling's
/// sample positions, which are not mirror-symmetric, so fine texture can move
/// a rotated image's hash by 20–30 bits (real photos: see the benchmark).
pub fn photo(w: u32, h: u32, seed: u64) -> RgbImage {
    let mut r = Rng::new(seed);
    let blobs: Vec<(f32, f32, f32, [f32; 3])> = (0..6)
        .map(|_| {
            let c = r.rgb();
            (r.f64() as f32, r.f64() as f32, r.range(0.08, 0.3) as f32, c.map(f32::from))
        })
        .collect();
    let (fx, fy, ph) =
        (r.range(2.0, 7.0) as f32, r.range(2.0, 7.0) as f32, r.range(0.0, std::f64::consts::TAU) as f32);
    let rects: Vec<(f32, f32, f32, f32, [f32; 3])> = (0..5)
        .map(|_| {
            let c = r.rgb();
            let (x0, y0) = (r.f64() as f32, r.f64() as f32);
            (x0, y0, x0 + r.range(0.1, 0.4) as f32, y0 + r.range(0.1, 0.4) as f32, c.map(f32::from))
        })
        .collect();
    RgbImage::from_fn(w, h, |x, y| {
        let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
        let wave = 40.0 * (fx * u * std::f32::consts::TAU + fy * v * std::f32::consts::PI + ph).sin();
        let mut c = [60.0 + 100.0 * u + wave, 80.0 + 90.0 * v - wave, 120.0 - 60.0 * u + 40.0 * v];
        for &(bx, by, br, col) in &blobs {
            let d2 = ((u - bx).powi(2) + (v - by).powi(2)) / (br * br);
            let a = (-d2).exp();
            for k in 0..3 {
                c[k] = c[k] * (1.0 - a) + col[k] * a;
            }
        }
        for &(x0, y0, x1, y1, col) in &rects {
            if u >= x0 && u < x1 && v >= y0 && v < y1 {
                c = col;
            }
        }
        let grain = 12.0 * ((u * 23.0).sin() * (v * 19.0).cos());
        Rgb(c.map(|v| v + grain).map(|v| v.round().clamp(0.0, 255.0) as u8))
    })
}
