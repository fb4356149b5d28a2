//! Times consentry-derive's query extraction and search against PDQ on one image:
//! `cargo run --release -p consentry-eval --example derive_cost -- IMAGE [N]`
//!
//! or over a whole corpus folder (every photo reduced to Telegram's size, ≤ 1280 px; per image the
//! fastest of 4 rounds of each method, each round starting with another method; one thread):
//! `cargo run --release -p consentry-eval --example derive_cost -- /work/corpus`
use consentry_derive::{DeriveIndex, Params, Pixels};
use consentry_eval::transforms::{decode_rgb, fit_longest};
use consentry_pdq::PixelFormat;
use std::time::Instant;

/// Σ over the corpus of the fastest of 4 rounds: PDQ, PDQ + dihedral, derive query features,
/// derive signature, per size class of the reduced image.
fn corpus(dir: &std::path::Path) {
    let corpus = consentry_eval::load_corpus(dir).expect("corpus");
    let mut ex = consentry_eval::derive_matcher::example_extractor();
    let mut h = consentry_pdq::Hasher::new();
    // classes by the longest side after reduction: < 640, 640–1279, 1280
    let mut sums = [[0f64; 4]; 3];
    let mut counts = [0usize; 3];
    // query keypoints per image (not mirrored)
    let mut kps = Vec::new();
    for c in &corpus {
        let Ok(img) = decode_rgb(&c.bytes) else { continue };
        let img = fit_longest(&img, 1280);
        let px = Pixels::new(img.width(), img.height(), PixelFormat::Rgb8, img.as_raw()).unwrap();
        let r =
            consentry_pdq::ImageRef::new(img.width(), img.height(), PixelFormat::Rgb8, img.as_raw()).unwrap();
        let mut best = [f64::MAX; 4];
        // 4 rounds, each starting with a different method, so none always runs on a cold cache
        for round in 0..4 {
            for j in (0..4).map(|i| (i + round) % 4) {
                let t = Instant::now();
                match j {
                    0 => drop(std::hint::black_box(h.hash(&r))),
                    1 => drop(std::hint::black_box(h.hash_dihedral(&r))),
                    2 => drop(std::hint::black_box(ex.query(&px))),
                    _ => drop(std::hint::black_box(ex.signature(&px))),
                }
                best[j] = best[j].min(t.elapsed().as_secs_f64());
            }
        }
        kps.push(ex.query(&px).keypoints.len());
        let long = img.width().max(img.height());
        let k = if long < 640 {
            0
        } else if long < 1280 {
            1
        } else {
            2
        };
        counts[k] += 1;
        for (s, b) in sums[k].iter_mut().zip(best) {
            *s += b;
        }
    }
    println!("| reduced size | images | PDQ ms | PDQ + dihedral ms | derive query ms (incl. PDQ + dihedral) | × PDQ | derive signature ms | × PDQ |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    // one table row: the class, its image count and its summed seconds per method
    let row = |name: &str, n: usize, sum: &[f64; 4]| {
        let m = |j: usize| sum[j] * 1e3 / n as f64;
        println!(
            "| {name} | {n} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            m(0),
            m(1),
            m(2),
            m(2) / m(0),
            m(3),
            m(3) / m(0)
        );
    };
    let names = ["< 640 px", "640–1279 px", "1280 px"];
    let mut all = [0f64; 4];
    for k in 0..3 {
        for j in 0..4 {
            all[j] += sums[k][j];
        }
        if counts[k] > 0 {
            row(names[k], counts[k], &sums[k]);
        }
    }
    row("all", counts.iter().sum(), &all);
    kps.sort_unstable();
    let pct = |p: usize| kps.get(kps.len().saturating_sub(1) * p / 100).copied().unwrap_or(0);
    println!("query keypoints per image: median {}, 10th–90th percentile {}–{}", pct(50), pct(10), pct(90));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if std::path::Path::new(&args[1]).is_dir() {
        return corpus(std::path::Path::new(&args[1]));
    }
    let img = decode_rgb(&std::fs::read(&args[1]).expect("read")).expect("decode");
    let img = fit_longest(&img, 1280);
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20);
    let px = Pixels::new(img.width(), img.height(), PixelFormat::Rgb8, img.as_raw()).unwrap();
    let mut ex = consentry_eval::derive_matcher::example_extractor();
    let mut h = consentry_pdq::Hasher::new();
    let r = consentry_pdq::ImageRef::new(img.width(), img.height(), PixelFormat::Rgb8, img.as_raw()).unwrap();
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(h.hash_dihedral(&r));
    }
    let pdq = t.elapsed().as_secs_f64() * 1e3 / n as f64;
    let t = Instant::now();
    let mut f = None;
    for _ in 0..n {
        f = Some(ex.query(&px));
    }
    let q = t.elapsed().as_secs_f64() * 1e3 / n as f64;
    let f = f.unwrap();
    let mut index = DeriveIndex::new(Params::default());
    let s = ex.signature(&px);
    index.insert(0, s).unwrap();
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(index.search(&f));
    }
    let se = t.elapsed().as_secs_f64() * 1e3 / n as f64;
    println!("{}x{}: pdq+dihedral {pdq:.2} ms, derive query features {q:.2} ms ({} keypoints), search (1 entry) {se:.2} ms", img.width(), img.height(), f.keypoints.len());
}
