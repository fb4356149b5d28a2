//! Case numbers, PINs and API key secrets: generation and salted hashing.
//!
//! PINs are low-entropy (10 digits), so they are hashed with Argon2id (memory-hard, salted,
//! parameters in the PHC string). API key secrets carry 256 random bits, so a salted
//! HMAC-SHA-256 is enough and keeps per-request verification cheap. Both are compared in
//! constant time.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::{Rng, RngCore};
use sha2::Sha256;

use crate::error::StoreError;

/// Case-number alphabet: digits and capitals without 0, 1, I, L, O (31 symbols).
pub const CASE_ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
/// Length of a case number (31^12 ≈ 2^59 possibilities).
pub const CASE_NUMBER_LEN: usize = 12;
/// Digits in a PIN.
pub const PIN_DIGITS: usize = 10;

/// A fresh random case number.
pub fn new_case_number() -> String {
    let mut rng = OsRng;
    (0..CASE_NUMBER_LEN).map(|_| CASE_ALPHABET[rng.gen_range(0..CASE_ALPHABET.len())] as char).collect()
}

/// Normalises what a person typed: drops spaces and dashes, upper-cases. `None` if the result
/// is not a well-formed case number.
pub fn normalize_case_number(input: &str) -> Option<String> {
    let n: String =
        input.chars().filter(|c| !c.is_whitespace() && *c != '-').map(|c| c.to_ascii_uppercase()).collect();
    (n.len() == CASE_NUMBER_LEN && n.bytes().all(|b| CASE_ALPHABET.contains(&b))).then_some(n)
}

/// `K7M29QXA4HRT` → `K7M2-9QXA-4HRT`.
pub fn format_case_number(n: &str) -> String {
    n.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join("-")
}

/// A fresh random PIN of [`PIN_DIGITS`] digits (leading zeros kept).
pub fn new_pin() -> String {
    let n: u64 = OsRng.gen_range(0..10_000_000_000u64);
    format!("{n:010}")
}

/// Argon2id cost parameters for PINs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinKdf {
    /// Memory in KiB (default 19456, OWASP's minimum for Argon2id).
    pub memory_kib: u32,
    /// Iterations (default 2).
    pub iterations: u32,
    /// Lanes (default 1).
    pub parallelism: u32,
}

impl Default for PinKdf {
    fn default() -> Self {
        PinKdf { memory_kib: 19 * 1024, iterations: 2, parallelism: 1 }
    }
}

impl PinKdf {
    fn argon2(&self) -> Result<Argon2<'static>, StoreError> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| StoreError::Internal(format!("bad Argon2 parameters: {e}")))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }

    /// Hashes a PIN with a fresh 16-byte salt; returns the PHC string.
    pub fn hash_pin(&self, pin: &str) -> Result<String, StoreError> {
        let mut salt = [0u8; 16];
        OsRng.fill_bytes(&mut salt);
        let salt =
            SaltString::encode_b64(&salt).map_err(|e| StoreError::Internal(format!("salt encoding: {e}")))?;
        let hash = self
            .argon2()?
            .hash_password(pin.as_bytes(), &salt)
            .map_err(|e| StoreError::Internal(format!("Argon2: {e}")))?;
        Ok(hash.to_string())
    }

    /// A hash of a random PIN, computed once, to verify against when a case number is unknown
    /// so that "no such case" costs the same time as "wrong PIN".
    pub(crate) fn dummy_hash(&self) -> &'static str {
        static DUMMY: OnceLock<String> = OnceLock::new();
        DUMMY.get_or_init(|| self.hash_pin(&new_pin()).unwrap_or_default())
    }
}

/// Verifies a PIN against a stored PHC string (parameters come from the string; the final
/// comparison is constant-time).
pub fn verify_pin(pin: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else { return false };
    Argon2::default().verify_password(pin.as_bytes(), &parsed).is_ok()
}

type HmacSha256 = Hmac<Sha256>;

/// A generated API key secret and what is stored of it.
pub(crate) struct ApiSecret {
    pub secret: String,
    pub prefix: String,
    pub salt: Vec<u8>,
    pub hash: Vec<u8>,
}

impl std::fmt::Debug for ApiSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSecret").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Generates `csk_<12 hex prefix>_<64 hex secret>` with a fresh salt and its salted HMAC.
pub(crate) fn new_api_secret() -> ApiSecret {
    let mut prefix = [0u8; 6];
    let mut body = [0u8; 32];
    let mut salt = vec![0u8; 16];
    OsRng.fill_bytes(&mut prefix);
    OsRng.fill_bytes(&mut body);
    OsRng.fill_bytes(&mut salt);
    let prefix = hex(&prefix);
    let secret = format!("csk_{prefix}_{}", hex(&body));
    let hash = api_secret_mac(&salt, &secret);
    ApiSecret { secret, prefix, salt, hash }
}

pub(crate) fn api_secret_mac(salt: &[u8], secret: &str) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(salt).expect("HMAC takes any key length");
    mac.update(secret.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// Constant-time check of `secret` against a stored salt and HMAC.
pub(crate) fn api_secret_matches(salt: &[u8], stored: &[u8], secret: &str) -> bool {
    let mut mac = HmacSha256::new_from_slice(salt).expect("HMAC takes any key length");
    mac.update(secret.as_bytes());
    mac.verify_slice(stored).is_ok()
}

/// The public prefix of a well-formed secret.
pub(crate) fn api_secret_prefix(secret: &str) -> Option<&str> {
    let rest = secret.strip_prefix("csk_")?;
    let (prefix, body) = rest.split_once('_')?;
    (prefix.len() == 12 && body.len() == 64 && prefix.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_numbers_are_well_formed_and_distinct() {
        let a = new_case_number();
        let b = new_case_number();
        assert_ne!(a, b);
        assert_eq!(normalize_case_number(&a).as_deref(), Some(a.as_str()));
        let shown = format_case_number(&a);
        assert_eq!(shown.len(), 14);
        assert_eq!(normalize_case_number(&shown.to_lowercase()).as_deref(), Some(a.as_str()));
        assert_eq!(normalize_case_number("O0O0O0O0O0O0"), None, "ambiguous symbols rejected");
        assert_eq!(normalize_case_number("ABC"), None);
    }

    #[test]
    fn pins_hash_and_verify() {
        let kdf = PinKdf::default();
        let pin = new_pin();
        assert_eq!(pin.len(), PIN_DIGITS);
        assert!(pin.bytes().all(|b| b.is_ascii_digit()));
        let h = kdf.hash_pin(&pin).unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(!h.contains(&pin));
        assert!(verify_pin(&pin, &h));
        let mut wrong = pin.clone().into_bytes();
        wrong[0] = if wrong[0] == b'9' { b'0' } else { wrong[0] + 1 };
        assert!(!verify_pin(std::str::from_utf8(&wrong).unwrap(), &h));
        // Same PIN, different salt, different hash.
        assert_ne!(kdf.hash_pin(&pin).unwrap(), h);
    }

    #[test]
    fn api_secrets_verify_only_exactly() {
        let s = new_api_secret();
        assert_eq!(api_secret_prefix(&s.secret), Some(s.prefix.as_str()));
        assert!(api_secret_matches(&s.salt, &s.hash, &s.secret));
        let mut tampered = s.secret.clone();
        tampered.pop();
        tampered.push('x');
        assert!(!api_secret_matches(&s.salt, &s.hash, &tampered));
        assert_eq!(api_secret_prefix("csk_nothex_abc"), None);
    }
}
