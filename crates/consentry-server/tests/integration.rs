//! The integration tests of `consentry-server`, one test binary (as ripgrep does: one link instead of one
//! per file). Each module is one former test file.

mod api;
mod common;
mod derive;
mod hma;
mod protect_browser;
mod service;
