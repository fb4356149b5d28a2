//! The protect page's WebAssembly module: `consentry-pdq` behind a few `extern "C"` functions.
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

/// Hashes `width × height` RGBA pixels at `rgba`; writes 64 hex digits to `out_hex`.
///
/// # Safety
/// `rgba` must point to `width * height * 4` readable bytes and `out_hex` to 64 writable bytes.
#[no_mangle]
pub unsafe extern "C" fn cs_hash_rgba(rgba: *const u8, width: u32, height: u32, out_hex: *mut u8) -> i32 {
    let len = (width as usize).checked_mul(height as usize).and_then(|n| n.checked_mul(4));
    let len = match len {
        Some(n) => n,
        None => return -1,
    };
    if rgba.is_null() || out_hex.is_null() || len == 0 {
        return -1;
    }
    let pixels = std::slice::from_raw_parts(rgba, len);
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
