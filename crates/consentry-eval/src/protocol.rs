//! The benchmark protocol: a seeded split of a folder of photos into protected
//! originals and distractors; every image put through every transform and
//! the final recompression; every query run through every matcher; recall and
//! false matches scored per transform.

use crate::matcher::{pdq, ImageId, Matcher, Protected, Query};
use crate::rng::{fnv1a, Rng};
use crate::transforms::{decode_rgb, fit_longest, telegram_recompress, Transform};
use image::RgbImage;
use rayon::prelude::*;
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// One photo of the corpus: its file name and bytes.
#[derive(Debug, Clone)]
pub struct CorpusImage {
    /// File name within the corpus folder.
    pub name: String,
    /// The file's bytes.
    pub bytes: Vec<u8>,
}

/// Load a corpus folder: the files listed in the first column of
/// `manifest.tsv` when there is one, otherwise every `.jpg`, `.jpeg` and
/// `.png` file; sorted by name.
pub fn load_corpus(dir: &Path) -> std::io::Result<Vec<CorpusImage>> {
    let manifest = dir.join("manifest.tsv");
    let mut names: Vec<String> = if manifest.exists() {
        std::fs::read_to_string(&manifest)?
            .lines()
            .skip(1)
            .filter_map(|l| l.split('\t').next())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    } else {
        std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| {
                let l = n.to_ascii_lowercase();
                l.ends_with(".jpg") || l.ends_with(".jpeg") || l.ends_with(".png")
            })
            .collect()
    };
    names.sort();
    names.dedup();
    names.into_iter().map(|name| Ok(CorpusImage { bytes: std::fs::read(dir.join(&name))?, name })).collect()
}

/// Which corpus images are protected and which are distractors (indices into the corpus, ascending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Protected originals.
    pub protected: Vec<usize>,
    /// Everything else.
    pub distractors: Vec<usize>,
}

/// A seeded split of `n` images: `n_protected` (at most `n - 1`) protected, the rest distractors.
pub fn split(n: usize, n_protected: usize, seed: u64) -> Split {
    let mut idx: Vec<usize> = (0..n).collect();
    Rng::derive(seed, fnv1a("split"), 0).shuffle(&mut idx);
    let k = n_protected.min(n.saturating_sub(1));
    let mut protected = idx[..k].to_vec();
    let mut distractors = idx[k..].to_vec();
    protected.sort_unstable();
    distractors.sort_unstable();
    Split { protected, distractors }
}

/// What happened to one query.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Index of the transform in the run's list.
    pub transform: usize,
    /// Corpus index of the image the query was made from. Protected images'
    /// ids are their corpus indices, so a match is correct iff it equals this.
    pub source: ImageId,
    /// Whether the source is protected (a recall query) or a distractor.
    pub protected: bool,
    /// The donor photo whose content the query carries (undress with the donor fill), if any:
    /// a match to a protected photo of the donor's scene is not a match between unrelated photos.
    pub donor: Option<ImageId>,
    /// Per matcher, the ids matched.
    pub matches: Vec<Vec<ImageId>>,
    /// Per matcher, milliseconds spent in `query`.
    pub matcher_ms: Vec<f64>,
    /// Milliseconds to decode the query bytes.
    pub decode_ms: f64,
    /// Milliseconds to make the query (transform + recompression).
    pub make_ms: f64,
    /// Size of the query in bytes.
    pub query_bytes: usize,
    /// For queries from protected images: the PDQ distance between the query
    /// and its full-resolution original (a diagnostic of how far the transform
    /// moves a global hash).
    pub pdq_distance: Option<u32>,
}

/// The score of one matcher on one transform.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Score {
    /// Queries made from protected images.
    pub protected_queries: usize,
    /// Of those, how many matched their own original.
    pub hits: usize,
    /// All queries (protected and distractor).
    pub queries: usize,
    /// (query, protected) pairs matched whose protected image is not the query's source.
    pub false_matches: usize,
    /// Of those, the ones whose two images are not near-duplicates within the
    /// corpus itself (see [`RunResult::near_duplicates`]).
    pub false_matches_excl: usize,
    /// Total milliseconds in `query`.
    pub ms_total: f64,
}

impl Score {
    /// Recall in [0, 1] (0 when there were no protected queries).
    pub fn recall(&self) -> f64 {
        if self.protected_queries == 0 {
            0.0
        } else {
            self.hits as f64 / self.protected_queries as f64
        }
    }

    /// False matches over all query × protected pairs.
    pub fn false_match_rate(&self, n_protected: usize) -> f64 {
        let pairs = self.queries as f64 * n_protected as f64;
        if pairs == 0.0 {
            0.0
        } else {
            self.false_matches as f64 / pairs
        }
    }

    /// Mean milliseconds per query.
    pub fn ms_per_query(&self) -> f64 {
        if self.queries == 0 {
            0.0
        } else {
            self.ms_total / self.queries as f64
        }
    }

    /// Add another score's counts.
    pub fn add(&mut self, o: &Score) {
        self.protected_queries += o.protected_queries;
        self.hits += o.hits;
        self.queries += o.queries;
        self.false_matches += o.false_matches;
        self.false_matches_excl += o.false_matches_excl;
        self.ms_total += o.ms_total;
    }
}

/// Scores per transform (outer) and matcher (inner). `near_dup` holds
/// unordered pairs of images (smaller id first) that are near-duplicates in
/// the corpus itself; their matches count in `false_matches` but not in
/// `false_matches_excl`.
pub fn score(
    outcomes: &[Outcome],
    n_transforms: usize,
    n_matchers: usize,
    near_dup: &HashSet<(ImageId, ImageId)>,
) -> Vec<Vec<Score>> {
    let mut rows = vec![vec![Score::default(); n_matchers]; n_transforms];
    for o in outcomes {
        for (m, s) in rows[o.transform].iter_mut().enumerate() {
            let matched = &o.matches[m];
            s.queries += 1;
            s.ms_total += o.matcher_ms[m];
            if o.protected {
                s.protected_queries += 1;
                if matched.contains(&o.source) {
                    s.hits += 1;
                }
            }
            for &id in matched.iter().filter(|&&id| id != o.source) {
                s.false_matches += 1;
                if !near_dup.contains(&(id.min(o.source), id.max(o.source))) {
                    s.false_matches_excl += 1;
                }
            }
        }
    }
    rows
}

/// Run settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Seed for the split, donors and every transform.
    pub seed: u64,
    /// How many images to protect.
    pub n_protected: usize,
    /// Transforms, one table row each.
    pub transforms: Vec<Transform>,
    /// Originals are reduced to this longest side before transforms, as a photo
    /// taken from social media or a messenger is (the final recompression
    /// brings every query to ≤ 1280 anyway); protected hashes are always
    /// computed from the full-resolution original file.
    pub work_max_side: u32,
    /// Use at most this many distractors (all when `None`).
    pub max_distractors: Option<usize>,
    /// Print progress to stderr.
    pub progress: bool,
}

/// Everything a report needs.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The split used.
    pub split: Split,
    /// Corpus names by index.
    pub names: Vec<String>,
    /// Corpus images that failed to decode (skipped).
    pub undecodable: Vec<String>,
    /// Matcher names.
    pub matchers: Vec<String>,
    /// Per matcher, bytes stored per protected image.
    pub stored_bytes: Vec<usize>,
    /// Per matcher, milliseconds per protected image to index.
    pub index_ms: Vec<f64>,
    /// The transforms (rows).
    pub transforms: Vec<Transform>,
    /// Per transform, per matcher.
    pub scores: Vec<Vec<Score>>,
    /// Every query's outcome.
    pub outcomes: Vec<Outcome>,
    /// Pairs of corpus images (protected × any) whose untransformed PDQ hashes
    /// are within 31 of each other: near-duplicates that inflate false matches.
    pub near_duplicates: Vec<(String, String, u32)>,
    /// The same pairs as ids (smaller first).
    pub near_duplicate_ids: HashSet<(ImageId, ImageId)>,
    /// Wall-clock seconds of the whole run.
    pub wall_s: f64,
    /// Threads used.
    pub threads: usize,
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Run the benchmark.
pub fn run(corpus: &[CorpusImage], matchers: &mut [Box<dyn Matcher>], cfg: &Config) -> RunResult {
    let start = Instant::now();
    let mut sp = split(corpus.len(), cfg.n_protected, cfg.seed);
    if let Some(k) = cfg.max_distractors {
        let mut d = sp.distractors.clone();
        Rng::derive(cfg.seed, fnv1a("distractors"), 0).shuffle(&mut d);
        d.truncate(k);
        d.sort_unstable();
        sp.distractors = d;
    }
    let say = |s: String| {
        if cfg.progress {
            eprintln!("[{:7.1}s] {s}", start.elapsed().as_secs_f64());
        }
    };

    // Working copies of every used image (reduced), and the protected hashes from full resolution.
    let used: Vec<usize> = sp.protected.iter().chain(&sp.distractors).copied().collect();
    say(format!("decoding {} images", used.len()));
    let mut work: Vec<Option<RgbImage>> = vec![None; corpus.len()];
    let decoded: Vec<(usize, Option<RgbImage>)> = used
        .par_iter()
        .map(|&i| (i, decode_rgb(&corpus[i].bytes).ok().map(|im| fit_longest(&im, cfg.work_max_side))))
        .collect();
    let mut undecodable = Vec::new();
    for (i, im) in decoded {
        if im.is_none() {
            undecodable.push(corpus[i].name.clone());
        }
        work[i] = im;
    }
    sp.protected.retain(|&i| work[i].is_some());
    sp.distractors.retain(|&i| work[i].is_some());

    say(format!("indexing {} protected images", sp.protected.len()));
    let full: Vec<(usize, RgbImage)> = sp
        .protected
        .par_iter()
        .map(|&i| (i, decode_rgb(&corpus[i].bytes).expect("decoded before")))
        .collect();
    let prot: Vec<Protected<'_>> = full
        .iter()
        .map(|(i, im)| Protected { id: *i as ImageId, bytes: &corpus[*i].bytes, image: im })
        .collect();
    let orig_hash: std::collections::HashMap<usize, consentry_pdq::Hash256> =
        full.par_iter().map(|(i, im)| (*i, pdq(im).0)).collect();
    let mut index_ms = Vec::new();
    for m in matchers.iter_mut() {
        let t = Instant::now();
        m.index(&prot);
        index_ms.push(ms(t) / prot.len().max(1) as f64);
    }
    drop(prot);
    drop(full);

    // Near-duplicates in the corpus itself (context for false matches).
    let hashes: Vec<Option<consentry_pdq::Hash256>> =
        work.par_iter().map(|im| im.as_ref().map(|im| pdq(im).0)).collect();
    let mut near_duplicates = Vec::new();
    let mut near_duplicate_ids = HashSet::new();
    for &p in &sp.protected {
        for &q in used.iter() {
            if q == p || (sp.protected.contains(&q) && q < p) {
                continue;
            }
            if let (Some(a), Some(b)) = (hashes[p], hashes[q]) {
                let d = a.distance(&b);
                if d <= consentry_pdq::DEFAULT_MATCH_DISTANCE {
                    near_duplicates.push((corpus[p].name.clone(), corpus[q].name.clone(), d));
                    near_duplicate_ids.insert((p.min(q) as ImageId, p.max(q) as ImageId));
                }
            }
        }
    }

    // Donors for the undress pattern: always a distractor, never the image itself.
    let donor_of = |i: usize| -> usize {
        let mut r = Rng::derive(cfg.seed, fnv1a("donor"), i as u64);
        let cands: Vec<usize> = sp.distractors.iter().copied().filter(|&d| d != i).collect();
        if cands.is_empty() {
            i
        } else {
            cands[r.below(cands.len() as u64) as usize]
        }
    };

    let tasks: Vec<(usize, usize)> = sp
        .protected
        .iter()
        .chain(&sp.distractors)
        .flat_map(|&i| (0..cfg.transforms.len()).map(move |t| (i, t)))
        .collect();
    say(format!(
        "{} queries ({} images × {} transforms) on {} threads",
        tasks.len(),
        sp.protected.len() + sp.distractors.len(),
        cfg.transforms.len(),
        rayon::current_num_threads()
    ));
    let done = AtomicUsize::new(0);
    let step = (tasks.len() / 50).max(1);
    let protected_set: std::collections::HashSet<usize> = sp.protected.iter().copied().collect();
    let matchers_ref: &[Box<dyn Matcher>] = matchers;
    let outcomes: Vec<Outcome> = tasks
        .par_iter()
        .map(|&(i, t)| {
            let tr = &cfg.transforms[t];
            let img = work[i].as_ref().expect("decoded");
            let donor_id = donor_of(i);
            let donor = work[donor_id].as_ref().expect("decoded");
            let carried_donor = tr.uses_donor().then_some(donor_id);
            let mut rng = Rng::derive(cfg.seed, i as u64, fnv1a(&tr.label()));
            let t0 = Instant::now();
            let bytes = telegram_recompress(&tr.apply(img, donor, &mut rng));
            let make_ms = ms(t0);
            let t1 = Instant::now();
            let q_img = decode_rgb(&bytes).expect("own JPEG decodes");
            let decode_ms = ms(t1);
            let q = Query { bytes: &bytes, image: &q_img };
            if crate::derive_matcher::evidence() {
                let key = crate::rng::fnv1a_bytes(&bytes);
                let d = carried_donor.map_or("-", |d| corpus[d].name.as_str());
                eprintln!("query\t{key:016x}\t{}\t{}\t{}\t{d}", i, corpus[i].name, tr.label());
            }
            let mut matches = Vec::with_capacity(matchers_ref.len());
            let mut matcher_ms = Vec::with_capacity(matchers_ref.len());
            for m in matchers_ref {
                let t2 = Instant::now();
                let mut got = m.query(&q);
                matcher_ms.push(ms(t2));
                got.sort_unstable();
                got.dedup();
                matches.push(got);
            }
            let pdq_distance = orig_hash.get(&i).map(|h| pdq(&q_img).0.distance(h));
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            if n % step == 0 {
                say(format!("{n}/{} queries", tasks.len()));
            }
            Outcome {
                transform: t,
                source: i as ImageId,
                protected: protected_set.contains(&i),
                donor: carried_donor.map(|d| d as ImageId),
                matches,
                matcher_ms,
                decode_ms,
                make_ms,
                query_bytes: bytes.len(),
                pdq_distance,
            }
        })
        .collect();

    let scores = score(&outcomes, cfg.transforms.len(), matchers.len(), &near_duplicate_ids);
    RunResult {
        split: sp,
        names: corpus.iter().map(|c| c.name.clone()).collect(),
        undecodable,
        matchers: matchers.iter().map(|m| m.name()).collect(),
        stored_bytes: matchers.iter().map(|m| m.stored_bytes_per_image()).collect(),
        index_ms,
        transforms: cfg.transforms.clone(),
        scores,
        outcomes,
        near_duplicates,
        near_duplicate_ids,
        wall_s: start.elapsed().as_secs_f64(),
        threads: rayon::current_num_threads(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(transform: usize, source: ImageId, protected: bool, matches: Vec<Vec<ImageId>>) -> Outcome {
        let n = matches.len();
        Outcome {
            transform,
            source,
            protected,
            donor: None,
            matches,
            matcher_ms: vec![2.0; n],
            decode_ms: 1.0,
            make_ms: 1.0,
            query_bytes: 0,
            pdq_distance: None,
        }
    }

    #[test]
    fn recall_and_false_match_arithmetic() {
        // Protected ids 0, 1, 2; distractors 10, 11. Two matchers, two transforms.
        let outcomes = vec![
            // transform 0
            o(0, 0, true, vec![vec![0], vec![0, 2]]), // hit / hit + 1 false
            o(0, 1, true, vec![vec![], vec![1]]),     // miss / hit
            o(0, 2, true, vec![vec![2], vec![2]]),    // hit / hit
            o(0, 10, false, vec![vec![], vec![0, 1]]), // 0 false / 2 false
            o(0, 11, false, vec![vec![2], vec![]]),   // 1 false / 0
            // transform 1
            o(1, 0, true, vec![vec![1], vec![]]), // miss + 1 false / miss
            o(1, 10, false, vec![vec![], vec![]]),
        ];
        // Images 1 and 11 are near-duplicates in the corpus: matches between them are excluded.
        let near: HashSet<(ImageId, ImageId)> = [(1, 11)].into_iter().collect();
        let mut outcomes = outcomes;
        outcomes.push(o(1, 11, false, vec![vec![1], vec![1, 2]]));
        let s = score(&outcomes, 2, 2, &near);
        assert_eq!(
            (s[0][0].hits, s[0][0].protected_queries, s[0][0].queries, s[0][0].false_matches),
            (2, 3, 5, 1)
        );
        assert_eq!(
            (s[0][1].hits, s[0][1].protected_queries, s[0][1].queries, s[0][1].false_matches),
            (3, 3, 5, 3)
        );
        assert!((s[0][0].recall() - 2.0 / 3.0).abs() < 1e-12);
        assert!((s[0][1].recall() - 1.0).abs() < 1e-12);
        // Rate over query × protected pairs: 3 protected images.
        assert!((s[0][1].false_match_rate(3) - 3.0 / 15.0).abs() < 1e-12);
        assert_eq!((s[0][0].false_matches_excl, s[0][1].false_matches_excl), (1, 3));
        assert_eq!(
            (s[1][0].hits, s[1][0].false_matches, s[1][0].false_matches_excl, s[1][0].queries),
            (0, 2, 1, 3)
        );
        assert_eq!((s[1][1].hits, s[1][1].false_matches, s[1][1].false_matches_excl), (0, 2, 1));
        assert!((s[0][0].ms_per_query() - 2.0).abs() < 1e-12);
        let mut total = Score::default();
        for row in &s {
            total.add(&row[1]);
        }
        assert_eq!((total.hits, total.protected_queries, total.false_matches, total.queries), (3, 4, 5, 8));
        assert_eq!(total.false_matches_excl, 4);
    }

    #[test]
    fn corpus_from_manifest_or_folder_listing() {
        let dir = std::env::temp_dir().join(format!("consentry-eval-corpus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (n, b) in [("b.jpg", &b"B"[..]), ("a.png", b"A"), ("c.JPEG", b"C"), ("notes.txt", b"x")] {
            std::fs::write(dir.join(n), b).unwrap();
        }
        let names = |c: Vec<CorpusImage>| c.into_iter().map(|i| (i.name, i.bytes)).collect::<Vec<_>>();
        assert_eq!(
            names(load_corpus(&dir).unwrap()),
            vec![
                ("a.png".into(), b"A".to_vec()),
                ("b.jpg".into(), b"B".to_vec()),
                ("c.JPEG".into(), b"C".to_vec())
            ]
        );
        std::fs::write(dir.join("manifest.tsv"), "file\twidth\nb.jpg\t1\na.png\t1\n").unwrap();
        assert_eq!(
            names(load_corpus(&dir).unwrap()),
            vec![("a.png".into(), b"A".to_vec()), ("b.jpg".into(), b"B".to_vec())]
        );
        std::fs::write(dir.join("manifest.tsv"), "file\nmissing.jpg\n").unwrap();
        assert!(load_corpus(&dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn split_is_seeded_disjoint_and_complete() {
        let a = split(50, 20, 1);
        assert_eq!(a, split(50, 20, 1));
        assert_ne!(a, split(50, 20, 2));
        assert_eq!(a.protected.len(), 20);
        assert_eq!(a.distractors.len(), 30);
        let mut all: Vec<usize> = a.protected.iter().chain(&a.distractors).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..50).collect::<Vec<_>>());
        // Never every image protected: distractors are needed.
        assert_eq!(split(5, 10, 0).distractors.len(), 1);
    }
}

#[cfg(test)]
mod end_to_end {
    use super::*;
    use crate::matcher::PdqMatcher;
    use crate::testutil::photo;
    use crate::transforms::{encode_jpeg, select, standard_set};

    fn corpus() -> Vec<CorpusImage> {
        (0..8u64)
            .map(|i| CorpusImage {
                name: format!("{i:02}.jpg"),
                bytes: encode_jpeg(&photo(240 + 8 * i as u32, 180, 100 + i), 92),
            })
            .collect()
    }

    fn go(seed: u64) -> RunResult {
        let cfg = Config {
            seed,
            n_protected: 4,
            transforms: select(standard_set(), "identity,rot90,undress-noise@60%"),
            work_max_side: 1280,
            max_distractors: None,
            progress: false,
        };
        let mut ms: Vec<Box<dyn Matcher>> =
            vec![Box::new(PdqMatcher::global(31)), Box::new(PdqMatcher::dihedral(31))];
        run(&corpus(), &mut ms, &cfg)
    }

    #[test]
    fn deterministic_run_with_expected_baseline_behaviour() {
        let a = go(3);
        let b = go(3);
        assert_eq!(a.split, b.split);
        assert_eq!(a.outcomes.len(), 8 * 3);
        type Key = Vec<(usize, ImageId, Vec<Vec<ImageId>>, usize, Option<u32>)>;
        let key = |r: &RunResult| -> Key {
            r.outcomes
                .iter()
                .map(|o| (o.transform, o.source, o.matches.clone(), o.query_bytes, o.pdq_distance))
                .collect()
        };
        assert_eq!(key(&a), key(&b), "same seed, same queries and matches");
        let labels: Vec<String> = a.transforms.iter().map(Transform::label).collect();
        let row = |l: &str| &a.scores[labels.iter().position(|x| x == l).unwrap()];
        // An untransformed, recompressed copy is found by both; a 90° rotation only by the dihedral variant.
        assert_eq!((row("identity@-")[0].hits, row("identity@-")[0].protected_queries), (4, 4));
        assert_eq!(row("identity@-")[1].hits, 4);
        assert_eq!(row("rot90@-")[0].hits, 0);
        assert_eq!(row("rot90@-")[1].hits, 4);
        // Every row counts 4 protected and 4 distractor queries.
        assert!(a.scores.iter().all(|r| r[0].queries == 8 && r[0].protected_queries == 4));
        // Synthetic images are all far apart: no false matches, no near-duplicates.
        assert!(a.near_duplicates.is_empty());
        assert_eq!(a.scores.iter().map(|r| r[0].false_matches + r[1].false_matches).sum::<usize>(), 0);
        assert!(a.near_duplicate_ids.is_empty());
        let md = crate::report::markdown(&a, "test");
        assert!(md.contains("| identity | identity@- |"));
        assert!(md.contains("| 100.0 |"));
        // Another seed gives another split or other queries.
        let c = go(4);
        assert!(c.split != a.split || key(&c) != key(&a));
    }
}
