//! Local features: Harris corners on a small pyramid and 256-bit BRIEF
//! descriptors (fixed, seeded test pairs) of the smoothed patch around each.

use crate::gray::{resize, smooth, Gray};

/// Radius of the square patch a descriptor samples.
pub(crate) const PATCH_RADIUS: i32 = 15;
/// Corners closer than this to an edge of their level are dropped.
const MARGIN: usize = PATCH_RADIUS as usize + 1;
/// Minimum Harris response (intensities 0–255): flat or noisy areas have none.
const MIN_RESPONSE: f32 = 400.0;

/// A detected corner with its descriptor, in the coordinates of level 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Corner {
    pub x: f32,
    pub y: f32,
    pub level: u8,
    pub response: f32,
    pub desc: [u64; 4],
}

/// BRIEF test pairs: 256 × (x1, y1, x2, y2), Gaussian around the centre
/// (σ = patch/5, as ORB), clipped to the patch; deterministic.
pub(crate) fn brief_pairs() -> Vec<[i8; 4]> {
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut gauss = move || -> i8 {
        // Box–Muller from two uniforms.
        let u1 = ((next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (next() >> 11) as f64 / (1u64 << 53) as f64;
        let g = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * 6.2;
        g.round().clamp(-f64::from(PATCH_RADIUS), f64::from(PATCH_RADIUS)) as i8
    };
    let mut v = Vec::with_capacity(256);
    while v.len() < 256 {
        let p = [gauss(), gauss(), gauss(), gauss()];
        if (p[0], p[1]) != (p[2], p[3]) {
            v.push(p);
        }
    }
    v
}

/// Harris response of a smoothed image.
fn harris(s: &Gray) -> Gray {
    let (w, h) = (s.w, s.h);
    let mut xx = Gray { w, h, px: vec![0.0; w * h] };
    let mut yy = xx.clone();
    let mut xy = xx.clone();
    for y in 1..h.saturating_sub(1) {
        for x in 1..w - 1 {
            let gx = 0.5 * (s.at(x + 1, y) - s.at(x - 1, y));
            let gy = 0.5 * (s.at(x, y + 1) - s.at(x, y - 1));
            let i = y * w + x;
            xx.px[i] = gx * gx;
            yy.px[i] = gy * gy;
            xy.px[i] = gx * gy;
        }
    }
    let (xx, yy, xy) = (smooth(&xx), smooth(&yy), smooth(&xy));
    let px = (0..w * h)
        .map(|i| {
            let (a, b, c) = (xx.px[i], yy.px[i], xy.px[i]);
            a * b - c * c - 0.04 * (a + b) * (a + b)
        })
        .collect();
    Gray { w, h, px }
}

/// One pyramid level: the smoothed image used by descriptors and the corners
/// (local maxima of the response, 5×5) found on it, best first within cells.
struct Level {
    blurred: Gray,
    /// Scale from this level's pixels to level 0's.
    to0: f32,
    cand: Vec<(f32, usize, usize)>,
}

fn level(img: &Gray, to0: f32) -> Level {
    let s1 = smooth(img);
    let r = harris(&s1);
    let blurred = smooth(&s1);
    let (w, h) = (img.w, img.h);
    let mut cand = Vec::new();
    if w > 2 * MARGIN && h > 2 * MARGIN {
        for y in MARGIN..h - MARGIN {
            for x in MARGIN..w - MARGIN {
                let v = r.at(x, y);
                if v < MIN_RESPONSE {
                    continue;
                }
                let mut max = true;
                'n: for dy in -2i32..=2 {
                    for dx in -2i32..=2 {
                        if (dx, dy) == (0, 0) {
                            continue;
                        }
                        let u = r.at((x as i32 + dx) as usize, (y as i32 + dy) as usize);
                        // Ties: the first in raster order wins.
                        if u > v || (u == v && (dy < 0 || (dy == 0 && dx < 0))) {
                            max = false;
                            break 'n;
                        }
                    }
                }
                if max {
                    cand.push((v, x, y));
                }
            }
        }
    }
    Level { blurred, to0, cand }
}

fn describe(b: &Gray, x: usize, y: usize, pairs: &[[i8; 4]]) -> [u64; 4] {
    let mut d = [0u64; 4];
    for (k, p) in pairs.iter().enumerate() {
        let a = b.at((x as i32 + i32::from(p[0])) as usize, (y as i32 + i32::from(p[1])) as usize);
        let c = b.at((x as i32 + i32::from(p[2])) as usize, (y as i32 + i32::from(p[3])) as usize);
        if a < c {
            d[k / 64] |= 1 << (k % 64);
        }
    }
    d
}

/// How many corners to keep per level and how to spread them.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Selection {
    /// At most `per_cell` corners per `cell`×`cell` pixel cell of each level.
    Dense { cell: usize, per_cell: usize },
    /// `quota[l]` corners on level l, spread over a `grid`×`grid` partition
    /// (round robin over cells, strongest first).
    Sparse { quota: [usize; 4], grid: usize },
}

/// Pyramid of `levels` levels (each 1/√2 of the previous) over the level-0
/// image, corners selected per `sel`, described with `pairs`.
/// Corners whose descriptor is within `plane_limit` bits of the descriptor of
/// a pure intensity ramp with the patch's gradient are dropped (0: none).
pub(crate) fn extract(
    l0: &Gray,
    levels: usize,
    sel: Selection,
    pairs: &[[i8; 4]],
    plane_limit: u32,
) -> Vec<Corner> {
    let mut out = Vec::new();
    for l in 0..levels {
        let to0 = std::f32::consts::SQRT_2.powi(l as i32);
        let img = if l == 0 {
            l0.clone()
        } else {
            let tw = ((l0.w as f32 / to0).round() as usize).max(1);
            let th = ((l0.h as f32 / to0).round() as usize).max(1);
            resize(l0, tw, th)
        };
        let lv = level(&img, to0);
        let (w, h) = (img.w, img.h);
        let chosen: Vec<(f32, usize, usize)> = match sel {
            Selection::Dense { cell, per_cell } => {
                let (cw, ch) = (w.div_ceil(cell), h.div_ceil(cell));
                let mut cells: Vec<Vec<(f32, usize, usize)>> = vec![Vec::new(); cw * ch];
                for &c in &lv.cand {
                    cells[(c.2 / cell) * cw + c.1 / cell].push(c);
                }
                let mut v = Vec::new();
                for mut c in cells {
                    c.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.2, a.1).cmp(&(b.2, b.1))));
                    v.extend(c.into_iter().take(per_cell));
                }
                v
            }
            Selection::Sparse { quota, grid } => {
                let q = quota.get(l).copied().unwrap_or(0);
                let mut cells: Vec<Vec<(f32, usize, usize)>> = vec![Vec::new(); grid * grid];
                for &c in &lv.cand {
                    let gx = (c.1 * grid / w).min(grid - 1);
                    let gy = (c.2 * grid / h).min(grid - 1);
                    cells[gy * grid + gx].push(c);
                }
                for c in &mut cells {
                    c.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.2, a.1).cmp(&(b.2, b.1))));
                }
                // The lower centre of the frame (where a body usually is, and what
                // a nudify bot replaces) gets a corner every other round only:
                // more of the signature sits on the face, hair and background.
                let lower_centre = |cell: usize| {
                    let (gx, gy) = (cell % grid, cell / grid);
                    gy * 2 >= grid && gx * 4 >= grid && gx * 4 < 3 * grid
                };
                let mut taken = vec![0usize; cells.len()];
                let mut v = Vec::new();
                let mut round = 0;
                while v.len() < q {
                    let mut layer: Vec<(f32, usize, usize)> = Vec::new();
                    for (ci, c) in cells.iter().enumerate() {
                        if lower_centre(ci) && round % 2 == 1 {
                            continue;
                        }
                        if let Some(&x) = c.get(taken[ci]) {
                            taken[ci] += 1;
                            layer.push(x);
                        }
                    }
                    if layer.is_empty() && cells.iter().enumerate().all(|(ci, c)| taken[ci] >= c.len()) {
                        break;
                    }
                    layer.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.2, a.1).cmp(&(b.2, b.1))));
                    v.extend(layer.into_iter().take(q - v.len()));
                    round += 1;
                }
                v
            }
        };
        for (resp, x, y) in chosen {
            let desc = describe(&lv.blurred, x, y, pairs);
            if plane_limit > 0 && crate::verify::hamming(&desc, &ramp(&lv.blurred, x, y, pairs)) < plane_limit
            {
                continue;
            }
            out.push(Corner {
                x: (x as f32 + 0.5) * lv.to0 - 0.5,
                y: (y as f32 + 0.5) * lv.to0 - 0.5,
                level: l as u8,
                response: resp,
                desc,
            });
        }
    }
    out
}

/// The descriptor a linear ramp with the patch's mean gradient would have.
fn ramp(b: &Gray, x: usize, y: usize, pairs: &[[i8; 4]]) -> [u64; 4] {
    let r = PATCH_RADIUS as usize / 2;
    let gx = b.at(x + r, y) - b.at(x - r, y);
    let gy = b.at(x, y + r) - b.at(x, y - r);
    let mut d = [0u64; 4];
    for (k, p) in pairs.iter().enumerate() {
        let a = gx * f32::from(p[0]) + gy * f32::from(p[1]);
        let c = gx * f32::from(p[2]) + gy * f32::from(p[3]);
        if a < c {
            d[k / 64] |= 1 << (k % 64);
        }
    }
    d
}
