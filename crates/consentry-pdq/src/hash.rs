//! The 256-bit hash value shared by every consentry crate.

use std::fmt;
use std::str::FromStr;

/// A 256-bit perceptual hash (PDQ, or any other 256-bit signal).
///
/// The value is a 256-bit unsigned integer. Its canonical text form is the one
/// Meta's tools print: 64 lowercase hex digits, most significant first.
/// PDQ's bit `k` (the `k`-th DCT coefficient in row-major order) is bit `k` of
/// that integer, counting from the least significant end.
///
/// Internally it is four `u64` words, most significant word first, so
/// `words()[0]` holds the first 16 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash256 {
    words: [u64; 4],
}

/// Why a string is not a [`Hash256`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseHashError {
    /// The text is not exactly 64 characters long (after trimming whitespace).
    Length(usize),
    /// A character that is not a hex digit, at this position.
    InvalidDigit(usize),
}

impl fmt::Display for ParseHashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseHashError::Length(n) => {
                write!(f, "a 256-bit hash is 64 hex digits, this one has {n} characters")
            }
            ParseHashError::InvalidDigit(i) => {
                write!(f, "character {} of the hash is not a hex digit", i + 1)
            }
        }
    }
}

impl std::error::Error for ParseHashError {}

impl Hash256 {
    /// The all-zero hash. PDQ gives it for images too small to hash; it is also
    /// what a corrupt record often decodes to, so callers treat it as "no hash".
    pub const ZERO: Hash256 = Hash256 { words: [0; 4] };

    /// Number of bits.
    pub const BITS: u32 = 256;

    /// Builds a hash from its four words, most significant first.
    pub const fn from_words(words: [u64; 4]) -> Self {
        Hash256 { words }
    }

    /// The four words, most significant first.
    pub const fn words(&self) -> [u64; 4] {
        self.words
    }

    /// Builds a hash from 32 bytes in big-endian order (the order of the hex text).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let mut words = [0u64; 4];
        for (w, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            *w = u64::from_be_bytes(chunk.try_into().expect("8-byte chunk"));
        }
        Hash256 { words }
    }

    /// The 32 bytes in big-endian order (the order of the hex text).
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (chunk, w) in out.chunks_exact_mut(8).zip(self.words) {
            chunk.copy_from_slice(&w.to_be_bytes());
        }
        out
    }

    /// Parses 64 hex digits (either case), most significant first.
    /// Surrounding whitespace is ignored.
    pub fn from_hex(text: &str) -> Result<Self, ParseHashError> {
        let t = text.trim();
        let b = t.as_bytes();
        if b.len() != 64 {
            return Err(ParseHashError::Length(t.chars().count()));
        }
        let mut words = [0u64; 4];
        let mut bad = 0u8;
        for (w, digits) in words.iter_mut().zip(b.chunks_exact(16)) {
            let mut v = 0u64;
            for &c in digits {
                let d = HEX_VALUE[usize::from(c)];
                bad |= d;
                v = (v << 4) | u64::from(d & 0x0f);
            }
            *w = v;
        }
        if bad & INVALID != 0 {
            // Rare: find the first offending digit for the message.
            let i = b.iter().position(|&c| HEX_VALUE[usize::from(c)] & INVALID != 0).unwrap_or(0);
            return Err(ParseHashError::InvalidDigit(i));
        }
        Ok(Hash256 { words })
    }

    /// The canonical text as ASCII bytes: 64 lowercase hex digits, most significant first
    /// (what [`to_hex`](Self::to_hex) returns, without allocating).
    pub fn hex_bytes(&self) -> [u8; 64] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (chunk, w) in out.chunks_exact_mut(16).zip(self.words) {
            for (k, o) in chunk.iter_mut().enumerate() {
                *o = DIGITS[((w >> (60 - 4 * k)) & 0xf) as usize];
            }
        }
        out
    }

    /// The canonical text: 64 lowercase hex digits, most significant first.
    pub fn to_hex(&self) -> String {
        let bytes = self.hex_bytes();
        std::str::from_utf8(&bytes).expect("hex digits are ASCII").to_owned()
    }

    /// Bit `k` (0 = least significant). For PDQ, bit `k` is DCT coefficient
    /// `(k / 16, k % 16)`.
    ///
    /// # Panics
    /// If `k >= 256`.
    pub fn bit(&self, k: u32) -> bool {
        assert!(k < 256, "bit index {k} out of range");
        (self.words[3 - (k / 64) as usize] >> (k % 64)) & 1 == 1
    }

    /// Sets bit `k` to one.
    ///
    /// # Panics
    /// If `k >= 256`.
    pub fn set_bit(&mut self, k: u32) {
        assert!(k < 256, "bit index {k} out of range");
        self.words[3 - (k / 64) as usize] |= 1u64 << (k % 64);
    }

    /// Flips bit `k`.
    ///
    /// # Panics
    /// If `k >= 256`.
    pub fn flip_bit(&mut self, k: u32) {
        assert!(k < 256, "bit index {k} out of range");
        self.words[3 - (k / 64) as usize] ^= 1u64 << (k % 64);
    }

    /// Hamming distance: the number of bits that differ (0..=256).
    #[inline]
    pub fn distance(&self, other: &Hash256) -> u32 {
        (self.words[0] ^ other.words[0]).count_ones()
            + (self.words[1] ^ other.words[1]).count_ones()
            + (self.words[2] ^ other.words[2]).count_ones()
            + (self.words[3] ^ other.words[3]).count_ones()
    }

    /// Number of one bits. A PDQ hash of a real image has about 128.
    pub fn count_ones(&self) -> u32 {
        self.words.iter().map(|w| w.count_ones()).sum()
    }

    /// True for the all-zero hash.
    pub fn is_zero(&self) -> bool {
        self.words == [0; 4]
    }

    /// Bitwise exclusive or.
    pub fn xor(&self, other: &Hash256) -> Hash256 {
        let mut words = self.words;
        for (w, o) in words.iter_mut().zip(other.words) {
            *w ^= o;
        }
        Hash256 { words }
    }
}

impl fmt::Display for Hash256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.hex_bytes();
        f.pad(std::str::from_utf8(&bytes).expect("hex digits are ASCII"))
    }
}

/// Marks a byte that is not a hex digit in [`HEX_VALUE`].
const INVALID: u8 = 0x80;

/// The value of every byte as a hex digit, or [`INVALID`].
const HEX_VALUE: [u8; 256] = {
    let mut t = [INVALID; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

impl fmt::Debug for Hash256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash256({self})")
    }
}

impl FromStr for Hash256 {
    type Err = ParseHashError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Hash256::from_hex(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_order() {
        let text = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22";
        let h = Hash256::from_hex(text).unwrap();
        assert_eq!(h.to_hex(), text);
        assert_eq!(h.words()[0], 0xf8f8f0cee0f4a84f);
        assert_eq!(h.to_bytes()[0], 0xf8);
        assert_eq!(Hash256::from_bytes(h.to_bytes()), h);
        assert_eq!(Hash256::from_hex(&text.to_uppercase()).unwrap(), h);
    }

    #[test]
    fn bit_zero_is_last_hex_digit() {
        let mut h = Hash256::ZERO;
        h.set_bit(0);
        assert!(h.to_hex().ends_with('1'));
        h.set_bit(255);
        assert!(h.to_hex().starts_with('8'));
        assert!(h.bit(0) && h.bit(255) && !h.bit(1));
        assert_eq!(h.count_ones(), 2);
    }

    #[test]
    fn bad_text_is_rejected() {
        assert_eq!(Hash256::from_hex("abc"), Err(ParseHashError::Length(3)));
        let mut s = "0".repeat(63);
        s.push('g');
        assert_eq!(Hash256::from_hex(&s), Err(ParseHashError::InvalidDigit(63)));
        assert!(Hash256::from_hex(&"é".repeat(32)).is_err());
    }

    #[test]
    fn distance_counts_differing_bits() {
        let a = Hash256::ZERO;
        let mut b = a;
        for k in [0, 63, 64, 200, 255] {
            b.flip_bit(k);
        }
        assert_eq!(a.distance(&b), 5);
        assert_eq!(b.distance(&b), 0);
        assert_eq!(Hash256::from_words([u64::MAX; 4]).distance(&a), 256);
    }
}
