//! Quarter-scale luma from the first scans of a progressive JPEG, for the fast hash path.
//!
//! A progressive JPEG sends every block's DC coefficient first, then low-frequency AC
//! coefficients, then the rest and the refinement bits; most of the file is the later scans.
//! PDQ only needs a blurred 64×64 view of the luma, so for large progressive photos this module
//! reads the DC scan and the first luma AC scan that covers the coefficients (0,1), (1,0) and
//! (1,1), skips every other scan without decoding it, and turns each 8×8 luma block into the
//! four means of its 4×4 quadrants (the 2×2 terms of the block's DCT; the (2,·) terms average
//! to zero over a quadrant, higher ones are left out). The refinement bits are never read, so
//! coefficients keep the precision of their first scan.
//!
//! The same reader, in sequential mode, serves large baseline files (`sequential_luma`): there
//! every coefficient has to be entropy-decoded, but each luma block goes straight to the means
//! of its cells, without an inverse DCT or a full-size plane, and the other components' blocks
//! are decoded and dropped.
//!
//! Anything this reader does not expect (lossless files, 12-bit samples, arithmetic
//! coding, scans in an unusual order, a corrupt stream) makes it return `None` and the caller
//! decodes the file in full. It never allocates more than the block grid the (already
//! size-checked) frame header announces.

/// Zigzag positions of the coefficients used: (row 0, col 0), (0, 1), (1, 0), (1, 1).
const USED: [usize; 4] = [0, 1, 2, 4];
/// Highest zigzag position needed.
const LAST_USED: u8 = 4;

/// The luma plane at a quarter of the size in each direction (`ceil(w/4) × ceil(h/4)`),
/// or `None` when the file is not a progressive JPEG this reader handles.
pub(crate) fn quarter_luma(bytes: &[u8], max_pixels: u64) -> Option<(u32, u32, Vec<u8>)> {
    let mut r = Reader::new(bytes, max_pixels, None)?;
    r.run()?;
    r.render()
}

/// The luma plane of a baseline (sequential, Huffman, 8-bit) JPEG at `1/denom` of the size in
/// each direction (`ceil(w/denom) × ceil(h/denom)`, `denom` 2, 4 or 8): each output pixel is the
/// mean of the `denom × denom` pixels it covers, computed from the dequantised coefficients
/// (exact up to the decoder's per-pixel rounding and clamping), without an 8×8 inverse DCT and
/// without a full-size plane. Every coefficient still has to be entropy-decoded (a sequential
/// file has no way to skip them), but only the luma blocks' non-zero ones are used, and the
/// reading stops after the scan that completes the luma. `None` for anything else (progressive,
/// lossless, 12-bit or arithmetic-coded files, a corrupt stream): the caller decodes in full.
pub(crate) fn sequential_luma(bytes: &[u8], max_pixels: u64, denom: u32) -> Option<(u32, u32, Vec<u8>)> {
    if !matches!(denom, 2 | 4 | 8) {
        return None;
    }
    let mut r = Reader::new(bytes, max_pixels, Some(denom as usize))?;
    r.run()?;
    r.render_sequential()
}

/// JPEG's zigzag order: the natural (row-major) index of each zigzag position.
const NATURAL: [u8; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7,
    14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39,
    46, 53, 60, 61, 54, 47, 55, 62, 63,
];

/// `basis[u][i]`: the mean, over the `8/k` pixels of output cell `i` (of `k` per block side), of
/// the 1-D inverse DCT basis function of frequency `u`, `C(u)/2 · cos((2x+1)uπ/16)`.
fn pooled_basis(k: usize) -> [[f32; 4]; 8] {
    let g = 8 / k;
    let mut b = [[0f32; 4]; 8];
    for (u, row) in b.iter_mut().enumerate() {
        let cu = if u == 0 { std::f64::consts::FRAC_1_SQRT_2 } else { 1.0 };
        for (i, cell) in row.iter_mut().enumerate().take(k) {
            let mut sum = 0f64;
            for x in i * g..(i + 1) * g {
                sum += cu / 2.0 * ((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / 16.0).cos();
            }
            let mean = sum / g as f64;
            // Terms that cancel over a cell (cosine sums that are zero in exact arithmetic).
            *cell = if mean.abs() < 1e-9 { 0.0 } else { mean as f32 };
        }
    }
    b
}

#[derive(Clone, Copy, Default)]
struct Component {
    id: u8,
    h: u8,
    v: u8,
    tq: u8,
}

/// Bits of lookahead of the Huffman tables.
const LOOKAHEAD: u32 = 10;

/// A canonical Huffman table: a 10-bit lookahead plus the per-length limits of JPEG's F.2.2.3.
#[derive(Clone)]
struct Huffman {
    /// For a 10-bit prefix: (code length, symbol), length 0 when the code is longer.
    fast: Vec<(u8, u8)>,
    /// For a 10-bit prefix, when it holds a whole AC code with a non-zero size *and* the value
    /// bits that follow it: (bits used, zero run, value); bits used 0 otherwise.
    fast_ac: Vec<(u8, u8, i16)>,
    maxcode: [i32; 18],
    valptr: [i32; 17],
    mincode: [i32; 17],
    values: Vec<u8>,
}

impl Huffman {
    fn new(counts: &[u8; 16], values: &[u8]) -> Option<Huffman> {
        let mut h = Huffman {
            fast: vec![(0, 0); 1 << LOOKAHEAD],
            fast_ac: vec![(0, 0, 0); 1 << LOOKAHEAD],
            maxcode: [-1; 18],
            valptr: [0; 17],
            mincode: [0; 17],
            values: values.to_vec(),
        };
        let mut code: i32 = 0;
        let mut k: i32 = 0;
        for len in 1..=16usize {
            let n = i32::from(counts[len - 1]);
            if n > 0 {
                h.valptr[len] = k;
                h.mincode[len] = code;
                for i in 0..n {
                    let c = code + i;
                    if c >= (1 << len) {
                        return None;
                    }
                    if len <= LOOKAHEAD as usize {
                        let sym = *values.get((k + i) as usize)?;
                        let shift = LOOKAHEAD as usize - len;
                        let base = (c as usize) << shift;
                        for (j, e) in h.fast[base..base + (1 << shift)].iter_mut().enumerate() {
                            *e = (len as u8, sym);
                            let (run, size) = (sym >> 4, usize::from(sym & 15));
                            if size > 0 && len + size <= LOOKAHEAD as usize {
                                // The value bits are the next `size` bits of the prefix.
                                let v = (j >> (shift - size)) as u32 & ((1 << size) - 1);
                                h.fast_ac[base + j] =
                                    ((len + size) as u8, run, extend(v, size as u32) as i16);
                            }
                        }
                    }
                }
                code += n;
                k += n;
                h.maxcode[len] = code - 1;
            }
            code <<= 1;
        }
        h.maxcode[17] = i32::MAX;
        if k as usize > values.len() {
            return None;
        }
        Some(h)
    }
}

/// Entropy-coded bits with byte stuffing; a marker or the end of the data reads as zero bits
/// (as libjpeg does), which bounds the work on truncated files.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    acc: u64,
    n: u32,
    /// Set when a marker was met inside the segment.
    marker_hit: bool,
}

impl<'a> Bits<'a> {
    fn fill(&mut self) {
        // Whole bytes at once while no 0xFF (stuffing or marker) is among the next eight.
        if !self.marker_hit {
            if let Some(chunk) = self.data.get(self.pos..self.pos + 8) {
                let x = u64::from_be_bytes(chunk.try_into().expect("8 bytes"));
                let inv = !x;
                let has_ff = inv.wrapping_sub(0x0101_0101_0101_0101) & !inv & 0x8080_8080_8080_8080;
                if has_ff == 0 {
                    let take = (64 - self.n) / 8;
                    let fresh = if take == 8 { x } else { x >> (64 - 8 * take) };
                    self.acc |= fresh << (64 - self.n - 8 * take);
                    self.n += 8 * take;
                    self.pos += take as usize;
                    return;
                }
            }
        }
        while self.n <= 56 {
            let mut byte = 0u8;
            if !self.marker_hit && self.pos < self.data.len() {
                let b = self.data[self.pos];
                if b == 0xFF {
                    let next = self.data.get(self.pos + 1).copied().unwrap_or(0xD9);
                    if next == 0x00 {
                        self.pos += 2;
                        byte = 0xFF;
                    } else {
                        self.marker_hit = true;
                    }
                } else {
                    self.pos += 1;
                    byte = b;
                }
            }
            self.acc |= u64::from(byte) << (56 - self.n);
            self.n += 8;
        }
    }
    fn peek(&mut self, k: u32) -> u32 {
        if self.n < k {
            self.fill();
        }
        (self.acc >> (64 - k)) as u32
    }
    fn skip(&mut self, k: u32) {
        self.acc <<= k;
        self.n -= k;
    }
    fn bits(&mut self, k: u32) -> u32 {
        if k == 0 {
            return 0;
        }
        let v = self.peek(k);
        self.skip(k);
        v
    }
    fn decode(&mut self, h: &Huffman) -> Option<u8> {
        let p = self.peek(16);
        let (len, sym) = h.fast[(p >> (16 - LOOKAHEAD)) as usize];
        if len > 0 {
            self.skip(u32::from(len));
            return Some(sym);
        }
        for len in LOOKAHEAD as usize + 1..=16 {
            let code = (p >> (16 - len)) as i32;
            if code <= h.maxcode[len] {
                self.skip(len as u32);
                let i = h.valptr[len] + code - h.mincode[len];
                return h.values.get(i as usize).copied();
            }
        }
        None
    }
    /// Byte-aligns and consumes an expected RSTn marker (missing ones are tolerated).
    fn restart(&mut self) {
        self.acc = 0;
        self.n = 0;
        self.marker_hit = false;
        while self.pos + 1 < self.data.len() && !(self.data[self.pos] == 0xFF && self.data[self.pos + 1] != 0)
        {
            self.pos += 1;
        }
        if self.pos + 1 < self.data.len() && (0xD0..=0xD7).contains(&self.data[self.pos + 1]) {
            self.pos += 2;
        }
    }
}

fn extend(v: u32, s: u32) -> i32 {
    if s == 0 {
        return 0;
    }
    let v = v as i32;
    if v < (1 << (s - 1)) {
        v - (1 << s) + 1
    } else {
        v
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    max_pixels: u64,
    width: u32,
    height: u32,
    comps: Vec<Component>,
    hmax: u8,
    vmax: u8,
    qt: [[u16; 64]; 4],
    dc: [Option<Huffman>; 4],
    ac: [Option<Huffman>; 4],
    restart_interval: u32,
    /// Luma coefficients at the `USED` positions, per block of the MCU-padded grid.
    coefs: Vec<[i16; 4]>,
    blocks_w: usize,
    blocks_h: usize,
    have_dc: bool,
    /// Bitmask of the `USED` AC positions (1, 2, 3 for zigzag 1, 2, 4) that were read.
    have_ac: u8,
    /// Sequential mode: the scale denominator asked for (`None`: progressive mode).
    denom: Option<usize>,
    /// Sequential mode: the reduced luma plane over the MCU-padded block grid.
    plane: Vec<u8>,
    /// Sequential mode: the scan holding the luma was read.
    have_luma: bool,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8], max_pixels: u64, denom: Option<usize>) -> Option<Reader<'a>> {
        if data.len() < 4 || data[0] != 0xFF || data[1] != 0xD8 {
            return None;
        }
        Some(Reader {
            data,
            pos: 2,
            max_pixels,
            width: 0,
            height: 0,
            comps: Vec::new(),
            hmax: 1,
            vmax: 1,
            qt: [[0; 64]; 4],
            dc: [None, None, None, None],
            ac: [None, None, None, None],
            restart_interval: 0,
            coefs: Vec::new(),
            blocks_w: 0,
            blocks_h: 0,
            have_dc: false,
            have_ac: 0,
            denom,
            plane: Vec::new(),
            have_luma: false,
        })
    }

    fn done(&self) -> bool {
        if self.denom.is_some() {
            return self.have_luma;
        }
        self.have_dc && self.have_ac == 0b1110
    }

    /// Walks the markers until both the DC and the low AC luma data are in.
    fn run(&mut self) -> Option<()> {
        loop {
            if self.done() {
                return Some(());
            }
            // Next marker (fill bytes 0xFF allowed).
            if *self.data.get(self.pos)? != 0xFF {
                return None;
            }
            while *self.data.get(self.pos)? == 0xFF {
                self.pos += 1;
            }
            let m = *self.data.get(self.pos)?;
            self.pos += 1;
            match m {
                0xD8 | 0x01 | 0xD0..=0xD7 => continue,
                0xD9 => return None,
                _ => {}
            }
            let len =
                usize::from(u16::from_be_bytes([*self.data.get(self.pos)?, *self.data.get(self.pos + 1)?]));
            if len < 2 {
                return None;
            }
            let seg = self.data.get(self.pos + 2..self.pos + len)?;
            self.pos += len;
            match m {
                // Progressive (progressive mode), or baseline / extended sequential Huffman
                // (sequential mode).
                0xC2 if self.denom.is_none() => self.sof(seg)?,
                0xC0 | 0xC1 if self.denom.is_some() => self.sof(seg)?,
                // Anything else (lossless, arithmetic, hierarchical, or the other mode's kind).
                0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => return None,
                0xC4 => self.dht(seg)?,
                0xDB => self.dqt(seg)?,
                0xDD => self.restart_interval = u32::from(u16::from_be_bytes([*seg.first()?, *seg.get(1)?])),
                0xDA => self.sos(seg)?,
                _ => {}
            }
        }
    }

    fn sof(&mut self, s: &[u8]) -> Option<()> {
        if !self.comps.is_empty() || *s.first()? != 8 {
            return None;
        }
        self.height = u32::from(u16::from_be_bytes([*s.get(1)?, *s.get(2)?]));
        self.width = u32::from(u16::from_be_bytes([*s.get(3)?, *s.get(4)?]));
        let n = usize::from(*s.get(5)?);
        if self.width == 0
            || self.height == 0
            || u64::from(self.width) * u64::from(self.height) > self.max_pixels
            || !(n == 1 || n == 3)
        {
            return None;
        }
        for i in 0..n {
            let c = s.get(6 + 3 * i..9 + 3 * i)?;
            let (h, v) = (c[1] >> 4, c[1] & 15);
            if !(1..=4).contains(&h) || !(1..=4).contains(&v) || c[2] > 3 {
                return None;
            }
            self.comps.push(Component { id: c[0], h, v, tq: c[2] });
        }
        self.hmax = self.comps.iter().map(|c| c.h).max()?;
        self.vmax = self.comps.iter().map(|c| c.v).max()?;
        let y = self.comps[0];
        let mcux = self.width.div_ceil(8 * u32::from(self.hmax)) as usize;
        let mcuy = self.height.div_ceil(8 * u32::from(self.vmax)) as usize;
        self.blocks_w = mcux * usize::from(y.h);
        self.blocks_h = mcuy * usize::from(y.v);
        // Dimensions were checked against the pixel limit above.
        match self.denom {
            None => self.coefs = vec![[0i16; 4]; self.blocks_w * self.blocks_h],
            Some(d) => self.plane = vec![0u8; self.blocks_w * self.blocks_h * (8 / d) * (8 / d)],
        }
        Some(())
    }

    fn dht(&mut self, mut s: &[u8]) -> Option<()> {
        while !s.is_empty() {
            let tc = s[0] >> 4;
            let th = usize::from(s[0] & 15);
            let counts: [u8; 16] = s.get(1..17)?.try_into().ok()?;
            let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
            let values = s.get(17..17 + total)?;
            if th > 3 || tc > 1 {
                return None;
            }
            let h = Huffman::new(&counts, values)?;
            if tc == 0 {
                self.dc[th] = Some(h);
            } else {
                self.ac[th] = Some(h);
            }
            s = &s[17 + total..];
        }
        Some(())
    }

    fn dqt(&mut self, mut s: &[u8]) -> Option<()> {
        while !s.is_empty() {
            let pq = s[0] >> 4;
            let tq = usize::from(s[0] & 15);
            if tq > 3 {
                return None;
            }
            if pq == 0 {
                let v = s.get(1..65)?;
                for (d, &b) in self.qt[tq].iter_mut().zip(v) {
                    *d = u16::from(b);
                }
                s = &s[65..];
            } else {
                let v = s.get(1..129)?;
                for (i, d) in self.qt[tq].iter_mut().enumerate() {
                    *d = u16::from_be_bytes([v[2 * i], v[2 * i + 1]]);
                }
                s = &s[129..];
            }
        }
        Some(())
    }

    /// Skips the entropy-coded data that follows a scan header: up to the next marker that is
    /// not a restart marker.
    fn skip_entropy(&mut self) {
        let d = self.data;
        let mut p = self.pos;
        while p + 1 < d.len() {
            if d[p] == 0xFF && d[p + 1] != 0x00 && !(0xD0..=0xD7).contains(&d[p + 1]) {
                break;
            }
            p += 1;
        }
        self.pos = p.min(d.len());
    }

    fn sos(&mut self, s: &[u8]) -> Option<()> {
        if self.comps.is_empty() {
            return None;
        }
        let ns = usize::from(*s.first()?);
        if ns == 0 || ns > 4 {
            return None;
        }
        let mut scan = Vec::with_capacity(ns);
        for i in 0..ns {
            let c = s.get(1 + 2 * i..3 + 2 * i)?;
            let idx = self.comps.iter().position(|k| k.id == c[0])?;
            if c[1] >> 4 > 3 || c[1] & 15 > 3 {
                return None;
            }
            scan.push((idx, usize::from(c[1] >> 4), usize::from(c[1] & 15)));
        }
        let p = s.get(1 + 2 * ns..4 + 2 * ns)?;
        let (ss, se, ah, al) = (p[0], p[1], p[2] >> 4, p[2] & 15);
        if se > 63 || ss > se || al > 13 {
            return None;
        }
        let has_y = scan.iter().any(|&(i, _, _)| i == 0);
        if self.denom.is_some() {
            // Sequential: one pass over all 64 coefficients of every block of the scan.
            if (ss, se, ah, al) != (0, 63, 0, 0) {
                return None;
            }
            if !has_y || self.have_luma {
                self.skip_entropy();
                return Some(());
            }
            let start = self.pos;
            let mut bits = Bits { data: &self.data[start..], pos: 0, acc: 0, n: 0, marker_hit: false };
            self.sequential_scan(&mut bits, &scan)?;
            self.have_luma = true;
            self.pos = start + bits.pos;
            return Some(());
        }
        let wanted = if ss == 0 {
            // DC first scan with luma: needed (every component is decoded to keep in step).
            ah == 0 && has_y && !self.have_dc
        } else {
            // Luma AC first scan that brings one of the positions still missing.
            ah == 0
                && has_y
                && ss <= LAST_USED
                && (1..=3).any(|k| {
                    let z = USED[k] as u8;
                    (ss..=se).contains(&z) && self.have_ac & (1 << k) == 0
                })
        };
        if !wanted {
            self.skip_entropy();
            return Some(());
        }
        let start = self.pos;
        let mut bits = Bits { data: &self.data[start..], pos: 0, acc: 0, n: 0, marker_hit: false };
        if ss == 0 {
            if se != 0 {
                return None;
            }
            self.dc_scan(&mut bits, &scan, al)?;
            self.have_dc = true;
        } else {
            if ns != 1 {
                return None;
            }
            self.ac_scan(&mut bits, scan[0].2, ss, se, al)?;
            for (k, &z) in USED.iter().enumerate().skip(1) {
                if (ss..=se).contains(&(z as u8)) {
                    self.have_ac |= 1 << k;
                }
            }
        }
        self.pos = start + bits.pos;
        self.skip_entropy();
        Some(())
    }

    fn dc_scan(&mut self, bits: &mut Bits<'_>, scan: &[(usize, usize, usize)], al: u8) -> Option<()> {
        let mut pred = [0i32; 4];
        let ri = self.restart_interval as usize;
        let one = scan.len() == 1;
        let (units_w, units_h) = self.scan_units(scan);
        let mut count = 0usize;
        for uy in 0..units_h {
            for ux in 0..units_w {
                if ri > 0 && count > 0 && count % ri == 0 {
                    bits.restart();
                    pred = [0; 4];
                }
                count += 1;
                for (k, &(ci, td, _)) in scan.iter().enumerate() {
                    let c = self.comps[ci];
                    let h = self.dc[td].as_ref()?;
                    let (nh, nv) = if one { (1, 1) } else { (usize::from(c.h), usize::from(c.v)) };
                    for by in 0..nv {
                        for bx in 0..nh {
                            let s = u32::from(bits.decode(h)?);
                            if s > 11 {
                                return None;
                            }
                            let diff = extend(bits.bits(s), s);
                            pred[k] = pred[k].wrapping_add(diff);
                            if ci == 0 {
                                let (x, y) = (ux * nh + bx, uy * nv + by);
                                if let Some(b) = self.coefs.get_mut(y * self.blocks_w + x) {
                                    b[0] = (pred[k] << al).clamp(-32768, 32767) as i16;
                                }
                            }
                        }
                    }
                }
            }
        }
        Some(())
    }

    /// Decodes a sequential scan (interleaved, or one component alone) and pools every luma
    /// block into `k × k` means, `k = 8 / denom`, written to `plane`.
    fn sequential_scan(&mut self, bits: &mut Bits<'_>, scan: &[(usize, usize, usize)]) -> Option<()> {
        let k = 8 / self.denom?;
        let basis = pooled_basis(k);
        let q = self.qt[usize::from(self.comps.first()?.tq)];
        // Per zigzag position: the k × k cell means of its basis function times its quantiser
        // step (quantisation tables are kept in zigzag order, as stored), and whether that is
        // all zero (frequencies that cancel over every cell).
        let mut weights = [[0f32; 16]; 64];
        let mut zero = [true; 64];
        for z in 0..64 {
            let n = usize::from(NATURAL[z]);
            let (fv, fu) = (n / 8, n % 8);
            for iy in 0..k {
                for ix in 0..k {
                    let w = basis[fv][iy] * basis[fu][ix] * f32::from(q[z]);
                    weights[z][iy * k + ix] = w;
                    zero[z] &= w == 0.0;
                }
            }
        }
        let mut pred = [0i32; 4];
        let ri = self.restart_interval as usize;
        let one = scan.len() == 1;
        let (units_w, units_h) = self.scan_units(scan);
        let plane_w = self.blocks_w * k;
        let mut count = 0usize;
        for uy in 0..units_h {
            for ux in 0..units_w {
                if ri > 0 && count > 0 && count % ri == 0 {
                    bits.restart();
                    pred = [0; 4];
                }
                count += 1;
                for (sk, &(ci, td, ta)) in scan.iter().enumerate() {
                    let c = self.comps[ci];
                    let dc = self.dc[td].as_ref()?;
                    let ac = self.ac[ta].as_ref()?;
                    let (nh, nv) = if one { (1, 1) } else { (usize::from(c.h), usize::from(c.v)) };
                    for by in 0..nv {
                        for bx in 0..nh {
                            let s = u32::from(bits.decode(dc)?);
                            if s > 11 {
                                return None;
                            }
                            pred[sk] = pred[sk].wrapping_add(extend(bits.bits(s), s));
                            let luma = ci == 0;
                            // k × k cell means of the block (luma only), from its non-zero
                            // dequantised coefficients.
                            let mut acc = [0f32; 16];
                            if luma {
                                let v = pred[sk] as f32;
                                for (a, w) in acc.iter_mut().zip(&weights[0]) {
                                    *a += v * w;
                                }
                            }
                            let mut z = 1u32;
                            while z < 64 {
                                let p = bits.peek(LOOKAHEAD);
                                let (used, run, value) = ac.fast_ac[p as usize];
                                let v = if used > 0 {
                                    bits.skip(u32::from(used));
                                    z += u32::from(run);
                                    i32::from(value)
                                } else {
                                    let rs = bits.decode(ac)?;
                                    let (r, s) = (u32::from(rs >> 4), u32::from(rs & 15));
                                    if s == 0 {
                                        if r == 15 {
                                            z += 16;
                                            continue;
                                        }
                                        break;
                                    }
                                    z += r;
                                    extend(bits.bits(s), s)
                                };
                                if z > 63 {
                                    return None;
                                }
                                if luma && !zero[z as usize] {
                                    let v = v as f32;
                                    for (a, w) in acc.iter_mut().zip(&weights[z as usize]) {
                                        *a += v * w;
                                    }
                                }
                                z += 1;
                            }
                            if luma {
                                let (x0, y0) = ((ux * nh + bx) * k, (uy * nv + by) * k);
                                for (iy, a) in acc.chunks_exact(k).take(k).enumerate() {
                                    let row = (y0 + iy) * plane_w + x0;
                                    if let Some(dst) = self.plane.get_mut(row..row + k) {
                                        for (d, &m) in dst.iter_mut().zip(a) {
                                            *d = (m + 128.0).round().clamp(0.0, 255.0) as u8;
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        Some(())
    }

    /// The sequential plane cropped to `ceil(w/denom) × ceil(h/denom)`.
    fn render_sequential(&self) -> Option<(u32, u32, Vec<u8>)> {
        let d = self.denom?;
        if !self.have_luma || self.qt[usize::from(self.comps.first()?.tq)][0] == 0 {
            return None;
        }
        let plane_w = self.blocks_w * (8 / d);
        let ow = self.width.div_ceil(d as u32) as usize;
        let oh = self.height.div_ceil(d as u32) as usize;
        let mut out = Vec::with_capacity(ow * oh);
        for y in 0..oh {
            out.extend_from_slice(self.plane.get(y * plane_w..y * plane_w + ow)?);
        }
        Some((ow as u32, oh as u32, out))
    }

    /// The grid of units a scan walks: the component's own blocks for a scan of one
    /// component, MCUs for an interleaved scan.
    fn scan_units(&self, scan: &[(usize, usize, usize)]) -> (usize, usize) {
        if let [(ci, _, _)] = scan {
            let c = self.comps[*ci];
            (self.comp_blocks_w(c), self.comp_blocks_h(c))
        } else {
            (
                self.width.div_ceil(8 * u32::from(self.hmax)) as usize,
                self.height.div_ceil(8 * u32::from(self.vmax)) as usize,
            )
        }
    }

    fn comp_blocks_w(&self, c: Component) -> usize {
        (self.width * u32::from(c.h)).div_ceil(u32::from(self.hmax)).div_ceil(8) as usize
    }
    fn comp_blocks_h(&self, c: Component) -> usize {
        (self.height * u32::from(c.v)).div_ceil(u32::from(self.vmax)).div_ceil(8) as usize
    }

    fn ac_scan(&mut self, bits: &mut Bits<'_>, ta: usize, ss: u8, se: u8, al: u8) -> Option<()> {
        let h = self.ac[ta].as_ref()?;
        let y = self.comps[0];
        let (bw, bh) = (self.comp_blocks_w(y), self.comp_blocks_h(y));
        let ri = self.restart_interval as usize;
        let mut eobrun = 0u32;
        let mut count = 0usize;
        for by in 0..bh {
            for bx in 0..bw {
                if ri > 0 && count > 0 && count % ri == 0 {
                    bits.restart();
                    eobrun = 0;
                }
                count += 1;
                if eobrun > 0 {
                    eobrun -= 1;
                    continue;
                }
                let block = by * self.blocks_w + bx;
                let mut k = u32::from(ss);
                while k <= u32::from(se) {
                    let rs = bits.decode(h)?;
                    let (r, s) = (u32::from(rs >> 4), u32::from(rs & 15));
                    if s == 0 {
                        if r < 15 {
                            eobrun = (1 << r) - 1;
                            if r > 0 {
                                eobrun += bits.bits(r);
                            }
                            break;
                        }
                        k += 16;
                        continue;
                    }
                    k += r;
                    if k > u32::from(se) {
                        return None;
                    }
                    let v = extend(bits.bits(s), s) << al;
                    if let Some(slot) = USED.iter().position(|&z| z as u32 == k) {
                        if let Some(b) = self.coefs.get_mut(block) {
                            b[slot] = v.clamp(-32768, 32767) as i16;
                        }
                    }
                    k += 1;
                }
            }
        }
        Some(())
    }

    /// Quadrant means of every luma block, cropped to `ceil(w/4) × ceil(h/4)`.
    fn render(&self) -> Option<(u32, u32, Vec<u8>)> {
        let q = &self.qt[usize::from(self.comps.first()?.tq)];
        if q[0] == 0 {
            return None;
        }
        // Mean over 4 samples of cos((2x+1)π/16), x = 0..3.
        let m1 = ((1.0f32 * std::f32::consts::PI / 16.0).cos()
            + (3.0f32 * std::f32::consts::PI / 16.0).cos()
            + (5.0f32 * std::f32::consts::PI / 16.0).cos()
            + (7.0f32 * std::f32::consts::PI / 16.0).cos())
            / 4.0;
        let c10 = m1 / (4.0 * std::f32::consts::SQRT_2);
        let c11 = m1 * m1 / 4.0;
        let (q0, q01, q10, q11) = (f32::from(q[0]), f32::from(q[1]), f32::from(q[2]), f32::from(q[4]));
        let ow = self.width.div_ceil(4) as usize;
        let oh = self.height.div_ceil(4) as usize;
        let mut out = vec![0u8; ow * oh];
        for y in 0..oh {
            let (by, qy) = (y / 2, y % 2);
            let sy = if qy == 0 { 1.0 } else { -1.0 };
            for x in 0..ow {
                let (bx, qx) = (x / 2, x % 2);
                let sx = if qx == 0 { 1.0 } else { -1.0 };
                let b = self.coefs.get(by * self.blocks_w + bx)?;
                // Zigzag 1 is row 0, column 1 (horizontal frequency); zigzag 2 is row 1, column 0.
                let mean = f32::from(b[0]) * q0 / 8.0
                    + c10 * (f32::from(b[1]) * q01 * sx + f32::from(b[2]) * q10 * sy)
                    + c11 * f32::from(b[3]) * q11 * sx * sy;
                out[y * ow + x] = (mean + 128.0).round().clamp(0.0, 255.0) as u8;
            }
        }
        Some((ow as u32, oh as u32, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extend_follows_the_jpeg_sign_rule() {
        assert_eq!(extend(0, 1), -1);
        assert_eq!(extend(1, 1), 1);
        assert_eq!(extend(0, 3), -7);
        assert_eq!(extend(7, 3), 7);
        assert_eq!(extend(3, 3), -4);
    }

    /// A benign synthetic picture: gradients, a disc and stripes, so that the blocks hold both
    /// smooth areas and edges.
    fn picture(w: usize, h: usize) -> Vec<u8> {
        let mut rgb = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
                let d = ((fx - 0.4).powi(2) + (fy - 0.35).powi(2)).sqrt();
                let disc = if d < 0.2 { 90.0 } else { 0.0 };
                let stripes = if (x / 37 + y / 53) % 3 == 0 { 40.0 } else { 0.0 };
                let r = 30.0 + 150.0 * fx + disc;
                let g = 60.0 + 120.0 * fy + stripes;
                let b = 200.0 - 120.0 * fx * fy + disc * 0.5;
                rgb.extend([r, g, b].map(|v: f32| v.clamp(0.0, 255.0) as u8));
            }
        }
        rgb
    }

    fn encode(
        rgb: &[u8],
        w: u16,
        h: u16,
        cfg: impl FnOnce(&mut jpeg_encoder::Encoder<&mut Vec<u8>>),
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let mut e = jpeg_encoder::Encoder::new(&mut out, 90);
        cfg(&mut e);
        e.encode(rgb, w, h, jpeg_encoder::ColorType::Rgb).expect("encodes");
        out
    }

    /// The full-size luma plane from zune-jpeg, averaged over 4×4 cells (edge cells over what
    /// they hold).
    fn reference_quarter(jpeg: &[u8]) -> (usize, usize, Vec<f32>) {
        use zune_core::colorspace::ColorSpace;
        let opts = zune_core::options::DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::Luma);
        let mut d = zune_jpeg::JpegDecoder::new_with_options(zune_core::bytestream::ZCursor::new(jpeg), opts);
        let luma = d.decode().expect("decodes");
        let (w, h) = d.dimensions().expect("dimensions");
        let (qw, qh) = (w.div_ceil(4), h.div_ceil(4));
        let mut sum = vec![0f32; qw * qh];
        let mut n = vec![0f32; qw * qh];
        for y in 0..h {
            for x in 0..w {
                sum[(y / 4) * qw + x / 4] += f32::from(luma[y * w + x]);
                n[(y / 4) * qw + x / 4] += 1.0;
            }
        }
        (qw, qh, sum.iter().zip(&n).map(|(s, n)| s / n).collect())
    }

    /// Mean and 99th-percentile absolute difference between the reader's quarter plane and the
    /// 4×4 means of the full decode.
    fn compare(jpeg: &[u8]) -> (f32, f32) {
        let (qw, qh, got) = quarter_luma(jpeg, u64::MAX).expect("progressive file read");
        let (rw, rh, want) = reference_quarter(jpeg);
        assert_eq!((qw as usize, qh as usize), (rw, rh));
        let mut diffs: Vec<f32> = got.iter().zip(&want).map(|(&g, &w)| (f32::from(g) - w).abs()).collect();
        let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
        diffs.sort_by(f32::total_cmp);
        (mean, diffs[diffs.len() * 99 / 100])
    }

    #[test]
    fn quarter_plane_matches_the_means_of_a_full_decode() {
        let (w, h) = (517u16, 389u16); // not multiples of 8 or 16: partial blocks and MCUs
        let rgb = picture(usize::from(w), usize::from(h));
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("4:2:0, 4 scans", encode(&rgb, w, h, |e| e.set_progressive(true))),
            (
                "4:4:4, 12 scans",
                encode(&rgb, w, h, |e| {
                    e.set_progressive_scans(12);
                    e.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_4_4);
                }),
            ),
            ("4:2:0, 33 scans (two coefficients each)", encode(&rgb, w, h, |e| e.set_progressive_scans(33))),
            (
                "4:2:2, restart interval 7",
                encode(&rgb, w, h, |e| {
                    e.set_progressive(true);
                    e.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_2_2);
                    e.set_restart_interval(7);
                }),
            ),
        ];
        for (label, jpeg) in cases {
            let (mean, p99) = compare(&jpeg);
            eprintln!("{label}: mean |diff| {mean:.2}, p99 {p99:.2}");
            // Only the DCT's (2, ·) and higher terms are left out, and they mostly cancel over
            // a quadrant: a swapped coefficient, a wrong sign or a lost block is tens of levels.
            assert!(mean < 1.5, "{label}: mean |diff| {mean}");
            assert!(p99 < 8.0, "{label}: p99 |diff| {p99}");
        }
    }

    #[test]
    fn greyscale_progressive_is_read() {
        let (w, h) = (300usize, 211usize);
        let grey: Vec<u8> = picture(w, h).chunks(3).map(|p| p[1]).collect();
        let mut out = Vec::new();
        let mut e = jpeg_encoder::Encoder::new(&mut out, 85);
        e.set_progressive(true);
        e.encode(&grey, w as u16, h as u16, jpeg_encoder::ColorType::Luma).expect("encodes");
        let (mean, p99) = compare(&out);
        assert!(mean < 1.5 && p99 < 8.0, "mean {mean}, p99 {p99}");
    }

    #[test]
    fn baseline_and_truncated_files_are_left_to_the_full_decoder() {
        let rgb = picture(64, 48);
        let baseline = encode(&rgb, 64, 48, |_| {});
        assert!(quarter_luma(&baseline, u64::MAX).is_none());
        let progressive = encode(&rgb, 64, 48, |e| e.set_progressive(true));
        assert!(quarter_luma(&progressive, u64::MAX).is_some());
        // Cut inside the frame header, and a pixel limit below the frame's size.
        let sof = progressive.windows(2).position(|w| w == [0xFF, 0xC2]).expect("SOF2");
        assert!(quarter_luma(&progressive[..sof + 6], u64::MAX).is_none());
        assert!(quarter_luma(&progressive, 64 * 48 - 1).is_none());
        // Every prefix: no panic, and never a plane of the wrong size.
        for cut in 0..progressive.len() {
            if let Some((w, h, luma)) = quarter_luma(&progressive[..cut], u64::MAX) {
                assert_eq!((w, h, luma.len()), (16, 12, 16 * 12));
            }
        }
        // Random corruption (1 to 8 bytes changed anywhere, headers included): no panic, and any
        // plane returned has the size its (possibly corrupted) header announces.
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..3000 {
            let mut f = progressive.clone();
            for _ in 0..1 + next() % 8 {
                let i = (next() % f.len() as u64) as usize;
                f[i] = next() as u8;
            }
            if let Some((w, h, luma)) = quarter_luma(&f, 1 << 20) {
                assert_eq!(luma.len(), w as usize * h as usize);
                assert!(u64::from(w) * u64::from(h) <= 1 << 20);
            }
        }
    }

    /// The full-size luma plane from zune-jpeg, averaged over `d × d` cells (edge cells over
    /// what they hold).
    fn reference_pooled(jpeg: &[u8], d: usize) -> (usize, usize, Vec<f32>) {
        use zune_core::colorspace::ColorSpace;
        let opts = zune_core::options::DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::Luma);
        let mut dec =
            zune_jpeg::JpegDecoder::new_with_options(zune_core::bytestream::ZCursor::new(jpeg), opts);
        let luma = dec.decode().expect("decodes");
        let (w, h) = dec.dimensions().expect("dimensions");
        let (rw, rh) = (w.div_ceil(d), h.div_ceil(d));
        let mut sum = vec![0f32; rw * rh];
        let mut n = vec![0f32; rw * rh];
        for y in 0..h {
            for x in 0..w {
                sum[(y / d) * rw + x / d] += f32::from(luma[y * w + x]);
                n[(y / d) * rw + x / d] += 1.0;
            }
        }
        (rw, rh, sum.iter().zip(&n).map(|(s, n)| s / n).collect())
    }

    /// Mean and largest absolute difference between the sequential reader's plane and the
    /// `d × d` means of a full decode, leaving out the last row and column of cells (the
    /// reader's edge cells also average the padding pixels past the image's edge).
    fn compare_sequential(jpeg: &[u8], d: u32) -> (f32, f32) {
        let (w, h, got) = sequential_luma(jpeg, u64::MAX, d).expect("baseline file read");
        let (rw, rh, want) = reference_pooled(jpeg, d as usize);
        assert_eq!((w as usize, h as usize), (rw, rh));
        let mut diffs = Vec::new();
        for y in 0..rh - 1 {
            for x in 0..rw - 1 {
                diffs.push((f32::from(got[y * rw + x]) - want[y * rw + x]).abs());
            }
        }
        let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
        (mean, diffs.iter().copied().fold(0.0, f32::max))
    }

    #[test]
    fn sequential_plane_is_the_means_of_a_full_decode() {
        let (w, h) = (517u16, 389u16); // not multiples of 8 or 16: partial blocks and MCUs
        let rgb = picture(usize::from(w), usize::from(h));
        let grey: Vec<u8> = rgb.chunks(3).map(|p| p[1]).collect();
        let mut grey_jpeg = Vec::new();
        jpeg_encoder::Encoder::new(&mut grey_jpeg, 80)
            .encode(&grey, w, h, jpeg_encoder::ColorType::Luma)
            .expect("encodes");
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("4:2:0", encode(&rgb, w, h, |_| {})),
            (
                "4:4:4, restart interval 5",
                encode(&rgb, w, h, |e| {
                    e.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_4_4);
                    e.set_restart_interval(5);
                }),
            ),
            ("4:2:2", encode(&rgb, w, h, |e| e.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_2_2))),
            ("greyscale", grey_jpeg),
        ];
        for (label, jpeg) in &cases {
            for d in [2, 4, 8] {
                let (mean, max) = compare_sequential(jpeg, d);
                eprintln!("{label}, 1/{d}: mean |diff| {mean:.2}, max {max:.2}");
                // Exact means up to the decoders' rounding, clamping and IDCT approximations: a
                // wrong coefficient position, sign or block is tens of levels off.
                // Exact means up to the decoders' rounding (one level either way, and the mean of
                // the reference's rounded pixels): a wrong coefficient position, sign, scale or
                // block is several levels off.
                assert!(mean < 0.4, "{label}, 1/{d}: mean |diff| {mean}");
                assert!(max < 1.5, "{label}, 1/{d}: max |diff| {max}");
            }
        }
    }

    #[test]
    fn sequential_reader_refuses_other_files_and_survives_corruption() {
        let rgb = picture(64, 48);
        let baseline = encode(&rgb, 64, 48, |e| e.set_restart_interval(3));
        let progressive = encode(&rgb, 64, 48, |e| e.set_progressive(true));
        assert!(sequential_luma(&progressive, u64::MAX, 2).is_none());
        assert!(quarter_luma(&baseline, u64::MAX).is_none());
        assert!(sequential_luma(&baseline, u64::MAX, 3).is_none(), "only 2, 4 and 8");
        assert!(sequential_luma(&baseline, 64 * 48 - 1, 2).is_none(), "pixel limit");
        assert_eq!(sequential_luma(&baseline, u64::MAX, 8).map(|p| (p.0, p.1, p.2.len())), Some((8, 6, 48)));
        for cut in 0..baseline.len() {
            if let Some((w, h, luma)) = sequential_luma(&baseline[..cut], u64::MAX, 4) {
                assert_eq!((w, h, luma.len()), (16, 12, 16 * 12));
            }
        }
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..3000 {
            let mut f = baseline.clone();
            for _ in 0..1 + next() % 8 {
                let i = (next() % f.len() as u64) as usize;
                f[i] = next() as u8;
            }
            if let Some((w, h, luma)) = sequential_luma(&f, 1 << 20, 2) {
                assert_eq!(luma.len(), w as usize * h as usize);
                assert!(u64::from(w) * u64::from(h) <= 1 << 20);
            }
        }
    }

    #[test]
    fn not_a_progressive_jpeg_is_none() {
        assert!(quarter_luma(b"", u64::MAX).is_none());
        assert!(quarter_luma(b"\xFF\xD8\xFF\xD9", u64::MAX).is_none());
        assert!(quarter_luma(b"GIF89a....", u64::MAX).is_none());
        assert!(sequential_luma(b"", u64::MAX, 2).is_none());
        assert!(sequential_luma(b"\xFF\xD8\xFF\xD9", u64::MAX, 2).is_none());
    }
}
