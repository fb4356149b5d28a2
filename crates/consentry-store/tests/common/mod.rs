//! Test harness: the same test body runs against SQLite (a file in a temporary directory) and
//! PostgreSQL (a fresh schema in the `test` database, dropped afterwards).
#![allow(dead_code)]

use consentry_pdq::Hash256;
use consentry_store::{Store, StoreLocation, StoreOptions};
use rand::seq::SliceRandom;
use rand::Rng;
use sqlx::Connection;

pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The PostgreSQL URL tests use (`CONSENTRY_TEST_PG_URL` overrides).
pub fn pg_url() -> String {
    std::env::var("CONSENTRY_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// A fresh database for one test.
pub struct TestDb {
    pub kind: Kind,
    pub store: Store,
    pub location: StoreLocation,
    pub dir: Option<tempfile::TempDir>,
    pub schema: Option<String>,
}

/// Panics with instructions when PostgreSQL is not there: these tests must run, not skip.
pub async fn require_postgres() {
    let url = pg_url();
    if let Err(e) = sqlx::PgConnection::connect(&url).await {
        panic!(
            "PostgreSQL is not reachable at {url} ({e}). The store tests run against PostgreSQL too \
             and are not skipped: start it with `pg_ctlcluster --skip-systemctl-redirect 15 main start` \
             (or point CONSENTRY_TEST_PG_URL at another server)."
        );
    }
}

pub fn random_schema() -> String {
    format!("t_{:016x}", rand::thread_rng().gen::<u64>())
}

impl TestDb {
    pub async fn new(kind: Kind) -> TestDb {
        Self::with_options(kind, StoreOptions::default()).await
    }

    pub async fn with_options(kind: Kind, options: StoreOptions) -> TestDb {
        match kind {
            Kind::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let location = StoreLocation::Sqlite(dir.path().join("data").join("consentry.db"));
                let store = Store::open(location.clone(), options).await.expect("open SQLite store");
                TestDb { kind, store, location, dir: Some(dir), schema: None }
            }
            Kind::Postgres => {
                require_postgres().await;
                let schema = random_schema();
                let location = StoreLocation::Postgres { url: pg_url(), schema: Some(schema.clone()) };
                let store = Store::open(location.clone(), options).await.expect("open PostgreSQL store");
                TestDb { kind, store, location, dir: None, schema: Some(schema) }
            }
        }
    }

    /// Another store on the same database (as another process would have).
    pub async fn open_another(&self) -> Store {
        self.open_another_with(StoreOptions::default()).await
    }

    pub async fn open_another_with(&self, options: StoreOptions) -> Store {
        Store::open(self.location.clone(), options).await.expect("reopen store")
    }

    /// A raw connection for checks the API does not offer (what is stored, triggers).
    pub async fn raw_sqlite(&self) -> sqlx::SqliteConnection {
        let StoreLocation::Sqlite(p) = &self.location else { panic!("not SQLite") };
        sqlx::SqliteConnection::connect(&format!("sqlite://{}", p.display())).await.expect("raw sqlite")
    }

    pub async fn raw_pg(&self) -> sqlx::PgConnection {
        let mut c = sqlx::PgConnection::connect(&pg_url()).await.expect("raw pg");
        sqlx::raw_sql(&format!("SET search_path TO {}", self.schema.as_ref().expect("schema")))
            .execute(&mut c)
            .await
            .expect("search_path");
        c
    }

    /// Runs a query returning text rows of one column on the raw database; `Err` text on failure.
    pub async fn raw_texts(&self, sql: &str) -> Result<Vec<String>, String> {
        match self.kind {
            Kind::Sqlite => {
                let mut c = self.raw_sqlite().await;
                sqlx::query_scalar::<_, String>(sql).fetch_all(&mut c).await.map_err(|e| e.to_string())
            }
            Kind::Postgres => {
                let mut c = self.raw_pg().await;
                sqlx::query_scalar::<_, String>(sql).fetch_all(&mut c).await.map_err(|e| e.to_string())
            }
        }
    }

    /// Executes a statement on the raw database.
    pub async fn raw_exec(&self, sql: &str) -> Result<u64, String> {
        match self.kind {
            Kind::Sqlite => {
                let mut c = self.raw_sqlite().await;
                sqlx::query(sql).execute(&mut c).await.map(|r| r.rows_affected()).map_err(|e| e.to_string())
            }
            Kind::Postgres => {
                let mut c = self.raw_pg().await;
                sqlx::query(sql).execute(&mut c).await.map(|r| r.rows_affected()).map_err(|e| e.to_string())
            }
        }
    }
}

/// Drops a test schema (after the test, whether it passed or not).
pub async fn drop_schema(schema: &str) {
    if let Ok(mut c) = sqlx::PgConnection::connect(&pg_url()).await {
        let _ = sqlx::raw_sql("SET lock_timeout = '10s'").execute(&mut c).await;
        if let Err(e) =
            sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).execute(&mut c).await
        {
            eprintln!("warning: could not drop test schema {schema}: {e}");
        }
    }
}

/// Drops the test's PostgreSQL schema when the test ends, passed or panicked. Runs on its own
/// thread and runtime so it works while unwinding.
pub struct SchemaGuard(pub Option<String>);

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let Some(schema) = self.0.take() else { return };
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(drop_schema(&schema));
        })
        .join();
    }
}

/// A random hash that looks like a real PDQ hash: exactly 128 one bits.
pub fn random_pdq() -> Hash256 {
    let mut rng = rand::thread_rng();
    let mut bits: Vec<u32> = (0..256).collect();
    bits.shuffle(&mut rng);
    let mut h = Hash256::ZERO;
    for &b in &bits[..128] {
        h.set_bit(b);
    }
    h
}

/// A hash with exactly `ones` one bits.
pub fn hash_with_ones(ones: u32) -> Hash256 {
    let mut h = Hash256::ZERO;
    for b in 0..ones {
        h.set_bit(b);
    }
    h
}

/// Instantiates every listed `async fn name(db: TestDb)` once per backend, as
/// `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::common::TestDb::new($crate::common::Kind::Sqlite).await;
                    let _guard = $crate::common::SchemaGuard(db.schema.clone());
                    super::$name(db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::common::TestDb::new($crate::common::Kind::Postgres).await;
                    let _guard = $crate::common::SchemaGuard(db.schema.clone());
                    super::$name(db).await;
                }
            )*
        }
    };
}
