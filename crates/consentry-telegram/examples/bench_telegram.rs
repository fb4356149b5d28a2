//! Benchmark of the Telegram bot against the fake Bot API server (issue 5).
//!
//! `cargo run --release -p consentry-telegram --features fake-api --example bench_telegram -- [CORPUS] [N_HASHES] [PHOTOS]`
//! (or `bench/telegram/run.sh`). Defaults: `/work/corpus`, 1,000,000, 2,000.
//!
//! Setup: an SQLite store with N random PDQ hashes in bank `known-abuse` plus the hashes of a
//! quarter of the corpus photos (hashed from the original files), the index loaded through
//! `AppState::start`, the bot in embedded mode with its state file on disk (fsync after every
//! update, as in production), notices off, policy `none` (delete only). Photos are the corpus
//! JPEGs resized to at most 1280 px and re-encoded at quality 87, in memory (what Telegram
//! serves for a photo). Each post gets its own file id, so every post is downloaded and hashed.
//!
//! Phase 1 (latency): posts arrive open-loop at 100/s; for every protected post, the time from
//! the getUpdates answer that handed it to the bot to the deleteMessage call.
//! Phase 2 (throughput): all posts queued at once; photos/s from the first getUpdates answer to
//! the last update confirmed. Side by side in the same run: hashing alone (`hash_bytes`, 2
//! threads) on the same bytes, so the bot's overhead is the ratio.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use consentry_media::HashOptions;
use consentry_pdq::{Hash256, Hasher};
use consentry_server::{AppState, ServerConfig};
use consentry_store::{
    Actor, BankPurpose, BulkLine, EntrySourceKind, NewBank, SignalValue, Store, StoreLocation, StoreOptions,
};
use consentry_telegram::fake::{self, FakeTelegram};
use consentry_telegram::{Action, ApiOptions, BotApi, BotConfig, Matcher, StateFile};

fn resize_jpeg(bytes: &[u8]) -> Option<Vec<u8>> {
    let img = image::load_from_memory(bytes).ok()?;
    let (w, h) = (img.width(), img.height());
    let scale = 1280.0 / f64::from(w.max(h));
    let img = if scale < 1.0 {
        img.resize(
            (f64::from(w) * scale).round() as u32,
            (f64::from(h) * scale).round() as u32,
            image::imageops::FilterType::Triangle,
        )
    } else {
        img
    };
    let rgb = img.to_rgb8();
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 87).encode_image(&rgb).ok()?;
    Some(out)
}

fn random_hash(state: &mut u64) -> Hash256 {
    let mut words = [0u64; 4];
    for w in &mut words {
        // splitmix64
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        *w = z ^ (z >> 31);
    }
    let hex: String = words.iter().map(|w| format!("{w:016x}")).collect();
    Hash256::from_hex(&hex).expect("64 hex digits")
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let corpus = PathBuf::from(args.get(1).map(String::as_str).unwrap_or("/work/corpus"));
    let n_hashes: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let n_posts: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(2000);

    // Photos.
    let t = Instant::now();
    let mut names: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .expect("corpus directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x.eq_ignore_ascii_case("jpg") || x.eq_ignore_ascii_case("jpeg"))
        })
        .collect();
    names.sort();
    let mut photos = Vec::new(); // (resized bytes, original hash)
    let mut hasher = Hasher::new();
    for p in names.iter().take(240) {
        let Ok(orig) = std::fs::read(p) else { continue };
        let Ok(h) = consentry_media::hash_bytes(&orig, &HashOptions::default(), &mut hasher) else {
            continue;
        };
        if h.pdq.quality < 50 {
            continue;
        }
        if let Some(small) = resize_jpeg(&orig) {
            photos.push((small, h.pdq.hash));
        }
    }
    let mean_kb = photos.iter().map(|p| p.0.len()).sum::<usize>() as f64 / photos.len() as f64 / 1024.0;
    eprintln!(
        "{} photos resized (≤1280 px, q87, mean {mean_kb:.0} KiB) in {:.1} s",
        photos.len(),
        t.elapsed().as_secs_f64()
    );

    // Store with N random hashes + the originals' hashes of every 4th photo.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(StoreLocation::Sqlite(dir.path().join("consentry.db")), StoreOptions::default())
        .await
        .expect("store");
    let bank = store
        .create_bank(
            &Actor::system(),
            NewBank {
                name: "known-abuse".into(),
                description: String::new(),
                enabled: true,
                purpose: BankPurpose::KnownAbuse,
            },
        )
        .await
        .expect("bank");
    let t = Instant::now();
    let mut seed = 0x5EED_u64;
    let mut line = 0u64;
    let mut lines = Vec::new();
    for (i, (_, h)) in photos.iter().enumerate() {
        if i % 4 == 0 {
            line += 1;
            lines.push(BulkLine {
                line,
                value: SignalValue::Pdq(*h),
                quality: None,
                metadata: serde_json::Value::Null,
            });
        }
    }
    let mut rejected = 0;
    while (line as usize) < n_hashes + photos.len().div_ceil(4) {
        while lines.len() < 50_000 && (line as usize) < n_hashes + photos.len().div_ceil(4) {
            line += 1;
            lines.push(BulkLine {
                line,
                value: SignalValue::Pdq(random_hash(&mut seed)),
                quality: None,
                metadata: serde_json::Value::Null,
            });
        }
        let r = store
            .add_entries_bulk(&Actor::system(), bank.id, EntrySourceKind::Import, std::mem::take(&mut lines))
            .await
            .expect("import");
        rejected += r.rejected.len();
    }
    eprintln!(
        "imported {line} hashes ({rejected} rejected by the hash policy) in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let app = AppState::start(store, ServerConfig::default()).await.expect("index");
    let index_len = app.index().len();
    eprintln!("index loaded: {index_len} entries in {:.1} s", t.elapsed().as_secs_f64());

    // Side by side: hashing alone, 2 threads, same bytes.
    let t = Instant::now();
    let total = photos.len().min(n_posts);
    let chunks: Vec<Vec<Vec<u8>>> = (0..2)
        .map(|k| photos.iter().skip(k).step_by(2).take(total / 2).map(|p| p.0.clone()).collect())
        .collect();
    let handles: Vec<_> = chunks
        .into_iter()
        .map(|c| {
            std::thread::spawn(move || {
                let mut h = Hasher::new();
                let opts = HashOptions { dihedral: true, ..HashOptions::default() };
                for b in c {
                    let _ = consentry_media::hash_bytes(&b, &opts, &mut h);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("hash thread");
    }
    let hash_only = (total / 2 * 2) as f64 / t.elapsed().as_secs_f64();

    // Bot.
    let fake = FakeTelegram::start().await;
    let api = BotApi::new(&fake.url(), fake::TOKEN, ApiOptions::default()).expect("api");
    let state = Arc::new(StateFile::open(dir.path().join("telegram-state.json")).expect("state"));
    let cfg = BotConfig {
        default_action: Action::None,
        default_notice: false,
        poll_timeout_secs: 5,
        ..BotConfig::default()
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let bot = tokio::spawn(consentry_telegram::run(
        api,
        Matcher::Embedded(app.clone()),
        state.clone(),
        cfg,
        async move {
            let _ = stop_rx.await;
        },
    ));

    let chat = -1_001_234_567i64;
    let mut post = 0usize;
    let mut add_post = |fake: &FakeTelegram| -> (i64, bool) {
        let (bytes, _) = &photos[post % photos.len()];
        let protected = (post % photos.len()) % 4 == 0;
        let id = format!("p{post}");
        fake.add_file(&id, &format!("u{id}"), bytes.clone());
        let msg = 10_000 + post as i64;
        post += 1;
        (fake.push_update(fake::photo_update(chat, msg, 7, &id, &format!("u{id}"))), protected)
    };
    let wait_confirmed = |target: i64| {
        let state = state.clone();
        async move {
            while state.with(|p| p.offset) <= target {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };

    // Phase 1: open loop at 100 posts/s.
    let n1 = (n_posts / 2).max(1);
    let mut ids = Vec::new();
    let start = tokio::time::Instant::now();
    for i in 0..n1 {
        tokio::time::sleep_until(start + Duration::from_millis(10 * i as u64)).await;
        ids.push(add_post(&fake));
    }
    wait_confirmed(ids.last().unwrap().0).await;
    let deletes: HashMap<i64, Instant> = fake
        .timed_calls("deleteMessage")
        .into_iter()
        .map(|(p, at)| (p["message_id"].as_i64().unwrap(), at))
        .collect();
    let mut lat = Vec::new();
    let mut missed = 0;
    for (k, (uid, protected)) in ids.iter().enumerate() {
        if !protected {
            continue;
        }
        match (deletes.get(&(10_000 + k as i64)), fake.served_at(*uid)) {
            (Some(d), Some(s)) => lat.push(d.duration_since(s).as_secs_f64() * 1000.0),
            _ => missed += 1,
        }
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let false_deletes = deletes.len() - lat.len();

    // Phase 2: burst.
    let n2 = n_posts - n1;
    let before = fake.timed_calls("deleteMessage").len();
    let mut last = 0;
    let mut first = 0;
    let mut expected = 0;
    for i in 0..n2 {
        let (uid, protected) = add_post(&fake);
        if i == 0 {
            first = uid;
        }
        last = uid;
        expected += usize::from(protected);
    }
    wait_confirmed(last).await;
    let done_at = Instant::now();
    let t0 = loop {
        if let Some(s) = fake.served_at(first) {
            break s;
        }
    };
    let secs = done_at.duration_since(t0).as_secs_f64();
    let burst_deleted = fake.timed_calls("deleteMessage").len() - before;
    let _ = stop_tx.send(());
    let _ = bot.await;

    println!("| index entries | posts (latency / burst) | protected deleted (latency phase) | missed | p50 ms | p99 ms | max ms | burst photos/s | burst deleted / expected | hashing alone photos/s (2 threads) | bot / hashing |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {index_len} | {n1} / {n2} | {} | {missed} (+{false_deletes} unexpected) | {:.1} | {:.1} | {:.1} | {:.0} | {burst_deleted} / {expected} | {:.0} | {:.2} |",
        lat.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN),
        n2 as f64 / secs,
        hash_only,
        (n2 as f64 / secs) / hash_only
    );
}
