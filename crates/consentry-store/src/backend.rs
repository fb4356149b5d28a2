//! The two backends. The SQL in `ops.rs` is written once, in the dialect both SQLite and
//! PostgreSQL accept (`$n` parameters, `RETURNING`, window functions, integer times), and
//! compiled twice: once against `sqlx::Sqlite` and once against `sqlx::Postgres`. The few places
//! where the dialects differ test the `DIALECT` constant.

use sqlx::{PgPool, SqlitePool};

/// Which SQL dialect an `ops` module was compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// A connection pool of either backend.
#[derive(Debug, Clone)]
pub(crate) enum Db {
    /// SQLite allows one writer at a time; writers queue on `write_lock` in this process (and
    /// on `BEGIN IMMEDIATE` + busy timeout across processes) instead of failing with BUSY.
    Sqlite {
        pool: SqlitePool,
        write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    },
    Postgres {
        pool: PgPool,
    },
}

/// Sequence numbers handed out in one transaction (see `lock_changes` in ops.rs).
#[derive(Debug)]
pub(crate) struct ChangeLog {
    pub start: i64,
    pub last: i64,
}

/// What PIN verification needs about a case.
#[derive(Debug)]
pub(crate) struct CaseAuth {
    pub case: crate::types::Case,
    pub pin_hash: String,
    pub failed_attempts: i64,
    pub locked_until: Option<crate::types::Timestamp>,
}

/// Outcome of `begin_pin_attempt`.
#[derive(Debug)]
pub(crate) enum PinStart {
    /// No case has this number.
    NoCase,
    /// PIN checks are locked until then (the lock is committed).
    Locked(crate::types::Timestamp),
    /// Go on and verify; the attempt is already counted.
    Verify(CaseAuth),
}

pub(crate) const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial", include_str!("../migrations/sqlite/0001_initial.sql")),
    (2, "feed_pruning", include_str!("../migrations/sqlite/0002_feed_pruning.sql")),
    (3, "match_counts", include_str!("../migrations/sqlite/0003_match_counts.sql")),
];
pub(crate) const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial", include_str!("../migrations/postgres/0001_initial.sql")),
    (2, "feed_pruning", include_str!("../migrations/postgres/0002_feed_pruning.sql")),
    (3, "match_counts", include_str!("../migrations/postgres/0003_match_counts.sql")),
];

pub(crate) mod sqlite {
    #![allow(dead_code)]
    type Db = sqlx::Sqlite;
    type Conn = sqlx::SqliteConnection;
    type DbRow = sqlx::sqlite::SqliteRow;
    const DIALECT: super::Dialect = super::Dialect::Sqlite;
    const MIGRATIONS: &[(i64, &str, &str)] = super::SQLITE_MIGRATIONS;
    include!("ops.rs");
}

pub(crate) mod postgres {
    #![allow(dead_code)]
    type Db = sqlx::Postgres;
    type Conn = sqlx::PgConnection;
    type DbRow = sqlx::postgres::PgRow;
    const DIALECT: super::Dialect = super::Dialect::Postgres;
    const MIGRATIONS: &[(i64, &str, &str)] = super::POSTGRES_MIGRATIONS;
    include!("ops.rs");
}

/// Runs `$body` (an expression of type `Result<T>` using connection `$c` and ops module `$ops`)
/// in a write transaction, committing on `Ok` and rolling back on `Err`.
macro_rules! write_tx {
    ($store:expr, |$c:ident, $ops:ident| $body:expr) => {{
        match &$store.db {
            $crate::backend::Db::Sqlite { pool, write_lock } => {
                #[allow(unused_imports)]
                use $crate::backend::sqlite as $ops;
                let _guard = write_lock.lock().await;
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err($crate::error::db_err)?;
                let out = {
                    let $c: &mut sqlx::SqliteConnection = &mut *tx;
                    $body
                };
                match out {
                    Ok(v) => {
                        tx.commit().await.map_err($crate::error::db_err)?;
                        $store.wake_local_listeners();
                        Ok(v)
                    }
                    Err(e) => {
                        let _ = tx.rollback().await;
                        Err(e)
                    }
                }
            }
            $crate::backend::Db::Postgres { pool } => {
                #[allow(unused_imports)]
                use $crate::backend::postgres as $ops;
                let mut tx = pool.begin().await.map_err($crate::error::db_err)?;
                let out = {
                    let $c: &mut sqlx::PgConnection = &mut *tx;
                    $body
                };
                match out {
                    Ok(v) => {
                        tx.commit().await.map_err($crate::error::db_err)?;
                        $store.wake_local_listeners();
                        Ok(v)
                    }
                    Err(e) => {
                        let _ = tx.rollback().await;
                        Err(e)
                    }
                }
            }
        }
    }};
}

/// Runs `$body` on a pooled connection outside any explicit transaction (single reads).
macro_rules! read_conn {
    ($store:expr, |$c:ident, $ops:ident| $body:expr) => {{
        match &$store.db {
            $crate::backend::Db::Sqlite { pool, .. } => {
                #[allow(unused_imports)]
                use $crate::backend::sqlite as $ops;
                let mut conn = pool.acquire().await.map_err($crate::error::db_err)?;
                let $c: &mut sqlx::SqliteConnection = &mut *conn;
                $body
            }
            $crate::backend::Db::Postgres { pool } => {
                #[allow(unused_imports)]
                use $crate::backend::postgres as $ops;
                let mut conn = pool.acquire().await.map_err($crate::error::db_err)?;
                let $c: &mut sqlx::PgConnection = &mut *conn;
                $body
            }
        }
    }};
}

/// Runs `$body` in a read-only transaction that sees one consistent snapshot.
macro_rules! snapshot_tx {
    ($store:expr, |$c:ident, $ops:ident| $body:expr) => {{
        match &$store.db {
            $crate::backend::Db::Sqlite { pool, .. } => {
                #[allow(unused_imports)]
                use $crate::backend::sqlite as $ops;
                // A deferred transaction in WAL mode reads one snapshot from its first read on.
                let mut tx = pool.begin().await.map_err($crate::error::db_err)?;
                let out = {
                    let $c: &mut sqlx::SqliteConnection = &mut *tx;
                    $body
                };
                let _ = tx.rollback().await;
                out
            }
            $crate::backend::Db::Postgres { pool } => {
                #[allow(unused_imports)]
                use $crate::backend::postgres as $ops;
                let mut tx = pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await
                    .map_err($crate::error::db_err)?;
                let out = {
                    let $c: &mut sqlx::PgConnection = &mut *tx;
                    $body
                };
                let _ = tx.rollback().await;
                out
            }
        }
    }};
}
