//! The derive signal through the bot (embedded store + index): a benign synthetic photo is
//! protected with its derivative signature only; a derivative that global PDQ misses (20%
//! cropped off one side, padded, the lower centre replaced with noise) posted to a group is
//! deleted, reported and audited with `signal: derive`, an unrelated image is left alone, and
//! after the entry is disabled the derivative no longer matches. Images stay in memory. The
//! same runs with the bot in remote mode against `consentry serve` on a loopback socket.

use crate::common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use consentry_derive::{synth, Extractor};
use consentry_media::HashOptions;
use consentry_pdq::Hasher;
use consentry_server::{AppState, ServerConfig};
use consentry_store::{
    Actor, BankPurpose, EntrySourceKind, NewBank, NewEntry, SignalValue, Store, StoreOptions,
};
use consentry_telegram::fake::{self, FakeTelegram};
use consentry_telegram::{ApiOptions, BotApi, BotConfig, DerivePolicy, Matcher, RateLimits, StateFile};
use serde_json::json;

const GROUP: i64 = -1_004_321;
const LOG: i64 = -1_008_888;

fn jpeg(img: &synth::RgbImage) -> Vec<u8> {
    let i = image::RgbImage::from_raw(img.width, img.height, img.data.clone()).unwrap();
    let mut out = std::io::Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode_image(&i).unwrap();
    out.into_inner()
}

fn config() -> BotConfig {
    BotConfig {
        poll_timeout_secs: 1,
        poll_backoff: Duration::from_millis(30),
        rate: RateLimits { per_chat_burst: 50, per_chat_per_minute: 600, global_per_second: 100 },
        ..BotConfig::default()
    }
}

fn api_options() -> ApiOptions {
    ApiOptions {
        request_timeout: Duration::from_millis(1500),
        max_retries: 3,
        backoff_base: Duration::from_millis(30),
        backoff_max: Duration::from_millis(200),
        max_429_retries: 3,
        max_retry_after: Duration::from_secs(2),
    }
}

/// Waits until every update pushed so far is handled and its offset saved.
async fn drain(fake: &FakeTelegram, state: &Path) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let target = fake.next_update_id();
    loop {
        if fake.pending() == 0 && StateFile::open(state).map(|s| s.with(|p| p.offset)).unwrap_or(0) >= target
        {
            tokio::time::sleep(Duration::from_millis(150)).await;
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "updates not drained");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait(mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "not within 1 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs the bot against `fake` with the state file at `state_path` until the sender is used.
fn start_bot(
    fake: &FakeTelegram,
    state_path: &Path,
    matcher: Matcher,
) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let api = BotApi::new(&fake.url(), fake::TOKEN, api_options()).unwrap();
    let state = Arc::new(StateFile::open(state_path).unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let bot = tokio::spawn(async move {
        consentry_telegram::run(api, matcher, state, config(), async move {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    (tx, bot)
}

/// The texts the bot sent to the log chat.
fn log_reports(fake: &FakeTelegram) -> Vec<String> {
    fake.calls_to("sendMessage")
        .iter()
        .filter(|p| p["chat_id"] == json!(LOG))
        .map(|p| p["text"].as_str().unwrap().to_owned())
        .collect()
}

fn deleted(fake: &FakeTelegram) -> Vec<i64> {
    fake.calls_to("deleteMessage").iter().map(|p| p["message_id"].as_i64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derivatives_of_a_derive_protected_photo_are_deleted_until_the_entry_is_disabled() {
    scenario(false).await;
}

/// The same through a remote `consentry serve` on a loopback socket: the bot computes the query
/// features and sends them (`/v1/lookup/features`); the image never leaves the bot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_mode_sends_derive_features_not_images() {
    scenario(true).await;
}

/// A store with one bank holding the derive signature of a synthetic photo (no PDQ entry), and
/// the app over it.
async fn protected_app(dir: &Path) -> (AppState, synth::RgbImage, consentry_derive::Signature, i64) {
    let opts = StoreOptions {
        pin_kdf: consentry_store::PinKdf { memory_kib: 1024, iterations: 1, parallelism: 1 },
        ..StoreOptions::default()
    };
    let store = Store::open(consentry_store::StoreLocation::Sqlite(dir.join("c.db")), opts).await.unwrap();
    let bank = store
        .create_bank(
            &Actor::system(),
            NewBank {
                name: "protected".into(),
                description: String::new(),
                enabled: true,
                purpose: BankPurpose::SurvivorProtected,
            },
        )
        .await
        .unwrap();
    let photo = synth::scene(480, 360, 11);
    let sig = Extractor::new().signature(&photo.pixels());
    let entry = store
        .add_entry(
            &Actor::system(),
            NewEntry {
                bank_id: bank.id,
                value: SignalValue::from_signature(&sig),
                quality: None,
                source: EntrySourceKind::Moderator,
                metadata: json!({}),
            },
        )
        .await
        .unwrap();
    let app = AppState::start(
        store,
        ServerConfig { poll_interval: Duration::from_millis(20), ..ServerConfig::default() },
    )
    .await
    .unwrap();
    assert_eq!(app.derive_index().len(), 1);
    assert_eq!(app.index().len(), 0, "protected by the derive signal only");
    (app, photo, sig, entry.id)
}

async fn scenario(remote: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (app, photo, sig, entry_id) = protected_app(dir.path()).await;

    let derived = jpeg(&synth::derivative(&photo, 5));
    let unrelated = jpeg(&synth::scene(480, 360, 12));
    // Most of the body area replaced, nothing else changed: caught by the top band.
    let undressed = jpeg(&synth::replace_body(&photo, &synth::scene(480, 360, 13), 0.7));
    // Global PDQ misses the derivative (every dihedral variant).
    let h = consentry_media::hash_bytes(
        &derived,
        &HashOptions { dihedral: true, ..HashOptions::default() },
        &mut Hasher::new(),
    )
    .unwrap();
    let d = h.dihedral.unwrap().hashes.iter().map(|x| x.distance(&sig.pdq)).min().unwrap();
    assert!(d > 31, "PDQ distance {d}: the derivative would not test the derive path");

    let fake = FakeTelegram::start().await;
    fake.add_file("f-derived", "u-derived", derived);
    fake.add_file("f-unrelated", "u-unrelated", unrelated);
    fake.add_file("f-undressed", "u-undressed", undressed);
    let state_path = dir.path().join("telegram-state.json");
    {
        let s = StateFile::open(&state_path).unwrap();
        s.chat(GROUP, |c| c.log_chat = Some(LOG));
        s.save().await.unwrap();
    }
    let matcher = if remote {
        let m = common::remote_matcher(&app).await;
        assert!(m.derive_active(), "a remote server is asked until it says it holds no derive entries");
        m
    } else {
        Matcher::Embedded(app.clone())
    };
    let (tx, bot) = start_bot(&fake, &state_path, matcher);

    fake.push_update(fake::photo_update(GROUP, 10, 7, "f-derived", "u-derived"));
    fake.push_update(fake::photo_update(GROUP, 11, 8, "f-unrelated", "u-unrelated"));
    fake.push_update(fake::photo_update(GROUP, 13, 9, "f-undressed", "u-undressed"));
    drain(&fake, &state_path).await;
    let mut gone = deleted(&fake);
    gone.sort();
    assert_eq!(gone, vec![10, 13], "the derivatives are deleted, the unrelated image is not");
    let reports = log_reports(&fake);
    assert_eq!(reports.len(), 2, "{reports:?}");
    // each report links its message (https://t.me/c/…/10)
    let report =
        |id: u32| reports.iter().find(|r| r.contains(&format!("/{id}\n"))).cloned().unwrap_or_default();
    let (r10, r13) = (report(10), report(13));
    assert!(r10.contains("bank: protected (derivative:") && r10.contains("keypoints"), "{reports:?}");
    assert!(
        r13.contains("bank: protected (derivative:") && r13.contains("top band at distance"),
        "{reports:?}"
    );
    let events: Vec<_> = app
        .store()
        .audit_events(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "telegram.match")
        .collect();
    if remote {
        // The server logged a features lookup and queued nothing else; the bot has no store.
        assert!(events.is_empty(), "{events:?}");
    } else {
        assert_eq!(events.len(), 2, "{events:?}");
        let ev =
            |id: i64| events.iter().find(|e| e.details["message_id"] == id).expect("event").details.clone();
        let band = ev(13);
        assert!(band["band_distance"].as_u64().is_some_and(|d| d <= 31), "{band}");
        let dt = &ev(10);
        assert_eq!(
            (dt["signal"].as_str(), dt["entry_id"].as_i64()),
            (Some("derive"), Some(entry_id)),
            "{dt}"
        );
        assert!(dt["distance"].as_u64().unwrap() > 31 && dt["inliers"].as_u64().unwrap() >= 3, "{dt}");
        assert!(dt.to_string().len() < 1000, "ids and numbers only: {dt}");
    }

    // Disabled: within a second the derive mirror drops it, and a repost is left alone.
    app.store().disable_entry(&Actor::system(), entry_id).await.unwrap();
    let idx = app.derive_index().clone();
    wait(|| idx.is_empty()).await;
    fake.push_update(fake::photo_update(GROUP, 12, 7, "f-derived", "u-derived"));
    drain(&fake, &state_path).await;
    assert_eq!(deleted(&fake).len(), 2, "nothing more deleted");

    let _ = tx.send(());
    tokio::time::timeout(Duration::from_secs(10), bot).await.expect("bot stops").unwrap();
    // The images were only ever in memory: nothing but the database and the state file on disk.
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("c.db"))
        .collect();
    files.sort();
    assert!(files.iter().all(|n| n.starts_with("telegram-state")), "{files:?}");
}

/// `/policy derive`: a match on derivative evidence alone (keypoints, top band; the photo's own
/// PDQ hash does not match) follows the chat's choice. `report` leaves the message and reports
/// it to the log chat; `delete` deletes without strikes (a second post is not sanctioned);
/// `report` in a chat without a log chat deletes, so that no match goes unseen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_evidence_matches_follow_the_chats_derive_policy() {
    const HELD: i64 = -1_004_001;
    const QUIET: i64 = -1_004_002;
    const NO_LOG: i64 = -1_004_003;
    let dir = tempfile::tempdir().unwrap();
    let (app, photo, _, _) = protected_app(dir.path()).await;
    let fake = FakeTelegram::start().await;
    fake.add_file("f-derived", "u-derived", jpeg(&synth::derivative(&photo, 5)));
    let state_path = dir.path().join("telegram-state.json");
    {
        let s = StateFile::open(&state_path).unwrap();
        s.chat(HELD, |c| {
            c.log_chat = Some(LOG);
            c.derive = DerivePolicy::parse("report");
        });
        s.chat(QUIET, |c| c.derive = DerivePolicy::parse("delete"));
        s.chat(NO_LOG, |c| c.derive = Some(DerivePolicy::Report));
        s.save().await.unwrap();
    }
    let (tx, bot) = start_bot(&fake, &state_path, Matcher::Embedded(app.clone()));
    fake.push_update(fake::photo_update(HELD, 20, 7, "f-derived", "u-derived"));
    fake.push_update(fake::photo_update(QUIET, 21, 7, "f-derived", "u-derived"));
    fake.push_update(fake::photo_update(QUIET, 22, 7, "f-derived", "u-derived"));
    fake.push_update(fake::photo_update(NO_LOG, 23, 7, "f-derived", "u-derived"));
    drain(&fake, &state_path).await;
    let mut gone = deleted(&fake);
    gone.sort();
    assert_eq!(gone, vec![21, 22, 23], "held in the chat with a log chat, deleted in the others");
    assert!(fake.calls_to("restrictChatMember").is_empty() && fake.calls_to("banChatMember").is_empty());
    let reports = log_reports(&fake);
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(
        reports[0].contains("/20\n") && reports[0].contains("NOT deleted: derivative evidence only"),
        "{reports:?}"
    );
    let _ = tx.send(());
    tokio::time::timeout(Duration::from_secs(10), bot).await.expect("bot stops").unwrap();
    let s = StateFile::open(&state_path).unwrap();
    for chat in [HELD, QUIET, NO_LOG] {
        let (matched, strikes) = s.chat(chat, |c| (c.matched, c.strikes.len()));
        assert!(matched >= 1 && strikes == 0, "chat {chat}: {matched} matches, {strikes} users with strikes");
    }
}
