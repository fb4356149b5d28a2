//! End to end: the bot (embedded store + index, or a remote `consentry serve`) against a fake
//! Bot API server on loopback that serves scripted updates and real JPEG bytes from
//! `../shared/testdata`, and records every call. The tests assert the exact moderation calls.

use crate::common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use consentry_media::HashOptions;
use consentry_pdq::{Hash256, Hasher};
use consentry_server::{AppState, ServerConfig};
use consentry_store::{
    Actor, BankPurpose, EntrySourceKind, NewBank, NewEntry, Scope, SignalValue, Store, StoreOptions,
};
use consentry_telegram::fake::{self, FakeTelegram, FileSpec, Scripted};
use consentry_telegram::{Action, ApiOptions, BotApi, BotConfig, Matcher, RateLimits, StateFile};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const GROUP: i64 = -1_001_234;
const LOG: i64 = -1_009_999;
const ADMIN: i64 = 500;

fn testdata() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata/pdq-reference/reg-test-input");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("\n*** SKIPPED: ../shared/testdata is absent ({}) — the Telegram end-to-end tests did not run ***\n", p.display());
        None
    }
}

fn jpeg(name: &str) -> Vec<u8> {
    let base = testdata().expect("checked by the caller");
    let p = if name.starts_with('q') {
        base.join("labelme-subset").join(name)
    } else {
        base.join("dih").join(name)
    };
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn pdq(bytes: &[u8]) -> Hash256 {
    consentry_media::hash_bytes(bytes, &HashOptions::default(), &mut Hasher::new()).unwrap().pdq.hash
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// The protected image of every test.
const PROTECTED: &str = "bridge-1-original.jpg";

struct Env {
    fake: FakeTelegram,
    app: AppState,
    _dir: tempfile::TempDir,
    state_path: PathBuf,
    bot: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
    config: BotConfig,
    api_opts: ApiOptions,
    matcher: Option<Matcher>,
}

fn fast_api() -> ApiOptions {
    ApiOptions {
        request_timeout: Duration::from_millis(1500),
        max_retries: 3,
        backoff_base: Duration::from_millis(30),
        backoff_max: Duration::from_millis(200),
        max_429_retries: 3,
        max_retry_after: Duration::from_secs(2),
    }
}

fn test_config() -> BotConfig {
    BotConfig {
        poll_timeout_secs: 1,
        poll_backoff: Duration::from_millis(30),
        rate: RateLimits { per_chat_burst: 50, per_chat_per_minute: 600, global_per_second: 100 },
        ..BotConfig::default()
    }
}

impl Env {
    /// A store with bank `known` holding the hash of [`PROTECTED`], the index over it, a fake
    /// Bot API server serving the test images, and a state file. `None` without test data.
    async fn new() -> Option<Env> {
        testdata()?;
        init_logs();
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            pin_kdf: consentry_store::PinKdf { memory_kib: 1024, iterations: 1, parallelism: 1 },
            ..StoreOptions::default()
        };
        let store =
            Store::open(consentry_store::StoreLocation::Sqlite(dir.path().join("c.db")), opts).await.unwrap();
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
                    value: SignalValue::Pdq(pdq(&jpeg(PROTECTED))),
                    quality: None,
                    source: EntrySourceKind::Moderator,
                    metadata: Value::Null,
                },
            )
            .await
            .unwrap();
        let app = AppState::start(
            store,
            ServerConfig {
                poll_interval: Duration::from_millis(20),
                // Case events stay in the outbox (no sender), for the tests to read.
                webhooks: consentry_server::WebhookConfig {
                    case_urls: vec!["http://127.0.0.1:9/case-events".into()],
                    secret: b"e2e-case-events-secret".to_vec(),
                    run_sender: false,
                    ..Default::default()
                },
                ..ServerConfig::default()
            },
        )
        .await
        .unwrap();
        let fake = FakeTelegram::start().await;
        for name in [
            PROTECTED,
            "bridge-5-flipx.jpg",
            "q0122.jpg",
            "q0291.jpg",
            "q0746.jpg",
            "q1050.jpg",
            "q2821.jpg",
            "q0003.jpg",
        ] {
            let id = file_id(name);
            fake.add_file(&id, &format!("u-{id}"), jpeg(name));
        }
        let state_path = dir.path().join("telegram-state.json");
        Some(Env {
            fake,
            app,
            _dir: dir,
            state_path,
            bot: None,
            config: test_config(),
            api_opts: fast_api(),
            matcher: None,
        })
    }

    fn start(&mut self) {
        assert!(self.bot.is_none());
        let api = BotApi::new(&self.fake.url(), fake::TOKEN, self.api_opts.clone()).unwrap();
        let state = Arc::new(StateFile::open(&self.state_path).unwrap());
        let matcher = self.matcher.clone().unwrap_or_else(|| Matcher::Embedded(self.app.clone()));
        let (tx, rx) = oneshot::channel::<()>();
        let cfg = self.config.clone();
        let h = tokio::spawn(async move {
            consentry_telegram::run(api, matcher, state, cfg, async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        self.bot = Some((tx, h));
    }

    async fn stop(&mut self) {
        let (tx, h) = self.bot.take().expect("running");
        let _ = tx.send(());
        tokio::time::timeout(Duration::from_secs(10), h).await.expect("bot stops within 10 s").unwrap();
    }

    /// Changes the saved state (bot stopped).
    fn edit_state(&self, f: impl FnOnce(&StateFile)) {
        assert!(self.bot.is_none());
        let s = StateFile::open(&self.state_path).unwrap();
        f(&s);
        tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(s.save())).unwrap();
    }

    fn saved_offset(&self) -> i64 {
        StateFile::open(&self.state_path).unwrap().with(|p| p.offset)
    }

    /// Waits until every update pushed so far is confirmed (handled, offset saved).
    async fn drain(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        let target = self.fake.next_update_id();
        loop {
            if self.fake.pending() == 0
                && StateFile::open(&self.state_path).map(|s| s.with(|p| p.offset)).unwrap_or(0) >= target
            {
                // Let the outbox send what the last updates queued.
                tokio::time::sleep(Duration::from_millis(150)).await;
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "updates not drained: {} pending",
                self.fake.pending()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn file_id(name: &str) -> String {
    format!("f-{}", name.trim_end_matches(".jpg"))
}

fn photo(msg: i64, user: i64, name: &str) -> Value {
    let id = file_id(name);
    fake::photo_update(GROUP, msg, user, &id, &format!("u-{id}"))
}

fn deleted_ids(fake: &FakeTelegram, chat: i64) -> Vec<i64> {
    let mut v: Vec<i64> = fake
        .calls_to("deleteMessage")
        .iter()
        .filter(|p| p["chat_id"] == json!(chat))
        .map(|p| p["message_id"].as_i64().unwrap())
        .collect();
    v.sort();
    v
}

fn texts_to(fake: &FakeTelegram, chat: i64) -> Vec<String> {
    fake.calls_to("sendMessage")
        .iter()
        .filter(|p| p["chat_id"] == json!(chat))
        .map(|p| p["text"].as_str().unwrap().to_owned())
        .collect()
}

fn count(fake: &FakeTelegram, method: &str) -> usize {
    fake.calls().iter().filter(|c| c.method == method).count()
}

macro_rules! env_or_skip {
    () => {
        match Env::new().await {
            Some(e) => e,
            None => return,
        }
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_photos_are_deleted_reported_and_repeat_posters_escalated() {
    let mut env = env_or_skip!();
    env.edit_state(|s| s.chat(GROUP, |c| c.log_chat = Some(LOG)));
    env.start();
    // User 7 posts the protected photo three times, in three separate batches (strikes 1, 2, 3).
    let f = &env.fake.clone();
    f.push_update(photo(10, 7, PROTECTED));
    f.push_update(photo(11, 7, "q0122.jpg")); // benign
    env.drain().await;
    f.push_update(photo(12, 7, PROTECTED));
    env.drain().await;
    f.push_update(photo(13, 7, PROTECTED));
    // A mirrored copy by someone else matches through the dihedral hashes.
    f.push_update(photo(14, 8, "bridge-5-flipx.jpg"));
    env.drain().await;
    env.stop().await;

    assert_eq!(deleted_ids(f, GROUP), vec![10, 12, 13, 14]);
    let restricts = f.calls_to("restrictChatMember");
    assert_eq!(restricts.len(), 1, "{restricts:?}");
    assert_eq!((restricts[0]["chat_id"].as_i64(), restricts[0]["user_id"].as_i64()), (Some(GROUP), Some(7)));
    assert_eq!(restricts[0]["permissions"]["can_send_messages"], json!(false));
    let until = restricts[0]["until_date"].as_i64().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((until - (now + 86_400)).abs() < 120, "restricted for a day");
    let bans = f.calls_to("banChatMember");
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!((bans[0]["chat_id"].as_i64(), bans[0]["user_id"].as_i64()), (Some(GROUP), Some(7)));
    // One neutral notice per removal, in the group.
    let notices = texts_to(f, GROUP);
    assert_eq!(notices.len(), 4, "{notices:?}");
    assert!(notices.iter().all(|t| t.contains("protected from non-consensual sharing")));
    // Polling mode removes any webhook first (getUpdates is refused while one is set).
    assert_eq!(f.calls_to("deleteWebhook").len(), 1);
    assert_eq!(f.calls()[1].method, "deleteWebhook", "after getMe, before polling");
    // Reports to the log chat: bank, distance, sender, link — never the image.
    let reports = texts_to(f, LOG);
    assert_eq!(reports.len(), 4, "{reports:?}");
    let r10 = reports.iter().find(|t| t.contains("https://t.me/c/1234/10")).expect("report of message 10");
    assert!(
        r10.contains("bank: known") && r10.contains("distance: 0") && r10.contains("@user7, id 7"),
        "{r10}"
    );
    assert!(r10.contains("no sanction"), "{r10}");
    assert!(reports.iter().any(|t| t.contains("/12") && t.contains("restricted for 1 day")));
    assert!(reports.iter().any(|t| t.contains("/13") && t.contains("sender banned")));
    let r14 = reports.iter().find(|t| t.contains("/14")).unwrap();
    assert!(r14.contains("@user8"), "{r14}");
    // Nothing but text was sent: no sendPhoto/sendDocument, no forwarding.
    assert!(f.calls().iter().all(|c| !c.method.starts_with("sendPhoto") && !c.method.starts_with("forward")));
    // The same file posted three times was downloaded once (hash cache by file_unique_id).
    assert_eq!(
        f.calls_to("download").iter().filter(|p| p["path"].as_str().unwrap().contains("bridge-1")).count(),
        1
    );
    // The server's match counts have the four matches under this chat.
    env.app.flush_match_counts().await.unwrap();
    let today = consentry_store::day_of(consentry_store::Timestamp::now());
    let q = consentry_store::StatsQuery::over(consentry_store::StatsGroup::Source, today - 1, today);
    let rows = env.app.store().match_stats(&q).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].key.clone(), rows[0].matches),
        (consentry_store::StatsKey::Source(format!("telegram:{GROUP}")), 4)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_media_kind_edits_channels_and_albums() {
    let mut env = env_or_skip!();
    env.config.default_action = Action::Restrict;
    env.config.default_notice = false;
    env.start();
    let f = &env.fake.clone();
    let p = file_id(PROTECTED);
    let thumb = json!({ "file_id": p, "file_unique_id": format!("u-{p}"), "width": 320, "height": 213 });
    let chat = json!({ "id": GROUP, "type": "supergroup", "title": "T" });
    let from = |id: i64| json!({ "id": id, "is_bot": false, "first_name": "P" });
    // Image document, static sticker (served bytes are JPEG: the decoder sniffs), animated
    // sticker and video / animation / video note thumbnails.
    f.push_update(json!({ "message": { "message_id": 20, "chat": chat, "from": from(1),
        "document": { "file_id": p, "file_unique_id": format!("u-{p}"), "mime_type": "image/jpeg" } } }));
    f.push_update(json!({ "message": { "message_id": 21, "chat": chat, "from": from(2),
        "sticker": { "file_id": p, "file_unique_id": format!("u-{p}"), "is_animated": false, "is_video": false } } }));
    f.push_update(json!({ "message": { "message_id": 22, "chat": chat, "from": from(3),
        "sticker": { "file_id": "tgs", "file_unique_id": "u-tgs", "is_animated": true, "is_video": false, "thumbnail": thumb } } }));
    f.push_update(json!({ "message": { "message_id": 23, "chat": chat, "from": from(4),
        "video": { "file_id": "vid", "file_unique_id": "u-vid", "thumbnail": thumb } } }));
    f.push_update(json!({ "message": { "message_id": 24, "chat": chat, "from": from(5),
        "animation": { "file_id": "gif", "file_unique_id": "u-gif", "thumbnail": thumb },
        "document": { "file_id": "gif", "file_unique_id": "u-gif", "mime_type": "video/mp4" } } }));
    f.push_update(json!({ "message": { "message_id": 25, "chat": chat, "from": from(6),
        "video_note": { "file_id": "vn", "file_unique_id": "u-vn", "thumbnail": thumb } } }));
    // A non-image document without a thumbnail and a text message: not looked at.
    f.push_update(json!({ "message": { "message_id": 26, "chat": chat, "from": from(6),
        "document": { "file_id": "pdf", "file_unique_id": "u-pdf", "mime_type": "application/pdf" } } }));
    f.push_update(fake::text_update(GROUP, "supergroup", 27, 6, "hello"));
    env.drain().await;
    // An edit that swaps a benign photo for the protected one.
    f.push_update(photo(30, 9, "q0291.jpg"));
    env.drain().await;
    let mut edited = photo(30, 9, PROTECTED);
    edited["edited_message"] = edited["message"].take();
    edited.as_object_mut().unwrap().remove("message");
    f.push_update(edited);
    // A channel post (no sender to sanction).
    let mut ch = photo(40, 0, PROTECTED);
    ch["channel_post"] = ch["message"].take();
    ch.as_object_mut().unwrap().remove("message");
    ch["channel_post"]["chat"] =
        json!({ "id": -1_005_555, "type": "channel", "title": "Ch", "username": "somechannel" });
    ch["channel_post"].as_object_mut().unwrap().remove("from");
    ch["channel_post"]["sender_chat"] = json!({ "id": -1_005_555, "type": "channel", "title": "Ch" });
    f.push_update(ch);
    env.drain().await;
    // An album of three by user 11: two protected items, one benign. One strike only.
    for (i, name) in [PROTECTED, "q0746.jpg", "bridge-5-flipx.jpg"].iter().enumerate() {
        let mut u = photo(50 + i as i64, 11, name);
        u["message"]["media_group_id"] = json!("album-1");
        f.push_update(u);
    }
    env.drain().await;
    env.stop().await;

    assert_eq!(deleted_ids(f, GROUP), vec![20, 21, 22, 23, 24, 25, 30, 50, 52]);
    assert_eq!(deleted_ids(f, -1_005_555), vec![40]);
    let mut restricted: Vec<i64> =
        f.calls_to("restrictChatMember").iter().map(|p| p["user_id"].as_i64().unwrap()).collect();
    restricted.sort();
    assert_eq!(
        restricted,
        vec![1, 2, 3, 4, 5, 6, 9, 11],
        "one restriction per poster, the album counted once"
    );
    assert!(f.calls_to("banChatMember").is_empty());
    assert!(f.calls_to("sendMessage").is_empty(), "notices off, no log chat");
    let asked: Vec<String> =
        f.calls_to("getFile").iter().map(|p| p["file_id"].as_str().unwrap().to_owned()).collect();
    assert!(
        !asked.iter().any(|a| a == "pdf" || a == "vid" || a == "gif" || a == "tgs" || a == "vn"),
        "only thumbnails of videos: {asked:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_updates_are_skipped_without_stopping_the_bot() {
    let mut env = env_or_skip!();
    env.start();
    let f = &env.fake.clone();
    let bad_chat = f.next_update_id();
    f.push_update(json!({ "message": { "message_id": 1, "chat": "not an object" } }));
    f.push_raw(json!({ "no_update_id": true }));
    f.push_raw(json!("a bare string"));
    f.push_update(json!({ "message": { "message_id": 2, "chat": { "id": GROUP, "type": "supergroup" }, "photo": [{ "width": 1 }] } }));
    f.push_update(json!({ "callback_query": { "id": "x" } }));
    f.push_update(json!({ "message": { "message_id": 3, "chat": { "id": GROUP, "type": "secret-kind" }, "text": "/help" } }));
    // Telegram's photo without file_size and with an unknown file: getFile 400.
    f.push_update(fake::photo_update(GROUP, 4, 7, "nonexistent", "u-none"));
    f.push_update(photo(5, 7, PROTECTED));
    env.drain().await;
    env.stop().await;
    assert_eq!(deleted_ids(f, GROUP), vec![5]);
    assert_eq!(env.saved_offset(), bad_chat + 6, "offset advanced past every malformed update");
    assert_eq!(f.pending(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_over_20_mb_are_skipped() {
    let mut env = env_or_skip!();
    env.start();
    let f = &env.fake.clone();
    let protected = jpeg(PROTECTED);
    // (a) The message says 25 MB: not even getFile.
    let mut a = photo(60, 7, PROTECTED);
    a["message"]["photo"][1]["file_id"] = json!("big-a");
    a["message"]["photo"][1]["file_unique_id"] = json!("u-big-a");
    a["message"]["photo"][1]["file_size"] = json!(25 * 1024 * 1024);
    f.add_file("big-a", "u-big-a", protected.clone());
    // (b) getFile says 21 MB: no download.
    f.add_file_spec(
        "big-b",
        FileSpec {
            unique_id: "u-big-b".into(),
            bytes: Arc::new(protected.clone()),
            reported_size: Some(21 * 1024 * 1024),
        },
    );
    // (c) Nobody says, the download is 21 MB: stopped at the limit.
    let mut huge = protected.clone();
    huge.resize(21 * 1024 * 1024, 0);
    f.add_file_spec(
        "big-c",
        FileSpec { unique_id: "u-big-c".into(), bytes: Arc::new(huge), reported_size: None },
    );
    f.push_update(a);
    f.push_update(fake::photo_update(GROUP, 61, 7, "big-b", "u-big-b"));
    f.push_update(fake::photo_update(GROUP, 62, 7, "big-c", "u-big-c"));
    env.drain().await;
    // The bot still works.
    f.push_update(photo(63, 7, PROTECTED));
    env.drain().await;
    env.stop().await;
    let files: Vec<String> =
        f.calls_to("getFile").iter().map(|p| p["file_id"].as_str().unwrap().to_owned()).collect();
    assert!(!files.contains(&"big-a".to_owned()), "{files:?}");
    assert!(files.contains(&"big-b".to_owned()) && files.contains(&"big-c".to_owned()));
    let downloads: Vec<String> =
        f.calls_to("download").iter().map(|p| p["path"].as_str().unwrap().to_owned()).collect();
    assert!(!downloads.iter().any(|d| d.contains("big-b")), "{downloads:?}");
    assert_eq!(downloads.iter().filter(|d| d.contains("big-c")).count(), 1, "not retried: {downloads:?}");
    assert_eq!(deleted_ids(f, GROUP), vec![63]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn getfile_and_download_failures() {
    let mut env = env_or_skip!();
    env.start();
    let f = &env.fake.clone();
    // A permanent getFile error: not checked, not retried, not cached.
    f.script("getFile", Scripted::Error(400, "Bad Request: file is too big".into()));
    f.push_update(photo(70, 7, PROTECTED));
    env.drain().await;
    assert!(deleted_ids(f, GROUP).is_empty());
    assert_eq!(count(f, "getFile"), 1);
    // Transient failures (502 from a proxy, then a 500 on the download) are retried.
    f.script("getFile", Scripted::BadGateway);
    f.script("download", Scripted::Error(500, "Internal Server Error".into()));
    f.push_update(photo(71, 7, PROTECTED));
    env.drain().await;
    env.stop().await;
    assert_eq!(deleted_ids(f, GROUP), vec![71]);
    assert_eq!(count(f, "getFile"), 3, "400 once, 502 once, then ok");
    assert_eq!(count(f, "download"), 2, "500 once, then ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_429_are_waited_out() {
    let mut env = env_or_skip!();
    let f = &env.fake.clone();
    f.script("deleteMessage", Scripted::TooManyRequests(1));
    f.script("getUpdates", Scripted::TooManyRequests(1));
    env.start();
    f.push_update(photo(80, 7, PROTECTED));
    env.drain().await;
    env.stop().await;
    let deletes: Vec<_> = f.calls().into_iter().filter(|c| c.method == "deleteMessage").collect();
    assert_eq!(deletes.len(), 2, "one 429, one retry");
    assert!(deletes[0].failed && !deletes[1].failed);
    let gap = deletes[1].at - deletes[0].at;
    assert!(gap >= Duration::from_millis(950), "waited retry_after = 1 s, not {gap:?}");
    assert_eq!(deleted_ids(f, GROUP), vec![80]);
    let polls: Vec<_> = f.calls().into_iter().filter(|c| c.method == "getUpdates").collect();
    assert!(polls[0].failed);
    assert!(polls[1].at - polls[0].at >= Duration::from_millis(950), "getUpdates also waited retry_after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_are_retried() {
    let mut env = env_or_skip!();
    env.api_opts.request_timeout = Duration::from_millis(400);
    env.start();
    let f = &env.fake.clone();
    // getFile hangs past the client timeout once; the download too; then both answer.
    f.script("getFile", Scripted::Delay(Duration::from_millis(1500)));
    f.script("download", Scripted::Delay(Duration::from_millis(1500)));
    // A long poll that hangs past its timeout (1 s poll + 0.4 s).
    f.script("getUpdates", Scripted::Delay(Duration::from_millis(2500)));
    f.push_update(photo(90, 7, PROTECTED));
    env.drain().await;
    env.stop().await;
    assert_eq!(deleted_ids(f, GROUP), vec![90]);
    assert!(count(f, "getFile") >= 2 && count(f, "download") >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_in_the_middle_of_a_burst_misses_nothing_and_repeats_nothing() {
    let mut env = env_or_skip!();
    env.config.default_action = Action::None;
    env.config.default_notice = false;
    env.config.poll_limit = 10;
    env.config.concurrency = 2;
    let f = env.fake.clone();
    // 60 photos, every one a distinct file (so a re-handled update would show as a second
    // download): 30 copies of the protected image, 30 benign.
    let protected = jpeg(PROTECTED);
    let benign = jpeg("q0122.jpg");
    let mut want = Vec::new();
    for i in 0..60i64 {
        let (bytes, is_protected) =
            if i % 2 == 0 { (protected.clone(), true) } else { (benign.clone(), false) };
        let id = format!("burst-{i}");
        f.add_file(&id, &format!("u-{id}"), bytes);
        f.push_update(fake::photo_update(GROUP, 1000 + i, 7, &id, &format!("u-{id}")));
        if is_protected {
            want.push(1000 + i);
        }
    }
    // Downloads are slowed so that stops land in the middle of batches.
    for _ in 0..60 {
        f.script("download", Scripted::Delay(Duration::from_millis(15)));
    }
    // Three stops, each after a few more deletions, then a run to the end.
    for stop_at in [4usize, 11, 19] {
        env.start();
        assert!(
            f.wait_for(Duration::from_secs(20), |c| c.iter().filter(|c| c.method == "deleteMessage").count()
                >= stop_at)
                .await
        );
        env.stop().await;
        assert!(f.pending() > 0, "stopped before the end of the burst");
    }
    env.start();
    env.drain().await;
    env.stop().await;
    assert_eq!(deleted_ids(&f, GROUP), want, "every protected photo deleted exactly once");
    let mut per_file = std::collections::HashMap::<String, usize>::new();
    for p in f.calls_to("download") {
        *per_file.entry(p["path"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    assert_eq!(per_file.len(), 60, "every photo looked at");
    assert!(per_file.values().all(|n| *n == 1), "no photo handled twice: {per_file:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_reports_and_review_queue() {
    let mut env = env_or_skip!();
    env.start();
    let f = env.fake.clone();
    f.set_member(GROUP, ADMIN, "administrator");
    f.set_member(LOG, ADMIN, "creator");
    let member = 600;
    let cmd = |msg: i64, user: i64, text: &str| fake::text_update(GROUP, "supergroup", msg, user, text);
    let send = |u: Value| {
        f.push_update(u);
        env.drain()
    };
    send(cmd(1, member, "/help")).await;
    assert!(texts_to(&f, GROUP).last().unwrap().contains("/report"));
    send(cmd(2, member, "/policy ban")).await;
    assert_eq!(texts_to(&f, GROUP).last().unwrap(), "Only this chat's admins can use this command.");
    send(cmd(3, ADMIN, "/policy@consentry_test_bot ban")).await;
    assert!(texts_to(&f, GROUP).last().unwrap().starts_with("Policy: ban"));
    send(cmd(4, ADMIN, "/policy notice off")).await;
    assert!(texts_to(&f, GROUP).last().unwrap().contains("notice off"));
    // Log chat: the admin must be an admin there too.
    send(cmd(5, ADMIN, "/logchat -1000000777")).await;
    assert!(texts_to(&f, GROUP).last().unwrap().starts_with("Usage: /logchat"));
    send(cmd(6, ADMIN, &format!("/logchat {LOG}"))).await;
    assert_eq!(texts_to(&f, GROUP).last().unwrap(), &format!("Match reports now go to chat {LOG}."));
    send(cmd(7, ADMIN, "/banks")).await;
    let banks = texts_to(&f, GROUP).last().unwrap().clone();
    assert!(
        banks.contains("known (known-abuse, on)") && banks.contains("survivors (survivor-protected, on)"),
        "{banks}"
    );
    // A member reports a benign-looking image (not in any bank).
    send(photo(8, 700, "q0291.jpg")).await;
    assert!(deleted_ids(&f, GROUP).is_empty());
    let mut rep = cmd(9, member, "/report");
    rep["message"]["reply_to_message"] = photo(8, 700, "q0291.jpg")["message"].clone();
    send(rep.clone()).await;
    assert_eq!(texts_to(&f, GROUP).last().unwrap(), "Thank you. The admins will review it (report #1).");
    let to_log = texts_to(&f, LOG);
    assert!(
        to_log.last().unwrap().contains("report #1")
            && to_log.last().unwrap().contains("https://t.me/c/1234/8")
    );
    // Reporting it again adds nothing; a member cannot approve.
    send(rep).await;
    assert_eq!(texts_to(&f, GROUP).last().unwrap(), "Thank you: this image is already known.");
    send(cmd(10, member, "/approve 1")).await;
    assert!(deleted_ids(&f, GROUP).is_empty());
    // The admin approves: the message goes, the hash joins the chat's bank.
    send(cmd(11, ADMIN, "/approve 1")).await;
    assert_eq!(deleted_ids(&f, GROUP), vec![8]);
    assert!(texts_to(&f, GROUP).last().unwrap().starts_with("Report #1 approved"));
    send(photo(12, 701, "q0291.jpg")).await;
    assert_eq!(deleted_ids(&f, GROUP), vec![8, 12]);
    let bans = f.calls_to("banChatMember");
    assert_eq!(bans.len(), 1);
    assert_eq!(bans[0]["user_id"], json!(701));
    assert!(texts_to(&f, LOG).last().unwrap().contains(&format!("bank: chat {GROUP}")));
    // A second report, rejected: the image stays allowed.
    send(photo(13, 700, "q0746.jpg")).await;
    let mut rep2 = cmd(14, member, "/report");
    rep2["message"]["reply_to_message"] = photo(13, 700, "q0746.jpg")["message"].clone();
    send(rep2).await;
    send(cmd(15, ADMIN, "/reject 2")).await;
    assert_eq!(texts_to(&f, GROUP).last().unwrap(), "Report #2 rejected.");
    send(cmd(16, ADMIN, "/approve 2")).await;
    assert_eq!(texts_to(&f, GROUP).last().unwrap(), "The review queue is empty.");
    send(photo(17, 702, "q0746.jpg")).await;
    assert_eq!(deleted_ids(&f, GROUP), vec![8, 12]);
    // French, and the status.
    send(cmd(18, ADMIN, "/lang fr")).await;
    assert_eq!(texts_to(&f, GROUP).last().unwrap(), "Langue : français.");
    send(cmd(19, ADMIN, "/status")).await;
    let st = texts_to(&f, GROUP).last().unwrap().clone();
    assert!(
        st.contains("Correspondances : 1")
            && st.contains("Empreintes protégées : 1")
            && st.contains("Politique : ban"),
        "{st}"
    );
    assert!(st.contains(&format!("Chat de journal : {LOG}")) && st.contains("Banque de ce chat : 1"), "{st}");
    env.stop().await;
    // Settings survive a restart.
    let saved = StateFile::open(&env.state_path).unwrap();
    assert_eq!(
        saved.chat(GROUP, |c| (c.action, c.notice, c.log_chat)),
        (Some(Action::Ban), Some(false), Some(LOG))
    );
}

fn private(msg: i64, user: i64, lang: &str, text: &str) -> Value {
    let mut u = fake::text_update(user, "private", msg, user, text);
    u["message"]["from"]["language_code"] = json!(lang);
    u
}

/// The case number and PIN of the bot's answer to `/protect`.
fn case_in(answer: &str) -> (String, String) {
    let line = |name: &str| answer.lines().find_map(|l| l.strip_prefix(name)).expect(answer).to_owned();
    (line("Case number: "), line("PIN: "))
}

/// Waits (up to 5 s) until the index that follows the store's feed holds `n` entries.
async fn index_holds(app: &consentry_server::AppState, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while app.index().len() < n {
        assert!(tokio::time::Instant::now() < deadline, "index did not follow the feed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Today, UTC, as the bot writes days.
fn utc_today() -> String {
    consentry_store::format_day(consentry_store::day_of(consentry_store::Timestamp::now()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_protect_status_and_withdraw() {
    let mut env = env_or_skip!();
    env.config.default_notice = false;
    env.start();
    let f = env.fake.clone();
    let survivor = 900;
    let send = |u: Value| {
        f.push_update(u);
        env.drain()
    };
    // An image sent in private is never downloaded.
    let mut img = photo(1, survivor, "q1050.jpg");
    img["message"]["chat"] = json!({ "id": survivor, "type": "private" });
    send(img).await;
    assert!(texts_to(&f, survivor).last().unwrap().starts_with("Please do not send images"));
    assert!(f.calls_to("getFile").is_empty());
    // Bad hash: nothing stored.
    send(private(2, survivor, "en", "/protect 12345")).await;
    assert!(texts_to(&f, survivor).last().unwrap().starts_with("Hash #1 is not valid"));
    let h = pdq(&jpeg("q1050.jpg")).to_hex();
    send(private(3, survivor, "en", &format!("/protect {h}"))).await;
    let answer = texts_to(&f, survivor).last().unwrap().clone();
    let (number, pin) = case_in(&answer);
    // The case's hash reaches the index through the change feed; the image is then removed.
    index_holds(&env.app, 2).await;
    let day_of_removal = utc_today();
    send(photo(4, 7, "q1050.jpg")).await;
    assert_eq!(deleted_ids(&f, GROUP), vec![4]);
    // Status in French, with a wrong PIN first. Messages holding a PIN are deleted.
    send(private(5, survivor, "fr", &format!("/status {number} 0000000000"))).await;
    assert_eq!(texts_to(&f, survivor).last().unwrap(), "Numéro de dossier inconnu ou PIN incorrect.");
    send(private(6, survivor, "fr-FR", &format!("/status {} {pin}", number.to_lowercase()))).await;
    // The removal above is counted (on the day it happened: the clock may pass midnight), the
    // chat not named.
    let status = texts_to(&f, survivor).last().unwrap().clone();
    let expected = |day: String| {
        format!(
            "Dossier {number} : reçu. 1 empreinte(s) active(s) sur 1. Copies arrêtées : 1, à 1 endroit(s) ; \
             la dernière le {day} (UTC)."
        )
    };
    assert!(status == expected(day_of_removal) || status == expected(utc_today()), "{status}");
    send(private(7, survivor, "en", &format!("/withdraw {number} {pin}"))).await;
    assert_eq!(
        texts_to(&f, survivor).last().unwrap(),
        &format!("Case {number} withdrawn: its hashes no longer match.")
    );
    assert_eq!(deleted_ids(&f, survivor), vec![5, 6, 7]);
    // The helpline's case URL was told of the opening and the withdrawal (the number, no PIN).
    let store = env.app.store();
    let (opened, withdrawn) = (store.get_webhook(1).await.unwrap(), store.get_webhook(2).await.unwrap());
    assert_eq!((opened.event_type.as_str(), withdrawn.event_type.as_str()), ("case", "case"));
    assert_eq!((&opened.payload["action"], &opened.payload["codes"]), (&json!("created"), &json!(1)));
    assert_eq!(
        (&withdrawn.payload["action"], &withdrawn.payload["case_number"]),
        (&json!("withdrawn"), &json!(number))
    );
    assert!(!opened.payload.to_string().contains(&pin));
    // Withdrawn: the same image (hash cached by file_unique_id) no longer matches.
    send(photo(8, 7, "q1050.jpg")).await;
    assert_eq!(deleted_ids(&f, GROUP), vec![4]);
    send(private(9, survivor, "en", "hello")).await;
    assert!(texts_to(&f, survivor).last().unwrap().contains("/protect <hash>"));
    env.stop().await;
    assert!(f.calls().iter().all(|c| c.method != "sendPhoto"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_mode_case_status_tells_what_was_caught() {
    let mut env = env_or_skip!();
    env.config.default_notice = false;
    env.matcher = Some(common::remote_matcher(&env.app).await);
    env.start();
    let f = env.fake.clone();
    let survivor = 901;
    let send = |u: Value| {
        f.push_update(u);
        env.drain()
    };
    let h = pdq(&jpeg("q1050.jpg")).to_hex();
    send(private(1, survivor, "en", &format!("/protect {h}"))).await;
    let answer = texts_to(&f, survivor).last().unwrap().clone();
    let (number, pin) = case_in(&answer);
    send(private(2, survivor, "en", &format!("/status {number} {pin}"))).await;
    assert_eq!(
        texts_to(&f, survivor).last().unwrap(),
        &format!("Case {number}: received. 1 of 1 hash(es) active. No copy found so far.")
    );
    index_holds(&env.app, 2).await;
    let day_of_removal = utc_today();
    send(photo(3, 7, "q1050.jpg")).await;
    assert_eq!(deleted_ids(&f, GROUP), vec![3]);
    // The server counted the bot's lookup under its key and says so to the survivor, unnamed.
    send(private(4, survivor, "en", &format!("/status {number} {pin}"))).await;
    let status = texts_to(&f, survivor).last().unwrap().clone();
    let expected = |day: String| {
        format!(
            "Case {number}: received. 1 of 1 hash(es) active. Copies stopped: 1, in 1 place(s); the last on \
             {day} (UTC)."
        )
    };
    assert!(status == expected(day_of_removal) || status == expected(utc_today()), "{status}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_mode_matches_through_consentry_serve() {
    let mut env = env_or_skip!();
    env.matcher = Some(common::remote_matcher(&env.app).await);
    env.start();
    let f = &env.fake.clone();
    f.push_update(photo(1, 7, PROTECTED));
    f.push_update(photo(2, 7, "q0003.jpg"));
    env.drain().await;
    env.stop().await;
    assert_eq!(deleted_ids(f, GROUP), vec![1]);
}

/// Points the bot at a consentry server (a lookup key of its store) whose address has nothing
/// listening on it yet: connections are refused until `start_server`.
async fn server_not_yet_listening(env: &mut Env) -> std::net::SocketAddr {
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let key = env.app.store().create_api_key(&Actor::system(), "bot", &[Scope::Lookup]).await.unwrap();
    env.matcher = Some(Matcher::Remote(
        consentry_telegram::Remote::new(&format!("http://{addr}"), &key.secret).unwrap(),
    ));
    addr
}

/// Starts serving the environment's store at `addr`.
async fn start_server(env: &Env, addr: std::net::SocketAddr) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(consentry_server::serve(listener, env.app.clone(), std::future::pending()));
}

/// A photo posted while the server cannot be reached (a restart, a failover) is checked once it
/// is back, not waved through: the lookup is retried with back-off within `lookup_patience`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_posted_while_the_server_is_down_is_checked_once_it_is_back() {
    let mut env = env_or_skip!();
    let addr = server_not_yet_listening(&mut env).await;
    env.start();
    let f = &env.fake.clone();
    f.push_update(photo(1, 7, PROTECTED));
    assert!(f.wait_for(Duration::from_secs(5), |c| c.iter().any(|c| c.method == "getFile")).await);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(deleted_ids(f, GROUP).is_empty(), "nothing to match against yet");
    start_server(&env, addr).await;
    env.drain().await;
    env.stop().await;
    assert_eq!(deleted_ids(f, GROUP), vec![1], "deleted once the server answered");
}

/// A bot stopped while a photo waits for an unreachable server leaves that photo's update
/// unconfirmed, so the next start checks it: it is not waved through by the shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_waiting_for_the_server_at_shutdown_is_checked_after_the_restart() {
    let mut env = env_or_skip!();
    let addr = server_not_yet_listening(&mut env).await;
    env.start();
    let f = &env.fake.clone();
    let id = f.next_update_id();
    f.push_update(photo(2, 7, PROTECTED));
    assert!(f.wait_for(Duration::from_secs(5), |c| c.iter().any(|c| c.method == "getFile")).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.stop().await;
    assert!(deleted_ids(f, GROUP).is_empty());
    assert!(env.saved_offset() <= id, "the waiting photo's update is not confirmed");
    start_server(&env, addr).await;
    env.start();
    env.drain().await;
    env.stop().await;
    assert_eq!(deleted_ids(f, GROUP), vec![2], "checked and deleted after the restart");
}

/// Starts the bot in webhook mode on a fresh loopback socket; returns the webhook URL.
fn start_webhook(env: &mut Env, secret: &str) -> String {
    assert!(env.bot.is_none());
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/tg/hook", std_listener.local_addr().unwrap());
    let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
    let api = BotApi::new(&env.fake.url(), fake::TOKEN, env.api_opts.clone()).unwrap();
    let state = Arc::new(StateFile::open(&env.state_path).unwrap());
    let matcher = env.matcher.clone().unwrap_or_else(|| Matcher::Embedded(env.app.clone()));
    let (tx, rx) = oneshot::channel::<()>();
    let cfg = env.config.clone();
    let webhook = consentry_telegram::Webhook { listener, url: url.clone(), secret: secret.into() };
    let h = tokio::spawn(async move {
        consentry_telegram::run_webhook(api, matcher, state, cfg, webhook, async move {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    env.bot = Some((tx, h));
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_mode_handles_each_update_once_and_rejects_wrong_secrets() {
    let mut env = env_or_skip!();
    const SECRET: &str = "hook_Secret-42";
    let url = start_webhook(&mut env, SECRET);
    assert!(
        env.fake.wait_for(Duration::from_secs(5), |c| c.iter().any(|c| c.method == "setWebhook")).await,
        "setWebhook called"
    );
    let set = env.fake.calls_to("setWebhook");
    assert_eq!(set.len(), 1);
    assert_eq!(set[0]["url"], json!(url));
    assert_eq!(set[0]["secret_token"], json!(SECRET));
    assert_eq!(count(&env.fake, "getUpdates"), 0, "no polling in webhook mode");

    let http = reqwest::Client::new();
    let post = |body: Value, secret: Option<&str>| {
        let mut r = http.post(&url).json(&body);
        if let Some(s) = secret {
            r = r.header("X-Telegram-Bot-Api-Secret-Token", s);
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    let mut protected = photo(10, 77, PROTECTED);
    protected["update_id"] = json!(1);
    let mut benign = photo(11, 78, "q0122.jpg");
    benign["update_id"] = json!(2);

    // Wrong or missing secret: 401 and nothing handled.
    assert_eq!(post(protected.clone(), Some("hook_Secret-43")).await, 401);
    assert_eq!(post(protected.clone(), Some("")).await, 401);
    assert_eq!(post(protected.clone(), None).await, 401);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(count(&env.fake, "getFile"), 0);
    assert!(deleted_ids(&env.fake, GROUP).is_empty());

    // The right secret: the answer comes once the update is handled (delete already sent).
    assert_eq!(post(protected.clone(), Some(SECRET)).await, 200);
    assert_eq!(deleted_ids(&env.fake, GROUP), vec![10]);
    assert_eq!(post(benign.clone(), Some(SECRET)).await, 200);
    assert_eq!(count(&env.fake, "getFile"), 2);
    // A redelivery is acknowledged and not handled again.
    assert_eq!(post(protected.clone(), Some(SECRET)).await, 200);
    // Malformed bodies are acknowledged (Telegram would resend them forever) and skipped.
    assert_eq!(post(json!({ "no_update_id": true }), Some(SECRET)).await, 200);
    let mut bad = json!({ "message": { "chat": "not an object" } });
    bad["update_id"] = json!(3);
    assert_eq!(post(bad, Some(SECRET)).await, 200);
    assert_eq!(deleted_ids(&env.fake, GROUP), vec![10]);
    assert_eq!(count(&env.fake, "getFile"), 2);
    env.stop().await;
    let done = StateFile::open(&env.state_path).unwrap().with(|p| p.done.clone());
    assert!(done.contains(&1) && done.contains(&2) && done.contains(&3), "saved: {done:?}");

    // After a restart (new socket) the same state file still dedups redeliveries.
    let url2 = start_webhook(&mut env, SECRET);
    assert!(
        env.fake
            .wait_for(Duration::from_secs(5), |c| c.iter().filter(|c| c.method == "setWebhook").count() == 2)
            .await
    );
    let status = http
        .post(&url2)
        .header("X-Telegram-Bot-Api-Secret-Token", SECRET)
        .json(&protected)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 200);
    let mut again = photo(12, 79, PROTECTED);
    again["update_id"] = json!(4);
    let status =
        http.post(&url2).header("X-Telegram-Bot-Api-Secret-Token", SECRET).json(&again).send().await.unwrap();
    assert_eq!(status.status().as_u16(), 200);
    assert_eq!(deleted_ids(&env.fake, GROUP), vec![10, 12]);
    assert_eq!(env.fake.calls_to("deleteMessage").len(), 2, "nothing handled twice");
    env.stop().await;
}

/// In webhook mode, a delivery whose photo waits for an unreachable server when the bot is stopped
/// is answered 503 and not recorded as handled, so Telegram's redelivery after the restart is
/// checked (and the photo deleted) instead of being skipped as done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_delivery_waiting_at_shutdown_gets_503_and_is_checked_when_redelivered() {
    let mut env = env_or_skip!();
    const SECRET: &str = "hook_Secret-7";
    let addr = server_not_yet_listening(&mut env).await;
    let url = start_webhook(&mut env, SECRET);
    assert!(env.fake.wait_for(Duration::from_secs(5), |c| c.iter().any(|c| c.method == "setWebhook")).await);
    let mut update = photo(20, 77, PROTECTED);
    update["update_id"] = json!(40);
    let deliver = |url: String, update: Value| async move {
        reqwest::Client::new()
            .post(&url)
            .header("X-Telegram-Bot-Api-Secret-Token", SECRET)
            .json(&update)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    let first = tokio::spawn(deliver(url, update.clone()));
    assert!(env.fake.wait_for(Duration::from_secs(5), |c| c.iter().any(|c| c.method == "getFile")).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!first.is_finished(), "the delivery waits for the server");
    env.stop().await;
    assert_eq!(first.await.unwrap(), 503, "a stop during the wait asks Telegram to deliver it again");
    assert!(deleted_ids(&env.fake, GROUP).is_empty());
    let done = StateFile::open(&env.state_path).unwrap().with(|p| p.done.clone());
    assert!(!done.contains(&40), "the waiting update is not recorded as handled: {done:?}");

    start_server(&env, addr).await;
    let url2 = start_webhook(&mut env, SECRET);
    assert!(
        env.fake
            .wait_for(Duration::from_secs(5), |c| c.iter().filter(|c| c.method == "setWebhook").count() == 2)
            .await
    );
    assert_eq!(deliver(url2, update).await, 200);
    assert_eq!(deleted_ids(&env.fake, GROUP), vec![20], "checked and deleted when delivered again");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matches_write_an_audit_event_with_ids_hashes_and_distances_only() {
    let mut env = env_or_skip!();
    let before = env.app.store().audit_events(0, 1000).await.unwrap().last().map(|e| e.id).unwrap_or(0);
    env.start();
    let f = env.fake.clone();
    f.push_update(photo(20, 7, PROTECTED));
    f.push_update(photo(21, 7, "q0122.jpg")); // benign: no event
    f.push_update(photo(22, 8, "bridge-5-flipx.jpg"));
    env.drain().await;
    env.stop().await;
    let events: Vec<_> = env
        .app
        .store()
        .audit_events(before, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "telegram.match")
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    let mut targets: Vec<_> = events.iter().map(|e| e.target.clone()).collect();
    targets.sort();
    assert_eq!(targets, vec![format!("telegram-message:{GROUP}:20"), format!("telegram-message:{GROUP}:22")]);
    let e20 = events.iter().find(|e| e.target.ends_with(":20")).unwrap();
    assert_eq!(e20.actor, "telegram-bot");
    let d = &e20.details;
    assert_eq!(d["chat_id"], json!(GROUP));
    assert_eq!(d["message_id"], json!(20));
    assert_eq!(d["sender_id"], json!(7));
    assert_eq!(d["bank"], json!("known"));
    assert_eq!(d["distance"], json!(0));
    assert_eq!(d["signal"], json!("pdq"));
    assert_eq!(d["deleted"], json!(true));
    assert_eq!(d["pdq"], json!(pdq(&jpeg(PROTECTED)).to_hex()));
    assert_eq!(d["file_unique_id"], json!(format!("u-{}", file_id(PROTECTED))));
    // Only these keys: no image bytes, no caption or text.
    let mut keys: Vec<_> = d.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "bank",
            "chat_id",
            "deleted",
            "distance",
            "entry_id",
            "file_unique_id",
            "media",
            "message_id",
            "pdq",
            "sanction",
            "sender_chat_id",
            "sender_id",
            "signal",
            "update_id"
        ]
    );
    for e in &events {
        assert!(e.details.to_string().len() < 1000, "small, no media: {}", e.details);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_protect_is_rate_limited_per_user() {
    let mut env = env_or_skip!();
    env.config.protect_per_hour = 2;
    env.start();
    let f = env.fake.clone();
    let h = pdq(&jpeg("q0291.jpg")).to_hex();
    for (i, user) in [(1, 901), (2, 901), (3, 901), (4, 902), (5, 901)] {
        let lang = if i == 5 { "fr" } else { "en" };
        f.push_update(private(i, user, lang, &format!("/protect {h}")));
        env.drain().await;
    }
    env.stop().await;
    let a = texts_to(&f, 901);
    assert_eq!(a.len(), 4, "{a:?}");
    assert!(a[0].contains("Case number: ") && a[1].contains("Case number: "), "{a:?}");
    assert!(a[2].starts_with("You have opened 2 case(s) in the last hour"), "{}", a[2]);
    assert!(a[3].starts_with("Vous avez ouvert 2 dossier(s) dans l'heure"), "{}", a[3]);
    // Another user is not affected.
    assert!(texts_to(&f, 902)[0].contains("Case number: "));
    // Exactly three cases exist (two for 901, one for 902).
    let opened = env.app.store().audit_events(0, 1000).await.unwrap();
    let cases = opened.iter().filter(|e| e.action == "case.create").count();
    assert_eq!(cases, 3, "{:?}", opened.iter().map(|e| &e.action).collect::<Vec<_>>());
}
