//! Times consentry-derive's query extraction and search against PDQ on one image:
//! `cargo run --release -p consentry-eval --example derive_cost -- IMAGE [N]`
use consentry_derive::{DeriveIndex, Extractor, Params, Pixels};
use consentry_eval::transforms::{decode_rgb, fit_longest};
use consentry_pdq::PixelFormat;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let img = decode_rgb(&std::fs::read(&args[1]).expect("read")).expect("decode");
    let img = fit_longest(&img, 1280);
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20);
    let px = Pixels::new(img.width(), img.height(), PixelFormat::Rgb8, img.as_raw()).unwrap();
    let mut ex = Extractor::new();
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
