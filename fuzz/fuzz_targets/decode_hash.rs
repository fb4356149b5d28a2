//! Fuzz `consentry_media::hash_bytes` (fast and exact, with dihedral hashes),
//! `probe` and `decode_frames` on arbitrary bytes, through
//! `consentry_media::fuzz_one` — the same function the hostile-input tests
//! run. Any panic or abort is a bug: hostile uploads must give a
//! `MediaError`. Inputs are capped at 64 KiB to keep each run fast.
//!
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run decode_hash -- -max_total_time=120 -max_len=65536`

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() > 64 * 1024 {
        return;
    }
    let _ = consentry_media::fuzz_one(data);
});
