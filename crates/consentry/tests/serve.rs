//! `consentry serve` as a real process on a real socket: defaults, keys, bulk import/export,
//! lookups, survivor cases, SIGTERM; and SIGKILL during bulk imports and case submissions over
//! HTTP, after which every acknowledged write must be there.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use consentry_pdq::Hash256;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_consentry");

/// Pseudo-random hashes with about 128 one bits (not degenerate).
fn hashes(seed: u64, n: usize) -> Vec<Hash256> {
    let mut s = seed;
    let mut next = move || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut out = Vec::new();
    while out.len() < n {
        let h = Hash256::from_words([next(), next(), next(), next()]);
        if (100..=156).contains(&h.count_ones()) {
            out.push(h);
        }
    }
    out
}

pub(crate) fn create_key(dir: &Path, scope: &str) -> String {
    let out = std::process::Command::new(BIN)
        .args(["keys", "create", "--name", "test", "--scope", scope, "--data-dir"])
        .arg(dir)
        .output()
        .expect("run consentry keys create");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(secret.starts_with("csk_"), "{secret}");
    secret
}

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) base: String,
}

/// Starts `consentry serve --listen 127.0.0.1:0 ARGS` and waits for its address line.
pub(crate) async fn start(args: &[&str], envs: &[(&str, &str)]) -> Server {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve").args(["--listen", "127.0.0.1:0"]).args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.env("RUST_LOG", "warn").stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn consentry serve");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("serve did not print its address in 30 s")
        .unwrap()
        .expect("serve exited before listening");
    let base = line.strip_prefix("consentry listening on ").expect(&line).to_owned();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Server { child, base }
}

pub(crate) async fn call(
    c: &reqwest::Client,
    m: reqwest::Method,
    url: String,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = c.request(m, url);
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.expect("request");
    let s = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (s, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

pub(crate) async fn matches(c: &reqwest::Client, base: &str, key: &str, h: &Hash256) -> usize {
    let (s, v) =
        call(c, reqwest::Method::GET, format!("{base}/v1/lookup?hash={}", h.to_hex()), Some(key), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["query"]["hash"], h.to_hex(), "the reply echoes the query hash");
    v["matches"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_defaults_import_export_cases_and_sigterm_over_a_real_socket() {
    let tmp = tempfile::tempdir().unwrap();
    // No arguments but the port: the default data directory is ./consentry-data.
    let cwd = tmp.path();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(cwd)
        .env_remove("CONSENTRY_DATA_DIR")
        .env_remove("CONSENTRY_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line =
        tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.unwrap().unwrap().unwrap();
    let base = line.strip_prefix("consentry listening on ").unwrap().to_owned();
    let c = reqwest::Client::new();
    let (s, v) = call(&c, reqwest::Method::GET, format!("{base}/health"), None, None).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ok")));
    let data = cwd.join("consentry-data");
    assert!(data.join("consentry.db").exists(), "the default store is ./consentry-data/consentry.db");
    // Without a key: 401 with a stable code.
    let (s, v) = call(&c, reqwest::Method::GET, format!("{base}/v1/banks"), None, None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (401, Some("missing_api_key")));

    // The first admin key, from the CLI, while the server runs.
    let admin = create_key(&data, "admin");
    let (s, v) = call(
        &c,
        reqwest::Method::POST,
        format!("{base}/v1/banks"),
        Some(&admin),
        Some(json!({"name": "known"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");

    // Bulk import in Meta's pdq-photo-hasher layout: good lines kept, bad ones reported by line.
    let hs = hashes(1, 4);
    let csv = format!(
        "{},90,a.jpg\n{},100,b.jpg\nnot-a-hash,50,c.jpg\n{},90,zero.jpg\n{},10,lowq.jpg\n\n{}\n",
        hs[0].to_hex(),
        hs[1].to_hex(),
        "0".repeat(64),
        hs[2].to_hex(),
        hs[3].to_hex()
    );
    let resp = c
        .post(format!("{base}/v1/banks/known/import?format=csv"))
        .bearer_auth(&admin)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["added"], 3, "{v}");
    let rejected: Vec<(u64, String)> = v["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["line"].as_u64().unwrap(), r["reason"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(rejected.iter().map(|r| r.0).collect::<Vec<_>>(), vec![3, 4, 5], "{v}");
    assert!(rejected[0].1.contains("not a PDQ hash"), "{rejected:?}");
    assert!(rejected[1].1.contains("all bits are zero"), "{rejected:?}");
    assert!(rejected[2].1.contains("quality 10 is below"), "{rejected:?}");

    let lookup = create_key(&data, "lookup");
    let deadline = Instant::now() + Duration::from_secs(2);
    while matches(&c, &base, &lookup, &hs[0]).await == 0 {
        assert!(Instant::now() < deadline, "imported hashes must match within 1 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(matches(&c, &base, &lookup, &hs[2]).await, 0, "the low-quality line was not imported");

    // Export (HMA's `pdq <hash>` lines) and re-import into another bank: the same hashes.
    let text = c
        .get(format!("{base}/v1/banks/known/export?format=hma"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut got: Vec<&str> = text.lines().collect();
    got.sort_unstable();
    let mut want: Vec<String> = [hs[0], hs[1], hs[3]].iter().map(|h| format!("pdq {}", h.to_hex())).collect();
    want.sort();
    assert_eq!(got, want);

    // A survivor's case, then its withdrawal: the hash stops matching within a second.
    let mine = hashes(2, 1)[0];
    let (s, v) = call(
        &c,
        reqwest::Method::POST,
        format!("{base}/v1/cases"),
        None,
        Some(json!({"hashes": [mine.to_hex()]})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (number, pin) =
        (v["case_number"].as_str().unwrap().to_owned(), v["pin"].as_str().unwrap().to_owned());
    let deadline = Instant::now() + Duration::from_secs(2);
    while matches(&c, &base, &lookup, &mine).await == 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (s, _) = call(
        &c,
        reqwest::Method::POST,
        format!("{base}/v1/cases/{number}/withdraw"),
        None,
        Some(json!({"pin": pin})),
    )
    .await;
    assert_eq!(s, 200);
    let t = Instant::now();
    while matches(&c, &base, &lookup, &mine).await != 0 {
        assert!(t.elapsed() < Duration::from_secs(1), "withdrawn hashes must stop matching within 1 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // SIGTERM: a clean exit.
    let pid = child.id().unwrap() as i32;
    assert_eq!(send_signal(pid, 15), 0);
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("exit after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");

    // What was caught, from the CLI: the lookups above matched the imported hash and the case's
    // (each polled until it matched), all with the key named `test`.
    let stats = |args: &[&str]| {
        let out = std::process::Command::new(BIN)
            .arg("stats")
            .args(args)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .expect("run consentry stats");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, text, err) = stats(&["--by", "bank"]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines[0], vec!["bank", "matches", "entries", "sources", "days", "first", "last"]);
    let banks: Vec<&str> = lines[1..].iter().map(|l| l[0]).collect();
    assert_eq!(banks.len(), 2, "{text}");
    assert!(banks.contains(&"known") && banks.contains(&"survivors"), "{text}");
    assert!(
        lines[1..].iter().all(|l| l[1].parse::<u64>().unwrap() >= 1 && l[2] == "1" && l[3] == "1"),
        "{text}"
    );
    let (code, text, err) = stats(&["--by", "source", "--bank", "known"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(text.lines().nth(1).map(|l| l.split('\t').next()), Some(Some("test")), "{text}");
    let (code, _, err) = stats(&["--by", "everything"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("unknown grouping"), "{err}");
    let (code, _, err) = stats(&["--since", "2026-02-30"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("`since` is not a date"), "{err}");
}

fn send_signal(pid: i32, sig: i32) -> i32 {
    std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .map(|s| if s.success() { 0 } else { 1 })
        .unwrap_or(1)
}

/// Kills `serve` with SIGKILL while bulk imports and case submissions are in flight, twice;
/// restarts it on the same data directory; every write the server acknowledged is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_imports_and_case_submissions_loses_no_acknowledged_write() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data_s = data.to_str().unwrap().to_owned();
    let c = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    let mut acked_imports: Vec<Vec<Hash256>> = Vec::new();
    let mut acked_cases: Vec<(String, String, Hash256)> = Vec::new();
    let mut seed = 100;
    std::fs::create_dir_all(&data).unwrap();
    let admin = create_key(&data, "admin");
    for round in 0..2 {
        let srv = start(&["--data-dir", &data_s, "--case-rate-limit", "0"], &[]).await;
        if round == 0 {
            let (s, v) = call(
                &c,
                reqwest::Method::POST,
                format!("{}/v1/banks", srv.base),
                Some(&admin),
                Some(json!({"name": "imports"})),
            )
            .await;
            assert_eq!(s, 201, "{v}");
        }
        let pid = srv.child.id().unwrap() as i32;
        // Writers: one task importing 300-line batches, one submitting cases; each records
        // what the server acknowledged.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<
            Result<(Option<Vec<Hash256>>, Option<(String, String, Hash256)>), ()>,
        >();
        let mut tasks = Vec::new();
        for kind in 0..2 {
            let (c, base, admin, tx) = (c.clone(), srv.base.clone(), admin.clone(), tx.clone());
            seed += 1000;
            let mut my_seed = seed;
            tasks.push(tokio::spawn(async move {
                loop {
                    my_seed += 1;
                    if kind == 0 {
                        let hs = hashes(my_seed, 300);
                        let body: String = hs.iter().map(|h| format!("{}\n", h.to_hex())).collect();
                        let r = c
                            .post(format!("{base}/v1/banks/imports/import"))
                            .bearer_auth(&admin)
                            .body(body)
                            .send()
                            .await;
                        match r {
                            Ok(r) if r.status() == 200 => {
                                let v: Value = match r.json().await {
                                    Ok(v) => v,
                                    Err(_) => return,
                                };
                                assert_eq!(v["added"], 300, "{v}");
                                let _ = tx.send(Ok((Some(hs), None)));
                            }
                            _ => return,
                        }
                    } else {
                        let h = hashes(my_seed, 1)[0];
                        let r = c
                            .post(format!("{base}/v1/cases"))
                            .json(&json!({"hashes": [h.to_hex()]}))
                            .send()
                            .await;
                        match r {
                            Ok(r) if r.status() == 201 => {
                                let v: Value = match r.json().await {
                                    Ok(v) => v,
                                    Err(_) => return,
                                };
                                let n = v["case_number"].as_str().unwrap().to_owned();
                                let p = v["pin"].as_str().unwrap().to_owned();
                                let _ = tx.send(Ok((None, Some((n, p, h)))));
                            }
                            _ => return,
                        }
                    }
                }
            }));
        }
        drop(tx);
        // Let a few writes of each kind be acknowledged, then SIGKILL mid-flight.
        let (mut imports, mut cases) = (0, 0);
        let deadline = Instant::now() + Duration::from_secs(60);
        while imports < 3 || cases < 3 {
            match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
                Ok(Some(Ok((Some(hs), _)))) => {
                    imports += 1;
                    acked_imports.push(hs);
                }
                Ok(Some(Ok((_, Some(cs))))) => {
                    cases += 1;
                    acked_cases.push(cs);
                }
                other => panic!("writers stopped early: {other:?}"),
            }
            assert!(Instant::now() < deadline);
        }
        assert_eq!(send_signal(pid, 9), 0);
        // Whatever was acknowledged before the process died counts too.
        while let Some(Ok((i, cs))) = rx.recv().await {
            if let Some(hs) = i {
                acked_imports.push(hs);
            }
            if let Some(cs) = cs {
                acked_cases.push(cs);
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        let mut child = srv.child;
        let _ = child.wait().await;
    }

    // Restart on the same data directory and check every acknowledged write.
    let srv = start(&["--data-dir", &data_s, "--case-rate-limit", "0"], &[]).await;
    let all: Vec<Hash256> = acked_imports.iter().flatten().copied().collect();
    assert!(all.len() >= 6 * 300 && acked_cases.len() >= 6);
    for chunk in all.chunks(5000) {
        let (s, v) = call(
            &c,
            reqwest::Method::POST,
            format!("{}/v1/lookup", srv.base),
            Some(&admin),
            Some(json!({"hashes": chunk.iter().map(|h| h.to_hex()).collect::<Vec<_>>(), "radius": 0})),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        for r in v["results"].as_array().unwrap() {
            let banks: Vec<&str> =
                r["matches"].as_array().unwrap().iter().filter_map(|m| m["bank"].as_str()).collect();
            assert!(banks.contains(&"imports"), "acknowledged imported hash {} is missing", r["hash"]);
        }
    }
    for (number, pin, h) in &acked_cases {
        let (s, v) = call(
            &c,
            reqwest::Method::POST,
            format!("{}/v1/cases/{number}/status", srv.base),
            None,
            Some(json!({"pin": pin})),
        )
        .await;
        assert_eq!(s, 200, "acknowledged case {number} lost: {v}");
        assert_eq!(v["hashes"][0]["hash"], h.to_hex());
        assert_eq!(v["hashes"][0]["active"], true);
    }
    // Interrupted imports are whole or absent: the bank holds a multiple of 300 entries... per
    // 5,000-line chunk; with 300-line batches every batch is one transaction.
    let text = c
        .get(format!("{}/v1/banks/imports/export?format=hma", srv.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text.lines().count() % 300, 0, "a batch was half committed");
    assert!(text.lines().count() >= all.len());
}

// ---------------------------------------------------------------------------------------------
// Two `serve` processes on one PostgreSQL database.

/// The PostgreSQL server the store suite uses (`CONSENTRY_TEST_PG_URL` overrides).
fn pg_url() -> String {
    std::env::var("CONSENTRY_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Drops the test's schema (and everything in it) when the test ends, pass or fail.
struct PgSchema(String);

impl Drop for PgSchema {
    fn drop(&mut self) {
        let (url, schema) = (pg_url(), self.0.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                use sqlx::Connection;
                if let Ok(mut c) = sqlx::PgConnection::connect(&url).await {
                    let _ = sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                        .execute(&mut c)
                        .await;
                    let _ = c.close().await;
                }
            })
        })
        .join();
    }
}

/// A fresh schema in the `test` database; panics (never skips) when PostgreSQL is not there.
async fn pg_schema() -> PgSchema {
    use sqlx::Connection;
    let url = pg_url();
    if let Err(e) = sqlx::PgConnection::connect(&url).await {
        panic!(
            "PostgreSQL is not reachable at {url} ({e}); this test needs it (start it with \
             `pg_ctlcluster --skip-systemctl-redirect 15 main start` or set CONSENTRY_TEST_PG_URL)"
        );
    }
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    PgSchema(format!("t_serve_{:x}_{:x}", std::process::id(), nanos & 0xffff_ffff_ffff))
}

/// `index_entries` from `/ready` (what the process's in-memory index holds).
async fn index_entries(c: &reqwest::Client, base: &str) -> u64 {
    let (s, v) = call(c, reqwest::Method::GET, format!("{base}/ready"), None, None).await;
    assert_eq!(s, 200, "{v}");
    v["index_entries"].as_u64().unwrap()
}

/// Polls `cond` every 10 ms until it holds; returns the time it took, failing after `limit`.
async fn within<F, Fut>(limit: Duration, what: &str, mut cond: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    loop {
        if cond().await {
            return t.elapsed();
        }
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Two `serve` processes on the same PostgreSQL database (one schema): a write through one is
/// matched, or stops matching, through the other within 1 s, in both directions — entries
/// added and disabled, a bulk import, a survivor's case and its withdrawal. Each process's own
/// index follows the other's writes (the `/ready` entry counts), not only the store check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serve_processes_on_one_postgres_database_see_each_others_writes_within_1s() {
    let schema = pg_schema().await;
    let url = pg_url();
    let store_args = ["--database-url", url.as_str(), "--schema", schema.0.as_str()];
    let out = std::process::Command::new(BIN)
        .args(["keys", "create", "--name", "test", "--scope", "admin"])
        .args(store_args)
        .output()
        .expect("run consentry keys create");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let admin = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let mut args = store_args.to_vec();
    args.extend(["--case-rate-limit", "0"]);
    let a = start(&args, &[]).await;
    let b = start(&args, &[]).await;
    let (a, b) = (a.base.clone(), b.base.clone());
    let c = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    let second = Duration::from_secs(1);

    // A bank and an entry, created through A: B matches it within 1 s.
    let (s, v) = call(
        &c,
        reqwest::Method::POST,
        format!("{a}/v1/banks"),
        Some(&admin),
        Some(json!({"name": "shared"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let hs = hashes(77, 3);
    let (s, v) = call(
        &c,
        reqwest::Method::POST,
        format!("{a}/v1/banks/shared/entries"),
        Some(&admin),
        Some(json!({"hash": hs[0].to_hex()})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_i64().expect("entry id");
    let took = within(second, "B matches an entry added through A", || async {
        matches(&c, &b, &admin, &hs[0]).await == 1
    })
    .await;
    eprintln!("entry added through A matched through B after {took:?}");
    let (s, v) =
        call(&c, reqwest::Method::GET, format!("{b}/v1/lookup?hash={}", hs[0].to_hex()), Some(&admin), None)
            .await;
    assert_eq!(s, 200);
    assert_eq!(v["matches"][0]["entry_id"].as_i64(), Some(id), "{v}");

    // Disabled through B: A stops matching within 1 s, and A's index drops it. (A indexes its
    // own write through the feed too: wait for that first, so the count below means something.)
    within(second, "A indexes the entry added through A", || async { index_entries(&c, &a).await == 1 })
        .await;
    let (s, v) =
        call(&c, reqwest::Method::POST, format!("{b}/v1/entries/{id}/disable"), Some(&admin), None).await;
    assert_eq!(s, 200, "{v}");
    let took = within(second, "A stops matching an entry disabled through B", || async {
        matches(&c, &a, &admin, &hs[0]).await == 0
    })
    .await;
    eprintln!("entry disabled through B stopped matching through A after {took:?}");
    within(second, "A's index drops the entry disabled through B", || async {
        index_entries(&c, &a).await == 0
    })
    .await;
    // Enabled again through A: B matches it again.
    let (s, v) =
        call(&c, reqwest::Method::POST, format!("{a}/v1/entries/{id}/enable"), Some(&admin), None).await;
    assert_eq!(s, 200, "{v}");
    within(second, "B matches an entry enabled again through A", || async {
        matches(&c, &b, &admin, &hs[0]).await == 1
    })
    .await;

    // A bulk import through B: A matches every line within 1 s.
    let body: String = hs[1..].iter().map(|h| format!("{}\n", h.to_hex())).collect();
    let r =
        c.post(format!("{b}/v1/banks/shared/import")).bearer_auth(&admin).body(body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["added"], 2, "{v}");
    within(second, "A matches hashes imported through B", || async {
        matches(&c, &a, &admin, &hs[1]).await == 1 && matches(&c, &a, &admin, &hs[2]).await == 1
    })
    .await;

    // A survivor's case submitted through A matches through B within 1 s; withdrawn through B,
    // it stops matching through A within 1 s.
    let mine = hashes(78, 1)[0];
    let (s, v) = call(
        &c,
        reqwest::Method::POST,
        format!("{a}/v1/cases"),
        None,
        Some(json!({"hashes": [mine.to_hex()]})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (number, pin) =
        (v["case_number"].as_str().unwrap().to_owned(), v["pin"].as_str().unwrap().to_owned());
    let took = within(second, "B matches a case submitted through A", || async {
        matches(&c, &b, &admin, &mine).await == 1
    })
    .await;
    eprintln!("case submitted through A matched through B after {took:?}");
    within(second, "A indexes the case submitted through A", || async { index_entries(&c, &a).await == 4 })
        .await;
    let (s, v) = call(
        &c,
        reqwest::Method::POST,
        format!("{b}/v1/cases/{number}/withdraw"),
        None,
        Some(json!({"pin": pin})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let took = within(second, "A stops matching a case withdrawn through B", || async {
        matches(&c, &a, &admin, &mine).await == 0
    })
    .await;
    eprintln!("case withdrawn through B stopped matching through A after {took:?}");
    within(second, "A's index drops the withdrawn case's hash", || async {
        index_entries(&c, &a).await == 3
    })
    .await;
    // Both processes agree on what is indexed.
    within(second, "A and B index the same entries", || async {
        index_entries(&c, &a).await == index_entries(&c, &b).await
    })
    .await;
}
