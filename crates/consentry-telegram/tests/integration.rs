//! The integration tests of `consentry-telegram`, one test binary (as ripgrep does: one link instead of one
//! per file). Each module is one former test file.

mod common;
mod derive;
mod e2e;
