//! Builds the protect page's WebAssembly module (`protect/wasm/pdq_wasm.rs` over
//! `consentry-pdq` and the extraction of `consentry-derive`, whose index is left out on wasm32)
//! with a rustc that has the `wasm32-unknown-unknown` standard library:
//! `$CONSENTRY_WASM_RUSTC` if set, else `/usr/bin/rustc` (Debian's `rustc` +
//! `libstd-rust-dev-wasm32`). Without one the build still succeeds: `pdq.wasm` is left empty,
//! the server answers 404 for it, and the page tells the visitor that in-browser hashing is
//! unavailable. `wasm-note.txt` says why.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let pdq_src = manifest.join("../consentry-pdq/src");
    let derive_src = manifest.join("../consentry-derive/src");
    let export = manifest.join("protect/wasm/pdq_wasm.rs");
    println!("cargo:rerun-if-env-changed=CONSENTRY_WASM_RUSTC");
    println!("cargo:rerun-if-changed={}", export.display());
    println!("cargo:rerun-if-changed={}", pdq_src.display());
    println!("cargo:rerun-if-changed={}", derive_src.display());
    println!("cargo:rerun-if-changed=/usr/bin/rustc");

    let wasm = out.join("pdq.wasm");
    let note = match build(&pdq_src.join("lib.rs"), &derive_src.join("lib.rs"), &export, &out, &wasm) {
        Ok(rustc) => format!("built with {rustc}"),
        Err(why) => {
            println!("cargo:warning=protect page: in-browser hashing disabled: {why}");
            let _ = std::fs::write(&wasm, b"");
            why
        }
    };
    std::fs::write(out.join("wasm-note.txt"), note).expect("write wasm-note.txt");
}

fn build(
    pdq_lib: &Path,
    derive_lib: &Path,
    export: &Path,
    out: &Path,
    wasm: &Path,
) -> Result<String, String> {
    let rustc = match std::env::var_os("CONSENTRY_WASM_RUSTC") {
        Some(r) if r.is_empty() => return Err("CONSENTRY_WASM_RUSTC is set empty".to_owned()),
        Some(r) => PathBuf::from(r),
        None if Path::new("/usr/bin/rustc").exists() => PathBuf::from("/usr/bin/rustc"),
        None => {
            return Err("no rustc with the wasm32 standard library (install Debian's `rustc` and \
                        `libstd-rust-dev-wasm32`, or set CONSENTRY_WASM_RUSTC)"
                .to_owned())
        }
    };
    let dir = out.join("wasm-build");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let rlib = dir.join("libconsentry_pdq.rlib");
    // No FMA or other contraction: wasm32 has none, so the f32 arithmetic is the reference's.
    let common =
        ["--edition", "2021", "--target", "wasm32-unknown-unknown", "-C", "opt-level=3", "-C", "panic=abort"];
    run(Command::new(&rustc)
        .args(common)
        .args(["--crate-type", "rlib", "--crate-name", "consentry_pdq", "--cap-lints", "allow"])
        .arg(pdq_lib)
        .arg("-o")
        .arg(&rlib))?;
    let derive_rlib = dir.join("libconsentry_derive.rlib");
    run(Command::new(&rustc)
        .args(common)
        .args(["--crate-type", "rlib", "--crate-name", "consentry_derive", "--cap-lints", "allow"])
        .arg("--extern")
        .arg(format!("consentry_pdq={}", rlib.display()))
        .arg(derive_lib)
        .arg("-o")
        .arg(&derive_rlib))?;
    run(Command::new(&rustc)
        .args(common)
        .args(["--crate-type", "cdylib", "--crate-name", "consentry_protect", "-C", "strip=symbols"])
        .arg("--extern")
        .arg(format!("consentry_pdq={}", rlib.display()))
        .arg("--extern")
        .arg(format!("consentry_derive={}", derive_rlib.display()))
        .arg(export)
        .arg("-o")
        .arg(wasm))?;
    let bytes = std::fs::read(wasm).map_err(|e| format!("{}: {e}", wasm.display()))?;
    if !bytes.starts_with(b"\0asm") {
        return Err(format!("{} is not a WebAssembly module", wasm.display()));
    }
    Ok(rustc.display().to_string())
}

fn run(cmd: &mut Command) -> Result<(), String> {
    // Cargo's settings for the host build must not reach the wasm rustc.
    cmd.env_remove("RUSTFLAGS").env_remove("CARGO_ENCODED_RUSTFLAGS").env_remove("RUSTC_WRAPPER");
    let shown = format!("{cmd:?}");
    match cmd.output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let first = err.lines().find(|l| l.starts_with("error")).unwrap_or("").to_owned();
            Err(format!("{shown} failed ({}): {first}", o.status))
        }
        Err(e) => Err(format!("{shown} could not run: {e}")),
    }
}
