//! Durability: a child process does bulk imports, case submissions and withdrawals, printing
//! each acknowledged write; it is SIGKILLed while a write is in flight; the store is reopened
//! and every acknowledged write must be there, and the write in flight must be all or nothing.
//! Runs against SQLite and PostgreSQL.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::{random_pdq, Kind, SchemaGuard};
use consentry_store::*;

const CHILD_ENV: &str = "CONSENTRY_CRASH_CHILD";
const BULK_LINES: usize = 200;
const CASE_HASHES: usize = 3;

fn say(line: &str) {
    // Straight to the pipe (bypassing the test harness's capture), flushed before the next write.
    // The marker separates our lines from the harness's ("test crash::crash_child ... " has no newline).
    let mut out = std::io::stdout().lock();
    out.write_all(b"@@ ").unwrap();
    out.write_all(line.as_bytes()).unwrap();
    out.write_all(b"\n").unwrap();
    out.flush().unwrap();
}

#[test]
#[ignore = "child process of the crash tests (they run it with --ignored)"]
fn crash_child() {
    let spec = std::env::var(CHILD_ENV).expect("crash_child is run by the crash tests");
    let location = if let Some(path) = spec.strip_prefix("sqlite:") {
        StoreLocation::Sqlite(path.into())
    } else if let Some(schema) = spec.strip_prefix("postgres:") {
        StoreLocation::Postgres { url: common::pg_url(), schema: Some(schema.to_owned()) }
    } else {
        panic!("bad spec {spec}");
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let store = Store::open(location, StoreOptions::default()).await.unwrap();
        let actor = Actor::named("crash-child");
        // A second run reopens the database the first one was killed on.
        let bank = match store.get_bank_by_name("crash").await {
            Ok(b) => b,
            Err(StoreError::NotFound(_)) => store
                .create_bank(
                    &actor,
                    NewBank {
                        name: "crash".into(),
                        description: String::new(),
                        enabled: true,
                        purpose: BankPurpose::SurvivorProtected,
                    },
                )
                .await
                .unwrap(),
            Err(e) => panic!("{e}"),
        };
        say(&format!("bank {}", bank.id));
        let mut cases: Vec<(String, String)> = Vec::new();
        for i in 0u64.. {
            match i % 5 {
                1 | 3 => {
                    let hashes = (0..CASE_HASHES).map(|_| CaseHash::pdq(random_pdq(), None)).collect();
                    say("begin case");
                    let c = store
                        .create_case(
                            &actor,
                            NewCase { bank_id: bank.id, hashes, metadata: serde_json::Value::Null },
                        )
                        .await
                        .unwrap();
                    let ids: Vec<String> = c.entries.iter().map(|e| e.id.to_string()).collect();
                    say(&format!("case {} {} {}", c.case.number, c.pin, ids.join(" ")));
                    cases.push((c.case.number, c.pin));
                }
                4 if cases.len() >= 2 => {
                    let (number, pin) = cases.remove(0);
                    say("begin withdraw");
                    store.withdraw_case(&number, &pin).await.unwrap();
                    say(&format!("withdrawn {number}"));
                }
                _ => {
                    let lines = (0..BULK_LINES)
                        .map(|l| BulkLine {
                            line: l as u64 + 1,
                            value: SignalValue::Pdq(random_pdq()),
                            quality: Some(90),
                            metadata: serde_json::Value::Null,
                        })
                        .collect();
                    say("begin bulk");
                    let r = store
                        .add_entries_bulk(&actor, bank.id, EntrySourceKind::Import, lines)
                        .await
                        .unwrap();
                    let ids: Vec<String> = r.added.iter().map(|a| a.1.to_string()).collect();
                    say(&format!("entries {}", ids.join(" ")));
                }
            }
        }
    });
}

#[derive(Debug, Default)]
struct Acked {
    bank: Option<i64>,
    entries: BTreeSet<i64>,
    cases: BTreeMap<String, (String, Vec<i64>)>,
    withdrawn: BTreeSet<String>,
    writes: usize,
}

impl Acked {
    fn take(&mut self, line: &str) {
        let Some((_, line)) = line.split_once("@@ ") else { return };
        let mut f = line.split_whitespace();
        match f.next() {
            Some("bank") => {
                let id = f.next().unwrap().parse().unwrap();
                assert!(self.bank.is_none() || self.bank == Some(id), "bank changed between runs");
                self.bank = Some(id);
            }
            Some("entries") => {
                let ids: Vec<i64> = f.map(|x| x.parse().unwrap()).collect();
                assert_eq!(ids.len(), BULK_LINES);
                self.entries.extend(ids);
                self.writes += 1;
            }
            Some("case") => {
                let number = f.next().unwrap().to_owned();
                let pin = f.next().unwrap().to_owned();
                let ids: Vec<i64> = f.map(|x| x.parse().unwrap()).collect();
                assert_eq!(ids.len(), CASE_HASHES);
                self.cases.insert(number, (pin, ids));
                self.writes += 1;
            }
            Some("withdrawn") => {
                self.withdrawn.insert(f.next().unwrap().to_owned());
                self.writes += 1;
            }
            _ => {} // "begin …" and the test harness's own lines
        }
    }
}

/// Runs the child until it has acknowledged `min_writes` writes, then SIGKILLs it right after
/// it announced a write of kind `kill_during` (`bulk`, `case`). Adds what it acknowledged to
/// `acked`.
fn run_and_kill(spec: &str, min_writes: usize, kill_during: &str, acked: &mut Acked) {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["crash::crash_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, spec)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let start_writes = acked.writes;
    let kill_line = format!("@@ begin {kill_during}");
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let line = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(l) => l,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some(status) = child.try_wait().unwrap() {
                    panic!("crash child exited on its own ({status}) after {} writes", acked.writes);
                }
                assert!(Instant::now() < deadline, "crash child too slow: {} writes", acked.writes);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("crash child closed stdout early"),
        };
        acked.take(&line);
        if acked.writes - start_writes >= min_writes && line.contains(&kill_line) {
            // A write is in flight now. A random delay lands the kill in different phases over
            // runs: PIN hashing (~30 ms) or the transaction for cases, the inserts for bulks.
            let delay = rand::Rng::gen_range(&mut rand::thread_rng(), 0..40);
            std::thread::sleep(Duration::from_millis(delay));
            child.kill().unwrap(); // SIGKILL
            break;
        }
    }
    let status = child.wait().unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "child must die by SIGKILL, got {status}");
    }
    // Lines already written to the pipe before the kill are acknowledgements too.
    for line in rx.iter() {
        acked.take(&line);
    }
    reader.join().unwrap();
}

async fn verify(store: &Store, acked: &Acked) {
    let bank = acked.bank.expect("bank acknowledged");
    let active: BTreeMap<i64, SignalValue> =
        store.load_all_active(SignalType::Pdq).await.unwrap().entries.into_iter().collect();
    for id in &acked.entries {
        let e = store.get_entry(*id).await.unwrap_or_else(|e| panic!("acknowledged entry {id} lost: {e}"));
        assert_eq!(e.bank_id, bank);
        assert!(active.contains_key(id), "acknowledged entry {id} is not active");
    }
    for (number, (pin, ids)) in &acked.cases {
        let view = store
            .case_status(number, pin)
            .await
            .unwrap_or_else(|e| panic!("acknowledged case {number} lost or PIN broken: {e}"));
        assert_eq!(view.entries.iter().map(|e| e.id).collect::<Vec<_>>(), *ids);
        if acked.withdrawn.contains(number) {
            assert_eq!(view.case.status, CaseStatus::Withdrawn, "acknowledged withdrawal of {number} lost");
            assert!(ids.iter().all(|id| !active.contains_key(id)), "withdrawn case {number} still matches");
        } else {
            assert!(ids.iter().all(|id| active.contains_key(id)), "case {number} entries not active");
        }
    }
    // The feed survived too: gapless, and replaying it from zero gives the active set.
    let seq = store.current_seq().await.unwrap();
    let feed = store.changes_since(0, u32::MAX).await.unwrap();
    assert_eq!(feed.len() as i64, seq);
    let mut replay = BTreeMap::new();
    for (i, c) in feed.iter().enumerate() {
        assert_eq!(c.seq, i as i64 + 1);
        match &c.op {
            ChangeOp::Activate(v) => {
                replay.insert(c.entry_id, v.clone());
            }
            ChangeOp::Deactivate(_) => {
                replay.remove(&c.entry_id);
            }
        }
    }
    assert_eq!(replay, active, "change feed disagrees with the tables after the crash");
}

async fn raw_counts_sqlite(path: &std::path::Path) -> (i64, Vec<i64>, String) {
    use sqlx::Connection;
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    let imports: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM entries WHERE source = 'import'")
        .fetch_one(&mut c)
        .await
        .unwrap();
    let per_case: Vec<i64> = sqlx::query_scalar(
        "SELECT COUNT(e.id) FROM cases c LEFT JOIN entries e ON e.case_id = c.id GROUP BY c.id",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    let check: String = sqlx::query_scalar("PRAGMA integrity_check").fetch_one(&mut c).await.unwrap();
    (imports, per_case, check)
}

async fn raw_counts_pg(schema: &str) -> (i64, Vec<i64>) {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(&common::pg_url()).await.unwrap();
    sqlx::raw_sql(&format!("SET search_path TO {schema}")).execute(&mut c).await.unwrap();
    let imports: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM entries WHERE source = 'import'")
        .fetch_one(&mut c)
        .await
        .unwrap();
    let per_case: Vec<i64> = sqlx::query_scalar(
        "SELECT COUNT(e.id) FROM cases c LEFT JOIN entries e ON e.case_id = c.id GROUP BY c.id",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    (imports, per_case)
}

fn check_atomic(acked: &Acked, imports: i64, per_case: &[i64]) {
    assert_eq!(imports % BULK_LINES as i64, 0, "a bulk import was half committed: {imports} import entries");
    assert!(imports as usize >= acked.entries.len());
    assert!(per_case.iter().all(|&n| n == CASE_HASHES as i64), "a case was half committed: {per_case:?}");
    assert!(per_case.len() >= acked.cases.len());
}

#[test]
fn sqlite_acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("consentry.db");
    let spec = format!("sqlite:{}", path.display());
    let mut acked = Acked::default();
    run_and_kill(&spec, 12, "bulk", &mut acked);
    run_and_kill(&spec, 6, "case", &mut acked);
    assert!(acked.writes >= 18 && !acked.cases.is_empty() && !acked.withdrawn.is_empty(), "{acked:?}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (imports, per_case, integrity) = raw_counts_sqlite(&path).await;
        assert_eq!(integrity, "ok");
        check_atomic(&acked, imports, &per_case);
        let store = Store::open(StoreLocation::Sqlite(path.clone()), StoreOptions::default()).await.unwrap();
        verify(&store, &acked).await;
        store.close().await;
    });
}

#[test]
fn postgres_acknowledged_writes_survive_sigkill() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(common::require_postgres());
    let schema = common::random_schema();
    let _guard = SchemaGuard(Some(schema.clone()));
    let spec = format!("postgres:{schema}");
    let mut acked = Acked::default();
    run_and_kill(&spec, 12, "bulk", &mut acked);
    run_and_kill(&spec, 6, "case", &mut acked);
    assert!(acked.writes >= 18 && !acked.cases.is_empty() && !acked.withdrawn.is_empty(), "{acked:?}");
    rt.block_on(async {
        // The killed client's backend rolls back its open transaction when it notices the
        // dropped connection; wait for that before counting.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (imports, per_case) = raw_counts_pg(&schema).await;
        check_atomic(&acked, imports, &per_case);
        let store = Store::open(
            StoreLocation::Postgres { url: common::pg_url(), schema: Some(schema.clone()) },
            StoreOptions::default(),
        )
        .await
        .unwrap();
        verify(&store, &acked).await;
        store.close().await;
    });
}

#[allow(dead_code)]
fn _kind_is_used(_: Kind) {}
