//! Full-size decoding: zune-jpeg for JPEG, the `image` crate for the rest.

use crate::fast;
use crate::orient::{self, Orientation};
use crate::{DecodeOptions, DecodedImage, ImageFormat, ImageInfo, MediaError};
use consentry_pdq::PixelFormat;
use image::{AnimationDecoder, ColorType, ImageDecoder, Limits};
use std::io::Cursor;

/// The format, or the reason there is none.
pub(crate) fn sniff(bytes: &[u8]) -> Result<ImageFormat, MediaError> {
    if bytes.is_empty() {
        return Err(MediaError::Empty);
    }
    ImageFormat::sniff(bytes).ok_or(MediaError::UnknownFormat)
}

pub(crate) fn check_pixels(width: u32, height: u32, opts: &DecodeOptions) -> Result<(), MediaError> {
    if u64::from(width) * u64::from(height) > opts.max_pixels {
        return Err(MediaError::TooLarge { width, height, max_pixels: opts.max_pixels });
    }
    if width == 0 || height == 0 {
        return Err(MediaError::Corrupt(format!("image has no pixels ({width}×{height})")));
    }
    Ok(())
}

/// Bytes a decoder may hold at once: the output at up to 16 bytes a pixel
/// (RGBA float) plus working room. Bounded whatever the header says, since
/// the pixel check comes first.
pub(crate) fn alloc_limit(opts: &DecodeOptions) -> u64 {
    opts.max_pixels.saturating_mul(16).saturating_add(64 << 20)
}

fn limits(opts: &DecodeOptions) -> Limits {
    let mut l = Limits::default();
    l.max_alloc = Some(alloc_limit(opts));
    l
}

fn zune_options() -> zune_core::options::DecoderOptions {
    zune_core::options::DecoderOptions::default()
        .set_strict_mode(false)
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX))
}

pub(crate) fn probe(bytes: &[u8]) -> Result<ImageInfo, MediaError> {
    let format = sniff(bytes)?;
    let (width, height) = match format {
        ImageFormat::Jpeg => {
            let mut d = zune_jpeg::JpegDecoder::new_with_options(
                zune_core::bytestream::ZCursor::new(bytes),
                zune_options(),
            );
            d.decode_headers().map_err(jpeg_err)?;
            let (w, h) =
                d.dimensions().ok_or_else(|| MediaError::Corrupt("JPEG has no frame header".into()))?;
            (w as u32, h as u32)
        }
        _ => {
            let opts = DecodeOptions { max_pixels: u64::MAX / 64, ..DecodeOptions::default() };
            let mut r = image::ImageReader::with_format(Cursor::new(bytes), format.to_image());
            r.limits(limits(&opts));
            r.into_decoder()?.dimensions()
        }
    };
    Ok(ImageInfo { format, width, height })
}

fn jpeg_err(e: zune_jpeg::errors::DecodeErrors) -> MediaError {
    use zune_jpeg::errors::DecodeErrors as E;
    match e {
        E::Unsupported(s) => MediaError::Unsupported(format!("JPEG: {s:?}")),
        other => MediaError::Corrupt(format!("JPEG: {other}")),
    }
}

/// The first frame at full size.
pub(crate) fn decode_exact(
    bytes: &[u8],
    opts: &DecodeOptions,
) -> Result<(ImageInfo, DecodedImage), MediaError> {
    let format = sniff(bytes)?;
    if format == ImageFormat::Jpeg {
        return decode_jpeg(bytes, opts);
    }
    let mut r = image::ImageReader::with_format(Cursor::new(bytes), format.to_image());
    r.limits(limits(opts));
    let mut decoder = r.into_decoder()?;
    let (width, height) = decoder.dimensions();
    check_pixels(width, height, opts)?;
    let info = ImageInfo { format, width, height };
    let orientation = if opts.apply_exif_orientation {
        // A broken EXIF block is not worth rejecting the image for.
        decoder.orientation().map(Orientation::from_image).unwrap_or(Orientation(1))
    } else {
        Orientation(1)
    };
    let color = decoder.color_type();
    let total = decoder.total_bytes();
    if total > alloc_limit(opts) {
        return Err(MediaError::TooLarge { width, height, max_pixels: opts.max_pixels });
    }
    let mut buf = vec![0u8; total as usize];
    decoder.read_image(&mut buf)?;
    let (pf, data) = to_8bit(color, buf)?;
    Ok((info, finish(width, height, pf, data, orientation)))
}

/// Orient and wrap.
pub(crate) fn finish(w: u32, h: u32, format: PixelFormat, data: Vec<u8>, o: Orientation) -> DecodedImage {
    let (width, height, data) = orient::apply(o, w, h, format.channels(), data);
    DecodedImage { width, height, format, data }
}

/// The decoder's buffer as one of PDQ's layouts; 8-bit layouts pass through
/// untouched, 16-bit and float ones are narrowed in place.
fn to_8bit(color: ColorType, mut buf: Vec<u8>) -> Result<(PixelFormat, Vec<u8>), MediaError> {
    let pf = match color {
        ColorType::L8 => return Ok((PixelFormat::Luma8, buf)),
        ColorType::La8 => return Ok((PixelFormat::LumaA8, buf)),
        ColorType::Rgb8 => return Ok((PixelFormat::Rgb8, buf)),
        ColorType::Rgba8 => return Ok((PixelFormat::Rgba8, buf)),
        ColorType::L16 => PixelFormat::Luma8,
        ColorType::La16 => PixelFormat::LumaA8,
        ColorType::Rgb16 => PixelFormat::Rgb8,
        ColorType::Rgba16 => PixelFormat::Rgba8,
        ColorType::Rgb32F => PixelFormat::Rgb8,
        ColorType::Rgba32F => PixelFormat::Rgba8,
        other => return Err(MediaError::Unsupported(format!("pixel layout {other:?}"))),
    };
    match color {
        ColorType::Rgb32F | ColorType::Rgba32F => {
            let n = buf.len() / 4;
            for i in 0..n {
                let v = f32::from_ne_bytes([buf[4 * i], buf[4 * i + 1], buf[4 * i + 2], buf[4 * i + 3]]);
                // NaN maps to 0.
                buf[i] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
            }
            buf.truncate(n);
        }
        _ => {
            // 16-bit: v·255/65535 rounded, as the image crate narrows.
            let n = buf.len() / 2;
            for i in 0..n {
                let v = u32::from(u16::from_ne_bytes([buf[2 * i], buf[2 * i + 1]]));
                buf[i] = ((v * 255 + 32895) >> 16) as u8;
            }
            buf.truncate(n);
        }
    }
    Ok((pf, buf))
}

type ZuneJpeg<'a> = zune_jpeg::JpegDecoder<zune_core::bytestream::ZCursor<&'a [u8]>>;

/// zune-jpeg past the headers, with the size checked against the limits and the EXIF orientation
/// read (or not, as the options say).
fn jpeg_headers<'a>(
    bytes: &'a [u8],
    opts: &DecodeOptions,
) -> Result<(ZuneJpeg<'a>, ImageInfo, Orientation), MediaError> {
    let mut d =
        zune_jpeg::JpegDecoder::new_with_options(zune_core::bytestream::ZCursor::new(bytes), zune_options());
    d.decode_headers().map_err(jpeg_err)?;
    let (w, h) = d.dimensions().ok_or_else(|| MediaError::Corrupt("JPEG has no frame header".into()))?;
    let (width, height) = (w as u32, h as u32);
    check_pixels(width, height, opts)?;
    let orientation = if opts.apply_exif_orientation {
        d.exif().map_or(Orientation(1), |e| Orientation::from_exif_chunk(e))
    } else {
        Orientation(1)
    };
    Ok((d, ImageInfo { format: ImageFormat::Jpeg, width, height }, orientation))
}

/// Decodes the whole image into `out`'s colour space (`pf` is its layout).
fn jpeg_pixels(
    mut d: ZuneJpeg<'_>,
    info: ImageInfo,
    orientation: Orientation,
    out: zune_core::colorspace::ColorSpace,
    pf: PixelFormat,
) -> Result<(ImageInfo, DecodedImage), MediaError> {
    let (width, height) = (info.width, info.height);
    d.set_options(zune_options().jpeg_set_out_colorspace(out));
    let size =
        d.output_buffer_size().ok_or_else(|| MediaError::Corrupt("JPEG output size unknown".into()))?;
    if size != width as usize * height as usize * pf.channels() {
        return Err(MediaError::Corrupt(format!(
            "JPEG decoder output size {size} does not match {width}×{height}"
        )));
    }
    let mut buf = vec![0u8; size];
    d.decode_into(&mut buf).map_err(jpeg_err)?;
    Ok((info, finish(width, height, pf, buf, orientation)))
}

/// JPEG through zune-jpeg directly: one header parse, no copy of the input.
fn decode_jpeg(bytes: &[u8], opts: &DecodeOptions) -> Result<(ImageInfo, DecodedImage), MediaError> {
    use zune_core::colorspace::ColorSpace as C;
    let (d, info, orientation) = jpeg_headers(bytes, opts)?;
    let input =
        d.input_colorspace().ok_or_else(|| MediaError::Corrupt("JPEG colour space unknown".into()))?;
    let (out, pf) = match input {
        C::Luma => (C::Luma, PixelFormat::Luma8),
        C::LumaA => (C::LumaA, PixelFormat::LumaA8),
        C::RGBA => (C::RGBA, PixelFormat::Rgba8),
        // YCbCr, RGB, CMYK, YCCK: converted by the decoder.
        _ => (C::RGB, PixelFormat::Rgb8),
    };
    jpeg_pixels(d, info, orientation, out, pf)
}

/// The luma plane of a YCbCr (or greyscale) JPEG, for the fast hash path: zune-jpeg then skips
/// chroma upsampling and colour conversion. `Ok(None)` for other colour spaces (RGB, CMYK, YCCK),
/// which the caller decodes otherwise.
pub(crate) fn decode_jpeg_luma(
    bytes: &[u8],
    opts: &DecodeOptions,
    min_side: u32,
) -> Result<Option<(ImageInfo, DecodedImage)>, MediaError> {
    use zune_core::colorspace::ColorSpace as C;
    if sniff(bytes)? != ImageFormat::Jpeg {
        return Ok(None);
    }
    let (d, info, orientation) = jpeg_headers(bytes, opts)?;
    if !matches!(d.input_colorspace(), Some(C::YCbCr | C::Luma)) {
        return Ok(None);
    }
    // Large progressive files: a quarter-scale luma plane from their first scans (see
    // `progressive`); the fast path's minimum side still holds at that scale.
    let denom = fast::scale_denominator(info.width, info.height, min_side);
    if denom >= 4 {
        if let Some((qw, qh, luma)) = crate::progressive::quarter_luma(bytes, opts.max_pixels) {
            if (qw, qh) == (info.width.div_ceil(4), info.height.div_ceil(4)) {
                return Ok(Some((info, finish(qw, qh, PixelFormat::Luma8, luma, orientation))));
            }
        }
    }
    // Large baseline files (a phone camera's usual output): the luma plane pooled to 1/denom
    // from the coefficients (see `progressive::sequential_luma`), with the same minimum side.
    // Only from a quarter down, and only where the reduced plane keeps 1.5 × the minimum side:
    // hashing at half size moved the hash of some 1.5–4 MP photos up to 12 bits from the exact
    // one (PDQ's sampling and filter windows land differently), and a strongly textured
    // 2600 × 2100 image hashed at 650 × 525 moved 20 bits; the corpus's ≥ 3072-px baseline
    // photos stay within 4.
    if denom >= 4 && info.width.min(info.height) / denom >= min_side * 3 / 2 {
        if let Some((rw, rh, luma)) = crate::progressive::sequential_luma(bytes, opts.max_pixels, denom) {
            if (rw, rh) == (info.width.div_ceil(denom), info.height.div_ceil(denom)) {
                return Ok(Some((info, finish(rw, rh, PixelFormat::Luma8, luma, orientation))));
            }
        }
    }
    jpeg_pixels(d, info, orientation, C::Luma, PixelFormat::Luma8).map(Some)
}

/// Every frame (see [`crate::decode_frames`]).
pub(crate) fn decode_frames(bytes: &[u8], opts: &DecodeOptions) -> Result<Vec<DecodedImage>, MediaError> {
    let format = sniff(bytes)?;
    let frames = match format {
        ImageFormat::Gif => {
            let mut d = image::codecs::gif::GifDecoder::new(Cursor::new(bytes))?;
            let (w, h) = d.dimensions();
            check_pixels(w, h, opts)?;
            d.set_limits(limits(opts))?;
            d.into_frames()
        }
        ImageFormat::WebP => {
            let mut d = image::codecs::webp::WebPDecoder::new(Cursor::new(bytes))?;
            if !d.has_animation() {
                return Ok(vec![decode_exact(bytes, opts)?.1]);
            }
            let (w, h) = d.dimensions();
            check_pixels(w, h, opts)?;
            d.set_limits(limits(opts))?;
            d.into_frames()
        }
        _ => return Ok(vec![decode_exact(bytes, opts)?.1]),
    };
    let mut out = Vec::new();
    let mut total: u64 = 0;
    for frame in frames {
        let too_many = MediaError::TooManyFrames {
            frames: out.len(),
            max_frames: opts.max_frames,
            max_total_pixels: opts.max_total_pixels,
        };
        if out.len() >= opts.max_frames {
            return Err(too_many);
        }
        let buf = frame?.into_buffer();
        let (width, height) = buf.dimensions();
        total = total.saturating_add(u64::from(width) * u64::from(height));
        if total > opts.max_total_pixels {
            return Err(too_many);
        }
        out.push(DecodedImage { width, height, format: PixelFormat::Rgba8, data: buf.into_raw() });
    }
    if out.is_empty() {
        return Err(MediaError::Corrupt("animation has no frames".into()));
    }
    Ok(out)
}
