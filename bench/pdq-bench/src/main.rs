//! `pdq-bench FILELIST OUT.jsonl`: times, on one thread, each way of hashing
//! each listed image, and writes one JSON line per image and method.
//!
//! Methods (each timed on bytes or pixels already in memory, best of `reps`):
//! - `consentry-fast`, `consentry-exact`: decode + hash with consentry-media;
//! - `pdqhash-crate`: decode with `image` 0.23 + hash with the `pdqhash` crate;
//! - `consentry-pdq` (hash only): consentry-pdq on decoded RGB pixels;
//! - `pdqhash-crate-hash` (hash only): the `pdqhash` crate on the same pixels.
//!
//! Meta's reference (PyPI `pdqhash` + Pillow) is timed by `reference.py` on
//! the same list; `run.sh` runs both and `table.py` makes the table.

use consentry_media::{DecodeOptions, HashMode, HashOptions};
use consentry_pdq::{Hasher, ImageRef};
use std::io::Write;
use std::time::Instant;

fn best_of<T>(reps: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut last = None;
    for _ in 0..reps {
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed().as_secs_f64());
        last = Some(r);
    }
    (best, last.expect("reps >= 1"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: pdq-bench FILELIST OUT.jsonl");
        std::process::exit(2);
    }
    let reps: usize = std::env::var("REPS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let list = std::fs::read_to_string(&args[1]).expect("file list");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&args[2]).expect("output"));
    let mut hasher = Hasher::new();
    let opts = |mode| HashOptions {
        decode: DecodeOptions { apply_exif_orientation: false, ..DecodeOptions::default() },
        mode,
        dihedral: false,
    };
    let (fast, exact) = (opts(HashMode::Fast), opts(HashMode::Exact));
    for path in list.lines().filter(|l| !l.is_empty()) {
        let bytes = std::fs::read(path).expect("read image");
        let mut rec = |method: &str, secs: f64, hash: String, w: u32, h: u32| {
            let line = serde_json::json!({"path": path, "method": method, "secs": secs, "hash": hash, "width": w, "height": h});
            writeln!(out, "{line}").expect("write");
        };
        let (t, r) = best_of(reps, || consentry_media::hash_bytes(&bytes, &fast, &mut hasher));
        let Ok(r) = r else {
            eprintln!("{path}: skipped, consentry cannot decode it");
            continue;
        };
        let (w, h) = (r.info.width, r.info.height);
        rec("consentry-fast", t, r.pdq.hash.to_hex(), w, h);
        let (t, r) =
            best_of(reps, || consentry_media::hash_bytes(&bytes, &exact, &mut hasher).expect("exact"));
        rec("consentry-exact", t, r.pdq.hash.to_hex(), w, h);

        let (t, r) = best_of(reps, || {
            let img = image023::load_from_memory(&bytes).expect("image 0.23 decode");
            pdqhash::generate_pdq_full_size(&img)
        });
        rec("pdqhash-crate", t, hex(&r.0), w, h);

        // Hash only: the same RGB pixels for both.
        let decoded = consentry_media::decode(&bytes, &exact.decode).expect("decode");
        let rgb = to_rgb(&decoded);
        let img =
            ImageRef::new(decoded.width, decoded.height, consentry_pdq::PixelFormat::Rgb8, &rgb).unwrap();
        let (t, r) = best_of(reps, || hasher.hash(&img));
        rec("consentry-pdq", t, r.hash.to_hex(), w, h);
        let dynimg = image023::DynamicImage::ImageRgb8(
            image023::RgbImage::from_raw(decoded.width, decoded.height, rgb.clone()).unwrap(),
        );
        let (t, r) = best_of(reps, || pdqhash::generate_pdq_full_size(&dynimg));
        rec("pdqhash-crate-hash", t, hex(&r.0), w, h);
    }
}

fn to_rgb(d: &consentry_media::DecodedImage) -> Vec<u8> {
    use consentry_pdq::PixelFormat::*;
    match d.format {
        Rgb8 => d.data.clone(),
        Rgba8 => d.data.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
        Luma8 => d.data.iter().flat_map(|&g| [g, g, g]).collect(),
        LumaA8 => d.data.chunks_exact(2).flat_map(|p| [p[0], p[0], p[0]]).collect(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
