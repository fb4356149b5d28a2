//! Derivative matcher: finds protected photos inside cropped, padded,
//! captioned, re-encoded copies and copies with a large region replaced (the
//! "undress" pattern of nudify bots, simulated structurally on benign photos
//! in the evaluation harness), at a cost close to PDQ's.
//!
//! # Signal
//!
//! A protected image's [`Signature`] (at most [`MAX_SIGNATURE_BYTES`] bytes) is
//!
//! * its global **PDQ** hash (bit-exact, from `consentry-pdq`), so that every
//!   copy PDQ catches is still caught (including the 8 dihedral variants of
//!   the query, as HMA does), and
//! * the PDQ hash of its **top band**, the top fifth of its rows ([`BAND_FRACTION`]): a nudify
//!   bot keeps the face, the hair and what is behind them, so a copy whose body area is
//!   replaced still has the original's top band, even when the replaced area is too large for
//!   the keypoints that remain (format version 2; version-1 signatures have none), and
//! * up to 50 **local keypoints**: Harris corners on a 4-level pyramid (each
//!   level 1/√2 of the previous) of the luma reduced to a longest side of 512
//!   pixels, spread over a 4×4 grid on each level (the lower centre of the
//!   frame, where a body usually is and what a nudify bot replaces, gets a
//!   corner every other round only), each with its position and level and a
//!   256-bit BRIEF descriptor of its smoothed 31×31 patch — a cell with no corner at the usual
//!   Harris threshold (400: soft cloud, sky, a plain wall) offers its strongest one down to 12, so
//!   a crop that keeps only such a region still finds corners on both sides (from 2026-12-06;
//!   `bench/RESULTS.md`, "Corners in low texture"), and
//! * the longest side of the image (format version 3; [`Signature::source_side`]): a small
//!   protected image needs a higher score (rule 2 below), and
//! * its brightness in **12×12 cells** of the working image, each in 4 bits relative to the
//!   mean and spread of all cells (format version 4, 78 bytes; [`Grid`]): what rule 4 compares.
//!
//! A query's [`QueryFeatures`] are the 8 dihedral PDQ hashes, its top band's hash as it is and
//! mirrored left to right (and the same of the picture inside its uniform borders, when it has
//! any: [`content_box`]), a denser set of keypoints on 9 levels a third of an octave apart (up to
//! 2 per 32×32 cell of each level, 1 in a cell without texture, by the same two thresholds;
//! format version 4), and the same keypoints
//! as they are in the query mirrored left to right (positions mirrored, descriptors from the tests
//! mirrored; format version 3), and its brightness in cells of 16 working pixels (at most
//! 32×32, grey levels; format version 6; [`Grid`]), compared while it is matched and never
//! kept. The finer steps of the query's pyramid put one of its levels within
//! 12 % of the scale of every protected level whatever the copy's enlargement ([`QUERY_LEVELS`]).
//!
//! # Match rule
//!
//! A query matches a protected image when **any** of these holds:
//!
//! 1. some dihedral PDQ hash of the query is within [`Params::pdq_radius`] (31)
//!    of the protected PDQ hash, **or**
//! 2. a set of correspondences consistent with one similarity transform
//!    (scale within 1/3.5–3.5, rotation ≤ 0.2 rad, each inlier within 8 px at
//!    512, on pyramid levels agreeing with the scale, distinct keypoints on
//!    both sides, stored positions ≥ 10 px apart) has at least
//!    [`Params::min_inliers`] (3) members and a **score**
//!    Σ (24 − descriptor distance) of at least [`Params::min_score`] (41; when the query or the
//!    protected image is under [`Params::small_side`] (200 px) on its longest side,
//!    [`Params::small_min_score`], 55; 33 and 50 before the corners of cells without texture
//!    came in, on 2026-12-06).
//!    Hypotheses are made from every pair of correspondences (the 64 closest
//!    per image); the best-scoring one counts. A *correspondence* is a
//!    (query keypoint, stored keypoint) pair whose descriptors agree exactly on
//!    the bits of at least one of [`Params::lsh_tables`] (24) fixed bit subsets
//!    ([`Params::lsh_bits`] = 26 bits each) **and** are within
//!    [`Params::max_hamming`] (23) bits, and the key they agree on is not
//!    stopped ([`Params::stop_keys`]: by default the keys of flat and pure-ramp
//!    patches and their neighbours up to 2 bits away). The key condition is part of the
//!    rule, which makes the bucketed index exact with respect to it:
//!    [`DeriveIndex::search`] returns the same set as [`brute_force_search`]
//!    (a property test checks this). For a pair at distance 23 the key
//!    condition holds with probability about 0.85, at 15 about 0.99 (differing bits placed
//!    at random; a far pair adds little to the score: 1 point at 23, 9 at 15). Until
//!    2026-12-06 correspondences reached 31 bits and the score was Σ (32 − distance) ≥ 72
//!    (88 for small images); without the pairs at 24–31 bits the threshold that keeps
//!    different photos apart sits lower against close agreements, which finds more crops
//!    (`bench/RESULTS.md`, "Close agreements only"). The query's mirrored
//!    keypoints are tried the same way, on their own ([`Params::mirrored`]): a copy that was
//!    mirrored and then cropped or captioned, which no dihedral PDQ hash catches; **or**
//! 3. the query's top-band hash (or its trimmed band's, [`Params::band_trimmed`]), as it is or
//!    mirrored, is within [`Params::band_radius`] (31)
//!    of the protected top-band hash, and both bands have a PDQ quality of at least
//!    [`Params::band_min_quality`] (10), **or**
//! 4. fewer corners agree than rule 2 needs — at least [`Params::dense_min_inliers`] (2) with a
//!    score of at least [`Params::dense_min_score`] (20) — and the protected image's grid,
//!    carried through their best hypothesis's transform, agrees with the query's grid where it
//!    lands: at least [`Params::dense_min_cells`] (24) cells inside the query, a Pearson
//!    correlation of the cells of at least [`Params::dense_min_r`] (0.95; for a small image
//!    0.98, [`Params::dense_small_min_r`], or 0.97, [`Params::dense_small_strong_r`], when the
//!    score reaches [`Params::dense_small_strong_score`], 30) and of the differences between horizontal
//!    neighbours of at least [`Params::dense_min_r_across`] (0.5, as
//!    [`Params::dense_small_min_r_across`]). A crop that keeps a corner of
//!    the frame — the sky of a landscape — holds few of the 50 stored corners; the few that agree
//!    say where the copy lies in the original, and the grid checks that it looks like the
//!    original there (from 2026-12-07; `bench/RESULTS.md`, "Rule 4").
//!
//! Crops, pads, borders, captions and screenshot frames change where the photo
//! sits in the frame and its scale, which a similarity transform absorbs;
//! replacing the body area leaves the keypoints of the face, hair and
//! background, which still agree on one transform, and when too few of those are left (half
//! the image replaced, or more) the top band still matches. The score weighs close
//! descriptor agreement, which unrelated images rarely reach on several
//! geometrically consistent points (figures in `bench/RESULTS.md`).
//!
//! No I/O: callers decode images (see `consentry-media`) and pass pixels.

#![warn(missing_docs)]

mod codec;
mod features;
mod gray;
// The index (and its dependencies) is left out of the protect page's WebAssembly build, which
// compiles this crate's extraction with Debian's rustc 1.63 (crates/consentry-server/build.rs).
mod grid;
#[cfg(not(target_arch = "wasm32"))]
mod index;
#[cfg(test)]
mod reference;
#[doc(hidden)]
pub mod synth;
mod verify;

pub use grid::{Grid, GRID_LEVELS, QUERY_CELL, STORED_CELLS};

pub use codec::{DecodeError, MAX_SIGNATURE_BYTES, SIGNATURE_VERSION};
#[cfg(not(target_arch = "wasm32"))]
pub use index::{
    brute_force_search, inlier_distances, inlier_transform, learnt_layout, match_pair, write_common_keys,
    DeriveIndex, Hit,
};

use consentry_pdq::{Dihedral, Hash256, ImageRef, ImageSizeError, PdqDihedral, PdqHash, PixelFormat};
use features::{brief_pairs, extract, Detection, Scratch, Selection};

/// Tuning aid: every distinct descriptor of a pure intensity ramp and of a flat patch (see
/// `features::ramp_descriptors`).
#[doc(hidden)]
#[cfg(not(target_arch = "wasm32"))]
pub fn ramp_descriptors() -> Vec<[u64; 4]> {
    RAMPS.clone()
}

#[cfg(not(target_arch = "wasm32"))]
static RAMPS: std::sync::LazyLock<Vec<[u64; 4]>> =
    std::sync::LazyLock::new(|| features::ramp_descriptors(&brief_pairs()));

/// Longest side of the luma working image.
pub const WORK_SIDE: usize = 512;
/// Pyramid levels of a protected signature (each 1/√2 of the previous).
pub const LEVELS: usize = 4;
/// Pyramid levels of a query, a third of an octave apart (each 2^(-1/3) of the previous), down
/// to 2^(-8/3) of the working image: further than the protected levels go, so that a query that
/// is a crop (the photo enlarged) still finds the coarse protected corners; and finer steps than
/// the protected pyramid's, so that whatever the enlargement, some query level is within 2^(1/6)
/// (12 %) of the scale of each protected level. With half-octave steps a crop of 20 % on all
/// sides (enlarged 1.67×, nearly midway between two levels) lost most of its corners' descriptors.
pub const QUERY_LEVELS: usize = 9;
/// Query pyramid levels to an octave (format 4 of query features; formats 1–3 had 2, the
/// protected pyramid's step).
pub const QUERY_LEVELS_PER_OCTAVE: u8 = 3;
/// Pyramid levels of the query features of formats 1–3 (half an octave apart).
pub const HALF_OCTAVE_QUERY_LEVELS: usize = 6;
pub(crate) const PROTECTED_PYRAMID: features::Pyramid = features::Pyramid { count: LEVELS, per_octave: 2 };
pub(crate) const QUERY_PYRAMID: features::Pyramid =
    features::Pyramid { count: QUERY_LEVELS, per_octave: QUERY_LEVELS_PER_OCTAVE };
pub(crate) const HALF_OCTAVE_QUERY_PYRAMID: features::Pyramid =
    features::Pyramid { count: HALF_OCTAVE_QUERY_LEVELS, per_octave: 2 };
/// Keypoints kept per level in a protected signature (50 in all).
pub const PROTECTED_QUOTA: [usize; 4] = [14, 13, 12, 11];

/// A keypoint: position in the level-0 working image (longest side
/// [`WORK_SIDE`]) in eighths of a pixel, pyramid level, BRIEF descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Keypoint {
    /// x × 8.
    pub x: u16,
    /// y × 8.
    pub y: u16,
    /// Pyramid level: 0..[`LEVELS`] in a signature, half an octave apart; in query features
    /// 0..[`QUERY_LEVELS`], [`QueryFeatures::levels_per_octave`] to an octave.
    pub level: u8,
    /// 256-bit descriptor.
    pub desc: [u64; 4],
}

/// What is stored for a protected image (see the crate docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// Global PDQ hash of the image as given.
    pub pdq: Hash256,
    /// PDQ quality (0–100).
    pub quality: u8,
    /// Local keypoints (at most 255).
    pub keypoints: Vec<Keypoint>,
    /// PDQ hash and quality of the top band (the top [`BAND_FRACTION`] of the rows: face, hair,
    /// the background above the shoulders). `None` in signatures of format version 1, which
    /// had none.
    pub band: Option<PdqHash>,
    /// Longest side, in pixels, of the protected image (format version 3); 0 when not known
    /// (signatures of versions 1 and 2). A protected image smaller than [`Params::small_side`]
    /// needs [`Params::small_min_score`] to be matched by rule 2.
    pub source_side: u32,
    /// The image's brightness in 12×12 cells (format version 4, [`Grid`]), rule 4's evidence;
    /// `None` in signatures of versions 1–3, and for a flat or tiny image.
    pub grid: Option<Grid>,
}

/// The query's top-band hashes ([`Signature::band`] of the query as it is and mirrored left to
/// right, from one DCT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BandQuery {
    /// The band as it is, then mirrored left to right.
    pub hashes: [Hash256; 2],
    /// PDQ quality of the band.
    pub quality: u8,
}

/// What a query is matched with (not stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryFeatures {
    /// The 8 dihedral PDQ hashes of the query.
    pub pdq: [Hash256; 8],
    /// PDQ quality.
    pub quality: u8,
    /// Local keypoints (at most 32,767).
    pub keypoints: Vec<Keypoint>,
    /// The same keypoints as they are in the query mirrored left to right (position and
    /// descriptor), so that a mirrored copy of a protected photo is found by rule 2
    /// ([`Params::mirrored`]); empty in query features of format versions 1 and 2, or
    /// when they are not wanted.
    pub mirrored: Vec<Keypoint>,
    /// Top-band hashes (`None` in query features of format version 1).
    pub band: Option<BandQuery>,
    /// Top-band hashes of the query without its uniform borders ([`content_box`]), when it has
    /// any: a copy padded with a solid border still shows the original's top band there.
    pub trimmed_band: Option<BandQuery>,
    /// Pyramid levels to an octave of the keypoints' [`Keypoint::level`]:
    /// [`QUERY_LEVELS_PER_OCTAVE`] (3) as [`Extractor::query`] computes them (format version 4),
    /// 2 in query features of format versions 1–3 (the protected pyramid's step). The match rule
    /// compares levels in octaves, so both are matched the same way.
    pub levels_per_octave: u8,
    /// Longest side, in pixels, of the image the features were computed from (format version 5);
    /// 0 when not known (features of versions 1–4). A query smaller than
    /// [`Params::small_side`] needs [`Params::small_min_score`] to match by rule 2.
    pub source_side: u32,
    /// The query's brightness in cells of 16 working pixels (format version 6, [`Grid`]), for
    /// rule 4; `None` in features of versions 1–5, and for a flat or tiny image.
    pub grid: Option<Grid>,
}

impl QueryFeatures {
    /// The same features in the newest format older than [`format_version`](Self::format_version),
    /// for a reader that refuses this one: without the image's size (5 → 4), in half octaves
    /// (4 → 3, or 2 without mirrored keypoints), without the mirrored keypoints (3 → 2); `None`
    /// from formats 1 and 2.
    pub fn in_older_format(&self) -> Option<QueryFeatures> {
        match self.format_version() {
            6 => Some(QueryFeatures { grid: None, ..self.clone() }),
            5 => Some(QueryFeatures { source_side: 0, ..self.clone() }),
            4 => Some(self.in_half_octaves()),
            3 => Some(QueryFeatures { mirrored: Vec::new(), ..self.clone() }),
            _ => None,
        }
    }

    /// The same features for a reader of format 3 (a server older than this crate): keypoint
    /// levels rounded to the nearest half octave, an error of at most a sixth of an octave in a
    /// check that allows 0.65 ([`Params::level_tolerance`]), and without the image's size
    /// ([`QueryFeatures::source_side`] 0: formats 2 and 3 have no field for it). Features already in
    /// half octaves are returned unchanged.
    pub fn in_half_octaves(&self) -> QueryFeatures {
        if self.levels_per_octave == 2 {
            return self.clone();
        }
        let per = u32::from(self.levels_per_octave);
        let half = |ks: &[Keypoint]| -> Vec<Keypoint> {
            ks.iter()
                .map(|k| Keypoint {
                    // round(2 l / per), within 0..HALF_OCTAVE_QUERY_LEVELS
                    level: ((2 * u32::from(k.level) + per / 2) / per).min(HALF_OCTAVE_QUERY_LEVELS as u32 - 1)
                        as u8,
                    ..*k
                })
                .collect()
        };
        QueryFeatures {
            keypoints: half(&self.keypoints),
            mirrored: half(&self.mirrored),
            levels_per_octave: 2,
            source_side: 0,
            grid: None,
            ..self.clone()
        }
    }
}

/// Share of the image height, from the top, that the band hash covers.
pub const BAND_FRACTION: f32 = 0.2;

/// Rows of the top band of an image `height` rows high (at least 1 of a non-empty image).
pub fn band_rows(height: u32) -> u32 {
    if height == 0 {
        return 0;
    }
    ((height as f32 * BAND_FRACTION).round() as u32).clamp(1, height)
}

/// Parameters of the match rule (not of the signature).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Global PDQ match distance.
    pub pdq_radius: u32,
    /// Largest descriptor distance of a correspondence.
    pub max_hamming: u32,
    /// Number of bit subsets (index tables).
    pub lsh_tables: usize,
    /// Bits per subset (≤ 32).
    pub lsh_bits: usize,
    /// Geometrically consistent correspondences needed.
    pub min_inliers: usize,
    /// Score needed: Σ over the inliers of (max_hamming + 1 − descriptor distance).
    pub min_score: u32,
    /// Inlier tolerance, pixels of the 512-px working image.
    pub inlier_px: f32,
    /// Largest rotation, radians.
    pub max_rotation: f32,
    /// Largest scale change either way.
    pub max_scale: f32,
    /// Smallest distance (working pixels) between the two points of a hypothesis.
    pub min_separation: f32,
    /// Largest disagreement (half-octaves) between levels and the scale.
    pub level_tolerance: f32,
    /// Inliers closer than this (working pixels, protected image) to an
    /// inlier already counted do not count: a textured patch or one corner
    /// seen on several levels is one piece of evidence.
    pub min_inlier_gap: f32,
    /// At most this many correspondences (smallest distances) per protected image are verified.
    pub max_corrs: usize,
    /// Smallest spread of the inliers (working pixels, protected image): the standard deviation
    /// of their positions along the direction in which they spread least. Corners strung along
    /// one line (a horizon, the edge of a smooth sky) look alike in many unrelated photos; the
    /// corners of one real scene spread in two directions. 0 turns the check off.
    pub min_spread: f32,
    /// Keys through which no correspondence is made (see [`StopKeys`]).
    pub stop_keys: StopKeys,
    /// A query or a protected image whose longest side is under this many pixels
    /// ([`QueryFeatures::source_side`], [`Signature::source_side`]) needs
    /// [`small_min_score`](Self::small_min_score) instead of [`min_score`](Self::min_score) for
    /// rule 2. Such an image is enlarged 2.5× or more into the 512-px working image, so each of
    /// its corners samples few real pixels, and different small photos laid out alike (aligned
    /// face crops of one person) agree by chance far more often than photos do — also when the
    /// copy of one was enlarged, padded or framed to over this size. 0 turns the stricter
    /// threshold off.
    pub small_side: u32,
    /// Whether [`small_side`](Self::small_side) applies to the protected image too (from
    /// 2026-12-06), not only to the query.
    pub small_protected: bool,
    /// Score needed by rule 2 for a small query or protected image (see
    /// [`small_side`](Self::small_side)); never less than [`min_score`](Self::min_score).
    pub small_min_score: u32,
    /// Top-band match distance (rule 3 of the crate docs): the query's band hash, as it is or mirrored, within
    /// this distance of the stored band hash. `None` turns rule 3 off.
    pub band_radius: Option<u32>,
    /// Smallest PDQ quality of both bands for rule 3. A featureless band (a plain sky, a white
    /// backdrop) has no hash of its own: a flat one hashes alike in unrelated photos, a noisy one
    /// at random. Smooth gradients with noise and JPEG artefacts measure quality 0–6
    /// (`bench/derive/sky.py`); 10 was chosen on the tuning split (`bench/RESULTS.md`).
    pub band_min_quality: u8,
    /// Rule 3 also compares the query's band without its uniform borders
    /// ([`QueryFeatures::trimmed_band`]).
    pub band_trimmed: bool,
    /// Rule 2 also tries the query mirrored left to right ([`QueryFeatures::mirrored`]): a
    /// copy that was mirrored and then cropped, padded or captioned, which the dihedral PDQ
    /// hashes no longer catch. Each of the two is verified on its own.
    pub mirrored: bool,
    /// Rule 4: the score the best hypothesis needs (with at least
    /// [`dense_min_inliers`](Self::dense_min_inliers) inliers) when the grids agree under its
    /// transform ([`Grid`]); `None` turns rule 4 off. Never more than rule 2's threshold matters:
    /// what rule 2 passes, it passes.
    pub dense_min_score: Option<u32>,
    /// Rule 4: inliers its hypothesis needs.
    pub dense_min_inliers: usize,
    /// Rule 4: the correlation the stored grid's cells need with the query's where they land.
    pub dense_min_r: f32,
    /// Rule 4: the correlation needed when the query or the protected image is small
    /// ([`small_side`](Self::small_side)): aligned face crops of one person are laid out alike.
    pub dense_small_min_r: f32,
    /// Rule 4: stored cells that must land inside the query.
    pub dense_min_cells: usize,
    /// Rule 4: the correlation needed of the differences between horizontal neighbours (the
    /// layout within rows: two landscapes with a bright sky over dark land correlate highly
    /// cell by cell, but not across).
    pub dense_min_r_across: f32,
    /// Rule 4: the same when the query or the protected image is small.
    pub dense_small_min_r_across: f32,
    /// Rule 4, a small query or protected image: a hypothesis scoring at least this needs only
    /// [`dense_small_strong_r`](Self::dense_small_strong_r) of the grids' correlation (more
    /// corners agreeing, less asked of the grid).
    pub dense_small_strong_score: u32,
    /// Rule 4: the correlation a small image's grid needs under a hypothesis scoring at least
    /// [`dense_small_strong_score`](Self::dense_small_strong_score) (never more than
    /// [`dense_small_min_r`](Self::dense_small_min_r)).
    pub dense_small_strong_r: f32,
}

/// Index keys the rule leaves out: a correspondence must agree on a key that is not stopped.
///
/// The stopped keys are those of the descriptors a featureless patch has — a flat patch and a
/// pure intensity ramp in any direction ([`ramp_descriptors`]) — fixed by the descriptor's test
/// pairs alone, not learnt from data. Smooth skies, walls and gradients give nearly these
/// descriptors in every photo: their buckets are the fullest in the index (most of a query's scan)
/// and they make most chance agreements between unrelated photos.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopKeys {
    /// No key is stopped.
    None,
    /// The keys of the flat and ramp descriptors.
    Ramp,
    /// Those and every key one bit away from one of them.
    RampNeighbours,
    /// Those and every key one or two bits away from one of them.
    RampNeighbours2,
    /// The ramp keys and the `n` (at most [`COMMON_KEYS_PER_TABLE`]) most common keys of each
    /// table in a reference set of photos (`data/common-keys-v1.bin`, made by `consentry-eval`'s
    /// `derive_stoplist` example from the even-numbered photos of the development corpus). The
    /// learnt part applies to the key layout it was learnt for, 16 tables of 18 bits (the
    /// default until 2026-12-05, [`learnt_layout`]); under other layouts it stops what
    /// [`StopKeys::RampNeighbours2`] stops.
    Common(u16),
}

impl std::str::FromStr for StopKeys {
    type Err = String;

    /// `none`, `ramp`, `ramp1` (with the 1-bit neighbours), `ramp2` (with the neighbours up to
    /// 2 bits away), or a count of learnt common keys per
    /// table (with the ramp keys), at most [`COMMON_KEYS_PER_TABLE`].
    fn from_str(v: &str) -> Result<StopKeys, String> {
        Ok(match v {
            "none" => StopKeys::None,
            "ramp" => StopKeys::Ramp,
            "ramp1" => StopKeys::RampNeighbours,
            "ramp2" => StopKeys::RampNeighbours2,
            n => StopKeys::Common(
                n.parse()
                    .ok()
                    .filter(|&n: &u16| usize::from(n) <= COMMON_KEYS_PER_TABLE)
                    .ok_or_else(|| {
                        format!("`{v}`: expected none, ramp, ramp1, ramp2 or a count of common keys up to {COMMON_KEYS_PER_TABLE}")
                    })?,
            ),
        })
    }
}

/// Keys per table in the learnt stop-list file ([`StopKeys::Common`]).
pub const COMMON_KEYS_PER_TABLE: usize = 1024;

impl Params {
    /// Whether the query's or (with [`small_protected`](Self::small_protected)) the protected
    /// image's known longest side is under [`small_side`](Self::small_side).
    pub fn is_small(&self, sig: &Signature, q: &QueryFeatures) -> bool {
        let small = |side: u32| side > 0 && side < self.small_side;
        small(q.source_side) || (self.small_protected && small(sig.source_side))
    }

    /// The score rule 2 needs to match `q` with `sig`: [`small_min_score`](Self::small_min_score)
    /// when the query's [`source_side`](QueryFeatures::source_side) or (with
    /// [`small_protected`](Self::small_protected)) the protected image's
    /// ([`Signature::source_side`]) is known and under [`small_side`](Self::small_side), else
    /// [`min_score`](Self::min_score).
    pub fn min_score_for(&self, sig: &Signature, q: &QueryFeatures) -> u32 {
        if self.is_small(sig, q) {
            self.min_score.max(self.small_min_score)
        } else {
            self.min_score
        }
    }
}

impl Default for Params {
    fn default() -> Self {
        Params {
            pdq_radius: consentry_pdq::DEFAULT_MATCH_DISTANCE,
            max_hamming: 23,
            lsh_tables: 24,
            lsh_bits: 26,
            min_inliers: 3,
            min_score: 41,
            inlier_px: 8.0,
            max_rotation: 0.2,
            max_scale: 3.5,
            min_separation: 16.0,
            level_tolerance: 1.3,
            max_corrs: 64,
            min_inlier_gap: 10.0,
            min_spread: 0.0,
            stop_keys: StopKeys::RampNeighbours2,
            small_side: 200,
            small_protected: true,
            small_min_score: 55,
            band_radius: Some(consentry_pdq::DEFAULT_MATCH_DISTANCE),
            band_min_quality: 10,
            band_trimmed: true,
            mirrored: true,
            dense_min_score: Some(20),
            dense_min_inliers: 2,
            dense_min_r: 0.95,
            dense_small_min_r: 0.98,
            dense_min_cells: 24,
            dense_min_r_across: 0.5,
            dense_small_min_r_across: 0.5,
            dense_small_strong_score: 30,
            dense_small_strong_r: 0.97,
        }
    }
}

/// Pixels handed to the [`Extractor`]: `height` rows `stride` bytes apart.
#[derive(Debug, Clone, Copy)]
pub struct Pixels<'a> {
    width: u32,
    height: u32,
    stride: usize,
    format: PixelFormat,
    data: &'a [u8],
}

impl<'a> Pixels<'a> {
    /// Tightly packed rows.
    pub fn new(width: u32, height: u32, format: PixelFormat, data: &'a [u8]) -> Result<Self, ImageSizeError> {
        Self::with_stride(width, height, width as usize * format.channels(), format, data)
    }

    /// Rows `stride` bytes apart.
    pub fn with_stride(
        width: u32,
        height: u32,
        stride: usize,
        format: PixelFormat,
        data: &'a [u8],
    ) -> Result<Self, ImageSizeError> {
        ImageRef::with_stride(width, height, stride, format, data)?;
        Ok(Pixels { width, height, stride, format, data })
    }

    fn image_ref(&self) -> ImageRef<'a> {
        ImageRef::with_stride(self.width, self.height, self.stride, self.format, self.data)
            .expect("checked in new")
    }

    /// The top band of the `w` × `h` rectangle at (`x`, `y`) (inside the image; no copy).
    fn band_of(&self, x: u32, y: u32, w: u32, h: u32) -> ImageRef<'a> {
        let start = y as usize * self.stride + x as usize * self.format.channels();
        ImageRef::with_stride(w, band_rows(h), self.stride, self.format, &self.data[start..])
            .expect("a rectangle inside an image checked in new")
    }

    /// Luma (0–255) of pixel (`x`, `y`).
    fn luma(&self, x: usize, y: usize) -> i32 {
        let c = self.format.channels();
        let p = &self.data[y * self.stride + x * c..];
        match self.format {
            PixelFormat::Luma8 | PixelFormat::LumaA8 => i32::from(p[0]),
            PixelFormat::Rgb8 | PixelFormat::Rgba8 => {
                (299 * i32::from(p[0]) + 587 * i32::from(p[1]) + 114 * i32::from(p[2])) / 1000
            }
        }
    }
}

/// The picture inside uniform borders (a solid frame or padding): from each side, lines (rows or
/// columns) whose luma varies by at most 24 and whose mean stays within 12 of the first such
/// line's are cut, at most 45 % of the side each. Returns (x, y, width, height); the whole image
/// when nothing is cut or less than 16 × 16 pixels would be left. It reads only the lines it
/// cuts and the first line it keeps on each side.
pub fn content_box(px: &Pixels<'_>) -> (u32, u32, u32, u32) {
    let (w, h) = (px.width as usize, px.height as usize);
    if w == 0 || h == 0 {
        return (0, 0, px.width, px.height);
    }
    // lines of `n` pixels: pixel i of line k is at(k, i)
    let cut = |lines: usize, n: usize, at: &dyn Fn(usize, usize) -> (usize, usize)| -> usize {
        let mut first_mean: Option<i64> = None;
        let mut k = 0;
        while k < lines * 45 / 100 {
            let (mut lo, mut hi, mut sum) = (i32::MAX, i32::MIN, 0i64);
            for i in 0..n {
                let (x, y) = at(k, i);
                let v = px.luma(x, y);
                lo = lo.min(v);
                hi = hi.max(v);
                sum += i64::from(v);
                if hi - lo > 24 {
                    break;
                }
            }
            let mean = sum / n as i64;
            let drifted = match first_mean {
                Some(m) => (m - mean).abs() > 12,
                None => false,
            };
            if hi - lo > 24 || drifted {
                break;
            }
            first_mean.get_or_insert(mean);
            k += 1;
        }
        k
    };
    let top = cut(h, w, &|k, i| (i, k));
    let bottom = cut(h, w, &|k, i| (i, h - 1 - k));
    let left = cut(w, h, &|k, i| (k, i));
    let right = cut(w, h, &|k, i| (w - 1 - k, i));
    let (nw, nh) = (w - left - right, h.saturating_sub(top + bottom));
    if nw < 16 || nh < 16 {
        return (0, 0, px.width, px.height);
    }
    (left as u32, top as u32, nw as u32, nh as u32)
}

/// Computes signatures and query features, reusing buffers (one per thread).
#[derive(Debug)]
pub struct Extractor {
    pairs: Vec<[i8; 4]>,
    hasher: consentry_pdq::Hasher,
    detection: Detection,
    scratch: Scratch,
}

impl Default for Extractor {
    fn default() -> Self {
        Extractor::new()
    }
}

/// Images smaller than this on a side get no keypoints (PDQ only).
const MIN_SIDE: u32 = 16;

/// Keypoints a query keeps (as many mirrored): the serialized count is a u16, and a
/// similarity transform's correspondences index them with one.
const MAX_QUERY_KEYPOINTS: usize = u16::MAX as usize / 2;

fn keypoint(c: features::Corner) -> Keypoint {
    Keypoint {
        x: (c.x.max(0.0) * 8.0).round() as u16,
        y: (c.y.max(0.0) * 8.0).round() as u16,
        level: c.level,
        desc: c.desc,
    }
}

impl Extractor {
    /// A new extractor.
    pub fn new() -> Self {
        Extractor {
            pairs: brief_pairs(),
            hasher: consentry_pdq::Hasher::new(),
            detection: Detection::default(),
            scratch: Scratch::default(),
        }
    }

    /// Experimental, off by default (0): drop corners whose descriptor is
    /// within `limit` bits of the descriptor of a pure intensity ramp with
    /// the same gradient — smooth skies and gradients, whose descriptors are
    /// alike in every photo and cause most false matches between different
    /// photos. Both sides (signatures and queries) must use the same value.
    /// Measured with `consentry-eval`'s `derive_tune` (see
    /// `bench/RESULTS.md`), not yet in a full harness run.
    pub fn with_plane_limit(mut self, limit: u32) -> Self {
        self.detection.plane_limit = limit;
        self
    }

    /// For comparisons: the Harris response down to which a cell with no corner at the usual
    /// threshold (400) still gets its strongest one — soft cloud, sky, a plain wall. The default
    /// is 12 (from 2026-12-06); 400 or more gives the extraction before, where such cells had no
    /// corner. Signatures and queries should use the same value.
    #[doc(hidden)]
    pub fn with_low_response(mut self, low: f32) -> Self {
        self.detection.low_response = low;
        self
    }

    /// The whole image's and its top band's dihedral PDQ hashes; and, when the image is large
    /// enough for keypoints, the working luma from the luminance PDQ computes where that is the
    /// same ([`features::Scratch::begin_shared_luma`]): whether it did.
    fn hashes_and_luma(&mut self, px: &Pixels<'_>) -> (PdqDihedral, PdqDihedral, bool) {
        let (img, top) = (px.image_ref(), band_rows(px.height));
        let sc = &mut self.scratch;
        if px.width < MIN_SIDE
            || px.height < MIN_SIDE
            || !sc.begin_shared_luma(px.width as usize, px.height as usize, px.format)
        {
            let (d, b) = self.hasher.hash_dihedral_with_top(&img, top);
            return (d, b, false);
        }
        let (d, b) = self
            .hasher
            .hash_dihedral_with_top_and_luma(&img, top, &mut |y0, n, block| sc.push_luma(y0, n, block));
        (d, b, sc.shared_luma_complete())
    }

    /// The corners of `px` (`luma_ready`: its working luma is in the scratch already,
    /// [`Extractor::hashes_and_luma`]), and with `mirrored` the same corners as they are in the
    /// image mirrored left to right (positions and descriptors).
    fn corners(
        &mut self,
        px: &Pixels<'_>,
        pyramid: features::Pyramid,
        sel: Selection,
        luma_ready: bool,
        mirrored: Option<&mut Vec<Keypoint>>,
    ) -> Vec<Keypoint> {
        if px.width < MIN_SIDE || px.height < MIN_SIDE {
            return Vec::new();
        }
        let mut m = Vec::new();
        let want_mirror = mirrored.is_some();
        let c = extract(
            px,
            pyramid,
            sel,
            &self.pairs,
            self.detection,
            &mut self.scratch,
            luma_ready,
            if want_mirror { Some(&mut m) } else { None },
        );
        if let Some(out) = mirrored {
            *out = m.into_iter().map(keypoint).collect();
        }
        c.into_iter().map(keypoint).collect()
    }

    /// The signature stored for a protected image.
    pub fn signature(&mut self, px: &Pixels<'_>) -> Signature {
        let (h, band, luma_ready) = self.hashes_and_luma(px);
        let (h, band) = (h.original(), band.original());
        let sel = Selection::Sparse { quota: PROTECTED_QUOTA, grid: 4 };
        let mut keypoints = self.corners(px, PROTECTED_PYRAMID, sel, luma_ready, None);
        keypoints.truncate(255);
        Signature {
            pdq: h.hash,
            quality: h.quality,
            keypoints,
            band: Some(band),
            source_side: px.width.max(px.height),
            grid: if px.width >= MIN_SIDE && px.height >= MIN_SIDE {
                Grid::stored(self.scratch.luma())
            } else {
                None
            },
        }
    }

    /// The features of a query, with its mirrored keypoints ([`QueryFeatures::mirrored`]).
    pub fn query(&mut self, px: &Pixels<'_>) -> QueryFeatures {
        self.query_with(px, true)
    }

    /// The features of a query; the mirrored keypoints only when `with_mirrored` (a matcher whose
    /// rule leaves them out, [`Params::mirrored`], need not compute them).
    pub fn query_with(&mut self, px: &Pixels<'_>, with_mirrored: bool) -> QueryFeatures {
        self.query_on(px, with_mirrored, QUERY_PYRAMID)
    }

    /// The features of a query with the half-octave pyramid of format versions 1–3 (6 levels):
    /// what an older version of this crate computed, for comparisons.
    #[doc(hidden)]
    pub fn query_in_half_octaves(&mut self, px: &Pixels<'_>, with_mirrored: bool) -> QueryFeatures {
        self.query_on(px, with_mirrored, HALF_OCTAVE_QUERY_PYRAMID)
    }

    fn query_on(
        &mut self,
        px: &Pixels<'_>,
        with_mirrored: bool,
        pyramid: features::Pyramid,
    ) -> QueryFeatures {
        let (d, b, luma_ready) = self.hashes_and_luma(px);
        let mut mirrored = Vec::new();
        let mut keypoints = self.corners(
            px,
            pyramid,
            Selection::Dense { cell: 32, per_cell: 2 },
            luma_ready,
            with_mirrored.then_some(&mut mirrored),
        );
        keypoints.truncate(MAX_QUERY_KEYPOINTS);
        mirrored.truncate(MAX_QUERY_KEYPOINTS);
        let band_query = |b: PdqDihedral| BandQuery {
            hashes: [b.get(Dihedral::Original), b.get(Dihedral::FlipY)],
            quality: b.quality,
        };
        let band = band_query(b);
        let (x, y, w, h) = content_box(px);
        let trimmed_band = if (w, h) == (px.width, px.height) {
            None
        } else {
            Some(band_query(self.hasher.hash_dihedral(&px.band_of(x, y, w, h))))
        };
        QueryFeatures {
            pdq: d.hashes,
            quality: d.quality,
            keypoints,
            mirrored,
            band: Some(band),
            trimmed_band,
            levels_per_octave: pyramid.per_octave,
            source_side: px.width.max(px.height),
            grid: if px.width >= MIN_SIDE && px.height >= MIN_SIDE {
                Grid::query(self.scratch.luma())
            } else {
                None
            },
        }
    }
}

#[cfg(test)]
mod tests;
