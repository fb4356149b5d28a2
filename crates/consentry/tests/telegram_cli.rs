//! The built `consentry telegram` binary against the fake Bot API server on loopback
//! (`--api-url`): it deletes a protected photo, leaves a benign one, and exits cleanly on SIGTERM
//! with the update offset saved.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use consentry_media::HashOptions;
use consentry_pdq::Hasher;
use consentry_store::{
    Actor, BankPurpose, EntrySourceKind, NewBank, NewEntry, SignalValue, Store, StoreOptions,
};
use consentry_telegram::fake::{self, FakeTelegram};
use serde_json::{json, Value};

fn testdata() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata/pdq-reference/reg-test-input");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!(
            "\n*** SKIPPED: ../shared/testdata is absent ({}) — telegram_cli did not run ***\n",
            p.display()
        );
        None
    }
}

/// The embedded store `consentry serve` would use, in `dir/data` (returned), with the PDQ hash of
/// `protected` in a known-abuse bank.
async fn protected_store(dir: &std::path::Path, protected: &[u8]) -> std::path::PathBuf {
    let hash =
        consentry_media::hash_bytes(protected, &HashOptions::default(), &mut Hasher::new()).unwrap().pdq.hash;
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let store = Store::open(
        consentry_store::StoreLocation::Sqlite(data.join(consentry_store::SQLITE_FILE_NAME)),
        StoreOptions::default(),
    )
    .await
    .unwrap();
    let bank = store
        .create_bank(
            &Actor::system(),
            NewBank {
                name: "known".into(),
                description: String::new(),
                enabled: true,
                purpose: BankPurpose::KnownAbuse,
            },
        )
        .await
        .unwrap();
    store
        .add_entry(
            &Actor::system(),
            NewEntry {
                bank_id: bank.id,
                value: SignalValue::Pdq(hash),
                quality: None,
                source: EntrySourceKind::Moderator,
                metadata: Value::Null,
            },
        )
        .await
        .unwrap();
    store.close().await;
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_binary_deletes_a_protected_photo_and_stops_on_sigterm() {
    let Some(base) = testdata() else { return };
    let protected = std::fs::read(base.join("dih/bridge-1-original.jpg")).unwrap();
    let benign = std::fs::read(base.join("labelme-subset/q0122.jpg")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = protected_store(dir.path(), &protected).await;

    let tg = FakeTelegram::start().await;
    tg.add_file("f-prot", "u-prot", protected);
    tg.add_file("f-benign", "u-benign", benign);
    let chat = -100_777;
    tg.push_update(fake::photo_update(chat, 10, 7, "f-prot", "u-prot"));
    tg.push_update(fake::photo_update(chat, 11, 8, "f-benign", "u-benign"));

    let log = std::fs::File::create(dir.path().join("bot.log")).unwrap();
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("consentry"))
        .args(["telegram", "--api-url", &tg.url(), "--action", "none", "--no-notice", "--data-dir"])
        .arg(&data)
        .env("CONSENTRY_TELEGRAM_TOKEN", fake::TOKEN)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let read_log = || std::fs::read_to_string(dir.path().join("bot.log")).unwrap_or_default();

    let deleted =
        tg.wait_for(Duration::from_secs(60), |calls| calls.iter().any(|c| c.method == "deleteMessage")).await;
    if !deleted {
        let _ = child.kill();
        panic!("no deleteMessage; bot log:\n{}", read_log());
    }
    // Both updates handled: the benign photo downloaded too, and the offset confirmed past them.
    let confirmed = tg
        .wait_for(Duration::from_secs(20), |calls| {
            calls.iter().any(|c| c.method == "getUpdates" && c.params["offset"].as_i64() >= Some(3))
        })
        .await;
    assert!(confirmed, "offset not advanced; log:\n{}", read_log());
    assert_eq!(tg.calls_to("deleteMessage"), vec![json!({ "chat_id": chat, "message_id": 10 })]);
    assert_eq!(tg.calls_to("getFile").len(), 2);
    assert!(tg.calls_to("banChatMember").is_empty() && tg.calls_to("restrictChatMember").is_empty());

    // SIGTERM while long polling: clean exit, state saved.
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let start = Instant::now();
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("the bot did not stop within 20 s of SIGTERM; log:\n{}", read_log());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let log_text = read_log();
    assert!(code.success(), "exit {code:?}; log:\n{log_text}");
    assert!(log_text.contains("bot stopped"), "{log_text}");
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("telegram-state.json")).unwrap()).unwrap();
    assert!(state["offset"].as_i64().unwrap() >= 3, "{state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_binary_in_webhook_mode_checks_the_secret_and_deletes() {
    let Some(base) = testdata() else { return };
    let protected = std::fs::read(base.join("dih/bridge-1-original.jpg")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = protected_store(dir.path(), &protected).await;
    let tg = FakeTelegram::start().await;
    tg.add_file("f-prot", "u-prot", protected);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/tg/hook");
    let log = std::fs::File::create(dir.path().join("bot.log")).unwrap();
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("consentry"))
        .args(["telegram", "--api-url", &tg.url(), "--action", "none", "--no-notice"])
        .args(["--webhook-listen", &format!("127.0.0.1:{port}"), "--webhook-url", &url, "--data-dir"])
        .arg(&data)
        .env("CONSENTRY_TELEGRAM_TOKEN", fake::TOKEN)
        .env("CONSENTRY_WEBHOOK_SECRET", "cli_secret-1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let read_log = || std::fs::read_to_string(dir.path().join("bot.log")).unwrap_or_default();
    let registered =
        tg.wait_for(Duration::from_secs(60), |calls| calls.iter().any(|c| c.method == "setWebhook")).await;
    if !registered {
        let _ = child.kill();
        panic!("no setWebhook; log:\n{}", read_log());
    }
    assert_eq!(tg.calls_to("setWebhook")[0]["secret_token"], json!("cli_secret-1"));
    let mut update = fake::photo_update(-100_778, 10, 7, "f-prot", "u-prot");
    update["update_id"] = json!(1);
    let http = reqwest::Client::new();
    let wrong =
        http.post(&url).header("X-Telegram-Bot-Api-Secret-Token", "nope").json(&update).send().await.unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    assert!(tg.calls_to("deleteMessage").is_empty());
    let right = http
        .post(&url)
        .header("X-Telegram-Bot-Api-Secret-Token", "cli_secret-1")
        .json(&update)
        .send()
        .await
        .unwrap();
    assert_eq!(right.status().as_u16(), 200);
    assert_eq!(tg.calls_to("deleteMessage"), vec![json!({ "chat_id": -100_778, "message_id": 10 })]);
    assert!(tg.calls_to("getUpdates").is_empty());
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let start = Instant::now();
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("the bot did not stop within 20 s of SIGTERM; log:\n{}", read_log());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(code.success(), "exit {code:?}; log:\n{}", read_log());
}

#[test]
fn an_unknown_derive_policy_is_refused_with_the_choices() {
    let out = Command::new(assert_cmd::cargo::cargo_bin("consentry"))
        .env("CONSENTRY_TELEGRAM_TOKEN", "123:test")
        .args(["telegram", "--api-url", "http://127.0.0.1:9", "--derive-policy", "maybe"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown derive policy `maybe` (act, delete, report)"), "{err}");
}
