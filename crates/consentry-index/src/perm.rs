//! A fixed pseudo-random permutation of the 256 bit positions.
//!
//! Segments store hashes with their bits permuted, so each multi-index chunk
//! takes its bits from all over the hash instead of from one run of
//! neighbouring DCT coefficients. Neighbouring PDQ bits are correlated, and
//! chunks of correlated bits have very uneven bucket sizes (more candidates
//! per probe). Hamming distance is unchanged by a permutation. The permutation
//! is part of the snapshot format: never change the seed without a version bump.

use std::sync::LazyLock;

type Lut = Vec<[[u64; 4]; 256]>;

pub(crate) struct Perm {
    fwd: Lut,
    inv: Lut,
}

fn lut(map: &[usize; 256]) -> Lut {
    // map[p] = where source position p goes; positions count from the MSB of word 0
    (0..32)
        .map(|byte| {
            let mut t = [[0u64; 4]; 256];
            for (v, out) in t.iter_mut().enumerate() {
                for j in 0..8 {
                    if (v >> (7 - j)) & 1 == 1 {
                        let d = map[byte * 8 + j];
                        out[d / 64] |= 1u64 << (63 - d % 64);
                    }
                }
            }
            t
        })
        .collect()
}

pub(crate) static PERM: LazyLock<Perm> = LazyLock::new(|| {
    let mut map = [0usize; 256];
    for (i, m) in map.iter_mut().enumerate() {
        *m = i;
    }
    let mut s: u64 = 0x00c0_75e7_7121_d3c5;
    for i in (1..256).rev() {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        map.swap(i, (z % (i as u64 + 1)) as usize);
    }
    let mut inv = [0usize; 256];
    for (p, &d) in map.iter().enumerate() {
        inv[d] = p;
    }
    Perm { fwd: lut(&map), inv: lut(&inv) }
});

#[inline]
fn apply(t: &Lut, h: &[u64; 4]) -> [u64; 4] {
    let mut o = [0u64; 4];
    for (wi, &w) in h.iter().enumerate() {
        for b in 0..8 {
            let v = ((w >> (56 - 8 * b)) & 0xff) as usize;
            let e = &t[wi * 8 + b][v];
            o[0] |= e[0];
            o[1] |= e[1];
            o[2] |= e[2];
            o[3] |= e[3];
        }
    }
    o
}

/// Original bit order -> storage order.
#[inline]
pub(crate) fn permute(h: &[u64; 4]) -> [u64; 4] {
    apply(&PERM.fwd, h)
}

/// Storage order -> original bit order.
#[inline]
pub(crate) fn unpermute(h: &[u64; 4]) -> [u64; 4] {
    apply(&PERM.inv, h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_round_trips_and_keeps_distances() {
        let a = [0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210, 0xdead_beef_0bad_f00d, 0x5555_aaaa_3333_cccc];
        let b = [0x1111_2222_3333_4444, 0, u64::MAX, 0x8000_0000_0000_0001];
        let (pa, pb) = (permute(&a), permute(&b));
        assert_eq!(unpermute(&pa), a);
        assert_eq!(unpermute(&pb), b);
        assert_ne!(pa, a);
        assert_eq!(crate::scan::dist(&pa, &pb), crate::scan::dist(&a, &b));
        for p in 0..256 {
            let mut u = [0u64; 4];
            u[p / 64] = 1 << (63 - p % 64);
            let q = permute(&u);
            assert_eq!(q.iter().map(|w| w.count_ones()).sum::<u32>(), 1);
        }
    }
}
