//! Linear scan: the exhaustive baseline and the fallback for large radii.

use crate::segment::H;

/// Hamming distance of two hashes given as words.
#[inline(always)]
pub(crate) fn dist(a: &[u64; 4], b: &[u64; 4]) -> u32 {
    (a[0] ^ b[0]).count_ones()
        + (a[1] ^ b[1]).count_ones()
        + (a[2] ^ b[2]).count_ones()
        + (a[3] ^ b[3]).count_ones()
}

#[inline(always)]
fn scan_generic(hashes: &[H], q: &[u64; 4], r: u32, base: u32, out: &mut impl FnMut(u32, u32)) {
    // Blocks of 8 with a branch-free distance pass: the compiler keeps it in registers.
    let mut chunks = hashes.chunks_exact(8);
    let mut i = base;
    for block in &mut chunks {
        let mut d = [0u32; 8];
        for (dj, h) in d.iter_mut().zip(block) {
            *dj = dist(q, &h.0);
        }
        if d.iter().any(|&x| x <= r) {
            for (j, &dj) in d.iter().enumerate() {
                if dj <= r {
                    out(i + j as u32, dj);
                }
            }
        }
        i += 8;
    }
    for h in chunks.remainder() {
        let d = dist(q, &h.0);
        if d <= r {
            out(i, d);
        }
        i += 1;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
unsafe fn scan_popcnt(hashes: &[H], q: &[u64; 4], r: u32, base: u32, out: &mut impl FnMut(u32, u32)) {
    scan_generic(hashes, q, r, base, out)
}

/// Calls `out(base + i, distance)` for every `hashes[i]` within `r` of `q`.
pub(crate) fn scan(hashes: &[H], q: &[u64; 4], r: u32, base: u32, out: &mut impl FnMut(u32, u32)) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("popcnt") {
        // SAFETY: the CPU supports popcnt (checked just above).
        unsafe { scan_popcnt(hashes, q, r, base, out) };
        return;
    }
    scan_generic(hashes, q, r, base, out)
}
