// The store's SQL, written once and compiled per backend: `backend.rs` includes this file in a
// module that defines `Db`, `Conn`, `DbRow`, `DIALECT` and `MIGRATIONS`. Every function runs on
// a connection the caller has put in the right transaction (see the macros in backend.rs).

use sqlx::Row as _;

use crate::backend::{CaseAuth, ChangeLog, Dialect, PinStart};
use crate::error::{Result, StoreError};
use crate::types::*;

fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(e.to_string())
}

fn ts(v: i64) -> Timestamp {
    Timestamp(v)
}

fn opt_ts(v: Option<i64>) -> Option<Timestamp> {
    v.map(Timestamp)
}

// ---------------------------------------------------------------------------------------------
// Migrations

pub(crate) async fn migrate(c: &mut Conn) -> Result<()> {
    if DIALECT == Dialect::Postgres {
        // Several processes may open the same database at once: one migrates, the others wait.
        sqlx::query::<Db>("SELECT pg_advisory_xact_lock(7215, hashtext(current_schema()))")
            .execute(&mut *c)
            .await?;
    }
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *c)
    .await?;
    let current: Option<i64> = sqlx::query_scalar::<Db, Option<i64>>("SELECT MAX(version) FROM schema_migrations")
        .fetch_one(&mut *c)
        .await?;
    let current = current.unwrap_or(0);
    let known = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    if current > known {
        return Err(StoreError::Migration(format!(
            "the database schema is at version {current}, newer than this build knows ({known}); \
             upgrade consentry"
        )));
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        sqlx::raw_sql(sql)
            .execute(&mut *c)
            .await
            .map_err(|e| StoreError::Migration(format!("migration {version} ({name}): {e}")))?;
        sqlx::query::<Db>("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
            .bind(*version)
            .bind(*name)
            .bind(Timestamp::now().0)
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}

pub(crate) async fn schema_version(c: &mut Conn) -> Result<i64> {
    let v: Option<i64> = sqlx::query_scalar::<Db, Option<i64>>("SELECT MAX(version) FROM schema_migrations")
        .fetch_one(&mut *c)
        .await?;
    Ok(v.unwrap_or(0))
}

// ---------------------------------------------------------------------------------------------
// Audit log

pub(crate) async fn audit(
    c: &mut Conn,
    actor: &Actor,
    action: &str,
    target: &str,
    details: serde_json::Value,
    now: Timestamp,
) -> Result<()> {
    sqlx::query::<Db>(
        "INSERT INTO audit_events (at, actor, action, target, details) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(now.0)
    .bind(actor.as_str())
    .bind(action)
    .bind(target)
    .bind(details.to_string())
    .execute(&mut *c)
    .await?;
    Ok(())
}

fn audit_from_row(r: &DbRow) -> Result<AuditEvent> {
    Ok(AuditEvent {
        id: r.try_get("id")?,
        at: ts(r.try_get("at")?),
        actor: r.try_get("actor")?,
        action: r.try_get("action")?,
        target: r.try_get("target")?,
        details: serde_json::from_str(&r.try_get::<String, _>("details")?).map_err(internal)?,
    })
}

pub(crate) async fn list_audit(c: &mut Conn, after_id: i64, limit: i64) -> Result<Vec<AuditEvent>> {
    let rows = sqlx::query::<Db>(
        "SELECT id, at, actor, action, target, details FROM audit_events
         WHERE id > $1 ORDER BY id LIMIT $2",
    )
    .bind(after_id)
    .bind(limit)
    .fetch_all(&mut *c)
    .await?;
    rows.iter().map(audit_from_row).collect()
}

// ---------------------------------------------------------------------------------------------
// Change feed

/// Takes the change-feed lock. Called first in every transaction that can change what
/// matches: on PostgreSQL the row lock on `meta` serialises those transactions, so (a) the
/// sequence numbers they hand out are committed in order and gapless, and (b) each one decides
/// what is "active" on the state every earlier one committed (no write skew between, say,
/// enabling an entry and enabling its bank). On SQLite the write transaction is already
/// exclusive.
pub(crate) async fn lock_changes(c: &mut Conn) -> Result<ChangeLog> {
    let sql = match DIALECT {
        Dialect::Postgres => "SELECT change_seq FROM meta WHERE id = 1 FOR UPDATE",
        Dialect::Sqlite => "SELECT change_seq FROM meta WHERE id = 1",
    };
    let s: i64 = sqlx::query_scalar::<Db, i64>(sql).fetch_one(&mut *c).await?;
    Ok(ChangeLog { start: s, last: s })
}

pub(crate) async fn push_change(
    c: &mut Conn,
    log: &mut ChangeLog,
    entry_id: i64,
    op: ChangeOp,
    cause: &str,
    now: Timestamp,
) -> Result<()> {
    let (active, signal, value) = match op {
        ChangeOp::Activate(v) => (true, v.signal_type(), Some(v.to_bytes())),
        ChangeOp::Deactivate(s) => (false, s, None),
    };
    log.last += 1;
    sqlx::query::<Db>(
        "INSERT INTO changes (seq, entry_id, active, signal_type, value, cause, at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(log.last)
    .bind(entry_id)
    .bind(active)
    .bind(signal.as_str())
    .bind(value)
    .bind(cause)
    .bind(now.0)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Appends one change per entry selected by `filter` (SQL over `entries e`, with `$5` bound to
/// `filter_arg`), in entry-id order. Returns how many.
pub(crate) async fn push_changes_where(
    c: &mut Conn,
    log: &mut ChangeLog,
    activate: bool,
    filter: &str,
    filter_arg: i64,
    cause: &str,
    now: Timestamp,
) -> Result<u64> {
    let sql = format!(
        "INSERT INTO changes (seq, entry_id, active, signal_type, value, cause, at)
         SELECT $1 + ROW_NUMBER() OVER (ORDER BY e.id), e.id, $2,
                e.signal_type, CASE WHEN $2 THEN e.value ELSE NULL END, $3, $4
         FROM entries e WHERE {filter}"
    );
    let n = sqlx::query::<Db>(&sql)
        .bind(log.last)
        .bind(activate)
        .bind(cause)
        .bind(now.0)
        .bind(filter_arg)
        .execute(&mut *c)
        .await?
        .rows_affected();
    log.last += i64::try_from(n).map_err(internal)?;
    Ok(n)
}

/// Publishes the sequence numbers handed out (same transaction).
pub(crate) async fn finish_changes(c: &mut Conn, log: &ChangeLog) -> Result<()> {
    if log.last == log.start {
        return Ok(());
    }
    sqlx::query::<Db>("UPDATE meta SET change_seq = $1 WHERE id = 1")
        .bind(log.last)
        .execute(&mut *c)
        .await?;
    if DIALECT == Dialect::Postgres {
        // Delivered at commit to any LISTENer; pollers do not depend on it.
        // Channels are database-wide: name them after the schema so stores in other schemas
        // of the same database are not woken.
        sqlx::query::<Db>("SELECT pg_notify('consentry_changes_' || current_schema(), $1)")
            .bind(log.last.to_string())
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}

fn change_from_row(r: &DbRow) -> Result<Change> {
    let signal: SignalType = r.try_get::<String, _>("signal_type")?.parse().map_err(internal)?;
    let active: bool = r.try_get("active")?;
    let op = if active {
        let bytes: Option<Vec<u8>> = r.try_get("value")?;
        let bytes = bytes.ok_or_else(|| internal("activation without a value"))?;
        ChangeOp::Activate(SignalValue::from_bytes(signal, &bytes)?)
    } else {
        ChangeOp::Deactivate(signal)
    };
    Ok(Change {
        seq: r.try_get("seq")?,
        entry_id: r.try_get("entry_id")?,
        op,
        cause: r.try_get("cause")?,
        at: ts(r.try_get("at")?),
    })
}

pub(crate) async fn changes_since(c: &mut Conn, since: i64, limit: i64) -> Result<Vec<Change>> {
    let rows = sqlx::query::<Db>(
        "SELECT seq, entry_id, active, signal_type, value, cause, at FROM changes
         WHERE seq > $1 ORDER BY seq LIMIT $2",
    )
    .bind(since)
    .bind(limit)
    .fetch_all(&mut *c)
    .await?;
    rows.iter().map(change_from_row).collect()
}

/// The last change pruned from the feed (0 when none was).
async fn pruned_seq(c: &mut Conn) -> Result<i64> {
    Ok(sqlx::query_scalar::<Db, i64>("SELECT pruned_seq FROM meta WHERE id = 1").fetch_one(&mut *c).await?)
}

/// Changes after `since`, or `FeedTruncated` if some of them were pruned. The prune point is
/// read after the rows, so a concurrent prune can only cause a (safe) spurious error.
pub(crate) async fn changes_since_checked(c: &mut Conn, since: i64, limit: i64) -> Result<Vec<Change>> {
    let rows = changes_since(c, since, limit).await?;
    let pruned: i64 = pruned_seq(c).await?;
    if since < pruned {
        return Err(StoreError::FeedTruncated { since, pruned_through: pruned });
    }
    Ok(rows)
}

pub(crate) async fn prune_changes(c: &mut Conn, actor: &Actor, through: i64, now: Timestamp) -> Result<u64> {
    let log = lock_changes(c).await?;
    let through = through.min(log.start);
    let old: i64 = pruned_seq(c).await?;
    if through <= old {
        return Ok(0);
    }
    let n = sqlx::query::<Db>("DELETE FROM changes WHERE seq <= $1")
        .bind(through)
        .execute(&mut *c)
        .await?
        .rows_affected();
    sqlx::query::<Db>("UPDATE meta SET pruned_seq = $1 WHERE id = 1")
        .bind(through)
        .execute(&mut *c)
        .await?;
    audit(c, actor, "changes.prune", "changes", serde_json::json!({"through": through, "deleted": n}), now).await?;
    Ok(n)
}

/// The last change made before `before`, at most `max_rows` past the last pruned one (0 when
/// there is none).
pub(crate) async fn last_seq_before(c: &mut Conn, before: Timestamp, max_rows: i64) -> Result<i64> {
    let pruned: i64 = pruned_seq(c).await?;
    let seq: Option<i64> =
        sqlx::query_scalar::<Db, Option<i64>>("SELECT MAX(seq) FROM changes WHERE at < $1 AND seq <= $2")
            .bind(before.0)
            .bind(pruned.saturating_add(max_rows))
            .fetch_one(&mut *c)
            .await?;
    Ok(seq.unwrap_or(0))
}

pub(crate) async fn prune_match_counts(
    c: &mut Conn,
    actor: &Actor,
    before_day: i64,
    max_rows: i64,
    now: Timestamp,
) -> Result<u64> {
    let n = sqlx::query::<Db>(
        "DELETE FROM match_counts WHERE (entry_id, day, source) IN
             (SELECT entry_id, day, source FROM match_counts WHERE day < $1 LIMIT $2)",
    )
    .bind(before_day)
    .bind(max_rows)
    .execute(&mut *c)
        .await?
        .rows_affected();
    if n > 0 {
        let detail = serde_json::json!({"before_day": before_day, "deleted": n});
        audit(c, actor, "match_counts.prune", "match_counts", detail, now).await?;
    }
    Ok(n)
}

pub(crate) async fn list_cases(
    c: &mut Conn,
    status: Option<CaseStatus>,
    after_id: i64,
    limit: i64,
) -> Result<Vec<Case>> {
    let rows = match status {
        Some(st) => {
            sqlx::query::<Db>(&format!(
                "SELECT {CASE_COLS} FROM cases WHERE status = $1 AND id > $2 ORDER BY id LIMIT $3"
            ))
            .bind(st.as_str())
            .bind(after_id)
            .bind(limit)
            .fetch_all(&mut *c)
            .await?
        }
        None => {
            sqlx::query::<Db>(&format!("SELECT {CASE_COLS} FROM cases WHERE id > $1 ORDER BY id LIMIT $2"))
                .bind(after_id)
                .bind(limit)
                .fetch_all(&mut *c)
                .await?
        }
    };
    rows.iter().map(case_from_row).collect()
}

pub(crate) async fn current_seq(c: &mut Conn) -> Result<i64> {
    Ok(sqlx::query_scalar::<Db, i64>("SELECT change_seq FROM meta WHERE id = 1")
        .fetch_one(&mut *c)
        .await?)
}

/// `e.signal_type` in the active-set queries. On SQLite the unary `+` keeps the planner off the
/// `(signal_type, value)` index: with it, SQLite read all 10M entries through that index and
/// sorted them by id for every page (minutes), instead of walking the rowid range in order.
/// (`CROSS JOIN` likewise makes SQLite take `entries` as the outer loop; PostgreSQL plans it
/// like the inner join it is.)
const ENTRY_SIGNAL: &str = match DIALECT {
    Dialect::Sqlite => "+e.signal_type",
    Dialect::Postgres => "e.signal_type",
};

/// Must run in a snapshot transaction.
pub(crate) async fn load_all_active(c: &mut Conn, signal: SignalType) -> Result<ActiveSet> {
    let seq = current_seq(c).await?;
    let rows = sqlx::query::<Db>(&format!(
        "SELECT e.id, e.value FROM entries e CROSS JOIN banks b
         WHERE b.id = e.bank_id AND {ENTRY_SIGNAL} = $1 AND e.disabled_at IS NULL AND b.enabled
         ORDER BY e.id"
    ))
    .bind(signal.as_str())
    .fetch_all(&mut *c)
    .await?;
    let mut entries = Vec::with_capacity(rows.len());
    for r in &rows {
        let bytes: Vec<u8> = r.try_get("value")?;
        entries.push((r.try_get::<i64, _>("id")?, SignalValue::from_bytes(signal, &bytes)?));
    }
    Ok(ActiveSet { seq, entries })
}

/// One page of the active set: entries of `signal` with id > `after_id` that currently match,
/// by id, at most `limit` (keyset pagination over the primary key). Run the pages of one load
/// in one snapshot transaction.
pub(crate) async fn active_page(
    c: &mut Conn,
    signal: SignalType,
    after_id: i64,
    limit: i64,
) -> Result<Vec<(i64, SignalValue)>> {
    let rows = sqlx::query::<Db>(&format!(
        "SELECT e.id, e.value FROM entries e CROSS JOIN banks b
         WHERE b.id = e.bank_id AND e.id > $2 AND {ENTRY_SIGNAL} = $1 AND e.disabled_at IS NULL AND b.enabled
         ORDER BY e.id LIMIT $3"
    ))
    .bind(signal.as_str())
    .bind(after_id)
    .bind(limit)
    .fetch_all(&mut *c)
    .await?;
    let mut page = Vec::with_capacity(rows.len());
    for r in &rows {
        let bytes: &[u8] = r.try_get("value")?;
        page.push((r.try_get::<i64, _>("id")?, SignalValue::from_bytes(signal, bytes)?));
    }
    Ok(page)
}

// ---------------------------------------------------------------------------------------------
// Banks

const BANK_COLS: &str = "id, name, description, enabled, purpose, created_at, updated_at";

fn bank_from_row(r: &DbRow) -> Result<Bank> {
    Ok(Bank {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        enabled: r.try_get("enabled")?,
        purpose: r.try_get::<String, _>("purpose")?.parse().map_err(internal)?,
        created_at: ts(r.try_get("created_at")?),
        updated_at: ts(r.try_get("updated_at")?),
    })
}

pub(crate) async fn get_bank(c: &mut Conn, id: i64) -> Result<Bank> {
    let row = sqlx::query::<Db>(&format!("SELECT {BANK_COLS} FROM banks WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *c)
        .await?;
    match row {
        Some(r) => bank_from_row(&r),
        None => Err(StoreError::NotFound(format!("bank {id}"))),
    }
}

pub(crate) async fn get_bank_by_name(c: &mut Conn, name: &str) -> Result<Bank> {
    let row = sqlx::query::<Db>(&format!("SELECT {BANK_COLS} FROM banks WHERE name = $1"))
        .bind(name)
        .fetch_optional(&mut *c)
        .await?;
    match row {
        Some(r) => bank_from_row(&r),
        None => Err(StoreError::NotFound(format!("bank `{name}`"))),
    }
}

pub(crate) async fn list_banks(c: &mut Conn) -> Result<Vec<Bank>> {
    let rows = sqlx::query::<Db>(&format!("SELECT {BANK_COLS} FROM banks ORDER BY id"))
        .fetch_all(&mut *c)
        .await?;
    rows.iter().map(bank_from_row).collect()
}

pub(crate) async fn create_bank(c: &mut Conn, actor: &Actor, nb: &NewBank, now: Timestamp) -> Result<Bank> {
    let id: i64 = sqlx::query_scalar::<Db, i64>(
        "INSERT INTO banks (name, description, enabled, purpose, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $5) RETURNING id",
    )
    .bind(&nb.name)
    .bind(&nb.description)
    .bind(nb.enabled)
    .bind(nb.purpose.as_str())
    .bind(now.0)
    .fetch_one(&mut *c)
    .await
    .map_err(|e| match crate::error::db_err(e) {
        StoreError::Conflict(_) => StoreError::Conflict(format!("a bank named `{}` exists", nb.name)),
        other => other,
    })?;
    audit(
        c,
        actor,
        "bank.create",
        &format!("bank:{id}"),
        serde_json::json!({"name": nb.name, "purpose": nb.purpose.as_str(), "enabled": nb.enabled}),
        now,
    )
    .await?;
    get_bank(c, id).await
}

pub(crate) async fn update_bank(
    c: &mut Conn,
    actor: &Actor,
    id: i64,
    upd: &BankUpdate,
    now: Timestamp,
) -> Result<Bank> {
    let old = get_bank(c, id).await?;
    let name = upd.name.clone().unwrap_or_else(|| old.name.clone());
    let description = upd.description.clone().unwrap_or_else(|| old.description.clone());
    let purpose = upd.purpose.unwrap_or(old.purpose);
    sqlx::query::<Db>(
        "UPDATE banks SET name = $1, description = $2, purpose = $3, updated_at = $4 WHERE id = $5",
    )
    .bind(&name)
    .bind(&description)
    .bind(purpose.as_str())
    .bind(now.0)
    .bind(id)
    .execute(&mut *c)
    .await
    .map_err(|e| match crate::error::db_err(e) {
        StoreError::Conflict(_) => StoreError::Conflict(format!("a bank named `{name}` exists")),
        other => other,
    })?;
    audit(
        c,
        actor,
        "bank.update",
        &format!("bank:{id}"),
        serde_json::json!({"name": name, "purpose": purpose.as_str(), "old_name": old.name}),
        now,
    )
    .await?;
    get_bank(c, id).await
}

pub(crate) async fn set_bank_enabled(
    c: &mut Conn,
    actor: &Actor,
    id: i64,
    enabled: bool,
    now: Timestamp,
) -> Result<Bank> {
    let mut log = lock_changes(c).await?;
    let bank = get_bank(c, id).await?;
    if bank.enabled == enabled {
        return Ok(bank);
    }
    sqlx::query::<Db>("UPDATE banks SET enabled = $1, updated_at = $2 WHERE id = $3")
        .bind(enabled)
        .bind(now.0)
        .bind(id)
        .execute(&mut *c)
        .await?;
    let cause = if enabled { "bank.enable" } else { "bank.disable" };
    let n = push_changes_where(
        c,
        &mut log,
        enabled,
        "e.bank_id = $5 AND e.disabled_at IS NULL",
        id,
        cause,
        now,
    )
    .await?;
    finish_changes(c, &log).await?;
    audit(c, actor, cause, &format!("bank:{id}"), serde_json::json!({"entries": n}), now).await?;
    get_bank(c, id).await
}

pub(crate) async fn delete_bank(c: &mut Conn, actor: &Actor, id: i64, now: Timestamp) -> Result<()> {
    let mut log = lock_changes(c).await?;
    let bank = get_bank(c, id).await?;
    let cases: i64 = sqlx::query_scalar::<Db, i64>("SELECT COUNT(*) FROM cases WHERE bank_id = $1")
        .bind(id)
        .fetch_one(&mut *c)
        .await?;
    if cases > 0 {
        return Err(StoreError::Conflict(format!(
            "bank {id} holds {cases} case(s); survivors' submissions are not deleted with a bank \
             (disable the bank instead)"
        )));
    }
    if bank.enabled {
        push_changes_where(c, &mut log, false, "e.bank_id = $5 AND e.disabled_at IS NULL", id, "bank.delete", now)
            .await?;
    }
    let n = sqlx::query::<Db>("DELETE FROM entries WHERE bank_id = $1")
        .bind(id)
        .execute(&mut *c)
        .await?
        .rows_affected();
    sqlx::query::<Db>("DELETE FROM banks WHERE id = $1").bind(id).execute(&mut *c).await?;
    finish_changes(c, &log).await?;
    audit(
        c,
        actor,
        "bank.delete",
        &format!("bank:{id}"),
        serde_json::json!({"name": bank.name, "entries_deleted": n}),
        now,
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Entries

const ENTRY_COLS: &str =
    "id, bank_id, signal_type, value, quality, source, case_id, metadata, added_at, disabled_at";

fn entry_from_row(r: &DbRow) -> Result<Entry> {
    let signal: SignalType = r.try_get::<String, _>("signal_type")?.parse().map_err(internal)?;
    let bytes: Vec<u8> = r.try_get("value")?;
    let kind: EntrySourceKind = r.try_get::<String, _>("source")?.parse().map_err(internal)?;
    let case_id: Option<i64> = r.try_get("case_id")?;
    let source = match kind {
        EntrySourceKind::Case => EntrySource::Case(case_id.ok_or_else(|| internal("case entry without case"))?),
        EntrySourceKind::Moderator => EntrySource::Moderator,
        EntrySourceKind::Import => EntrySource::Import,
    };
    let quality: Option<i64> = r.try_get("quality")?;
    Ok(Entry {
        id: r.try_get("id")?,
        bank_id: r.try_get("bank_id")?,
        value: SignalValue::from_bytes(signal, &bytes)?,
        quality: quality.map(|q| q as i32),
        source,
        metadata: serde_json::from_str(&r.try_get::<String, _>("metadata")?).map_err(internal)?,
        added_at: ts(r.try_get("added_at")?),
        disabled_at: opt_ts(r.try_get("disabled_at")?),
    })
}

pub(crate) async fn get_entry(c: &mut Conn, id: i64) -> Result<Entry> {
    let row = sqlx::query::<Db>(&format!("SELECT {ENTRY_COLS} FROM entries WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *c)
        .await?;
    match row {
        Some(r) => entry_from_row(&r),
        None => Err(StoreError::NotFound(format!("entry {id}"))),
    }
}

pub(crate) async fn list_entries(c: &mut Conn, bank_id: i64, after_id: i64, limit: i64) -> Result<Vec<Entry>> {
    let rows = sqlx::query::<Db>(&format!(
        "SELECT {ENTRY_COLS} FROM entries WHERE bank_id = $1 AND id > $2 ORDER BY id LIMIT $3"
    ))
    .bind(bank_id)
    .bind(after_id)
    .bind(limit)
    .fetch_all(&mut *c)
    .await?;
    rows.iter().map(entry_from_row).collect()
}

pub(crate) async fn find_entries(c: &mut Conn, value: &SignalValue) -> Result<Vec<Entry>> {
    let rows = sqlx::query::<Db>(&format!(
        "SELECT {ENTRY_COLS} FROM entries WHERE signal_type = $1 AND value = $2 ORDER BY id"
    ))
    .bind(value.signal_type().as_str())
    .bind(value.to_bytes())
    .fetch_all(&mut *c)
    .await?;
    rows.iter().map(entry_from_row).collect()
}

pub(crate) async fn case_entries(c: &mut Conn, case_id: i64) -> Result<Vec<Entry>> {
    let rows = sqlx::query::<Db>(&format!("SELECT {ENTRY_COLS} FROM entries WHERE case_id = $1 ORDER BY id"))
        .bind(case_id)
        .fetch_all(&mut *c)
        .await?;
    rows.iter().map(entry_from_row).collect()
}

/// Rows per multi-row INSERT: 8 bound values per entry row, well under SQLite's 32,766 and
/// PostgreSQL's 65,535 parameters.
const INSERT_ROWS: usize = 1000;

/// `(…), (…)` placeholders for `rows` rows of `cols` values, bound in order: `$1, $2, …` on
/// PostgreSQL, anonymous `?` on SQLite (where binding a `$n` name searches every name of the
/// statement, which made a 4,000-parameter INSERT spend most of its time binding).
fn values_placeholders(rows: usize, cols: usize) -> String {
    use std::fmt::Write as _;
    let mut sql = String::with_capacity(rows * cols * 6);
    let mut n = 0;
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..cols {
            if c > 0 {
                sql.push_str(", ");
            }
            n += 1;
            match DIALECT {
                Dialect::Postgres => {
                    let _ = write!(sql, "${n}");
                }
                Dialect::Sqlite => sql.push('?'),
            }
        }
        sql.push(')');
    }
    sql
}

/// Inserts one entry row and, if its bank is enabled, its activation. Caller holds the
/// change lock.
#[allow(clippy::too_many_arguments)]
async fn insert_entry(
    c: &mut Conn,
    log: &mut ChangeLog,
    bank: &Bank,
    value: &SignalValue,
    quality: Option<i32>,
    source: EntrySourceKind,
    case_id: Option<i64>,
    metadata: &str,
    cause: &str,
    now: Timestamp,
) -> Result<i64> {
    let ids = insert_entries(c, log, bank, &[(value, quality, metadata)], source, case_id, cause, now).await?;
    ids.first().copied().ok_or_else(|| internal("INSERT returned no id"))
}

/// Inserts entry rows `(value, quality, metadata)` of one bank with multi-row INSERTs (and, if
/// the bank is enabled, their activations in the change feed, also multi-row). Returns the new
/// ids in the order of `rows`. Caller holds the change lock.
#[allow(clippy::too_many_arguments)]
async fn insert_entries(
    c: &mut Conn,
    log: &mut ChangeLog,
    bank: &Bank,
    rows: &[(&SignalValue, Option<i32>, &str)],
    source: EntrySourceKind,
    case_id: Option<i64>,
    cause: &str,
    now: Timestamp,
) -> Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(INSERT_ROWS) {
        let sql = format!(
            "INSERT INTO entries (bank_id, source, case_id, added_at, signal_type, value, quality, metadata) \
             VALUES {} RETURNING id",
            values_placeholders(chunk.len(), 8)
        );
        let mut q = sqlx::query_scalar::<Db, i64>(&sql);
        for (value, quality, metadata) in chunk {
            q = q
                .bind(bank.id)
                .bind(source.as_str())
                .bind(case_id)
                .bind(now.0)
                .bind(value.signal_type().as_str())
                .bind(value.to_bytes())
                .bind(quality.map(i64::from))
                .bind(*metadata);
        }
        let mut got = q.fetch_all(&mut *c).await?;
        if got.len() != chunk.len() {
            return Err(internal(format!("INSERT of {} entries returned {} ids", chunk.len(), got.len())));
        }
        // Ids are handed out in VALUES order (AUTOINCREMENT / a sequence) whatever order
        // RETURNING lists them in.
        got.sort_unstable();
        if bank.enabled {
            push_activations(c, log, chunk.iter().map(|r| r.0).zip(got.iter().copied()), cause, now).await?;
        }
        ids.extend(got);
    }
    Ok(ids)
}

/// Appends `Activate` changes for `(value, entry id)` pairs with one multi-row INSERT (at most
/// [`INSERT_ROWS`] pairs).
async fn push_activations<'v>(
    c: &mut Conn,
    log: &mut ChangeLog,
    rows: impl ExactSizeIterator<Item = (&'v SignalValue, i64)>,
    cause: &str,
    now: Timestamp,
) -> Result<()> {
    let n = rows.len();
    if n == 0 {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO changes (seq, entry_id, active, signal_type, value, cause, at) VALUES {}",
        values_placeholders(n, 7)
    );
    let mut q = sqlx::query::<Db>(&sql);
    for (value, id) in rows {
        log.last += 1;
        q = q
            .bind(log.last)
            .bind(id)
            .bind(true)
            .bind(value.signal_type().as_str())
            .bind(value.to_bytes())
            .bind(cause)
            .bind(now.0);
    }
    q.execute(&mut *c).await?;
    Ok(())
}

pub(crate) async fn add_entry(
    c: &mut Conn,
    actor: &Actor,
    ne: &NewEntry,
    metadata: &str,
    now: Timestamp,
) -> Result<Entry> {
    let mut log = lock_changes(c).await?;
    let bank = get_bank(c, ne.bank_id).await?;
    let id = insert_entry(c, &mut log, &bank, &ne.value, ne.quality, ne.source, None, metadata, "entry.add", now)
        .await?;
    finish_changes(c, &log).await?;
    audit(
        c,
        actor,
        "entry.add",
        &format!("entry:{id}"),
        serde_json::json!({"bank": bank.id, "signal": ne.value.signal_type().as_str(), "source": ne.source.as_str()}),
        now,
    )
    .await?;
    get_entry(c, id).await
}

/// `lines` are already validated: (line, value, quality, metadata text).
pub(crate) async fn add_entries_bulk(
    c: &mut Conn,
    actor: &Actor,
    bank_id: i64,
    source: EntrySourceKind,
    lines: &[(u64, SignalValue, Option<i32>, String)],
    rejected: usize,
    now: Timestamp,
) -> Result<Vec<(u64, i64)>> {
    let mut log = lock_changes(c).await?;
    let bank = get_bank(c, bank_id).await?;
    let rows: Vec<(&SignalValue, Option<i32>, &str)> =
        lines.iter().map(|(_, value, quality, metadata)| (value, *quality, metadata.as_str())).collect();
    let ids = insert_entries(c, &mut log, &bank, &rows, source, None, "entry.bulk_add", now).await?;
    let added: Vec<(u64, i64)> = lines.iter().map(|l| l.0).zip(ids).collect();
    finish_changes(c, &log).await?;
    audit(
        c,
        actor,
        "entry.bulk_add",
        &format!("bank:{bank_id}"),
        serde_json::json!({
            "added": added.len(),
            "rejected": rejected,
            "first_id": added.first().map(|a| a.1),
            "last_id": added.last().map(|a| a.1),
        }),
        now,
    )
    .await?;
    Ok(added)
}

pub(crate) async fn set_entry_disabled(
    c: &mut Conn,
    actor: &Actor,
    id: i64,
    disable: bool,
    now: Timestamp,
) -> Result<Entry> {
    let mut log = lock_changes(c).await?;
    let e = get_entry(c, id).await?;
    if e.disabled_at.is_some() == disable {
        return Ok(e);
    }
    if !disable {
        if let EntrySource::Case(case_id) = e.source {
            let case = get_case(c, case_id).await?;
            if case.status == CaseStatus::Withdrawn {
                return Err(StoreError::Conflict(format!(
                    "entry {id} belongs to a withdrawn case and cannot be enabled"
                )));
            }
        }
    }
    let bank = get_bank(c, e.bank_id).await?;
    sqlx::query::<Db>("UPDATE entries SET disabled_at = $1 WHERE id = $2")
        .bind(if disable { Some(now.0) } else { None })
        .bind(id)
        .execute(&mut *c)
        .await?;
    let action = if disable { "entry.disable" } else { "entry.enable" };
    if bank.enabled {
        let op = if disable {
            ChangeOp::Deactivate(e.value.signal_type())
        } else {
            ChangeOp::Activate(e.value)
        };
        push_change(c, &mut log, id, op, action, now).await?;
    }
    finish_changes(c, &log).await?;
    audit(c, actor, action, &format!("entry:{id}"), serde_json::json!({"bank": e.bank_id}), now).await?;
    get_entry(c, id).await
}

pub(crate) async fn remove_entry(c: &mut Conn, actor: &Actor, id: i64, now: Timestamp) -> Result<()> {
    let mut log = lock_changes(c).await?;
    let e = get_entry(c, id).await?;
    let bank = get_bank(c, e.bank_id).await?;
    sqlx::query::<Db>("DELETE FROM entries WHERE id = $1").bind(id).execute(&mut *c).await?;
    if bank.enabled && e.disabled_at.is_none() {
        push_change(c, &mut log, id, ChangeOp::Deactivate(e.value.signal_type()), "entry.remove", now).await?;
    }
    finish_changes(c, &log).await?;
    let mut detail = serde_json::json!({"bank": e.bank_id, "signal": e.value.signal_type().as_str()});
    match e.source {
        // A survivor's code is deleted for good, from the audit log too.
        EntrySource::Case(case_id) => detail["case"] = case_id.into(),
        _ => detail["value"] = e.value.to_text().into(),
    }
    audit(c, actor, "entry.remove", &format!("entry:{id}"), detail, now).await
}

// ---------------------------------------------------------------------------------------------
// Cases

const CASE_COLS: &str = "id, number, status, bank_id, created_at, updated_at, withdrawn_at";

fn case_from_row(r: &DbRow) -> Result<Case> {
    Ok(Case {
        id: r.try_get("id")?,
        number: r.try_get("number")?,
        status: r.try_get::<String, _>("status")?.parse().map_err(internal)?,
        bank_id: r.try_get("bank_id")?,
        created_at: ts(r.try_get("created_at")?),
        updated_at: ts(r.try_get("updated_at")?),
        withdrawn_at: opt_ts(r.try_get("withdrawn_at")?),
    })
}

pub(crate) async fn get_case(c: &mut Conn, id: i64) -> Result<Case> {
    let row = sqlx::query::<Db>(&format!("SELECT {CASE_COLS} FROM cases WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *c)
        .await?;
    match row {
        Some(r) => case_from_row(&r),
        None => Err(StoreError::NotFound(format!("case {id}"))),
    }
}

/// With `for_update`, locks the row (PostgreSQL) so concurrent attempts count one by one.
pub(crate) async fn get_case_auth(c: &mut Conn, number: &str, for_update: bool) -> Result<Option<CaseAuth>> {
    let lock = if for_update && DIALECT == Dialect::Postgres { "FOR UPDATE" } else { "" };
    let row = sqlx::query::<Db>(&format!(
        "SELECT {CASE_COLS}, pin_hash, failed_attempts, locked_until FROM cases WHERE number = $1 {lock}"
    ))
    .bind(number)
    .fetch_optional(&mut *c)
    .await?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some(CaseAuth {
        case: case_from_row(&r)?,
        pin_hash: r.try_get("pin_hash")?,
        failed_attempts: r.try_get("failed_attempts")?,
        locked_until: opt_ts(r.try_get("locked_until")?),
    }))
}

/// Counts a PIN attempt before the (slow) verification, so that parallel guesses cannot
/// exceed the limit.
pub(crate) async fn begin_pin_attempt(
    c: &mut Conn,
    number: &str,
    max_attempts: i64,
    lockout_ms: i64,
    now: Timestamp,
) -> Result<PinStart> {
    let Some(mut auth) = get_case_auth(c, number, true).await? else { return Ok(PinStart::NoCase) };
    if let Some(until) = auth.locked_until {
        if until > now {
            return Ok(PinStart::Locked(until));
        }
    }
    if auth.failed_attempts >= max_attempts {
        let until = lock_case(c, auth.case.id, lockout_ms, now).await?;
        return Ok(PinStart::Locked(until));
    }
    auth.failed_attempts += 1;
    sqlx::query::<Db>("UPDATE cases SET failed_attempts = $1, last_failed_at = $2 WHERE id = $3")
        .bind(auth.failed_attempts)
        .bind(now.0)
        .bind(auth.case.id)
        .execute(&mut *c)
        .await?;
    Ok(PinStart::Verify(auth))
}

async fn lock_case(c: &mut Conn, case_id: i64, lockout_ms: i64, now: Timestamp) -> Result<Timestamp> {
    let until = Timestamp(now.0.saturating_add(lockout_ms));
    sqlx::query::<Db>(
        "UPDATE cases SET failed_attempts = 0, locked_until = $1, lockouts = lockouts + 1 WHERE id = $2",
    )
    .bind(until.0)
    .bind(case_id)
    .execute(&mut *c)
    .await?;
    audit(
        c,
        &Actor::system(),
        "case.locked",
        &format!("case:{case_id}"),
        serde_json::json!({"until": until.0}),
        now,
    )
    .await?;
    Ok(until)
}

/// Records the outcome of a PIN verification started with `begin_pin_attempt`.
pub(crate) async fn finish_pin_attempt(
    c: &mut Conn,
    case_id: i64,
    ok: bool,
    attempts: i64,
    max_attempts: i64,
    lockout_ms: i64,
    now: Timestamp,
) -> Result<()> {
    if ok {
        sqlx::query::<Db>("UPDATE cases SET failed_attempts = 0 WHERE id = $1")
            .bind(case_id)
            .execute(&mut *c)
            .await?;
        return Ok(());
    }
    audit(
        c,
        &Actor::named("anonymous"),
        "case.pin_failure",
        &format!("case:{case_id}"),
        serde_json::json!({"attempts": attempts}),
        now,
    )
    .await?;
    if attempts >= max_attempts {
        lock_case(c, case_id, lockout_ms, now).await?;
    }
    Ok(())
}

/// Replaces case `case_id`'s PIN hash and clears its failed attempts and lock (staff, for a
/// survivor who lost her PIN).
pub(crate) async fn set_case_pin(
    c: &mut Conn,
    actor: &Actor,
    case_id: i64,
    pin_hash: &str,
    now: Timestamp,
) -> Result<Case> {
    let n = sqlx::query::<Db>(
        "UPDATE cases SET pin_hash = $1, failed_attempts = 0, locked_until = NULL WHERE id = $2",
    )
    .bind(pin_hash)
    .bind(case_id)
    .execute(&mut *c)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(StoreError::NotFound(format!("case {case_id}")));
    }
    audit(c, actor, "case.pin_reset", &format!("case:{case_id}"), serde_json::json!({}), now).await?;
    get_case(c, case_id).await
}

/// Deletes at most `max_rows` entries of cases withdrawn before `before` (they no longer match:
/// the withdrawal fed their deactivation). The cases themselves stay, with their number and
/// status. The audit event counts them; it names no value.
pub(crate) async fn purge_withdrawn(
    c: &mut Conn,
    actor: &Actor,
    before: Timestamp,
    max_rows: i64,
    now: Timestamp,
) -> Result<u64> {
    let n = sqlx::query::<Db>(
        "DELETE FROM entries WHERE id IN
             (SELECT e.id FROM entries e JOIN cases c ON e.case_id = c.id
              WHERE c.status = 'withdrawn' AND c.withdrawn_at < $1 LIMIT $2)",
    )
    .bind(before.0)
    .bind(max_rows)
    .execute(&mut *c)
    .await?
    .rows_affected();
    if n > 0 {
        let detail = serde_json::json!({"withdrawn_before": before.0, "deleted": n});
        audit(c, actor, "cases.purge_withdrawn", "entries", detail, now).await?;
    }
    Ok(n)
}

/// Case counters for tests and admin views: (failed_attempts, locked_until, lockouts).
pub(crate) async fn case_counters(c: &mut Conn, case_id: i64) -> Result<(i64, Option<Timestamp>, i64)> {
    let r = sqlx::query::<Db>("SELECT failed_attempts, locked_until, lockouts FROM cases WHERE id = $1")
        .bind(case_id)
        .fetch_optional(&mut *c)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("case {case_id}")))?;
    Ok((r.try_get("failed_attempts")?, opt_ts(r.try_get("locked_until")?), r.try_get("lockouts")?))
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn create_case(
    c: &mut Conn,
    actor: &Actor,
    number: &str,
    pin_hash: &str,
    bank_id: i64,
    hashes: &[CaseHash],
    metadata: &str,
    now: Timestamp,
) -> Result<(Case, Vec<Entry>)> {
    let mut log = lock_changes(c).await?;
    let bank = get_bank(c, bank_id).await?;
    let case_id: i64 = sqlx::query_scalar::<Db, i64>(
        "INSERT INTO cases (number, pin_hash, status, bank_id, created_at, updated_at)
         VALUES ($1, $2, 'received', $3, $4, $4) RETURNING id",
    )
    .bind(number)
    .bind(pin_hash)
    .bind(bank_id)
    .bind(now.0)
    .fetch_one(&mut *c)
    .await?;
    let rows: Vec<(&SignalValue, Option<i32>, &str)> =
        hashes.iter().map(|h| (&h.value, h.quality, metadata)).collect();
    insert_entries(c, &mut log, &bank, &rows, EntrySourceKind::Case, Some(case_id), "case.create", now).await?;
    finish_changes(c, &log).await?;
    audit(
        c,
        actor,
        "case.create",
        &format!("case:{case_id}"),
        serde_json::json!({"bank": bank_id, "hashes": hashes.len()}),
        now,
    )
    .await?;
    let case = get_case(c, case_id).await?;
    let entries = case_entries(c, case_id).await?;
    Ok((case, entries))
}

/// Withdraws case `case_id`: its entries are disabled. Returns the case and whether it changed
/// (`false` when it was withdrawn already).
pub(crate) async fn withdraw_case(
    c: &mut Conn,
    actor: &Actor,
    case_id: i64,
    now: Timestamp,
) -> Result<(Case, bool)> {
    let mut log = lock_changes(c).await?;
    let case = get_case(c, case_id).await?;
    if case.status == CaseStatus::Withdrawn {
        return Ok((case, false));
    }
    sqlx::query::<Db>(
        "UPDATE cases SET status = 'withdrawn', withdrawn_at = $1, updated_at = $1 WHERE id = $2",
    )
    .bind(now.0)
    .bind(case_id)
    .execute(&mut *c)
    .await?;
    let n = push_changes_where(
        c,
        &mut log,
        false,
        "e.case_id = $5 AND e.disabled_at IS NULL
         AND EXISTS (SELECT 1 FROM banks b WHERE b.id = e.bank_id AND b.enabled)",
        case_id,
        "case.withdraw",
        now,
    )
    .await?;
    let disabled = sqlx::query::<Db>("UPDATE entries SET disabled_at = $1 WHERE case_id = $2 AND disabled_at IS NULL")
        .bind(now.0)
        .bind(case_id)
        .execute(&mut *c)
        .await?
        .rows_affected();
    finish_changes(c, &log).await?;
    audit(
        c,
        actor,
        "case.withdraw",
        &format!("case:{case_id}"),
        serde_json::json!({"entries_disabled": disabled, "deactivated": n}),
        now,
    )
    .await?;
    Ok((get_case(c, case_id).await?, true))
}

pub(crate) async fn set_case_status(
    c: &mut Conn,
    actor: &Actor,
    case_id: i64,
    status: CaseStatus,
    now: Timestamp,
) -> Result<(Case, bool)> {
    if status == CaseStatus::Withdrawn {
        return withdraw_case(c, actor, case_id, now).await;
    }
    let case = get_case(c, case_id).await?;
    if case.status == CaseStatus::Withdrawn {
        return Err(StoreError::Conflict(format!(
            "case {case_id} is withdrawn; a withdrawn case is not reopened (submit a new case)"
        )));
    }
    if case.status == status {
        return Ok((case, false));
    }
    sqlx::query::<Db>("UPDATE cases SET status = $1, updated_at = $2 WHERE id = $3")
        .bind(status.as_str())
        .bind(now.0)
        .bind(case_id)
        .execute(&mut *c)
        .await?;
    audit(
        c,
        actor,
        "case.status",
        &format!("case:{case_id}"),
        serde_json::json!({"from": case.status.as_str(), "to": status.as_str()}),
        now,
    )
    .await?;
    Ok((get_case(c, case_id).await?, true))
}

/// Persists the events `outbox` makes of a change to `case` (holding `codes` codes, counted
/// when `None`), in the caller's transaction.
pub(crate) async fn queue_case_events(
    c: &mut Conn,
    outbox: Option<&CaseOutbox>,
    kind: CaseEventKind,
    case: &Case,
    codes: Option<usize>,
    now: Timestamp,
) -> Result<()> {
    let Some(outbox) = outbox else { return Ok(()) };
    let bank = get_bank(c, case.bank_id).await?.name;
    let codes = match codes {
        Some(n) => n,
        None => {
            let n: i64 = sqlx::query_scalar::<Db, i64>("SELECT COUNT(*) FROM entries WHERE case_id = $1")
                .bind(case.id)
                .fetch_one(&mut *c)
                .await?;
            usize::try_from(n).unwrap_or(0)
        }
    };
    let event = CaseEvent { kind, case: case.clone(), bank, codes };
    for hook in outbox(&event) {
        enqueue_webhook(c, &hook, now).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// API keys

const KEY_COLS: &str = "id, name, prefix, scopes, created_at, revoked_at";

fn key_from_row(r: &DbRow) -> Result<ApiKey> {
    Ok(ApiKey {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        prefix: r.try_get("prefix")?,
        scopes: scopes_from_text(&r.try_get::<String, _>("scopes")?).map_err(internal)?,
        created_at: ts(r.try_get("created_at")?),
        revoked_at: opt_ts(r.try_get("revoked_at")?),
    })
}

pub(crate) async fn get_api_key(c: &mut Conn, id: i64) -> Result<ApiKey> {
    let row = sqlx::query::<Db>(&format!("SELECT {KEY_COLS} FROM api_keys WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *c)
        .await?;
    match row {
        Some(r) => key_from_row(&r),
        None => Err(StoreError::NotFound(format!("API key {id}"))),
    }
}

pub(crate) async fn list_api_keys(c: &mut Conn) -> Result<Vec<ApiKey>> {
    let rows = sqlx::query::<Db>(&format!("SELECT {KEY_COLS} FROM api_keys ORDER BY id"))
        .fetch_all(&mut *c)
        .await?;
    rows.iter().map(key_from_row).collect()
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn create_api_key(
    c: &mut Conn,
    actor: &Actor,
    name: &str,
    scopes: &str,
    prefix: &str,
    salt: &[u8],
    hash: &[u8],
    now: Timestamp,
) -> Result<ApiKey> {
    let id: i64 = sqlx::query_scalar::<Db, i64>(
        "INSERT INTO api_keys (name, prefix, salt, secret_hash, scopes, created_at)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(name)
    .bind(prefix)
    .bind(salt)
    .bind(hash)
    .bind(scopes)
    .bind(now.0)
    .fetch_one(&mut *c)
    .await?;
    audit(
        c,
        actor,
        "api_key.create",
        &format!("api-key:{id}"),
        serde_json::json!({"name": name, "scopes": scopes, "prefix": prefix}),
        now,
    )
    .await?;
    get_api_key(c, id).await
}

pub(crate) async fn api_key_by_prefix(c: &mut Conn, prefix: &str) -> Result<Option<(ApiKey, Vec<u8>, Vec<u8>)>> {
    let row = sqlx::query::<Db>(&format!("SELECT {KEY_COLS}, salt, secret_hash FROM api_keys WHERE prefix = $1"))
        .bind(prefix)
        .fetch_optional(&mut *c)
        .await?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some((key_from_row(&r)?, r.try_get("salt")?, r.try_get("secret_hash")?)))
}

pub(crate) async fn revoke_api_key(c: &mut Conn, actor: &Actor, id: i64, now: Timestamp) -> Result<ApiKey> {
    let key = get_api_key(c, id).await?;
    if key.revoked_at.is_some() {
        return Ok(key);
    }
    sqlx::query::<Db>("UPDATE api_keys SET revoked_at = $1 WHERE id = $2")
        .bind(now.0)
        .bind(id)
        .execute(&mut *c)
        .await?;
    audit(c, actor, "api_key.revoke", &format!("api-key:{id}"), serde_json::json!({"name": key.name}), now).await?;
    get_api_key(c, id).await
}

// ---------------------------------------------------------------------------------------------
// Webhook outbox

const HOOK_COLS: &str = "id, url, event_type, payload, created_at, attempts, next_attempt_at, \
                         lease_token, lease_until, delivered_at, dead_at, last_error";

fn hook_from_row(r: &DbRow) -> Result<Webhook> {
    let delivered: Option<i64> = r.try_get("delivered_at")?;
    let dead: Option<i64> = r.try_get("dead_at")?;
    let state = match (delivered, dead) {
        (Some(_), _) => WebhookState::Delivered,
        (None, Some(_)) => WebhookState::Dead,
        (None, None) => WebhookState::Pending,
    };
    Ok(Webhook {
        id: r.try_get("id")?,
        url: r.try_get("url")?,
        event_type: r.try_get("event_type")?,
        payload: serde_json::from_str(&r.try_get::<String, _>("payload")?).map_err(internal)?,
        created_at: ts(r.try_get("created_at")?),
        attempts: i32::try_from(r.try_get::<i64, _>("attempts")?).map_err(internal)?,
        next_attempt_at: ts(r.try_get("next_attempt_at")?),
        lease_token: r.try_get("lease_token")?,
        lease_until: opt_ts(r.try_get("lease_until")?),
        state,
        last_error: r.try_get("last_error")?,
    })
}

pub(crate) async fn enqueue_webhook(c: &mut Conn, w: &NewWebhook, now: Timestamp) -> Result<i64> {
    Ok(sqlx::query_scalar::<Db, i64>(
        "INSERT INTO webhook_outbox (url, event_type, payload, created_at, next_attempt_at)
         VALUES ($1, $2, $3, $4, $4) RETURNING id",
    )
    .bind(&w.url)
    .bind(&w.event_type)
    .bind(w.payload.to_string())
    .bind(now.0)
    .fetch_one(&mut *c)
    .await?)
}

pub(crate) async fn get_webhook(c: &mut Conn, id: i64) -> Result<Webhook> {
    let row = sqlx::query::<Db>(&format!("SELECT {HOOK_COLS} FROM webhook_outbox WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *c)
        .await?;
    match row {
        Some(r) => hook_from_row(&r),
        None => Err(StoreError::NotFound(format!("webhook {id}"))),
    }
}

pub(crate) async fn claim_due_webhooks(
    c: &mut Conn,
    now: Timestamp,
    limit: i64,
    lease_until: Timestamp,
    token: i64,
) -> Result<Vec<Webhook>> {
    let lock = match DIALECT {
        Dialect::Postgres => "FOR UPDATE SKIP LOCKED",
        Dialect::Sqlite => "",
    };
    let sql = format!(
        "UPDATE webhook_outbox SET lease_token = $1, lease_until = $2
         WHERE id IN (SELECT id FROM webhook_outbox
                      WHERE delivered_at IS NULL AND dead_at IS NULL AND next_attempt_at <= $3
                        AND (lease_until IS NULL OR lease_until <= $3)
                      ORDER BY next_attempt_at, id LIMIT $4 {lock})
         RETURNING {HOOK_COLS}"
    );
    let rows = sqlx::query::<Db>(&sql)
        .bind(token)
        .bind(lease_until.0)
        .bind(now.0)
        .bind(limit)
        .fetch_all(&mut *c)
        .await?;
    let mut hooks = rows.iter().map(hook_from_row).collect::<Result<Vec<_>>>()?;
    hooks.sort_by_key(|h| (h.next_attempt_at, h.id));
    Ok(hooks)
}

pub(crate) async fn mark_webhook_delivered(c: &mut Conn, id: i64, token: i64, now: Timestamp) -> Result<bool> {
    let n = sqlx::query::<Db>(
        "UPDATE webhook_outbox SET delivered_at = $1, lease_token = NULL, lease_until = NULL
         WHERE id = $2 AND lease_token = $3 AND delivered_at IS NULL AND dead_at IS NULL",
    )
    .bind(now.0)
    .bind(id)
    .bind(token)
    .execute(&mut *c)
    .await?
    .rows_affected();
    Ok(n == 1)
}

pub(crate) async fn mark_webhook_failed(
    c: &mut Conn,
    id: i64,
    token: i64,
    error: &str,
    next_attempt_at: Option<Timestamp>,
    now: Timestamp,
) -> Result<bool> {
    let (next, dead) = match next_attempt_at {
        Some(t) => (t.0, None),
        None => (now.0, Some(now.0)),
    };
    let n = sqlx::query::<Db>(
        "UPDATE webhook_outbox
         SET attempts = attempts + 1, last_error = $1, next_attempt_at = $2, dead_at = $3,
             lease_token = NULL, lease_until = NULL
         WHERE id = $4 AND lease_token = $5 AND delivered_at IS NULL AND dead_at IS NULL",
    )
    .bind(error)
    .bind(next)
    .bind(dead)
    .bind(id)
    .bind(token)
    .execute(&mut *c)
    .await?
    .rows_affected();
    Ok(n == 1)
}

// -------------------------------------------------------------------------------------------------
// Match counts

/// Adds `t` to its (entry, day, source) row; the entry's bank and signal are read from `entries`.
/// Returns false (and counts nothing) when the entry no longer exists.
pub(crate) async fn record_match(c: &mut Conn, t: &MatchTally) -> Result<bool> {
    let n = sqlx::query::<Db>(
        "INSERT INTO match_counts (entry_id, bank_id, signal_type, day, source, matches, first_at, last_at)
         SELECT id, bank_id, signal_type, $2, $3, $4, $5, $6 FROM entries WHERE id = $1
         ON CONFLICT (entry_id, day, source) DO UPDATE SET
             matches = match_counts.matches + excluded.matches,
             first_at = CASE WHEN excluded.first_at < match_counts.first_at
                             THEN excluded.first_at ELSE match_counts.first_at END,
             last_at = CASE WHEN excluded.last_at > match_counts.last_at
                            THEN excluded.last_at ELSE match_counts.last_at END",
    )
    .bind(t.entry_id)
    .bind(t.day)
    .bind(&t.source)
    .bind(t.matches)
    .bind(t.first_at.0)
    .bind(t.last_at.0)
    .execute(&mut *c)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// `case` with its entries and how often they matched.
pub(crate) async fn case_view(c: &mut Conn, case: Case) -> Result<CaseView> {
    let entries = case_entries(c, case.id).await?;
    let matches = case_matches(c, case.id, entries.len()).await?;
    Ok(CaseView { case, entries, matches })
}

/// How often the entries of case `case_id` (`entries` of them) matched, over every day kept.
pub(crate) async fn case_matches(c: &mut Conn, case_id: i64, entries: usize) -> Result<CaseMatches> {
    let every_day = |group, limit| StatsQuery {
        case_id: Some(case_id),
        limit,
        ..StatsQuery::over(group, i64::MIN, i64::MAX)
    };
    // A case's entries are all in its bank: one row per bank is the case's total.
    let total = match_stats(c, &every_day(StatsGroup::Bank, 1)).await?.pop();
    let by_entry = match total {
        Some(_) => match_stats(c, &every_day(StatsGroup::Entry, entries.max(1) as u32)).await?,
        None => Vec::new(),
    };
    Ok(CaseMatches { total, by_entry })
}

/// The sums of `q` (see `Store::match_stats`).
pub(crate) async fn match_stats(c: &mut Conn, q: &StatsQuery) -> Result<Vec<StatsRow>> {
    let (key, order) = match q.group {
        StatsGroup::Bank => ("bank_id", "matches DESC, bank_id"),
        StatsGroup::Entry => ("entry_id, bank_id", "matches DESC, entry_id"),
        StatsGroup::Source => ("source", "matches DESC, source"),
        StatsGroup::Day => ("day", "day"),
        StatsGroup::Signal => ("signal_type", "matches DESC, signal_type"),
    };
    // Optional filters as `$n IS NULL OR ...` would leave PostgreSQL guessing the parameter's
    // type; the clauses are added only when set, numbered in bind order.
    let mut filters = String::from("day >= $1 AND day <= $2");
    let mut n = 2;
    for (set, col) in [(q.bank_id.is_some(), "bank_id"), (q.entry_id.is_some(), "entry_id"), (q.source.is_some(), "source")] {
        if set {
            n += 1;
            filters.push_str(&format!(" AND {col} = ${n}"));
        }
    }
    if q.case_id.is_some() {
        n += 1;
        filters.push_str(&format!(" AND entry_id IN (SELECT id FROM entries WHERE case_id = ${n})"));
    }
    let sql = format!(
        "SELECT {key}, CAST(SUM(matches) AS BIGINT) AS matches, COUNT(DISTINCT entry_id) AS entries,
                COUNT(DISTINCT source) AS sources, COUNT(DISTINCT day) AS days,
                MIN(first_at) AS first_at, MAX(last_at) AS last_at
         FROM match_counts WHERE {filters}
         GROUP BY {key} ORDER BY {order} LIMIT ${}",
        n + 1
    );
    let mut query = sqlx::query::<Db>(&sql).bind(q.since_day).bind(q.until_day);
    if let Some(b) = q.bank_id {
        query = query.bind(b);
    }
    if let Some(e) = q.entry_id {
        query = query.bind(e);
    }
    if let Some(s) = &q.source {
        query = query.bind(s);
    }
    if let Some(case) = q.case_id {
        query = query.bind(case);
    }
    let rows = query.bind(i64::from(q.limit)).fetch_all(&mut *c).await?;
    rows.iter()
        .map(|r| {
            let key = match q.group {
                StatsGroup::Bank => StatsKey::Bank(r.try_get("bank_id")?),
                StatsGroup::Entry => StatsKey::Entry { id: r.try_get("entry_id")?, bank_id: r.try_get("bank_id")? },
                StatsGroup::Source => StatsKey::Source(r.try_get("source")?),
                StatsGroup::Day => StatsKey::Day(r.try_get("day")?),
                StatsGroup::Signal => {
                    StatsKey::Signal(r.try_get::<String, _>("signal_type")?.parse().map_err(internal)?)
                }
            };
            Ok(StatsRow {
                key,
                matches: r.try_get("matches")?,
                entries: r.try_get("entries")?,
                sources: r.try_get("sources")?,
                days: r.try_get("days")?,
                first_at: ts(r.try_get("first_at")?),
                last_at: ts(r.try_get("last_at")?),
            })
        })
        .collect()
}
