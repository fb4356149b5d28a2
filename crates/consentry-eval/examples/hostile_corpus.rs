//! A mutation campaign over a folder of real photos (the corpus of `../shared/corpus`): each file
//! is damaged N times (random bytes overwritten, truncated, a run of bytes duplicated elsewhere,
//! header bits flipped) and every copy goes through what an upload goes through —
//! `consentry_media::fuzz_one` (probe, decode under limits, PDQ in both modes, frames) and, when it
//! decodes, consentry-derive's query and signature extraction. A panic is caught, reported and
//! its input written to `$OUT/panic_*`; a copy that takes over a second is written to `$OUT/slow_*`
//! (`OUT`: the temporary directory by default). Complements the cargo-fuzz target (`fuzz/`), which needs a nightly
//! toolchain, and the hostile-input tests, which use small generated files.
//!
//! `[SEED=N] [ONLY=NAME] [OUT=DIR] cargo run --release -p consentry-eval --example hostile_corpus -- CORPUS [N]`
use consentry_eval::rng::Rng;
use std::time::Instant;

/// Reads the N of the command line (copies per file, default 20).
fn main() {
    let dir = std::env::args().nth(1).unwrap();
    let per: usize = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(20);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x != "tsv"))
        .collect();
    files.sort();
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = Rng::new(std::env::var("SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(12345));
    let only = std::env::var("ONLY").ok();
    let out_dir = std::env::var_os("OUT").map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    let (mut ok, mut err, mut panics, mut slow) = (0, 0, 0, 0.0f64);
    let mut ex = consentry_derive::Extractor::new();
    for f in &files {
        if only.as_ref().is_some_and(|o| !f.to_string_lossy().contains(o.as_str())) {
            continue;
        }
        let bytes = std::fs::read(f).unwrap();
        if bytes.len() < 64 {
            continue;
        }
        for i in 0..per {
            let mut b = bytes.clone();
            match i % 4 {
                0 => {
                    for _ in 0..1 + rng.next_u64() % 16 {
                        let p = (rng.next_u64() as usize) % b.len();
                        b[p] = rng.next_u64() as u8;
                    }
                }
                1 => {
                    let p = 16 + (rng.next_u64() as usize) % (b.len() - 16);
                    b.truncate(p);
                }
                2 => {
                    let p = (rng.next_u64() as usize) % b.len();
                    let l = (rng.next_u64() as usize % 256).min(b.len() - p);
                    let s: Vec<u8> = b[p..p + l].to_vec();
                    let q = (rng.next_u64() as usize) % b.len();
                    b.splice(q..q, s);
                }
                _ => {
                    for _ in 0..1 + rng.next_u64() % 4 {
                        let p = (rng.next_u64() as usize) % 2048.min(b.len());
                        b[p] ^= 1 << (rng.next_u64() % 8);
                    }
                }
            }
            let t = Instant::now();
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let h = consentry_media::fuzz_one(&b);
                if let Ok(d) = consentry_media::decode(&b, &Default::default()) {
                    let rgb = d.to_rgb8();
                    if let Ok(px) = consentry_derive::Pixels::new(
                        d.image_ref().width(),
                        d.image_ref().height(),
                        consentry_pdq::PixelFormat::Rgb8,
                        &rgb,
                    ) {
                        let _ = ex.query(&px);
                        let _ = ex.signature(&px);
                    }
                }
                h.is_ok()
            }));
            let s = t.elapsed().as_secs_f64();
            if s > 1.0 {
                let out = out_dir.join(format!("slow_{}_{}", f.file_name().unwrap().to_string_lossy(), i));
                std::fs::write(&out, &b).unwrap();
                eprintln!("SLOW {:.2}s {}", s, out.display());
            }
            if s > slow {
                slow = s;
                eprintln!("slowest so far {:.2}s {} case {}", s, f.display(), i);
            }
            match r {
                Ok(true) => ok += 1,
                Ok(false) => err += 1,
                Err(_) => {
                    panics += 1;
                    let out =
                        out_dir.join(format!("panic_{}_{}", f.file_name().unwrap().to_string_lossy(), i));
                    std::fs::write(&out, &b).unwrap();
                    eprintln!("PANIC {}", out.display());
                }
            }
        }
    }
    println!("ok {ok} err {err} panics {panics} slowest {slow:.2}s");
}
