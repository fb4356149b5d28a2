//! The integration tests of `consentry`, one test binary (as ripgrep does: one link instead of one
//! per file). Each module is one former test file.

mod derive_cli;
mod hash_cli;
mod match_cli;
mod protect_cli;
mod serve;
mod telegram_cli;
