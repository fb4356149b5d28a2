//! The store's error type: user errors (the caller asked for something wrong) are kept apart from
//! internal errors (the database failed), so the server can map them to 4xx and 5xx.

use crate::types::Timestamp;
use crate::validate::HashRejection;

/// Result alias for store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything a store operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The named thing does not exist (e.g. `bank 7`, `entry 12`).
    #[error("{0} not found")]
    NotFound(String),
    /// The request conflicts with the current state (duplicate name, withdrawn case, ...).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A field is malformed (empty name, oversized metadata, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A hash was rejected as degenerate; `index` is its position in the submitted list.
    #[error("hash #{index} rejected: {reason}")]
    InvalidHash {
        /// Zero-based position of the hash in the request.
        index: usize,
        /// Why it was rejected.
        reason: HashRejection,
    },
    /// The case number or the PIN is wrong (deliberately not saying which).
    #[error("case number or PIN is wrong")]
    BadCredentials,
    /// Too many wrong PINs for this case: no PIN is checked until `until`.
    #[error("too many wrong PINs: this case is locked until {until}")]
    Locked {
        /// When PIN checks are allowed again.
        until: Timestamp,
    },
    /// The API key is unknown, malformed or revoked.
    #[error("API key is invalid or revoked")]
    Unauthorized,
    /// Changes after `since` were asked for, but the feed was pruned through `pruned_through`:
    /// the reader must reload with `load_all_active`. Not a user error.
    #[error(
        "change feed pruned through {pruned_through}; changes after {since} are gone, reload the active set"
    )]
    FeedTruncated {
        /// The position asked for.
        since: i64,
        /// The last pruned sequence number.
        pruned_through: i64,
    },
    /// The database failed (connection, I/O, constraint we did not expect). Internal.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// The schema could not be brought up to date. Internal.
    #[error("migration failed: {0}")]
    Migration(String),
    /// Anything else that is our fault (a stored value we cannot decode, a panicked worker).
    #[error("internal error: {0}")]
    Internal(String),
}

impl StoreError {
    /// True when the database could not be reached or dropped the connection, so that the same
    /// call may succeed when retried: no connection within the pool's acquire timeout, I/O and TLS
    /// failures, a closed pool, and PostgreSQL's connection exceptions (SQLSTATE class 08) and
    /// shutdown codes (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now).
    pub fn is_unavailable(&self) -> bool {
        let StoreError::Database(e) = self else { return false };
        match e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(d) => {
                d.code().is_some_and(|c| c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03"))
            }
            _ => false,
        }
    }

    /// True for errors caused by the request (4xx), false for internal failures (5xx).
    pub fn is_user_error(&self) -> bool {
        !matches!(
            self,
            StoreError::Database(_)
                | StoreError::Migration(_)
                | StoreError::Internal(_)
                | StoreError::FeedTruncated { .. }
        )
    }
}

/// Maps a database error, turning unique-constraint violations into [`StoreError::Conflict`].
pub(crate) fn db_err(e: sqlx::Error) -> StoreError {
    if let Some(d) = e.as_database_error() {
        if d.is_unique_violation() {
            return StoreError::Conflict(format!("already exists ({})", d.message()));
        }
    }
    StoreError::Database(e)
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        db_err(e)
    }
}
