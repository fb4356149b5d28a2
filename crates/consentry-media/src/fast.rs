//! Reduced-scale JPEG decoding for the fast hash path.
//!
//! `jpeg-decoder` can run a reduced IDCT (4×4, 2×2 or 1×1 per 8×8 block),
//! which yields the image at 1/2, 1/4 or 1/8 scale for a fraction of the
//! work. PDQ box-filters every image down to 64×64 anyway.

use crate::decode::{alloc_limit, check_pixels, finish};
use crate::orient::Orientation;
#[cfg(test)]
use crate::FAST_MIN_SIDE;
use crate::{DecodeOptions, DecodedImage, ImageFormat, ImageInfo, MediaError};
use consentry_pdq::PixelFormat;

/// The denominator (1, 2, 4 or 8) of the smallest scale that keeps both
/// sides at least `FAST_MIN_SIDE`.
pub(crate) fn scale_denominator(width: u32, height: u32, min_side: u32) -> u32 {
    let short = width.min(height);
    let mut d = 1;
    while d < 8 && short.div_ceil(d * 2) >= min_side {
        d *= 2;
    }
    d
}

/// `Ok(None)` when the fast path does not apply (not a JPEG, too small to
/// be worth scaling, or a JPEG `jpeg-decoder` cannot handle): the caller
/// decodes exactly instead. Errors are only the limits, which hold in every
/// mode.
pub(crate) fn decode_fast(
    bytes: &[u8],
    opts: &DecodeOptions,
    min_side: u32,
) -> Result<Option<(ImageInfo, DecodedImage)>, MediaError> {
    if ImageFormat::sniff(bytes) != Some(ImageFormat::Jpeg) {
        return Ok(None);
    }
    #[cfg(feature = "turbojpeg")]
    if let Some(r) = turbo::decode_fast(bytes, opts, min_side)? {
        return Ok(Some(r));
    }
    let mut d = jpeg_decoder::Decoder::new(bytes);
    if d.read_info().is_err() {
        return Ok(None);
    }
    let Some(full) = d.info() else { return Ok(None) };
    let (width, height) = (u32::from(full.width), u32::from(full.height));
    check_pixels(width, height, opts)?;
    let denom = scale_denominator(width, height, min_side);
    if denom == 1 {
        return Ok(None);
    }
    // jpeg-decoder's own limit, on top of the header check above.
    d.set_max_decoding_buffer_size(usize::try_from(alloc_limit(opts)).unwrap_or(usize::MAX));
    let want = |n: u32| n.div_ceil(denom) as u16;
    let Ok((sw, sh)) = d.scale(want(width), want(height)) else { return Ok(None) };
    let Ok(pixels) = d.decode() else { return Ok(None) };
    let Some(scaled) = d.info() else { return Ok(None) };
    let (sw, sh) = (u32::from(sw), u32::from(sh));
    let n = sw as usize * sh as usize;
    let (pf, data) = match scaled.pixel_format {
        jpeg_decoder::PixelFormat::L8 => (PixelFormat::Luma8, pixels),
        jpeg_decoder::PixelFormat::RGB24 => (PixelFormat::Rgb8, pixels),
        jpeg_decoder::PixelFormat::CMYK32 => (PixelFormat::Rgb8, cmyk_to_rgb(&pixels)),
        // 16-bit (lossless / 12-bit) JPEG: rare; decode exactly.
        _ => return Ok(None),
    };
    if data.len() != n * pf.channels() {
        return Ok(None);
    }
    let orientation = if opts.apply_exif_orientation {
        d.exif_data().map_or(Orientation(1), Orientation::from_exif_chunk)
    } else {
        Orientation(1)
    };
    let info = ImageInfo { format: ImageFormat::Jpeg, width, height };
    Ok(Some((info, finish(sw, sh, pf, data, orientation))))
}

#[cfg(feature = "turbojpeg")]
mod turbo {
    use super::*;
    use turbojpeg::{Colorspace, Decompressor, Image, ScalingFactor};

    /// Most scans a progressive JPEG may have (libjpeg-turbo's guard against
    /// scan-bomb inputs; real files have about 10).
    const SCAN_LIMIT: u32 = 500;

    /// Like [`super::decode_fast`], with libjpeg-turbo. `Ok(None)` for what
    /// it does not decode to RGB/grey here (CMYK/YCCK), or on any libjpeg
    /// error: the caller falls back.
    pub(super) fn decode_fast(
        bytes: &[u8],
        opts: &DecodeOptions,
        min_side: u32,
    ) -> Result<Option<(ImageInfo, DecodedImage)>, MediaError> {
        let Ok(mut d) = Decompressor::new() else { return Ok(None) };
        let Ok(header) = d.read_header(bytes) else { return Ok(None) };
        let (Ok(width), Ok(height)) = (u32::try_from(header.width), u32::try_from(header.height)) else {
            return Ok(None);
        };
        check_pixels(width, height, opts)?;
        let denom = scale_denominator(width, height, min_side);
        if denom == 1 || header.is_lossless {
            return Ok(None);
        }
        let (pf, tpf) = match header.colorspace {
            Colorspace::Gray => (PixelFormat::Luma8, turbojpeg::PixelFormat::GRAY),
            Colorspace::RGB | Colorspace::YCbCr => (PixelFormat::Rgb8, turbojpeg::PixelFormat::RGB),
            _ => return Ok(None),
        };
        let factor = ScalingFactor::new(1, denom as usize);
        if d.set_scaling_factor(factor).is_err() || d.set_scan_limit(SCAN_LIMIT).is_err() {
            return Ok(None);
        }
        let scaled = header.scaled(factor);
        let (sw, sh) = (scaled.width, scaled.height);
        let mut buf = vec![0u8; sw * sh * pf.channels()];
        let image =
            Image { pixels: &mut buf[..], width: sw, pitch: sw * pf.channels(), height: sh, format: tpf };
        if d.decompress(bytes, image).is_err() {
            return Ok(None);
        }
        // libjpeg-turbo does not parse EXIF; zune-jpeg's header pass does (cheap).
        let orientation = if opts.apply_exif_orientation {
            let mut z = zune_jpeg::JpegDecoder::new_with_options(
                zune_core::bytestream::ZCursor::new(bytes),
                zune_core::options::DecoderOptions::default().set_strict_mode(false),
            );
            match z.decode_headers() {
                Ok(()) => z.exif().map_or(Orientation(1), |e| Orientation::from_exif_chunk(e)),
                Err(_) => Orientation(1),
            }
        } else {
            Orientation(1)
        };
        let info = ImageInfo { format: ImageFormat::Jpeg, width, height };
        Ok(Some((info, finish(sw as u32, sh as u32, pf, buf, orientation))))
    }
}

/// `jpeg-decoder` hands out Adobe CMYK inverted back to "ink" values
/// (255 − stored). RGB = (255−C)(255−K)/255 per channel, which is what
/// Pillow's `cmyk2rgb` and zune-jpeg compute from the stored values.
fn cmyk_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(cmyk.len() / 4 * 3);
    for px in cmyk.chunks_exact(4) {
        let k = 255 - u32::from(px[3]);
        for &c in &px[..3] {
            let v = (255 - u32::from(c)) * k;
            // Exact rounded division by 255.
            out.push(((v + 128 + ((v + 128) >> 8)) >> 8) as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_keeps_both_sides_at_least_the_minimum() {
        assert_eq!(scale_denominator(100, 100, FAST_MIN_SIDE), 1);
        assert_eq!(scale_denominator(2 * FAST_MIN_SIDE - 2, 4000, FAST_MIN_SIDE), 1);
        assert_eq!(scale_denominator(2 * FAST_MIN_SIDE, 4000, FAST_MIN_SIDE), 2);
        assert_eq!(scale_denominator(4032, 3024, 256), 8);
        for (w, h) in [(600, 900), (1600, 1004), (4032, 3024), (20000, 700), (1280, 720)] {
            let d = scale_denominator(w, h, FAST_MIN_SIDE);
            assert!(w.min(h).div_ceil(d) >= FAST_MIN_SIDE, "{w}×{h} 1/{d}");
            assert!(d == 8 || w.min(h).div_ceil(d * 2) < FAST_MIN_SIDE, "{w}×{h} 1/{d} not the smallest");
        }
    }

    #[test]
    fn cmyk_division_is_rounded() {
        for c in [0u8, 1, 77, 128, 254, 255] {
            for k in [0u8, 3, 128, 200, 255] {
                let got = cmyk_to_rgb(&[c, c, c, k])[0];
                let exact = f64::from(255 - c) * f64::from(255 - k) / 255.0;
                assert_eq!(got, exact.round() as u8, "c={c} k={k}");
            }
        }
    }
}
