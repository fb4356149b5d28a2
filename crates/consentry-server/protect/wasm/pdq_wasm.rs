//! The protect page's WebAssembly module: `consentry-pdq` and the extraction of
//! `consentry-derive` behind a few `extern "C"` functions.
//!
//! Built by `crates/consentry-server/build.rs` with a rustc that has the `wasm32-unknown-unknown`
//! standard library (Debian's `rustc` + `libstd-rust-dev-wasm32`, 1.63), without wasm-bindgen:
//! the page calls these functions directly.
//!
//! Protocol (all lengths in bytes, all pointers into this module's memory):
//! 1. `cs_alloc(width * height * 4)` → a buffer; the page copies RGBA pixels into it.
//! 2. `cs_hash_rgba(buf, width, height, out)` hashes them; `out` (from `cs_alloc(64)`) receives the
//!    hash as 64 ASCII hex digits exactly as `consentry hash` prints it. Returns the quality
//!    (0–100), or -1 when the buffer is null or too small for the claimed size.
//! 3. `cs_free(ptr, len)` for each buffer.
//!
//! `cs_derive_rgba(buf, width, height, out, cap)` does the same for the derivative signature:
//! `out` (from `cs_alloc(cs_derive_max_len())`) receives its base64 form; it returns the length.
//!
//! Alpha is ignored, as in `consentry hash`. Written for Rust 1.63 (no let-else).

use consentry_pdq::{Hasher, ImageRef, PixelFormat};

/// A buffer of `len` bytes (zeroed), or null when `len` is 0.
#[no_mangle]
pub extern "C" fn cs_alloc(len: usize) -> *mut u8 {
    if len == 0 {
        return std::ptr::null_mut();
    }
    let mut v = vec![0u8; len];
    let p = v.as_mut_ptr();
    std::mem::forget(v);
    p
}

/// Frees a buffer returned by [`cs_alloc`] with the same `len`.
///
/// # Safety
/// `ptr` must come from `cs_alloc(len)` and not have been freed.
#[no_mangle]
pub unsafe extern "C" fn cs_free(ptr: *mut u8, len: usize) {
    if !ptr.is_null() && len > 0 {
        drop(Vec::from_raw_parts(ptr, len, len));
    }
}

/// The `width * height * 4` bytes at `rgba`; `None` for a null pointer, an empty image or a size
/// that overflows.
///
/// # Safety
/// `rgba` must point to `width * height * 4` readable bytes (when not null).
unsafe fn rgba_bytes<'a>(rgba: *const u8, width: u32, height: u32) -> Option<&'a [u8]> {
    let len = (width as usize).checked_mul(height as usize).and_then(|n| n.checked_mul(4))?;
    if rgba.is_null() || len == 0 {
        return None;
    }
    Some(std::slice::from_raw_parts(rgba, len))
}

/// Hashes `width × height` RGBA pixels at `rgba`; writes 64 hex digits to `out_hex`.
///
/// # Safety
/// `rgba` must point to `width * height * 4` readable bytes and `out_hex` to 64 writable bytes.
#[no_mangle]
pub unsafe extern "C" fn cs_hash_rgba(rgba: *const u8, width: u32, height: u32, out_hex: *mut u8) -> i32 {
    let pixels = match rgba_bytes(rgba, width, height) {
        Some(p) if !out_hex.is_null() => p,
        _ => return -1,
    };
    let img = match ImageRef::new(width, height, PixelFormat::Rgba8, pixels) {
        Ok(img) => img,
        Err(_) => return -1,
    };
    let out = Hasher::new().hash(&img);
    let hex = out.hash.to_hex();
    std::ptr::copy_nonoverlapping(hex.as_ptr(), out_hex, 64.min(hex.len()));
    i32::from(out.quality)
}

/// The smallest side PDQ hashes (smaller images get the zero hash and quality 0).
#[no_mangle]
pub extern "C" fn cs_min_dim() -> u32 {
    consentry_pdq::MIN_HASHABLE_DIM as u32
}

/// The longest base64 derivative signature [`cs_derive_rgba`] writes.
#[no_mangle]
pub extern "C" fn cs_derive_max_len() -> usize {
    consentry_derive::MAX_SIGNATURE_BYTES / 3 * 4 + 4
}

/// Computes the derivative signature (`consentry-derive`: global PDQ and local keypoints) of
/// `width × height` RGBA pixels and writes its base64 form, exactly as `consentry derive` prints
/// it, to `out` (`cap` bytes). Returns the length written, or -1 when a buffer is null or too
/// small. Bit for bit the native extraction (no FMA, no SIMD path on wasm32).
///
/// # Safety
/// `rgba` must point to `width * height * 4` readable bytes and `out` to `cap` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn cs_derive_rgba(rgba: *const u8, width: u32, height: u32, out: *mut u8, cap: usize) -> i32 {
    let pixels = match rgba_bytes(rgba, width, height) {
        Some(p) if !out.is_null() => p,
        _ => return -1,
    };
    let px = match consentry_derive::Pixels::new(width, height, PixelFormat::Rgba8, pixels) {
        Ok(p) => p,
        Err(_) => return -1,
    };
    let text = consentry_derive::Extractor::new().signature(&px).to_base64();
    if text.len() > cap {
        return -1;
    }
    std::ptr::copy_nonoverlapping(text.as_ptr(), out, text.len());
    text.len() as i32
}
