//! Rejection of degenerate hashes and parsing of hash-list imports.

use std::fmt;

use consentry_pdq::Hash256;

use crate::types::{BulkLine, LineError, SignalValue};

/// Which PDQ hashes are accepted. A real PDQ hash thresholds 256 DCT coefficients at their
/// median, so it has about 128 one bits; flat or synthetic images give all-zero or lopsided
/// hashes that would match unrelated images.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashPolicy {
    /// Fewest one bits accepted (default 96).
    pub min_ones: u32,
    /// Most one bits accepted (default 160).
    pub max_ones: u32,
    /// Lowest PDQ quality accepted when a quality is given (default 50, Meta's recommendation).
    pub min_quality: i32,
}

impl Default for HashPolicy {
    fn default() -> Self {
        HashPolicy { min_ones: 96, max_ones: 160, min_quality: 50 }
    }
}

/// Why a hash was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HashRejection {
    /// Every bit is zero (a flat image, or no hash at all).
    AllZeros,
    /// Every bit is one.
    AllOnes,
    /// Too few one bits for a real PDQ hash.
    TooFewOnes {
        /// One bits in the hash.
        ones: u32,
        /// The policy's minimum.
        min: u32,
    },
    /// Too many one bits for a real PDQ hash.
    TooManyOnes {
        /// One bits in the hash.
        ones: u32,
        /// The policy's maximum.
        max: u32,
    },
    /// The quality is below the policy's minimum.
    LowQuality {
        /// The given quality.
        quality: i32,
        /// The policy's minimum.
        min: i32,
    },
    /// The quality is not in 0..=100.
    QualityOutOfRange(i32),
    /// A derive value is not a derivative signature (see `consentry_derive::Signature::from_bytes`).
    NotASignature(consentry_derive::DecodeError),
    /// A derive value's signature is larger than any signature the extractor makes.
    SignatureTooLarge {
        /// Its size in bytes.
        bytes: usize,
        /// The largest accepted.
        max: usize,
    },
}

impl fmt::Display for HashRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashRejection::AllZeros => f.write_str("degenerate hash: all bits are zero"),
            HashRejection::AllOnes => f.write_str("degenerate hash: all bits are one"),
            HashRejection::TooFewOnes { ones, min } => {
                write!(f, "degenerate hash: {ones} one bits, a real PDQ hash has about 128 (minimum {min})")
            }
            HashRejection::TooManyOnes { ones, max } => {
                write!(f, "degenerate hash: {ones} one bits, a real PDQ hash has about 128 (maximum {max})")
            }
            HashRejection::LowQuality { quality, min } => {
                write!(f, "quality {quality} is below the minimum {min}")
            }
            HashRejection::QualityOutOfRange(q) => write!(f, "quality {q} is not in 0..=100"),
            HashRejection::NotASignature(e) => write!(f, "not a derivative signature: {e}"),
            HashRejection::SignatureTooLarge { bytes, max } => {
                write!(f, "derivative signature of {bytes} bytes is larger than the maximum {max}")
            }
        }
    }
}

impl std::error::Error for HashRejection {}

impl HashPolicy {
    /// Checks one PDQ hash and its optional quality.
    pub fn check_pdq(&self, hash: &Hash256, quality: Option<i32>) -> Result<(), HashRejection> {
        let ones = hash.count_ones();
        if ones == 0 {
            return Err(HashRejection::AllZeros);
        }
        if ones == Hash256::BITS {
            return Err(HashRejection::AllOnes);
        }
        if ones < self.min_ones {
            return Err(HashRejection::TooFewOnes { ones, min: self.min_ones });
        }
        if ones > self.max_ones {
            return Err(HashRejection::TooManyOnes { ones, max: self.max_ones });
        }
        if let Some(q) = quality {
            if !(0..=100).contains(&q) {
                return Err(HashRejection::QualityOutOfRange(q));
            }
            if q < self.min_quality {
                return Err(HashRejection::LowQuality { quality: q, min: self.min_quality });
            }
        }
        Ok(())
    }

    /// Checks any signal value. A derive value must decode, fit the size budget, and carry a
    /// global PDQ hash that passes [`HashPolicy::check_pdq`] (a degenerate one would match every
    /// flat image through the global path); its quality is the given one or else the
    /// signature's own.
    pub fn check(&self, value: &SignalValue, quality: Option<i32>) -> Result<(), HashRejection> {
        match value {
            SignalValue::Pdq(h) => self.check_pdq(h, quality),
            SignalValue::Derive(b) => {
                let max = consentry_derive::MAX_SIGNATURE_BYTES;
                if b.len() > max {
                    return Err(HashRejection::SignatureTooLarge { bytes: b.len(), max });
                }
                let sig = consentry_derive::Signature::from_bytes(b).map_err(HashRejection::NotASignature)?;
                self.check_pdq(&sig.pdq, quality.or(Some(i32::from(sig.quality))))
            }
        }
    }
}

/// Parses a PDQ hash list, one hash per line: `HEX` or `HEX,QUALITY` (comma, tab or spaces
/// between). Blank lines and lines starting with `#` are skipped. Returns the parsed lines and
/// the unparsable ones, both with 1-based line numbers; degenerate hashes are left for the
/// store to reject so that every rejection is reported the same way.
pub fn parse_pdq_lines(text: &str) -> (Vec<BulkLine>, Vec<LineError>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i as u64 + 1;
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let mut fields = t.split([',', '\t', ' ']).filter(|f| !f.is_empty());
        let hex = fields.next().unwrap_or_default();
        let hash = match Hash256::from_hex(hex) {
            Ok(h) => h,
            Err(e) => {
                bad.push(LineError { line, reason: format!("not a PDQ hash: {e}") });
                continue;
            }
        };
        let quality = match fields.next() {
            None => None,
            Some(q) => match q.parse::<i32>() {
                Ok(q) => Some(q),
                Err(_) => {
                    bad.push(LineError { line, reason: format!("quality `{q}` is not an integer") });
                    continue;
                }
            },
        };
        if let Some(extra) = fields.next() {
            bad.push(LineError { line, reason: format!("unexpected field `{extra}`") });
            continue;
        }
        good.push(BulkLine {
            line,
            value: SignalValue::Pdq(hash),
            quality,
            metadata: serde_json::Value::Null,
        });
    }
    (good, bad)
}
