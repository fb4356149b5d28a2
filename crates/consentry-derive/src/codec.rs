//! Stable serialized forms of a [`Signature`] and of [`QueryFeatures`]: bytes and base64 text.
//!
//! Signature layout (version 2; version 3, below, adds the image's size): `[version = 2][PDQ hash, 32 bytes, as Hash256::to_bytes]
//! [quality][n]` then `n` keypoints of 37 bytes: `x` (u16 LE), `y` (u16 LE),
//! `level`, descriptor (4 × u64 LE); then the top band's PDQ hash (32 bytes) and quality.
//! Version 1 is the same without the band (it is still read; its band is `None`). Version 3
//! (written by [`crate::Extractor::signature`]) is version 2 with the longest side of the
//! protected image (`[side, u16 LE]`, [`Signature::source_side`], 1 or more) after the band's
//! quality; a signature whose side is not known (0) is written as version 2, one without a band
//! as version 1. Version 4 (written by [`crate::Extractor::signature`] from 2026-12-07) is version 3
//! with the image's [`Grid`] after the size: `[width u16 LE][height u16 LE][12][12]` and 144 cells
//! of 4 bits, two to a byte, the first in the low bits (78 bytes); a signature without a grid is
//! written as version 3. The head (version, PDQ hash, quality) is laid out alike in all, so a
//! reader of the PDQ hash alone (the protect page) need not know the rest.
//!
//! Query features (version 2), what a client that keeps its images sends to be matched:
//! `[version = 2][8 dihedral PDQ hashes, 8 × 32 bytes][quality][band hash as it is, 32 bytes]
//! [band hash mirrored, 32 bytes][band quality][n, u16 LE]` then `n` keypoints of 37 bytes as
//! above, then, when the query has uniform borders, the band of the picture inside them in the
//! same three fields. Version 3 is version 2 with the mirrored keypoints (`[m, u16 LE]` then `m`
//! keypoints) right after the keypoints. Version 4 (written by [`crate::Extractor::query`]) has the
//! layout of version 3 (the mirrored keypoints' count always present, possibly 0), with keypoint
//! levels a third of an octave apart (0..[`QUERY_LEVELS`], [`QueryFeatures::levels_per_octave`]
//! = 3); in versions 1–3 they are half an octave apart (0..6). Version 5 is version 4 with the
//! longest side of the query image (`[side, u16 LE]`, [`QueryFeatures::source_side`], 1 or more)
//! right after the mirrored keypoints; features whose side is not known (0) are written as version
//! 4. Version 6 (written by [`crate::Extractor::query`] from 2026-12-07) is version 5 with the
//! query's [`Grid`] right after the size (the same header, at most 32×32 cells, a grey level per
//! byte) and before the trimmed band; features without a grid are written as version 5. Features
//! in half octaves are written as version 3 when they have mirrored keypoints, version
//! 2 otherwise. Version 1 (still read) has no band fields.

use crate::{BandQuery, Grid, Keypoint, QueryFeatures, Signature, LEVELS, QUERY_LEVELS, STORED_CELLS};
use consentry_pdq::{Hash256, PdqHash};
use std::fmt;

/// Version byte of signatures (the newest: with the protected image's grid). Signatures without
/// the grid are written as version 3, without the size as version 2, without the band as version 1.
pub const SIGNATURE_VERSION: u8 = 4;
const HEADER: usize = 35;
const KP: usize = 37;
/// The band's hash and quality.
const BAND: usize = 33;
/// The image's longest side (signatures of version 3, query features of version 5).
const SIDE: usize = 2;
/// A signature's grid: its header (frame width and height, u16 LE, cells across and down) and
/// 12×12 cells of 4 bits.
#[allow(clippy::manual_div_ceil)] // Rust 1.63 (the protect page's wasm build) has no div_ceil
const STORED_GRID: usize = GRID_HEAD + (STORED_CELLS as usize * STORED_CELLS as usize + 1) / 2;
const GRID_HEAD: usize = 6;
/// Cells across or down a query's grid at most (a 512-px side in cells of 16).
const MAX_QUERY_GRID_CELLS: u8 = 32;
/// Largest serialized size of a signature made by [`crate::Extractor`] (50 keypoints).
pub const MAX_SIGNATURE_BYTES: usize = HEADER + KP * 50 + BAND + SIDE + STORED_GRID;

/// Why bytes or text are not a signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than its header says.
    Truncated,
    /// Bytes left after the last keypoint.
    TrailingBytes,
    /// Unknown version byte.
    Version(u8),
    /// A field out of range.
    Invalid(&'static str),
    /// Not base64.
    Base64,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => write!(f, "derivative signature is truncated"),
            DecodeError::TrailingBytes => write!(f, "derivative signature has trailing bytes"),
            DecodeError::Version(v) => {
                write!(
                    f,
                    "derivative signature version {v} is not supported (signatures: 1 to {SIGNATURE_VERSION}; \
                     query features: 1 to {QUERY_FEATURES_VERSION})"
                )
            }
            DecodeError::Invalid(w) => write!(f, "derivative signature: invalid {w}"),
            DecodeError::Base64 => write!(f, "derivative signature: not valid base64"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Version byte of serialized query features (the newest: keypoint levels a third of an octave
/// apart, the query image's size and its grid). Features without the grid are written as version
/// 5, without the size as version 4, and
/// in half octaves ([`QueryFeatures::in_half_octaves`]) as version 3, or 2 without mirrored
/// keypoints, which older readers understand.
pub const QUERY_FEATURES_VERSION: u8 = 6;
const QUERY_HEADER_V1: usize = 1 + 8 * 32 + 1 + 2;
const QUERY_BAND: usize = 2 * 32 + 1;

fn get_hash(b: &[u8]) -> Hash256 {
    Hash256::from_bytes(b[..32].try_into().expect("32 bytes"))
}

fn get_quality(q: u8) -> Result<u8, DecodeError> {
    if q > 100 {
        return Err(DecodeError::Invalid("quality"));
    }
    Ok(q)
}

/// An image's longest side (u16 LE; a side over 65,535 px is written as 65,535, still "not small").
fn put_side(v: &mut Vec<u8>, side: u32) {
    v.extend_from_slice(&(side.min(u32::from(u16::MAX)) as u16).to_le_bytes());
}

/// The side written by [`put_side`]; 0 (written only when the side is not known, and then not at
/// all) is refused.
fn get_side(b: &[u8]) -> Result<u32, DecodeError> {
    match u16::from_le_bytes([b[0], b[1]]) {
        0 => Err(DecodeError::Invalid("image size")),
        s => Ok(u32::from(s)),
    }
}

/// A grid: `[width u16 LE][height u16 LE][cols][rows]`, then the cells row by row, a byte each
/// when they are grey levels ([`Grid::fine`], a query's), else two to a byte (the first in the
/// low 4 bits).
fn put_grid(v: &mut Vec<u8>, g: &Grid) {
    v.extend_from_slice(&g.width.to_le_bytes());
    v.extend_from_slice(&g.height.to_le_bytes());
    v.push(g.cols);
    v.push(g.rows);
    if g.fine {
        v.extend_from_slice(&g.cells);
        return;
    }
    for pair in g.cells.chunks(2) {
        v.push(pair[0] | pair.get(1).map_or(0, |c| c << 4));
    }
}

/// The grid [`put_grid`] wrote at the start of `b` (grey levels when `fine`), with at most `max`
/// cells across and down, and the bytes it took.
fn get_grid(b: &[u8], max: u8, fine: bool) -> Result<(Grid, usize), DecodeError> {
    let h = b.get(..GRID_HEAD).ok_or(DecodeError::Truncated)?;
    let (width, height, cols, rows) =
        (u16::from_le_bytes([h[0], h[1]]), u16::from_le_bytes([h[2], h[3]]), h[4], h[5]);
    if cols > max || rows > max {
        return Err(DecodeError::Invalid("grid size"));
    }
    let n = usize::from(cols) * usize::from(rows);
    #[allow(clippy::manual_div_ceil)] // Rust 1.63 (the wasm build) has no div_ceil
    let len = GRID_HEAD + if fine { n } else { (n + 1) / 2 };
    let packed = b.get(GRID_HEAD..len).ok_or(DecodeError::Truncated)?;
    let cells: Vec<u8> = if fine {
        packed.to_vec()
    } else {
        let mut c: Vec<u8> = packed.iter().flat_map(|&p| [p & 15, p >> 4]).collect();
        if n % 2 == 1 && c.pop() != Some(0) {
            return Err(DecodeError::Invalid("grid padding"));
        }
        c
    };
    let g = Grid { width, height, cols, rows, cells, fine };
    if !g.valid() {
        return Err(DecodeError::Invalid("grid"));
    }
    Ok((g, len))
}

fn put_keypoint(v: &mut Vec<u8>, k: &Keypoint) {
    v.extend_from_slice(&k.x.to_le_bytes());
    v.extend_from_slice(&k.y.to_le_bytes());
    v.push(k.level);
    for w in k.desc {
        v.extend_from_slice(&w.to_le_bytes());
    }
}

/// Keypoints of `levels` pyramid levels from whole 37-byte records.
fn get_keypoints(b: &[u8], levels: usize) -> Result<Vec<Keypoint>, DecodeError> {
    let mut keypoints = Vec::with_capacity(b.len() / KP);
    for c in b.chunks_exact(KP) {
        let level = c[4];
        if usize::from(level) >= levels {
            return Err(DecodeError::Invalid("keypoint level"));
        }
        let mut desc = [0u64; 4];
        for (i, d) in desc.iter_mut().enumerate() {
            *d = u64::from_le_bytes(c[5 + 8 * i..13 + 8 * i].try_into().expect("8 bytes"));
        }
        keypoints.push(Keypoint {
            x: u16::from_le_bytes([c[0], c[1]]),
            y: u16::from_le_bytes([c[2], c[3]]),
            level,
            desc,
        });
    }
    Ok(keypoints)
}

impl QueryFeatures {
    /// The format version [`QueryFeatures::to_bytes`] writes these features in: 6 for levels a
    /// third of an octave apart with the image's size and grid, 5 without the grid, 4 without the
    /// size (the grid is then left out too), else 3 with mirrored
    /// keypoints and 2 without (what readers of those versions understand).
    pub fn format_version(&self) -> u8 {
        match (self.levels_per_octave, self.mirrored.is_empty()) {
            (2, true) => 2,
            (2, false) => 3,
            _ if self.source_side == 0 => 4,
            _ if self.grid.is_none() => 5,
            _ => QUERY_FEATURES_VERSION,
        }
    }

    /// Serialized bytes (see the module docs); at most 65,535 keypoints (and as many mirrored)
    /// are kept.
    pub fn to_bytes(&self) -> Vec<u8> {
        let n = self.keypoints.len().min(usize::from(u16::MAX));
        let m = self.mirrored.len().min(usize::from(u16::MAX));
        let mut v = Vec::with_capacity(QUERY_HEADER_V1 + 2 * QUERY_BAND + 2 + KP * (n + m));
        let version = self.format_version();
        debug_assert!(version < 4 || self.levels_per_octave == crate::QUERY_LEVELS_PER_OCTAVE);
        v.push(version);
        for h in &self.pdq {
            v.extend_from_slice(&h.to_bytes());
        }
        v.push(self.quality);
        // no band: quality 0, which rule 3 never uses
        let band = self.band.unwrap_or(BandQuery { hashes: [Hash256::ZERO; 2], quality: 0 });
        for h in &band.hashes {
            v.extend_from_slice(&h.to_bytes());
        }
        v.push(band.quality);
        v.extend_from_slice(&(n as u16).to_le_bytes());
        for k in &self.keypoints[..n] {
            put_keypoint(&mut v, k);
        }
        if version >= 3 {
            v.extend_from_slice(&(m as u16).to_le_bytes());
            for k in &self.mirrored[..m] {
                put_keypoint(&mut v, k);
            }
        }
        if version >= 5 {
            put_side(&mut v, self.source_side);
        }
        if let (6.., Some(g)) = (version, &self.grid) {
            put_grid(&mut v, g);
        }
        if let Some(t) = self.trimmed_band {
            for h in &t.hashes {
                v.extend_from_slice(&h.to_bytes());
            }
            v.push(t.quality);
        }
        v
    }

    /// Parse [`QueryFeatures::to_bytes`] output.
    pub fn from_bytes(b: &[u8]) -> Result<QueryFeatures, DecodeError> {
        let version = *b.first().ok_or(DecodeError::Truncated)?;
        let header = match version {
            1 => QUERY_HEADER_V1,
            2..=6 => QUERY_HEADER_V1 + QUERY_BAND,
            v => return Err(DecodeError::Version(v)),
        };
        if b.len() < header {
            return Err(DecodeError::Truncated);
        }
        let mut pdq = [Hash256::ZERO; 8];
        for (i, h) in pdq.iter_mut().enumerate() {
            *h = get_hash(&b[1 + 32 * i..]);
        }
        let quality = get_quality(b[257])?;
        let band = if header > QUERY_HEADER_V1 {
            Some(BandQuery {
                hashes: [get_hash(&b[258..]), get_hash(&b[290..])],
                quality: get_quality(b[322])?,
            })
        } else {
            None
        };
        let n = usize::from(u16::from_le_bytes([b[header - 2], b[header - 1]]));
        let mut need = header + KP * n;
        if b.len() < need {
            return Err(DecodeError::Truncated);
        }
        let (levels, levels_per_octave) = if version >= 4 {
            (QUERY_LEVELS, crate::QUERY_LEVELS_PER_OCTAVE)
        } else {
            (crate::HALF_OCTAVE_QUERY_LEVELS, 2)
        };
        let keypoints = get_keypoints(&b[header..need], levels)?;
        let mut mirrored = Vec::new();
        if version >= 3 {
            let c = b.get(need..need + 2).ok_or(DecodeError::Truncated)?;
            let m = usize::from(u16::from_le_bytes([c[0], c[1]]));
            let start = need + 2;
            need = start + KP * m;
            if b.len() < need {
                return Err(DecodeError::Truncated);
            }
            mirrored = get_keypoints(&b[start..need], levels)?;
        }
        let mut source_side = 0;
        if version >= 5 {
            source_side = get_side(b.get(need..need + SIDE).ok_or(DecodeError::Truncated)?)?;
            need += SIDE;
        }
        let mut grid = None;
        if version >= 6 {
            let (g, len) = get_grid(&b[need.min(b.len())..], MAX_QUERY_GRID_CELLS, true)?;
            grid = Some(g);
            need += len;
        }
        // version 2 may end with the trimmed band
        let trimmed = header > QUERY_HEADER_V1 && b.len() == need + QUERY_BAND;
        if b.len() > need && !trimmed {
            return Err(DecodeError::TrailingBytes);
        }
        let trimmed_band = if trimmed {
            let t = &b[need..];
            Some(BandQuery { hashes: [get_hash(t), get_hash(&t[32..])], quality: get_quality(t[64])? })
        } else {
            None
        };
        Ok(QueryFeatures {
            pdq,
            quality,
            keypoints,
            mirrored,
            band,
            trimmed_band,
            levels_per_octave,
            source_side,
            grid,
        })
    }

    /// Standard base64 (with padding) of [`QueryFeatures::to_bytes`].
    pub fn to_base64(&self) -> String {
        base64_encode(&self.to_bytes())
    }

    /// Parse [`QueryFeatures::to_base64`] output (surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Result<QueryFeatures, DecodeError> {
        QueryFeatures::from_bytes(&base64_decode(text)?)
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

impl Signature {
    /// The format version [`Signature::to_bytes`] writes this signature in: 4 with the band, the
    /// image's size and its grid, 3 without the grid, 2 with the band alone (no size: the grid is
    /// left out too), 1 without the band (a version-1 signature read back: the same bytes again).
    pub fn format_version(&self) -> u8 {
        match (self.band.is_some(), self.source_side, &self.grid) {
            (false, _, _) => 1,
            (true, 0, _) => 2,
            (true, _, None) => 3,
            (true, _, Some(_)) => SIGNATURE_VERSION,
        }
    }

    /// Serialized bytes (see the module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let n = self.keypoints.len().min(255);
        let mut v = Vec::with_capacity(HEADER + KP * n + BAND + SIDE + STORED_GRID);
        let version = self.format_version();
        v.push(version);
        v.extend_from_slice(&self.pdq.to_bytes());
        v.push(self.quality);
        v.push(n as u8);
        for k in &self.keypoints[..n] {
            put_keypoint(&mut v, k);
        }
        if let Some(band) = self.band {
            v.extend_from_slice(&band.hash.to_bytes());
            v.push(band.quality);
        }
        if version >= 3 {
            put_side(&mut v, self.source_side);
        }
        if let (4.., Some(g)) = (version, &self.grid) {
            put_grid(&mut v, g);
        }
        v
    }

    /// Parse [`Signature::to_bytes`] output.
    pub fn from_bytes(b: &[u8]) -> Result<Signature, DecodeError> {
        let version = *b.first().ok_or(DecodeError::Truncated)?;
        let trailer = match version {
            1 => 0,
            2 => BAND,
            3 => BAND + SIDE,
            4 => BAND + SIDE + STORED_GRID,
            v => return Err(DecodeError::Version(v)),
        };
        if b.len() < HEADER {
            return Err(DecodeError::Truncated);
        }
        let pdq = get_hash(&b[1..]);
        let quality = get_quality(b[33])?;
        let n = usize::from(b[34]);
        let kp_end = HEADER + KP * n;
        let need = kp_end + trailer;
        if b.len() < need {
            return Err(DecodeError::Truncated);
        }
        if b.len() > need {
            return Err(DecodeError::TrailingBytes);
        }
        let keypoints = get_keypoints(&b[HEADER..kp_end], LEVELS)?;
        let band = if version >= 2 {
            Some(PdqHash { hash: get_hash(&b[kp_end..]), quality: get_quality(b[kp_end + 32])? })
        } else {
            None
        };
        let source_side = if version >= 3 { get_side(&b[kp_end + BAND..])? } else { 0 };
        let grid = if version >= 4 {
            let (g, _) = get_grid(&b[kp_end + BAND + SIDE..], STORED_CELLS, false)?;
            if (g.cols, g.rows) != (STORED_CELLS, STORED_CELLS) {
                return Err(DecodeError::Invalid("grid size"));
            }
            Some(g)
        } else {
            None
        };
        Ok(Signature { pdq, quality, keypoints, band, source_side, grid })
    }

    /// Standard base64 (with padding) of [`Signature::to_bytes`].
    pub fn to_base64(&self) -> String {
        base64_encode(&self.to_bytes())
    }

    /// Parse [`Signature::to_base64`] output (surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Result<Signature, DecodeError> {
        Signature::from_bytes(&base64_decode(text)?)
    }
}

/// Standard base64 with padding.
fn base64_encode(b: &[u8]) -> String {
    #[allow(clippy::manual_div_ceil)] // Rust 1.63 (the protect page's wasm build) has no div_ceil
    let mut s = String::with_capacity((b.len() + 2) / 3 * 4);
    for c in b.chunks(3) {
        let v = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(B64[((v >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Standard base64 with padding (surrounding whitespace ignored).
fn base64_decode(text: &str) -> Result<Vec<u8>, DecodeError> {
    let t = text.trim().as_bytes();
    if t.len() % 4 != 0 {
        return Err(DecodeError::Base64);
    }
    let val = |c: u8| -> Result<u32, DecodeError> {
        Ok(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(DecodeError::Base64),
        }
        .into())
    };
    let mut out = Vec::with_capacity(t.len() / 4 * 3);
    for (ci, c) in t.chunks(4).enumerate() {
        let last = ci == t.len() / 4 - 1;
        let pad = c.iter().rev().take_while(|&&x| x == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return Err(DecodeError::Base64);
        }
        let mut v = 0u32;
        for &x in &c[..4 - pad] {
            v = (v << 6) | val(x)?;
        }
        v <<= 6 * pad as u32;
        let bytes = [(v >> 16) as u8, (v >> 8) as u8, v as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Ok(out)
}
