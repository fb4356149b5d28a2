//! [`Store`]: the one async API over both backends.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::OsRng;
use rand::RngCore;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, PgConnection};

use crate::backend::{Db, PinStart};
use crate::error::{db_err, Result, StoreError};
use crate::secrets::{self, PinKdf};
use crate::types::*;
use crate::validate::{parse_pdq_lines, HashPolicy};

/// File name of the SQLite database inside a data directory.
pub const SQLITE_FILE_NAME: &str = "consentry.db";

/// Where the store lives.
#[derive(Clone, Debug)]
pub enum StoreLocation {
    /// An SQLite file (created if missing, with its parent directory).
    Sqlite(PathBuf),
    /// A PostgreSQL database; with `schema`, every table lives in that schema (created if
    /// missing), so several stores can share one database.
    Postgres {
        /// `postgres://user@host:port/db` (any libpq-style URL sqlx accepts).
        url: String,
        /// Optional schema name (`[a-z_][a-z0-9_]*`).
        schema: Option<String>,
    },
}

impl StoreLocation {
    /// `postgres://…`/`postgresql://…` → PostgreSQL; `sqlite://PATH` or a plain path → SQLite.
    pub fn from_url(url: &str) -> StoreLocation {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            StoreLocation::Postgres { url: url.to_owned(), schema: None }
        } else {
            let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
            StoreLocation::Sqlite(PathBuf::from(path))
        }
    }
}

/// Which backend a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// Embedded SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// Tunables. `Default` is what production uses.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Which hashes are accepted.
    pub hash_policy: HashPolicy,
    /// Argon2id cost for PINs.
    pub pin_kdf: PinKdf,
    /// Consecutive wrong PINs before a case is locked (default 5).
    pub pin_max_attempts: u32,
    /// How long a lock lasts (default 15 minutes).
    pub pin_lockout: Duration,
    /// Largest metadata JSON accepted per entry, in bytes (default 16 KiB).
    pub max_metadata_bytes: usize,
    /// Most hashes in one case (default 1000).
    pub max_case_hashes: usize,
    /// PostgreSQL pool size (default 10).
    pub pg_max_connections: u32,
    /// SQLite pool size (default 4; one writer at a time, readers in parallel thanks to WAL).
    pub sqlite_max_connections: u32,
    /// How long a PostgreSQL call waits for a connection (default 5 s): when the database is
    /// down, calls fail with an error for which [`StoreError::is_unavailable`] holds after this
    /// long, rather than holding their callers for the request timeout.
    pub pg_acquire_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            hash_policy: HashPolicy::default(),
            pin_kdf: PinKdf::default(),
            pin_max_attempts: 5,
            pin_lockout: Duration::from_secs(15 * 60),
            max_metadata_bytes: 16 * 1024,
            max_case_hashes: 1000,
            pg_max_connections: 10,
            sqlite_max_connections: 4,
            pg_acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// PIN-attempt counters of a case (admin view).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinCounters {
    /// Attempts since the last success or lock.
    pub failed_attempts: i64,
    /// Locked until then, if a lock was ever set.
    pub locked_until: Option<Timestamp>,
    /// How many times the case was locked.
    pub lockouts: i64,
}

/// The store. Cheap to clone (pools are shared).
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) db: Db,
    opts: Arc<StoreOptions>,
    /// Bumped after every committed write of this process (wakes local [`ChangeListener`]s).
    local_writes: Arc<tokio::sync::watch::Sender<u64>>,
    /// Bumped after every write of this process that may change an existing entry, bank or case
    /// (see [`Store::details_generation`]).
    details_writes: Arc<std::sync::atomic::AtomicU64>,
    /// Makes the webhook events of case changes (see [`Store::set_case_outbox`]).
    case_outbox: Arc<OutboxSlot>,
}

/// Holds the [`CaseOutbox`], if one is set.
#[derive(Default)]
struct OutboxSlot(std::sync::RwLock<Option<CaseOutbox>>);

impl std::fmt::Debug for OutboxSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = self.0.read().map(|o| o.is_some()).unwrap_or(false);
        f.write_str(if set { "OutboxSlot(set)" } else { "OutboxSlot(none)" })
    }
}

/// Wakes a change-feed reader as soon as a change may have been committed, so that it need not
/// poll fast. Sources: every write committed through this `Store` (any backend) and, on
/// PostgreSQL, `NOTIFY` from every process using the same database schema. Wake-ups can be
/// spurious and notifications can be missed (e.g. while reconnecting): keep polling
/// [`Store::changes_since`] on a timer as well; `wait` only shortens the delay.
#[derive(Debug)]
pub struct ChangeListener {
    local: tokio::sync::watch::Receiver<u64>,
    pg: Option<sqlx::postgres::PgListener>,
}

impl ChangeListener {
    /// Waits until woken or `timeout` passes; `true` if woken.
    pub async fn wait(&mut self, timeout: Duration) -> Result<bool> {
        let local = &mut self.local;
        let woken = match &mut self.pg {
            None => tokio::time::timeout(timeout, local.changed()).await.is_ok(),
            Some(pg) => tokio::time::timeout(timeout, async {
                tokio::select! {
                    _ = local.changed() => {}
                    _ = pg.recv() => {}
                }
            })
            .await
            .is_ok(),
        };
        if woken {
            // Coalesce: later wake-ups already covered by this one.
            self.local.borrow_and_update();
        }
        Ok(woken)
    }
}

fn check_len(what: &str, s: &str, min: usize, max: usize) -> Result<()> {
    let n = s.chars().count();
    if n < min || n > max {
        return Err(StoreError::InvalidInput(format!("{what} must have {min} to {max} characters, not {n}")));
    }
    if s.chars().any(|c| c.is_control() && c != '\n') {
        return Err(StoreError::InvalidInput(format!("{what} contains control characters")));
    }
    Ok(())
}

fn join_err(e: tokio::task::JoinError) -> StoreError {
    StoreError::Internal(format!("worker thread failed: {e}"))
}

impl Store {
    /// Opens (creating if needed) the store and applies pending migrations.
    pub async fn open(location: StoreLocation, options: StoreOptions) -> Result<Store> {
        let db = match location {
            StoreLocation::Sqlite(path) => open_sqlite(&path, &options).await?,
            StoreLocation::Postgres { url, schema } => {
                open_postgres(&url, schema.as_deref(), &options).await?
            }
        };
        let store = Store {
            db,
            opts: Arc::new(options),
            local_writes: Arc::new(tokio::sync::watch::channel(0u64).0),
            details_writes: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            case_outbox: Arc::new(OutboxSlot::default()),
        };
        write_tx!(store, |c, ops| ops::migrate(c).await)?;
        Ok(store)
    }

    /// The embedded default: SQLite file [`SQLITE_FILE_NAME`] in `dir` (created with mode 0700).
    pub async fn open_data_dir(dir: impl AsRef<Path>) -> Result<Store> {
        Store::open(StoreLocation::Sqlite(dir.as_ref().join(SQLITE_FILE_NAME)), StoreOptions::default()).await
    }

    /// Opens by URL (see [`StoreLocation::from_url`]) with default options.
    pub async fn open_url(url: &str) -> Result<Store> {
        Store::open(StoreLocation::from_url(url), StoreOptions::default()).await
    }

    /// Which backend this store runs on.
    pub fn backend(&self) -> BackendKind {
        match self.db {
            Db::Sqlite { .. } => BackendKind::Sqlite,
            Db::Postgres { .. } => BackendKind::Postgres,
        }
    }

    pub(crate) fn wake_local_listeners(&self) {
        self.local_writes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes after (never before) every write made through this `Store` or its clones that
    /// may change an existing entry, bank or case: enabling, disabling, removing, renaming,
    /// withdrawing, status changes. Adding new entries, cases or banks, webhooks, keys and audit
    /// records do not move it. A cache of entry or bank details read through this store is valid
    /// while the value it was filled under is unchanged; writes of *other* processes are not
    /// counted (follow the change feed for those).
    pub fn details_generation(&self) -> u64 {
        self.details_writes.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Runs a write that may change existing details, then moves [`Store::details_generation`]
    /// (also when it failed: a failed write may still have committed before an error surfaced).
    async fn changing_details<T>(&self, write: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        let out = write.await;
        self.details_writes.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        out
    }

    /// A listener that wakes when changes may be available (see [`ChangeListener`]).
    pub async fn listen_changes(&self) -> Result<ChangeListener> {
        let mut local = self.local_writes.subscribe();
        local.borrow_and_update();
        let pg = match &self.db {
            Db::Sqlite { .. } => None,
            Db::Postgres { pool } => {
                let schema: String = sqlx::query_scalar("SELECT current_schema()").fetch_one(pool).await?;
                let mut l = sqlx::postgres::PgListener::connect_with(pool).await?;
                l.listen(&format!("consentry_changes_{schema}")).await?;
                Some(l)
            }
        };
        Ok(ChangeListener { local, pg })
    }

    /// The options in force.
    pub fn options(&self) -> &StoreOptions {
        &self.opts
    }

    /// Closes every pooled connection (waits for running operations).
    pub async fn close(&self) {
        match &self.db {
            Db::Sqlite { pool, .. } => pool.close().await,
            Db::Postgres { pool } => pool.close().await,
        }
    }

    /// The applied schema version.
    pub async fn schema_version(&self) -> Result<i64> {
        read_conn!(self, |c, ops| ops::schema_version(c).await)
    }

    fn metadata_text(&self, v: &serde_json::Value) -> Result<String> {
        let text = match v {
            serde_json::Value::Null => "{}".to_owned(),
            serde_json::Value::Object(_) => v.to_string(),
            _ => return Err(StoreError::InvalidInput("metadata must be a JSON object".into())),
        };
        if text.len() > self.opts.max_metadata_bytes {
            return Err(StoreError::InvalidInput(format!(
                "metadata is {} bytes, more than the limit of {}",
                text.len(),
                self.opts.max_metadata_bytes
            )));
        }
        Ok(text)
    }

    // -----------------------------------------------------------------------------------------
    // Banks

    /// Creates a bank. `Conflict` if the name is taken.
    pub async fn create_bank(&self, actor: &Actor, bank: NewBank) -> Result<Bank> {
        check_len("bank name", &bank.name, 1, 100)?;
        check_len("bank description", &bank.description, 0, 2000)?;
        let now = Timestamp::now();
        write_tx!(self, |c, ops| ops::create_bank(c, actor, &bank, now).await)
    }

    /// A bank by id.
    pub async fn get_bank(&self, id: i64) -> Result<Bank> {
        read_conn!(self, |c, ops| ops::get_bank(c, id).await)
    }

    /// A bank by name.
    pub async fn get_bank_by_name(&self, name: &str) -> Result<Bank> {
        read_conn!(self, |c, ops| ops::get_bank_by_name(c, name).await)
    }

    /// Every bank, by id.
    pub async fn list_banks(&self) -> Result<Vec<Bank>> {
        read_conn!(self, |c, ops| ops::list_banks(c).await)
    }

    /// Renames, re-describes or re-purposes a bank.
    pub async fn update_bank(&self, actor: &Actor, id: i64, update: BankUpdate) -> Result<Bank> {
        if let Some(n) = &update.name {
            check_len("bank name", n, 1, 100)?;
        }
        if let Some(d) = &update.description {
            check_len("bank description", d, 0, 2000)?;
        }
        let now = Timestamp::now();
        self.changing_details(async {
            write_tx!(self, |c, ops| ops::update_bank(c, actor, id, &update, now).await)
        })
        .await
    }

    /// Enables or disables a bank; its entries start or stop matching (change feed).
    pub async fn set_bank_enabled(&self, actor: &Actor, id: i64, enabled: bool) -> Result<Bank> {
        let now = Timestamp::now();
        self.changing_details(async {
            write_tx!(self, |c, ops| ops::set_bank_enabled(c, actor, id, enabled, now).await)
        })
        .await
    }

    /// Deletes a bank and its entries. `Conflict` if cases were submitted into it.
    pub async fn delete_bank(&self, actor: &Actor, id: i64) -> Result<()> {
        let now = Timestamp::now();
        self.changing_details(async { write_tx!(self, |c, ops| ops::delete_bank(c, actor, id, now).await) })
            .await
    }

    // -----------------------------------------------------------------------------------------
    // Entries

    /// Adds one entry (moderator or import). Degenerate hashes are rejected with the reason.
    pub async fn add_entry(&self, actor: &Actor, entry: NewEntry) -> Result<Entry> {
        if entry.source == EntrySourceKind::Case {
            return Err(StoreError::InvalidInput("case entries are added by creating a case".into()));
        }
        self.opts
            .hash_policy
            .check(&entry.value, entry.quality)
            .map_err(|reason| StoreError::InvalidHash { index: 0, reason })?;
        let metadata = self.metadata_text(&entry.metadata)?;
        let now = Timestamp::now();
        write_tx!(self, |c, ops| ops::add_entry(c, actor, &entry, &metadata, now).await)
    }

    /// Adds many entries in one transaction: the good lines are stored (all or, on a database
    /// failure, none), the bad ones reported with their line numbers and reasons.
    pub async fn add_entries_bulk(
        &self,
        actor: &Actor,
        bank_id: i64,
        source: EntrySourceKind,
        lines: Vec<BulkLine>,
    ) -> Result<BulkReport> {
        if source == EntrySourceKind::Case {
            return Err(StoreError::InvalidInput("case entries are added by creating a case".into()));
        }
        let mut good = Vec::with_capacity(lines.len());
        let mut rejected = Vec::new();
        for l in lines {
            if let Err(reason) = self.opts.hash_policy.check(&l.value, l.quality) {
                rejected.push(LineError { line: l.line, reason: reason.to_string() });
                continue;
            }
            match self.metadata_text(&l.metadata) {
                Ok(m) => good.push((l.line, l.value, l.quality, m)),
                Err(e) => rejected.push(LineError { line: l.line, reason: e.to_string() }),
            }
        }
        let n_rejected = rejected.len();
        let added = if good.is_empty() {
            self.get_bank(bank_id).await?;
            Vec::new()
        } else {
            let now = Timestamp::now();
            write_tx!(self, |c, ops| ops::add_entries_bulk(
                c, actor, bank_id, source, &good, n_rejected, now
            )
            .await)?
        };
        Ok(BulkReport { added, rejected })
    }

    /// Parses a PDQ hash list (see [`parse_pdq_lines`]) and bulk-adds it as `Import` entries.
    /// Unparsable and degenerate lines are reported together, in line order.
    pub async fn import_pdq_text(&self, actor: &Actor, bank_id: i64, text: &str) -> Result<BulkReport> {
        let (lines, bad) = parse_pdq_lines(text);
        let mut report = self.add_entries_bulk(actor, bank_id, EntrySourceKind::Import, lines).await?;
        report.rejected.extend(bad);
        report.rejected.sort_by_key(|e| e.line);
        Ok(report)
    }

    /// An entry by id.
    pub async fn get_entry(&self, id: i64) -> Result<Entry> {
        read_conn!(self, |c, ops| ops::get_entry(c, id).await)
    }

    /// A page of a bank's entries with id > `after_id`, by id.
    pub async fn list_entries(&self, bank_id: i64, after_id: i64, limit: u32) -> Result<Vec<Entry>> {
        read_conn!(self, |c, ops| ops::list_entries(c, bank_id, after_id, i64::from(limit)).await)
    }

    /// Every entry (any bank, enabled or not) holding exactly this value.
    pub async fn find_entries(&self, value: &SignalValue) -> Result<Vec<Entry>> {
        read_conn!(self, |c, ops| ops::find_entries(c, value).await)
    }

    /// Disables an entry (it stops matching). Idempotent.
    pub async fn disable_entry(&self, actor: &Actor, id: i64) -> Result<Entry> {
        let now = Timestamp::now();
        self.changing_details(async {
            write_tx!(self, |c, ops| ops::set_entry_disabled(c, actor, id, true, now).await)
        })
        .await
    }

    /// Enables an entry again. `Conflict` for entries of withdrawn cases. Idempotent.
    pub async fn enable_entry(&self, actor: &Actor, id: i64) -> Result<Entry> {
        let now = Timestamp::now();
        self.changing_details(async {
            write_tx!(self, |c, ops| ops::set_entry_disabled(c, actor, id, false, now).await)
        })
        .await
    }

    /// Deletes an entry for good. The audit log keeps its value, unless it is a case's code
    /// (a survivor's codes, once deleted, are nowhere).
    pub async fn remove_entry(&self, actor: &Actor, id: i64) -> Result<()> {
        let now = Timestamp::now();
        self.changing_details(async { write_tx!(self, |c, ops| ops::remove_entry(c, actor, id, now).await) })
            .await
    }

    // -----------------------------------------------------------------------------------------
    // Cases

    /// Creates a case with its hashes (all must pass the hash policy, or nothing is stored).
    /// The returned PIN is the only clear copy: only its Argon2id hash is stored.
    pub async fn create_case(&self, actor: &Actor, case: NewCase) -> Result<CreatedCase> {
        if case.hashes.is_empty() {
            return Err(StoreError::InvalidInput("a case needs at least one hash".into()));
        }
        if case.hashes.len() > self.opts.max_case_hashes {
            return Err(StoreError::InvalidInput(format!(
                "a case holds at most {} hashes, not {}",
                self.opts.max_case_hashes,
                case.hashes.len()
            )));
        }
        for (index, h) in case.hashes.iter().enumerate() {
            self.opts
                .hash_policy
                .check(&h.value, h.quality)
                .map_err(|reason| StoreError::InvalidHash { index, reason })?;
        }
        let metadata = self.metadata_text(&case.metadata)?;
        let number = secrets::new_case_number();
        let (pin, pin_hash) = self.new_pin().await?;
        let now = Timestamp::now();
        let outbox = self.case_outbox();
        let (case, entries) = write_tx!(self, |c, ops| {
            let (created, entries) =
                ops::create_case(c, actor, &number, &pin_hash, case.bank_id, &case.hashes, &metadata, now)
                    .await?;
            let codes = Some(entries.len());
            ops::queue_case_events(c, outbox.as_ref(), CaseEventKind::Created, &created, codes, now).await?;
            Ok::<_, StoreError>((created, entries))
        })?;
        Ok(CreatedCase { case, pin, entries })
    }

    /// A new PIN and its Argon2id hash (computed off the async threads).
    async fn new_pin(&self) -> Result<(String, String)> {
        let pin = secrets::new_pin();
        let kdf = self.opts.pin_kdf;
        let pin_for_hash = pin.clone();
        let hash =
            tokio::task::spawn_blocking(move || kdf.hash_pin(&pin_for_hash)).await.map_err(join_err)??;
        Ok((pin, hash))
    }

    async fn burn_pin_check(&self, pin: &str) -> Result<()> {
        let kdf = self.opts.pin_kdf;
        let pin = pin.to_owned();
        tokio::task::spawn_blocking(move || secrets::verify_pin(&pin, kdf.dummy_hash()))
            .await
            .map_err(join_err)?;
        Ok(())
    }

    /// Checks number + PIN with attempt counting and lockout. Returns the case.
    async fn authenticate_case(&self, number: &str, pin: &str) -> Result<Case> {
        let Some(number) = secrets::normalize_case_number(number) else {
            self.burn_pin_check(pin).await?;
            return Err(StoreError::BadCredentials);
        };
        let max = i64::from(self.opts.pin_max_attempts);
        let lock_ms = i64::try_from(self.opts.pin_lockout.as_millis()).unwrap_or(i64::MAX);
        let now = Timestamp::now();
        let start = write_tx!(self, |c, ops| ops::begin_pin_attempt(c, &number, max, lock_ms, now).await)?;
        let auth = match start {
            PinStart::NoCase => {
                self.burn_pin_check(pin).await?;
                return Err(StoreError::BadCredentials);
            }
            PinStart::Locked(until) => return Err(StoreError::Locked { until }),
            PinStart::Verify(auth) => auth,
        };
        let pin_owned = pin.to_owned();
        let phc = auth.pin_hash.clone();
        let ok = tokio::task::spawn_blocking(move || secrets::verify_pin(&pin_owned, &phc))
            .await
            .map_err(join_err)?;
        let now = Timestamp::now();
        let (id, attempts) = (auth.case.id, auth.failed_attempts);
        write_tx!(self, |c, ops| ops::finish_pin_attempt(c, id, ok, attempts, max, lock_ms, now).await)?;
        if ok {
            Ok(auth.case)
        } else {
            Err(StoreError::BadCredentials)
        }
    }

    /// The survivor's view of her case: needs the number (dashes and case ignored) and the PIN.
    /// `BadCredentials` for an unknown number or a wrong PIN alike; `Locked` after too many
    /// wrong PINs.
    pub async fn case_status(&self, number: &str, pin: &str) -> Result<CaseView> {
        let case = self.authenticate_case(number, pin).await?;
        read_conn!(self, |c, ops| ops::case_view(c, case).await)
    }

    /// Withdraws a case with its number and PIN: its entries are disabled and stop matching.
    pub async fn withdraw_case(&self, number: &str, pin: &str) -> Result<Case> {
        let case = self.authenticate_case(number, pin).await?;
        let actor = Actor::case_owner(case.id);
        self.change_case(&actor, case.id, CaseStatus::Withdrawn).await
    }

    /// Sets the hook that turns every committed case change — opened, withdrawn (by the
    /// survivor or staff), given a status by staff — into webhook events, persisted in the
    /// outbox in the change's own transaction, so that no crash can separate the two. A change
    /// that changes nothing (withdrawing a withdrawn case) makes no event. Replaces any hook set
    /// before, in every clone of this store; `None` removes it.
    pub fn set_case_outbox(&self, outbox: Option<CaseOutbox>) {
        *self.case_outbox.0.write().unwrap_or_else(|e| e.into_inner()) = outbox;
    }

    fn case_outbox(&self) -> Option<CaseOutbox> {
        self.case_outbox.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Withdraws case `case_id` or gives it another status, with its case events.
    async fn change_case(&self, actor: &Actor, case_id: i64, status: CaseStatus) -> Result<Case> {
        let now = Timestamp::now();
        let outbox = self.case_outbox();
        let kind = match status {
            CaseStatus::Withdrawn => CaseEventKind::Withdrawn,
            _ => CaseEventKind::Status,
        };
        self.changing_details(async {
            write_tx!(self, |c, ops| {
                let (case, changed) = ops::set_case_status(c, actor, case_id, status, now).await?;
                if changed {
                    ops::queue_case_events(c, outbox.as_ref(), kind, &case, None, now).await?;
                }
                Ok(case)
            })
        })
        .await
    }

    /// Staff give case `case_id` a new PIN (for a survivor who lost hers, once her identity has
    /// been checked outside consentry): the old PIN stops working, failed attempts and any lock
    /// are cleared, and the change is audited. Returns the case and the new PIN, its only clear
    /// copy (stored as an Argon2id hash like the first).
    pub async fn reset_case_pin(&self, actor: &Actor, case_id: i64) -> Result<(Case, String)> {
        let (pin, pin_hash) = self.new_pin().await?;
        let now = Timestamp::now();
        let case = write_tx!(self, |c, ops| ops::set_case_pin(c, actor, case_id, &pin_hash, now).await)?;
        Ok((case, pin))
    }

    /// Deletes the codes (entries) of cases withdrawn before `before`, at most `max_rows` (one
    /// short transaction; call again while it returns `max_rows`). The cases stay, with their
    /// number and status, so a survivor still sees hers withdrawn; the codes are gone for good.
    /// Returns rows deleted.
    pub async fn purge_withdrawn_cases(
        &self,
        actor: &Actor,
        before: Timestamp,
        max_rows: u32,
    ) -> Result<u64> {
        let now = Timestamp::now();
        write_tx!(self, |c, ops| ops::purge_withdrawn(c, actor, before, i64::from(max_rows), now).await)
    }

    /// Staff withdrawal of a case by id.
    pub async fn admin_withdraw_case(&self, actor: &Actor, case_id: i64) -> Result<Case> {
        self.change_case(actor, case_id, CaseStatus::Withdrawn).await
    }

    /// Staff status change (`Received` → `Active`, or `Withdrawn`). A withdrawn case stays so.
    pub async fn set_case_status(&self, actor: &Actor, case_id: i64, status: CaseStatus) -> Result<Case> {
        self.change_case(actor, case_id, status).await
    }

    /// A case with its entries, by id (staff view; no PIN).
    pub async fn get_case(&self, case_id: i64) -> Result<CaseView> {
        read_conn!(self, |c, ops| {
            let case = ops::get_case(c, case_id).await?;
            ops::case_view(c, case).await
        })
    }

    /// A case with its entries and match counts, by its number (staff view; no PIN: the number
    /// is typed as the survivor gives it, dashes and case ignored). `NotFound` when no case has it.
    pub async fn case_by_number(&self, number: &str) -> Result<CaseView> {
        let not_found = || StoreError::NotFound(format!("case {number}"));
        let number = secrets::normalize_case_number(number).ok_or_else(not_found)?;
        read_conn!(self, |c, ops| {
            let case = ops::get_case_auth(c, &number, false).await?.ok_or_else(not_found)?.case;
            ops::case_view(c, case).await
        })
    }

    /// Cases with id > `after_id`, optionally of one status, by id (staff view).
    pub async fn list_cases(
        &self,
        status: Option<CaseStatus>,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<Case>> {
        read_conn!(self, |c, ops| ops::list_cases(c, status, after_id, i64::from(limit)).await)
    }

    /// PIN-attempt counters of a case.
    pub async fn case_pin_counters(&self, case_id: i64) -> Result<PinCounters> {
        let (failed_attempts, locked_until, lockouts) =
            read_conn!(self, |c, ops| ops::case_counters(c, case_id).await)?;
        Ok(PinCounters { failed_attempts, locked_until, lockouts })
    }

    // -----------------------------------------------------------------------------------------
    // API keys

    /// Creates an API key. The secret in the result is the only clear copy.
    pub async fn create_api_key(&self, actor: &Actor, name: &str, scopes: &[Scope]) -> Result<CreatedApiKey> {
        check_len("API key name", name, 1, 100)?;
        if scopes.is_empty() {
            return Err(StoreError::InvalidInput("an API key needs at least one scope".into()));
        }
        let scopes_text = scopes_to_text(&scopes.iter().copied().collect());
        let s = secrets::new_api_secret();
        let now = Timestamp::now();
        let key = write_tx!(self, |c, ops| {
            ops::create_api_key(c, actor, name, &scopes_text, &s.prefix, &s.salt, &s.hash, now).await
        })?;
        Ok(CreatedApiKey { key, secret: s.secret })
    }

    /// The key a secret belongs to, if the secret is exact and the key not revoked; otherwise
    /// `Unauthorized`.
    pub async fn verify_api_key(&self, secret: &str) -> Result<ApiKey> {
        let Some(prefix) = secrets::api_secret_prefix(secret) else { return Err(StoreError::Unauthorized) };
        let found = read_conn!(self, |c, ops| ops::api_key_by_prefix(c, prefix).await)?;
        let Some((key, salt, hash)) = found else { return Err(StoreError::Unauthorized) };
        if !secrets::api_secret_matches(&salt, &hash, secret) || key.revoked_at.is_some() {
            return Err(StoreError::Unauthorized);
        }
        Ok(key)
    }

    /// Every API key (no secrets).
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKey>> {
        read_conn!(self, |c, ops| ops::list_api_keys(c).await)
    }

    /// Revokes a key. Idempotent.
    pub async fn revoke_api_key(&self, actor: &Actor, id: i64) -> Result<ApiKey> {
        let now = Timestamp::now();
        write_tx!(self, |c, ops| ops::revoke_api_key(c, actor, id, now).await)
    }

    // -----------------------------------------------------------------------------------------
    // Audit log

    /// Appends an event that is not a store write (e.g. a lookup made with an API key).
    pub async fn record_audit(
        &self,
        actor: &Actor,
        action: &str,
        target: &str,
        details: serde_json::Value,
    ) -> Result<()> {
        check_len("audit action", action, 1, 100)?;
        let now = Timestamp::now();
        write_tx!(self, |c, ops| ops::audit(c, actor, action, target, details, now).await)
    }

    /// Audit events with id > `after_id`, oldest first.
    pub async fn audit_events(&self, after_id: i64, limit: u32) -> Result<Vec<AuditEvent>> {
        read_conn!(self, |c, ops| ops::list_audit(c, after_id, i64::from(limit)).await)
    }

    // -----------------------------------------------------------------------------------------
    // Change feed

    /// The last change-feed sequence number committed.
    pub async fn current_seq(&self) -> Result<i64> {
        read_conn!(self, |c, ops| ops::current_seq(c).await)
    }

    /// Up to `limit` changes with seq > `since`, in order. Sequence numbers are consecutive and
    /// become visible in order on both backends, so a poller that continues from the last seq
    /// it saw never skips one.
    pub async fn changes_since(&self, since: i64, limit: u32) -> Result<Vec<Change>> {
        read_conn!(self, |c, ops| ops::changes_since_checked(c, since, i64::from(limit)).await)
    }

    /// Deletes the feed up to and including `through` (never past the current seq). Readers
    /// still behind it get [`StoreError::FeedTruncated`] and reload. Returns rows deleted.
    pub async fn prune_changes(&self, actor: &Actor, through: i64) -> Result<u64> {
        let now = Timestamp::now();
        write_tx!(self, |c, ops| ops::prune_changes(c, actor, through, now).await)
    }

    /// Deletes the feed through the last change made before `before`, at most `max_rows` of it
    /// (one short transaction; call again while it returns `max_rows`). Retention: a reader
    /// further behind reloads, as after [`Store::prune_changes`]. Returns rows deleted.
    pub async fn prune_changes_before(&self, actor: &Actor, before: Timestamp, max_rows: u32) -> Result<u64> {
        let now = Timestamp::now();
        write_tx!(self, |c, ops| {
            let through = ops::last_seq_before(c, before, i64::from(max_rows)).await?;
            ops::prune_changes(c, actor, through, now).await
        })
    }

    /// Every entry of `signal` that currently matches (entry enabled, bank enabled), from one
    /// consistent snapshot, with the feed position to poll from.
    pub async fn load_all_active(&self, signal: SignalType) -> Result<ActiveSet> {
        snapshot_tx!(self, |c, ops| ops::load_all_active(c, signal).await)
    }

    /// The same set as [`Store::load_all_active`], streamed: `page` is called with the active
    /// entries of `signal` in id order, at most `page_size` at a time (keyset pagination over
    /// the primary key, all pages read in one consistent snapshot), so that a caller building
    /// an index never holds every row at once. Returns the feed position the set corresponds
    /// to. An error from `page` stops the load and is returned.
    pub async fn for_each_active_page(
        &self,
        signal: SignalType,
        page_size: u32,
        mut page: impl FnMut(Vec<(i64, SignalValue)>) -> Result<()> + Send,
    ) -> Result<i64> {
        let limit = i64::from(page_size.max(1));
        snapshot_tx!(self, |c, ops| {
            let seq = ops::current_seq(c).await?;
            let mut after = i64::MIN;
            loop {
                let rows = ops::active_page(c, signal, after, limit).await?;
                let n = rows.len() as i64;
                let Some(last) = rows.last() else { break };
                after = last.0;
                page(rows)?;
                if n < limit {
                    break;
                }
            }
            Ok(seq)
        })
    }

    // -----------------------------------------------------------------------------------------
    // Match counts

    /// Adds match counts (one transaction; rows in key order, so that concurrent writers on
    /// PostgreSQL never wait on each other in a cycle). A tally whose entry no longer exists is
    /// dropped; the number of tallies counted is returned. Sources longer than 200 characters are
    /// cut there.
    pub async fn record_matches(&self, tallies: &[MatchTally]) -> Result<usize> {
        let mut sorted: Vec<MatchTally> = tallies
            .iter()
            .filter(|t| t.matches > 0)
            .map(|t| MatchTally { source: t.source.chars().take(200).collect(), ..t.clone() })
            .collect();
        if sorted.is_empty() {
            return Ok(0);
        }
        sorted.sort_by(|a, b| (a.entry_id, a.day, &a.source).cmp(&(b.entry_id, b.day, &b.source)));
        write_tx!(self, |c, ops| {
            let mut counted = 0;
            for t in &sorted {
                counted += usize::from(ops::record_match(c, t).await?);
            }
            Ok(counted)
        })
    }

    /// Deletes the match counts of the days before `before_day` ([`day_of`](crate::day_of) numbers;
    /// retention), at most `max_rows` of them (call again while it returns `max_rows`). Returns
    /// rows deleted.
    pub async fn prune_match_counts(&self, actor: &Actor, before_day: i64, max_rows: u32) -> Result<u64> {
        let now = Timestamp::now();
        write_tx!(self, |c, ops| ops::prune_match_counts(c, actor, before_day, i64::from(max_rows), now)
            .await)
    }

    /// Match counts summed by bank, entry, source, day or signal over a range of days.
    pub async fn match_stats(&self, q: &StatsQuery) -> Result<Vec<StatsRow>> {
        if q.since_day > q.until_day {
            return Err(StoreError::InvalidInput("the first day is after the last".into()));
        }
        if q.limit == 0 || q.limit > STATS_MAX_ROWS {
            return Err(StoreError::InvalidInput(format!("`limit` must be 1 to {STATS_MAX_ROWS}")));
        }
        read_conn!(self, |c, ops| ops::match_stats(c, q).await)
    }

    // -----------------------------------------------------------------------------------------
    // Webhook outbox

    /// Persists webhook events for delivery; returns their ids.
    pub async fn enqueue_webhooks(&self, hooks: &[NewWebhook]) -> Result<Vec<i64>> {
        for h in hooks {
            if !(h.url.starts_with("https://") || h.url.starts_with("http://")) {
                return Err(StoreError::InvalidInput(format!("webhook URL `{}` is not http(s)", h.url)));
            }
            check_len("webhook event type", &h.event_type, 1, 100)?;
        }
        let now = Timestamp::now();
        write_tx!(self, |c, ops| {
            let mut ids = Vec::with_capacity(hooks.len());
            for h in hooks {
                ids.push(ops::enqueue_webhook(c, h, now).await?);
            }
            Ok(ids)
        })
    }

    /// One outbox row.
    pub async fn get_webhook(&self, id: i64) -> Result<Webhook> {
        read_conn!(self, |c, ops| ops::get_webhook(c, id).await)
    }

    /// Claims up to `limit` pending events due at `now` and not leased by another worker,
    /// leasing them for `lease`. Each returned row carries the lease token to pass to
    /// `mark_webhook_*`. A worker that dies leaves its lease to expire, then the row is due
    /// again.
    pub async fn claim_due_webhooks(
        &self,
        now: Timestamp,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<Webhook>> {
        let token = (OsRng.next_u64() >> 1) as i64;
        let until = now.plus(lease);
        write_tx!(self, |c, ops| ops::claim_due_webhooks(c, now, i64::from(limit), until, token).await)
    }

    /// Marks a claimed event delivered. `false` if the lease was lost (expired and re-claimed).
    pub async fn mark_webhook_delivered(&self, id: i64, lease_token: i64) -> Result<bool> {
        let now = Timestamp::now();
        write_tx!(self, |c, ops| ops::mark_webhook_delivered(c, id, lease_token, now).await)
    }

    /// Records a failed attempt: retried at `next_attempt_at`, or given up (dead) if `None`.
    /// `false` if the lease was lost.
    pub async fn mark_webhook_failed(
        &self,
        id: i64,
        lease_token: i64,
        error: &str,
        next_attempt_at: Option<Timestamp>,
    ) -> Result<bool> {
        let now = Timestamp::now();
        let error: String = error.chars().take(1000).collect();
        write_tx!(self, |c, ops| ops::mark_webhook_failed(c, id, lease_token, &error, next_attempt_at, now)
            .await)
    }
}

async fn open_sqlite(path: &Path, options: &StoreOptions) -> Result<Db> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(dir).map_err(|e| {
            StoreError::Internal(format!("cannot create data directory {}: {e}", dir.display()))
        })?;
    }
    // Durability: WAL with synchronous=FULL fsyncs the WAL at every commit, so a commit that
    // returned survives a process kill *and* a power cut. (NORMAL would survive SIGKILL too,
    // since the WAL write reaches the OS before COMMIT returns, but could lose the last commits
    // on power loss; writes here are rare and precious, so FULL.)
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(30));
    let pool = SqlitePoolOptions::new()
        .max_connections(options.sqlite_max_connections.max(1))
        .connect_with(opts)
        .await
        .map_err(|e| match e {
            sqlx::Error::Database(_) | sqlx::Error::Io(_) => {
                StoreError::Internal(format!("cannot open SQLite database {}: {e}", path.display()))
            }
            other => db_err(other),
        })?;
    Ok(Db::Sqlite { pool, write_lock: Arc::new(tokio::sync::Mutex::new(())) })
}

fn valid_schema_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 63
}

async fn open_postgres(url: &str, schema: Option<&str>, options: &StoreOptions) -> Result<Db> {
    let mut opts = PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::InvalidInput(format!("bad PostgreSQL URL: {e}")))?
        .application_name("consentry")
        // The server default, stated: COMMIT returns only once the WAL is flushed.
        .options([("synchronous_commit", "on")]);
    if let Some(schema) = schema {
        if !valid_schema_name(schema) {
            return Err(StoreError::InvalidInput(format!("bad schema name `{schema}`")));
        }
        let mut conn = PgConnection::connect_with(&opts).await.map_err(|e| pg_connect_err(url, e))?;
        let created =
            sqlx::raw_sql(&format!("CREATE SCHEMA IF NOT EXISTS {schema}")).execute(&mut conn).await;
        if let Err(e) = created {
            // Two processes creating the same schema at once: the loser sees a unique violation.
            if !e.as_database_error().is_some_and(|d| d.is_unique_violation()) {
                return Err(db_err(e));
            }
        }
        let _ = conn.close().await;
        opts = opts.options([("search_path", schema)]);
    }
    let pool = PgPoolOptions::new()
        .max_connections(options.pg_max_connections.max(2))
        .acquire_timeout(options.pg_acquire_timeout)
        .connect_with(opts)
        .await
        .map_err(|e| pg_connect_err(url, e))?;
    Ok(Db::Postgres { pool })
}

fn pg_connect_err(url: &str, e: sqlx::Error) -> StoreError {
    // Never echo a password that may be in the URL.
    let shown = match url.split_once('@') {
        Some((_, host)) => format!("postgres://…@{host}"),
        None => url.to_owned(),
    };
    StoreError::Internal(format!("cannot connect to PostgreSQL at {shown}: {e}"))
}
