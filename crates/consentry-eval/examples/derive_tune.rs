//! Tuning aid for consentry-derive's rule: inlier descriptor distances of true
//! and false (query, protected) pairs, and how well score rules separate them.
//! `[TUNE_SEED=7] [TUNE_PLANE=0] cargo run --release -p consentry-eval --example derive_tune -- CORPUS [N_PROTECTED] [N_DISTRACTORS]`
use consentry_derive::{DeriveIndex, Params};
use consentry_eval::derive_matcher::pixels as px;
use consentry_eval::rng::{fnv1a, Rng};
use consentry_eval::transforms::{decode_rgb, fit_longest, select, standard_set, telegram_recompress};
use consentry_eval::{load_corpus, split};
use rayon::prelude::*;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let corpus = load_corpus(std::path::Path::new(&a[1])).unwrap();
    let np: usize = a.get(2).and_then(|s| s.parse().ok()).unwrap_or(120);
    let nd: usize = a.get(3).and_then(|s| s.parse().ok()).unwrap_or(100);
    // Experimental plane filter (see Extractor::with_plane_limit): TUNE_PLANE=40.
    let plane: u32 = std::env::var("TUNE_PLANE").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let seed: u64 = std::env::var("TUNE_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(7);
    let sp = split(corpus.len(), np, seed);
    let dis: Vec<usize> = sp.distractors.iter().copied().take(nd).collect();
    // Experimental inlier spread check (see Params::min_spread): TUNE_SPREAD=12.
    let min_spread: f32 = std::env::var("TUNE_SPREAD").ok().and_then(|v| v.parse().ok()).unwrap_or(0.0);
    // Index key width (see Params::lsh_bits): TUNE_LSH_BITS=24.
    let lsh_bits: usize = std::env::var("TUNE_LSH_BITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(Params::default().lsh_bits);
    // Number of index tables (see Params::lsh_tables): TUNE_LSH_TABLES=24.
    let lsh_tables: usize = std::env::var("TUNE_LSH_TABLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(Params::default().lsh_tables);
    // Stopped keys (see Params::stop_keys): TUNE_STOP=none|ramp|ramp1|ramp2|N.
    let stop_keys = std::env::var("TUNE_STOP")
        .ok()
        .map(|v| v.parse().expect("TUNE_STOP"))
        .unwrap_or(Params::default().stop_keys);
    // Largest descriptor distance of a correspondence (see Params::max_hamming; the score is
    // Σ (max_hamming + 1 − d)): TUNE_HAMMING=23.
    let max_hamming: u32 = std::env::var("TUNE_HAMMING")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(Params::default().max_hamming);
    let params = Params {
        min_inliers: 2,
        min_spread,
        lsh_bits,
        lsh_tables,
        stop_keys,
        max_hamming,
        ..Params::default()
    };
    let sigs: Vec<_> = sp
        .protected
        .par_iter()
        .map(|&i| {
            let im = decode_rgb(&corpus[i].bytes).unwrap();
            (
                i,
                consentry_eval::derive_matcher::example_extractor()
                    .with_plane_limit(plane)
                    .signature(&px(&im)),
            )
        })
        .collect();
    let mut index = DeriveIndex::new(params);
    for (i, s) in &sigs {
        index.insert(*i as u64, s.clone()).unwrap();
    }
    let labels = "identity,crop-all@10%,crop-all@20%,crop-offcentre@20%,pad-pattern@30%,undress-donor@40%,undress-donor@50%,undress-smooth@50%,undress-noise@50%,undress40-donor+caption";
    let trs = select(standard_set(), labels);
    // (transform, is_true, distances, query image, protected image, whether the pair needs the
    // small images' score (Params::min_score_for))
    let imgs: Vec<usize> = sp.protected.iter().chain(&dis).copied().collect();
    let sig_of: std::collections::HashMap<usize, &consentry_derive::Signature> =
        sigs.iter().map(|(i, s)| (*i, s)).collect();
    let rows: Vec<(usize, bool, Vec<u16>, usize, usize, bool)> = imgs
        .par_iter()
        .flat_map(|&i| {
            let im = fit_longest(&decode_rgb(&corpus[i].bytes).unwrap(), 1280);
            let donor = fit_longest(&decode_rgb(&corpus[dis[i % dis.len()]].bytes).unwrap(), 1280);
            let mut ex = consentry_eval::derive_matcher::example_extractor().with_plane_limit(plane);
            let mut out = Vec::new();
            for (t, tr) in trs.iter().enumerate() {
                let mut rng = Rng::derive(7, i as u64, fnv1a(&tr.label()));
                let q = decode_rgb(&telegram_recompress(&tr.apply(&im, &donor, &mut rng))).unwrap();
                let f = ex.query(&px(&q));
                let det = index.search_details(&f);
                let mut seen = false;
                let small = |pi: usize| params.min_score_for(sig_of[&pi], &f) > params.min_score;
                for (pi, d) in det {
                    seen |= pi as usize == i;
                    out.push((t, pi as usize == i, d, i, pi as usize, small(pi as usize)));
                }
                if !seen && sp.protected.contains(&i) {
                    out.push((t, true, Vec::new(), i, i, small(i)));
                }
            }
            out
        })
        .collect();
    // Same photo in the corpus (not false matches): hugin processings, video frames, thumbnails.
    let same = [
        ["000291.jpg", "000293.jpg"],
        ["000388.jpg", "000392.jpg"],
        ["000389.jpg", "000392.jpg"],
        ["000392.jpg", "000394.jpg"],
        ["000388.jpg", "000394.jpg"],
        ["000389.jpg", "000394.jpg"],
        ["000388.jpg", "000389.jpg"],
        ["000364.jpg", "000371.jpg"],
    ];
    let rows: Vec<_> = rows
        .into_iter()
        .filter(|r| {
            let (a, b) = (corpus[r.3].name.as_str(), corpus[r.4].name.as_str());
            !same.iter().any(|p| (p[0] == a && p[1] == b) || (p[0] == b && p[1] == a))
        })
        .collect();
    let ntrue: Vec<usize> = (0..trs.len()).map(|t| rows.iter().filter(|r| r.0 == t && r.1).count()).collect();
    let pairs = imgs.len() * trs.len() * sigs.len();
    println!(
        "{} protected, {} query images, {} transforms, {} pairs",
        sigs.len(),
        imgs.len(),
        trs.len(),
        pairs
    );
    let base = max_hamming + 1;
    let sc = |d: &[u16]| d.iter().map(|&x| base.saturating_sub(u32::from(x))).sum::<u32>();
    let mut top: Vec<_> = rows.iter().filter(|r| !r.1 && r.2.len() >= 2).collect();
    top.sort_by_key(|r| std::cmp::Reverse(sc(&r.2)));
    let show: usize = std::env::var("TUNE_SHOW").ok().and_then(|v| v.parse().ok()).unwrap_or(12);
    for r in top.iter().take(show) {
        println!(
            "false {} -> {} t{} n={} s={} d={:?}{}",
            corpus[r.3].name,
            corpus[r.4].name,
            r.0,
            r.2.len(),
            sc(&r.2),
            r.2,
            if r.5 { " (small image: needs the small images' score)" } else { "" }
        );
    }
    type Score = Box<dyn Fn(&[u16]) -> f64>;
    let mut scores: Vec<(String, Score)> = Vec::new();
    for z in [24f64, 28.0, 32.0] {
        scores.push((
            format!("sum({z}-d)/{z}"),
            Box::new(move |d: &[u16]| d.iter().map(|&x| (z - f64::from(x)).max(0.0) / z).sum()),
        ));
    }
    for (name, f) in &scores {
        let mut fv: Vec<f64> = rows.iter().filter(|r| !r.1).map(|r| f(&r.2)).collect();
        fv.sort_by(|a, b| b.total_cmp(a));
        for allowed in [0usize, 1, 2, 5] {
            let thr = fv.get(allowed).copied().unwrap_or(0.0);
            // match when score > thr
            let rec: Vec<String> = (0..trs.len())
                .map(|t| {
                    let hit = rows.iter().filter(|r| r.0 == t && r.1 && f(&r.2) > thr).count();
                    format!("{:.0}", 100.0 * hit as f64 / ntrue[t].max(1) as f64)
                })
                .collect();
            println!("{name:16} fp≤{allowed} thr>{thr:6.2}  {}", rec.join(" "));
        }
    }
    let mut hist = std::collections::BTreeMap::new();
    for r in rows.iter().filter(|r| !r.1) {
        *hist.entry(sc(&r.2) / 8 * 8).or_insert(0usize) += 1;
    }
    println!("false-pair score histogram (bin start: count): {hist:?}");
    for thr in [40u32, 52, 64, 72, 80, 96] {
        let rec: Vec<String> = (0..trs.len())
            .map(|t| {
                let hit = rows.iter().filter(|r| r.0 == t && r.1 && sc(&r.2) >= thr).count();
                format!("{:.0}", 100.0 * hit as f64 / ntrue[t].max(1) as f64)
            })
            .collect();
        let f = rows.iter().filter(|r| !r.1 && sc(&r.2) >= thr).count();
        println!("score>={thr:3}: false {f:3}  recall {}", rec.join(" "));
    }
    // The rule's score (Σ (max_hamming + 1 − d)) at multiples of the highest false pair's: the
    // margin the default threshold keeps (72 against 59 at max_hamming 31: 1.22×).
    let top_false = rows.iter().filter(|r| !r.1).map(|r| sc(&r.2)).max().unwrap_or(0);
    for m in [1.0f64, 1.1, 1.22, 1.35, 1.5] {
        let thr = (f64::from(top_false) * m).ceil() as u32 + u32::from(m == 1.0);
        let rec: Vec<String> = (0..trs.len())
            .map(|t| {
                let hit = rows.iter().filter(|r| r.0 == t && r.1 && sc(&r.2) >= thr).count();
                format!("{:.0}", 100.0 * hit as f64 / ntrue[t].max(1) as f64)
            })
            .collect();
        println!("score>={thr:3} ({m:.2}× the top false {top_false}): recall {}", rec.join(" "));
    }
    // The same with the small images' rule (Params::min_score_for): pairs where the query or the
    // protected image is under Params::small_side need small_min_score, so the margin of the usual
    // threshold is over the top false pair of the other pairs; recall counts a small pair as found
    // only at small_min_score.
    let top_usual = rows.iter().filter(|r| !r.1 && !r.5).map(|r| sc(&r.2)).max().unwrap_or(0);
    let top_small = rows.iter().filter(|r| !r.1 && r.5).map(|r| sc(&r.2)).max().unwrap_or(0);
    println!(
        "with the small images' rule (score >= {} where a side is under {} px): top false pair {top_usual} among the other pairs, {top_small} among the small ones",
        params.small_min_score, params.small_side
    );
    for m in [1.0f64, 1.1, 1.22, 1.35, 1.5] {
        let thr = (f64::from(top_usual) * m).ceil() as u32 + u32::from(m == 1.0);
        let rec: Vec<String> = (0..trs.len())
            .map(|t| {
                let hit = rows
                    .iter()
                    .filter(|r| {
                        r.0 == t && r.1 && sc(&r.2) >= if r.5 { thr.max(params.small_min_score) } else { thr }
                    })
                    .count();
                format!("{:.0}", 100.0 * hit as f64 / ntrue[t].max(1) as f64)
            })
            .collect();
        println!(
            "score>={thr:3} ({m:.2}× the top false {top_usual}; small: >= {}): recall {}",
            thr.max(params.small_min_score),
            rec.join(" ")
        );
    }
    println!("transforms: {labels}");
}
