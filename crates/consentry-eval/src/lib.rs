//! Evaluation harness for consentry's matchers (issue 6).
//!
//! Turns a folder of ordinary, benign photos into a deterministic benchmark:
//! a seeded split into protected originals and distractors, every image put
//! through transforms that reposts go through (recompression, resizing,
//! crops, padding, rotations and flips, overlays, colour and filter changes,
//! screenshot framing, and the structurally simulated "undress" pattern, in
//! which a body-area region is replaced by another photo's content, a smooth
//! fill or noise), then through Telegram-like recompression, and each query
//! run through every [`Matcher`]. Reports recall, false matches and time per
//! transform and strength.
//!
//! No sexual imagery is used, generated or stored anywhere: the undress
//! pattern is region replacement on benign photos only.

pub mod derive_matcher;
pub mod draw;
pub mod matcher;
pub mod protocol;
pub mod report;
pub mod resample;
pub mod rng;
pub mod transforms;

pub use matcher::{ImageId, Matcher, PdqMatcher, Protected, Query};
pub use protocol::{load_corpus, run, split, Config, Outcome, RunResult, Score, Split};
pub use transforms::{quick_set, standard_set, telegram_recompress, Op, Transform};

#[cfg(test)]
mod testutil;
