//! PDQ perceptual hashing, bit-exact with Meta's reference implementation.
//!
//! PDQ turns an image into a 256-bit hash such that visually similar images
//! have hashes a small Hamming distance apart (Meta's matching threshold is a
//! distance of 31 or less). This crate takes pixels already in memory and
//! returns the hash, its quality (0–100), and optionally the hashes of the
//! eight dihedral transforms of the image (rotations and flips), all derived
//! from one DCT as Meta's reference does.
//!
//! The output is bit-for-bit what Meta's C++ reference computes on the same
//! 8-bit RGB pixels; the work is arranged differently (row passes run on eight
//! rows at a time, only the needed outputs of the last passes are computed),
//! but every floating-point operation that feeds the result happens in the
//! reference's order.
//!
//! No I/O and no dependencies: decoding image files is `consentry-media`'s job.
//!
//! For a caller that hashes more than the whole image (consentry-derive hashes its top band too,
//! and reduces the same pixels to a working image), [`Hasher::hash_dihedral_with_top`] hashes an
//! image and its first rows together, their first (row) filter pass computed once, and
//! [`Hasher::hash_dihedral_with_top_and_luma`] also hands over the luminance it computes.
//!
//! ```
//! use consentry_pdq::{Hasher, ImageRef, PixelFormat};
//! let (w, h) = (100u32, 80u32);
//! let pixels: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
//! let img = ImageRef::new(w, h, PixelFormat::Rgb8, &pixels).unwrap();
//! let out = Hasher::new().hash(&img);
//! println!("{} {}", out.hash, out.quality);
//! ```

#![warn(missing_docs)]

mod fast;
mod hash;
#[doc(hidden)]
pub mod reference;

pub use hash::{Hash256, ParseHashError};

use std::fmt;

/// Images with a side shorter than this many pixels get the zero hash and quality 0.
pub const MIN_HASHABLE_DIM: usize = 5;

/// Meta's recommended minimum quality: hashes below it are unreliable.
pub const DEFAULT_MIN_QUALITY: u8 = 50;

/// Meta's matching threshold: two PDQ hashes match when their distance is at most this.
pub const DEFAULT_MATCH_DISTANCE: u32 = 31;

/// Box-filter window divisor: the window is `ceil(dimension / 128)`, half the
/// decimation step to 64, applied in two passes (a tent filter).
const WINDOW_DIVISOR: usize = 128;

/// How the bytes of an [`ImageRef`] are laid out. All are 8 bits per channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// One grey byte per pixel.
    Luma8,
    /// Grey then alpha; alpha is ignored.
    LumaA8,
    /// Red, green, blue.
    Rgb8,
    /// Red, green, blue, alpha; alpha is ignored.
    Rgba8,
}

impl PixelFormat {
    /// Bytes per pixel.
    pub const fn channels(self) -> usize {
        match self {
            PixelFormat::Luma8 => 1,
            PixelFormat::LumaA8 => 2,
            PixelFormat::Rgb8 => 3,
            PixelFormat::Rgba8 => 4,
        }
    }

    #[inline(always)]
    fn rgb_at(self, row: &[u8], x: usize) -> (u8, u8, u8) {
        match self {
            PixelFormat::Luma8 => (row[x], row[x], row[x]),
            PixelFormat::LumaA8 => (row[2 * x], row[2 * x], row[2 * x]),
            PixelFormat::Rgb8 => (row[3 * x], row[3 * x + 1], row[3 * x + 2]),
            PixelFormat::Rgba8 => (row[4 * x], row[4 * x + 1], row[4 * x + 2]),
        }
    }
}

/// A borrowed image: `height` rows of `stride` bytes, each row starting with
/// `width` pixels in `format`.
///
/// Alpha is ignored and grey is hashed as if converted to RGB first, which is
/// what Meta's Python pipeline (Pillow's `convert("RGB")`) and its test
/// vectors do.
#[derive(Debug, Clone, Copy)]
pub struct ImageRef<'a> {
    width: u32,
    height: u32,
    stride: usize,
    format: PixelFormat,
    data: &'a [u8],
}

/// Why bytes do not form the image they claim to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSizeError {
    /// Bytes needed for the claimed geometry.
    pub needed: usize,
    /// Bytes given.
    pub given: usize,
}

impl fmt::Display for ImageSizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pixel buffer holds {} bytes, the image needs {}", self.given, self.needed)
    }
}

impl std::error::Error for ImageSizeError {}

impl<'a> ImageRef<'a> {
    /// Tightly packed rows (stride = width × channels).
    pub fn new(width: u32, height: u32, format: PixelFormat, data: &'a [u8]) -> Result<Self, ImageSizeError> {
        Self::with_stride(width, height, width as usize * format.channels(), format, data)
    }

    /// Rows `stride` bytes apart.
    pub fn with_stride(
        width: u32,
        height: u32,
        stride: usize,
        format: PixelFormat,
        data: &'a [u8],
    ) -> Result<Self, ImageSizeError> {
        let row = width as usize * format.channels();
        let needed = if height == 0 {
            0
        } else {
            stride.max(row).saturating_mul(height as usize - 1).saturating_add(row)
        };
        if stride < row || data.len() < needed {
            return Err(ImageSizeError { needed, given: data.len() });
        }
        Ok(ImageRef { width, height, stride, format, data })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Pixel layout.
    pub fn format(&self) -> PixelFormat {
        self.format
    }

    #[inline(always)]
    fn row(&self, y: usize) -> &'a [u8] {
        let start = y * self.stride;
        &self.data[start..start + self.width as usize * self.format.channels()]
    }
}

/// A PDQ hash with its quality.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PdqHash {
    /// The hash.
    pub hash: Hash256,
    /// Quality, 0 to 100: how much gradient (detail) the 64×64 downsample has.
    /// Below [`DEFAULT_MIN_QUALITY`] a hash is unreliable.
    pub quality: u8,
}

/// The eight dihedral transforms of an image, in Meta's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dihedral {
    /// The image as it is.
    Original = 0,
    /// Rotated 90° (counter-clockwise, as Meta's tools name it).
    Rotate90 = 1,
    /// Rotated 180°.
    Rotate180 = 2,
    /// Rotated 270°.
    Rotate270 = 3,
    /// Mirrored about the horizontal axis (top and bottom swapped).
    FlipX = 4,
    /// Mirrored about the vertical axis (left and right swapped).
    FlipY = 5,
    /// Transposed about the main diagonal.
    FlipPlus1 = 6,
    /// Transposed about the anti-diagonal.
    FlipMinus1 = 7,
}

impl Dihedral {
    /// All eight, in Meta's order.
    pub const ALL: [Dihedral; 8] = [
        Dihedral::Original,
        Dihedral::Rotate90,
        Dihedral::Rotate180,
        Dihedral::Rotate270,
        Dihedral::FlipX,
        Dihedral::FlipY,
        Dihedral::FlipPlus1,
        Dihedral::FlipMinus1,
    ];

    /// Short name as used in output (`original`, `rot90`, …).
    pub const fn name(self) -> &'static str {
        match self {
            Dihedral::Original => "original",
            Dihedral::Rotate90 => "rot90",
            Dihedral::Rotate180 => "rot180",
            Dihedral::Rotate270 => "rot270",
            Dihedral::FlipX => "flipx",
            Dihedral::FlipY => "flipy",
            Dihedral::FlipPlus1 => "flip_plus1",
            Dihedral::FlipMinus1 => "flip_minus1",
        }
    }
}

/// The hashes of all eight dihedral transforms, with the shared quality.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PdqDihedral {
    /// Indexed by [`Dihedral`] as `usize`.
    pub hashes: [Hash256; 8],
    /// Quality, shared by all eight.
    pub quality: u8,
}

impl PdqDihedral {
    /// The hash of one transform.
    pub fn get(&self, d: Dihedral) -> Hash256 {
        self.hashes[d as usize]
    }

    /// The untransformed hash with its quality.
    pub fn original(&self) -> PdqHash {
        PdqHash { hash: self.hashes[0], quality: self.quality }
    }
}

/// What receives the luminance PDQ computes, eight rows at a time
/// ([`Hasher::hash_dihedral_with_top_and_luma`]): `(y0, n, block)`, `block[x][r]` the luminance
/// of pixel `x` of row `y0 + r`, for `r < n`.
pub type LumaSink<'a> = &'a mut dyn FnMut(usize, usize, &[[f32; 8]]);

/// Computes PDQ hashes, reusing its working buffers between images.
///
/// One `Hasher` per thread; it is cheap to create but holds a buffer the size
/// of the largest image it has hashed.
#[derive(Debug)]
pub struct Hasher {
    bufs: fast::Buffers,
    dct: Box<DctMatrix>,
}

impl Default for Hasher {
    fn default() -> Self {
        Hasher::new()
    }
}

impl Hasher {
    /// A new hasher with empty buffers.
    pub fn new() -> Self {
        Hasher { bufs: fast::Buffers::default(), dct: dct_matrix() }
    }

    /// The PDQ hash and quality of an image.
    pub fn hash(&mut self, img: &ImageRef<'_>) -> PdqHash {
        match self.dct(img) {
            None => PdqHash { hash: Hash256::ZERO, quality: 0 },
            Some((dct, quality)) => PdqHash { hash: bits_from_dct(&dct), quality },
        }
    }

    /// The hashes of all eight dihedral transforms, from one DCT.
    pub fn hash_dihedral(&mut self, img: &ImageRef<'_>) -> PdqDihedral {
        match self.dct(img) {
            None => PdqDihedral { hashes: [Hash256::ZERO; 8], quality: 0 },
            Some((dct, quality)) => PdqDihedral { hashes: dihedral_from_dct(&dct), quality },
        }
    }

    /// The dihedral hashes of an image and of its first `top_rows` rows taken as an image of
    /// their own (e.g. a top band: face and hair), the same as [`hash_dihedral`](Self::hash_dihedral)
    /// of each, bit for bit, but cheaper: PDQ's first filter pass runs along each row alone, so
    /// the top rows share it with the whole image. `top_rows` is clamped to the height.
    pub fn hash_dihedral_with_top(
        &mut self,
        img: &ImageRef<'_>,
        top_rows: u32,
    ) -> (PdqDihedral, PdqDihedral) {
        self.with_top(img, top_rows, None)
    }

    /// [`hash_dihedral_with_top`](Self::hash_dihedral_with_top), handing over the luminance it
    /// computes, eight rows at a time, to whoever needs it as well (a second hash of the same
    /// pixels): `luma(y0, n, block)` with `block[x][r]` the luminance of pixel `x` of row
    /// `y0 + r`, for `r < n` (the later lanes hold nothing in particular), computed as
    /// `0.299 · R + 0.587 · G + 0.114 · B` in `f32`, in that order (grey: R = G = B). The rows
    /// come in order, each once, all of them — or none, for an image under 5 pixels on a side or
    /// of exactly 64 × 64 (which the reference takes as its own downsample).
    pub fn hash_dihedral_with_top_and_luma(
        &mut self,
        img: &ImageRef<'_>,
        top_rows: u32,
        luma: LumaSink<'_>,
    ) -> (PdqDihedral, PdqDihedral) {
        self.with_top(img, top_rows, Some(luma))
    }

    fn with_top(
        &mut self,
        img: &ImageRef<'_>,
        top_rows: u32,
        luma: Option<LumaSink<'_>>,
    ) -> (PdqDihedral, PdqDihedral) {
        let top_rows = top_rows.min(img.height);
        let top_img = ImageRef { height: top_rows, ..*img };
        if !hashable(img) {
            return (self.hash_dihedral(img), self.hash_dihedral(&top_img));
        }
        // Top rows too few to hash are not filtered with the whole (their hash is the zero one).
        let shared = if hashable(&top_img) { top_rows as usize } else { 0 };
        let (whole, top) = fast::downsample_64_and_top(img, shared, &mut self.bufs, luma);
        let top = match top {
            Some(b64) => self.dihedral_of(&b64),
            None => self.hash_dihedral(&top_img),
        };
        (self.dihedral_of(&whole), top)
    }

    /// The dihedral hashes of a 64×64 downsample.
    fn dihedral_of(&self, b64: &[[f32; 64]; 64]) -> PdqDihedral {
        PdqDihedral { hashes: dihedral_from_dct(&dct64_to_16(&self.dct, b64)), quality: quality_metric(b64) }
    }

    /// The 16×16 DCT coefficients (frequencies 1..=16 on each axis) and the
    /// quality; `None` when the image is under 5 pixels on a side.
    pub fn dct(&mut self, img: &ImageRef<'_>) -> Option<([[f32; 16]; 16], u8)> {
        if !hashable(img) {
            return None;
        }
        let b64 = fast::downsample_64(img, &mut self.bufs);
        Some((dct64_to_16(&self.dct, &b64), quality_metric(&b64)))
    }
}

/// Whether the image is large enough to hash ([`MIN_HASHABLE_DIM`] on each side).
fn hashable(img: &ImageRef<'_>) -> bool {
    img.width as usize >= MIN_HASHABLE_DIM && img.height as usize >= MIN_HASHABLE_DIM
}

/// The PDQ hash of an image, with a fresh [`Hasher`]. Prefer a reused
/// `Hasher` when hashing many images.
pub fn hash(img: &ImageRef<'_>) -> PdqHash {
    Hasher::new().hash(img)
}

/// The eight dihedral hashes of an image, with a fresh [`Hasher`].
pub fn hash_dihedral(img: &ImageRef<'_>) -> PdqDihedral {
    Hasher::new().hash_dihedral(img)
}

// ---------------------------------------------------------------------------
// Shared arithmetic. Each function keeps the reference's operation order.

const LUMA_R: f32 = 0.299;
const LUMA_G: f32 = 0.587;
const LUMA_B: f32 = 0.114;

#[inline(always)]
fn luma_of(r: u8, g: u8, b: u8) -> f32 {
    LUMA_R * f32::from(r) + LUMA_G * f32::from(g) + LUMA_B * f32::from(b)
}

/// The source index sampled for output `i` of 64 ("pixel centres").
#[inline]
fn decimation_index(i: usize, n: usize) -> usize {
    (((i as f64 + 0.5) * n as f64) / 64.0) as usize
}

/// Meta's gradient-based quality, 0..=100.
fn quality_metric(b: &[[f32; 64]; 64]) -> u8 {
    let mut sum: i32 = 0;
    let d = |u: f32, v: f32| -> i32 { (((u - v) * 100.0) / 255.0) as i32 };
    for (upper, lower) in b.iter().zip(&b[1..]) {
        for (&u, &v) in upper.iter().zip(lower) {
            sum += d(u, v).abs();
        }
    }
    for row in b.iter() {
        for j in 0..63 {
            sum += d(row[j], row[j + 1]).abs();
        }
    }
    (sum / 90).min(100) as u8
}

/// Rows 1..=16 of the 64-point DCT-II matrix, as the reference builds it
/// (the scale factor rounded to `f32`, each product rounded to `f32`).
type DctMatrix = [[f32; 64]; 16];

fn dct_matrix() -> Box<DctMatrix> {
    let scale = (2.0f64 / 64.0).sqrt() as f32;
    let mut m = Box::new([[0f32; 64]; 16]);
    for (i, row) in m.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            let angle = (std::f64::consts::PI / 2.0 / 64.0) * (i + 1) as f64 * (2 * j + 1) as f64;
            *v = (f64::from(scale) * angle.cos()) as f32;
        }
    }
    m
}

/// The box-filter window along a dimension of `n`: `ceil(n / 128)`, written
/// as the reference computes it (`usize::div_ceil` is newer than the Rust
/// 1.63 that builds this crate for WebAssembly).
#[allow(clippy::manual_div_ceil)]
const fn window_size(n: usize) -> usize {
    (n + WINDOW_DIVISOR - 1) / WINDOW_DIVISOR
}

/// B = D A Dᵀ for the 16 low frequencies, summing in the reference's order.
fn dct64_to_16(d: &DctMatrix, a: &[[f32; 64]; 64]) -> [[f32; 16]; 16] {
    // T = D A, accumulated over k for all 64 columns at once (same order per element).
    let mut t = [[0f32; 64]; 16];
    for (trow, drow) in t.iter_mut().zip(d.iter()) {
        for (k, arow) in a.iter().enumerate() {
            let dk = drow[k];
            for (tv, av) in trow.iter_mut().zip(arow.iter()) {
                *tv += dk * av;
            }
        }
    }
    let mut b = [[0f32; 16]; 16];
    for (brow, trow) in b.iter_mut().zip(t.iter()) {
        for (bv, drow) in brow.iter_mut().zip(d.iter()) {
            let mut s = 0f32;
            for k in 0..64 {
                s += trow[k] * drow[k];
            }
            *bv = s;
        }
    }
    b
}

/// One bit per coefficient: set when strictly greater than the median
/// (the 128th smallest of the 256, which is what Torben's method returns).
fn bits_from_dct(c: &[[f32; 16]; 16]) -> Hash256 {
    let mut flat = [0f32; 256];
    for (i, row) in c.iter().enumerate() {
        flat[i * 16..i * 16 + 16].copy_from_slice(row);
    }
    let mut sorted = flat;
    let (_, median, _) = sorted.select_nth_unstable_by(127, |x, y| x.total_cmp(y));
    let median = *median;
    let mut h = Hash256::ZERO;
    for (k, &v) in flat.iter().enumerate() {
        if v > median {
            h.set_bit(k as u32);
        }
    }
    h
}

/// The eight dihedral hashes from the DCT of the untransformed image.
/// Rotating or flipping the image only transposes the DCT and negates the
/// odd frequencies along the reversed axes.
fn dihedral_from_dct(a: &[[f32; 16]; 16]) -> [Hash256; 8] {
    let variant = |transpose: bool, neg: fn(usize, usize) -> bool| {
        let mut b = [[0f32; 16]; 16];
        for i in 0..16 {
            for j in 0..16 {
                let v = if neg(i, j) { -a[i][j] } else { a[i][j] };
                if transpose {
                    b[j][i] = v;
                } else {
                    b[i][j] = v;
                }
            }
        }
        bits_from_dct(&b)
    };
    [
        bits_from_dct(a),
        variant(true, |_, j| j & 1 == 0),
        variant(false, |i, j| (i + j) & 1 == 1),
        variant(true, |i, _| i & 1 == 0),
        variant(false, |i, _| i & 1 == 0),
        variant(false, |_, j| j & 1 == 0),
        variant(true, |_, _| false),
        variant(true, |i, j| (i + j) & 1 == 1),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_images_hash_to_zero() {
        let px = vec![200u8; 4 * 100 * 3];
        let img = ImageRef::new(4, 100, PixelFormat::Rgb8, &px).unwrap();
        assert_eq!(hash(&img), PdqHash { hash: Hash256::ZERO, quality: 0 });
        let d = hash_dihedral(&img);
        assert!(d.hashes.iter().all(Hash256::is_zero));
    }

    #[test]
    fn short_buffers_are_rejected() {
        let px = vec![0u8; 10];
        assert!(ImageRef::new(4, 4, PixelFormat::Rgb8, &px).is_err());
        assert!(ImageRef::with_stride(2, 2, 3, PixelFormat::Rgb8, &px).is_err());
        assert!(ImageRef::new(2, 1, PixelFormat::Rgba8, &px).is_ok());
    }
}
