//! consentry-store: the persistent state of consentry — banks of hashes, their entries, survivors'
//! cases, API keys, an append-only audit log, the change feed that keeps in-memory indexes in
//! step, and the webhook outbox — over SQLite (embedded default) or PostgreSQL, behind one async
//! API ([`Store`]).
//!
//! The store holds hashes, ids and metadata only: never image bytes. PINs are stored as
//! Argon2id hashes, API key secrets as salted HMAC-SHA-256.
//!
//! # Backends
//! sqlx (runtime queries, no compile-time checking, no TLS) drives both. The SQL is written once
//! in `ops.rs`, in the dialect both accept, and compiled once per backend, so both run the same
//! statements and the same test suite (where the dialects or their planners differ, `ops.rs`
//! tests a `DIALECT` constant). Migrations (`migrations/<backend>/NNNN_name.sql`) are
//! embedded and applied in a transaction at open.
//!
//! # Change feed
//! Every transaction that changes what matches appends `(seq, entry, activate|deactivate)` rows
//! to `changes` and bumps `meta.change_seq`, under a row lock taken at the start of the
//! transaction: sequence numbers are gapless and committed in order, so a poller calling
//! [`Store::changes_since`] with the last seq it saw can never skip a change, even with
//! concurrent writers on PostgreSQL. Start from [`Store::load_all_active`], or from
//! [`Store::for_each_active_page`] for large sets (the same set, streamed in id-ordered pages).

#![warn(missing_docs)]

#[macro_use]
mod backend;
mod error;
mod secrets;
mod store;
mod types;
mod validate;

pub use consentry_pdq::Hash256;
pub use error::{Result, StoreError};
pub use secrets::{
    format_case_number, normalize_case_number, PinKdf, CASE_ALPHABET, CASE_NUMBER_LEN, PIN_DIGITS,
};
pub use store::{
    BackendKind, ChangeListener, PinCounters, Store, StoreLocation, StoreOptions, SQLITE_FILE_NAME,
};
pub use types::*;
pub use validate::{parse_pdq_lines, HashPolicy, HashRejection};
#[cfg(test)]
mod send_check;
