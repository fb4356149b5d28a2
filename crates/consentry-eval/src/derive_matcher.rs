//! The derivative matcher (`consentry-derive`) under the harness: global PDQ
//! with dihedral variants, plus local keypoints with geometric verification.

use crate::matcher::{ImageId, Matcher, Protected, Query};
use consentry_derive::{DeriveIndex, Extractor, Params, Pixels, QueryFeatures, StopKeys};
use consentry_pdq::PixelFormat;
use image::RgbImage;
use rayon::prelude::*;
use std::cell::RefCell;

/// How an extractor is set up: the plane limit, and the floor of cells without texture (`None`:
/// the default).
type Setup = (u32, Option<u32>);

/// What identifies a query's features for sharing: its bytes' address and length, the extractor's
/// setup, the half-octave query pyramid.
type SharedKey = (usize, usize, Setup, bool);

thread_local! {
    /// This thread's extractor and the setup it was made with.
    static EXTRACTOR: RefCell<(Setup, Extractor)> = RefCell::new(((0, None), Extractor::new()));
    /// Tuning only (`CONSENTRY_DERIVE_SHARE=1`): the last query's features,
    /// keyed by its bytes' address and length, so several rule variants in one
    /// run extract once (their ms then exclude extraction, except the first's).
    static LAST: RefCell<Option<(SharedKey, QueryFeatures)>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's extractor, made with `setup`.
fn with_extractor<T>(setup: Setup, f: impl FnOnce(&mut Extractor) -> T) -> T {
    EXTRACTOR.with(|e| {
        let mut e = e.borrow_mut();
        if e.0 != setup {
            let mut x = Extractor::new().with_plane_limit(setup.0);
            if let Some(low) = setup.1 {
                x = x.with_low_response(low as f32);
            }
            *e = (setup, x);
        }
        f(&mut e.1)
    })
}

/// `CONSENTRY_EVAL_EVIDENCE=1`: every derive hit is printed to stderr as
/// `evidence TAB query-key TAB matcher TAB protected-id TAB pdq-distance TAB band-distance TAB
/// inliers TAB score TAB mirrored`, the harness printing `query TAB query-key TAB id TAB source TAB
/// transform TAB donor` per query; the key is [`crate::rng::fnv1a_bytes`] of the query's bytes
/// (`bench/derive/evidence.py` joins them).
pub fn evidence() -> bool {
    static ON: std::sync::LazyLock<bool> =
        std::sync::LazyLock::new(|| std::env::var_os("CONSENTRY_EVAL_EVIDENCE").is_some_and(|v| v == "1"));
    *ON
}

fn share() -> bool {
    std::env::var_os("CONSENTRY_DERIVE_SHARE").is_some_and(|v| v == "1")
}

/// The extractor of the examples (`derive_tune`, `derive_cost`, `derive_scale`, `crop_diag`):
/// the default, or with `LOW_RESPONSE=N` in the environment, `Extractor::with_low_response(N)`
/// (`LOW_RESPONSE=400`: the extraction before 2026-12-06, no corner in cells without texture).
pub fn example_extractor() -> Extractor {
    match std::env::var("LOW_RESPONSE") {
        Ok(v) => Extractor::new().with_low_response(v.parse().expect("LOW_RESPONSE: a number")),
        Err(_) => Extractor::new(),
    }
}

/// An `RgbImage` as [`Pixels`] for the derive extractor.
pub fn pixels(img: &RgbImage) -> Pixels<'_> {
    Pixels::new(img.width(), img.height(), PixelFormat::Rgb8, img.as_raw()).expect("RgbImage is packed RGB")
}

/// `consentry-derive` with its index.
#[derive(Debug)]
pub struct DeriveMatcher {
    params: Params,
    /// `Extractor::with_plane_limit` (0: off, the default).
    plane: u32,
    /// `Extractor::with_low_response` (`low=400`: the extraction before 2026-12-06; `None`: the
    /// default).
    low: Option<u32>,
    index: DeriveIndex,
    bytes_per_image: usize,
    /// Query features with the half-octave pyramid of format 3 (`qpo=2`; for comparisons).
    half_octave_query: bool,
}

impl DeriveMatcher {
    /// Parse `s=64+k=3+t=24+b=24+h=31+px=8+gap=10+plane=40+spread=12+stop=ramp2` (score, inliers,
    /// key tables and bits, Hamming, inlier pixels, inlier gap, the extractor's plane limit, the
    /// inliers' smallest spread, the stopped keys: none, ramp, ramp1, ramp2 or a count of learnt
    /// common keys; `qpo=2`: query pyramid levels half an octave apart, as before format 4; `small=0`
    /// turns off, `small=N+smalls=S` sets, the higher score for queries and protected images under
    /// N px; `smallp=0` leaves protected images out of it; `low=400`: cells without texture get no
    /// corner, as before 2026-12-06; `dense=none` turns rule 4 off, `dense=S+densek=K+denser=R+densesr=R2+densec=C`
    /// sets its score, inliers, correlation, correlation for small images and cells inside,
    /// `densea`/`densesa` the correlation across rows (small images: `densesa`), `densess=S+densessr=R`
    /// the score from which a small image's grid needs only correlation R (`densessr=0.98`: the
    /// rule before 2026-12-08)) over the defaults.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut p = Params::default();
        let mut plane = 0;
        let mut low = None;
        let mut half_octave_query = false;
        for kv in spec.split(['+', ';']).filter(|s| !s.is_empty()) {
            let (k, v) =
                kv.split_once('=').ok_or_else(|| format!("derive option {kv}: expected name=value"))?;
            let bad = |e: String| format!("derive option {kv}: {e}");
            match k {
                "k" => p.min_inliers = v.parse().map_err(|e: std::num::ParseIntError| bad(e.to_string()))?,
                "s" => p.min_score = v.parse().map_err(|e: std::num::ParseIntError| bad(e.to_string()))?,
                "t" => p.lsh_tables = v.parse().map_err(|e: std::num::ParseIntError| bad(e.to_string()))?,
                "b" => p.lsh_bits = v.parse().map_err(|e: std::num::ParseIntError| bad(e.to_string()))?,
                "h" => p.max_hamming = v.parse().map_err(|e: std::num::ParseIntError| bad(e.to_string()))?,
                "px" => p.inlier_px = v.parse().map_err(|e: std::num::ParseFloatError| bad(e.to_string()))?,
                "gap" => {
                    p.min_inlier_gap = v.parse().map_err(|e: std::num::ParseFloatError| bad(e.to_string()))?
                }
                "plane" => plane = v.parse().map_err(|e: std::num::ParseIntError| bad(e.to_string()))?,
                "low" => low = Some(v.parse().map_err(|e: std::num::ParseIntError| bad(e.to_string()))?),
                "spread" => {
                    p.min_spread = v.parse().map_err(|e: std::num::ParseFloatError| bad(e.to_string()))?
                }
                "stop" => p.stop_keys = v.parse().map_err(bad)?,
                "band" => {
                    p.band_radius = match v {
                        "none" => None,
                        r => Some(r.parse().map_err(|e: std::num::ParseIntError| bad(e.to_string()))?),
                    }
                }
                "trim" => p.band_trimmed = v != "0",
                "qpo" => {
                    half_octave_query = match v {
                        "2" => true,
                        "3" => false,
                        _ => return Err(bad("query levels per octave: 2 or 3".into())),
                    }
                }
                "mirror" => p.mirrored = v != "0",
                "small" => p.small_side = v.parse().map_err(|e: std::num::ParseIntError| bad(e.to_string()))?,
                "smallp" => p.small_protected = v != "0",
                "smalls" => {
                    p.small_min_score = v.parse().map_err(|e: std::num::ParseIntError| bad(e.to_string()))?
                }
                "dense" => {
                    p.dense_min_score = match v {
                        "none" => None,
                        d => Some(d.parse().map_err(|e: std::num::ParseIntError| bad(e.to_string()))?),
                    }
                }
                "densek" => {
                    p.dense_min_inliers = v.parse().map_err(|e: std::num::ParseIntError| bad(e.to_string()))?
                }
                "denser" => p.dense_min_r = v.parse().map_err(|e: std::num::ParseFloatError| bad(e.to_string()))?,
                "densesr" => {
                    p.dense_small_min_r = v.parse().map_err(|e: std::num::ParseFloatError| bad(e.to_string()))?
                }
                "densea" => {
                    p.dense_min_r_across =
                        v.parse().map_err(|e: std::num::ParseFloatError| bad(e.to_string()))?
                }
                "densesa" => {
                    p.dense_small_min_r_across =
                        v.parse().map_err(|e: std::num::ParseFloatError| bad(e.to_string()))?
                }
                "densess" => {
                    p.dense_small_strong_score =
                        v.parse().map_err(|e: std::num::ParseIntError| bad(e.to_string()))?
                }
                "densessr" => {
                    p.dense_small_strong_r =
                        v.parse().map_err(|e: std::num::ParseFloatError| bad(e.to_string()))?
                }
                "densec" => {
                    p.dense_min_cells = v.parse().map_err(|e: std::num::ParseIntError| bad(e.to_string()))?
                }
                "bandq" => {
                    p.band_min_quality = v.parse().map_err(|e: std::num::ParseIntError| bad(e.to_string()))?
                }
                _ => {
                    return Err(format!(
                        "unknown derive option {k} (k, s, t, b, h, px, gap, plane, low, spread, stop, band, bandq, trim, mirror, qpo, small, smallp, smalls, dense, densek, denser, densesr, densess, densessr, densec, densea, densesa)"
                    ))
                }
            }
        }
        let mut m = DeriveMatcher::new(p);
        m.plane = plane;
        m.low = low;
        m.half_octave_query = half_octave_query;
        Ok(m)
    }

    /// With the given rule parameters.
    pub fn new(params: Params) -> Self {
        DeriveMatcher {
            params,
            plane: 0,
            low: None,
            index: DeriveIndex::new(params),
            bytes_per_image: 0,
            half_octave_query: false,
        }
    }
}

impl Default for DeriveMatcher {
    fn default() -> Self {
        DeriveMatcher::new(Params::default())
    }
}

impl Matcher for DeriveMatcher {
    fn name(&self) -> String {
        let d = Params::default();
        let mut s = format!("derive(s≥{}", self.params.min_score);
        if self.params.min_inliers != d.min_inliers {
            s += &format!(",k≥{}", self.params.min_inliers);
        }
        if self.params.max_hamming != d.max_hamming {
            s += &format!(",h≤{}", self.params.max_hamming);
        }
        if self.params.inlier_px != d.inlier_px {
            s += &format!(",px{}", self.params.inlier_px);
        }
        if self.params.min_inlier_gap != d.min_inlier_gap {
            s += &format!(",gap{}", self.params.min_inlier_gap);
        }
        if self.plane != 0 {
            s += &format!(",plane{}", self.plane);
        }
        if let Some(low) = self.low {
            s += &format!(",low{low}");
        }
        if (self.params.small_side, self.params.small_min_score) != (d.small_side, d.small_min_score) {
            s += &match self.params.small_side {
                0 => ",small off".to_string(),
                n => format!(",<{n}px s≥{}", self.params.small_min_score),
            };
        }
        if self.params.small_side != 0 && self.params.small_protected != d.small_protected {
            s += if self.params.small_protected { ",small protected" } else { ",small queries only" };
        }
        if self.params.min_spread != d.min_spread {
            s += &format!(",spread{}", self.params.min_spread);
        }
        if (self.params.lsh_tables, self.params.lsh_bits) != (d.lsh_tables, d.lsh_bits) {
            s += &format!(",keys {}×{}b", self.params.lsh_tables, self.params.lsh_bits);
        }
        if self.params.stop_keys != d.stop_keys {
            s += &match self.params.stop_keys {
                StopKeys::None => ",stop none".to_string(),
                StopKeys::Ramp => ",stop ramp".to_string(),
                StopKeys::RampNeighbours => ",stop ramp±1".to_string(),
                StopKeys::RampNeighbours2 => ",stop ramp±2".to_string(),
                StopKeys::Common(n) => format!(",stop {n}+ramp"),
            };
        }
        if self.params.band_radius != d.band_radius {
            s += &match self.params.band_radius {
                None => ",no band".to_string(),
                Some(r) => format!(",band≤{r}"),
            };
        }
        if self.params.band_trimmed != d.band_trimmed {
            s += if self.params.band_trimmed { ",trimmed band" } else { ",no trimmed band" };
        }
        if self.params.band_min_quality != d.band_min_quality {
            s += &format!(",band q≥{}", self.params.band_min_quality);
        }
        if self.half_octave_query {
            s += ",query ½-octave";
        }
        s + ")"
    }

    fn index(&mut self, protected: &[Protected<'_>]) {
        let sigs: Vec<_> = protected
            .par_iter()
            .map(|p| (p.id, with_extractor((self.plane, self.low), |e| e.signature(&pixels(p.image)))))
            .collect();
        let mut index = DeriveIndex::new(self.params);
        let max = sigs.iter().map(|(_, s)| s.to_bytes().len()).max().unwrap_or(0);
        let refused = index.extend(sigs.into_iter().map(|(id, s)| (u64::from(id), s)));
        assert!(refused.is_empty(), "harness ids are distinct");
        self.index = index;
        self.bytes_per_image = max;
    }

    fn query(&self, q: &Query<'_>) -> Vec<ImageId> {
        let key = (q.bytes.as_ptr() as usize, q.bytes.len(), (self.plane, self.low), self.half_octave_query);
        let cached = if share() {
            LAST.with(|l| l.borrow().as_ref().filter(|c| c.0 == key).map(|c| c.1.clone()))
        } else {
            None
        };
        let f = cached.unwrap_or_else(|| {
            with_extractor((self.plane, self.low), |e| {
                if self.half_octave_query {
                    e.query_in_half_octaves(&pixels(q.image), true)
                } else {
                    e.query(&pixels(q.image))
                }
            })
        });
        if share() {
            LAST.with(|l| *l.borrow_mut() = Some((key, f.clone())));
        }
        let hits = self.index.search(&f);
        if evidence() {
            let (key, name) = (crate::rng::fnv1a_bytes(q.bytes), self.name());
            for h in &hits {
                let opt = |v: Option<u32>| v.map_or("-".to_string(), |d| d.to_string());
                eprintln!(
                    "evidence\t{key:016x}\t{name}\t{}\t{}\t{}\t{}\t{}\t{}",
                    h.id,
                    opt(h.pdq_distance),
                    opt(h.band_distance),
                    h.inliers,
                    h.score,
                    h.mirrored
                );
            }
        }
        hits.into_iter().map(|h| h.id as ImageId).collect()
    }

    fn stored_bytes_per_image(&self) -> usize {
        self.bytes_per_image
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_options_set_the_parameters_and_name_the_column() {
        let m = DeriveMatcher::parse("t=16+b=18+stop=ramp1+s=72").unwrap();
        assert_eq!((m.params.lsh_tables, m.params.lsh_bits), (16, 18));
        assert_eq!(m.params.stop_keys, StopKeys::RampNeighbours);
        assert_eq!(m.name(), "derive(s≥72,keys 16×18b,stop ramp±1)");
        let d = DeriveMatcher::parse("stop=ramp2").unwrap();
        assert_eq!(d.params, Params { stop_keys: StopKeys::RampNeighbours2, ..Params::default() });
        assert_eq!(DeriveMatcher::default().name(), "derive(s≥41)");
        // the rule and extraction before the corners of cells without texture (2026-12-06)
        let before = DeriveMatcher::parse("low=400+s=33+smalls=50").unwrap();
        assert_eq!((before.low, before.params.min_score, before.params.small_min_score), (Some(400), 33, 50));
        assert_eq!(before.name(), "derive(s≥33,low400,<200px s≥50)");
        assert!(DeriveMatcher::parse("low=x").unwrap_err().contains("derive option low=x"));
        let old = DeriveMatcher::parse("h=31+s=72+smalls=88+smallp=0").unwrap();
        assert_eq!(
            (old.params.max_hamming, old.params.small_min_score, old.params.small_protected),
            (31, 88, false)
        );
        assert_eq!(old.name(), "derive(s≥72,h≤31,<200px s≥88,small queries only)");
        assert!(DeriveMatcher::parse("t=x").unwrap_err().contains("derive option t=x"));
        assert!(DeriveMatcher::parse("q=1").unwrap_err().contains("t, b"));
        let h = DeriveMatcher::parse("qpo=2").unwrap();
        assert!(h.half_octave_query && h.params == Params::default());
        assert_eq!(h.name(), "derive(s≥41,query ½-octave)");
        assert!(!DeriveMatcher::parse("qpo=3").unwrap().half_octave_query);
        assert!(DeriveMatcher::parse("qpo=4").is_err());
    }
}
