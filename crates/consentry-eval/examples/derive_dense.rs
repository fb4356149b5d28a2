//! Experiment: a dense check under the keypoints' transform for pairs the rule's score misses.
//! For every (query, protected) pair with at least two inliers and a score under the rule's,
//! the protected image's coarse grid of cell means is mapped into the query through the best
//! hypothesis; the check is how the cells agree (Pearson r, and the signs of neighbouring
//! cells' differences). Prints how true and false pairs spread.
//! `[TUNE_SEED=7] [GRID=12] cargo run --release -p consentry-eval --example derive_dense -- CORPUS [N_PROTECTED] [N_DISTRACTORS]`
use consentry_derive::{inlier_transform, DeriveIndex, Params, WORK_SIDE};
use consentry_eval::derive_matcher::pixels as px;
use consentry_eval::rng::{fnv1a, Rng};
use consentry_eval::transforms::{decode_rgb, fit_longest, select, standard_set, telegram_recompress};
use consentry_eval::{load_corpus, split};
use image::RgbImage;
use rayon::prelude::*;

/// Summed-area table of the luma of an image.
struct Integral {
    w: usize,
    h: usize,
    s: Vec<f64>,
}

impl Integral {
    fn new(im: &RgbImage) -> Integral {
        let (w, h) = (im.width() as usize, im.height() as usize);
        let mut s = vec![0.0; (w + 1) * (h + 1)];
        for y in 0..h {
            let mut row = 0.0;
            for x in 0..w {
                let p = im.get_pixel(x as u32, y as u32).0;
                row += 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]);
                s[(y + 1) * (w + 1) + x + 1] = s[y * (w + 1) + x + 1] + row;
            }
        }
        Integral { w, h, s }
    }
    /// Working-image units per pixel.
    fn work_scale(&self) -> f64 {
        WORK_SIDE as f64 / self.w.max(self.h) as f64
    }
    /// Mean over a box in working-image coordinates; `None` when it leaves the image.
    fn mean(&self, x0: f64, y0: f64, x1: f64, y1: f64) -> Option<f64> {
        let k = 1.0 / self.work_scale();
        let (x0, y0, x1, y1) = (x0 * k, y0 * k, x1 * k, y1 * k);
        let m = 1.0;
        if x0 < -m || y0 < -m || x1 > self.w as f64 + m || y1 > self.h as f64 + m {
            return None;
        }
        let c = |v: f64, hi: usize| (v.round().max(0.0) as usize).min(hi);
        let (a0, b0, a1, b1) = (c(x0, self.w), c(y0, self.h), c(x1, self.w), c(y1, self.h));
        if a1 <= a0 || b1 <= b0 {
            return None;
        }
        let at = |x: usize, y: usize| self.s[y * (self.w + 1) + x];
        Some((at(a1, b1) - at(a0, b1) - at(a1, b0) + at(a0, b0)) / ((a1 - a0) * (b1 - b0)) as f64)
    }
}

/// (Pearson r, signed neighbour pairs agreeing, signed pairs, cells inside).
fn dense(p: &Integral, q: &Integral, t: [f32; 4], g: usize, tau: f64) -> (f64, usize, usize, usize) {
    let (pw, ph) = (p.w as f64 * p.work_scale(), p.h as f64 * p.work_scale());
    let (cw, ch) = (pw / g as f64, ph / g as f64);
    let [sc, ss, tx, ty] = t.map(f64::from);
    let s = (sc * sc + ss * ss).sqrt();
    let mut a = vec![None; g * g];
    let mut b = vec![None; g * g];
    for j in 0..g {
        for i in 0..g {
            let (x0, y0) = (i as f64 * cw, j as f64 * ch);
            let pm = p.mean(x0, y0, x0 + cw, y0 + ch).unwrap();
            let (cx, cy) = (x0 + cw / 2.0, y0 + ch / 2.0);
            let (qx, qy) = (sc * cx - ss * cy + tx, ss * cx + sc * cy + ty);
            let (hw, hh) = (cw * s / 2.0, ch * s / 2.0);
            if let Some(qm) = q.mean(qx - hw, qy - hh, qx + hw, qy + hh) {
                a[j * g + i] = Some(pm);
                b[j * g + i] = Some(qm);
            }
        }
    }
    let pairs: Vec<(f64, f64)> = a.iter().zip(&b).filter_map(|(x, y)| Some(((*x)?, (*y)?))).collect();
    let n = pairs.len() as f64;
    let r = if pairs.len() >= 3 {
        let (ma, mb) = pairs.iter().fold((0.0, 0.0), |(u, v), (x, y)| (u + x / n, v + y / n));
        let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
        for (x, y) in &pairs {
            sab += (x - ma) * (y - mb);
            saa += (x - ma) * (x - ma);
            sbb += (y - mb) * (y - mb);
        }
        sab / (saa * sbb).sqrt().max(1e-9)
    } else {
        0.0
    };
    let (mut agree, mut signed) = (0, 0);
    for j in 0..g {
        for i in 0..g {
            for (di, dj) in [(1, 0), (0, 1)] {
                let (i2, j2) = (i + di, j + dj);
                if i2 >= g || j2 >= g {
                    continue;
                }
                let (k1, k2) = (j * g + i, j2 * g + i2);
                if let (Some(p1), Some(p2), Some(q1), Some(q2)) = (a[k1], a[k2], b[k1], b[k2]) {
                    let dp = p1 - p2;
                    if dp.abs() >= tau {
                        signed += 1;
                        if (q1 - q2) * dp > 0.0 {
                            agree += 1;
                        }
                    }
                }
            }
        }
    }
    (r, agree, signed, pairs.len())
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let corpus = load_corpus(std::path::Path::new(&a[1])).unwrap();
    let np: usize = a.get(2).and_then(|s| s.parse().ok()).unwrap_or(200);
    let nd: usize = a.get(3).and_then(|s| s.parse().ok()).unwrap_or(100);
    let seed: u64 = std::env::var("TUNE_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(7);
    let g: usize = std::env::var("GRID").ok().and_then(|v| v.parse().ok()).unwrap_or(12);
    let tau: f64 = std::env::var("TAU").ok().and_then(|v| v.parse().ok()).unwrap_or(4.0);
    let lo: u32 = std::env::var("LOW").ok().and_then(|v| v.parse().ok()).unwrap_or(16);
    let sp = split(corpus.len(), np, seed);
    let dis: Vec<usize> = sp.distractors.iter().copied().take(nd).collect();
    let params = Params { min_inliers: 2, ..Params::default() };
    let rule = Params::default();
    let sigs: Vec<_> = sp
        .protected
        .par_iter()
        .map(|&i| {
            let im = decode_rgb(&corpus[i].bytes).unwrap();
            (i, consentry_eval::derive_matcher::example_extractor().signature(&px(&im)), Integral::new(&im))
        })
        .collect();
    let mut index = DeriveIndex::new(params);
    for (i, s, _) in &sigs {
        index.insert(*i as u64, s.clone()).unwrap();
    }
    let of: std::collections::HashMap<usize, usize> =
        sigs.iter().enumerate().map(|(k, s)| (s.0, k)).collect();
    let labels = std::env::var("TRANSFORMS").unwrap_or_else(|_| {
        "crop-offcentre@20%,crop-all@20%,undress-donor@50%,pad-pattern@30%,screenshot@25%".to_string()
    });
    let trs = select(standard_set(), &labels);
    let imgs: Vec<usize> = sp.protected.iter().chain(&dis).copied().collect();
    // (transform, true, query image, protected image, inliers, score, passes the rule, r, agree, signed, inside)
    type Row = (usize, bool, usize, usize, usize, u32, bool, f64, usize, usize, usize);
    let rows: Vec<Row> = imgs
        .par_iter()
        .flat_map(|&i| {
            let im = fit_longest(&decode_rgb(&corpus[i].bytes).unwrap(), 1280);
            let donor = fit_longest(&decode_rgb(&corpus[dis[i % dis.len()]].bytes).unwrap(), 1280);
            let mut ex = consentry_eval::derive_matcher::example_extractor();
            let mut out = Vec::new();
            for (t, tr) in trs.iter().enumerate() {
                let mut rng = Rng::derive(7, i as u64, fnv1a(&tr.label()));
                let q = decode_rgb(&telegram_recompress(&tr.apply(&im, &donor, &mut rng))).unwrap();
                let f = ex.query(&px(&q));
                let qi = Integral::new(&q);
                let mut seen = false;
                for (pi, _) in index.search_details(&f) {
                    let pi = pi as usize;
                    let (sig, pint) = (&sigs[of[&pi]].1, &sigs[of[&pi]].2);
                    let pass = consentry_derive::match_pair(&rule, pi as u64, sig, &f).is_some();
                    let (d, tf) = inlier_transform(&params, sig, &f);
                    let sc: u32 =
                        d.iter().map(|&x| (params.max_hamming + 1).saturating_sub(u32::from(x))).sum();
                    seen |= pi == i;
                    if d.len() < 2 || sc < lo {
                        if pi == i {
                            out.push((t, true, i, pi, d.len(), sc, pass, 0.0, 0, 0, 0));
                        }
                        continue;
                    }
                    let (r, ag, sg, ins) = dense(pint, &qi, tf, g, tau);
                    out.push((t, pi == i, i, pi, d.len(), sc, pass, r, ag, sg, ins));
                }
                if !seen && sp.protected.contains(&i) {
                    let pass = consentry_derive::match_pair(&rule, i as u64, &sigs[of[&i]].1, &f).is_some();
                    out.push((t, true, i, i, 0, 0, pass, 0.0, 0, 0, 0));
                }
            }
            out
        })
        .collect();
    let ntrue: Vec<usize> = (0..trs.len()).map(|t| rows.iter().filter(|r| r.0 == t && r.1).count()).collect();
    let found: Vec<usize> =
        (0..trs.len()).map(|t| rows.iter().filter(|r| r.0 == t && r.1 && r.6).count()).collect();
    println!("grid {g}, tau {tau}, pairs scored from {lo}; transforms {labels}");
    for (t, tr) in trs.iter().enumerate() {
        println!("{}: true {} found by the rule {}", tr.label(), ntrue[t], found[t]);
    }
    let verbose = std::env::var("SHOW").is_ok();
    for r in &rows {
        if !r.6 && (verbose || r.1) {
            println!(
                "{} t{} {} -> {} n={} s={} r={:.3} agree {}/{} inside {}",
                if r.1 { "TRUE-missed" } else { "false" },
                r.0,
                corpus[r.2].name,
                corpus[r.3].name,
                r.4,
                r.5,
                r.7,
                r.8,
                r.9,
                r.10
            );
        }
    }
    // False pairs (not passing the rule) with the highest dense values.
    let mut fl: Vec<&Row> = rows.iter().filter(|r| !r.1 && !r.6 && r.4 >= 2).collect();
    fl.sort_by(|a, b| b.7.total_cmp(&a.7));
    for r in fl.iter().take(15) {
        println!(
            "top false t{} {} -> {} n={} s={} r={:.3} agree {}/{} inside {}",
            r.0, corpus[r.2].name, corpus[r.3].name, r.4, r.5, r.7, r.8, r.9, r.10
        );
    }
    for min_inside in [12usize, 24, 36] {
        for rthr in [0.8f64, 0.85, 0.9, 0.93, 0.95, 0.97] {
            for slo in [lo, 20, 25] {
                let pass = |r: &Row| r.4 >= 2 && r.5 >= slo && r.10 >= min_inside && r.7 >= rthr;
                let gained: Vec<String> = (0..trs.len())
                    .map(|t| rows.iter().filter(|r| r.0 == t && r.1 && !r.6 && pass(r)).count().to_string())
                    .collect();
                let f = rows.iter().filter(|r| !r.1 && !r.6 && pass(r)).count();
                println!(
                    "inside>={min_inside:2} r>={rthr:.2} s>={slo:2}: gained {} false {f}",
                    gained.join(" ")
                );
            }
        }
    }
    for min_signed in [10usize, 20, 30] {
        for athr in [0.8f64, 0.85, 0.9, 0.95] {
            let pass = |r: &Row| r.4 >= 2 && r.9 >= min_signed && r.8 as f64 >= athr * r.9 as f64;
            let gained: Vec<String> = (0..trs.len())
                .map(|t| rows.iter().filter(|r| r.0 == t && r.1 && !r.6 && pass(r)).count().to_string())
                .collect();
            let f = rows.iter().filter(|r| !r.1 && !r.6 && pass(r)).count();
            println!("signed>={min_signed:2} agree>={athr:.2}: gained {} false {f}", gained.join(" "));
        }
    }
}
