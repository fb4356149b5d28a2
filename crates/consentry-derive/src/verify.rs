//! Correspondences between a query's keypoints and one protected image's,
//! and their geometric verification.

use crate::{Keypoint, Params};

/// A candidate correspondence: query keypoint `q`, stored keypoint `p`, their
/// descriptors' Hamming distance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Corr {
    pub dist: u16,
    pub p: u16,
    pub q: u16,
}

#[inline]
pub(crate) fn hamming(a: &[u64; 4], b: &[u64; 4]) -> u32 {
    (a[0] ^ b[0]).count_ones()
        + (a[1] ^ b[1]).count_ones()
        + (a[2] ^ b[2]).count_ones()
        + (a[3] ^ b[3]).count_ones()
}

/// Evidence of a set of inliers: Σ (max_hamming + 1 − distance), so an exact
/// descriptor agreement weighs `max_hamming + 1` and a borderline one 1.
pub(crate) fn score(params: &Params, dists: &[u16]) -> u32 {
    dists.iter().map(|&d| (params.max_hamming + 1).saturating_sub(u32::from(d))).sum()
}

/// The inliers (their descriptor distances) of the hypothesis with the
/// highest [`score`] (the first in correspondence order among equals).
pub(crate) fn best_inliers(
    params: &Params,
    stored: &[Keypoint],
    query: &[Keypoint],
    query_per_octave: u8,
    corrs: &mut Vec<Corr>,
) -> Vec<u16> {
    best_hypothesis(params, stored, query, query_per_octave, corrs).0
}

/// [`best_inliers`] with the hypothesis's similarity transform from stored to query positions
/// (working-image pixels): `[s·cos, s·sin, tx, ty]`, zeros when there is none.
pub(crate) fn best_hypothesis(
    params: &Params,
    stored: &[Keypoint],
    query: &[Keypoint],
    query_per_octave: u8,
    corrs: &mut Vec<Corr>,
) -> (Vec<u16>, [f32; 4]) {
    corrs.sort_unstable();
    corrs.dedup();
    corrs.truncate(params.max_corrs);
    let n = corrs.len();
    if n < params.min_inliers {
        return (Vec::new(), [0.0; 4]);
    }
    let pt = |k: &Keypoint| (f32::from(k.x) / 8.0, f32::from(k.y) / 8.0);
    let ps: Vec<(f32, f32, f32)> = corrs
        .iter()
        .map(|c| {
            let k = &stored[c.p as usize];
            let (x, y) = pt(k);
            (x, y, f32::from(k.level))
        })
        .collect();
    let q_half = 2.0 / f32::from(query_per_octave.max(1));
    let qs: Vec<(f32, f32, f32)> = corrs
        .iter()
        .map(|c| {
            let k = &query[c.q as usize];
            let (x, y) = pt(k);
            // the level in half octaves, the stored levels' unit
            (x, y, f32::from(k.level) * q_half)
        })
        .collect();
    let eps2 = params.inlier_px * params.inlier_px;
    let (cos_max, min_sep2) = (params.max_rotation.cos(), params.min_separation * params.min_separation);
    let mut best: Vec<u16> = Vec::new();
    let mut best_t = [0.0f32; 4];
    let mut cur: Vec<u16> = Vec::with_capacity(n);
    let mut used_p = vec![false; stored.len()];
    let mut used_q = vec![false; query.len()];
    let gap2 = params.min_inlier_gap * params.min_inlier_gap;
    let mut kept: Vec<(f32, f32)> = Vec::with_capacity(n);
    for a in 0..n {
        for b in a + 1..n {
            if corrs[a].p == corrs[b].p || corrs[a].q == corrs[b].q {
                continue;
            }
            let (vpx, vpy) = (ps[b].0 - ps[a].0, ps[b].1 - ps[a].1);
            let (vqx, vqy) = (qs[b].0 - qs[a].0, qs[b].1 - qs[a].1);
            let lp2 = vpx * vpx + vpy * vpy;
            let lq2 = vqx * vqx + vqy * vqy;
            if lp2 < min_sep2 || lq2 < min_sep2 {
                continue;
            }
            let s = (lq2 / lp2).sqrt();
            if s > params.max_scale || s < 1.0 / params.max_scale {
                continue;
            }
            // Rotation: cos and sin of the angle from vp to vq.
            let denom = (lp2 * lq2).sqrt();
            let cos = (vpx * vqx + vpy * vqy) / denom;
            let sin = (vpx * vqy - vpy * vqx) / denom;
            if cos < cos_max {
                continue;
            }
            // Expected level difference (half-octaves) for this scale.
            let dl = 2.0 * s.log2();
            let (sc, ss) = (s * cos, s * sin);
            let tx = qs[a].0 - (sc * ps[a].0 - ss * ps[a].1);
            let ty = qs[a].1 - (ss * ps[a].0 + sc * ps[a].1);
            cur.clear();
            kept.clear();
            for i in 0..n {
                let (px, py, pl) = ps[i];
                let (qx, qy, ql) = qs[i];
                if ((ql - pl) - dl).abs() > params.level_tolerance {
                    continue;
                }
                let ex = sc * px - ss * py + tx - qx;
                let ey = ss * px + sc * py + ty - qy;
                if ex * ex + ey * ey <= eps2
                    && !used_p[corrs[i].p as usize]
                    && !used_q[corrs[i].q as usize]
                    && kept.iter().all(|&(kx, ky)| (kx - px) * (kx - px) + (ky - py) * (ky - py) >= gap2)
                {
                    kept.push((px, py));
                    used_p[corrs[i].p as usize] = true;
                    used_q[corrs[i].q as usize] = true;
                    cur.push(corrs[i].dist);
                }
            }
            for c in corrs.iter() {
                used_p[c.p as usize] = false;
                used_q[c.q as usize] = false;
            }
            if score(params, &cur) > score(params, &best) && spread(&kept) >= params.min_spread {
                best.clone_from(&cur);
                best_t = [sc, ss, tx, ty];
            }
        }
    }
    (best, best_t)
}

/// Standard deviation of the points along their direction of least spread (the square root of the
/// smaller eigenvalue of their covariance): 0 for points on one line.
pub(crate) fn spread(pts: &[(f32, f32)]) -> f32 {
    if pts.len() < 2 {
        return 0.0;
    }
    let n = pts.len() as f32;
    let (mx, my) = pts.iter().fold((0.0, 0.0), |(a, b), &(x, y)| (a + x / n, b + y / n));
    let (mut sxx, mut syy, mut sxy) = (0.0f32, 0.0f32, 0.0f32);
    for &(x, y) in pts {
        let (dx, dy) = (x - mx, y - my);
        sxx += dx * dx / n;
        syy += dy * dy / n;
        sxy += dx * dy / n;
    }
    let half_trace = (sxx + syy) / 2.0;
    let det = sxx * syy - sxy * sxy;
    let disc = (half_trace * half_trace - det).max(0.0).sqrt();
    (half_trace - disc).max(0.0).sqrt()
}

#[cfg(test)]
mod spread_tests {
    use super::spread;

    #[test]
    fn spread_is_zero_on_a_line_and_the_minor_deviation_otherwise() {
        // collinear, any direction
        assert!(spread(&[(0.0, 0.0), (10.0, 5.0), (20.0, 10.0), (35.0, 17.5)]) < 1e-3);
        // axis-aligned 40 x 10 rectangle corners: minor standard deviation 5
        let r = spread(&[(0.0, 0.0), (40.0, 0.0), (0.0, 10.0), (40.0, 10.0)]);
        assert!((r - 5.0).abs() < 1e-3, "{r}");
        // rotating the rectangle does not change it
        let (c, s) = (0.6f32, 0.8f32);
        let rot: Vec<(f32, f32)> = [(0.0, 0.0), (40.0, 0.0), (0.0, 10.0), (40.0, 10.0)]
            .iter()
            .map(|&(x, y)| (c * x - s * y, s * x + c * y))
            .collect();
        assert!((spread(&rot) - 5.0).abs() < 1e-2);
        assert_eq!(spread(&[(3.0, 4.0)]), 0.0);
    }
}
