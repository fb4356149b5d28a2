//! Drawing primitives for overlays: rectangles, discs, a 3×5 block font that
//! behaves like text (high-contrast strokes), a fast Gaussian-like blur and
//! bilinear sampling. No font file, nothing downloaded.

use crate::rng::Rng;
use image::{Rgb, RgbImage};

/// 3×5 glyphs for A–Z, rows top to bottom, 3 bits a row (MSB = left).
const FONT: [[u8; 5]; 26] = [
    [0b010, 0b101, 0b111, 0b101, 0b101], // A
    [0b110, 0b101, 0b110, 0b101, 0b110], // B
    [0b011, 0b100, 0b100, 0b100, 0b011], // C
    [0b110, 0b101, 0b101, 0b101, 0b110], // D
    [0b111, 0b100, 0b110, 0b100, 0b111], // E
    [0b111, 0b100, 0b110, 0b100, 0b100], // F
    [0b011, 0b100, 0b101, 0b101, 0b011], // G
    [0b101, 0b101, 0b111, 0b101, 0b101], // H
    [0b111, 0b010, 0b010, 0b010, 0b111], // I
    [0b001, 0b001, 0b001, 0b101, 0b010], // J
    [0b101, 0b101, 0b110, 0b101, 0b101], // K
    [0b100, 0b100, 0b100, 0b100, 0b111], // L
    [0b101, 0b111, 0b111, 0b101, 0b101], // M
    [0b110, 0b101, 0b101, 0b101, 0b101], // N
    [0b010, 0b101, 0b101, 0b101, 0b010], // O
    [0b110, 0b101, 0b110, 0b100, 0b100], // P
    [0b010, 0b101, 0b101, 0b110, 0b011], // Q
    [0b110, 0b101, 0b110, 0b101, 0b101], // R
    [0b011, 0b100, 0b010, 0b001, 0b110], // S
    [0b111, 0b010, 0b010, 0b010, 0b010], // T
    [0b101, 0b101, 0b101, 0b101, 0b111], // U
    [0b101, 0b101, 0b101, 0b101, 0b010], // V
    [0b101, 0b101, 0b111, 0b111, 0b101], // W
    [0b101, 0b101, 0b010, 0b101, 0b101], // X
    [0b101, 0b101, 0b010, 0b010, 0b010], // Y
    [0b111, 0b001, 0b010, 0b100, 0b111], // Z
];

/// A random upper-case "sentence" of `chars` characters with spaces.
pub fn random_text(rng: &mut Rng, chars: usize) -> String {
    let mut s = String::with_capacity(chars);
    let mut word = 0;
    while s.len() < chars {
        if word >= 2 && rng.below(5) == 0 {
            s.push(' ');
            word = 0;
        } else {
            s.push((b'A' + rng.below(26) as u8) as char);
            word += 1;
        }
    }
    s
}

/// Width in pixels of `text` drawn with cell size `cell` (glyph = 3×5 cells, 1 cell gap).
pub fn text_width(text: &str, cell: u32) -> u32 {
    (text.chars().count() as u32 * 4).saturating_sub(1) * cell
}

/// Blend `c` into pixel (x, y) with opacity `alpha` (1 = opaque). Out-of-bounds is ignored.
#[inline]
pub fn blend(img: &mut RgbImage, x: i64, y: i64, c: [u8; 3], alpha: f32) {
    if x < 0 || y < 0 || x >= i64::from(img.width()) || y >= i64::from(img.height()) {
        return;
    }
    let p = img.get_pixel_mut(x as u32, y as u32);
    if alpha >= 1.0 {
        *p = Rgb(c);
    } else {
        for (v, &ck) in p.0.iter_mut().zip(&c) {
            *v = (f32::from(*v) * (1.0 - alpha) + f32::from(ck) * alpha).round() as u8;
        }
    }
}

/// Fill the rectangle [x0, x0+w) × [y0, y0+h), clipped.
pub fn fill_rect(img: &mut RgbImage, x0: i64, y0: i64, w: i64, h: i64, c: [u8; 3], alpha: f32) {
    let (iw, ih) = (i64::from(img.width()), i64::from(img.height()));
    for y in y0.max(0)..(y0 + h).min(ih) {
        for x in x0.max(0)..(x0 + w).min(iw) {
            blend(img, x, y, c, alpha);
        }
    }
}

/// Fill a disc of radius `r` centred at (cx, cy), clipped.
pub fn fill_disc(img: &mut RgbImage, cx: i64, cy: i64, r: i64, c: [u8; 3], alpha: f32) {
    let r2 = r * r;
    for y in cy - r..=cy + r {
        for x in cx - r..=cx + r {
            let (dx, dy) = (x - cx, y - cy);
            if dx * dx + dy * dy <= r2 {
                blend(img, x, y, c, alpha);
            }
        }
    }
}

/// Draw `text` (A–Z and space; anything else is a space) at (x, y), cell size `cell`.
/// With `outline`, each glyph cell gets a border of `cell/3` (at least 1) pixels in that colour
/// first, as meme captions have.
#[allow(clippy::too_many_arguments)]
pub fn draw_text(
    img: &mut RgbImage,
    x: i64,
    y: i64,
    cell: u32,
    text: &str,
    c: [u8; 3],
    outline: Option<[u8; 3]>,
    alpha: f32,
) {
    let cell = i64::from(cell.max(1));
    let passes: &[(i64, [u8; 3])] = &match outline {
        Some(o) => vec![((cell / 3).max(1), o), (0, c)],
        None => vec![(0, c)],
    };
    for &(grow, colour) in passes {
        for (i, ch) in text.chars().enumerate() {
            let idx = match ch {
                'A'..='Z' => ch as usize - 'A' as usize,
                _ => continue,
            };
            let gx = x + i as i64 * 4 * cell;
            for (row, bits) in FONT[idx].iter().enumerate() {
                for col in 0..3 {
                    if bits >> (2 - col) & 1 == 1 {
                        fill_rect(
                            img,
                            gx + col * cell - grow,
                            y + row as i64 * cell - grow,
                            cell + 2 * grow,
                            cell + 2 * grow,
                            colour,
                            alpha,
                        );
                    }
                }
            }
        }
    }
}

#[allow(clippy::needless_range_loop)]
/// One horizontal box-filter pass of radius r (window 2r+1, edges clamped), in place on f32 planes.
fn box_h(src: &[f32], dst: &mut [f32], w: usize, h: usize, r: usize) {
    let norm = 1.0 / (2 * r + 1) as f32;
    for y in 0..h {
        let row = &src[y * w..(y + 1) * w];
        let out = &mut dst[y * w..(y + 1) * w];
        let at = |i: isize| row[i.clamp(0, w as isize - 1) as usize];
        let mut acc: f32 = (-(r as isize)..=r as isize).map(at).sum();
        for x in 0..w {
            out[x] = acc * norm;
            acc += at(x as isize + r as isize + 1) - at(x as isize - r as isize);
        }
    }
}

fn transpose(src: &[f32], dst: &mut [f32], w: usize, h: usize) {
    for y in 0..h {
        for x in 0..w {
            dst[x * h + y] = src[y * w + x];
        }
    }
}

/// Approximate Gaussian blur of standard deviation `sigma` (three box passes each way).
pub fn blur(img: &RgbImage, sigma: f32) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if sigma <= 0.0 || w == 0 || h == 0 {
        return img.clone();
    }
    // Three boxes of width d: variance 3 (d² − 1) / 12 = σ².
    let d = ((4.0 * sigma * sigma + 1.0).sqrt()).round().max(1.0) as usize;
    let r = d / 2;
    let mut out = RgbImage::new(w as u32, h as u32);
    let mut a = vec![0f32; w * h];
    let mut b = vec![0f32; w * h];
    for ch in 0..3 {
        for (i, p) in img.pixels().enumerate() {
            a[i] = f32::from(p.0[ch]);
        }
        for _ in 0..3 {
            box_h(&a, &mut b, w, h, r);
            std::mem::swap(&mut a, &mut b);
        }
        transpose(&a, &mut b, w, h);
        std::mem::swap(&mut a, &mut b);
        for _ in 0..3 {
            box_h(&a, &mut b, h, w, r);
            std::mem::swap(&mut a, &mut b);
        }
        transpose(&a, &mut b, h, w);
        for (i, p) in out.pixels_mut().enumerate() {
            p.0[ch] = b[i].round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// Bilinear sample at (x, y) in pixel-centre coordinates; `None` outside the image.
#[inline]
pub fn sample_bilinear(img: &RgbImage, x: f32, y: f32) -> Option<[u8; 3]> {
    let (w, h) = (img.width() as f32, img.height() as f32);
    if x < -0.5 || y < -0.5 || x > w - 0.5 || y > h - 0.5 {
        return None;
    }
    let xc = x.clamp(0.0, w - 1.0);
    let yc = y.clamp(0.0, h - 1.0);
    let (x0, y0) = (xc.floor() as u32, yc.floor() as u32);
    let x1 = (x0 + 1).min(img.width() - 1);
    let y1 = (y0 + 1).min(img.height() - 1);
    let (fx, fy) = (xc - x0 as f32, yc - y0 as f32);
    let (p00, p10, p01, p11) =
        (img.get_pixel(x0, y0).0, img.get_pixel(x1, y0).0, img.get_pixel(x0, y1).0, img.get_pixel(x1, y1).0);
    let mut out = [0u8; 3];
    for k in 0..3 {
        let top = f32::from(p00[k]) * (1.0 - fx) + f32::from(p10[k]) * fx;
        let bot = f32::from(p01[k]) * (1.0 - fx) + f32::from(p11[k]) * fx;
        out[k] = (top * (1.0 - fy) + bot * fy).round() as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blur_keeps_flat_and_smooths_edges() {
        let mut img = RgbImage::from_pixel(40, 30, Rgb([100, 100, 100]));
        let flat = blur(&img, 3.0);
        assert!(flat.pixels().all(|p| p.0 == [100, 100, 100]));
        fill_rect(&mut img, 20, 0, 20, 30, [200, 200, 200], 1.0);
        let b = blur(&img, 2.0);
        let edge = b.get_pixel(20, 15).0[0];
        assert!(edge > 110 && edge < 190, "edge {edge}");
        assert_eq!(b.get_pixel(0, 15).0[0], 100);
    }

    #[test]
    fn text_draws_strokes_inside_its_box() {
        let mut img = RgbImage::from_pixel(60, 20, Rgb([0, 0, 0]));
        draw_text(&mut img, 2, 2, 2, "HI", [255, 255, 255], None, 1.0);
        let lit = img.pixels().filter(|p| p.0[0] == 255).count();
        // H has 11 set cells, I has 9: 20 cells of 2×2 pixels.
        assert_eq!(lit, 20 * 4);
        assert_eq!(text_width("HI", 2), 14);
    }
}
