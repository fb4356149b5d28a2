//! A direct, unoptimised transcription of Meta's PDQ algorithm.
//!
//! It follows the order of floating-point operations of Meta's C++ reference
//! one for one, which is what makes its output bit-exact. It is slow (the
//! column passes walk memory with a stride of one row) and exists so the fast
//! path in [`crate::fast`] can be checked against it on arbitrary images.

use crate::{dct64_to_16, dct_matrix, window_size, ImageRef};

/// Luminance of the image in row-major order, as the reference computes it.
pub(crate) fn luma(img: &ImageRef<'_>) -> Vec<f32> {
    let (w, h) = (img.width as usize, img.height as usize);
    let mut out = Vec::with_capacity(w * h);
    for y in 0..h {
        let row = img.row(y);
        for x in 0..w {
            let (r, g, b) = img.format.rgb_at(row, x);
            out.push(crate::luma_of(r, g, b));
        }
    }
    out
}

/// One box-filter pass along a vector, exactly as the reference's `box1DFloat`.
fn box_1d(input: &[f32], output: &mut [f32], len: usize, stride: usize, window: usize) {
    let half = (window + 2) / 2;
    let phase1 = half - 1;
    let phase2 = window - half + 1;
    let phase3 = len - window;
    let phase4 = half - 1;
    let (mut li, mut ri, mut oi) = (0usize, 0usize, 0usize);
    let mut sum = 0.0f32;
    let mut cur = 0u32;
    for _ in 0..phase1 {
        sum += input[ri];
        cur += 1;
        ri += stride;
    }
    for _ in 0..phase2 {
        sum += input[ri];
        cur += 1;
        output[oi] = sum / cur as f32;
        ri += stride;
        oi += stride;
    }
    for _ in 0..phase3 {
        sum += input[ri];
        sum -= input[li];
        output[oi] = sum / cur as f32;
        li += stride;
        ri += stride;
        oi += stride;
    }
    for _ in 0..phase4 {
        sum -= input[li];
        cur -= 1;
        output[oi] = sum / cur as f32;
        li += stride;
        oi += stride;
    }
}

/// The 64x64 blurred and decimated luminance, as the reference computes it.
pub(crate) fn downsample_64(luma: &mut [f32], rows: usize, cols: usize) -> [[f32; 64]; 64] {
    let mut out = [[0f32; 64]; 64];
    if rows == 64 && cols == 64 {
        for (i, row) in out.iter_mut().enumerate() {
            row.copy_from_slice(&luma[i * 64..(i + 1) * 64]);
        }
        return out;
    }
    let win_rows = window_size(cols);
    let win_cols = window_size(rows);
    let mut tmp = vec![0f32; rows * cols];
    for _ in 0..2 {
        for i in 0..rows {
            box_1d(&luma[i * cols..], &mut tmp[i * cols..], cols, 1, win_rows);
        }
        for j in 0..cols {
            box_1d(&tmp[j..], &mut luma[j..], rows, cols, win_cols);
        }
    }
    for (i, orow) in out.iter_mut().enumerate() {
        let ini = crate::decimation_index(i, rows);
        for (j, o) in orow.iter_mut().enumerate() {
            let inj = crate::decimation_index(j, cols);
            *o = luma[ini * cols + inj];
        }
    }
    out
}

/// The 16x16 DCT coefficients and quality of an image, reference path.
pub fn pdq_dct(img: &ImageRef<'_>) -> Option<([[f32; 16]; 16], u8)> {
    let (w, h) = (img.width as usize, img.height as usize);
    if w < crate::MIN_HASHABLE_DIM || h < crate::MIN_HASHABLE_DIM {
        return None;
    }
    let mut l = luma(img);
    let b64 = downsample_64(&mut l, h, w);
    let quality = crate::quality_metric(&b64);
    Some((dct64_to_16(&dct_matrix(), &b64), quality))
}
