//! The integration tests of `consentry-store`, one test binary (as ripgrep does: one link instead of one
//! per file). Each module is one former test file.

#[macro_use]
mod common;
mod crash;
mod suite;
