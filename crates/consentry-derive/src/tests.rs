//! Matcher tests on synthetic benign images (shapes on gradients), the
//! serialized form, and the index's exactness against brute force.

use super::*;
use proptest::prelude::*;

/// An RGB image: a colour gradient with 60 random rectangles and discs and faint texture.
#[derive(Clone)]
struct Img {
    w: u32,
    h: u32,
    px: Vec<u8>,
}

impl Img {
    fn get(&self, x: u32, y: u32) -> [u8; 3] {
        let i = ((y * self.w + x) * 3) as usize;
        [self.px[i], self.px[i + 1], self.px[i + 2]]
    }
    fn put(&mut self, x: u32, y: u32, c: [u8; 3]) {
        let i = ((y * self.w + x) * 3) as usize;
        self.px[i..i + 3].copy_from_slice(&c);
    }
    fn pixels(&self) -> Pixels<'_> {
        Pixels::new(self.w, self.h, PixelFormat::Rgb8, &self.px).unwrap()
    }
}

/// The benign synthetic scene of [`crate::synth::scene`], in this module's image type.
fn scene(w: u32, h: u32, seed: u64) -> Img {
    from_synth(crate::synth::scene(w, h, seed))
}

fn crop(img: &Img, x0: u32, y0: u32, w: u32, h: u32) -> Img {
    let mut o = Img { w, h, px: vec![0; (w * h * 3) as usize] };
    for y in 0..h {
        for x in 0..w {
            o.put(x, y, img.get(x0 + x, y0 + y));
        }
    }
    o
}

/// Pad by `f` of each dimension on each side, with a solid colour or stripes.
fn pad(img: &Img, f: f32, stripes: bool) -> Img {
    let (bx, by) = ((img.w as f32 * f) as u32, (img.h as f32 * f) as u32);
    let (w, h) = (img.w + 2 * bx, img.h + 2 * by);
    let mut o = Img { w, h, px: vec![0; (w * h * 3) as usize] };
    for y in 0..h {
        for x in 0..w {
            let c = if x >= bx && x < bx + img.w && y >= by && y < by + img.h {
                img.get(x - bx, y - by)
            } else if stripes && (x / 24) % 2 == 0 {
                [230, 40, 90]
            } else {
                [20, 20, 20]
            };
            o.put(x, y, c);
        }
    }
    o
}

/// Replace the bottom-centre region covering `frac` of the area with `other`'s pixels
/// ([`crate::synth::replace_body`]).
fn replace_body(img: &Img, other: &Img, frac: f32) -> Img {
    from_synth(crate::synth::replace_body(&to_synth(img), &to_synth(other), frac))
}

fn to_synth(i: &Img) -> crate::synth::RgbImage {
    crate::synth::RgbImage { width: i.w, height: i.h, data: i.px.clone() }
}

fn from_synth(s: crate::synth::RgbImage) -> Img {
    Img { w: s.width, h: s.height, px: s.data }
}

/// Box-average downscale by an integer factor (a re-encode at a smaller size).
fn shrink(img: &Img, k: u32) -> Img {
    let (w, h) = (img.w / k, img.h / k);
    let mut o = Img { w, h, px: vec![0; (w * h * 3) as usize] };
    for y in 0..h {
        for x in 0..w {
            let mut s = [0u32; 3];
            for dy in 0..k {
                for dx in 0..k {
                    let c = img.get(x * k + dx, y * k + dy);
                    (0..3).for_each(|i| s[i] += u32::from(c[i]));
                }
            }
            o.put(x, y, [(s[0] / (k * k)) as u8, (s[1] / (k * k)) as u8, (s[2] / (k * k)) as u8]);
        }
    }
    o
}

fn setup() -> (Extractor, DeriveIndex, Vec<Img>) {
    let mut ex = Extractor::new();
    let mut index = DeriveIndex::new(Params::default());
    let imgs: Vec<Img> = (0..6).map(|i| scene(900, 640, 100 + i)).collect();
    for (i, im) in imgs.iter().enumerate() {
        let s = ex.signature(&im.pixels());
        assert!(
            s.keypoints.len() >= 40,
            "synthetic scene {i} should give keypoints, got {}",
            s.keypoints.len()
        );
        index.insert(i as u64, s).unwrap();
    }
    (ex, index, imgs)
}

fn found(ex: &mut Extractor, index: &DeriveIndex, q: &Img) -> Vec<Hit> {
    index.search(&ex.query(&q.pixels()))
}

#[test]
fn derivatives_that_defeat_pdq_match_their_source_only() {
    let (mut ex, index, imgs) = setup();
    let a = &imgs[0];
    let other = scene(900, 640, 999);
    let cases: Vec<(&str, Img)> = vec![
        ("crop 20% all sides", crop(a, 180, 128, 540, 384)),
        ("crop 30% one side", crop(a, 270, 0, 630, 640)),
        ("crop off-centre", crop(a, 40, 220, 630, 400)),
        ("pad 30% solid", pad(a, 0.3, false)),
        ("pad 20% stripes", pad(a, 0.2, true)),
        ("body 50% replaced", replace_body(a, &other, 0.5)),
        ("body 40% replaced, shrunk 2x", shrink(&replace_body(a, &other, 0.4), 2)),
        ("pad 10% of a 10% crop, shrunk 3x", shrink(&pad(&crop(a, 90, 64, 720, 512), 0.1, false), 3)),
    ];
    let src_pdq = consentry_pdq::hash(&a.pixels().image_ref()).hash;
    for (name, q) in &cases {
        let qf = ex.query(&q.pixels());
        let d = qf.pdq.iter().map(|h| h.distance(&src_pdq)).min().unwrap();
        assert!(
            d > 31,
            "{name}: global PDQ already matches (distance {d}); the case does not test the local path"
        );
        let hits = index.search(&qf);
        let ids: Vec<u64> = hits.iter().map(|h| h.id).collect();
        assert_eq!(ids, vec![0], "{name}: {hits:?}");
        assert!(hits[0].inliers >= Params::default().min_inliers, "{name}");
    }
}

/// Mirrored left to right.
fn mirror(img: &Img) -> Img {
    from_synth(crate::synth::mirror(&to_synth(img)))
}

#[test]
fn the_mirrored_keypoints_are_those_of_the_mirror_image() {
    let mut ex = Extractor::new();
    let a = scene(900, 640, 101);
    let (q, qm) = (ex.query(&a.pixels()), ex.query(&mirror(&a).pixels()));
    assert!(q.keypoints.len() > 100 && q.mirrored.len() == q.keypoints.len());
    assert_eq!(ex.query_with(&a.pixels(), false), QueryFeatures { mirrored: Vec::new(), ..q.clone() });
    // the corners of the mirror image, as described by mirroring the query's tests: where the
    // mirror image has a corner too (the dense selection's cells start at the left edge in both),
    // the same position within a pixel and nearly the same descriptor
    let (mut near, mut both) = (0, 0);
    for k in &q.mirrored {
        let Some(t) = qm.keypoints.iter().find(|t| {
            t.level == k.level
                && (i32::from(t.x) - i32::from(k.x)).abs() <= 8
                && (i32::from(t.y) - i32::from(k.y)).abs() <= 8
        }) else {
            continue;
        };
        both += 1;
        near += usize::from(crate::verify::hamming(&t.desc, &k.desc) <= 8);
    }
    eprintln!("{both} of {} at the same place, {near} of them alike", q.mirrored.len());
    assert!(both * 10 >= q.mirrored.len() * 8, "{both} of {} mirrored keypoints", q.mirrored.len());
    assert!(near * 100 >= both * 95, "{near} of {both}");
}

#[test]
fn a_mirrored_and_cropped_copy_matches_through_the_mirrored_keypoints() {
    let (mut ex, with_mirror, imgs) = setup();
    let mirrored_rule = Params::default();
    assert!(mirrored_rule.mirrored, "on by default");
    let mut index = DeriveIndex::new(Params { mirrored: false, ..mirrored_rule });
    let entries: Vec<(u64, Signature)> =
        imgs.iter().enumerate().map(|(i, im)| (i as u64, ex.signature(&im.pixels()))).collect();
    assert!(index.extend(entries.clone()).is_empty());
    let a = &imgs[2];
    let src_pdq = consentry_pdq::hash(&a.pixels().image_ref()).hash;
    for (name, q) in [
        ("mirrored, crop 20% all sides", mirror(&crop(a, 180, 128, 540, 384))),
        ("mirrored, crop 30% one side", mirror(&crop(a, 0, 0, 630, 640))),
        ("mirrored, pad 20% stripes", mirror(&pad(a, 0.2, true))),
    ] {
        let qf = ex.query(&q.pixels());
        let d = qf.pdq.iter().map(|h| h.distance(&src_pdq)).min().unwrap();
        assert!(d > 31, "{name}: the dihedral PDQ hashes already match (distance {d})");
        assert!(
            index.search(&qf).iter().all(|h| h.id != 2 || h.band_distance.is_some()),
            "{name}: matched by rule 2 without the mirrored keypoints"
        );
        let hits = with_mirror.search(&qf);
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![2], "{name}: {hits:?}");
        assert!(hits[0].inliers >= mirrored_rule.min_inliers && hits[0].mirrored, "{name}: {hits:?}");
        assert_eq!(hits, brute_force_search(&mirrored_rule, &entries, &qf), "{name}");
    }
    // unrelated scenes and their mirror images still match nothing
    for seed in 500..506 {
        let u = mirror(&crop(&scene(800, 600, seed), 60, 40, 680, 520));
        assert!(with_mirror.search(&ex.query(&u.pixels())).is_empty(), "unrelated scene {seed} matched");
    }
}

#[test]
fn copies_match_and_unrelated_images_do_not() {
    let (mut ex, index, imgs) = setup();
    for (i, im) in imgs.iter().enumerate() {
        let hits = found(&mut ex, &index, &shrink(im, 2));
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![i as u64]);
        assert!(hits[0].pdq_distance.is_some(), "a downscaled copy is a PDQ match too");
    }
    for seed in 500..510 {
        let u = scene(800, 600, seed);
        assert!(found(&mut ex, &index, &u).is_empty(), "unrelated scene {seed} matched");
        assert!(found(&mut ex, &index, &crop(&u, 100, 60, 600, 480)).is_empty());
    }
    // An image that keeps only a thin strip of the source is not a match.
    let strip = crop(&imgs[1], 0, 0, 900, 60);
    assert!(found(&mut ex, &index, &strip).iter().all(|h| h.id != 1));
}

#[test]
fn signature_fits_the_budget_and_round_trips() {
    let mut ex = Extractor::new();
    let s = ex.signature(&scene(1200, 800, 7).pixels());
    let b = s.to_bytes();
    assert!(b.len() <= MAX_SIGNATURE_BYTES && MAX_SIGNATURE_BYTES <= 2000, "{} bytes", b.len());
    assert_eq!(Signature::from_bytes(&b).unwrap(), s);
    let t = s.to_base64();
    assert_eq!(Signature::from_base64(&format!(" {t}\n")).unwrap(), s);
    assert_eq!(Signature::from_bytes(&b[..b.len() - 1]), Err(DecodeError::Truncated));
    let mut extra = b.clone();
    extra.push(0);
    assert_eq!(Signature::from_bytes(&extra), Err(DecodeError::TrailingBytes));
    assert_eq!((b[0], s.source_side), (4, 1200), "with the image's size and grid: version 4");
    let g = s.grid.as_ref().expect("a grid");
    assert_eq!((g.cols, g.rows, g.width, g.height, g.fine), (12, 12, 512, 341, false));
    // the grid, last: 6 bytes of header and 144 cells of 4 bits
    let grid_at = b.len() - 78;
    assert_eq!(&b[grid_at - 2..grid_at], &1200u16.to_le_bytes());
    assert_eq!(&b[grid_at..grid_at + 6], &[0, 2, 85, 1, 12, 12]);
    let mut v5 = b.clone();
    v5[0] = 5;
    assert_eq!(Signature::from_bytes(&v5), Err(DecodeError::Version(5)));
    let mut qual = b.clone();
    qual[grid_at - 3] = 101;
    assert_eq!(Signature::from_bytes(&qual), Err(DecodeError::Invalid("quality")));
    let mut no_side = b.clone();
    no_side[grid_at - 2..grid_at].fill(0);
    assert_eq!(Signature::from_bytes(&no_side), Err(DecodeError::Invalid("image size")));
    let mut cells = b.clone();
    cells[grid_at + 4] = 11;
    assert_eq!(Signature::from_bytes(&cells), Err(DecodeError::Invalid("grid size")));
    let mut frame = b.clone();
    frame[grid_at..grid_at + 2].fill(0);
    assert_eq!(Signature::from_bytes(&frame), Err(DecodeError::Invalid("grid")));
    // An image side over u16 is written as 65,535 (still "not small").
    let huge = Signature { source_side: 70_000, ..s.clone() };
    assert_eq!(Signature::from_bytes(&huge.to_bytes()).unwrap().source_side, 65_535);
    assert_eq!(Signature::from_base64("not base64!"), Err(DecodeError::Base64));
    assert_eq!(Signature::from_bytes(&[]), Err(DecodeError::Truncated));
    // Tiny images: PDQ's zero hash, no keypoints, still serializable.
    let tiny = Img { w: 4, h: 4, px: vec![9; 48] };
    let s = ex.signature(&tiny.pixels());
    assert!(s.keypoints.is_empty());
    assert_eq!(s.band.map(|b| b.quality), Some(0));
    assert_eq!(Signature::from_bytes(&s.to_bytes()).unwrap(), s);
    // A one-row image: a band of one row.
    let row = Img { w: 64, h: 1, px: vec![9; 192] };
    assert_eq!(Signature::from_bytes(&ex.signature(&row.pixels()).to_bytes()).unwrap().keypoints.len(), 0);
}

#[test]
fn version_1_and_2_signatures_and_query_features_are_still_read() {
    // Version 3 is version 4 without the grid, version 2 is version 3 without the image's size,
    // version 1 is version 2 without the band: built here by hand from a version-4 signature.
    let mut ex = Extractor::new();
    let img = scene(900, 600, 31);
    let s4 = ex.signature(&img.pixels());
    let b4 = s4.to_bytes();
    assert_eq!(b4[0], 4);
    let mut b3 = b4[..b4.len() - 78].to_vec();
    b3[0] = 3;
    let s3 = Signature::from_bytes(&b3).unwrap();
    assert_eq!(s3, Signature { grid: None, ..s4.clone() });
    assert_eq!(s3.to_bytes(), b3, "a signature without the grid is written as version 3");
    assert_eq!((b3[0], s3.source_side), (3, 900));
    let mut b2 = b3[..b3.len() - 2].to_vec();
    b2[0] = 2;
    let s2 = Signature::from_bytes(&b2).unwrap();
    assert_eq!(s2, Signature { source_side: 0, ..s3.clone() });
    assert_eq!(s2.to_bytes(), b2, "a signature without the size is written as version 2");
    assert_eq!(Signature::from_bytes(&b2[..b2.len() - 1]), Err(DecodeError::Truncated));
    let mut b2x = b2.clone();
    b2x.extend_from_slice(&[0, 0]);
    assert_eq!(Signature::from_bytes(&b2x), Err(DecodeError::TrailingBytes));
    assert!(s2.band.unwrap().quality > 0);
    let mut b1 = b2[..b2.len() - 33].to_vec();
    b1[0] = 1;
    let s1 = Signature::from_bytes(&b1).unwrap();
    assert_eq!(s1, Signature { band: None, ..s2.clone() });
    assert_eq!(s1.to_bytes(), b1, "a version-1 signature is written back as it came");
    assert_eq!(Signature::from_bytes(&b1[..b1.len() - 1]), Err(DecodeError::Truncated));
    let mut b1x = b1.clone();
    b1x.push(0);
    assert_eq!(Signature::from_bytes(&b1x), Err(DecodeError::TrailingBytes));
    // query features of version 1: no band fields (nor mirrored keypoints, which need version 3,
    // nor levels a third of an octave apart, version 4)
    let q2 = QueryFeatures { mirrored: Vec::new(), ..ex.query(&img.pixels()).in_half_octaves() };
    let qb2 = q2.to_bytes();
    assert_eq!(qb2[0], 2, "query features without mirrored keypoints are written as version 2");
    assert_eq!(QueryFeatures::from_bytes(&qb2).unwrap(), q2);
    let mut qb1 = qb2[..258].to_vec();
    qb1[0] = 1;
    qb1.extend_from_slice(&qb2[258 + 65..]);
    let q1 = QueryFeatures::from_bytes(&qb1).unwrap();
    assert_eq!(q1, QueryFeatures { band: None, ..q2.clone() });
    // and a version-1 signature matches the keypoint and PDQ way only
    let mut index = DeriveIndex::new(Params::default());
    index.insert(1, s1).unwrap();
    let hits = index.search(&q2);
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].band_distance, None);
    assert_eq!(hits[0].pdq_distance, Some(0));
}

#[test]
fn the_top_band_catches_a_copy_with_most_of_the_body_area_replaced() {
    let mut ex = Extractor::new();
    let (a, other) = (scene(900, 640, 41), scene(900, 640, 42));
    let sig = ex.signature(&a.pixels());
    let band = sig.band.expect("a band");
    assert!(band.quality >= 50, "the scene's top band should be textured (quality {})", band.quality);
    // 70 % of the area replaced (up to 80 % of the height), then mirrored left to right
    let body = replace_body(&a, &other, 0.7);
    let mirrored = mirror(&body);
    let with = DeriveIndex::new(Params::default());
    let without = DeriveIndex::new(Params { band_radius: None, ..Params::default() });
    let mut indexes = [with, without];
    for index in &mut indexes {
        index.insert(5, sig.clone()).unwrap();
        index.insert(6, ex.signature(&other.pixels())).unwrap();
        index.insert(7, ex.signature(&scene(900, 640, 43).pixels())).unwrap();
    }
    for (name, q) in [("replaced", &body), ("replaced and mirrored", &mirrored)] {
        let qf = ex.query(&q.pixels());
        let d = qf.pdq.iter().map(|h| h.distance(&sig.pdq)).min().unwrap();
        assert!(d > 31, "{name}: global PDQ matches (distance {d})");
        let hits = indexes[0].search(&qf);
        let five: Vec<&Hit> = hits.iter().filter(|h| h.id == 5).collect();
        assert_eq!(five.len(), 1, "{name}: {hits:?}");
        assert!(five[0].band_distance.is_some_and(|d| d <= 31), "{name}: {hits:?}");
        let entries: Vec<(u64, Signature)> = vec![(5, sig.clone())];
        assert_eq!(
            brute_force_search(&Params::default(), &entries, &qf)
                .iter()
                .map(|h| h.band_distance)
                .collect::<Vec<_>>(),
            vec![five[0].band_distance]
        );
        // without rule 3 the band says nothing
        assert!(indexes[1].search(&qf).iter().all(|h| h.band_distance.is_none()), "{name}");
    }
    // unrelated scenes do not match through their bands
    for seed in 600..610 {
        let u = ex.query(&scene(900, 640, seed).pixels());
        assert!(indexes[0].search(&u).iter().all(|h| h.band_distance.is_none()), "scene {seed}");
    }
}

#[test]
fn query_features_round_trip_and_refuse_corruption() {
    let mut ex = Extractor::new();
    let q = ex.query(&scene(900, 600, 8).pixels());
    assert!(q.keypoints.len() > 100, "{} keypoints", q.keypoints.len());
    let b = q.to_bytes();
    assert_eq!(QueryFeatures::from_bytes(&b).unwrap(), q);
    assert_eq!(QueryFeatures::from_base64(&format!("{}\n", q.to_base64())).unwrap(), q);
    // every truncation, a trailing byte, another version, an out-of-range field
    for cut in [0, 1, 100, 259, 260, 324, b.len() - 1] {
        assert_eq!(QueryFeatures::from_bytes(&b[..cut]), Err(DecodeError::Truncated), "cut at {cut}");
    }
    let mut extra = b.clone();
    extra.push(0);
    assert_eq!(QueryFeatures::from_bytes(&extra), Err(DecodeError::TrailingBytes));
    assert_eq!(
        (b[0], q.source_side),
        (6, 900),
        "levels a third of an octave apart, the size and the grid: version 6"
    );
    let mut v7 = b.clone();
    v7[0] = 7;
    assert_eq!(QueryFeatures::from_bytes(&v7), Err(DecodeError::Version(7)));
    let g = q.grid.as_ref().expect("a grid");
    assert_eq!((g.cols, g.rows, g.width, g.height, g.fine), (32, 22, 512, 341, true));
    let grid_len = 6 + 32 * 22;
    // the size right after the mirrored keypoints; 0 is not a size
    let side_at = 325 + 37 * (q.keypoints.len() + q.mirrored.len()) + 2;
    assert_eq!(u16::from_le_bytes([b[side_at], b[side_at + 1]]), 900);
    for cut in [side_at, side_at + 1] {
        assert_eq!(QueryFeatures::from_bytes(&b[..cut]), Err(DecodeError::Truncated), "cut at {cut}");
    }
    let mut zero = b.clone();
    zero[side_at..side_at + 2].copy_from_slice(&[0, 0]);
    assert_eq!(QueryFeatures::from_bytes(&zero), Err(DecodeError::Invalid("image size")));
    // the grid right after the size, its cells a byte each; at most 32 cells a side
    let grid_at = side_at + 2;
    assert_eq!(b.len(), grid_at + grid_len);
    for cut in [grid_at, grid_at + 5, grid_at + 6, b.len() - 1] {
        assert_eq!(QueryFeatures::from_bytes(&b[..cut]), Err(DecodeError::Truncated), "cut at {cut}");
    }
    let mut wide = b.clone();
    wide[grid_at + 4] = 33;
    assert_eq!(QueryFeatures::from_bytes(&wide), Err(DecodeError::Invalid("grid size")));
    let mut frame = b.clone();
    frame[grid_at + 2..grid_at + 4].copy_from_slice(&600u16.to_le_bytes());
    assert_eq!(QueryFeatures::from_bytes(&frame), Err(DecodeError::Invalid("grid")));
    // each older format in turn, for a reader that refuses the newer one
    let formats: Vec<u8> = std::iter::successors(Some(q.clone()), QueryFeatures::in_older_format)
        .map(|f| f.format_version())
        .collect();
    assert_eq!(formats, [6, 5, 4, 3, 2]);
    // without the grid: version 5, the same bytes less the grid
    let q5 = QueryFeatures { grid: None, ..q.clone() };
    let b5 = q5.to_bytes();
    assert_eq!((b5[0], &b5[1..]), (5, &b[1..grid_at]));
    assert_eq!(QueryFeatures::from_bytes(&b5).unwrap(), q5);
    // without the size: version 4, the same bytes less the size and the grid, read back with size 0
    let q4 = QueryFeatures { source_side: 0, grid: None, ..q.clone() };
    assert_eq!(
        QueryFeatures { source_side: 0, ..q.clone() }.to_bytes(),
        q4.to_bytes(),
        "a grid needs version 6"
    );
    let b4 = q4.to_bytes();
    assert_eq!(b4[0], 4);
    assert_eq!((&b4[1..side_at], &b4[side_at..]), (&b[1..side_at], &b[b.len()..]));
    assert_eq!(QueryFeatures::from_bytes(&b4).unwrap(), q4);
    // read as version 3, its levels 6..9 are out of range
    assert!(q.keypoints.iter().any(|k| usize::from(k.level) >= HALF_OCTAVE_QUERY_LEVELS));
    let mut as_v3 = b.clone();
    as_v3[0] = 3;
    assert_eq!(QueryFeatures::from_bytes(&as_v3), Err(DecodeError::Invalid("keypoint level")));
    // in half octaves: version 3 (2 without the mirrored keypoints), read back as written
    let h = q.in_half_octaves();
    let hb = h.to_bytes();
    assert_eq!((hb[0], hb.len(), h.source_side, &h.grid), (3, b.len() - 2 - grid_len, 0, &None));
    assert_eq!(QueryFeatures::from_bytes(&hb).unwrap(), h);
    let h2 = QueryFeatures { mirrored: Vec::new(), ..h.clone() };
    assert_eq!(h2.to_bytes()[0], 2);
    assert_eq!(QueryFeatures::from_bytes(&h2.to_bytes()).unwrap(), h2);
    // version 5 without mirrored keypoints keeps its (zero) count
    let q0 = QueryFeatures { mirrored: Vec::new(), ..q.clone() };
    let b0 = q0.to_bytes();
    assert_eq!((b0[0], b0.len()), (6, 325 + 37 * q.keypoints.len() + 2 + 2 + grid_len));
    assert_eq!(QueryFeatures::from_bytes(&b0).unwrap(), q0);
    // the mirrored keypoints' count, right after the keypoints
    let after = 325 + 37 * q.keypoints.len();
    assert_eq!(usize::from(u16::from_le_bytes([b[after], b[after + 1]])), q.mirrored.len());
    for cut in [after, after + 1, after + 2, after + 40] {
        assert_eq!(QueryFeatures::from_bytes(&b[..cut]), Err(DecodeError::Truncated), "cut at {cut}");
    }
    let mut as_v2 = hb.clone();
    as_v2[0] = 2;
    assert_eq!(QueryFeatures::from_bytes(&as_v2), Err(DecodeError::TrailingBytes));
    let mut mlevel = b.clone();
    mlevel[after + 2 + 4] = crate::QUERY_LEVELS as u8;
    assert_eq!(QueryFeatures::from_bytes(&mlevel), Err(DecodeError::Invalid("keypoint level")));
    for at in [257, 322] {
        let mut qual = b.clone();
        qual[at] = 101;
        assert_eq!(QueryFeatures::from_bytes(&qual), Err(DecodeError::Invalid("quality")), "byte {at}");
    }
    let mut level = b.clone();
    level[325 + 4] = crate::QUERY_LEVELS as u8;
    assert_eq!(QueryFeatures::from_bytes(&level), Err(DecodeError::Invalid("keypoint level")));
    // a signature is not query features, nor the other way round
    let sig = ex.signature(&scene(900, 600, 8).pixels()).to_bytes();
    assert!(QueryFeatures::from_bytes(&sig).is_err());
    assert!(Signature::from_bytes(&b).is_err());
}

#[test]
fn a_small_query_or_protected_image_needs_the_higher_score() {
    let mut ex = Extractor::new();
    let img = scene(640, 480, 21);
    let sig = ex.signature(&img.pixels());
    assert_eq!(sig.source_side, 640);
    // rule 2 alone decides: no PDQ or band agreement
    let q = QueryFeatures {
        pdq: [hash_of([0x5a5a; 4]); 8],
        band: None,
        trimmed_band: None,
        ..ex.query(&img.pixels())
    };
    assert_eq!(q.source_side, 640);
    // (rule 4 off: this is rule 2's threshold)
    let p = Params { dense_min_score: None, ..Params::default() };
    let hit = crate::match_pair(&p, 1, &sig, &q).expect("the photo matches itself");
    assert!(hit.pdq_distance.is_none() && hit.band_distance.is_none() && hit.score >= p.min_score);
    // small images asked for one more than this score
    let strict = Params { small_min_score: hit.score + 1, ..p };
    let small = QueryFeatures { source_side: 150, ..q.clone() };
    let small_sig = Signature { source_side: 150, ..sig.clone() };
    assert!(crate::match_pair(&strict, 1, &sig, &q).is_some(), "640 px is not small");
    assert!(crate::match_pair(&strict, 1, &sig, &small).is_none());
    assert!(crate::match_pair(&strict, 1, &small_sig, &q).is_none(), "a small protected image");
    assert!(crate::match_pair(&strict, 1, &small_sig, &small).is_none());
    let just = Params { small_min_score: hit.score, ..p };
    assert_eq!(crate::match_pair(&just, 1, &sig, &small).map(|h| h.score), Some(hit.score));
    assert_eq!(crate::match_pair(&just, 1, &small_sig, &q).map(|h| h.score), Some(hit.score));
    // size not known (query features of format 4 and older, signatures of format 2 and older), or
    // the check off, or off for the protected image: the usual threshold
    assert!(crate::match_pair(&strict, 1, &sig, &QueryFeatures { source_side: 0, ..small.clone() }).is_some());
    assert!(crate::match_pair(&Params { small_side: 0, ..strict }, 1, &sig, &small).is_some());
    assert!(crate::match_pair(&Params { small_side: 0, ..strict }, 1, &small_sig, &q).is_some());
    assert!(crate::match_pair(&Params { small_protected: false, ..strict }, 1, &small_sig, &q).is_some());
    assert!(crate::match_pair(&Params { small_protected: false, ..strict }, 1, &small_sig, &small).is_none());
    // the index applies the same threshold
    let mut index = DeriveIndex::new(strict);
    index.insert(1, sig).unwrap();
    index.insert(2, small_sig).unwrap();
    assert!(index.search(&small).is_empty());
    assert_eq!(index.search(&q).iter().map(|h| h.id).collect::<Vec<_>>(), [1]);
    // the extractor records the longest side of what it was given
    assert_eq!(ex.query(&shrink(&img, 4).pixels()).source_side, 160);
    assert_eq!(ex.signature(&shrink(&img, 4).pixels()).source_side, 160);
}

#[test]
fn the_query_pyramid_is_a_third_of_an_octave_apart() {
    let mut ex = Extractor::new();
    let img = scene(900, 640, 12);
    let q = ex.query(&img.pixels());
    assert_eq!(q.levels_per_octave, 3);
    let levels: std::collections::BTreeSet<u8> = q.keypoints.iter().map(|k| k.level).collect();
    assert_eq!(levels, (0..QUERY_LEVELS as u8).collect(), "corners on every level");
    // level 3 is level 0 of the image halved (one octave): the same corners, where the scene
    // has them (half the distinct positions or more, within 2 working pixels)
    let half = ex.query(&shrink(&img, 2).pixels());
    let (at0, at3): (Vec<&Keypoint>, Vec<&Keypoint>) = (
        half.keypoints.iter().filter(|k| k.level == 0).collect(),
        q.keypoints.iter().filter(|k| k.level == 3).collect(),
    );
    let near = at3
        .iter()
        .filter(|a| {
            at0.iter().any(|b| {
                (i32::from(a.x) - i32::from(b.x)).abs() <= 16 && (i32::from(a.y) - i32::from(b.y)).abs() <= 16
            })
        })
        .count();
    assert!(
        near * 2 >= at3.len(),
        "{near} of {} level-3 corners found on level 0 of the halved image",
        at3.len()
    );
    // in half octaves: levels round(2 l / 3), no size (formats 2 and 3 have none), everything else unchanged
    let h = q.in_half_octaves();
    assert_eq!(h.levels_per_octave, 2);
    assert_eq!(h.keypoints.len(), q.keypoints.len());
    for (a, b) in q.keypoints.iter().zip(&h.keypoints).chain(q.mirrored.iter().zip(&h.mirrored)) {
        assert_eq!((a.x, a.y, a.desc), (b.x, b.y, b.desc));
        assert_eq!(b.level, [0, 1, 1, 2, 3, 3, 4, 5, 5][usize::from(a.level)]);
    }
    assert_eq!(h.in_half_octaves(), h);
    assert_eq!(
        QueryFeatures { keypoints: vec![], mirrored: vec![], ..h },
        QueryFeatures {
            keypoints: vec![],
            mirrored: vec![],
            levels_per_octave: 2,
            source_side: 0,
            grid: None,
            ..q
        }
    );
}

/// Copies cropped by 20 % on every side are enlarged 1.67×, nearly midway between two levels of
/// a half-octave pyramid: the query's finer pyramid finds more of the stored corners' descriptors
/// again. Features in half octaves (what an older client sends) still match the same way.
#[test]
fn a_finer_query_pyramid_finds_more_of_a_20_percent_crop() {
    let (mut ex, index, imgs) = setup();
    let (mut third, mut half) = (0u32, 0u32);
    for (i, img) in imgs.iter().enumerate() {
        let (cx, cy) = (img.w / 5, img.h / 5);
        let c = crop(img, cx, cy, img.w - 2 * cx, img.h - 2 * cy);
        let score = |q: &QueryFeatures| -> u32 {
            index.search(q).iter().filter(|h| h.id == i as u64).map(|h| h.score).max().unwrap_or(0)
        };
        let (qt, qh) = (ex.query(&c.pixels()), ex.query_in_half_octaves(&c.pixels(), true));
        assert_eq!(qh.levels_per_octave, 2);
        let (st, sh) = (score(&qt), score(&qh));
        // the finer query, and the same in half octaves (a reader of format 3) match the source
        assert!(st >= Params::default().min_score, "scene {i}: score {st}");
        assert_eq!(
            index.search(&qt.in_half_octaves()).iter().map(|h| h.id).collect::<Vec<_>>(),
            vec![i as u64]
        );
        assert!(index.search(&qt).iter().all(|h| h.id == i as u64), "scene {i}");
        third += st;
        half += sh;
    }
    // (942 against 801 when written)
    assert!(
        third * 10 >= half * 11,
        "score summed over the scenes: {third} (thirds) against {half} (halves)"
    );
}

#[test]
fn removed_entries_stop_matching_and_can_return() {
    let (mut ex, mut index, imgs) = setup();
    let q = ex.query(&crop(&imgs[2], 180, 128, 540, 384).pixels());
    assert_eq!(index.search(&q).iter().map(|h| h.id).collect::<Vec<_>>(), vec![2]);
    assert!(index.remove(2));
    assert!(!index.remove(2));
    assert!(!index.contains(2));
    assert_eq!(index.len(), 5);
    assert!(index.search(&q).is_empty());
    index.insert(2, ex.signature(&imgs[2].pixels())).unwrap();
    assert_eq!(index.search(&q).iter().map(|h| h.id).collect::<Vec<_>>(), vec![2]);
    // A new id takes the freed slot of a removed one without confusion.
    assert!(index.remove(3));
    index.insert(77, ex.signature(&imgs[3].pixels())).unwrap();
    let q3 = ex.query(&pad(&imgs[3], 0.3, false).pixels());
    assert_eq!(index.search(&q3).iter().map(|h| h.id).collect::<Vec<_>>(), vec![77]);
}

#[test]
fn the_synthetic_derivative_defeats_pdq_and_matches() {
    let mut ex = Extractor::new();
    let (a, b) = (synth::scene(480, 360, 11), synth::scene(480, 360, 12));
    let d = synth::derivative(&a, 5);
    let t = std::time::Instant::now();
    let q = ex.query(&d.pixels());
    eprintln!("query features of {}x{}: {:?}", d.width, d.height, t.elapsed());
    let sig = ex.signature(&a.pixels());
    let dist = q.pdq.iter().map(|h| h.distance(&sig.pdq)).min().unwrap();
    assert!(dist > 31, "PDQ distance {dist}");
    let mut index = DeriveIndex::new(Params::default());
    index.insert(1, sig).unwrap();
    index.insert(2, ex.signature(&b.pixels())).unwrap();
    let hits = index.search(&q);
    assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![1], "{hits:?}");
    for seed in 20..26 {
        let u = synth::scene(480, 360, seed);
        assert!(index.search(&ex.query(&u.pixels())).is_empty(), "unrelated scene {seed} matched");
    }
}

#[test]
fn duplicate_ids_are_refused() {
    let mut index = DeriveIndex::new(Params::default());
    let s = Signature {
        pdq: consentry_pdq::Hash256::ZERO,
        quality: 0,
        keypoints: vec![],
        band: None,
        source_side: 0,
        grid: None,
    };
    index.insert(5, s.clone()).unwrap();
    assert!(index.insert(5, s.clone()).is_err());
    assert_eq!(index.len(), 1);
    // in bulk: the duplicates (of the index and within the batch) are refused and named
    let refused = index.extend([(5, s.clone()), (6, s.clone()), (6, s.clone()), (7, s)]);
    assert_eq!(refused, vec![5, 6]);
    assert_eq!(index.len(), 3);
    assert!(index.contains(6) && index.contains(7));
}

/// Random descriptors, and one in four a flat or ramp descriptor with up to 8 bits flipped (so
/// that stopped keys occur).
fn arb_desc() -> impl Strategy<Value = [u64; 4]> {
    let n = crate::ramp_descriptors().len();
    prop_oneof![
        3 => prop::array::uniform4(any::<u64>()),
        1 => (0..n, prop::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(i, bits)| flip(crate::ramp_descriptors()[i], &bits)),
    ]
}

fn flip(mut d: [u64; 4], bits: &[u8]) -> [u64; 4] {
    for &b in bits {
        d[usize::from(b) / 64] ^= 1 << (b % 64);
    }
    d
}

prop_compose! {
    fn arb_kp()(x in 0u16..4096, y in 0u16..3072, level in 0u8..4, desc in arb_desc()) -> Keypoint {
        Keypoint { x, y, level, desc }
    }
}

fn hash_of(d: [u64; 4]) -> consentry_pdq::Hash256 {
    let mut b = [0u8; 32];
    for (i, w) in d.iter().enumerate() {
        b[8 * i..8 * i + 8].copy_from_slice(&w.to_le_bytes());
    }
    consentry_pdq::Hash256::from_bytes(b)
}

fn flip_hash(h: consentry_pdq::Hash256, bits: &[u8]) -> consentry_pdq::Hash256 {
    let mut b = h.to_bytes();
    for f in bits {
        b[usize::from(*f) / 8] ^= 1 << (f % 8);
    }
    consentry_pdq::Hash256::from_bytes(b)
}

prop_compose! {
    fn arb_sig()(
        pdq in arb_desc(),
        kps in prop::collection::vec(arb_kp(), 0..40),
        band in prop::option::of((arb_desc(), prop::sample::select(vec![0u8, 9, 10, 90]))),
        source_side in prop::sample::select(vec![0u32, 150, 1000]),
        grid in prop::option::of(prop::collection::vec(0u8..16, 144)),
    ) -> Signature {
        let band = band.map(|(d, quality)| consentry_pdq::PdqHash { hash: hash_of(d), quality });
        let grid = grid.map(|cells| Grid { width: 512, height: 384, cols: 12, rows: 12, cells, fine: false });
        Signature { pdq: hash_of(pdq), quality: 80, keypoints: kps, band, source_side, grid }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The index returns exactly what brute force of the same rule returns,
    /// on queries derived from stored entries (moved, scaled, descriptors
    /// perturbed by 0–60 bits, PDQ perturbed) mixed with random keypoints.
    #[test]
    fn index_is_exact_against_brute_force(
        sigs in prop::collection::vec(arb_sig(), 1..12),
        picks in prop::collection::vec((0usize..12, 0usize..40, prop::collection::vec(any::<u8>(), 0..60), any::<bool>()), 0..60),
        noise in prop::collection::vec(arb_kp(), 0..80),
        scale in 0.5f32..2.0, tx in -300f32..300.0, ty in -300f32..300.0,
        pdq_src in 0usize..12, pdq_flips in prop::collection::vec(any::<u8>(), 0..50),
        min_inliers in 2usize..8,
        min_spread in prop::sample::select(vec![0.0f32, 4.0, 12.0]),
        removals in prop::collection::vec((0usize..12, any::<bool>()), 0..10),
        delta_limit in prop::sample::select(vec![0usize, 3, 1000]),
        bulk in any::<bool>(),
        stop_keys in prop::sample::select(vec![StopKeys::None, StopKeys::Ramp, StopKeys::RampNeighbours, StopKeys::RampNeighbours2]),
        band_src in 0usize..12, band_flips in prop::collection::vec(any::<u8>(), 0..45), mirrored in any::<bool>(),
        band_quality in prop::option::of(prop::sample::select(vec![9u8, 10, 100])),
        band_radius in prop::sample::select(vec![None, Some(0u32), Some(31)]),
        band_slot in 0u8..3, band_trimmed in any::<bool>(), mirror_rule in any::<bool>(),
        lsh_bits in prop::sample::select(vec![4usize, 10, 26]),
        (per_octave, source_side) in (prop::sample::select(vec![2u8, QUERY_LEVELS_PER_OCTAVE]), prop::sample::select(vec![0u32, 150, 1000])),
        // rule 4: its score, inliers and thresholds (-1: any grids agree), and the query's grid
        (dense_min_score, dense_min_inliers, dense_min_r, dense_min_cells) in (
            prop::sample::select(vec![None, Some(0u32), Some(20)]), 2usize..4,
            prop::sample::select(vec![-1.0f32, 0.0, 0.95]), prop::sample::select(vec![0usize, 24]),
        ),
        query_grid in prop::option::of(prop::collection::vec(any::<u8>(), 32 * 24)),
        (dense_small_strong_score, dense_small_strong_r) in (prop::sample::select(vec![0u32, 30]), prop::sample::select(vec![-1.0f32, 0.9])),
    ) {
        // (4-bit keys: with a few hundred keypoints every key has its own directory bucket;
        // 10-bit keys: several keys share a bucket; 26-bit keys: most of each key is held in the
        // postings beside the keypoint number)
        let params = Params {
            min_inliers, min_spread, stop_keys, band_radius, band_trimmed, lsh_bits, lsh_tables: 6,
            mirrored: mirror_rule,
            dense_min_score, dense_min_inliers, dense_min_r, dense_small_min_r: dense_min_r,
            dense_min_r_across: dense_min_r, dense_small_min_r_across: dense_min_r, dense_min_cells,
            dense_small_strong_score, dense_small_strong_r,
            ..Params::default()
        };
        let mut index = DeriveIndex::new(params);
        // 0: the bulk tables are rebuilt on every insert; 3: entries split between the bulk tables
        // and the recent-insert tables; 1000: only recent-insert tables (unless loaded in bulk).
        index.set_delta_limit(delta_limit);
        let mut entries: Vec<(u64, Signature)> = sigs.iter().enumerate().map(|(i, s)| (1000 + i as u64 * 7, s.clone())).collect();
        if bulk {
            prop_assert!(index.extend(entries.clone()).is_empty());
        } else {
            for (id, s) in &entries { index.insert(*id, s.clone()).unwrap(); }
        }
        // Remove some entries (each removal optionally followed by a re-insert
        // of the same id, later), so that dead and reused slots are exercised.
        let mut reinsert = Vec::new();
        for (i, again) in &removals {
            let id = 1000 + (i % sigs.len()) as u64 * 7;
            let present = entries.iter().any(|e| e.0 == id);
            prop_assert_eq!(index.remove(id), present);
            prop_assert!(!index.remove(id));
            if let Some(p) = entries.iter().position(|e| e.0 == id) {
                let e = entries.remove(p);
                if *again { reinsert.push(e); }
            }
            prop_assert_eq!(index.len(), entries.len());
        }
        for (id, s) in reinsert {
            index.insert(id, s.clone()).unwrap();
            entries.push((id, s));
        }
        prop_assert_eq!(index.len(), entries.len());
        // planted keypoints and noise go to the query's keypoints or to its mirrored set
        let side = |m: usize| noise.iter().enumerate().filter(move |(i, _)| (i % 3 == 0) as usize == m).map(|(_, k)| *k);
        let (mut kps, mut mkps): (Vec<Keypoint>, Vec<Keypoint>) = (side(0).collect(), side(1).collect());
        for (si, ki, bits, to_mirrored) in &picks {
            let s = &sigs[si % sigs.len()];
            if s.keypoints.is_empty() { continue; }
            let k = s.keypoints[ki % s.keypoints.len()];
            let x = (f32::from(k.x) * scale + tx * 8.0).clamp(0.0, 65535.0) as u16;
            let y = (f32::from(k.y) * scale + ty * 8.0).clamp(0.0, 65535.0) as u16;
            // the stored level (half octaves) in the query's levels, `per_octave` to an octave
            let top = if per_octave == 2 { HALF_OCTAVE_QUERY_LEVELS } else { QUERY_LEVELS } - 1;
            let level = ((f32::from(k.level) / 2.0 + scale.log2()) * f32::from(per_octave)).round().clamp(0.0, top as f32) as u8;
            let kp = Keypoint { x, y, level, desc: flip(k.desc, bits) };
            if *to_mirrored { mkps.push(kp) } else { kps.push(kp) }
        }
        let mut pdq = [sigs[pdq_src % sigs.len()].pdq; 8];
        entries.sort_by_key(|e| e.0);
        pdq[3] = flip_hash(pdq[3], &pdq_flips);
        pdq[0] = consentry_pdq::Hash256::from_bytes([0x5a; 32]);
        // the query's band: one of an entry's band hashes with bits flipped, as it is or mirrored
        let band = band_quality.map(|quality| {
            let src = sigs[band_src % sigs.len()].band.map_or(consentry_pdq::Hash256::ZERO, |b| b.hash);
            let mut hashes = [consentry_pdq::Hash256::from_bytes([0xa5; 32]); 2];
            hashes[usize::from(mirrored)] = flip_hash(src, &band_flips);
            BandQuery { hashes, quality }
        });
        // ... as the query's band (0), its trimmed band (1), or the trimmed band beside a random band (2)
        let noise = Some(BandQuery { hashes: [consentry_pdq::Hash256::from_bytes([0x3c; 32]); 2], quality: 100 });
        let (band, trimmed_band) = match band_slot { 0 => (band, None), 1 => (None, band), _ => (noise, band) };
        // (a small query or protected image, 150 px, needs the higher score of Params::small_min_score)
        let q = QueryFeatures { pdq, quality: 80, keypoints: kps, mirrored: mkps, band, trimmed_band, levels_per_octave: per_octave, source_side, grid: None };
        let grid = query_grid.map(|cells| Grid { width: 512, height: 384, cols: 32, rows: 24, cells, fine: true });
        let q = QueryFeatures { grid, ..q };
        let got = index.search(&q);
        let want = brute_force_search(&params, &entries, &q);
        prop_assert_eq!(got, want);
    }
}

#[test]
fn band_rule_needs_both_qualities_and_the_radius() {
    let p = Params::default();
    let min = p.band_min_quality;
    let band = hash_of([1, 2, 3, 4]);
    let far = flip_hash(band, &(0..32).collect::<Vec<u8>>());
    let sig = |q: u8| Signature {
        pdq: hash_of([9; 4]),
        quality: 90,
        keypoints: vec![],
        band: Some(consentry_pdq::PdqHash { hash: band, quality: q }),
        source_side: 0,
        grid: None,
    };
    let query = |h: [consentry_pdq::Hash256; 2], q: u8| QueryFeatures {
        pdq: [hash_of([u64::MAX; 4]); 8],
        quality: 90,
        keypoints: vec![],
        mirrored: vec![],
        band: Some(BandQuery { hashes: h, quality: q }),
        trimmed_band: None,
        levels_per_octave: QUERY_LEVELS_PER_OCTAVE,
        source_side: 0,
        grid: None,
    };
    let near = flip_hash(band, &(0..31).collect::<Vec<u8>>());
    let other = hash_of([!1, !2, !3, !4]); // every bit differs
                                           // (stored quality, query hashes, query quality, band distance expected)
    let cases = [
        (min, [near, other], min, Some(31)),
        (min, [other, near], 100, Some(31)),
        (min - 1, [band, band], 100, None),
        (100, [band, band], min - 1, None),
        (100, [far, other], 100, None),
    ];
    for (sq, qh, qq, want) in cases {
        let mut index = DeriveIndex::new(p);
        index.insert(1, sig(sq)).unwrap();
        let hits = index.search(&query(qh, qq));
        assert_eq!(hits.first().and_then(|h| h.band_distance), want, "stored q {sq}, query q {qq}");
        assert_eq!(hits.len(), usize::from(want.is_some()));
        assert_eq!(hits, brute_force_search(&p, &[(1, sig(sq))], &query(qh, qq)));
    }
    // rule 3 off
    let off = Params { band_radius: None, ..p };
    assert!(brute_force_search(&off, &[(1, sig(100))], &query([band, band], 100)).is_empty());
}

#[test]
fn a_shared_plain_sky_is_no_match() {
    // Two different scenes under the same smooth sky (a vertical gradient over the top quarter):
    // their top bands are identical and featureless, below the band quality threshold.
    let sky = |seed| {
        let mut img = scene(900, 640, seed);
        for y in 0..160 {
            for x in 0..900 {
                let v = (200 - y / 4) as u8;
                img.put(x, y, [v / 2, v - 20, v]);
            }
        }
        img
    };
    let (a, b) = (sky(61), sky(62));
    let mut ex = Extractor::new();
    let sig = ex.signature(&a.pixels());
    let q = ex.query(&b.pixels());
    let (sb, qb) = (sig.band.unwrap(), q.band.unwrap());
    assert!(sb.quality < Params::default().band_min_quality, "a plain sky's band quality {}", sb.quality);
    assert_eq!(qb.hashes[0].distance(&sb.hash), 0, "the two bands are the same pixels");
    let entries = [(1, sig)];
    assert!(brute_force_search(&Params::default(), &entries, &q).is_empty());
    // with no quality threshold the shared sky alone would make them match
    let any = Params { band_min_quality: 0, ..Params::default() };
    assert_eq!(brute_force_search(&any, &entries, &q).first().and_then(|h| h.band_distance), Some(0));
}

#[test]
fn content_box_finds_the_picture_inside_a_solid_border() {
    let a = scene(600, 400, 71);
    assert_eq!(content_box(&a.pixels()), (0, 0, 600, 400), "a scene has no uniform border");
    let padded = pad(&a, 0.2, false);
    assert_eq!(content_box(&padded.pixels()), (120, 80, 600, 400));
    // vertical stripes: the rows are not uniform and stay; a column is, but only the outer
    // stripe's columns share one colour
    let striped = pad(&a, 0.2, true);
    assert_eq!(content_box(&striped.pixels()), (24, 0, striped.w - 48, striped.h));
    // a uniform image keeps at least a tenth of each side, or all of it when that is under 16 px
    let flat = Img { w: 100, h: 100, px: vec![128; 30_000] };
    assert_eq!(content_box(&flat.pixels()), (0, 0, 100, 100));
    let flat = Img { w: 400, h: 300, px: vec![128; 360_000] };
    assert_eq!(content_box(&flat.pixels()), (180, 135, 40, 30));
    // other pixel layouts: the same box from luma
    let luma: Vec<u8> = padded.px.chunks(3).map(|p| p[1]).collect();
    let lp = Pixels::new(padded.w, padded.h, PixelFormat::Luma8, &luma).unwrap();
    assert_eq!(content_box(&lp), (120, 80, 600, 400));
}

#[test]
fn the_trimmed_band_catches_a_replaced_body_area_inside_a_border() {
    let mut ex = Extractor::new();
    let (a, other) = (scene(900, 640, 81), scene(900, 640, 82));
    let sig = ex.signature(&a.pixels());
    let q = ex.query(&pad(&replace_body(&a, &other, 0.7), 0.15, false).pixels());
    assert!(q.trimmed_band.is_some(), "a bordered query has a trimmed band");
    assert!(ex.query(&a.pixels()).trimmed_band.is_none(), "a borderless one has none");
    assert_eq!(QueryFeatures::from_bytes(&q.to_bytes()).unwrap(), q, "it round-trips");
    let mut extra = q.to_bytes();
    extra.push(0);
    assert_eq!(QueryFeatures::from_bytes(&extra), Err(DecodeError::TrailingBytes));
    let entries = [(3, sig)];
    let with = brute_force_search(&Params::default(), &entries, &q);
    assert!(with.first().and_then(|h| h.band_distance).is_some_and(|d| d <= 31), "{with:?}");
    let mut index = DeriveIndex::new(Params::default());
    index.insert(3, entries[0].1.clone()).unwrap();
    assert_eq!(index.search(&q), with);
    let without = Params { band_trimmed: false, ..Params::default() };
    assert!(brute_force_search(&without, &entries, &q).iter().all(|h| h.band_distance.is_none()));
}

/// Soft cloud: a smooth field of 90 Gaussian blobs (σ 12–40 px, ±45 levels) on grey-blue, no
/// edge or corner anywhere near the usual Harris threshold.
fn clouds(w: u32, h: u32, seed: u64) -> Img {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut u = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f32 / (1u64 << 53) as f32
    };
    let blobs: Vec<[f32; 4]> =
        (0..800).map(|_| [u() * w as f32, u() * h as f32, 4.0 + 14.0 * u(), 70.0 * u() - 35.0]).collect();
    let mut o = Img { w, h, px: vec![0; (w * h * 3) as usize] };
    for y in 0..h {
        for x in 0..w {
            let mut v = 140.0;
            for &[bx, by, sd, a] in &blobs {
                let d2 = (x as f32 - bx).powi(2) + (y as f32 - by).powi(2);
                if d2 < 16.0 * sd * sd {
                    v += a * (-d2 / (2.0 * sd * sd)).exp();
                }
            }
            let c = |k: f32| (v * k).clamp(0.0, 255.0) as u8;
            o.put(x, y, [c(0.8), c(0.9), c(1.0)]);
        }
    }
    o
}

/// A cell with no corner at the usual threshold still gets its strongest: a photo of soft cloud
/// with texture only at the bottom and the left (a landscape's horizon and rocks) is found from a
/// 20 % crop on all sides, which keeps only the cloud — and was not with the threshold alone.
/// Another cloud field's crop is not matched.
#[test]
fn a_crop_of_soft_cloud_is_found_through_the_weak_corners() {
    let (w, h) = (900, 640);
    let frame = scene(w, h, 41);
    let photo = |seed: u64| {
        let mut img = clouds(w, h, seed);
        for y in 0..h {
            for x in 0..w {
                if x < w / 8 || y >= h * 4 / 5 {
                    img.put(x, y, frame.get(x, y));
                }
            }
        }
        img
    };
    let (cx, cy) = (w / 5, h / 5);
    let centre = |img: &Img| crop(img, cx, cy, w - 2 * cx, h - 2 * cy);
    let (a, b) = (photo(5), photo(6));
    let mut seen = Vec::new();
    for low in [None, Some(400.0)] {
        let mut ex = Extractor::new();
        if let Some(l) = low {
            ex = ex.with_low_response(l);
        }
        let sig = ex.signature(&a.pixels());
        // stored corners inside the kept window (keypoints are in 1/8 px of the working image,
        // the photo reduced to 512 px on its longest side)
        let k = 512.0 / w as f32;
        let inside = sig
            .keypoints
            .iter()
            .filter(|p| {
                let (x, y) = (f32::from(p.x) / 8.0 / k, f32::from(p.y) / 8.0 / k);
                x > cx as f32 && x < (w - cx) as f32 && y > cy as f32 && y < (h - cy) as f32
            })
            .count();
        let mut index = DeriveIndex::new(Params::default());
        index.insert(1, sig).unwrap();
        let score = index.search(&ex.query(&centre(&a).pixels())).iter().map(|h| h.score).max();
        assert!(index.search(&ex.query(&centre(&b).pixels())).is_empty(), "low {low:?}: another cloud field");
        seen.push((inside, score));
    }
    let [(inside, score), (inside_before, score_before)] = seen[..] else { unreachable!() };
    assert!(
        score.is_some() && score_before.is_none(),
        "scores {score:?}, and {score_before:?} without the weak corners"
    );
    assert!(
        inside >= inside_before + 4,
        "stored corners in the kept window: {inside}, and {inside_before} without the weak corners"
    );
}

/// Rule 4: a crop that keeps a corner of the frame is matched on a few agreeing corners when the
/// protected image's grid, carried through their transform, agrees with the query's — not when
/// the query's grid is another image's, not without a grid on either side, not with the rule off.
#[test]
fn rule_4_matches_on_few_corners_only_where_the_grids_agree() {
    let mut ex = Extractor::new();
    let img = scene(900, 600, 41);
    let sig = ex.signature(&img.pixels());
    assert!(sig.grid.is_some());
    // the top-left 60 %, enlarged into the working image like any copy
    let q = QueryFeatures {
        pdq: [hash_of([0x5a5a; 4]); 8],
        band: None,
        trimmed_band: None,
        ..ex.query(&crop(&img, 10, 5, 540, 360).pixels())
    };
    // rule 2 out of reach, so that only rule 4 can match
    let p = Params { min_score: 10_000, small_min_score: 10_000, ..Params::default() };
    let hit = crate::match_pair(&p, 1, &sig, &q).expect("rule 4 matches the crop");
    assert!(hit.pdq_distance.is_none() && hit.band_distance.is_none());
    assert!(
        hit.inliers >= p.dense_min_inliers && hit.score >= p.dense_min_score.unwrap() && hit.score < 10_000
    );
    assert!(crate::match_pair(&Params { dense_min_score: None, ..p }, 1, &sig, &q).is_none());
    assert!(crate::match_pair(&Params { dense_min_score: Some(hit.score + 1), ..p }, 1, &sig, &q).is_none());
    // another scene's grid in the same query
    let other = ex.query(&crop(&scene(900, 600, 42), 10, 5, 540, 360).pixels());
    assert!(
        crate::match_pair(&p, 1, &sig, &QueryFeatures { grid: other.grid.clone(), ..q.clone() }).is_none()
    );
    assert!(crate::match_pair(&p, 1, &sig, &QueryFeatures { grid: None, ..q.clone() }).is_none());
    assert!(crate::match_pair(&p, 1, &Signature { grid: None, ..sig.clone() }, &q).is_none());
    // the grids carried through the right transform agree closely; a higher bar than they reach refuses
    assert!(crate::match_pair(&Params { dense_min_r: 1.01, ..p }, 1, &sig, &q).is_none());
    // a small image (here: under 1000 px) asks its own correlation of the grids, and a lower one
    // once the corners' score reaches dense_small_strong_score; a large image asks neither
    let small = Params { small_side: 1000, dense_small_min_r_across: p.dense_min_r_across, ..p };
    let with = |min_r: f32, strong_score: u32, strong_r: f32, params: Params| {
        let params = Params {
            dense_small_min_r: min_r,
            dense_small_strong_score: strong_score,
            dense_small_strong_r: strong_r,
            ..params
        };
        crate::match_pair(&params, 1, &sig, &q).is_some()
    };
    assert!(with(p.dense_min_r, 10_000, 1.01, small));
    assert!(!with(1.01, 10_000, p.dense_min_r, small));
    assert!(with(1.01, hit.score, p.dense_min_r, small));
    assert!(!with(1.01, hit.score + 1, p.dense_min_r, small));
    assert!(with(1.01, 10_000, 1.01, p));
    // the index applies the same rule
    let mut index = DeriveIndex::new(p);
    index.insert(1, sig.clone()).unwrap();
    index.insert(2, ex.signature(&scene(900, 600, 42).pixels())).unwrap();
    assert_eq!(index.search(&q).iter().map(|h| h.id).collect::<Vec<_>>(), vec![1]);
    // two keypoints are enough for rule 4, far fewer than rule 2's inliers (each correspondence
    // counted once per index table it is found through): the index lets such
    // an entry through to the rule (any grids agreeing here)
    let two = QueryFeatures { keypoints: sig.keypoints[..2].to_vec(), mirrored: vec![], ..q.clone() };
    let any = Params {
        min_inliers: 100,
        dense_min_r: -1.0,
        dense_small_min_r: -1.0,
        dense_min_r_across: -1.0,
        dense_small_min_r_across: -1.0,
        dense_min_cells: 0,
        ..p
    };
    let mut index = DeriveIndex::new(any);
    index.insert(1, sig.clone()).unwrap();
    let want = brute_force_search(&any, &[(1, sig.clone())], &two);
    assert_eq!(want.iter().map(|h| h.inliers).collect::<Vec<_>>(), vec![2]);
    assert_eq!(index.search(&two), want);
}
