//! Image bytes to pixels, and bytes to PDQ hashes, in memory.
//!
//! `consentry-media` is the one place where untrusted uploads meet image
//! decoders. It sniffs the format (JPEG, PNG, GIF, WebP, BMP, TIFF), checks
//! the dimensions the header claims against the caller's limits *before*
//! anything the size of the image is allocated, decodes into a buffer that
//! goes straight to [`consentry_pdq`] without a colour conversion where the
//! decoder's layout allows it (grey, grey+alpha, RGB, RGBA), applies the EXIF
//! orientation, and hashes.
//!
//! What it must never do:
//! - **No I/O.** It reads only the byte slice it is handed: no files, no
//!   network, no temporary files. Callers own reading and storage.
//! - **No logging of content.** Nothing here prints or logs image bytes or
//!   pixels; error messages describe the fault, never the content.
//! - **No panics on input.** Any byte string gives `Ok` or a [`MediaError`].
//!   Sizes are checked before allocating, decoders get allocation limits, and
//!   every third-party decoder call runs under `catch_unwind` so that a bug in
//!   a decoder becomes [`MediaError::Corrupt`] for that call only.
//! - Nothing here creates or alters imagery: it only reads pixels to hash them.
//!
//! Reference behaviour: Meta's PDQ pipeline decodes with Pillow, converts to
//! 8-bit RGB (alpha dropped, grey replicated, palette expanded) and does not
//! apply EXIF orientation. [`HashMode::Exact`] with
//! `apply_exif_orientation: false` reproduces that to within Meta's tolerance
//! (distance ≤ 10 at quality ≥ 80); see `tests/conformance.rs`.
//!
//! ```no_run
//! use consentry_media::{hash_bytes, HashOptions};
//! let bytes: Vec<u8> = Vec::new(); // the upload, already in memory
//! let mut hasher = consentry_pdq::Hasher::new();
//! match hash_bytes(&bytes, &HashOptions::default(), &mut hasher) {
//!     Ok(h) => println!("{} {} {}", h.info.format.name(), h.pdq.hash, h.pdq.quality),
//!     Err(e) => eprintln!("rejected: {e}"),
//! }
//! ```

#![warn(missing_docs)]

mod decode;
mod error;
mod fast;
mod orient;
mod progressive;

pub use error::MediaError;

use consentry_pdq::{Hasher, ImageRef, PdqDihedral, PdqHash, PixelFormat};

/// Limits and behaviour of decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Largest width × height the header may claim (checked before
    /// decoding, in every mode). Default 64 000 000.
    pub max_pixels: u64,
    /// Most frames [`decode_frames`] returns before failing with
    /// [`MediaError::TooManyFrames`]. Default 1000.
    pub max_frames: usize,
    /// Most pixels [`decode_frames`] decodes over all frames together
    /// (each frame of a GIF or animated WebP is a full canvas). Default
    /// 128 000 000, i.e. at most 512 MiB of RGBA frames.
    pub max_total_pixels: u64,
    /// Turn the image upright as its EXIF orientation (1–8) says. Default
    /// true. Meta's reference pipeline does not, so turn this off to compare
    /// with its hashes.
    pub apply_exif_orientation: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            max_pixels: 64_000_000,
            max_frames: 1000,
            max_total_pixels: 128_000_000,
            apply_exif_orientation: true,
        }
    }
}

/// How exactly to reproduce the reference pipeline when hashing.
///
/// PDQ reduces every image to a blurred 64×64 luma view, so decoding a JPEG's
/// colour at full size is mostly wasted work. `Fast` takes, for a JPEG:
///
/// 1. YCbCr or greyscale: the luma plane only (zune-jpeg skips chroma
///    upsampling and colour conversion), hashed as grey. PDQ's luminance
///    (0.299 R + 0.587 G + 0.114 B) is the JPEG's Y up to rounding and
///    clamping of out-of-gamut colours.
/// 2. YCbCr/grey JPEGs whose shorter side is at least 4 × [`FAST_MIN_SIDE`]:
///    a quarter-scale luma plane (`src/progressive.rs`). For a progressive
///    file it is built from the DC scan and the first low-frequency luma AC
///    scan alone, and the later scans — most of the file — are skipped
///    undecoded. For a baseline file (what phone cameras write; from 6 ×
///    [`FAST_MIN_SIDE`] on the shorter side, see below) every
///    coefficient is still entropy-decoded, but each 8×8 luma block goes
///    straight to the means of its four 4×4 quadrants, computed from its
///    non-zero coefficients: no inverse DCT, no full-size plane, no chroma
///    kept, and PDQ runs on a sixteenth of the pixels.
/// 3. Other colour spaces (CMYK, YCCK, Adobe RGB) at least 2 × [`FAST_MIN_SIDE`]
///    on the shorter side: reduced-scale decoding (DCT scaling by 1/2, 1/4 or
///    1/8, keeping both sides ≥ 512) with `jpeg-decoder` (or libjpeg-turbo with
///    the `turbojpeg` feature).
///
/// Everything else is decoded exactly as in `Exact`.
///
/// Measured on the 435-photo corpus (417 JPEG, 18 PNG) with
/// `examples/fast_vs_exact.rs`, Hamming distance between the fast and exact
/// hash of the same file:
///
/// | fast path | median | p90 | p99 | max | ≥ 4 MP (19): median / p99 / max | ms/image ≥ 4 MP fast / exact |
/// |---|---|---|---|---|---|---|
/// | reduced-scale RGB decode only (until Nov 2026) | 0 | 0 | 6 | 12 | 2 / 8 / 8 | 100 / 128 |
/// | luma only, full size | 0 | 2 | 2 | 4 | 0 / 2 / 2 | 94 / 114 |
/// | luma, and quarter-scale progressive | 0 | 2 | 2 | 4 | 0 / 4 / 4 | 38 / 151 |
/// | **… and quarter-scale baseline (now)** | **0** | 2 | **4** | 4 | **0 / 4** / 4 | **50 / 211** |
///
/// (A half-scale baseline plane for 1024–2047 px shorter sides was tried
/// and left out: p99 4 → 8 and max 12 on the 1.5–4 MP photos. A strongly
/// textured synthetic 2600 × 2100 baseline JPEG hashed at quarter scale,
/// 650 × 525, was 20 bits from exact, so baseline files take the quarter
/// plane only where it keeps 768 px on the shorter side.)
///
/// (Times from one loaded 2-core machine, each row its own run: compare
/// within a row.) Earlier tuning of the reduced-scale decode showed PDQ is not
/// scale-invariant at small sizes — a minimum side of 256 px gave p99 14,
/// 128 px p99 38 — so every reduced path keeps the shorter side ≥
/// [`FAST_MIN_SIDE`] (512). The project's rule (median ≤ 2 and p99 ≤ 8, on
/// all images and on the ≥ 4 MP ones) holds, so `Fast` is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HashMode {
    /// Reduced-scale JPEG decoding where it pays; a few bits from `Exact`.
    #[default]
    Fast,
    /// Full-size decoding, as the reference pipeline does.
    Exact,
}

impl HashMode {
    /// `"fast"` or `"exact"`.
    pub const fn name(self) -> &'static str {
        match self {
            HashMode::Fast => "fast",
            HashMode::Exact => "exact",
        }
    }
}

/// The fast path never decodes a JPEG to a shorter side below this many
/// pixels (and leaves JPEGs with a shorter side under twice this alone).
pub const FAST_MIN_SIDE: u32 = 512;

/// What to do in [`hash_bytes`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HashOptions {
    /// Decoding limits and orientation.
    pub decode: DecodeOptions,
    /// Fast or exact decoding.
    pub mode: HashMode,
    /// Also compute the eight dihedral hashes (from the same DCT).
    pub dihedral: bool,
}

/// Decoded pixels, tightly packed, 8 bits per channel.
#[derive(Clone, PartialEq, Eq)]
pub struct DecodedImage {
    /// Width in pixels (after orientation).
    pub width: u32,
    /// Height in pixels (after orientation).
    pub height: u32,
    /// Layout of `data`.
    pub format: PixelFormat,
    /// `height` rows of `width × format.channels()` bytes.
    pub data: Vec<u8>,
}

impl DecodedImage {
    /// The pixels as PDQ's input.
    pub fn image_ref(&self) -> ImageRef<'_> {
        ImageRef::new(self.width, self.height, self.format, &self.data)
            .expect("DecodedImage keeps data the size of its geometry")
    }

    /// The pixels as 8-bit RGB, the way Pillow's `convert("RGB")` does it:
    /// alpha dropped (not composited), grey replicated. Copies.
    pub fn to_rgb8(&self) -> Vec<u8> {
        let ch = self.format.channels();
        let mut out = Vec::with_capacity(self.width as usize * self.height as usize * 3);
        match self.format {
            PixelFormat::Rgb8 => out.extend_from_slice(&self.data),
            PixelFormat::Luma8 | PixelFormat::LumaA8 => {
                for px in self.data.chunks_exact(ch) {
                    out.extend_from_slice(&[px[0], px[0], px[0]]);
                }
            }
            PixelFormat::Rgba8 => {
                for px in self.data.chunks_exact(4) {
                    out.extend_from_slice(&px[..3]);
                }
            }
        }
        out
    }
}

impl std::fmt::Debug for DecodedImage {
    // Never print the pixels.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodedImage")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("format", &self.format)
            .field("data", &format_args!("[{} bytes]", self.data.len()))
            .finish()
    }
}

/// A container format this crate decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageFormat {
    /// JPEG (JFIF/EXIF), baseline or progressive; grey, YCbCr, RGB, CMYK, YCCK.
    Jpeg,
    /// PNG, every colour type and bit depth; first frame of APNG.
    Png,
    /// GIF 87a/89a; animated.
    Gif,
    /// WebP, lossy and lossless, still or animated.
    WebP,
    /// Windows bitmap.
    Bmp,
    /// TIFF (and BigTIFF), common compressions.
    Tiff,
}

impl ImageFormat {
    /// Lower-case short name: `jpeg`, `png`, `gif`, `webp`, `bmp`, `tiff`.
    pub const fn name(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "jpeg",
            ImageFormat::Png => "png",
            ImageFormat::Gif => "gif",
            ImageFormat::WebP => "webp",
            ImageFormat::Bmp => "bmp",
            ImageFormat::Tiff => "tiff",
        }
    }

    /// The format the leading bytes announce, if any.
    pub fn sniff(bytes: &[u8]) -> Option<ImageFormat> {
        let b = bytes;
        if b.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(ImageFormat::Jpeg)
        } else if b.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(ImageFormat::Png)
        } else if b.starts_with(b"GIF87a") || b.starts_with(b"GIF89a") {
            Some(ImageFormat::Gif)
        } else if b.len() >= 12 && &b[..4] == b"RIFF" && &b[8..12] == b"WEBP" {
            Some(ImageFormat::WebP)
        } else if b.starts_with(b"BM") {
            Some(ImageFormat::Bmp)
        } else if b.starts_with(b"II*\0")
            || b.starts_with(b"MM\0*")
            || b.starts_with(b"II+\0")
            || b.starts_with(b"MM\0+")
        {
            Some(ImageFormat::Tiff)
        } else {
            None
        }
    }

    pub(crate) fn to_image(self) -> image::ImageFormat {
        match self {
            ImageFormat::Jpeg => image::ImageFormat::Jpeg,
            ImageFormat::Png => image::ImageFormat::Png,
            ImageFormat::Gif => image::ImageFormat::Gif,
            ImageFormat::WebP => image::ImageFormat::WebP,
            ImageFormat::Bmp => image::ImageFormat::Bmp,
            ImageFormat::Tiff => image::ImageFormat::Tiff,
        }
    }
}

/// Format and dimensions from the header, before any EXIF orientation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    /// The container format.
    pub format: ImageFormat,
    /// Width as stored (for GIF, the logical screen).
    pub width: u32,
    /// Height as stored.
    pub height: u32,
}

/// Format and stored dimensions, reading only the header. Does not apply
/// `max_pixels`: a 60000×60000 header is reported as such.
pub fn probe(bytes: &[u8]) -> Result<ImageInfo, MediaError> {
    guarded(|| decode::probe(bytes))
}

/// The first frame (the only one for stills), at full size, oriented per
/// `opts`.
pub fn decode(bytes: &[u8], opts: &DecodeOptions) -> Result<DecodedImage, MediaError> {
    guarded(|| decode::decode_exact(bytes, opts).map(|(_, img)| img))
}

/// Every frame of an animated GIF or WebP, composited onto the full canvas
/// as a viewer shows them (RGBA); one frame for stills and for GIF/WebP that
/// are not animated. Fails with [`MediaError::TooManyFrames`] past
/// `max_frames` frames or `max_total_pixels` pixels in all.
pub fn decode_frames(bytes: &[u8], opts: &DecodeOptions) -> Result<Vec<DecodedImage>, MediaError> {
    guarded(|| decode::decode_frames(bytes, opts))
}

/// The outcome of [`hash_bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashedImage {
    /// Format and stored dimensions.
    pub info: ImageInfo,
    /// The PDQ hash of the (first frame of the) image and its quality.
    pub pdq: PdqHash,
    /// The eight dihedral hashes, when asked for.
    pub dihedral: Option<PdqDihedral>,
    /// Width of the pixels hashed (reduced in fast mode, swapped by orientation).
    pub decoded_width: u32,
    /// Height of the pixels hashed.
    pub decoded_height: u32,
    /// The mode actually used: `Fast` when one of the fast paths (luma-only or reduced-scale
    /// decoding) was taken.
    pub mode: HashMode,
}

/// Decode the first frame and PDQ-hash it.
pub fn hash_bytes(bytes: &[u8], opts: &HashOptions, hasher: &mut Hasher) -> Result<HashedImage, MediaError> {
    hash_bytes_tuned(bytes, opts, hasher, FAST_MIN_SIDE)
}

/// [`hash_bytes`] with another minimum side for the fast path; for tuning
/// [`FAST_MIN_SIDE`] (`examples/fast_vs_exact.rs`), not for production.
#[doc(hidden)]
pub fn hash_bytes_tuned(
    bytes: &[u8],
    opts: &HashOptions,
    hasher: &mut Hasher,
    fast_min_side: u32,
) -> Result<HashedImage, MediaError> {
    let (info, img, mode) = decode_for_hashing_tuned(bytes, opts, fast_min_side)?;
    Ok(hash_decoded(info, &img, mode, opts.dihedral, hasher))
}

/// Decodes the first frame the way [`hash_bytes`] does before hashing: in `Fast` mode a JPEG may
/// come back as its luma plane only, at reduced scale (shorter side ≥ [`FAST_MIN_SIDE`]). For
/// callers that compute more than PDQ from the same pixels (the derivative matcher's features)
/// without decoding twice; [`hash_decoded`] then gives what [`hash_bytes`] would have.
pub fn decode_for_hashing(
    bytes: &[u8],
    opts: &HashOptions,
) -> Result<(ImageInfo, DecodedImage, HashMode), MediaError> {
    decode_for_hashing_tuned(bytes, opts, FAST_MIN_SIDE)
}

fn decode_for_hashing_tuned(
    bytes: &[u8],
    opts: &HashOptions,
    fast_min_side: u32,
) -> Result<(ImageInfo, DecodedImage, HashMode), MediaError> {
    guarded(|| {
        if opts.mode == HashMode::Fast {
            if let Some(r) = decode::decode_jpeg_luma(bytes, &opts.decode, fast_min_side)? {
                return Ok((r.0, r.1, HashMode::Fast));
            }
            if let Some(r) = fast::decode_fast(bytes, &opts.decode, fast_min_side)? {
                return Ok((r.0, r.1, HashMode::Fast));
            }
        }
        decode::decode_exact(bytes, &opts.decode).map(|(i, d)| (i, d, HashMode::Exact))
    })
}

/// PDQ-hashes pixels from [`decode_for_hashing`] (with the 8 dihedral hashes when `dihedral`).
pub fn hash_decoded(
    info: ImageInfo,
    img: &DecodedImage,
    mode: HashMode,
    dihedral: bool,
    hasher: &mut Hasher,
) -> HashedImage {
    let r = img.image_ref();
    let (pdq, dihedral) = if dihedral {
        let d = hasher.hash_dihedral(&r);
        (d.original(), Some(d))
    } else {
        (hasher.hash(&r), None)
    };
    HashedImage { info, pdq, dihedral, decoded_width: img.width, decoded_height: img.height, mode }
}

/// What the fuzz target (`fuzz/fuzz_targets/decode_hash.rs`) runs on every
/// input, shared with the hostile-input tests so that both exercise the same
/// code: [`probe`], [`hash_bytes`] in both modes with dihedral hashes, and
/// [`decode_frames`], all under small limits (`max_pixels` 4 000 000, 64
/// frames, 16 000 000 pixels over all frames). Checks the invariants every
/// successful result must meet and panics if one fails; returns the
/// `hash_bytes` result of the exact mode.
#[doc(hidden)]
pub fn fuzz_one(bytes: &[u8]) -> Result<HashedImage, MediaError> {
    let decode = DecodeOptions {
        max_pixels: 4_000_000,
        max_frames: 64,
        max_total_pixels: 16_000_000,
        apply_exif_orientation: true,
    };
    let mut hasher = Hasher::new();
    let probed = probe(bytes);
    let mut exact_result = None;
    let modes: &[HashMode] = if ImageFormat::sniff(bytes) == Some(ImageFormat::Jpeg) {
        &[HashMode::Exact, HashMode::Fast]
    } else {
        &[HashMode::Exact]
    };
    for &mode in modes {
        let opts = HashOptions { decode: decode.clone(), mode, dihedral: true };
        let r = hash_bytes(bytes, &opts, &mut hasher);
        if let Ok(h) = &r {
            assert!(u64::from(h.info.width) * u64::from(h.info.height) <= decode.max_pixels);
            assert!(u64::from(h.decoded_width) * u64::from(h.decoded_height) <= decode.max_pixels);
            assert_eq!(h.dihedral.map(|d| d.original()), Some(h.pdq));
            if mode == HashMode::Exact {
                // (The fast path parses with another decoder, which may read a
                // malformed header differently.)
                assert_eq!(probed.as_ref().ok(), Some(&h.info), "probe agrees with decode");
            }
        }
        if mode == HashMode::Exact {
            exact_result = Some(r);
        }
    }
    // The coefficient readers only run on large files in `hash_bytes`; fuzz them directly too
    // (outside the panic guard, so that a panic in them is a finding).
    let planes = [
        progressive::quarter_luma(bytes, decode.max_pixels),
        progressive::sequential_luma(bytes, decode.max_pixels, 2),
        progressive::sequential_luma(bytes, decode.max_pixels, 8),
    ];
    for (w, h, luma) in planes.into_iter().flatten() {
        assert_eq!(luma.len(), w as usize * h as usize);
        assert!(u64::from(w) * u64::from(h) <= decode.max_pixels);
    }
    if let Ok(frames) = decode_frames(bytes, &decode) {
        assert!(!frames.is_empty() && frames.len() <= decode.max_frames);
        for f in &frames {
            assert_eq!(f.data.len(), f.width as usize * f.height as usize * f.format.channels());
        }
    }
    exact_result.expect("ran")
}

/// Run `f`, turning a panic inside a third-party decoder into
/// [`MediaError::Corrupt`].
fn guarded<T>(f: impl FnOnce() -> Result<T, MediaError>) -> Result<T, MediaError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let why = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            Err(MediaError::Corrupt(format!("decoder failed: {why}")))
        }
    }
}
