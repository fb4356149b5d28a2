//! Diagnostic: where the stored corners of each protected photo go in its all-sides crop (20 % by
//! default), as the harness makes it (the photo fitted to 1280 px, cropped, Telegram-recompressed).
//! For every stored corner inside the kept window: is there a query corner within 8 working pixels on
//! a level within one of the expected one, and how far apart are their descriptors; with the best
//! hypothesis's inliers and score. Split by found / missed, and Endless Sky's landscape photos
//! (package `endless-sky-high-dpi` in the corpus manifest) apart from the rest.
//!
//! `[SEED=7] [OFFCENTRE=U,V] [ONLY=NAME,...] cargo run --release -p consentry-eval --example crop_diag -- CORPUS [FRACTION]`
//! (`OFFCENTRE`: the window starts at U·2f, V·2f instead of centred, as the harness's off-centre crops do;
//! `ONLY`: these photos of the split only)
use consentry_derive::{inlier_distances, match_pair, Params};
use consentry_eval::derive_matcher::pixels as px;
use consentry_eval::transforms::{decode_rgb, fit_longest, telegram_recompress};
use consentry_eval::{load_corpus, split};
use image::imageops;
use rayon::prelude::*;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let corpus = load_corpus(std::path::Path::new(&a[1])).unwrap();
    let f: f32 = a.get(2).and_then(|s| s.parse().ok()).unwrap_or(0.2);
    let seed: u64 = std::env::var("SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(7);
    let sp = split(corpus.len(), 200, seed);
    let p = Params::default();
    // OFFCENTRE=U,V: the window starts at U·2f, V·2f (the harness's off-centre crops: U, V in
    // [0, 0.25] or [0.75, 1]); centred (all sides) by default
    let corner: (f32, f32) = std::env::var("OFFCENTRE")
        .ok()
        .and_then(|v| v.split_once(',').map(|(a, b)| (a.parse().unwrap(), b.parse().unwrap())))
        .unwrap_or((0.5, 0.5));
    let only: Option<Vec<String>> =
        std::env::var("ONLY").ok().map(|v| v.split(',').map(String::from).collect());
    let rows: Vec<_> = sp
        .protected
        .par_iter()
        .filter(|&&i| only.as_ref().map_or(true, |o| o.contains(&corpus[i].name)))
        .map(|&i| {
            let im = decode_rgb(&corpus[i].bytes).unwrap();
            let sig = consentry_eval::derive_matcher::example_extractor().signature(&px(&im));
            let big = fit_longest(&im, 1280);
            let (w, h) = (big.width(), big.height());
            let (cx, cy) = ((w as f32 * f).round() as u32, (h as f32 * f).round() as u32);
            // where the window starts, as a fraction of the 2·f removed per axis (½: centred)
            let (ux, uy) = corner;
            let (x0, y0) = (((2 * cx) as f32 * ux).round() as u32, ((2 * cy) as f32 * uy).round() as u32);
            let c = imageops::crop_imm(&big, x0, y0, w - 2 * cx, h - 2 * cy).to_image();
            let qi = decode_rgb(&telegram_recompress(&c)).unwrap();
            let q = consentry_eval::derive_matcher::example_extractor().query(&px(&qi));
            let (ow, oh) = (im.width() as f32, im.height() as f32);
            let s0 = 512.0 / ow.max(oh);
            let (qw, qh) = (qi.width() as f32, qi.height() as f32);
            let sq = 512.0 / qw.max(qh);
            let enl = 1.0 / (1.0 - 2.0 * f);
            let (mut inwin, mut near, mut d31, mut d20) = (0, 0, 0, 0);
            for k in &sig.keypoints {
                let (fx, fy) = (f32::from(k.x) / 8.0 / (s0 * ow), f32::from(k.y) / 8.0 / (s0 * oh));
                let (gx, gy) = ((fx - 2.0 * f * ux) / (1.0 - 2.0 * f), (fy - 2.0 * f * uy) / (1.0 - 2.0 * f));
                if !(0.02..0.98).contains(&gx) || !(0.02..0.98).contains(&gy) {
                    continue;
                }
                inwin += 1;
                let (xq, yq) = (gx * qw * sq, gy * qh * sq);
                let lq = 3.0 * (f32::from(k.level) / 2.0 + enl.log2());
                let mut best = u32::MAX;
                for t in &q.keypoints {
                    if (f32::from(t.level) - lq).abs() > 1.01 {
                        continue;
                    }
                    let (dx, dy) = (f32::from(t.x) / 8.0 - xq, f32::from(t.y) / 8.0 - yq);
                    if dx * dx + dy * dy > 64.0 {
                        continue;
                    }
                    let d: u32 = (0..4).map(|j| (t.desc[j] ^ k.desc[j]).count_ones()).sum();
                    best = best.min(d);
                }
                if best < u32::MAX {
                    near += 1;
                }
                if best <= 31 {
                    d31 += 1;
                }
                if best <= 20 {
                    d20 += 1;
                }
            }
            let hit = match_pair(&p, 1, &sig, &q);
            let inl = inlier_distances(&p, &sig, &q);
            // the rule's score, Σ (max_hamming + 1 − d)
            let sc: u32 = inl.iter().map(|&d| (p.max_hamming + 1).saturating_sub(u32::from(d))).sum();
            (corpus[i].name.clone(), hit.is_some(), inwin, near, d31, d20, inl.len(), sc, q.keypoints.len())
        })
        .collect();
    let manifest =
        std::fs::read_to_string(std::path::Path::new(&a[1]).join("manifest.tsv")).unwrap_or_default();
    let landscapes: std::collections::HashSet<&str> = manifest
        .lines()
        .filter(|l| l.split('\t').nth(2) == Some("endless-sky-high-dpi"))
        .filter_map(|l| l.split('\t').next())
        .collect();
    let sky = |n: &str| landscapes.contains(n);
    for pass in [false, true] {
        for is_sky in [true, false] {
            let v: Vec<_> = rows.iter().filter(|r| r.1 == pass && sky(&r.0) == is_sky).collect();
            if v.is_empty() {
                continue;
            }
            let m = |g: &dyn Fn(&&_) -> usize| v.iter().map(g).sum::<usize>() as f32 / v.len() as f32;
            println!(
                "pass={pass} landscape={is_sky}: {} images; stored corners in the window {:.1}, with a query corner near {:.1}, desc<=31 {:.1}, <=20 {:.1}; best inliers {:.1}, score {:.1}; query corners {:.0}",
                v.len(),
                m(&|r| r.2), m(&|r| r.3), m(&|r| r.4), m(&|r| r.5), m(&|r| r.6), m(&|r| r.7 as usize), m(&|r| r.8)
            );
            if !pass {
                for r in v.iter().take(20) {
                    println!(
                        "   {} win {} near {} d31 {} d20 {} inl {} score {}",
                        r.0, r.2, r.3, r.4, r.5, r.6, r.7
                    );
                }
            }
        }
    }
}
