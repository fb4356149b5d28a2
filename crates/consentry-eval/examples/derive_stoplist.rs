//! Which descriptor keys make the derive index's buckets full, and would a stop-list catch them?
//!
//! `cargo run --release -p consentry-eval --example derive_stoplist -- CORPUS`
//!
//! Signatures (stored side) and query features of every corpus photo at Telegram's size. Per
//! table, the scan cost of a key is (query keypoints with it) × (stored keypoints with it). The
//! report: the share of that cost in (a) the keys of pure-ramp and flat descriptors (fixed, from
//! the test pairs alone), with and without their 1-bit neighbours, and (b) the K most frequent
//! stored keys learnt on one half of the photos and scored on the other.
//!
//! `... -- CORPUS --write crates/consentry-derive/data/common-keys-v1.bin` also writes the learnt
//! stop-list of `StopKeys::Common`: the `COMMON_KEYS_PER_TABLE` most common keys of each table
//! over the even-numbered photos (stored count + query count / 10, ties to the smaller key).
use consentry_derive::{DeriveIndex, Extractor, QueryFeatures, Signature};
use consentry_eval::derive_matcher::pixels as px;
use consentry_eval::load_corpus;
use consentry_eval::transforms::{decode_rgb, fit_longest};
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};

fn keys(ix: &DeriveIndex, descs: &[[u64; 4]]) -> Vec<(usize, u32)> {
    let q = QueryFeatures {
        pdq: [consentry_pdq::Hash256::default(); 8],
        quality: 0,
        keypoints: descs
            .iter()
            .map(|&desc| consentry_derive::Keypoint { x: 0, y: 0, level: 0, desc })
            .collect(),
        mirrored: Vec::new(),
        band: None,
        trimmed_band: None,
        levels_per_octave: consentry_derive::QUERY_LEVELS_PER_OCTAVE,
        source_side: 0,
        grid: None,
    };
    ix.probe_keys(&q)
}

/// Per table, the keys seen on the stored side by weight (stored count + query count / 10), heaviest first.
fn top_keys(
    st: &HashMap<(usize, u32), f64>,
    qu: &HashMap<(usize, u32), f64>,
    nt: usize,
) -> Vec<Vec<(f64, u32)>> {
    let mut per: Vec<Vec<(f64, u32)>> = vec![Vec::new(); nt];
    for (&(t, k), n) in st {
        per[t].push((*n + qu.get(&(t, k)).copied().unwrap_or(0.0) / 10.0, k));
    }
    for v in &mut per {
        v.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    }
    per
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let corpus = load_corpus(std::path::Path::new(&a[1])).expect("corpus");
    let feats: Vec<(Signature, QueryFeatures)> = (0..corpus.len())
        .into_par_iter()
        .map(|i| {
            let im = fit_longest(&decode_rgb(&corpus[i].bytes).unwrap(), 1280);
            let mut ex = Extractor::new();
            (ex.signature(&px(&im)), ex.query(&px(&im)))
        })
        .collect();
    // the layout of the stop-list file (`StopKeys::Common`), which may differ from today's default
    let layout = consentry_derive::learnt_layout();
    let ix = DeriveIndex::new(layout);
    let nt = layout.lsh_tables;
    // per half h: stored key counts, query key counts (table, key) -> n
    let mut st: [HashMap<(usize, u32), f64>; 2] = Default::default();
    let mut qu: [HashMap<(usize, u32), f64>; 2] = Default::default();
    for (i, (s, q)) in feats.iter().enumerate() {
        let h = i % 2;
        let sd: Vec<[u64; 4]> = s.keypoints.iter().map(|k| k.desc).collect();
        for k in keys(&ix, &sd) {
            *st[h].entry(k).or_default() += 1.0;
        }
        let qd: Vec<[u64; 4]> = q.keypoints.iter().map(|k| k.desc).collect();
        for k in keys(&ix, &qd) {
            *qu[h].entry(k).or_default() += 1.0;
        }
    }
    let ramps = consentry_derive::ramp_descriptors();
    let r0: HashSet<(usize, u32)> = keys(&ix, &ramps).into_iter().collect();
    let bits = layout.lsh_bits;
    let r1: HashSet<(usize, u32)> = r0
        .iter()
        .flat_map(|&(t, k)| std::iter::once((t, k)).chain((0..bits).map(move |b| (t, k ^ (1 << b)))))
        .collect();
    eprintln!(
        "{} photos; {} ramp/flat descriptors; stop keys per table: ramp {:.0}, ramp ±1 bit {:.0} (of {})",
        feats.len(),
        ramps.len(),
        r0.len() as f64 / nt as f64,
        r1.len() as f64 / nt as f64,
        1u32 << bits
    );
    if let Some(i) = a.iter().position(|x| x == "--write") {
        let per = top_keys(&st[0], &qu[0], nt);
        let keys: Vec<Vec<u32>> = per
            .iter()
            .map(|v| v.iter().take(consentry_derive::COMMON_KEYS_PER_TABLE).map(|&(_, k)| k).collect())
            .collect();
        std::fs::write(&a[i + 1], consentry_derive::write_common_keys(&keys)).expect("write");
        eprintln!("wrote {}", a[i + 1]);
    }
    for h in 0..2 {
        let o = 1 - h;
        // cost over the scored half o: query keys of o against stored keys of o
        let cost = |stop: &dyn Fn(&(usize, u32)) -> bool| -> (f64, f64) {
            let mut all = 0.0;
            let mut stopped = 0.0;
            for (k, nq) in &qu[o] {
                let c = nq * st[o].get(k).copied().unwrap_or(0.0);
                all += c;
                if stop(k) {
                    stopped += c;
                }
            }
            let stored: f64 = st[o].values().sum();
            let stored_stopped: f64 = st[o].iter().filter(|(k, _)| stop(k)).map(|(_, n)| n).sum();
            (stopped / all, stored_stopped / stored)
        };
        let (c, s) = cost(&|k| r0.contains(k));
        println!(
            "half {o}: ramp keys: {:.1} % of the scan cost, {:.1} % of stored postings",
            100.0 * c,
            100.0 * s
        );
        let (c, s) = cost(&|k| r1.contains(k));
        println!(
            "half {o}: ramp ±1 keys: {:.1} % of the scan cost, {:.1} % of stored postings",
            100.0 * c,
            100.0 * s
        );
        let per = top_keys(&st[h], &qu[h], nt);
        for kk in [64usize, 256, 1024, 2621, 8192] {
            let set: HashSet<(usize, u32)> = per
                .iter()
                .enumerate()
                .flat_map(|(t, v)| v.iter().take(kk).map(move |&(_, k)| (t, k)))
                .collect();
            let (c, s) = cost(&|k| set.contains(k));
            let both = set.intersection(&r0).count();
            println!(
                "half {o}: top {kk} keys learnt on half {h}: {:.1} % of the scan cost, {:.1} % of stored postings; {both} of them ramp keys",
                100.0 * c,
                100.0 * s
            );
        }
    }
}
