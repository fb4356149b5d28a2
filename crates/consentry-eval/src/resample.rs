//! Fast separable resampling of RGB images with a Catmull–Rom (bicubic,
//! a = −0.5) kernel, widened by the scale factor when downscaling (as image
//! libraries do). Integer input and output, f32 weights.

use image::RgbImage;

fn cubic(x: f32) -> f32 {
    let x = x.abs();
    if x < 1.0 {
        1.5 * x * x * x - 2.5 * x * x + 1.0
    } else if x < 2.0 {
        -0.5 * x * x * x + 2.5 * x * x - 4.0 * x + 2.0
    } else {
        0.0
    }
}

/// For each output index: the first source index and the normalised weights.
fn weights(src: u32, dst: u32) -> Vec<(usize, Vec<f32>)> {
    let scale = src as f32 / dst as f32;
    let support = 2.0 * scale.max(1.0);
    let kscale = scale.max(1.0);
    (0..dst)
        .map(|i| {
            let centre = (i as f32 + 0.5) * scale - 0.5;
            let lo = ((centre - support).floor() as i64).max(0) as usize;
            let hi = ((centre + support).ceil() as i64).min(i64::from(src) - 1).max(lo as i64) as usize;
            let mut w: Vec<f32> = (lo..=hi).map(|j| cubic((j as f32 - centre) / kscale)).collect();
            let sum: f32 = w.iter().sum();
            if sum.abs() > 1e-6 {
                w.iter_mut().for_each(|v| *v /= sum);
            } else {
                w.iter_mut().for_each(|v| *v = 0.0);
                let k = (centre.round().clamp(lo as f32, hi as f32) as usize) - lo;
                w[k] = 1.0;
            }
            (lo, w)
        })
        .collect()
}

/// Resize to exactly `nw` × `nh` (each at least 1).
pub fn resize(img: &RgbImage, nw: u32, nh: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let (nw, nh) = (nw.max(1), nh.max(1));
    if (w, h) == (nw, nh) {
        return img.clone();
    }
    let src = img.as_raw();
    // Horizontal pass: h rows of nw pixels, f32.
    let wx = weights(w, nw);
    let mut tmp = vec![0f32; h as usize * nw as usize * 3];
    for y in 0..h as usize {
        let row = &src[y * w as usize * 3..(y + 1) * w as usize * 3];
        let out = &mut tmp[y * nw as usize * 3..(y + 1) * nw as usize * 3];
        for (x, (lo, ws)) in wx.iter().enumerate() {
            let mut acc = [0f32; 3];
            for (k, &wt) in ws.iter().enumerate() {
                let p = &row[(lo + k) * 3..(lo + k) * 3 + 3];
                acc[0] += wt * f32::from(p[0]);
                acc[1] += wt * f32::from(p[1]);
                acc[2] += wt * f32::from(p[2]);
            }
            out[x * 3..x * 3 + 3].copy_from_slice(&acc);
        }
    }
    // Vertical pass.
    let wy = weights(h, nh);
    let stride = nw as usize * 3;
    let mut dst = vec![0u8; nh as usize * stride];
    let mut acc = vec![0f32; stride];
    for (y, (lo, ws)) in wy.iter().enumerate() {
        acc.iter_mut().for_each(|a| *a = 0.0);
        for (k, &wt) in ws.iter().enumerate() {
            let row = &tmp[(lo + k) * stride..(lo + k + 1) * stride];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += wt * v;
            }
        }
        for (d, a) in dst[y * stride..(y + 1) * stride].iter_mut().zip(&acc) {
            *d = a.round().clamp(0.0, 255.0) as u8;
        }
    }
    RgbImage::from_raw(nw, nh, dst).expect("sizes match")
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn flat_stays_flat_and_sizes_are_exact() {
        let img = RgbImage::from_pixel(37, 23, Rgb([10, 200, 90]));
        for (nw, nh) in [(10, 5), (74, 46), (1, 1), (37, 50)] {
            let r = resize(&img, nw, nh);
            assert_eq!(r.dimensions(), (nw, nh));
            assert!(r.pixels().all(|p| p.0 == [10, 200, 90]));
        }
    }

    #[test]
    fn close_to_the_image_crate() {
        let img = crate::testutil::photo(300, 200, 5);
        for (nw, nh) in [(120, 80), (450, 300)] {
            let a = resize(&img, nw, nh);
            let b = image::imageops::resize(&img, nw, nh, image::imageops::FilterType::CatmullRom);
            let diff: f64 =
                a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| f64::from(x.abs_diff(*y))).sum::<f64>()
                    / a.as_raw().len() as f64;
            assert!(diff < 2.0, "mean abs diff {diff}");
        }
    }
}
