//! Transforms that reposted images go through, each a pure, deterministic
//! function of (RGB image, strength, donor photo, seeded RNG) → RGB image,
//! and the final Telegram-like recompression to JPEG bytes.
//!
//! The "undress" pattern is simulated structurally on benign photos only: a
//! rectangle in the body area (centred, anchored at the bottom, the top of the
//! image kept) is replaced by content from another benign photo, by a smooth
//! inpainting-like fill of its surroundings, or by noise. Nothing else.

use crate::draw::{self, draw_text, fill_disc, fill_rect, random_text, text_width};
use crate::rng::Rng;
use image::imageops;
use image::{Rgb, RgbImage};

/// Longest side after Telegram-like recompression.
pub const TELEGRAM_MAX_SIDE: u32 = 1280;
/// JPEG quality of Telegram-like recompression.
pub const TELEGRAM_QUALITY: u8 = 87;

/// Which part of the image a crop removes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CropMode {
    /// `frac` of the width from left and right, `frac` of the height from top and bottom.
    AllSides,
    /// `frac` of one dimension from one random side.
    OneSide,
    /// The same area as `AllSides`, but the kept window shifted off centre.
    OffCentre,
}

/// The border a pad adds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PadBorder {
    /// One random flat colour (black, white or any).
    Solid,
    /// The image itself, stretched to the canvas and heavily blurred (as video apps do).
    Blurred,
    /// Stripes or a checkerboard of two random colours.
    Pattern,
}

/// The eight-element dihedral group minus the identity (rotations and mirrors).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DihedralOp {
    /// 90° clockwise.
    Rot90,
    /// 180°.
    Rot180,
    /// 270° clockwise.
    Rot270,
    /// Left–right mirror.
    FlipH,
    /// Top–bottom mirror.
    FlipV,
}

/// What replaces the body-area region in the undress pattern.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fill {
    /// The same region of another (benign) photo, scaled to this image's size.
    Donor,
    /// A smooth fill interpolated from the region's border, as inpainting produces.
    Smooth,
    /// Uniform random colour noise.
    Noise,
}

impl Fill {
    fn name(self) -> &'static str {
        match self {
            Fill::Donor => "donor",
            Fill::Smooth => "smooth",
            Fill::Noise => "noise",
        }
    }
}

/// One elementary transform with its strength.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// No change (the query is only recompressed).
    Identity,
    /// JPEG round trip at this quality.
    Jpeg(u8),
    /// Scale both sides by this factor.
    Resize(f32),
    /// Crop by this fraction.
    Crop(f32, CropMode),
    /// Pad each side by this fraction of the dimension (canvas (1 + 2·frac)× per axis).
    Pad(f32, PadBorder),
    /// A rotation by a multiple of 90° or a mirror.
    Dihedral(DihedralOp),
    /// Rotation by this many degrees (sign random), canvas kept, corners filled.
    Rotate(f32),
    /// A caption bar of this fraction of the height added above or below, with text.
    Caption(f32),
    /// This many lines of outlined text drawn over the image.
    Text(u32),
    /// Stickers (discs, squares, with text) covering about this fraction of the area.
    Sticker(f32),
    /// Tiled text watermark at this opacity.
    Watermark(f32),
    /// Add this fraction of full scale to every channel.
    Brightness(f32),
    /// Scale deviations from mid-grey by this factor.
    Contrast(f32),
    /// Gamma exponent.
    Gamma(f32),
    /// Saturation factor (0 = grey).
    Saturation(f32),
    /// Gaussian-like blur of this sigma, in pixels of a 1024-pixel-long image.
    Blur(f32),
    /// Unsharp mask of this amount.
    Sharpen(f32),
    /// Gaussian noise of this standard deviation (0–255 scale).
    Noise(f32),
    /// The photo inside an interface-like frame, covering this fraction of the frame's area.
    Screenshot(f32),
    /// The undress pattern: this fraction of the image, in the body area, replaced.
    Undress(f32, Fill),
}

/// A named transform: one op or a chain of ops applied in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Transform {
    /// Family for grouping rows (`crop`, `undress-donor`, `combo`, …).
    pub family: String,
    /// Name within the family (`crop-all`, …).
    pub name: String,
    /// Strength label (`20%`, `q50`, …).
    pub strength: String,
    /// Ops, applied first to last.
    pub ops: Vec<Op>,
}

fn pct(f: f32) -> String {
    format!("{}%", (f * 100.0).round() as i32)
}

impl Transform {
    /// A single-op transform, named after its op.
    pub fn single(op: Op) -> Transform {
        let (family, name, strength) = match &op {
            Op::Identity => ("identity", "identity".to_string(), "-".to_string()),
            Op::Jpeg(q) => ("jpeg", "jpeg".into(), format!("q{q}")),
            Op::Resize(s) => ("resize", "resize".into(), format!("{s}x")),
            Op::Crop(f, m) => (
                "crop",
                match m {
                    CropMode::AllSides => "crop-all",
                    CropMode::OneSide => "crop-side",
                    CropMode::OffCentre => "crop-offcentre",
                }
                .into(),
                pct(*f),
            ),
            Op::Pad(f, b) => (
                "pad",
                match b {
                    PadBorder::Solid => "pad-solid",
                    PadBorder::Blurred => "pad-blurred",
                    PadBorder::Pattern => "pad-pattern",
                }
                .into(),
                pct(*f),
            ),
            Op::Dihedral(d) => (
                "dihedral",
                match d {
                    DihedralOp::Rot90 => "rot90",
                    DihedralOp::Rot180 => "rot180",
                    DihedralOp::Rot270 => "rot270",
                    DihedralOp::FlipH => "flip-h",
                    DihedralOp::FlipV => "flip-v",
                }
                .into(),
                "-".into(),
            ),
            Op::Rotate(d) => ("rotate", "rotate".into(), format!("{d}°")),
            Op::Caption(f) => ("overlay", "caption-bar".into(), pct(*f)),
            Op::Text(n) => ("overlay", "text".into(), format!("{n} lines")),
            Op::Sticker(f) => ("overlay", "stickers".into(), pct(*f)),
            Op::Watermark(a) => ("overlay", "watermark".into(), format!("α{a}")),
            Op::Brightness(b) => ("colour", "brightness".into(), format!("{b:+}")),
            Op::Contrast(c) => ("colour", "contrast".into(), format!("×{c}")),
            Op::Gamma(g) => ("colour", "gamma".into(), format!("{g}")),
            Op::Saturation(s) => ("colour", "saturation".into(), format!("×{s}")),
            Op::Blur(s) => ("filter", "blur".into(), format!("σ{s}")),
            Op::Sharpen(a) => ("filter", "sharpen".into(), format!("×{a}")),
            Op::Noise(s) => ("filter", "noise".into(), format!("σ{s}")),
            Op::Screenshot(f) => ("screenshot", "screenshot".into(), pct(*f)),
            Op::Undress(f, fill) => ("undress", format!("undress-{}", fill.name()), pct(*f)),
        };
        Transform { family: family.into(), name, strength, ops: vec![op] }
    }

    /// A chain of ops under one name, in the `combo` family.
    pub fn combo(name: &str, ops: Vec<Op>) -> Transform {
        Transform { family: "combo".into(), name: name.into(), strength: "-".into(), ops }
    }

    /// `name@strength`, the row label (unique within a set).
    pub fn label(&self) -> String {
        format!("{}@{}", self.name, self.strength)
    }

    /// Whether the result carries content of the donor photo (an undress op with the donor fill).
    pub fn uses_donor(&self) -> bool {
        self.ops.iter().any(|op| matches!(op, Op::Undress(_, Fill::Donor)))
    }

    /// Apply all ops in order. `donor` is another photo (used by the undress donor fill).
    pub fn apply(&self, img: &RgbImage, donor: &RgbImage, rng: &mut Rng) -> RgbImage {
        let mut cur = img.clone();
        for op in &self.ops {
            cur = op.apply(&cur, donor, rng);
        }
        cur
    }
}

/// Every transform family at several strengths, plus combinations: the full benchmark.
pub fn standard_set() -> Vec<Transform> {
    use Op::*;
    let mut v = vec![Transform::single(Identity)];
    for q in [20, 40, 60, 80, 95] {
        v.push(Transform::single(Jpeg(q)));
    }
    for s in [0.25, 0.5, 0.75, 1.5, 2.0] {
        v.push(Transform::single(Resize(s)));
    }
    for m in [CropMode::AllSides, CropMode::OneSide, CropMode::OffCentre] {
        for f in [0.05, 0.10, 0.20, 0.30] {
            v.push(Transform::single(Crop(f, m)));
        }
    }
    for b in [PadBorder::Solid, PadBorder::Blurred, PadBorder::Pattern] {
        for f in [0.10, 0.20, 0.30] {
            v.push(Transform::single(Pad(f, b)));
        }
    }
    for d in [DihedralOp::Rot90, DihedralOp::Rot180, DihedralOp::Rot270, DihedralOp::FlipH, DihedralOp::FlipV]
    {
        v.push(Transform::single(Dihedral(d)));
    }
    for d in [2.0, 3.0, 5.0] {
        v.push(Transform::single(Rotate(d)));
    }
    v.extend(
        [Caption(0.10), Caption(0.25), Text(1), Text(3), Sticker(0.05), Sticker(0.10), Sticker(0.20)]
            .into_iter()
            .chain([Watermark(0.25), Watermark(0.5)])
            .map(Transform::single),
    );
    v.extend(
        [
            Brightness(-0.25),
            Brightness(0.25),
            Contrast(0.6),
            Contrast(1.5),
            Gamma(0.6),
            Gamma(1.6),
            Saturation(0.0),
            Saturation(1.6),
        ]
        .into_iter()
        .map(Transform::single),
    );
    v.extend(
        [Blur(1.0), Blur(2.0), Blur(4.0), Sharpen(1.0), Sharpen(2.0), Noise(5.0), Noise(10.0), Noise(20.0)]
            .into_iter()
            .map(Transform::single),
    );
    for f in [0.6, 0.4, 0.25] {
        v.push(Transform::single(Screenshot(f)));
    }
    for fill in [Fill::Donor, Fill::Smooth, Fill::Noise] {
        for f in [0.2, 0.3, 0.4, 0.5, 0.6] {
            v.push(Transform::single(Undress(f, fill)));
        }
    }
    v.push(Transform::combo("crop10+jpeg50", vec![Crop(0.10, CropMode::AllSides), Jpeg(50)]));
    v.push(Transform::combo("pad20-blurred+resize0.5", vec![Pad(0.20, PadBorder::Blurred), Resize(0.5)]));
    v.push(Transform::combo(
        "rot3+bright+crop5",
        vec![Rotate(3.0), Brightness(0.15), Crop(0.05, CropMode::OffCentre)],
    ));
    v.push(Transform::combo(
        "flip-h+crop10-side+text",
        vec![Dihedral(DihedralOp::FlipH), Crop(0.10, CropMode::OneSide), Text(1)],
    ));
    v.push(Transform::combo("screenshot40+jpeg70", vec![Screenshot(0.4), Jpeg(70)]));
    v.push(Transform::combo("undress40-donor+caption", vec![Undress(0.4, Fill::Donor), Caption(0.15)]));
    v.push(Transform::combo(
        "undress40-smooth+crop10-side+stickers",
        vec![Undress(0.4, Fill::Smooth), Crop(0.10, CropMode::OneSide), Sticker(0.05)],
    ));
    v.push(Transform::combo(
        "undress50-donor+pad20-solid",
        vec![Undress(0.5, Fill::Donor), Pad(0.20, PadBorder::Solid)],
    ));
    v.push(Transform::combo(
        "undress30-noise+crop5+jpeg60",
        vec![Undress(0.3, Fill::Noise), Crop(0.05, CropMode::AllSides), Jpeg(60)],
    ));
    v
}

/// A small set for a fast look (about a quarter of the full set).
pub fn quick_set() -> Vec<Transform> {
    let keep = [
        "identity@-",
        "jpeg@q40",
        "resize@0.5x",
        "crop-all@5%",
        "crop-all@10%",
        "crop-all@20%",
        "crop-side@20%",
        "pad-solid@10%",
        "pad-blurred@20%",
        "pad-pattern@30%",
        "rot90@-",
        "flip-h@-",
        "rotate@3°",
        "caption-bar@25%",
        "stickers@10%",
        "gamma@1.6",
        "blur@σ2",
        "screenshot@40%",
        "undress-donor@20%",
        "undress-donor@40%",
        "undress-smooth@40%",
        "undress-noise@40%",
        "undress-donor@60%",
        "undress40-donor+caption@-",
    ];
    standard_set().into_iter().filter(|t| keep.contains(&t.label().as_str())).collect()
}

/// Select transforms from `set` by a comma-separated list; an item matches a
/// family (`crop`), a name (`crop-all`) or a label (`crop-all@20%`).
pub fn select(set: Vec<Transform>, list: &str) -> Vec<Transform> {
    let items: Vec<&str> = list.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    set.into_iter()
        .filter(|t| items.iter().any(|i| *i == t.family || *i == t.name || *i == t.label()))
        .collect()
}

/// A rectangle [x, x+w) × [y, y+h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    /// Left.
    pub x: u32,
    /// Top.
    pub y: u32,
    /// Width.
    pub w: u32,
    /// Height.
    pub h: u32,
}

impl Rect {
    /// Whether (px, py) lies inside.
    pub fn contains(&self, px: u32, py: u32) -> bool {
        px >= self.x && px < self.x + self.w && py >= self.y && py < self.y + self.h
    }
}

/// The body-area region for the undress pattern: `frac` of the image area,
/// centred horizontally (with a small random offset), anchored at the bottom,
/// its height at most 80% of the image so the top (face, hair) is kept.
pub fn undress_region(w: u32, h: u32, frac: f32, rng: &mut Rng) -> Rect {
    let frac = f64::from(frac.clamp(0.0, 0.8));
    let (wf, hf) = (f64::from(w), f64::from(h));
    // Aspect jitter: the region's height fraction is sqrt(frac) × [0.9, 1.15], at most 0.8.
    let mut hfrac = (frac.sqrt() * rng.range(0.9, 1.15)).min(0.8);
    let mut wfrac = frac / hfrac;
    if wfrac > 0.95 {
        wfrac = 0.95;
        hfrac = (frac / wfrac).min(1.0);
    }
    let rh = ((hfrac * hf).round() as u32).clamp(1, h);
    // Width chosen so that the area is as close to frac as integer sizes allow.
    let rw = ((frac * wf * hf / f64::from(rh)).round() as u32).clamp(1, w);
    let slack = w - rw;
    let centre = f64::from(slack) / 2.0;
    let jitter = rng.range(-0.25, 0.25) * f64::from(slack);
    let x = (centre + jitter).round().clamp(0.0, f64::from(slack)) as u32;
    Rect { x, y: h - rh, w: rw, h: rh }
}

/// The undress pattern with its region (see [`undress_region`]); pixels outside
/// the region are left exactly as they were.
pub fn undress_with_region(
    img: &RgbImage,
    donor: &RgbImage,
    frac: f32,
    fill: Fill,
    rng: &mut Rng,
) -> (RgbImage, Rect) {
    let (w, h) = img.dimensions();
    let r = undress_region(w, h, frac, rng);
    let mut out = img.clone();
    match fill {
        Fill::Donor => {
            let d = crate::resample::resize(donor, w, h);
            for y in r.y..r.y + r.h {
                for x in r.x..r.x + r.w {
                    out.put_pixel(x, y, *d.get_pixel(x, y));
                }
            }
        }
        Fill::Noise => {
            for y in r.y..r.y + r.h {
                for x in r.x..r.x + r.w {
                    out.put_pixel(x, y, Rgb(rng.rgb()));
                }
            }
        }
        Fill::Smooth => smooth_fill(&mut out, img, r),
    }
    (out, r)
}

/// Fill `r` smoothly from its surroundings, as a diffusion inpainting would:
/// each pixel is an inverse-distance blend of the (locally averaged) pixels
/// just outside the region to its left, right and above (the bottom is the
/// image edge). Computed on a grid 8× coarser and upsampled bilinearly, so it
/// has no texture of its own.
fn smooth_fill(out: &mut RgbImage, src: &RgbImage, r: Rect) {
    const STEP: u32 = 8;
    let w = src.width();
    // Mean of a 5×5 window (clipped) around (x, y): border colours without single-pixel streaks.
    let local_mean = |x: u32, y: u32| -> [f32; 3] {
        let mut acc = [0f32; 3];
        let mut n = 0f32;
        for yy in y.saturating_sub(2)..(y + 3).min(src.height()) {
            for xx in x.saturating_sub(2)..(x + 3).min(w) {
                let p = src.get_pixel(xx, yy).0;
                for k in 0..3 {
                    acc[k] += f32::from(p[k]);
                }
                n += 1.0;
            }
        }
        acc.map(|a| a / n)
    };
    let (gw, gh) = (r.w.div_ceil(STEP) + 1, r.h.div_ceil(STEP) + 1);
    let mut grid = RgbImage::new(gw, gh);
    for gy in 0..gh {
        let ry = (gy * STEP).min(r.h - 1);
        let y = r.y + ry;
        let left = (r.x > 0).then(|| local_mean(r.x - 1, y));
        let right = (r.x + r.w < w).then(|| local_mean(r.x + r.w, y));
        for gx in 0..gw {
            let rx = (gx * STEP).min(r.w - 1);
            let x = r.x + rx;
            let mut acc = [0f32; 3];
            let mut wsum = 0f32;
            let mut add = |c: [f32; 3], d: f32| {
                let wgt = 1.0 / (d * d).max(1.0);
                for k in 0..3 {
                    acc[k] += wgt * c[k];
                }
                wsum += wgt;
            };
            if let Some(c) = left {
                add(c, (rx + 1) as f32);
            }
            if let Some(c) = right {
                add(c, (r.w - rx) as f32);
            }
            if r.y > 0 {
                add(local_mean(x, r.y - 1), (ry + 1) as f32);
            }
            let px = if wsum > 0.0 { acc.map(|a| (a / wsum).round() as u8) } else { [128, 128, 128] };
            grid.put_pixel(gx, gy, Rgb(px));
        }
    }
    let grid = draw::blur(&grid, 1.0);
    // Bilinear upsampling: grid point g sits at region pixel g·STEP.
    for ry in 0..r.h {
        for rx in 0..r.w {
            let p = draw::sample_bilinear(&grid, rx as f32 / STEP as f32, ry as f32 / STEP as f32)
                .unwrap_or([128; 3]);
            out.put_pixel(r.x + rx, r.y + ry, Rgb(p));
        }
    }
}

/// Encode as baseline JPEG at `quality` (libjpeg's quality scaling of the
/// standard tables, 4:2:0 chroma subsampling as messengers use).
pub fn encode_jpeg(img: &RgbImage, quality: u8) -> Vec<u8> {
    let mut buf = Vec::new();
    let (w, h) = img.dimensions();
    assert!(w <= 65535 && h <= 65535, "JPEG dimensions fit in 16 bits");
    let mut enc = jpeg_encoder::Encoder::new(&mut buf, quality);
    enc.set_sampling_factor(jpeg_encoder::SamplingFactor::F_2_2);
    enc.encode(img.as_raw(), w as u16, h as u16, jpeg_encoder::ColorType::Rgb)
        .expect("JPEG encoding of an in-memory RGB image cannot fail");
    buf
}

/// Decode JPEG or PNG bytes to RGB.
pub fn decode_rgb(bytes: &[u8]) -> Result<RgbImage, image::ImageError> {
    Ok(image::load_from_memory(bytes)?.to_rgb8())
}

/// Resize so the longest side is at most `max_side`, keeping the aspect ratio (Catmull–Rom bicubic).
pub fn fit_longest(img: &RgbImage, max_side: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let long = w.max(h);
    if long <= max_side {
        return img.clone();
    }
    let s = f64::from(max_side) / f64::from(long);
    let nw = ((f64::from(w) * s).round() as u32).clamp(1, max_side);
    let nh = ((f64::from(h) * s).round() as u32).clamp(1, max_side);
    crate::resample::resize(img, nw, nh)
}

/// Telegram-like recompression, applied to every query last: longest side at
/// most 1280 (bicubic), JPEG at quality 87. Returns the bytes a receiver gets.
pub fn telegram_recompress(img: &RgbImage) -> Vec<u8> {
    encode_jpeg(&fit_longest(img, TELEGRAM_MAX_SIDE), TELEGRAM_QUALITY)
}

fn map_channels(img: &RgbImage, f: impl Fn(f32) -> f32) -> RgbImage {
    let lut: Vec<u8> = (0..256).map(|v| f(v as f32).round().clamp(0.0, 255.0) as u8).collect();
    let mut out = img.clone();
    for p in out.pixels_mut() {
        for k in 0..3 {
            p.0[k] = lut[p.0[k] as usize];
        }
    }
    out
}

/// A random "UI" colour pair: light background with dark ink, or the reverse.
fn ui_colours(rng: &mut Rng) -> ([u8; 3], [u8; 3]) {
    if rng.coin() {
        let v = 230 + rng.below(26) as u8;
        ([v, v, v], [30, 30, 30])
    } else {
        let v = 10 + rng.below(30) as u8;
        ([v, v, v + 5], [225, 225, 225])
    }
}

impl Op {
    /// Apply this op. Deterministic for equal inputs and RNG state.
    pub fn apply(&self, img: &RgbImage, donor: &RgbImage, rng: &mut Rng) -> RgbImage {
        let (w, h) = img.dimensions();
        match *self {
            Op::Identity => img.clone(),
            Op::Jpeg(q) => decode_rgb(&encode_jpeg(img, q)).expect("own JPEG decodes"),
            Op::Resize(s) => {
                let nw = ((w as f32 * s).round() as u32).max(1);
                let nh = ((h as f32 * s).round() as u32).max(1);
                crate::resample::resize(img, nw, nh)
            }
            Op::Crop(f, mode) => {
                let cx = (w as f32 * f).round() as u32;
                let cy = (h as f32 * f).round() as u32;
                let (x, y, nw, nh) = match mode {
                    CropMode::AllSides => (cx, cy, w - 2 * cx, h - 2 * cy),
                    CropMode::OneSide => match rng.below(4) {
                        0 => (cx, 0, w - cx, h),
                        1 => (0, 0, w - cx, h),
                        2 => (0, cy, w, h - cy),
                        _ => (0, 0, w, h - cy),
                    },
                    CropMode::OffCentre => {
                        // Remove 2·f per axis in all, split unevenly (at most a quarter on one side).
                        let mut split = || {
                            let u = rng.range(0.0, 0.25);
                            if rng.coin() {
                                u
                            } else {
                                1.0 - u
                            }
                        };
                        let (ux, uy) = (split(), split());
                        let x = ((2 * cx) as f64 * ux).round() as u32;
                        let y = ((2 * cy) as f64 * uy).round() as u32;
                        (x, y, w - 2 * cx, h - 2 * cy)
                    }
                };
                imageops::crop_imm(img, x, y, nw.max(1), nh.max(1)).to_image()
            }
            Op::Pad(f, border) => {
                let bx = (w as f32 * f).round() as u32;
                let by = (h as f32 * f).round() as u32;
                let (cw, ch) = (w + 2 * bx, h + 2 * by);
                let mut canvas = match border {
                    PadBorder::Solid => {
                        let c = match rng.below(3) {
                            0 => [0, 0, 0],
                            1 => [255, 255, 255],
                            _ => rng.rgb(),
                        };
                        RgbImage::from_pixel(cw, ch, Rgb(c))
                    }
                    PadBorder::Blurred => {
                        // Blur at a small size (cheap), then stretch.
                        let small = imageops::thumbnail(img, (cw / 8).max(1), (ch / 8).max(1));
                        let small = draw::blur(&small, 2.0);
                        crate::resample::resize(&small, cw, ch)
                    }
                    PadBorder::Pattern => {
                        let (a, b) = (rng.rgb(), rng.rgb());
                        let period = (cw.max(ch) / (8 + rng.below(24) as u32)).max(2);
                        let kind = rng.below(3);
                        RgbImage::from_fn(cw, ch, |x, y| {
                            let on = match kind {
                                0 => (x / period + y / period) % 2 == 0,
                                1 => (x / period) % 2 == 0,
                                _ => ((x + y) / period) % 2 == 0,
                            };
                            Rgb(if on { a } else { b })
                        })
                    }
                };
                imageops::replace(&mut canvas, img, i64::from(bx), i64::from(by));
                canvas
            }
            Op::Dihedral(d) => match d {
                DihedralOp::Rot90 => imageops::rotate90(img),
                DihedralOp::Rot180 => imageops::rotate180(img),
                DihedralOp::Rot270 => imageops::rotate270(img),
                DihedralOp::FlipH => imageops::flip_horizontal(img),
                DihedralOp::FlipV => imageops::flip_vertical(img),
            },
            Op::Rotate(deg) => {
                let deg = if rng.coin() { deg } else { -deg };
                let fill = if rng.coin() { [0, 0, 0] } else { [255, 255, 255] };
                let (s, c) = (deg.to_radians().sin(), deg.to_radians().cos());
                let (cx, cy) = ((w as f32 - 1.0) / 2.0, (h as f32 - 1.0) / 2.0);
                RgbImage::from_fn(w, h, |x, y| {
                    let (dx, dy) = (x as f32 - cx, y as f32 - cy);
                    let sx = c * dx + s * dy + cx;
                    let sy = -s * dx + c * dy + cy;
                    Rgb(draw::sample_bilinear(img, sx, sy).unwrap_or(fill))
                })
            }
            Op::Caption(f) => {
                let bar = ((h as f32 * f).round() as u32).max(1);
                let top = rng.coin();
                let (bg, ink) = ui_colours(rng);
                let mut canvas = RgbImage::from_pixel(w, h + bar, Rgb(bg));
                imageops::replace(&mut canvas, img, 0, if top { i64::from(bar) } else { 0 });
                let y0 = if top { 0 } else { h };
                // One or two lines of text filling the bar's width.
                let lines = if bar > h / 6 { 2 } else { 1 };
                let cell = (bar / (lines * 7 + 1)).max(1);
                for l in 0..lines {
                    let chars = ((w / (4 * cell)).saturating_sub(2) as usize).clamp(1, 60);
                    let n = chars.min(8 + rng.below(chars as u64) as usize);
                    let text = random_text(rng, n);
                    let tx = (w.saturating_sub(text_width(&text, cell))) / 2;
                    draw_text(
                        &mut canvas,
                        i64::from(tx),
                        i64::from(y0 + cell * (1 + 7 * l)) + i64::from(cell),
                        cell,
                        &text,
                        ink,
                        None,
                        1.0,
                    );
                }
                canvas
            }
            Op::Text(lines) => {
                let mut out = img.clone();
                let cell = (h / 60).max(1);
                for l in 0..lines {
                    let chars = ((w / (4 * cell)).saturating_sub(2) as usize).clamp(1, 40);
                    let n = 6 + rng.below(chars as u64) as usize;
                    let text = random_text(rng, n);
                    let tw = text_width(&text, cell);
                    let tx = w.saturating_sub(tw) / 2;
                    // Meme layout: top line, bottom line, then the middle.
                    let ty = match l % 3 {
                        0 => h / 20,
                        1 => h - h / 20 - 5 * cell,
                        _ => h / 2,
                    };
                    let (fg, ol) =
                        if rng.coin() { ([255, 255, 255], [0, 0, 0]) } else { ([0, 0, 0], [255, 255, 255]) };
                    draw_text(&mut out, i64::from(tx), i64::from(ty), cell, &text, fg, Some(ol), 1.0);
                }
                out
            }
            Op::Sticker(f) => {
                let mut out = img.clone();
                let target = f64::from(f) * f64::from(w) * f64::from(h);
                let n = 1 + rng.below(3);
                let each = target / n as f64;
                for _ in 0..n {
                    let c = rng.rgb();
                    let cx = rng.below(u64::from(w)) as i64;
                    let cy = rng.below(u64::from(h)) as i64;
                    if rng.coin() {
                        let r = (each / std::f64::consts::PI).sqrt() as i64;
                        fill_disc(&mut out, cx, cy, r + r / 12 + 1, [255, 255, 255], 1.0);
                        fill_disc(&mut out, cx, cy, r, c, 1.0);
                        let cell = (r / 6).max(1) as u32;
                        draw_text(
                            &mut out,
                            cx - i64::from(text_width("LOL", cell)) / 2,
                            cy - 2 * i64::from(cell),
                            cell,
                            "LOL",
                            [255, 255, 255],
                            Some([0, 0, 0]),
                            1.0,
                        );
                    } else {
                        let s = each.sqrt() as i64;
                        fill_rect(&mut out, cx - s / 2 - 2, cy - s / 2 - 2, s + 4, s + 4, [0, 0, 0], 1.0);
                        fill_rect(&mut out, cx - s / 2, cy - s / 2, s, s, c, 1.0);
                        let cell = (s / 14).max(1) as u32;
                        let t = random_text(rng, 3);
                        draw_text(
                            &mut out,
                            cx - i64::from(text_width(&t, cell)) / 2,
                            cy - 2 * i64::from(cell),
                            cell,
                            &t,
                            [0, 0, 0],
                            Some([255, 255, 255]),
                            1.0,
                        );
                    }
                }
                out
            }
            Op::Watermark(alpha) => {
                let mut out = img.clone();
                let cell = (w.max(h) / 120).max(1);
                let text = random_text(rng, 10);
                let tw = i64::from(text_width(&text, cell));
                let step_y = i64::from(cell) * 18;
                let colour = if rng.coin() { [255, 255, 255] } else { [0, 0, 0] };
                let mut row = 0i64;
                let mut y = -(rng.below(step_y as u64) as i64);
                while y < i64::from(h) {
                    let mut x = -((row * tw / 3) % (tw + 8 * i64::from(cell)));
                    while x < i64::from(w) {
                        draw_text(&mut out, x, y, cell, &text, colour, None, alpha);
                        x += tw + 8 * i64::from(cell);
                    }
                    y += step_y;
                    row += 1;
                }
                out
            }
            Op::Brightness(b) => map_channels(img, |v| v + b * 255.0),
            Op::Contrast(c) => map_channels(img, |v| (v - 128.0) * c + 128.0),
            Op::Gamma(g) => map_channels(img, |v| 255.0 * (v / 255.0).powf(g)),
            Op::Saturation(s) => {
                let mut out = img.clone();
                for p in out.pixels_mut() {
                    let [r, g, b] = p.0.map(f32::from);
                    let l = 0.299 * r + 0.587 * g + 0.114 * b;
                    p.0 = [r, g, b].map(|v| (l + (v - l) * s).round().clamp(0.0, 255.0) as u8);
                }
                out
            }
            Op::Blur(s) => draw::blur(img, (s * w.max(h) as f32 / 1024.0).max(0.6)),
            Op::Sharpen(a) => {
                let soft = draw::blur(img, (1.5 * w.max(h) as f32 / 1024.0).max(0.6));
                let mut out = img.clone();
                for (p, q) in out.pixels_mut().zip(soft.pixels()) {
                    for k in 0..3 {
                        let v = f32::from(p.0[k]);
                        p.0[k] = (v + a * (v - f32::from(q.0[k]))).round().clamp(0.0, 255.0) as u8;
                    }
                }
                out
            }
            Op::Noise(s) => {
                let mut out = img.clone();
                for p in out.pixels_mut() {
                    for k in 0..3 {
                        p.0[k] = (f64::from(p.0[k]) + rng.gauss_fast() * f64::from(s))
                            .round()
                            .clamp(0.0, 255.0) as u8;
                    }
                }
                out
            }
            Op::Screenshot(f) => screenshot(img, f, rng),
            Op::Undress(f, fill) => undress_with_region(img, donor, f, fill, rng).0,
        }
    }
}

/// The photo inside an interface-like frame (status bar, header with avatar
/// and name, text lines and buttons below), the photo covering `frac` of the
/// frame's area. Returns the frame.
fn screenshot(img: &RgbImage, frac: f32, rng: &mut Rng) -> RgbImage {
    let (w, h) = img.dimensions();
    let (bg, ink) = ui_colours(rng);
    let total = f64::from(w) * f64::from(h) / f64::from(frac.clamp(0.05, 1.0));
    // Frame as wide as the photo plus margins; the rest of the area above and below.
    let margin = (f64::from(w) * rng.range(0.02, 0.06)).round() as u32;
    let fw = w + 2 * margin;
    let fh = ((total / f64::from(fw)).round() as u32).max(h + 1);
    let free = fh - h;
    let above = (f64::from(free) * rng.range(0.35, 0.55)).round() as u32;
    let mut out = RgbImage::from_pixel(fw, fh, Rgb(bg));
    let unit = (fw / 40).max(2);
    // Status bar and app header.
    let status = (unit * 2).min(above / 3);
    fill_rect(&mut out, 0, 0, i64::from(fw), i64::from(status), [ink[0] / 2 + bg[0] / 2; 3], 1.0);
    let accent = rng.rgb();
    let r = i64::from(unit * 2);
    if above > status + 3 * unit {
        let cy = i64::from(status + (above - status) / 2);
        fill_disc(&mut out, i64::from(margin) + r, cy, r, accent, 1.0);
        let name = random_text(rng, 10);
        draw_text(
            &mut out,
            i64::from(margin) + 3 * r,
            cy - i64::from(unit),
            (unit / 2).max(1),
            &name,
            ink,
            None,
            1.0,
        );
    }
    imageops::replace(&mut out, img, i64::from(margin), i64::from(above));
    // Below: buttons then text lines.
    let mut y = above + h + unit;
    let mut x = margin;
    for _ in 0..4 {
        if y + 2 * unit > fh {
            break;
        }
        fill_disc(&mut out, i64::from(x + unit), i64::from(y + unit), i64::from(unit), ink, 1.0);
        fill_disc(&mut out, i64::from(x + unit), i64::from(y + unit), i64::from(unit) * 2 / 3, bg, 1.0);
        x += 4 * unit;
    }
    y += 3 * unit;
    let cell = (unit / 3).max(1);
    while y + 6 * cell < fh {
        let chars = ((w / (4 * cell)) as usize).clamp(1, 200);
        let n = chars / 2 + rng.below(chars as u64 / 2 + 1) as usize;
        let text = random_text(rng, n);
        draw_text(&mut out, i64::from(margin), i64::from(y), cell, &text, ink, None, 1.0);
        y += 9 * cell;
    }
    out
}

#[cfg(test)]
mod tests;
