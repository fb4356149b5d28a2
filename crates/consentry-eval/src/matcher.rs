//! The interface every matcher under evaluation implements, and the two
//! baselines: global PDQ, and PDQ with the eight dihedral hashes of the query.

use consentry_pdq::{Hash256, Hasher, ImageRef, PixelFormat, DEFAULT_MATCH_DISTANCE};
use image::RgbImage;
use rayon::prelude::*;
use std::cell::RefCell;

/// Identifies a protected original.
pub type ImageId = u32;

/// A protected original handed to [`Matcher::index`]: its file bytes as
/// registered and the pixels decoded from them.
#[derive(Debug, Clone, Copy)]
pub struct Protected<'a> {
    /// Identifier reported back by [`Matcher::query`].
    pub id: ImageId,
    /// The original file's bytes.
    pub bytes: &'a [u8],
    /// Those bytes decoded (RGB, full resolution).
    pub image: &'a RgbImage,
}

/// A query handed to [`Matcher::query`]: the bytes a platform received, and
/// the pixels the harness decoded from them (decoded once, shared by all
/// matchers, timed separately). A matcher may use either.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// The received bytes (JPEG after Telegram-like recompression).
    pub bytes: &'a [u8],
    /// Those bytes decoded.
    pub image: &'a RgbImage,
}

/// Something that registers protected images and says which of them a query matches.
///
/// The harness times each `query` call and the whole `index` call; decoding is
/// done (and timed) by the harness, so the times are the matcher's own cost:
/// hashing plus lookup.
pub trait Matcher: Send + Sync {
    /// Short name for table headers.
    fn name(&self) -> String;
    /// Register the protected originals (replacing any earlier set).
    fn index(&mut self, protected: &[Protected<'_>]);
    /// The protected images this query matches (any order, no duplicates).
    fn query(&self, q: &Query<'_>) -> Vec<ImageId>;
    /// Bytes stored per protected image (for the storage budget).
    fn stored_bytes_per_image(&self) -> usize;
}

thread_local! {
    static HASHER: RefCell<Hasher> = RefCell::new(Hasher::new());
}

/// PDQ hash of an RGB image with this thread's hasher.
pub fn pdq(img: &RgbImage) -> (Hash256, u8) {
    let r = ImageRef::new(img.width(), img.height(), PixelFormat::Rgb8, img.as_raw())
        .expect("RgbImage is packed RGB");
    HASHER.with(|h| {
        let out = h.borrow_mut().hash(&r);
        (out.hash, out.quality)
    })
}

/// The eight dihedral PDQ hashes of an RGB image with this thread's hasher.
pub fn pdq_dihedral(img: &RgbImage) -> [Hash256; 8] {
    let r = ImageRef::new(img.width(), img.height(), PixelFormat::Rgb8, img.as_raw())
        .expect("RgbImage is packed RGB");
    HASHER.with(|h| h.borrow_mut().hash_dihedral(&r).hashes)
}

/// Global PDQ: one hash per image, match when the distance is at most `threshold`.
#[derive(Debug, Clone)]
pub struct PdqMatcher {
    threshold: u32,
    dihedral: bool,
    protected: Vec<(ImageId, Hash256)>,
}

impl PdqMatcher {
    /// Global PDQ at `threshold` (31 is Meta's).
    pub fn global(threshold: u32) -> Self {
        PdqMatcher { threshold, dihedral: false, protected: Vec::new() }
    }

    /// PDQ comparing the 8 dihedral hashes of the query with each protected
    /// hash (as Meta's HMA does), at `threshold`.
    pub fn dihedral(threshold: u32) -> Self {
        PdqMatcher { threshold, dihedral: true, protected: Vec::new() }
    }
}

impl Default for PdqMatcher {
    fn default() -> Self {
        PdqMatcher::global(DEFAULT_MATCH_DISTANCE)
    }
}

impl Matcher for PdqMatcher {
    fn name(&self) -> String {
        if self.dihedral {
            format!("PDQ+dihedral≤{}", self.threshold)
        } else {
            format!("PDQ≤{}", self.threshold)
        }
    }

    fn index(&mut self, protected: &[Protected<'_>]) {
        self.protected = protected.par_iter().map(|p| (p.id, pdq(p.image).0)).collect();
    }

    fn query(&self, q: &Query<'_>) -> Vec<ImageId> {
        let hashes: Vec<Hash256> =
            if self.dihedral { pdq_dihedral(q.image).to_vec() } else { vec![pdq(q.image).0] };
        self.protected
            .iter()
            .filter(|(_, p)| hashes.iter().any(|h| h.distance(p) <= self.threshold))
            .map(|(id, _)| *id)
            .collect()
    }

    fn stored_bytes_per_image(&self) -> usize {
        32
    }
}

/// Experimental, for evaluation only: the PDQ hash of the top `frac` of the image's height —
/// the band a nudify bot keeps (face, hair, background) — compared at `threshold`. A band whose
/// PDQ quality is below 50 (sky, a plain wall) is not used on either side. Geometry must be
/// unchanged (no crop or pad), so this is a candidate second region signal beside the keypoints,
/// not a matcher on its own.
#[derive(Debug, Clone)]
pub struct PdqTopBandMatcher {
    frac: f32,
    threshold: u32,
    min_quality: u8,
    /// Trim uniform borders (rows and columns of one colour) off both sides first.
    trim: bool,
    protected: Vec<(ImageId, Hash256)>,
}

impl PdqTopBandMatcher {
    pub fn new(frac: f32, threshold: u32) -> Self {
        PdqTopBandMatcher {
            frac: frac.clamp(0.05, 1.0),
            threshold,
            min_quality: 50,
            trim: false,
            protected: Vec::new(),
        }
    }

    /// Bands of PDQ quality below `q` are not used (default 50).
    pub fn min_quality(mut self, q: u8) -> Self {
        self.min_quality = q;
        self
    }

    /// Trim uniform borders off every image before taking its band.
    pub fn trimmed(mut self) -> Self {
        self.trim = true;
        self
    }

    /// The band's PDQ hash, when its quality is at least `min_quality`.
    fn band_hash(&self, img: &RgbImage) -> Option<Hash256> {
        let (x0, y0, w, h) = if self.trim { content_box(img) } else { (0, 0, img.width(), img.height()) };
        let bh = ((h as f32 * self.frac).round() as u32).clamp(1, h);
        let band = image::imageops::crop_imm(img, x0, y0, w, bh).to_image();
        let (hash, quality) = pdq(&band);
        (quality >= self.min_quality).then_some(hash)
    }
}

/// The image without its uniform borders ([`consentry_derive::content_box`]): (x, y, width, height).
pub fn content_box(img: &RgbImage) -> (u32, u32, u32, u32) {
    consentry_derive::content_box(&crate::derive_matcher::pixels(img))
}

impl Matcher for PdqTopBandMatcher {
    fn name(&self) -> String {
        let mut s = format!("PDQ top {:.0}%≤{}", self.frac * 100.0, self.threshold);
        if self.min_quality != 50 {
            s += &format!(" q≥{}", self.min_quality);
        }
        if self.trim {
            s += " trimmed";
        }
        s
    }

    fn index(&mut self, protected: &[Protected<'_>]) {
        self.protected =
            protected.par_iter().filter_map(|p| self.band_hash(p.image).map(|h| (p.id, h))).collect();
    }

    fn query(&self, q: &Query<'_>) -> Vec<ImageId> {
        let Some(h) = self.band_hash(q.image) else { return Vec::new() };
        self.protected.iter().filter(|(_, p)| h.distance(p) <= self.threshold).map(|(id, _)| *id).collect()
    }

    fn stored_bytes_per_image(&self) -> usize {
        32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::testutil::photo;
    use crate::transforms::{decode_rgb, telegram_recompress, DihedralOp, Op};

    fn query(m: &impl Matcher, img: &RgbImage) -> Vec<ImageId> {
        let bytes = telegram_recompress(img);
        let dec = decode_rgb(&bytes).unwrap();
        let mut v = m.query(&Query { bytes: &bytes, image: &dec });
        v.sort_unstable();
        v
    }

    #[test]
    fn baselines_find_a_copy_and_reject_another_image() {
        let (a, b, c) = (photo(320, 240, 21), photo(320, 240, 22), photo(320, 240, 23));
        let (qa, qb, qc) = (pdq(&a), pdq(&b), pdq(&c));
        assert!(qa.1 >= 50 && qb.1 >= 50, "test images should have hash quality ≥ 50");
        assert!(qa.0.distance(&qc.0) > 31 && qb.0.distance(&qc.0) > 31);
        let prot = [Protected { id: 1, bytes: &[], image: &a }, Protected { id: 2, bytes: &[], image: &b }];
        let rot = Op::Dihedral(DihedralOp::Rot90).apply(&a, &a, &mut Rng::new(0));
        for mut m in [PdqMatcher::global(31), PdqMatcher::dihedral(31)] {
            m.index(&prot);
            assert_eq!(query(&m, &a), vec![1], "{}", m.name());
            assert_eq!(query(&m, &b), vec![2], "{}", m.name());
            assert!(query(&m, &c).is_empty(), "{}", m.name());
        }
        let mut g = PdqMatcher::global(31);
        g.index(&prot);
        let mut d = PdqMatcher::dihedral(31);
        d.index(&prot);
        // Only the dihedral variant survives a 90° rotation.
        assert!(query(&g, &rot).is_empty());
        assert_eq!(query(&d, &rot), vec![1]);
    }

    #[test]
    fn top_band_survives_a_replaced_body_area_and_global_pdq_does_not() {
        // consentry-derive's synthetic scenes: textured enough for a usable top band.
        let scene = |seed| {
            let s = consentry_derive::synth::scene(480, 640, seed);
            RgbImage::from_raw(s.width, s.height, s.data).unwrap()
        };
        let (a, b, donor) = (scene(31), scene(32), scene(33));
        let prot = [Protected { id: 1, bytes: &[], image: &a }, Protected { id: 2, bytes: &[], image: &b }];
        let mut band = PdqTopBandMatcher::new(0.2, 31);
        band.index(&prot);
        assert_eq!(band.protected.len(), 2, "both test photos have a usable top band");
        let mut global = PdqMatcher::global(31);
        global.index(&prot);
        // Half of the image, in the body area (bottom, centre), replaced by another photo.
        let (undressed, region) = crate::transforms::undress_with_region(
            &a,
            &donor,
            0.5,
            crate::transforms::Fill::Donor,
            &mut Rng::new(4),
        );
        assert!(region.y >= a.height() / 5, "the top fifth is kept");
        assert_eq!(query(&band, &undressed), vec![1]);
        assert!(query(&global, &undressed).is_empty(), "beyond global PDQ");
        assert!(query(&band, &donor).is_empty());
    }

    #[test]
    fn content_box_cuts_solid_borders_and_keeps_a_photo_without() {
        let s = consentry_derive::synth::scene(480, 360, 34);
        let a = RgbImage::from_raw(s.width, s.height, s.data).unwrap();
        assert_eq!(content_box(&a), (0, 0, 480, 360), "a scene has no uniform border");
        // a 20 % solid border, then Telegram-like recompression (JPEG rings at the edge)
        let mut padded = RgbImage::from_pixel(480 + 192, 360 + 144, image::Rgb([250, 250, 250]));
        image::imageops::overlay(&mut padded, &a, 96, 72);
        let dec = decode_rgb(&telegram_recompress(&padded)).unwrap();
        let (x, y, w, h) = content_box(&dec);
        for (got, want) in [(x, 96), (y, 72), (w, 480), (h, 360)] {
            assert!(got.abs_diff(want) <= 8, "{:?} vs (96, 72, 480, 360)", (x, y, w, h));
        }
        // with the border trimmed, the padded copy's top band is the original's
        let mut band = PdqTopBandMatcher::new(0.2, 31).trimmed();
        band.index(&[Protected { id: 1, bytes: &[], image: &a }]);
        assert_eq!(query(&band, &padded), vec![1]);
        let mut plain = PdqTopBandMatcher::new(0.2, 31);
        plain.index(&[Protected { id: 1, bytes: &[], image: &a }]);
        assert!(query(&plain, &padded).is_empty(), "untrimmed, the band is mostly border");
    }
}

/// PDQ through consentry's production pipeline: `consentry_media::hash_bytes`
/// on the protected file's bytes and on the received query bytes (its default
/// options: fast reduced-scale JPEG decoding, EXIF orientation applied). Its
/// time per query includes decoding, unlike [`PdqMatcher`]'s.
#[derive(Debug, Clone)]
pub struct MediaPdqMatcher {
    threshold: u32,
    dihedral: bool,
    protected: Vec<(ImageId, Hash256)>,
}

impl MediaPdqMatcher {
    /// Global PDQ at `threshold`.
    pub fn global(threshold: u32) -> Self {
        MediaPdqMatcher { threshold, dihedral: false, protected: Vec::new() }
    }

    /// The 8 dihedral hashes of the query against each protected hash, at `threshold`.
    pub fn dihedral(threshold: u32) -> Self {
        MediaPdqMatcher { threshold, dihedral: true, protected: Vec::new() }
    }

    fn hash(bytes: &[u8], dihedral: bool) -> Option<Vec<Hash256>> {
        let opts = consentry_media::HashOptions { dihedral, ..Default::default() };
        let out = HASHER.with(|h| consentry_media::hash_bytes(bytes, &opts, &mut h.borrow_mut())).ok()?;
        Some(match out.dihedral {
            Some(d) => d.hashes.to_vec(),
            None => vec![out.pdq.hash],
        })
    }
}

impl Matcher for MediaPdqMatcher {
    fn name(&self) -> String {
        if self.dihedral {
            format!("media PDQ+dihedral≤{}", self.threshold)
        } else {
            format!("media PDQ≤{}", self.threshold)
        }
    }

    fn index(&mut self, protected: &[Protected<'_>]) {
        self.protected =
            protected.par_iter().filter_map(|p| Self::hash(p.bytes, false).map(|h| (p.id, h[0]))).collect();
    }

    fn query(&self, q: &Query<'_>) -> Vec<ImageId> {
        let Some(hashes) = Self::hash(q.bytes, self.dihedral) else { return Vec::new() };
        self.protected
            .iter()
            .filter(|(_, p)| hashes.iter().any(|h| h.distance(p) <= self.threshold))
            .map(|(id, _)| *id)
            .collect()
    }

    fn stored_bytes_per_image(&self) -> usize {
        32
    }
}

#[cfg(test)]
mod media_tests {
    use super::*;
    use crate::testutil::photo;
    use crate::transforms::{decode_rgb, encode_jpeg, telegram_recompress};

    #[test]
    fn production_pipeline_baseline_finds_a_copy_and_rejects_another_image() {
        let (a, b, c) = (photo(400, 300, 31), photo(400, 300, 32), photo(400, 300, 33));
        let (ba, bb) = (encode_jpeg(&a, 95), encode_jpeg(&b, 95));
        let (da, db) = (decode_rgb(&ba).unwrap(), decode_rgb(&bb).unwrap());
        let prot = [Protected { id: 7, bytes: &ba, image: &da }, Protected { id: 8, bytes: &bb, image: &db }];
        for mut m in [MediaPdqMatcher::global(31), MediaPdqMatcher::dihedral(31)] {
            m.index(&prot);
            for (img, want) in [(&a, vec![7]), (&b, vec![8]), (&c, vec![])] {
                let bytes = telegram_recompress(img);
                let dec = decode_rgb(&bytes).unwrap();
                let mut got = m.query(&Query { bytes: &bytes, image: &dec });
                got.sort_unstable();
                assert_eq!(got, want, "{}", m.name());
            }
            // Bytes that are not an image match nothing (and do not panic).
            assert!(m.query(&Query { bytes: b"not an image", image: &da }).is_empty());
        }
    }
}
