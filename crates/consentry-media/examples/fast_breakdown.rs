//! Where the fast path's time goes on large photos: decode (bytes → pixels) versus PDQ.
//!
//! `cargo run --release -p consentry-media --example fast_breakdown -- DIR [MIN_MEGAPIXELS]`
//!
//! For every image of at least MIN_MEGAPIXELS (default 4): its size, the pixels the fast path
//! hashes, and the best of 3 runs of fast decode+hash, of PDQ alone on those pixels, and of
//! exact decode+hash.

use consentry_media::{hash_bytes, probe, HashMode, HashOptions};
use consentry_pdq::Hasher;
use std::time::{Duration, Instant};

fn best<T>(mut f: impl FnMut() -> T) -> (T, Duration) {
    let mut best = Duration::MAX;
    let mut out = None;
    for _ in 0..3 {
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed());
        out = Some(r);
    }
    (out.expect("ran"), best)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: fast_breakdown DIR [MIN_MEGAPIXELS]");
    let min_mp: f64 = args.next().map(|a| a.parse().expect("a number")).unwrap_or(4.0);
    let mut files: Vec<_> =
        std::fs::read_dir(&dir).expect("readable DIR").flatten().map(|e| e.path()).collect();
    files.sort();
    let mut hasher = Hasher::new();
    let (mut sum_fast, mut sum_exact, mut sum_pdq) = (0.0, 0.0, 0.0);
    for path in files {
        let Ok(bytes) = std::fs::read(&path) else { continue };
        let Ok(info) = probe(&bytes) else { continue };
        let mp = f64::from(info.width) * f64::from(info.height) / 1e6;
        if mp < min_mp {
            continue;
        }
        let fast_opts = HashOptions { mode: HashMode::Fast, ..HashOptions::default() };
        let exact_opts = HashOptions { mode: HashMode::Exact, ..HashOptions::default() };
        let (fast, t_fast) = best(|| hash_bytes(&bytes, &fast_opts, &mut hasher).expect("hashes"));
        let (_, t_exact) = best(|| hash_bytes(&bytes, &exact_opts, &mut hasher).expect("hashes"));
        // PDQ alone on a grey image of the size the fast path hashed.
        let luma = vec![128u8; (fast.decoded_width * fast.decoded_height) as usize];
        let img = consentry_pdq::ImageRef::new(
            fast.decoded_width,
            fast.decoded_height,
            consentry_pdq::PixelFormat::Luma8,
            &luma,
        )
        .expect("valid");
        let (_, t_pdq) = best(|| hasher.hash(&img));
        sum_fast += t_fast.as_secs_f64();
        sum_exact += t_exact.as_secs_f64();
        sum_pdq += t_pdq.as_secs_f64();
        println!(
            "{}\t{}x{}\t{:.1} MP\thashed {}x{}\tfast {:.1} ms (pdq {:.1})\texact {:.1} ms",
            path.file_name().unwrap_or_default().to_string_lossy(),
            info.width,
            info.height,
            mp,
            fast.decoded_width,
            fast.decoded_height,
            t_fast.as_secs_f64() * 1e3,
            t_pdq.as_secs_f64() * 1e3,
            t_exact.as_secs_f64() * 1e3
        );
    }
    println!(
        "sum: fast {:.0} ms (of which PDQ {:.0} ms), exact {:.0} ms",
        sum_fast * 1e3,
        sum_pdq * 1e3,
        sum_exact * 1e3
    );
}
