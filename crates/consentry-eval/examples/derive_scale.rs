//! `DeriveIndex` at scale: build time, memory and query latency with N protected images.
//!
//! `cargo run --release -p consentry-eval --example derive_scale -- CORPUS N [N ...]`
//!
//! The protected set is the signatures of 200 corpus photos (seed 1 split, as the harness uses)
//! plus N − 200 synthetic signatures. A synthetic signature has 50 keypoints at random positions
//! and levels; each descriptor starts from a random real descriptor of the corpus and has every
//! bit redrawn, with probability 1/2, from that bit's frequency over all real descriptors. So the
//! descriptors keep the skewed bit frequencies of real BRIEF descriptors (which decide how full
//! the index's buckets are) but are ~64 bits from any real one, so they are not copies.
//! Queries: the Telegram-recompressed `undress-donor@40%` and `crop-all@10%` copies of 50 protected
//! photos and 50 distractor photos, searched one at a time on one thread.
//! `STOP=none|ramp|ramp1|N` chooses the stopped keys (`Params::stop_keys`; default: the rule's);
//! `LSH_TABLES=T LSH_BITS=B` the index's key layout (`Params::lsh_tables`, `Params::lsh_bits`);
//! `MIRRORED=0` leaves the query's mirrored keypoints out (`Params::mirrored`);
//! `QUERY_PYRAMID=half` makes the query features with the half-octave pyramid of query format 3
//! (`Extractor::query_in_half_octaves`) and `MIN_SCORE=S` sets `Params::min_score`, for comparisons
//! with the rule before 2026-12-06 (`QUERY_PYRAMID=half MIN_SCORE=64`); `MAX_HAMMING=H` sets
//! `Params::max_hamming` (with `MIN_SCORE`, the rule before 2026-12-06 evening: `MAX_HAMMING=31
//! MIN_SCORE=72`); `LOW_RESPONSE=400` extracts as before 2026-12-06 (no corner in cells without
//! texture; with `MIN_SCORE=33 SMALL_MIN_SCORE=50` the rule before that day's last change);
//! `DENSE=none` turns rule 4 off (`Params::dense_min_score`; the rule before 2026-12-07). Each
//! synthetic signature carries the grid of a random one of the 200 real photos.
use consentry_derive::{DeriveIndex, Keypoint, Params, Signature};
use consentry_eval::derive_matcher::pixels as px;
use consentry_eval::rng::{fnv1a, Rng};
use consentry_eval::transforms::{decode_rgb, fit_longest, select, standard_set, telegram_recompress};
use consentry_eval::{load_corpus, split};
use consentry_pdq::Hash256;
use rayon::prelude::*;
use std::time::Instant;

fn rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn pct(v: &[f64], p: f64) -> f64 {
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let corpus = load_corpus(std::path::Path::new(&a[1])).expect("corpus");
    let sizes: Vec<usize> = a[2..].iter().map(|s| s.parse().expect("N")).collect();
    let sp = split(corpus.len(), 200, 1);
    let t = Instant::now();
    let real: Vec<(usize, Signature)> = sp
        .protected
        .par_iter()
        .map(|&i| {
            (
                i,
                consentry_eval::derive_matcher::example_extractor()
                    .signature(&px(&decode_rgb(&corpus[i].bytes).unwrap())),
            )
        })
        .collect();
    let descs: Vec<[u64; 4]> = real.iter().flat_map(|(_, s)| s.keypoints.iter().map(|k| k.desc)).collect();
    let mut freq = [0f64; 256];
    for d in &descs {
        for (b, f) in freq.iter_mut().enumerate() {
            *f += ((d[b / 64] >> (b % 64)) & 1) as f64;
        }
    }
    for f in &mut freq {
        *f /= descs.len() as f64;
    }
    // Queries.
    let trs = select(standard_set(), "undress-donor@40%,crop-all@10%");
    let qimgs: Vec<(usize, bool)> = sp
        .protected
        .iter()
        .take(50)
        .map(|&i| (i, true))
        .chain(sp.distractors.iter().take(50).map(|&i| (i, false)))
        .collect();
    let half = std::env::var("QUERY_PYRAMID").is_ok_and(|v| v == "half");
    let queries: Vec<(usize, bool, consentry_derive::QueryFeatures)> = qimgs
        .par_iter()
        .flat_map_iter(|&(i, prot)| {
            let im = fit_longest(&decode_rgb(&corpus[i].bytes).unwrap(), 1280);
            let donor = fit_longest(
                &decode_rgb(&corpus[sp.distractors[i % sp.distractors.len()]].bytes).unwrap(),
                1280,
            );
            let mut ex = consentry_eval::derive_matcher::example_extractor();
            trs.iter()
                .map(|tr| {
                    let mut rng = Rng::derive(1, i as u64, fnv1a(&tr.label()));
                    let q = decode_rgb(&telegram_recompress(&tr.apply(&im, &donor, &mut rng))).unwrap();
                    let f = if half { ex.query_in_half_octaves(&px(&q), true) } else { ex.query(&px(&q)) };
                    (i, prot, f)
                })
                .collect::<Vec<_>>()
        })
        .collect();
    eprintln!(
        "{} real signatures ({} descriptors), {} queries, prepared in {:.1} s",
        real.len(),
        descs.len(),
        queries.len(),
        t.elapsed().as_secs_f64()
    );
    println!("| N protected | build s | RSS MiB (index + data) | query p50 ms | p99 ms | mean ms | recall (protected queries) | false matches |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &sizes {
        let rss0 = rss_mib();
        let lsh_bits =
            std::env::var("LSH_BITS").ok().and_then(|v| v.parse().ok()).unwrap_or(Params::default().lsh_bits);
        // STOP=none|ramp|ramp1|N: the stopped keys (default: the rule's)
        let stop_keys = std::env::var("STOP")
            .ok()
            .map(|v| v.parse().expect("STOP"))
            .unwrap_or(Params::default().stop_keys);
        let lsh_tables = std::env::var("LSH_TABLES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(Params::default().lsh_tables);
        // MIRRORED=0: without the query's mirrored keypoints (`consentry serve --derive-mirrored false`)
        let mirrored = std::env::var("MIRRORED").map_or(Params::default().mirrored, |v| v != "0");
        let min_score = std::env::var("MIN_SCORE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(Params::default().min_score);
        let max_hamming = std::env::var("MAX_HAMMING")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(Params::default().max_hamming);
        let small_min_score = std::env::var("SMALL_MIN_SCORE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(Params::default().small_min_score);
        let dense_min_score = match std::env::var("DENSE").as_deref() {
            Ok("none") => None,
            Ok(v) => Some(v.parse().expect("DENSE: none or a score")),
            Err(_) => Params::default().dense_min_score,
        };
        let mut index = DeriveIndex::new(Params {
            lsh_bits,
            lsh_tables,
            stop_keys,
            mirrored,
            min_score,
            max_hamming,
            small_min_score,
            dense_min_score,
            ..Params::default()
        });
        let tg = Instant::now();
        // synthetic signatures, made in parallel blocks of 10,000, each block with its own generator
        let synth: Vec<(u64, Signature)> = (real.len()..n)
            .collect::<Vec<_>>()
            .par_chunks(10_000)
            .flat_map_iter(|block| {
                let mut rng = Rng::derive(0x5ca1e, block[0] as u64, 0);
                block
                    .iter()
                    .map(|&j| {
                        let keypoints = (0..50)
                            .map(|_| {
                                let src = descs[rng.below(descs.len() as u64) as usize];
                                let mut desc = [0u64; 4];
                                for (b, f) in freq.iter().enumerate() {
                                    let bit = if rng.coin() {
                                        (src[b / 64] >> (b % 64)) & 1
                                    } else {
                                        u64::from(rng.f64() < *f)
                                    };
                                    desc[b / 64] |= bit << (b % 64);
                                }
                                Keypoint {
                                    x: rng.below(512 * 8) as u16,
                                    y: rng.below(384 * 8) as u16,
                                    level: rng.below(4) as u8,
                                    desc,
                                }
                            })
                            .collect();
                        let pdq = Hash256::from_words([
                            rng.next_u64(),
                            rng.next_u64(),
                            rng.next_u64(),
                            rng.next_u64(),
                        ]);
                        // a random top band of full quality: every distractor takes part in rule 3
                        let band = Some(consentry_pdq::PdqHash {
                            hash: Hash256::from_words([
                                rng.next_u64(),
                                rng.next_u64(),
                                rng.next_u64(),
                                rng.next_u64(),
                            ]),
                            quality: 100,
                        });
                        (
                            (1u64 << 40) + j as u64,
                            // the grid of a real photo: rule 4 weighs every entry that two corners reach
                            Signature {
                                pdq,
                                quality: 100,
                                keypoints,
                                band,
                                source_side: 1000,
                                grid: real[rng.below(real.len() as u64) as usize].1.grid.clone(),
                            },
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let gen_s = tg.elapsed().as_secs_f64();
        // the last 1,000 are inserted one at a time, after the bulk load
        let split_at = synth.len().saturating_sub(1000);
        let mut synth = synth;
        let singles = synth.split_off(split_at);
        let t = Instant::now();
        let all: Vec<(u64, Signature)> =
            real.iter().map(|(i, s)| (*i as u64, s.clone())).chain(synth).collect();
        assert!(index.extend(all).is_empty());
        let build_s = t.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let nsingle = singles.len();
        for (id, sig) in singles {
            index.insert(id, sig).unwrap();
        }
        let insert_ms = t1.elapsed().as_secs_f64() * 1e3 / nsingle.max(1) as f64;
        eprintln!("N {n}: bulk build {build_s:.1} s; then {nsingle} single inserts, {insert_ms:.3} ms each");
        let rss = rss_mib() - rss0;
        eprintln!("largest buckets (slots, key popcount, bits): {:?}", index.largest_buckets(12));
        if std::env::var_os("STOP_STATS").is_some() {
            // How many postings a query scans, and how many it would with the K fullest keys of each
            // table left out (a stop-list): the cost side of a possible rule change, not a rule.
            let sizes = index.bucket_sizes();
            let total: f64 = sizes.iter().flatten().map(|&n| f64::from(n)).sum();
            let probes: Vec<Vec<(usize, u32)>> =
                queries.iter().map(|(_, _, q)| index.probe_keys(q)).collect();
            // per table, the bucket sizes from the fullest down
            let sorted: Vec<Vec<u32>> = sizes
                .iter()
                .map(|s| {
                    let mut v = s.clone();
                    v.sort_unstable_by(|a, b| b.cmp(a));
                    v
                })
                .collect();
            for k in [0usize, 64, 256, 1024, 2621, 8192] {
                // per table, the size from which a bucket is stopped
                let cut: Vec<u32> = sorted.iter().map(|v| if k == 0 { u32::MAX } else { v[k - 1] }).collect();
                let scanned: f64 = probes
                    .iter()
                    .flatten()
                    .map(|&(t, key)| (t, sizes[t][key as usize]))
                    .filter(|&(t, n)| n < cut[t])
                    .map(|(_, n)| f64::from(n))
                    .sum::<f64>()
                    / probes.len() as f64;
                let stopped: f64 = sizes
                    .iter()
                    .zip(&cut)
                    .map(|(s, &c)| s.iter().filter(|&&n| n >= c).map(|&n| f64::from(n)).sum::<f64>())
                    .sum();
                eprintln!(
                    "N {n}: stop-list of the {k} fullest keys per table: {scanned:.0} postings scanned per query, {:.1} % of stored postings stopped",
                    100.0 * stopped / total
                );
            }
            // The same buckets probed by several of a query's keypoints (smooth patches alike):
            // what a scan of each distinct (table, key) once would read.
            let distinct: f64 = probes
                .iter()
                .map(|p| {
                    let mut u = p.clone();
                    u.sort_unstable();
                    u.dedup();
                    u.iter().map(|&(t, key)| f64::from(sizes[t][key as usize])).sum::<f64>()
                })
                .sum::<f64>()
                / probes.len() as f64;
            eprintln!("N {n}: {distinct:.0} postings per query in distinct (table, key) buckets");
        }
        let verified: usize = queries.iter().map(|(_, _, q)| index.search_details(q).len()).sum();
        eprintln!("N {n}: {:.1} protected images verified per query (>= 3 correspondences); synthetic signatures made in {gen_s:.1} s", verified as f64 / queries.len() as f64);
        let mut lat = Vec::with_capacity(queries.len());
        let (mut found, mut want, mut false_m) = (0usize, 0usize, 0usize);
        for (i, prot, q) in &queries {
            let t = Instant::now();
            let hits = index.search(q);
            lat.push(t.elapsed().as_secs_f64() * 1e3);
            want += usize::from(*prot);
            found += usize::from(*prot && hits.iter().any(|h| h.id == *i as u64));
            false_m += hits.iter().filter(|h| h.id != *i as u64).count();
        }
        let mean = lat.iter().sum::<f64>() / lat.len() as f64;
        lat.sort_by(f64::total_cmp);
        println!(
            "| {n} | {build_s:.1} | {rss:.0} | {:.2} | {:.2} | {mean:.2} | {found}/{want} | {false_m} |",
            pct(&lat, 0.5),
            pct(&lat, 0.99)
        );
        drop(index);
    }
}
