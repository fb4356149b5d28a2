//! The integration tests of `consentry-pdq`, one test binary (as ripgrep does: one link instead of one
//! per file). Each module is one former test file.

mod conformance;
mod properties;
