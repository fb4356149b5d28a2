//! Hostile input: every case gives a clear `MediaError` (or, for damage a
//! decoder tolerates, a bounded image), never a panic, and nothing the size
//! of a claimed giant image is allocated. The inputs are generated here.
//! Each goes through `consentry_media::fuzz_one`, the code the fuzz target
//! runs, plus direct calls with the default limits.

use consentry_media::{
    decode, decode_frames, fuzz_one, hash_bytes, probe, DecodeOptions, HashMode, HashOptions, MediaError,
};
use consentry_pdq::Hasher;
use image::{DynamicImage, RgbImage, Rgba, RgbaImage};
use std::io::Cursor;
use std::path::PathBuf;
use std::time::Instant;

fn scene(w: u32, h: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 5) as u8, (y * 3) as u8, ((x ^ y) * 2) as u8])
    }))
}

fn encode(img: &DynamicImage, fmt: image::ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, fmt).unwrap();
    out.into_inner()
}

fn gif_frames(w: u32, h: u32, n: usize) -> Vec<u8> {
    use image::codecs::gif::GifEncoder;
    use image::{Delay, Frame};
    let mut bytes = Vec::new();
    {
        let mut enc = GifEncoder::new(&mut bytes);
        let frames = (0..n).map(|i| {
            Frame::from_parts(
                RgbaImage::from_pixel(w, h, Rgba([(i * 37) as u8, (i * 11) as u8, 0, 255])),
                0,
                0,
                Delay::from_numer_denom_ms(10, 1),
            )
        });
        enc.encode_frames(frames).unwrap();
    }
    bytes
}

/// Small real files of every format with a body worth damaging.
fn samples() -> Vec<(&'static str, Vec<u8>)> {
    let img = scene(90, 70);
    let mut v = vec![
        ("jpeg", encode(&img, image::ImageFormat::Jpeg)),
        ("png", encode(&img, image::ImageFormat::Png)),
        ("gif", encode(&img, image::ImageFormat::Gif)),
        ("webp", encode(&img, image::ImageFormat::WebP)),
        ("bmp", encode(&img, image::ImageFormat::Bmp)),
        ("tiff", encode(&img, image::ImageFormat::Tiff)),
        ("gif-anim", gif_frames(30, 20, 4)),
    ];
    // A real photo from the shared data when present (progressive-free
    // baseline JPEG, large enough for the fast path).
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/pdq-reference");
    if let Ok(b) = std::fs::read(shared.join("bridge-mods/square-512x512.jpg")) {
        v.push(("shared-jpeg", b));
    }
    if let Ok(b) = std::fs::read(shared.join("misc-images/modes/PA.webp")) {
        v.push(("shared-webp", b));
    }
    v
}

/// A deterministic xorshift, so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn nothing_and_noise_are_rejected() {
    let o = DecodeOptions::default();
    assert_eq!(decode(&[], &o).unwrap_err(), MediaError::Empty);
    assert_eq!(probe(&[]).unwrap_err(), MediaError::Empty);
    assert_eq!(fuzz_one(&[]).unwrap_err(), MediaError::Empty);
    let text = b"This is a text file, not an image.\nIt has two lines.\n";
    assert_eq!(decode(text, &o).unwrap_err(), MediaError::UnknownFormat);
    assert_eq!(fuzz_one(text).unwrap_err(), MediaError::UnknownFormat);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for len in [1usize, 2, 3, 7, 64, 1000, 100_000] {
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        bytes[0] = 0; // no format starts with 0
        assert_eq!(fuzz_one(&bytes).unwrap_err(), MediaError::UnknownFormat, "{len} random bytes");
    }
    // Magic bytes alone, and magic followed by noise.
    for magic in [
        &b"\xFF\xD8\xFF"[..],
        b"\x89PNG\r\n\x1a\n",
        b"GIF89a",
        b"RIFF\0\0\0\0WEBP",
        b"BM",
        b"II*\0",
        b"MM\0*",
    ] {
        let e = fuzz_one(magic).unwrap_err();
        assert!(matches!(e, MediaError::Corrupt(_) | MediaError::Unsupported(_)), "{magic:?}: {e}");
        for seed in 1..20u64 {
            let mut r = Rng(seed * 7919);
            let mut bytes = magic.to_vec();
            bytes.extend((0..200 + seed as usize * 50).map(|_| r.next() as u8));
            assert!(fuzz_one(&bytes).is_err(), "{magic:?} + noise decoded");
        }
    }
}

#[test]
fn truncated_files_fail_cleanly() {
    for (name, bytes) in samples() {
        let mut errors = 0;
        let cuts: Vec<usize> = [1, 2, 4, 8, 12, 16, 24, 33, 50, 64, 100, 200]
            .into_iter()
            .chain((1..10).map(|k| bytes.len() * k / 10))
            .chain([bytes.len() - 2, bytes.len() - 1])
            .filter(|&c| c < bytes.len())
            .collect();
        for &cut in &cuts {
            match fuzz_one(&bytes[..cut]) {
                Err(e) => {
                    errors += 1;
                    let msg = e.to_string();
                    assert!(!msg.contains('\n') && !msg.is_empty(), "{name} cut at {cut}: message {msg:?}");
                }
                // Some decoders return what they had (grey filled) for a
                // truncated body, as Pillow can; that is not a failure.
                Ok(h) => assert!(h.info.width > 0),
            }
        }
        // Cut inside the header, every format fails.
        for cut in [1usize, 4, 12] {
            assert!(fuzz_one(&bytes[..cut]).is_err(), "{name} cut at {cut} decoded");
        }
        eprintln!("{name}: {errors} of {} truncations rejected", cuts.len());
    }
}

#[test]
fn corrupt_bodies_never_panic() {
    let mut rng = Rng(42);
    for (name, bytes) in samples() {
        let mut outcomes = [0usize; 2];
        // The shared photos take longer to decode; fewer copies of them.
        let copies = if name.starts_with("shared") { 8 } else { 60 };
        for i in 0..copies {
            let mut b = bytes.clone();
            // Flip 1 to 8 bytes past the first 8, some in the header region.
            for _ in 0..1 + i % 8 {
                let pos = 8 + (rng.next() as usize) % (b.len() - 8);
                b[pos] ^= 1 << (rng.next() % 8);
            }
            outcomes[usize::from(fuzz_one(&b).is_ok())] += 1;
        }
        eprintln!("{name}: of {copies} corrupted copies {} rejected, {} decoded", outcomes[0], outcomes[1]);
    }
}

/// A PNG whose IHDR (with a valid CRC) claims `w`×`h`, with a tiny IDAT.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let mut c = crc32fast::Hasher::new();
        c.update(kind);
        c.update(data);
        out.extend_from_slice(&c.finalize().to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(&mut out, b"IEND", &[]);
    out
}

#[test]
fn giant_png_header_is_refused_before_decoding() {
    let bytes = png_claiming(60000, 60000);
    let info = probe(&bytes).unwrap();
    assert_eq!((info.width, info.height), (60000, 60000));
    let t = Instant::now();
    let e = decode(&bytes, &DecodeOptions::default()).unwrap_err();
    assert_eq!(e, MediaError::TooLarge { width: 60000, height: 60000, max_pixels: 64_000_000 });
    assert_eq!(e.to_string(), "image too large: 60000×60000 pixels exceeds the limit of 64000000 pixels");
    for mode in [HashMode::Fast, HashMode::Exact] {
        let r = hash_bytes(&bytes, &HashOptions { mode, ..Default::default() }, &mut Hasher::new());
        assert!(matches!(r, Err(MediaError::TooLarge { .. })), "{mode:?}");
    }
    assert!(matches!(decode_frames(&bytes, &DecodeOptions::default()), Err(MediaError::TooLarge { .. })));
    assert!(matches!(fuzz_one(&bytes), Err(MediaError::TooLarge { .. })));
    // Refused from the header: no 10 GiB allocation, no time spent.
    assert!(t.elapsed().as_secs_f64() < 1.0);
    // Within the limit but lying about its size: a clean error.
    assert!(matches!(
        decode(&png_claiming(300, 200), &DecodeOptions::default()),
        Err(MediaError::Corrupt(_))
    ));
}

#[test]
fn giant_jpeg_sof_is_refused_before_decoding() {
    let mut bytes = encode(&scene(64, 48), image::ImageFormat::Jpeg);
    // Find SOF0 (FF C0) and rewrite height and width to 65000.
    let sof = bytes.windows(2).position(|w| w == [0xFF, 0xC0]).expect("baseline JPEG");
    bytes[sof + 5..sof + 7].copy_from_slice(&65000u16.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&65000u16.to_be_bytes());
    let info = probe(&bytes).unwrap();
    assert_eq!((info.width, info.height), (65000, 65000));
    for mode in [HashMode::Fast, HashMode::Exact] {
        let r = hash_bytes(&bytes, &HashOptions { mode, ..Default::default() }, &mut Hasher::new());
        assert_eq!(
            r.unwrap_err(),
            MediaError::TooLarge { width: 65000, height: 65000, max_pixels: 64_000_000 },
            "{mode:?}"
        );
    }
    assert!(matches!(fuzz_one(&bytes), Err(MediaError::TooLarge { .. })));
    // Under a generous limit it is still bounded: the body holds 64×48 of
    // data, the rest is a clean error or filler, never a crash.
    let _ = decode(&bytes[..bytes.len() / 2], &DecodeOptions::default());
}

#[test]
fn giant_gif_screen_is_refused() {
    let mut bytes = gif_frames(10, 10, 2);
    bytes[6..8].copy_from_slice(&65535u16.to_le_bytes());
    bytes[8..10].copy_from_slice(&65535u16.to_le_bytes());
    let info = probe(&bytes).unwrap();
    assert_eq!((info.width, info.height), (65535, 65535));
    assert!(matches!(
        decode(&bytes, &DecodeOptions::default()),
        Err(MediaError::TooLarge { width: 65535, height: 65535, .. })
    ));
    assert!(matches!(decode_frames(&bytes, &DecodeOptions::default()), Err(MediaError::TooLarge { .. })));
    assert!(fuzz_one(&bytes).is_err());
}

#[test]
fn thousands_of_gif_frames_hit_the_frame_limit() {
    let bytes = gif_frames(4, 4, 3000);
    let t = Instant::now();
    let e = decode_frames(&bytes, &DecodeOptions::default()).unwrap_err();
    assert_eq!(
        e,
        MediaError::TooManyFrames { frames: 1000, max_frames: 1000, max_total_pixels: 128_000_000 }
    );
    // The first frame alone is fine.
    assert_eq!(decode(&bytes, &DecodeOptions::default()).unwrap().width, 4);
    assert!(fuzz_one(&bytes).is_ok());
    // A big canvas hits the pixel budget long before the frame limit.
    let big = gif_frames(1000, 1000, 40);
    let o = DecodeOptions { max_total_pixels: 10_000_000, ..DecodeOptions::default() };
    assert_eq!(
        decode_frames(&big, &o).unwrap_err(),
        MediaError::TooManyFrames { frames: 10, max_frames: 1000, max_total_pixels: 10_000_000 }
    );
    assert!(t.elapsed().as_secs_f64() < 20.0);
}

/// An animated WebP: VP8X + ANIM + `n` ANMF frames, each a 1×1 lossless image.
fn webp_frames(n: usize, canvas: (u32, u32)) -> Vec<u8> {
    let one = encode(
        &DynamicImage::ImageRgba8(RgbaImage::from_pixel(1, 1, Rgba([9, 8, 7, 255]))),
        image::ImageFormat::WebP,
    );
    let vp8l = &one[12..]; // the VP8L chunk, header included
    fn u24(v: u32) -> [u8; 3] {
        [v as u8, (v >> 8) as u8, (v >> 16) as u8]
    }
    let mut body = b"WEBP".to_vec();
    let push_chunk = |body: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]| {
        body.extend_from_slice(kind);
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(data);
        if data.len() % 2 == 1 {
            body.push(0);
        }
    };
    let mut vp8x = vec![0x02, 0, 0, 0]; // animation flag
    vp8x.extend_from_slice(&u24(canvas.0 - 1));
    vp8x.extend_from_slice(&u24(canvas.1 - 1));
    push_chunk(&mut body, b"VP8X", &vp8x);
    push_chunk(&mut body, b"ANIM", &[0, 0, 0, 0, 0, 0]);
    for _ in 0..n {
        let mut anmf = Vec::new();
        anmf.extend_from_slice(&u24(0));
        anmf.extend_from_slice(&u24(0));
        anmf.extend_from_slice(&u24(0)); // width - 1
        anmf.extend_from_slice(&u24(0)); // height - 1
        anmf.extend_from_slice(&u24(10)); // duration
        anmf.push(0);
        anmf.extend_from_slice(vp8l);
        push_chunk(&mut body, b"ANMF", &anmf);
    }
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

#[test]
fn thousands_of_webp_frames_hit_the_frame_limit() {
    let small = webp_frames(3, (2, 2));
    let frames = decode_frames(&small, &DecodeOptions::default()).unwrap();
    assert_eq!(frames.len(), 3, "the hand-made animation is valid");
    let bytes = webp_frames(5000, (2, 2));
    let e = decode_frames(&bytes, &DecodeOptions::default()).unwrap_err();
    assert!(matches!(e, MediaError::TooManyFrames { frames: 1000, max_frames: 1000, .. }), "{e}");
    assert!(fuzz_one(&bytes).is_ok());
    // A huge canvas is refused from the header.
    let huge = webp_frames(2, (16000, 16000));
    assert!(matches!(
        decode_frames(&huge, &DecodeOptions::default()),
        Err(MediaError::TooLarge { width: 16000, height: 16000, .. })
    ));
    assert!(matches!(decode(&huge, &DecodeOptions::default()), Err(MediaError::TooLarge { .. })));
}

#[test]
fn errors_read_as_one_line() {
    let all = [
        MediaError::Empty,
        MediaError::UnknownFormat,
        MediaError::Unsupported("TIFF\ncompression 34712".into()),
        MediaError::TooLarge { width: 1, height: 2, max_pixels: 1 },
        MediaError::TooManyFrames { frames: 3, max_frames: 3, max_total_pixels: 9 },
        MediaError::Corrupt("x".repeat(2000)),
    ];
    for e in all {
        let s = e.to_string();
        assert!(!s.contains('\n') && s.len() < 400, "{s}");
        let _: &dyn std::error::Error = &e;
    }
}
