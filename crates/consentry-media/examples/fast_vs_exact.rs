//! Fast (reduced-scale JPEG) versus exact hashing on a directory of photos.
//!
//! `cargo run --release -p consentry-media --example fast_vs_exact -- DIR [MIN_SIDE...]`
//!
//! For every image file in DIR: the Hamming distance between the fast and
//! the exact PDQ hash, and the time of decode+hash in each mode (file
//! reading excluded). Then median / p90 / p99 / max distance and mean times,
//! for all images and for those of 4 megapixels or more. With MIN_SIDE
//! arguments, the fast path is run with each of those minimum sides instead
//! of the built-in `FAST_MIN_SIDE` (for tuning it).

use consentry_media::{hash_bytes_tuned, HashMode, HashOptions, FAST_MIN_SIDE};
use consentry_pdq::Hasher;
use std::time::{Duration, Instant};

struct Row {
    name: String,
    megapixels: f64,
    long_side: u32,
    distance: u32,
    used_fast: bool,
    fast: Duration,
    exact: Duration,
}

fn pct(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i]
}

fn summary(label: &str, rows: &[&Row]) {
    let mut d: Vec<u32> = rows.iter().map(|r| r.distance).collect();
    d.sort_unstable();
    let n = rows.len().max(1) as f64;
    let mean_ms =
        |f: &dyn Fn(&Row) -> Duration| rows.iter().map(|r| f(r).as_secs_f64()).sum::<f64>() * 1000.0 / n;
    let (tf, te) = (mean_ms(&|r| r.fast), mean_ms(&|r| r.exact));
    println!(
        "{label}: n={} (fast path used on {}) distance median {} p90 {} p99 {} max {} | mean ms/image fast {:.2} exact {:.2} (×{:.1})",
        rows.len(),
        rows.iter().filter(|r| r.used_fast).count(),
        pct(&d, 50.0),
        pct(&d, 90.0),
        pct(&d, 99.0),
        d.last().copied().unwrap_or(0),
        tf,
        te,
        te / tf
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: fast_vs_exact DIR [MIN_SIDE...]");
    let mut sides: Vec<u32> = args.map(|a| a.parse().expect("MIN_SIDE is a number")).collect();
    if sides.is_empty() {
        sides.push(FAST_MIN_SIDE);
    }
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("readable directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
            matches!(ext.as_str(), "jpg" | "jpeg" | "png" | "gif" | "webp" | "bmp" | "tif" | "tiff")
        })
        .collect();
    files.sort();
    let mut hasher = Hasher::new();
    let exact_opts = HashOptions { mode: HashMode::Exact, ..HashOptions::default() };
    let fast_opts = HashOptions { mode: HashMode::Fast, ..HashOptions::default() };
    for side in sides {
        println!("== fast path minimum side {side} px ==");
        let mut rows = Vec::new();
        for path in &files {
            let bytes = std::fs::read(path).expect("readable file");
            let t = Instant::now();
            let exact = match hash_bytes_tuned(&bytes, &exact_opts, &mut hasher, side) {
                Ok(h) => h,
                Err(e) => {
                    println!("{}: {e}", path.display());
                    continue;
                }
            };
            let te = t.elapsed();
            let t = Instant::now();
            let fast = hash_bytes_tuned(&bytes, &fast_opts, &mut hasher, side)
                .expect("fast decodes what exact decodes");
            let tf = t.elapsed();
            let row = Row {
                name: path.file_name().unwrap().to_string_lossy().into_owned(),
                megapixels: f64::from(exact.info.width) * f64::from(exact.info.height) / 1e6,
                long_side: exact.info.width.max(exact.info.height),
                distance: fast.pdq.hash.distance(&exact.pdq.hash),
                used_fast: fast.mode == HashMode::Fast,
                fast: tf,
                exact: te,
            };
            println!(
                "{:<14} {:>6.2} MP {:>5}×{:<5} fast {:>5}×{:<5} distance {:>2} quality {:>3}/{:>3} fast {:>7.2} ms exact {:>7.2} ms",
                row.name,
                row.megapixels,
                exact.info.width,
                exact.info.height,
                fast.decoded_width,
                fast.decoded_height,
                row.distance,
                fast.pdq.quality,
                exact.pdq.quality,
                tf.as_secs_f64() * 1000.0,
                te.as_secs_f64() * 1000.0
            );
            rows.push(row);
        }
        summary("all", &rows.iter().collect::<Vec<_>>());
        summary(">=4MP", &rows.iter().filter(|r| r.megapixels >= 4.0).collect::<Vec<_>>());
        summary("long side <=1280px", &rows.iter().filter(|r| r.long_side <= 1280).collect::<Vec<_>>());
    }
}
