//! A small seeded generator (SplitMix64): deterministic on every platform, no dependency.

/// Deterministic pseudo-random numbers. Not for cryptography.
#[derive(Debug, Clone)]
pub struct Rng(u64);

/// FNV-1a of a string, to derive seeds from labels (so a transform's randomness
/// does not depend on which other transforms are selected).
pub fn fnv1a(s: &str) -> u64 {
    fnv1a_bytes(s.as_bytes())
}

/// FNV-1a of bytes (e.g. a query's JPEG, to name it in evidence lines).
pub fn fnv1a_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        let mut r = Rng(seed ^ 0x9e37_79b9_7f4a_7c15);
        r.next_u64();
        r
    }

    /// A generator for one (seed, a, b) triple, e.g. (run seed, image, transform).
    pub fn derive(seed: u64, a: u64, b: u64) -> Self {
        let mut r = Rng::new(seed);
        let x = r.next_u64() ^ a.wrapping_mul(0xd1b5_4a32_d192_ed03);
        let mut r = Rng::new(x);
        let y = r.next_u64() ^ b.wrapping_mul(0x8cb9_2ba7_2f3d_8dd7);
        Rng::new(y)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f64()
    }

    /// Uniform integer in [0, n); 0 when n is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
        }
    }

    /// A fair coin.
    pub fn coin(&mut self) -> bool {
        self.next_u64() >> 63 == 1
    }

    /// Standard normal (Box–Muller).
    pub fn gauss(&mut self) -> f64 {
        let u1 = self.f64().max(1e-300);
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Approximately standard normal, cheaply: the sum of four uniforms
    /// (Irwin–Hall), centred and scaled to unit variance. From one 64-bit draw.
    pub fn gauss_fast(&mut self) -> f64 {
        let v = self.next_u64();
        let s: u64 = (0..4).map(|i| (v >> (16 * i)) & 0xffff).sum();
        // Each uniform on [0, 65536): mean 32767.5, variance 65536²/12.
        (s as f64 - 4.0 * 32767.5) / (65536.0 * (4.0f64 / 12.0).sqrt())
    }

    /// A random colour.
    pub fn rgb(&mut self) -> [u8; 3] {
        let v = self.next_u64();
        [v as u8, (v >> 8) as u8, (v >> 16) as u8]
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_in_range() {
        let mut a = Rng::derive(7, 1, 2);
        let mut b = Rng::derive(7, 1, 2);
        let mut c = Rng::derive(7, 2, 1);
        let xa: Vec<u64> = (0..16).map(|_| a.next_u64()).collect();
        let xb: Vec<u64> = (0..16).map(|_| b.next_u64()).collect();
        let xc: Vec<u64> = (0..16).map(|_| c.next_u64()).collect();
        assert_eq!(xa, xb);
        assert_ne!(xa, xc);
        let mut r = Rng::new(1);
        for _ in 0..1000 {
            let f = r.f64();
            assert!((0.0..1.0).contains(&f));
            assert!(r.below(7) < 7);
        }
    }
}
