//! The fast hash path on JPEGs: which decoder it takes, and how far its hash is from the exact one.

use consentry_media::{hash_bytes, HashMode, HashOptions};
use consentry_pdq::Hasher;

/// A benign synthetic picture with structure at PDQ's scale (so its quality is high): a grid of
/// cells of pseudo-random tone, a soft disc, a gentle wave and a little noise.
fn picture(w: usize, h: usize) -> Vec<u8> {
    let cell_tone = |cx: usize, cy: usize, k: u64| -> f32 {
        let mut v = (cx as u64 * 0x9E37_79B9 + cy as u64 * 0x85EB_CA6B + k * 0xC2B2_AE35) ^ 0x27d4_eb2f;
        v ^= v >> 15;
        v = v.wrapping_mul(0x2c1b_3c6d);
        v ^= v >> 12;
        (v % 160) as f32
    };
    let mut rgb = Vec::with_capacity(w * h * 3);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for y in 0..h {
        for x in 0..w {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let noise = (seed % 9) as f32 - 4.0;
            let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
            let (cx, cy) = (x * 19 / w, y * 17 / h);
            let d = ((fx - 0.6).powi(2) + (fy - 0.3).powi(2)).sqrt();
            let disc = 60.0 * (1.0 - (d / 0.25).min(1.0));
            let wave = 20.0 * ((fx * 9.0).sin() * (fy * 5.0).cos());
            let r = 30.0 + cell_tone(cx, cy, 1) + disc + noise;
            let g = 30.0 + cell_tone(cx, cy, 2) * 0.8 + wave + noise;
            let b = 40.0 + cell_tone(cx, cy, 3) * 0.6 + disc * 0.3 + noise;
            rgb.extend([r, g, b].map(|v: f32| v.clamp(0.0, 255.0) as u8));
        }
    }
    rgb
}

fn jpeg(w: u16, h: u16, progressive: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut e = jpeg_encoder::Encoder::new(&mut out, 88);
    e.set_progressive(progressive);
    e.encode(&picture(usize::from(w), usize::from(h)), w, h, jpeg_encoder::ColorType::Rgb).expect("encodes");
    out
}

fn both(bytes: &[u8]) -> (consentry_media::HashedImage, consentry_media::HashedImage) {
    let mut hasher = Hasher::new();
    let fast =
        hash_bytes(bytes, &HashOptions { mode: HashMode::Fast, ..HashOptions::default() }, &mut hasher)
            .expect("fast");
    let exact =
        hash_bytes(bytes, &HashOptions { mode: HashMode::Exact, ..HashOptions::default() }, &mut hasher)
            .expect("exact");
    (fast, exact)
}

#[test]
fn large_jpegs_are_hashed_from_a_quarter_scale_luma_plane() {
    // Progressive from 2048 px on the shorter side, baseline from 3072 px.
    for (w, h, progressive, quarter) in
        [(2300u16, 2100u16, true, (575, 525)), (3300, 3100, false, (825, 775))]
    {
        let (fast, exact) = both(&jpeg(w, h, progressive));
        assert_eq!(fast.mode, HashMode::Fast);
        assert_eq!((fast.decoded_width, fast.decoded_height), quarter, "quarter scale");
        assert_eq!((exact.decoded_width, exact.decoded_height), (u32::from(w), u32::from(h)));
        assert!(exact.pdq.quality >= 80, "test picture quality {}", exact.pdq.quality);
        let d = fast.pdq.hash.distance(&exact.pdq.hash);
        eprintln!(
            "progressive={progressive} {w}×{h}: fast–exact distance {d}, quality {} / {}",
            fast.pdq.quality, exact.pdq.quality
        );
        assert!(d <= 8, "fast–exact distance {d}");
    }
}

#[test]
fn smaller_jpegs_are_hashed_from_full_size_luma() {
    // Under 2048 px on the shorter side a quarter would be under 512 px, where PDQ drifts; a
    // baseline file keeps its full-size luma up to 3071 px.
    for (w, h, progressive) in
        [(2600u16, 2100u16, false), (2560, 1600, false), (1280, 960, true), (1280, 720, false)]
    {
        let (fast, exact) = both(&jpeg(w, h, progressive));
        assert_eq!(fast.mode, HashMode::Fast);
        assert_eq!((fast.decoded_width, fast.decoded_height), (u32::from(w), u32::from(h)));
        let d = fast.pdq.hash.distance(&exact.pdq.hash);
        eprintln!("{w}×{h} progressive={progressive}: fast–exact distance {d}");
        assert!(d <= 8, "{w}×{h}: fast–exact distance {d}");
    }
}
