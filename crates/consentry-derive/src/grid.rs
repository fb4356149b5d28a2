//! Rule 4's evidence: coarse grids of cell brightness over the working image, compared under the
//! keypoints' transform.
//!
//! A crop that keeps a corner of the frame — mostly sky in a landscape — holds few of the 50
//! stored corners, so too few corners agree for rule 2's score. Where two or more do, their
//! similarity transform says where the query lies in the protected image; the protected image's
//! grid of 12×12 cell means, carried through that transform, must then agree with what the query
//! shows there (Pearson correlation over the cells that fall inside it). Between different photos
//! the few agreeing corners are chance, and the layout of light and dark under their transform is
//! not the protected image's.

use crate::gray::Gray;

/// Cells along each side of a signature's grid.
pub const STORED_CELLS: u8 = 12;
/// Working-image pixels per cell side of a query's grid (32 cells along a 512-px side).
pub const QUERY_CELL: usize = 16;
/// Largest level of a signature's cell ([`Grid::cells`], 4 bits); a query's cells are grey
/// levels, 0–255.
pub const GRID_LEVELS: u8 = 15;

/// Cell brightness over an image's working frame (longest side [`crate::WORK_SIDE`]), `cols` ×
/// `rows` cells dividing it evenly (cell `i` of a side of `n` pixels covers `i·n/cols` to
/// `(i+1)·n/cols`). A signature's grid is 12×12 cells, each its mean's distance from the mean of
/// all cells in a third of their standard deviation, shifted to 0–15 and clipped (4 bits: a
/// picture of 144 grey blocks with no absolute brightness, less than the keypoints' descriptors
/// already say of the image). A query's has cells of 16 working pixels (at most 32×32), each its
/// mean grey level (0–255): it is compared while the query is matched, never kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grid {
    /// Width of the working frame the grid covers, pixels (1–512).
    pub width: u16,
    /// Height of the working frame, pixels (1–512).
    pub height: u16,
    /// Cells across (1–255).
    pub cols: u8,
    /// Cells down (1–255).
    pub rows: u8,
    /// `cols × rows` levels, row by row: 0..=[`GRID_LEVELS`] when `fine` is false, else grey
    /// levels 0–255.
    pub cells: Vec<u8>,
    /// Whether the cells are grey levels (a query's) rather than 4-bit levels (a signature's).
    pub fine: bool,
}

/// Cells of a side of `len` pixels divided into `n`: cell `i` is `bounds(i).0..bounds(i).1`.
fn bounds(n: usize, len: usize, i: usize) -> (usize, usize) {
    (i * len / n, (i + 1) * len / n)
}

impl Grid {
    /// The grid of `cols` × `rows` cells of the working luma `l`; `None` when the cells are all
    /// alike (standard deviation under one grey level: nothing to compare) or a side has fewer
    /// pixels than cells.
    pub(crate) fn of(l: &Gray, cols: usize, rows: usize, fine: bool) -> Option<Grid> {
        if cols == 0
            || rows == 0
            || cols > 255
            || rows > 255
            || l.w < cols
            || l.h < rows
            || l.w > 512
            || l.h > 512
        {
            return None;
        }
        let mut means = Vec::with_capacity(cols * rows);
        for j in 0..rows {
            let (y0, y1) = bounds(rows, l.h, j);
            for i in 0..cols {
                let (x0, x1) = bounds(cols, l.w, i);
                let mut s = 0.0f64;
                for y in y0..y1 {
                    s += l.px[y * l.w + x0..y * l.w + x1].iter().map(|&v| f64::from(v)).sum::<f64>();
                }
                means.push(s / ((x1 - x0) * (y1 - y0)) as f64);
            }
        }
        let n = means.len() as f64;
        let mu = means.iter().sum::<f64>() / n;
        let sd = (means.iter().map(|m| (m - mu) * (m - mu)).sum::<f64>() / n).sqrt();
        if sd < 1.0 {
            return None;
        }
        let half = f64::from(GRID_LEVELS) / 2.0;
        let cells = if fine {
            means.iter().map(|m| m.round().clamp(0.0, 255.0) as u8).collect()
        } else {
            means
                .iter()
                .map(|m| ((m - mu) / sd * 3.0 + half).round().clamp(0.0, f64::from(GRID_LEVELS)) as u8)
                .collect()
        };
        Some(Grid { width: l.w as u16, height: l.h as u16, cols: cols as u8, rows: rows as u8, cells, fine })
    }

    /// A signature's grid of `l`.
    pub(crate) fn stored(l: &Gray) -> Option<Grid> {
        Grid::of(l, usize::from(STORED_CELLS), usize::from(STORED_CELLS), false)
    }

    /// A query's grid of `l`: cells of about [`QUERY_CELL`] pixels.
    #[allow(clippy::manual_div_ceil)] // Rust 1.63 (the protect page's wasm build) has no div_ceil
    pub(crate) fn query(l: &Gray) -> Option<Grid> {
        Grid::of(
            l,
            ((l.w + QUERY_CELL - 1) / QUERY_CELL).max(1),
            ((l.h + QUERY_CELL - 1) / QUERY_CELL).max(1),
            true,
        )
    }

    /// Whether the fields are consistent (what a decoder checks).
    pub(crate) fn valid(&self) -> bool {
        (1..=512).contains(&self.width)
            && (1..=512).contains(&self.height)
            && self.cols > 0
            && self.rows > 0
            && self.cols as u16 <= self.width
            && self.rows as u16 <= self.height
            && self.cells.len() == usize::from(self.cols) * usize::from(self.rows)
            && (self.fine || self.cells.iter().all(|&c| c <= GRID_LEVELS))
    }

    /// Mean level over the box `x0..x1` × `y0..y1` (working pixels), each cell weighted by the
    /// area it shares with the box; `None` unless the box lies inside the frame (to within a
    /// pixel) and has an area.
    pub(crate) fn box_mean(&self, x0: f32, y0: f32, x1: f32, y1: f32) -> Option<f32> {
        let (w, h) = (f32::from(self.width), f32::from(self.height));
        if x0 < -1.0 || y0 < -1.0 || x1 > w + 1.0 || y1 > h + 1.0 {
            return None;
        }
        let (x0, y0, x1, y1) = (x0.max(0.0), y0.max(0.0), x1.min(w), y1.min(h));
        if x1 <= x0 || y1 <= y0 {
            return None;
        }
        let (cols, rows) = (usize::from(self.cols), usize::from(self.rows));
        let (cw, ch) = (w / cols as f32, h / rows as f32);
        let (i0, i1) = ((x0 / cw) as usize, ((x1 / cw).ceil() as usize).min(cols));
        let (j0, j1) = ((y0 / ch) as usize, ((y1 / ch).ceil() as usize).min(rows));
        let (mut s, mut a) = (0.0f32, 0.0f32);
        for j in j0..j1 {
            let oy = (y1.min((j + 1) as f32 * ch) - y0.max(j as f32 * ch)).max(0.0);
            for i in i0..i1 {
                let ox = (x1.min((i + 1) as f32 * cw) - x0.max(i as f32 * cw)).max(0.0);
                s += ox * oy * f32::from(self.cells[j * cols + i]);
                a += ox * oy;
            }
        }
        (a > 0.0).then(|| s / a)
    }
}

/// How the stored grid agrees with the query's under the similarity transform `t` (`[s·cos,
/// s·sin, tx, ty]`, stored working pixels to query working pixels; with `mirrored`, to the query
/// mirrored left to right), over the stored cells that land inside the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Agreement {
    /// Pearson correlation of the stored cells with the query's means over where they land.
    pub r: f32,
    /// The same of the differences between horizontal neighbours: the layout within each row,
    /// which a horizon shared by two different landscapes does not make alike.
    pub r_across: f32,
    /// Stored cells that land inside the query.
    pub inside: usize,
}

/// See [`Agreement`]; a correlation is 0 over fewer than three values or a flat side.
pub(crate) fn agreement(stored: &Grid, query: &Grid, t: [f32; 4], mirrored: bool) -> Agreement {
    let [sc, ss, tx, ty] = t;
    let s = (sc * sc + ss * ss).sqrt();
    let (cols, rows) = (usize::from(stored.cols), usize::from(stored.rows));
    let (cw, ch) = (f32::from(stored.width) / cols as f32, f32::from(stored.height) / rows as f32);
    let (hw, hh) = (cw * s / 2.0, ch * s / 2.0);
    let qw = f32::from(query.width);
    let mut at: Vec<Option<f32>> = Vec::with_capacity(cols * rows);
    for j in 0..rows {
        for i in 0..cols {
            let (cx, cy) = ((i as f32 + 0.5) * cw, (j as f32 + 0.5) * ch);
            let (mut qx, qy) = (sc * cx - ss * cy + tx, ss * cx + sc * cy + ty);
            if mirrored {
                qx = qw - qx;
            }
            at.push(query.box_mean(qx - hw, qy - hh, qx + hw, qy + hh));
        }
    }
    let cell = |k: usize| f32::from(stored.cells[k]);
    let pairs: Vec<(f32, f32)> = at.iter().enumerate().filter_map(|(k, m)| Some((cell(k), (*m)?))).collect();
    let mut across = Vec::new();
    for j in 0..rows {
        for i in 0..cols.saturating_sub(1) {
            let (k, l) = (j * cols + i, j * cols + i + 1);
            if let (Some(a), Some(b)) = (at[k], at[l]) {
                across.push((cell(l) - cell(k), b - a));
            }
        }
    }
    Agreement { r: pearson(&pairs), r_across: pearson(&across), inside: pairs.len() }
}

/// Pearson correlation of the pairs; 0 for fewer than three or a flat side.
fn pearson(pairs: &[(f32, f32)]) -> f32 {
    if pairs.len() < 3 {
        return 0.0;
    }
    let n = pairs.len() as f64;
    let (ma, mb) =
        pairs.iter().fold((0.0, 0.0), |(u, v), &(x, y)| (u + f64::from(x) / n, v + f64::from(y) / n));
    let (mut sab, mut saa, mut sbb) = (0.0f64, 0.0f64, 0.0f64);
    for &(x, y) in pairs {
        let (dx, dy) = (f64::from(x) - ma, f64::from(y) - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    if saa <= 1e-9 || sbb <= 1e-9 {
        return 0.0;
    }
    (sab / (saa * sbb).sqrt()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gray(w: usize, h: usize, f: impl Fn(usize, usize) -> f32) -> Gray {
        let mut px = Vec::with_capacity(w * h);
        for y in 0..h {
            for x in 0..w {
                px.push(f(x, y));
            }
        }
        Gray { w, h, px }
    }

    /// A scene with structure at several scales.
    fn scene(x: usize, y: usize) -> f32 {
        let (x, y) = (x as f32, y as f32);
        128.0 + 60.0 * (x / 37.0).sin() * (y / 53.0).cos() + 40.0 * ((x + 2.0 * y) / 91.0).sin()
    }

    #[test]
    fn a_flat_image_has_no_grid_and_levels_span_the_range() {
        assert_eq!(Grid::stored(&gray(512, 300, |_, _| 90.0)), None);
        let g = Grid::stored(&gray(512, 300, scene)).unwrap();
        assert_eq!((g.width, g.height, g.cols, g.rows, g.cells.len()), (512, 300, 12, 12, 144));
        assert!(g.valid());
        assert!(g.cells.iter().any(|&c| c <= 3) && g.cells.iter().any(|&c| c >= 12), "{:?}", g.cells);
        let q = Grid::query(&gray(512, 300, scene)).unwrap();
        assert_eq!((q.cols, q.rows), (32, 19));
    }

    #[test]
    fn box_means_weigh_cells_by_area_and_refuse_boxes_outside() {
        let g = Grid { width: 4, height: 2, cols: 2, rows: 1, cells: vec![0, 15], fine: false };
        assert_eq!(g.box_mean(0.0, 0.0, 2.0, 2.0), Some(0.0));
        assert_eq!(g.box_mean(1.0, 0.0, 4.0, 2.0), Some(10.0));
        assert_eq!(g.box_mean(3.0, 0.0, 5.5, 2.0), None);
        assert_eq!(g.box_mean(2.0, 0.0, 2.0, 1.0), None);
    }

    /// A crop of the scene enlarged to the working size agrees with the whole scene's grid under
    /// the crop's transform; another scene, or the right scene under a wrong transform, does not.
    #[test]
    fn a_crop_agrees_under_its_transform_and_nothing_else_does() {
        let full = gray(512, 384, scene);
        let stored = Grid::stored(&full).unwrap();
        // the window x 100..400, y 50..275 enlarged by 512/300
        let s = 512.0 / 300.0;
        let crop =
            gray(512, 384, |x, y| scene((x as f32 / s + 100.0) as usize, (y as f32 / s + 50.0) as usize));
        let q = Grid::query(&crop).unwrap();
        let t = [s, 0.0, -100.0 * s, -50.0 * s];
        let a = agreement(&stored, &q, t, false);
        assert!(a.r > 0.97 && a.r_across > 0.9 && a.inside >= 20, "{a:?}");
        // the same, mirrored: the query's grid mirrored and the transform to the mirrored frame
        let mcrop = gray(512, 384, |x, y| {
            scene(((511 - x) as f32 / s + 100.0) as usize, (y as f32 / s + 50.0) as usize)
        });
        let m = agreement(&stored, &Grid::query(&mcrop).unwrap(), t, true);
        assert!(m.r > 0.97 && m.r_across > 0.9, "{m:?}");
        let wrong = [s, 0.0, -20.0 * s, -150.0 * s];
        assert!(agreement(&stored, &q, wrong, false).r < 0.8);
        let other = gray(512, 384, |x, y| scene(y + 200, x));
        assert!(agreement(&Grid::stored(&other).unwrap(), &q, t, false).r < 0.8);
        // a transform that puts every cell outside
        assert_eq!(
            agreement(&stored, &q, [1.0, 0.0, 5000.0, 0.0], false),
            Agreement { r: 0.0, r_across: 0.0, inside: 0 }
        );
    }
}
