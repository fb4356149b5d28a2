//! Every format and pixel layout decodes, from synthetic images made here
//! with the encoders of the `image` and `png` crates; limits are enforced;
//! the shared non-JPEG files decode.

use consentry_media::{
    decode, decode_frames, hash_bytes, probe, DecodeOptions, HashMode, HashOptions, ImageFormat, MediaError,
};
use consentry_pdq::{Hasher, PixelFormat};
use image::{DynamicImage, ImageBuffer, Luma, LumaA, Rgb, RgbImage, Rgba, RgbaImage};
use std::io::Cursor;
use std::path::PathBuf;

/// A benign synthetic scene: gradients, a disc and stripes, so PDQ has
/// something to see.
fn scene(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        let disc = ((fx - 0.6).powi(2) + (fy - 0.4).powi(2)) < 0.05;
        let stripe = (x / 7 + y / 11) % 2 == 0;
        Rgb([(fx * 255.0) as u8, if disc { 230 } else { (fy * 200.0) as u8 }, if stripe { 40 } else { 160 }])
    })
}

fn encode(img: &DynamicImage, fmt: image::ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, fmt).unwrap();
    out.into_inner()
}

fn png_with(
    w: u32,
    h: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    data: &[u8],
    palette: Option<(&[u8], &[u8])>,
) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut e = png::Encoder::new(&mut out, w, h);
        e.set_color(color);
        e.set_depth(depth);
        if let Some((pal, trns)) = palette {
            e.set_palette(pal.to_vec());
            e.set_trns(trns.to_vec());
        }
        let mut wr = e.write_header().unwrap();
        wr.write_image_data(data).unwrap();
    }
    out
}

fn opts() -> DecodeOptions {
    DecodeOptions::default()
}

#[test]
fn png_layouts_decode_without_conversion() {
    let (w, h) = (40u32, 30u32);
    let rgb = scene(w, h);
    let grey: Vec<u8> = rgb.pixels().map(|p| p[0] / 2 + p[1] / 2).collect();

    // Grey → Luma8, untouched.
    let d = decode(
        &encode(
            &DynamicImage::ImageLuma8(ImageBuffer::from_raw(w, h, grey.clone()).unwrap()),
            image::ImageFormat::Png,
        ),
        &opts(),
    )
    .unwrap();
    assert_eq!((d.width, d.height, d.format), (w, h, PixelFormat::Luma8));
    assert_eq!(d.data, grey);

    // Grey + alpha → LumaA8.
    let ga: Vec<u8> = grey.iter().enumerate().flat_map(|(i, &g)| [g, (i * 3) as u8]).collect();
    let d = decode(&png_with(w, h, png::ColorType::GrayscaleAlpha, png::BitDepth::Eight, &ga, None), &opts())
        .unwrap();
    assert_eq!(d.format, PixelFormat::LumaA8);
    assert_eq!(d.data, ga);

    // RGB, RGBA.
    let d = decode(&encode(&DynamicImage::ImageRgb8(rgb.clone()), image::ImageFormat::Png), &opts()).unwrap();
    assert_eq!(d.format, PixelFormat::Rgb8);
    assert_eq!(d.data, rgb.as_raw().clone());
    let rgba = RgbaImage::from_fn(w, h, |x, y| {
        let p = rgb.get_pixel(x, y);
        Rgba([p[0], p[1], p[2], (x * 6) as u8])
    });
    let d =
        decode(&encode(&DynamicImage::ImageRgba8(rgba.clone()), image::ImageFormat::Png), &opts()).unwrap();
    assert_eq!(d.format, PixelFormat::Rgba8);
    assert_eq!(d.data, rgba.as_raw().clone());
    // Alpha is dropped, not composited: same RGB, same hash.
    assert_eq!(d.to_rgb8(), rgb.as_raw().clone());
    let mut hasher = Hasher::new();
    assert_eq!(
        hasher.hash(&d.image_ref()),
        hasher.hash(
            &decode(&encode(&DynamicImage::ImageRgb8(rgb.clone()), image::ImageFormat::Png), &opts())
                .unwrap()
                .image_ref()
        )
    );

    // Palette with transparency → expanded to the palette colours.
    let pal: Vec<u8> = (0..16u8).flat_map(|i| [i * 16, 255 - i * 16, i * 7]).collect();
    let idx: Vec<u8> = (0..w * h).map(|i| ((i % w) / 3 % 16) as u8).collect();
    let d = decode(
        &png_with(w, h, png::ColorType::Indexed, png::BitDepth::Eight, &idx, Some((&pal, &[0, 128]))),
        &opts(),
    )
    .unwrap();
    let rgb8 = d.to_rgb8();
    for (i, &k) in idx.iter().enumerate() {
        assert_eq!(&rgb8[3 * i..3 * i + 3], &pal[3 * k as usize..3 * k as usize + 3], "pixel {i}");
    }

    // 1-bit grey → 0 / 255, as Pillow's mode "1" converts.
    let bits: Vec<u8> = (0..h)
        .flat_map(|y| (0..w.div_ceil(8)).map(move |b| if (y + b) % 2 == 0 { 0xF0 } else { 0x0F }))
        .collect();
    let d =
        decode(&png_with(w, h, png::ColorType::Grayscale, png::BitDepth::One, &bits, None), &opts()).unwrap();
    assert!(d.to_rgb8().iter().all(|&v| v == 0 || v == 255));
    assert!(d.to_rgb8().contains(&0) && d.to_rgb8().contains(&255));

    // 16-bit grey and RGB(A) → scaled to 8 bits (v·255/65535, rounded).
    let g16: Vec<u16> = (0..w * h).map(|i| (i * 53 % 65536) as u16).collect();
    let d = decode(
        &encode(
            &DynamicImage::ImageLuma16(ImageBuffer::<Luma<u16>, _>::from_raw(w, h, g16.clone()).unwrap()),
            image::ImageFormat::Png,
        ),
        &opts(),
    )
    .unwrap();
    assert_eq!(d.format, PixelFormat::Luma8);
    let expect: Vec<u8> = g16.iter().map(|&v| (f64::from(v) * 255.0 / 65535.0).round() as u8).collect();
    assert_eq!(d.data, expect);
    let rgb16 = ImageBuffer::<Rgb<u16>, _>::from_fn(w, h, |x, y| {
        let p = rgb.get_pixel(x, y);
        Rgb([u16::from(p[0]) * 257, u16::from(p[1]) * 257 + 100, u16::from(p[2]) * 257])
    });
    let d = decode(&encode(&DynamicImage::ImageRgb16(rgb16), image::ImageFormat::Png), &opts()).unwrap();
    assert_eq!(d.format, PixelFormat::Rgb8);
    assert_eq!(d.data, rgb.as_raw().clone(), "16-bit scaled back to the 8-bit scene");
    let la16 = ImageBuffer::<LumaA<u16>, _>::from_fn(w, h, |x, _| LumaA([x as u16 * 1000, 65535]));
    let d = decode(&encode(&DynamicImage::ImageLumaA16(la16), image::ImageFormat::Png), &opts()).unwrap();
    assert_eq!(d.format, PixelFormat::LumaA8);
    assert_eq!(d.data[2 * 5], (5000.0f64 * 255.0 / 65535.0).round() as u8);
}

#[test]
fn other_formats_decode() {
    let (w, h) = (64u32, 48u32);
    let rgb = scene(w, h);
    let dynimg = DynamicImage::ImageRgb8(rgb.clone());
    let mut hasher = Hasher::new();
    let reference =
        hasher.hash(&decode(&encode(&dynimg, image::ImageFormat::Png), &opts()).unwrap().image_ref());
    for (fmt, ours, lossless) in [
        (image::ImageFormat::Bmp, ImageFormat::Bmp, true),
        (image::ImageFormat::Tiff, ImageFormat::Tiff, true),
        (image::ImageFormat::WebP, ImageFormat::WebP, true),
        (image::ImageFormat::Gif, ImageFormat::Gif, false),
        (image::ImageFormat::Jpeg, ImageFormat::Jpeg, false),
    ] {
        let bytes = encode(&dynimg, fmt);
        let info = probe(&bytes).unwrap();
        assert_eq!((info.format, info.width, info.height), (ours, w, h), "{fmt:?}");
        let d = decode(&bytes, &opts()).unwrap();
        assert_eq!((d.width, d.height), (w, h), "{fmt:?}");
        let px = d.to_rgb8();
        if lossless {
            assert_eq!(px, rgb.as_raw().clone(), "{fmt:?} is lossless");
        } else {
            let mad = px.iter().zip(rgb.as_raw()).map(|(a, b)| u64::from(a.abs_diff(*b))).sum::<u64>() as f64
                / px.len() as f64;
            assert!(mad < 12.0, "{fmt:?}: mean abs difference {mad}");
        }
        let hd = hash_bytes(&bytes, &HashOptions::default(), &mut hasher).unwrap();
        assert_eq!(hd.info.format, ours);
        let dist = hd.pdq.hash.distance(&reference.hash);
        // GIF's 256-colour quantisation of the stripes moves the hash too far
        // to say anything; the pixel check above covers it.
        assert!(fmt == image::ImageFormat::Gif || dist <= 31, "{fmt:?}: hash {dist} from the lossless one");
    }
    // Grey JPEG → Luma8.
    let grey = DynamicImage::ImageLuma8(DynamicImage::ImageRgb8(rgb).to_luma8());
    let d = decode(&encode(&grey, image::ImageFormat::Jpeg), &opts()).unwrap();
    assert_eq!(d.format, PixelFormat::Luma8);
}

#[test]
fn animated_gif_gives_every_frame() {
    use image::codecs::gif::GifEncoder;
    use image::{Delay, Frame};
    let (w, h) = (24u32, 16u32);
    let colours = [[255u8, 0, 0], [0, 255, 0], [0, 0, 255]];
    let mut bytes = Vec::new();
    {
        let mut enc = GifEncoder::new(&mut bytes);
        let frames = colours.iter().map(|c| {
            Frame::from_parts(
                RgbaImage::from_pixel(w, h, Rgba([c[0], c[1], c[2], 255])),
                0,
                0,
                Delay::from_numer_denom_ms(100, 1),
            )
        });
        enc.encode_frames(frames).unwrap();
    }
    let frames = decode_frames(&bytes, &opts()).unwrap();
    assert_eq!(frames.len(), 3);
    for (f, c) in frames.iter().zip(colours) {
        assert_eq!((f.width, f.height, f.format), (w, h, PixelFormat::Rgba8));
        assert_eq!(&f.to_rgb8()[..3], &c, "frame colour");
    }
    assert_ne!(frames[0], frames[1]);
    assert_ne!(frames[1], frames[2]);
    // decode() is the first frame.
    assert_eq!(decode(&bytes, &opts()).unwrap().to_rgb8(), frames[0].to_rgb8());
    // Frame limits.
    let two = DecodeOptions { max_frames: 2, ..opts() };
    assert!(matches!(
        decode_frames(&bytes, &two),
        Err(MediaError::TooManyFrames { frames: 2, max_frames: 2, .. })
    ));
    let budget = DecodeOptions { max_total_pixels: u64::from(w * h) * 2, ..opts() };
    assert!(matches!(decode_frames(&bytes, &budget), Err(MediaError::TooManyFrames { frames: 2, .. })));
    // A still has one frame.
    let still = encode(&DynamicImage::ImageRgb8(scene(20, 20)), image::ImageFormat::Png);
    assert_eq!(decode_frames(&still, &opts()).unwrap().len(), 1);
}

#[test]
fn pixel_limit_is_configurable_and_enforced() {
    let bytes = encode(&DynamicImage::ImageRgb8(scene(100, 50)), image::ImageFormat::Png);
    let at = DecodeOptions { max_pixels: 5000, ..opts() };
    assert!(decode(&bytes, &at).is_ok());
    let below = DecodeOptions { max_pixels: 4999, ..opts() };
    assert_eq!(
        decode(&bytes, &below).unwrap_err(),
        MediaError::TooLarge { width: 100, height: 50, max_pixels: 4999 }
    );
    let jpeg = encode(&DynamicImage::ImageRgb8(scene(1100, 1030)), image::ImageFormat::Jpeg);
    for mode in [HashMode::Fast, HashMode::Exact] {
        let o =
            HashOptions { decode: DecodeOptions { max_pixels: 1_000_000, ..opts() }, mode, dihedral: false };
        assert!(
            matches!(
                hash_bytes(&jpeg, &o, &mut Hasher::new()),
                Err(MediaError::TooLarge { width: 1100, height: 1030, .. })
            ),
            "{mode:?}"
        );
    }
}

/// A JPEG with an EXIF APP1 segment carrying `orientation`.
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = b"II*\0".to_vec();
    tiff.extend_from_slice(&8u32.to_le_bytes()); // IFD offset
    tiff.extend_from_slice(&1u16.to_le_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_le_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_le_bytes()); // count
    tiff.extend_from_slice(&orientation.to_le_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[test]
fn exif_orientation_on_synthetic_jpeg() {
    // Large enough for the fast path to scale it.
    let (w, h) = (1400u32, 1100u32);
    let base = encode(&DynamicImage::ImageRgb8(scene(w, h)), image::ImageFormat::Jpeg);
    let mut hasher = Hasher::new();
    let plain = hash_bytes(
        &base,
        &HashOptions { dihedral: true, mode: HashMode::Exact, ..Default::default() },
        &mut hasher,
    )
    .unwrap();
    let dih = plain.dihedral.unwrap();
    // EXIF 6 = turn 90° clockwise = Meta's rot270; 8 = rot90; 3 = rot180.
    for (o, turn) in [(3u16, 2usize), (6, 3), (8, 1)] {
        let bytes = with_exif_orientation(&base, o);
        for mode in [HashMode::Exact, HashMode::Fast] {
            let on = hash_bytes(&bytes, &HashOptions { mode, ..Default::default() }, &mut hasher).unwrap();
            assert_eq!(on.mode, mode, "fast path taken for a 1400×1100 JPEG");
            assert_eq!((on.info.width, on.info.height), (w, h));
            assert_eq!(on.decoded_width > on.decoded_height, o == 3, "orientation {o} {mode:?}");
            let d = on.pdq.hash.distance(&dih.hashes[turn]);
            assert!(d <= 16, "orientation {o} {mode:?}: {d} from the rotated hash");
            let off = hash_bytes(
                &bytes,
                &HashOptions {
                    mode,
                    decode: DecodeOptions { apply_exif_orientation: false, ..opts() },
                    dihedral: false,
                },
                &mut hasher,
            )
            .unwrap();
            assert!(off.pdq.hash.distance(&plain.pdq.hash) <= 16, "orientation off {o} {mode:?}");
            assert!(off.decoded_width > off.decoded_height, "stored landscape");
        }
    }
}

#[test]
fn shared_non_jpeg_files_decode() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/pdq-reference");
    if !dir.is_dir() {
        eprintln!("SKIPPED: ../shared/testdata not found beside the project");
        return;
    }
    let files = [
        ("misc-images/c.png", ImageFormat::Png),
        ("misc-images/modes/LA.png", ImageFormat::Png),
        ("misc-images/modes/P.png", ImageFormat::Png),
        ("misc-images/modes/1.png", ImageFormat::Png),
        ("misc-images/modes/PA.webp", ImageFormat::WebP),
        ("misc-images/modes/I.webp", ImageFormat::WebP),
        ("misc-images/modes/CMYK.jpg", ImageFormat::Jpeg),
    ];
    for (f, fmt) in files {
        let bytes = std::fs::read(dir.join(f)).unwrap();
        let info = probe(&bytes).unwrap();
        assert_eq!(info.format, fmt, "{f}");
        let d = decode(&bytes, &opts()).unwrap();
        assert_eq!((d.width, d.height), (info.width, info.height), "{f}");
        assert_eq!(d.data.len(), (d.width * d.height) as usize * d.format.channels());
        assert_eq!(decode_frames(&bytes, &opts()).unwrap().len(), 1, "{f}");
    }
}
