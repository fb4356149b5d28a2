//! Properties of PDQ that must hold for any image.

use consentry_pdq::{reference, Dihedral, Hasher, ImageRef, PixelFormat};
use proptest::prelude::*;

fn formats() -> impl Strategy<Value = PixelFormat> {
    prop_oneof![
        Just(PixelFormat::Luma8),
        Just(PixelFormat::LumaA8),
        Just(PixelFormat::Rgb8),
        Just(PixelFormat::Rgba8)
    ]
}

/// A smooth-ish random image (random noise plus gradients, so it has real
/// structure and a non-trivial median), with optional row padding.
fn image() -> impl Strategy<Value = (u32, u32, usize, PixelFormat, Vec<u8>)> {
    (1u32..400, 1u32..400, 0usize..5, formats(), any::<u64>()).prop_map(|(w, h, pad, fmt, seed)| {
        let ch = fmt.channels();
        let stride = w as usize * ch + pad;
        let mut data = vec![0u8; stride * h as usize];
        let mut s = seed | 1;
        for y in 0..h as usize {
            for x in 0..w as usize {
                for c in 0..ch {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    let grad = (x * 255 / w as usize + y * 97 / h as usize + c * 40) as u64;
                    data[y * stride + x * ch + c] = ((grad + (s % 64)) % 256) as u8;
                }
            }
        }
        (w, h, stride, fmt, data)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    /// The fast path computes exactly the reference's DCT, bit for bit, for any
    /// size (including sizes under 64, exactly 64, and odd windows), pixel
    /// layout and row stride.
    #[test]
    fn fast_path_equals_reference((w, h, stride, fmt, data) in image()) {
        let img = ImageRef::with_stride(w, h, stride, fmt, &data).unwrap();
        let fast = Hasher::new().dct(&img);
        let slow = reference::pdq_dct(&img);
        match (fast, slow) {
            (None, None) => prop_assert!(w < 5 || h < 5),
            (Some((a, qa)), Some((b, qb))) => {
                prop_assert_eq!(qa, qb);
                for i in 0..16 {
                    for j in 0..16 {
                        prop_assert_eq!(a[i][j].to_bits(), b[i][j].to_bits(), "coefficient ({}, {})", i, j);
                    }
                }
            }
            _ => prop_assert!(false, "one path hashed and the other did not"),
        }
    }

    /// A hash of a real image has half its bits set (strictly above the median
    /// of 256 values leaves at most 128 ones), quality is within 0..=100, and
    /// reusing a hasher gives the same answer as a fresh one.
    #[test]
    fn hash_shape_and_hasher_reuse((w, h, stride, fmt, data) in image()) {
        let img = ImageRef::with_stride(w, h, stride, fmt, &data).unwrap();
        let mut reused = Hasher::new();
        let big = vec![7u8; 500 * 300 * 3];
        reused.hash(&ImageRef::new(500, 300, PixelFormat::Rgb8, &big).unwrap());
        let a = reused.hash(&img);
        let b = consentry_pdq::hash(&img);
        prop_assert_eq!(a, b);
        prop_assert!(a.quality <= 100);
        prop_assert!(a.hash.count_ones() <= 128);
        let d = reused.hash_dihedral(&img);
        prop_assert_eq!(d.get(Dihedral::Original), a.hash);
        prop_assert_eq!(d.quality, a.quality);
    }

    /// Alpha is ignored and grey is hashed as grey RGB (Pillow's
    /// `convert("RGB")`, which Meta's vectors use): every layout of the same
    /// picture gives the same hash.
    #[test]
    fn layouts_of_one_picture_hash_alike(w in 5u32..200, h in 5u32..200, seed in any::<u64>()) {
        let n = (w * h) as usize;
        let mut s = seed | 1;
        let grey: Vec<u8> = (0..n).map(|i| { s ^= s << 13; s ^= s >> 7; s ^= s << 17; ((s % 50) as usize + i * 200 / n) as u8 }).collect();
        let alpha = |i: usize| (i * 37 % 256) as u8;
        let la: Vec<u8> = grey.iter().enumerate().flat_map(|(i, &g)| [g, alpha(i)]).collect();
        let rgb: Vec<u8> = grey.iter().flat_map(|&g| [g, g, g]).collect();
        let rgba: Vec<u8> = grey.iter().enumerate().flat_map(|(i, &g)| [g, g, g, alpha(i)]).collect();
        let mut hasher = Hasher::new();
        let reference = hasher.hash(&ImageRef::new(w, h, PixelFormat::Rgb8, &rgb).unwrap());
        for (fmt, data) in [(PixelFormat::Luma8, &grey), (PixelFormat::LumaA8, &la), (PixelFormat::Rgba8, &rgba)] {
            prop_assert_eq!(hasher.hash(&ImageRef::new(w, h, fmt, data).unwrap()), reference, "{:?}", fmt);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Hashing an image and its top rows together gives exactly what hashing each alone gives,
    /// for any height of the top (none, under 5 rows, all of them), including the 64-pixel
    /// widths and heights the reference treats as their own downsample, and a hasher that
    /// hashed a larger image first.
    #[test]
    fn whole_and_top_together_equal_each_alone(
        (w, h, stride, fmt, data) in image(),
        wide64 in any::<bool>(),
        tall64 in any::<bool>(),
        top in prop_oneof![0u32..6, Just(64u32), 0u32..400, Just(u32::MAX)],
    ) {
        // Half the cases 64 wide, half 64 high (the reference's special case is 64 × 64).
        let w = if wide64 && w >= 64 { 64 } else { w };
        let h = if tall64 && h >= 64 { 64 } else { h };
        let img = ImageRef::with_stride(w, h, stride, fmt, &data).unwrap();
        let mut reused = Hasher::new();
        let big = vec![9u8; 500 * 400 * 3];
        reused.hash(&ImageRef::new(500, 400, PixelFormat::Rgb8, &big).unwrap());
        let (whole, top_hash) = reused.hash_dihedral_with_top(&img, top);
        let mut alone = Hasher::new();
        prop_assert_eq!(whole, alone.hash_dihedral(&img));
        let rows = top.min(h) as usize;
        let top_img = ImageRef::with_stride(w, rows as u32, stride, fmt, &data[..stride * rows]).unwrap();
        prop_assert_eq!(top_hash, alone.hash_dihedral(&top_img));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    /// The luminance handed over is every row's, once, in order, eight rows at a time, each pixel
    /// `0.299 R + 0.587 G + 0.114 B` in `f32` — or nothing, for an image PDQ does not filter
    /// (under 5 pixels on a side, or 64 × 64) — whatever the top's height; the hashes are those
    /// of the call without it.
    #[test]
    fn the_luminance_handed_over_is_every_row_once(
        (w, h, stride, fmt, data) in image(),
        tall64 in any::<bool>(),
        top in prop_oneof![0u32..6, 0u32..400],
    ) {
        let (w, h) = if tall64 && w >= 64 && h >= 64 { (64, 64) } else { (w, h) };
        let img = ImageRef::with_stride(w, h, stride, fmt, &data).unwrap();
        let mut seen = Vec::new();
        let mut wrong = 0usize;
        let got = Hasher::new().hash_dihedral_with_top_and_luma(&img, top, &mut |y0, n, block| {
            seen.push((y0, n));
            for r in 0..n {
                let row = &data[(y0 + r) * stride..];
                for (x, lanes) in block.iter().enumerate() {
                    let p = |c: usize| f32::from(row[x * fmt.channels() + if fmt.channels() >= 3 { c } else { 0 }]);
                    let want = 0.299 * p(0) + 0.587 * p(1) + 0.114 * p(2);
                    wrong += usize::from(lanes[r].to_bits() != want.to_bits());
                }
            }
            assert_eq!(block.len(), w as usize);
        });
        prop_assert_eq!(got, Hasher::new().hash_dihedral_with_top(&img, top));
        prop_assert_eq!(wrong, 0);
        if w < 5 || h < 5 || (w, h) == (64, 64) {
            prop_assert!(seen.is_empty());
        } else {
            let want: Vec<(usize, usize)> = (0..h as usize).step_by(8).map(|y0| (y0, 8.min(h as usize - y0))).collect();
            prop_assert_eq!(seen, want);
        }
    }
}

#[test]
fn exactly_64_by_64_is_taken_as_the_downsample() {
    // Meta's reference skips the blur for a 64×64 input (video frames that
    // ffmpeg already scaled); both paths must agree on that.
    let px: Vec<u8> = (0..64 * 64 * 3).map(|i| ((i * 31) % 256) as u8).collect();
    let img = ImageRef::new(64, 64, PixelFormat::Rgb8, &px).unwrap();
    let (a, _) = Hasher::new().dct(&img).unwrap();
    let (b, _) = reference::pdq_dct(&img).unwrap();
    assert_eq!(a, b);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// The hex text is the four words printed the plain way; parsing reads it back in either
    /// case, and a single byte that is not a hex digit is reported at its position.
    #[test]
    fn hex_text_round_trips_and_names_the_bad_digit(
        words in any::<[u64; 4]>(),
        upper in any::<bool>(),
        bad_at in 0usize..64,
        bad in any::<u8>().prop_filter("not a hex digit", |c| !c.is_ascii_hexdigit()),
    ) {
        let h = consentry_pdq::Hash256::from_words(words);
        let plain: String = words.iter().map(|w| format!("{w:016x}")).collect();
        prop_assert_eq!(h.to_hex(), plain.clone());
        prop_assert_eq!(format!("{h}"), plain.clone());
        prop_assert_eq!(&h.hex_bytes()[..], plain.as_bytes());
        let text = if upper { plain.to_uppercase() } else { plain.clone() };
        prop_assert_eq!(consentry_pdq::Hash256::from_hex(&text), Ok(h));
        let mut broken = text.into_bytes();
        broken[bad_at] = bad;
        // A byte that is not text cannot be in a &str at all; every other one is checked.
        if let Ok(s) = std::str::from_utf8(&broken) {
            // Trimming may take a leading or trailing whitespace byte away.
            let want = if s.trim().len() == 64 {
                Err(consentry_pdq::ParseHashError::InvalidDigit(bad_at))
            } else {
                Err(consentry_pdq::ParseHashError::Length(63))
            };
            prop_assert_eq!(consentry_pdq::Hash256::from_hex(s), want);
        }
    }
}
