//! Benchmark for consentry-index (driven by `bench/index/run.sh`).
//!
//! `bench_index gen CORPUS.tsv N Q OUTDIR` writes `base_N.u8` (N × 32 bytes) and
//! `queries_N.u8` (Q × 32 bytes) — the same files the FAISS script reads.
//! `bench_index run OUTDIR N [--truth K] [--zeros Z]` builds, saves, loads and
//! queries the index, and prints one JSON line of results.
//!
//! Synthetic hashes (realistic, from real photos): each of the 16 16-bit
//! chunks is copied from an independently chosen corpus hash (so per-bit
//! frequencies and within-chunk correlations of real PDQ hashes are kept),
//! then 0..=64 random bits are flipped; 20% of entries are instead
//! near-duplicates (1..=16 flips) of an earlier entry (clusters).
//! Queries: half are an indexed entry with 0..=31 bits flipped, half are fresh
//! synthetic hashes (non-matches, unless chance makes them match).

use consentry_index::{DegeneratePolicy, Hash256, Index, IndexConfig};
use std::io::Write;
use std::time::Instant;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
    fn flip(&mut self, h: &mut [u64; 4], k: u32) {
        let mut done = [0u64; 4];
        let mut c = 0;
        while c < k {
            let b = self.below(256) as usize;
            if done[b / 64] >> (b % 64) & 1 == 0 {
                done[b / 64] |= 1 << (b % 64);
                h[b / 64] ^= 1 << (b % 64);
                c += 1;
            }
        }
    }
}

fn synth(seeds: &[[u64; 4]], rng: &mut Rng) -> [u64; 4] {
    let mut h = [0u64; 4];
    for c in 0..16 {
        let s = &seeds[rng.below(seeds.len() as u64) as usize];
        let mask = 0xffffu64 << ((c % 4) * 16);
        h[c / 4] |= s[c / 4] & mask;
    }
    let k = rng.below(65) as u32;
    rng.flip(&mut h, k);
    h
}

fn to_bytes(h: &[u64; 4]) -> [u8; 32] {
    Hash256::from_words(*h).to_bytes()
}

fn read_hashes(path: &str) -> Vec<Hash256> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    data.chunks_exact(32).map(|c| Hash256::from_bytes(c.try_into().unwrap())).collect()
}

fn rss_kb(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// User + system CPU seconds of this process (all threads).
fn cpu_s() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = s.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // fields 14 and 15 of /proc/self/stat (utime, stime), in clock ticks (100 Hz on Linux)
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 100.0;
    tick(11) + tick(12)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn gen(args: &[String]) {
    let corpus = &args[0];
    let n: usize = args[1].parse().unwrap();
    let q: usize = args[2].parse().unwrap();
    let out = &args[3];
    let seeds: Vec<[u64; 4]> = std::fs::read_to_string(corpus)
        .unwrap()
        .lines()
        .filter_map(|l| Hash256::from_hex(l.split(['\t', ',']).next()?).ok())
        .filter(|h| !consentry_index::is_degenerate(h))
        .map(|h| h.words())
        .collect();
    assert!(seeds.len() > 10, "too few corpus hashes");
    let mut rng = Rng(0x5eed ^ n as u64);
    let mut base: Vec<[u64; 4]> = Vec::with_capacity(n);
    for i in 0..n {
        if i > 0 && rng.below(5) == 0 {
            let mut h = base[rng.below(i as u64) as usize];
            let k = 1 + rng.below(16) as u32;
            rng.flip(&mut h, k);
            base.push(h);
        } else {
            base.push(synth(&seeds, &mut rng));
        }
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(format!("{out}/base_{n}.u8")).unwrap());
    for h in &base {
        f.write_all(&to_bytes(h)).unwrap();
    }
    f.flush().unwrap();
    let mut f = std::io::BufWriter::new(std::fs::File::create(format!("{out}/queries_{n}.u8")).unwrap());
    for i in 0..q {
        let h = if i % 2 == 0 {
            let mut h = base[rng.below(n as u64) as usize];
            let k = rng.below(32) as u32;
            rng.flip(&mut h, k);
            h
        } else {
            synth(&seeds, &mut rng)
        };
        f.write_all(&to_bytes(&h)).unwrap();
    }
    f.flush().unwrap();
    eprintln!("wrote {n} base hashes and {q} queries to {out}");
}

fn run(args: &[String]) {
    let dir = &args[0];
    let n: usize = args[1].parse().unwrap();
    let mut truth_k = 200usize;
    let mut zeros = 0usize;
    let mut st_queries = usize::MAX;
    let mut i = 2;
    while i < args.len() {
        match args[i].as_str() {
            "--truth" => truth_k = args[i + 1].parse().unwrap(),
            "--zeros" => zeros = args[i + 1].parse().unwrap(),
            "--st-queries" => st_queries = args[i + 1].parse().unwrap(),
            a => panic!("unknown argument {a}"),
        }
        i += 2;
    }
    let radius = 31;
    let base = read_hashes(&format!("{dir}/base_{n}.u8"));
    let queries = read_hashes(&format!("{dir}/queries_{n}.u8"));
    let rss0 = rss_kb("VmRSS:");
    let cpu0 = cpu_s();
    let t = Instant::now();
    let entries = base
        .iter()
        .enumerate()
        .map(|(i, h)| (i as u64, *h))
        .chain((0..zeros).map(|i| ((n + i) as u64, Hash256::ZERO)));
    let config = IndexConfig { degenerate: DegeneratePolicy::Accept };
    let idx = Index::build(entries, config).unwrap();
    drop(base);
    let build_s = t.elapsed().as_secs_f64();
    let build_cpu_s = cpu_s() - cpu0;
    let stats = idx.stats();
    let rss1 = rss_kb("VmRSS:");
    let total = n + zeros;

    // single thread, per-query latency
    let nq = queries.len().min(st_queries);
    let mut lat = Vec::with_capacity(nq);
    let mut counts = Vec::with_capacity(nq);
    let mut per_q = Vec::with_capacity(nq);
    if std::env::var_os("BENCH_TAIL").is_some() {
        let sm = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
        for l in sm.lines().filter(|l| l.starts_with("AnonHuge") || l.starts_with("Rss")) {
            eprintln!("tail: {l}");
        }
    }
    // Warm-up: one pass with other queries (every bit inverted, so other buckets), as a serving
    // process is warm; the first pass after a build is 30-40% slower at 10M (page tables, TLB).
    {
        let t = Instant::now();
        for q in &queries[..nq] {
            let inv = Hash256::from_words(q.words().map(|w| !w));
            std::hint::black_box(idx.search(&inv, radius));
        }
        eprintln!("warm-up pass: {:.0} q/s", nq as f64 / t.elapsed().as_secs_f64());
        consentry_index::take_search_counters();
    }
    let mut ctr = [0u64; 3];
    let t = Instant::now();
    for q in &queries[..nq] {
        let t0 = Instant::now();
        let m = idx.search(q, radius);
        let us = t0.elapsed().as_secs_f64() * 1e6;
        lat.push(us);
        counts.push(m.len());
        let c = consentry_index::take_search_counters();
        per_q.push((us, c, m.len()));
        for j in 0..3 {
            ctr[j] += c[j];
        }
    }
    let st_s = t.elapsed().as_secs_f64();
    if std::env::var_os("BENCH_TAIL").is_some() {
        per_q.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (us, c, m) in per_q.iter().take(30) {
            eprintln!("tail: {us:.0} us, probes {} buckets {} cands {} matches {m}", c[0], c[1], c[2]);
        }
        let tot: f64 = per_q.iter().map(|x| x.0).sum();
        let top: f64 = per_q.iter().take(nq / 50).map(|x| x.0).sum();
        eprintln!("tail: slowest 2% of queries take {:.1}% of the time", 100.0 * top / tot);
    }
    eprintln!(
        "per query: {:.0} probes, {:.0} non-empty buckets, {:.0} candidates",
        ctr[0] as f64 / nq as f64,
        ctr[1] as f64 / nq as f64,
        ctr[2] as f64 / nq as f64
    );
    lat.sort_by(f64::total_cmp);
    // all threads
    let t = Instant::now();
    let batch = idx.search_batch(&queries, radius);
    let mt_s = t.elapsed().as_secs_f64();
    let threads = rayon::current_num_threads();
    for (c, b) in counts.iter().zip(&batch) {
        assert_eq!(*c, b.len(), "batch and single search disagree");
    }
    // the same on all threads query by query (the batch search before the join), and the batch
    // search on one thread
    let t = Instant::now();
    let per_query: usize = {
        use rayon::prelude::*;
        queries.par_iter().map(|q| idx.search(q, radius).len()).sum()
    };
    let mt_single_s = t.elapsed().as_secs_f64();
    assert_eq!(per_query, counts.iter().sum::<usize>());
    let pool1 = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let t = Instant::now();
    let one: usize = pool1.install(|| idx.search_batch(&queries, radius)).iter().map(Vec::len).sum();
    let batch_1t_s = t.elapsed().as_secs_f64();
    assert_eq!(one, per_query);
    // brute force on a subset: the ground truth and the scan baseline
    let k = truth_k.min(queries.len());
    let mut blat = Vec::with_capacity(k);
    let (mut found, mut truth) = (0usize, 0usize);
    let mut truth_counts = Vec::new();
    let t = Instant::now();
    for (qi, q) in queries[..k].iter().enumerate() {
        let t0 = Instant::now();
        let want = idx.search_exhaustive(q, radius);
        blat.push(t0.elapsed().as_secs_f64() * 1e6);
        let got = &batch[qi];
        assert_eq!(got, &want, "index result differs from brute force for query {qi}");
        truth += want.len();
        found += got.len();
        truth_counts.push(want.len());
    }
    let bf_s = t.elapsed().as_secs_f64();
    blat.sort_by(f64::total_cmp);
    // ground truth counts for the FAISS script (exact: checked against brute force above on the first k)
    let mut f = std::fs::File::create(format!("{dir}/truth_{n}.txt")).unwrap();
    for b in &batch {
        writeln!(f, "{}", b.len()).unwrap();
    }
    // persistence
    let snap = format!("{dir}/index_{n}.snap");
    let t = Instant::now();
    idx.save(&snap).unwrap();
    let save_s = t.elapsed().as_secs_f64();
    let snap_bytes = std::fs::metadata(&snap).unwrap().len();
    drop(idx);
    let t = Instant::now();
    let idx2 = Index::load(&snap, config).unwrap();
    let load_s = t.elapsed().as_secs_f64();
    assert_eq!(idx2.len(), total);
    for (q, b) in queries.iter().zip(&batch).step_by(50) {
        assert_eq!(&idx2.search(q, radius), b);
    }
    drop(idx2);
    let _ = std::fs::remove_file(&snap);
    let matched = batch.iter().filter(|b| !b.is_empty()).count();
    println!(
        "{{\"engine\":\"consentry-index\",\"n\":{n},\"zeros\":{zeros},\"queries\":{},\"matched_queries\":{matched},\
\"build_s\":{build_s:.3},\"build_cpu_s\":{build_cpu_s:.3},\"save_s\":{save_s:.3},\"load_s\":{load_s:.3},\"snapshot_bytes\":{snap_bytes},\
\"heap_bytes_per_entry\":{:.1},\"rss_delta_bytes_per_entry\":{:.1},\"vmhwm_mb\":{},\
\"segments\":{},\"qps_1t\":{:.1},\"p50_us\":{:.1},\"p99_us\":{:.1},\"threads\":{threads},\"qps_mt\":{:.1},\
\"qps_mt_per_query\":{:.1},\"qps_batch_1t\":{:.1},\
\"truth_queries\":{k},\"recall\":{:.6},\"bf_qps_1t\":{:.2},\"bf_p50_us\":{:.1},\"bf_p99_us\":{:.1}}}",
        queries.len(),
        stats.heap_bytes as f64 / total as f64,
        (rss1.saturating_sub(rss0)) as f64 * 1024.0 / total as f64,
        rss_kb("VmHWM:") / 1024,
        stats.segments,
        nq as f64 / st_s,
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        queries.len() as f64 / mt_s,
        queries.len() as f64 / mt_single_s,
        queries.len() as f64 / batch_1t_s,
        if truth == 0 { 1.0 } else { found as f64 / truth as f64 },
        k as f64 / bf_s,
        pct(&blat, 0.5),
        pct(&blat, 0.99),
    );
}

/// `bench_index profile OUTDIR N MODE REPS`: builds the index (or loads `OUTDIR/index_N.snap` if present,
/// writing it otherwise) and runs one search mode REPS times over the queries, for a profiler:
/// MODE `single` (one query at a time) or `batch1` (one batch on one thread; `BATCH=k`: batches
/// of k queries; `THREADS=k`: on k threads).
fn profile(args: &[String]) {
    let (dir, n, mode, reps) = (&args[0], &args[1], args[2].as_str(), args[3].parse::<usize>().unwrap());
    let queries = read_hashes(&format!("{dir}/queries_{n}.u8"));
    // RADIUS=r searches at another radius than PDQ's 31
    let radius: u32 = std::env::var("RADIUS").ok().and_then(|v| v.parse().ok()).unwrap_or(31);
    let snap = format!("{dir}/index_{n}.snap");
    let config = IndexConfig { degenerate: DegeneratePolicy::Accept };
    let idx = match Index::load(&snap, config) {
        Ok(i) => i,
        Err(_) => {
            let base = read_hashes(&format!("{dir}/base_{n}.u8"));
            let i = Index::build(base.iter().enumerate().map(|(i, h)| (i as u64, *h)), config).unwrap();
            i.save(&snap).unwrap();
            i
        }
    };
    // THREADS=k: batches on k threads (default one)
    let threads = std::env::var("THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let pool1 = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let t = Instant::now();
    let mut found = 0usize;
    for _ in 0..reps {
        match mode {
            "single" => {
                for q in &queries {
                    found += idx.search(q, radius).len();
                }
            }
            "batch1" => {
                // BATCH=k: batches of k queries (default: all at once)
                let k = std::env::var("BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(queries.len());
                for qs in queries.chunks(k) {
                    found +=
                        pool1.install(|| idx.search_batch(qs, radius)).iter().map(Vec::len).sum::<usize>()
                }
            }
            m => panic!("unknown mode {m}"),
        }
    }
    let s = t.elapsed().as_secs_f64();
    let c = consentry_index::take_search_counters();
    let per = |x: u64| x as f64 / (reps * queries.len()) as f64;
    println!(
        "{mode}: {:.0} q/s ({found} matches; per query {:.0} probes, {:.0} non-empty buckets, {:.0} candidates)",
        (reps * queries.len()) as f64 / s,
        per(c[0]),
        per(c[1]),
        per(c[2])
    );
}

/// `bench_index ab DIR_A DIR_B N REPS`: loads `index_N.snap` from both
/// directories (written by `profile`) and searches the queries of DIR_A one at a time, blocks of
/// 50 queries alternating between the two indexes (and orders), so that a shared machine's drift
/// falls on both alike; prints each one's q/s and the ratio.
fn ab(args: &[String]) {
    let (da, db, n, reps) = (&args[0], &args[1], &args[2], args[3].parse::<usize>().unwrap());
    let queries = read_hashes(&format!("{da}/queries_{n}.u8"));
    let config = IndexConfig { degenerate: DegeneratePolicy::Accept };
    let ia = Index::load(format!("{da}/index_{n}.snap"), config).unwrap();
    let ib = Index::load(format!("{db}/index_{n}.snap"), config).unwrap();
    let mut time = [0f64; 2];
    let mut found = [0usize; 2];
    for rep in 0..reps {
        for (bi, block) in queries.chunks(50).enumerate() {
            let order = if (rep + bi) % 2 == 0 { [0, 1] } else { [1, 0] };
            for which in order {
                let idx = if which == 0 { &ia } else { &ib };
                let t = Instant::now();
                for q in block {
                    found[which] += idx.search(q, 31).len();
                }
                time[which] += t.elapsed().as_secs_f64();
            }
        }
    }
    assert_eq!(found[0], found[1], "both indexes must find the same matches");
    let qs = |w: usize| (reps * queries.len()) as f64 / time[w];
    println!("A {da}: {:.0} q/s; B {db}: {:.0} q/s; A/B {:.3}", qs(0), qs(1), qs(0) / qs(1));
}

/// `bench_index load OUTDIR N REPS`: loads `OUTDIR/index_N.snap` (written by `profile` or a build if absent)
/// REPS times and prints each load's wall time (the file stays in the page cache between loads).
fn load(args: &[String]) {
    let (dir, n, reps) = (&args[0], &args[1], args[2].parse::<usize>().unwrap());
    let snap = format!("{dir}/index_{n}.snap");
    let config = IndexConfig { degenerate: DegeneratePolicy::Accept };
    if Index::load(&snap, config).is_err() {
        let base = read_hashes(&format!("{dir}/base_{n}.u8"));
        let i = Index::build(base.iter().enumerate().map(|(i, h)| (i as u64, *h)), config).unwrap();
        i.save(&snap).unwrap();
    }
    for _ in 0..reps {
        let t = Instant::now();
        let idx = Index::load(&snap, config).unwrap();
        let s = t.elapsed().as_secs_f64();
        println!("load: {s:.3} s ({} entries)", idx.len());
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("gen") => gen(&args[2..]),
        Some("run") => run(&args[2..]),
        Some("profile") => profile(&args[2..]),
        Some("load") => load(&args[2..]),
        Some("ab") => ab(&args[2..]),
        _ => {
            eprintln!("usage: bench_index gen CORPUS.tsv N Q OUTDIR | run OUTDIR N [--truth K] [--zeros Z] [--st-queries K] | profile OUTDIR N MODE REPS | load OUTDIR N REPS");
            std::process::exit(2);
        }
    }
}
