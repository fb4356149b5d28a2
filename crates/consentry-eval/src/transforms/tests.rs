use super::*;
use crate::testutil::photo;

fn run(op: Op, img: &RgbImage, seed: u64) -> RgbImage {
    let donor = photo(90, 70, 999);
    op.apply(img, &donor, &mut Rng::new(seed))
}

#[test]
fn every_transform_is_deterministic_for_a_seed() {
    let img = photo(96, 72, 1);
    let donor = photo(80, 60, 2);
    let set = standard_set();
    assert!(set.len() > 80);
    let mut labels: Vec<String> = set.iter().map(Transform::label).collect();
    labels.sort();
    labels.dedup();
    assert_eq!(labels.len(), set.len(), "labels are unique");
    let mut differs = 0;
    for t in &set {
        let a = t.apply(&img, &donor, &mut Rng::new(5));
        let b = t.apply(&img, &donor, &mut Rng::new(5));
        assert!(a == b, "{} not deterministic", t.label());
        let c = t.apply(&img, &donor, &mut Rng::new(6));
        if a != c {
            differs += 1;
        }
        if t.label() != "identity@-" {
            assert!(a != img, "{} changed nothing", t.label());
        }
    }
    // Transforms with random choices (side, colour, text, noise, region jitter…) depend on the seed.
    assert!(differs > 30, "only {differs} transforms depend on the seed");
}

#[test]
fn geometric_transforms_give_the_expected_dimensions() {
    let img = photo(100, 80, 3);
    assert_eq!(run(Op::Crop(0.2, CropMode::AllSides), &img, 1).dimensions(), (60, 48));
    assert_eq!(run(Op::Crop(0.3, CropMode::AllSides), &img, 1).dimensions(), (40, 32));
    assert_eq!(run(Op::Crop(0.05, CropMode::AllSides), &img, 1).dimensions(), (90, 72));
    for seed in 0..8 {
        let d = run(Op::Crop(0.2, CropMode::OneSide), &img, seed).dimensions();
        assert!(d == (80, 80) || d == (100, 64), "{d:?}");
        assert_eq!(run(Op::Crop(0.2, CropMode::OffCentre), &img, seed).dimensions(), (60, 48));
    }
    for b in [PadBorder::Solid, PadBorder::Blurred, PadBorder::Pattern] {
        let p = run(Op::Pad(0.3, b), &img, 1);
        assert_eq!(p.dimensions(), (160, 128));
        // The photo sits unchanged in the middle.
        assert_eq!(imageops::crop_imm(&p, 30, 24, 100, 80).to_image(), img);
    }
    assert_eq!(run(Op::Resize(0.5), &img, 1).dimensions(), (50, 40));
    assert_eq!(run(Op::Resize(2.0), &img, 1).dimensions(), (200, 160));
    assert_eq!(run(Op::Dihedral(DihedralOp::Rot90), &img, 1).dimensions(), (80, 100));
    assert_eq!(run(Op::Rotate(5.0), &img, 1).dimensions(), (100, 80));
    assert_eq!(run(Op::Caption(0.25), &img, 1).dimensions(), (100, 100));
    let s = run(Op::Screenshot(0.4), &img, 1);
    let area = f64::from(s.width()) * f64::from(s.height());
    assert!((8000.0 / area - 0.4).abs() < 0.03, "photo covers {} of the frame", 8000.0 / area);
}

#[test]
fn off_centre_crop_is_shifted_and_mirror_maps_pixels() {
    let img = photo(100, 80, 4);
    for seed in 0..8 {
        assert_ne!(
            run(Op::Crop(0.2, CropMode::OffCentre), &img, seed),
            run(Op::Crop(0.2, CropMode::AllSides), &img, seed)
        );
    }
    let f = run(Op::Dihedral(DihedralOp::FlipH), &img, 0);
    assert_eq!(f.get_pixel(0, 7), img.get_pixel(99, 7));
    let g = run(Op::Saturation(0.0), &img, 0);
    assert!(g.pixels().all(|p| p.0[0].abs_diff(p.0[1]) <= 1 && p.0[1].abs_diff(p.0[2]) <= 1));
}

#[test]
fn undress_changes_only_the_body_region_and_its_fraction_matches() {
    let img = photo(120, 100, 7);
    let donor = photo(64, 48, 8);
    for fill in [Fill::Donor, Fill::Smooth, Fill::Noise] {
        for frac in [0.2f32, 0.3, 0.4, 0.5, 0.6] {
            for seed in 0..3 {
                let (out, r) = undress_with_region(&img, &donor, frac, fill, &mut Rng::new(seed));
                // The same op through the generic path gives the same image.
                assert_eq!(out, Op::Undress(frac, fill).apply(&img, &donor, &mut Rng::new(seed)));
                let got = f64::from(r.w * r.h) / 12000.0;
                assert!((got - f64::from(frac)).abs() < 0.01, "{fill:?} {frac}: region covers {got}");
                // Body area: anchored at the bottom, top fifth of the image (face, hair) kept.
                assert_eq!(r.y + r.h, 100);
                assert!(r.y >= 20, "region starts at {}", r.y);
                let mut changed_inside = 0;
                for (x, y, p) in out.enumerate_pixels() {
                    if r.contains(x, y) {
                        changed_inside += usize::from(p != img.get_pixel(x, y));
                    } else {
                        assert_eq!(
                            p,
                            img.get_pixel(x, y),
                            "{fill:?} {frac}: pixel ({x},{y}) outside the region changed"
                        );
                    }
                }
                let share = changed_inside as f64 / f64::from(r.w * r.h);
                assert!(share > 0.5, "{fill:?} {frac}: only {share} of the region changed");
            }
        }
    }
}

#[test]
fn donor_fill_copies_the_donor_and_smooth_fill_is_smooth() {
    let img = photo(120, 100, 9);
    let donor = photo(120, 100, 10);
    let (out, r) = undress_with_region(&img, &donor, 0.4, Fill::Donor, &mut Rng::new(1));
    for y in r.y..r.y + r.h {
        for x in r.x..r.x + r.w {
            assert_eq!(out.get_pixel(x, y), donor.get_pixel(x, y));
        }
    }
    // Smooth fill: neighbouring pixels inside the region differ little; noise: a lot.
    let roughness = |im: &RgbImage, r: Rect| {
        let mut s = 0u64;
        for y in r.y..r.y + r.h {
            for x in r.x + 1..r.x + r.w {
                s += u64::from(im.get_pixel(x, y).0[1].abs_diff(im.get_pixel(x - 1, y).0[1]));
            }
        }
        s as f64 / f64::from(r.h * (r.w - 1))
    };
    let (smooth, rs) = undress_with_region(&img, &donor, 0.4, Fill::Smooth, &mut Rng::new(1));
    let (noise, rn) = undress_with_region(&img, &donor, 0.4, Fill::Noise, &mut Rng::new(1));
    assert!(roughness(&smooth, rs) < 3.0, "smooth fill roughness {}", roughness(&smooth, rs));
    assert!(roughness(&noise, rn) > 40.0);
}

#[test]
fn recompression_yields_a_jpeg_no_longer_than_1280() {
    let big = photo(3000, 1000, 11);
    let bytes = telegram_recompress(&big);
    assert_eq!(&bytes[..3], &[0xFF, 0xD8, 0xFF]);
    assert_eq!(image::guess_format(&bytes).unwrap(), image::ImageFormat::Jpeg);
    let back = decode_rgb(&bytes).unwrap();
    assert_eq!(back.dimensions(), (1280, 427));
    let tall = decode_rgb(&telegram_recompress(&photo(500, 2000, 12))).unwrap();
    assert_eq!(tall.dimensions(), (320, 1280));
    let small = decode_rgb(&telegram_recompress(&photo(300, 200, 13))).unwrap();
    assert_eq!(small.dimensions(), (300, 200));
}

#[test]
fn select_by_family_name_and_label() {
    let all = standard_set();
    let crops = select(all.clone(), "crop");
    assert_eq!(crops.len(), 12);
    assert_eq!(select(all.clone(), "undress-donor").len(), 5);
    assert_eq!(select(all.clone(), "jpeg@q40, rot90").len(), 2);
    assert!(select(all, "nothing").is_empty());
    assert!(quick_set().len() >= 20);
}

#[test]
fn a_transform_uses_the_donor_exactly_when_its_output_depends_on_it() {
    let img = photo(96, 64, 3);
    let donors = [photo(96, 64, 11), photo(96, 64, 12)];
    let mut users = 0;
    for t in standard_set() {
        let outs: Vec<RgbImage> = donors.iter().map(|d| t.apply(&img, d, &mut Rng::new(5))).collect();
        let depends = outs[0] != outs[1];
        assert_eq!(t.uses_donor(), depends, "{}", t.label());
        users += usize::from(depends);
    }
    assert!(users >= 5, "the donor rows of the standard set: {users}");
}
