//! The poll loop, the handling of one update, moderation and commands.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use consentry_derive::{Extractor, Pixels, QueryFeatures};
use consentry_media::HashOptions;
use consentry_pdq::{Hash256, Hasher};
use serde_json::Value;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::api::{ApiError, BotApi, Message, User};
use crate::matcher::{Hit, MatchError, Matcher};
use crate::outbox::{Kind, Outbox, OutboxHandle};
use crate::state::{Action, ChatBankEntry, DerivePolicy, Review, StateFile};
use crate::texts::{self, Lang};
use crate::{BotConfig, BotError};

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// What is known of a file's content, by `file_unique_id`.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // 257 bytes, held in a cache; boxing would add an allocation per file
enum Hashed {
    /// The 8 dihedral hashes (original first) and the quality.
    Ok([Hash256; 8], u8),
    /// Not an image the decoders read.
    Unreadable,
}

pub(crate) struct Ctx {
    api: BotApi,
    matcher: Matcher,
    pub(crate) state: Arc<StateFile>,
    cfg: BotConfig,
    me: User,
    out: OutboxHandle,
    hashes: Mutex<HashMap<String, Hashed>>,
    /// Derivative query features of recent files, by `file_unique_id` (a few thousand: they are
    /// tens of KB each; a file whose features were dropped is downloaded again if needed).
    features: Mutex<HashMap<String, Arc<QueryFeatures>>>,
    admins: Mutex<HashMap<(i64, i64), (Instant, bool)>>,
    /// When each user opened cases with `/protect` (last hour), for the per-user limit.
    protects: Mutex<HashMap<i64, Vec<Instant>>>,
    /// Becomes true when the bot is asked to stop (ends the wait for an unreachable matcher).
    stop: watch::Receiver<bool>,
}

/// Calls getMe and builds the shared context and the outbox; `None` when stopped first.
pub(crate) async fn start_ctx(
    api: &BotApi,
    matcher: Matcher,
    state: &Arc<StateFile>,
    cfg: BotConfig,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<(Arc<Ctx>, Outbox)>, BotError> {
    let me = tokio::select! {
        r = api.get_me() => r.map_err(BotError::Start)?,
        _ = stop.wait_for(|s| *s) => return Ok(None),
    };
    tracing::info!(bot = me.id, username = me.username.as_deref().unwrap_or(""), "bot started");
    let outbox = Outbox::start(api.clone(), cfg.rate.clone());
    let ctx = Arc::new(Ctx {
        api: api.clone(),
        matcher,
        state: state.clone(),
        me,
        out: outbox.handle(),
        hashes: Mutex::new(HashMap::new()),
        features: Mutex::new(HashMap::new()),
        admins: Mutex::new(HashMap::new()),
        protects: Mutex::new(HashMap::new()),
        stop: stop.clone(),
        cfg,
    });
    Ok(Some((ctx, outbox)))
}

/// Saves the state and sends the queued messages.
pub(crate) async fn finish(ctx: Arc<Ctx>, outbox: Outbox, state: &StateFile) {
    if let Err(e) = state.save().await {
        tracing::error!(error = %e, "cannot save the bot state");
    }
    drop(ctx);
    outbox.close().await;
    tracing::info!("bot stopped");
}

pub(crate) async fn run_loop(
    api: BotApi,
    matcher: Matcher,
    state: Arc<StateFile>,
    cfg: BotConfig,
    mut stop: watch::Receiver<bool>,
) -> Result<(), BotError> {
    let Some((ctx, outbox)) = start_ctx(&api, matcher, &state, cfg, &mut stop).await? else {
        return Ok(());
    };
    // getUpdates is refused (409) while a webhook is set, e.g. after running in webhook mode.
    // Pending updates are kept: Telegram serves them to getUpdates.
    let removed: Result<bool, ApiError> = api.call("deleteWebhook", &serde_json::json!({})).await;
    if let Err(e) = removed {
        tracing::warn!(error = %e, "deleteWebhook failed (polling may be refused while a webhook is set)");
    }
    let permits = Arc::new(Semaphore::new(ctx.cfg.concurrency.max(1)));
    let mut backoff = ctx.cfg.poll_backoff;
    'poll: while !*stop.borrow() {
        let offset = state.with(|p| p.offset);
        let got = tokio::select! {
            r = api.get_updates(offset, ctx.cfg.poll_timeout_secs, ctx.cfg.poll_limit) => r,
            _ = stop.wait_for(|s| *s) => break,
        };
        let updates = match got {
            Ok(u) => {
                backoff = ctx.cfg.poll_backoff;
                u
            }
            Err(e) => {
                tracing::warn!(error = %e, wait_ms = backoff.as_millis() as u64, "getUpdates failed: backing off");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
                backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
                continue;
            }
        };
        let mut max_id: Option<i64> = None;
        let mut tasks = JoinSet::new();
        let mut interrupted = false;
        for raw in updates {
            let Some(id) = raw.get("update_id").and_then(Value::as_i64) else {
                tracing::warn!("update without an update_id: ignored");
                continue;
            };
            if id < offset || state.with(|p| p.done.contains(&id)) {
                max_id = max_id.max(Some(id));
                tracing::debug!(update = id, "already handled: skipped");
                continue;
            }
            if *stop.borrow() {
                interrupted = true;
                break;
            }
            let permit = permits.clone().acquire_owned().await.expect("semaphore never closed");
            max_id = max_id.max(Some(id));
            let ctx = ctx.clone();
            tasks.spawn(async move {
                let outcome = handle_update(&ctx, raw).await;
                if outcome == Outcome::Done {
                    ctx.state.with(|p| p.done.insert(id));
                    if let Err(e) = ctx.state.save().await {
                        tracing::error!(update = id, error = %e, "cannot save the bot state");
                    }
                }
                drop(permit);
                (id, outcome)
            });
        }
        // the first update left for the next start (stopped while it waited for the matcher)
        let mut deferred: Option<i64> = None;
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok((id, Outcome::Deferred)) => deferred = Some(deferred.map_or(id, |d| d.min(id))),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "update handler panicked"),
            }
        }
        if let Some(m) = max_id {
            state.with(|p| {
                // confirmed up to the first deferred update; those handled after it are in `done`
                p.offset = p.offset.max(deferred.unwrap_or(m + 1));
                let o = p.offset;
                p.done.retain(|d| *d >= o);
            });
            if let Err(e) = state.save().await {
                tracing::error!(error = %e, "cannot save the bot state");
            }
        }
        if interrupted {
            break 'poll;
        }
    }
    finish(ctx, outbox, &state).await;
    Ok(())
}

/// What became of an update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Handled (or deliberately ignored): not to be handled again.
    Done,
    /// The bot was stopped while its image waited for an unreachable matcher: it was not
    /// checked, and must be handled again after the restart (its update is not confirmed).
    Deferred,
}

pub(crate) async fn handle_update(ctx: &Ctx, raw: Value) -> Outcome {
    let id = raw["update_id"].as_i64().unwrap_or_default();
    let Some((field, v)) = ["message", "edited_message", "channel_post", "edited_channel_post"]
        .iter()
        .find_map(|f| raw.get(*f).map(|v| (*f, v)))
    else {
        tracing::debug!(update = id, "update of another kind: ignored");
        return Outcome::Done;
    };
    let msg: Message = match Message::deserialize(v) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(update = id, field, error = %e, "malformed update: ignored");
            return Outcome::Done;
        }
    };
    match msg.chat.kind.as_str() {
        "private" => private_message(ctx, &msg).await,
        "group" | "supergroup" | "channel" => return group_message(ctx, &msg, id).await,
        other => tracing::debug!(update = id, kind = other, "chat of unknown kind: ignored"),
    }
    Outcome::Done
}

use serde::Deserialize;

// ---------------------------------------------------------------------------------------------
// Media

/// A file to hash.
#[derive(Debug, Clone)]
struct Media {
    file_id: String,
    unique_id: String,
    size: Option<u64>,
    what: &'static str,
}

fn media_of(m: &Message) -> Option<Media> {
    let mk = |file_id: &str, unique_id: &str, size: Option<u64>, what| Media {
        file_id: file_id.to_owned(),
        unique_id: unique_id.to_owned(),
        size,
        what,
    };
    if let Some(p) = m.photo.as_ref().and_then(|ps| {
        ps.iter().max_by_key(|p| (u64::from(p.width) * u64::from(p.height), p.file_size.unwrap_or(0)))
    }) {
        return Some(mk(&p.file_id, &p.file_unique_id, p.file_size, "photo"));
    }
    for (v, what) in [(&m.animation, "animation"), (&m.video, "video"), (&m.video_note, "video note")] {
        if let Some(v) = v {
            return v.thumbnail.as_ref().map(|t| mk(&t.file_id, &t.file_unique_id, t.file_size, what));
        }
    }
    if let Some(s) = &m.sticker {
        if !s.is_animated && !s.is_video {
            return Some(mk(&s.file_id, &s.file_unique_id, s.file_size, "sticker"));
        }
        return s
            .thumbnail
            .as_ref()
            .map(|t| mk(&t.file_id, &t.file_unique_id, t.file_size, "sticker thumbnail"));
    }
    if let Some(d) = &m.document {
        if d.mime_type.as_deref().is_some_and(|t| t.starts_with("image/")) {
            return Some(mk(&d.file_id, &d.file_unique_id, d.file_size, "image document"));
        }
        return d
            .thumbnail
            .as_ref()
            .map(|t| mk(&t.file_id, &t.file_unique_id, t.file_size, "document thumbnail"));
    }
    None
}

thread_local! {
    static HASHER: std::cell::RefCell<Hasher> = std::cell::RefCell::new(Hasher::new());
    static EXTRACTOR: std::cell::RefCell<Extractor> = std::cell::RefCell::new(Extractor::new());
}

/// Files whose derivative query features are kept.
const FEATURE_CACHE_ENTRIES: usize = 2_000;

impl Ctx {
    /// Downloads (in memory) and hashes a file, or returns its cached hashes. `None` when it
    /// could not be looked at (too large, getFile or download failed); each case is logged.
    async fn hash_media(&self, media: &Media) -> Option<Hashed> {
        // Derivative features are computed (from the same decoded pixels) while derive entries
        // are active; a file hashed before that, or whose features were dropped, is fetched again.
        let want_features = self.matcher.derive_active();
        if let Some(h) = self.hashes.lock().unwrap_or_else(|p| p.into_inner()).get(&media.unique_id) {
            let have = !matches!(h, Hashed::Ok(..))
                || !want_features
                || self.features.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&media.unique_id);
            if have {
                return Some(h.clone());
            }
        }
        let max = self.cfg.max_download;
        let uid = media.unique_id.as_str();
        if let Some(size) = media.size.filter(|s| *s > max) {
            tracing::info!(file = uid, size, "file larger than the 20 MB Bot API limit: skipped");
            return None;
        }
        let file = match self.api.get_file(&media.file_id).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(file = uid, error = %e, "getFile failed: image not checked");
                return None;
            }
        };
        if let Some(size) = file.file_size.filter(|s| *s > max) {
            tracing::info!(file = uid, size, "file larger than the 20 MB Bot API limit: skipped");
            return None;
        }
        let Some(path) = file.file_path else {
            tracing::warn!(file = uid, "getFile gave no file_path: image not checked");
            return None;
        };
        let bytes = match self.api.download(&path, max).await {
            Ok(b) => b,
            Err(ApiError::TooLarge { size }) => {
                tracing::info!(file = uid, size, "file larger than the 20 MB Bot API limit: skipped");
                return None;
            }
            Err(e) => {
                tracing::warn!(file = uid, error = %e, "download failed: image not checked");
                return None;
            }
        };
        let n = bytes.len();
        let res = tokio::task::spawn_blocking(move || {
            let opts = HashOptions { dihedral: true, ..HashOptions::default() };
            let (info, img, mode) = consentry_media::decode_for_hashing(&bytes, &opts)?;
            drop(bytes);
            let h =
                HASHER.with(|h| consentry_media::hash_decoded(info, &img, mode, true, &mut h.borrow_mut()));
            let features = if want_features {
                Pixels::new(img.width, img.height, img.format, &img.data)
                    .ok()
                    .map(|px| EXTRACTOR.with(|ex| ex.borrow_mut().query(&px)))
            } else {
                None
            };
            Ok::<_, consentry_media::MediaError>((h, features))
        })
        .await;
        let hashed = match res {
            Ok(Ok((h, features))) => {
                if let Some(f) = features {
                    let mut fc = self.features.lock().unwrap_or_else(|p| p.into_inner());
                    if fc.len() >= FEATURE_CACHE_ENTRIES {
                        fc.clear();
                    }
                    fc.insert(media.unique_id.clone(), Arc::new(f));
                }
                match h.dihedral {
                    Some(d) => Hashed::Ok(d.hashes, d.quality),
                    None => Hashed::Ok([h.pdq.hash; 8], h.pdq.quality),
                }
            }
            Ok(Err(e)) => {
                tracing::info!(file = uid, bytes = n, error = %e, "not a readable image: not checked");
                Hashed::Unreadable
            }
            Err(e) => {
                tracing::error!(file = uid, error = %e, "hashing task failed");
                return None;
            }
        };
        let mut cache = self.hashes.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= self.cfg.hash_cache_entries {
            cache.clear();
        }
        cache.insert(media.unique_id.clone(), hashed.clone());
        Some(hashed)
    }

    /// The derivative query features of a file hashed by [`Ctx::hash_media`], if computed.
    fn features_of(&self, media: &Media) -> Option<Arc<QueryFeatures>> {
        self.features.lock().unwrap_or_else(|p| p.into_inner()).get(&media.unique_id).cloned()
    }

    /// The closest match: the shared banks (store or server) and this chat's own bank by PDQ,
    /// then, when none, the derive entries (embedded mode) with the image's query features.
    async fn find(
        &self,
        chat: i64,
        hashes: &[Hash256; 8],
        features: Option<&QueryFeatures>,
    ) -> Result<Option<Hit>, MatchError> {
        let r = self.cfg.radius;
        let started = std::time::Instant::now();
        let mut wait = std::time::Duration::from_millis(200);
        let mut failures = 0u32;
        let mut quick = 0u32;
        let mut best = loop {
            match self.matcher.lookup(hashes, r).await {
                Ok(h) => {
                    if failures > 0 {
                        tracing::info!(
                            failures,
                            waited_ms = started.elapsed().as_millis() as u64,
                            "lookup answered again"
                        );
                    }
                    break h;
                }
                // The store or the server is unreachable: wait for it, within the patience.
                Err(MatchError::Unavailable(e)) if started.elapsed() + wait <= self.cfg.lookup_patience => {
                    if failures == 0 {
                        tracing::warn!(error = %e, "lookup failed: retrying until it answers");
                    }
                    failures += 1;
                    let mut stop = self.stop.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.wait_for(|s| *s) => return Err(MatchError::Unavailable(e)),
                    }
                    wait = (wait * 2).min(std::time::Duration::from_secs(5));
                }
                // Anything else: two quick retries, as before.
                Err(e) if quick < 2 && !matches!(e, MatchError::Unavailable(_)) => {
                    quick += 1;
                    tracing::warn!(error = %e, "lookup failed: retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(200 * u64::from(quick))).await;
                }
                Err(e) => return Err(e),
            }
        };
        let own = self.state.chat(chat, |c| {
            c.bank
                .iter()
                .filter_map(|e| Hash256::from_hex(&e.hash).ok())
                .map(|h| hashes.iter().map(|q| q.distance(&h)).min().unwrap_or(u32::MAX))
                .min()
        });
        if let Some(d) = own.filter(|d| *d <= r) {
            if best.as_ref().map_or(true, |b: &Hit| d < b.distance) {
                best = Some(Hit::pdq(format!("chat {chat}"), d, None));
            }
        }
        if best.is_none() {
            if let Some(q) = features {
                best = self.matcher.lookup_derive(q).await?;
            }
        }
        if let Some(id) = best.as_ref().and_then(|h| h.entry_id) {
            self.matcher.count_match(chat, id);
        }
        Ok(best)
    }

    fn lang_of_chat(&self, chat: i64) -> Lang {
        self.state.chat(chat, |c| c.lang).unwrap_or(self.cfg.default_lang)
    }

    fn reply(&self, m: &Message, text: String) {
        self.out.send(m.chat.id, text, Some(m.message_id), Kind::Reply);
    }

    async fn is_admin(&self, m: &Message) -> bool {
        if m.chat.kind == "channel" || m.sender_chat.as_ref().is_some_and(|c| c.id == m.chat.id) {
            return true; // channel posts and anonymous admins
        }
        let Some(u) = &m.from else { return false };
        self.is_admin_of(m.chat.id, u.id).await
    }

    async fn is_admin_of(&self, chat: i64, user: i64) -> bool {
        if let Some((at, v)) = self.admins.lock().unwrap_or_else(|p| p.into_inner()).get(&(chat, user)) {
            if at.elapsed() < self.cfg.admin_cache_ttl {
                return *v;
            }
        }
        let v = match self.api.get_chat_member(chat, user).await {
            Ok(cm) => cm.status == "creator" || cm.status == "administrator",
            Err(e) => {
                tracing::warn!(chat, user, error = %e, "getChatMember failed: treated as not an admin");
                return false;
            }
        };
        self.admins.lock().unwrap_or_else(|p| p.into_inner()).insert((chat, user), (Instant::now(), v));
        v
    }
}

fn message_link(m: &Message) -> String {
    if let Some(u) = &m.chat.username {
        return format!("https://t.me/{u}/{}", m.message_id);
    }
    let id = m.chat.id.to_string();
    match id.strip_prefix("-100") {
        Some(internal) => format!("https://t.me/c/{internal}/{}", m.message_id),
        None => format!("message {} (basic groups have no links)", m.message_id),
    }
}

fn describe_sender(m: &Message) -> String {
    if let Some(c) = &m.sender_chat {
        return format!("chat {} ({})", c.title.as_deref().unwrap_or(""), c.id);
    }
    match &m.from {
        Some(u) => {
            let mut s = u.first_name.clone();
            if let Some(l) = &u.last_name {
                s.push(' ');
                s.push_str(l);
            }
            match &u.username {
                Some(n) => format!("{s} (@{n}, id {})", u.id),
                None => format!("{s} (id {})", u.id),
            }
        }
        None => "unknown".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Groups and channels

async fn group_message(ctx: &Ctx, m: &Message, update: i64) -> Outcome {
    if let Some(text) = &m.text {
        if let Some((cmd, args)) = parse_command(text, ctx.me.username.as_deref()) {
            group_command(ctx, m, &cmd, &args).await;
            return Outcome::Done;
        }
    }
    let Some(media) = media_of(m) else { return Outcome::Done };
    let chat = m.chat.id;
    // the image's hashes and what the lookup found, where it could be hashed well enough
    let looked = match ctx.hash_media(&media).await {
        Some(Hashed::Ok(hashes, quality)) if quality >= ctx.cfg.min_quality => {
            let features = ctx.features_of(&media);
            let found = ctx.find(chat, &hashes, features.as_deref()).await;
            if found.is_err() && *ctx.stop.borrow() {
                // stopped while waiting for the matcher: checked after the restart, counted then
                tracing::warn!(
                    chat,
                    message = m.message_id,
                    update,
                    "stopping before the lookup answered: left for the next start"
                );
                return Outcome::Deferred;
            }
            Some((hashes, found))
        }
        Some(Hashed::Ok(_, quality)) => {
            tracing::debug!(chat, message = m.message_id, quality, "quality too low to match");
            None
        }
        _ => None,
    };
    ctx.state.chat(chat, |c| c.scanned += 1);
    let Some((hashes, found)) = looked else { return Outcome::Done };
    let hit = match found {
        Ok(Some(h)) => h,
        Ok(None) => return Outcome::Done,
        Err(e) => {
            tracing::error!(chat, message = m.message_id, hash = %hashes[0].to_hex(), error = %e, "lookup failed: image not checked");
            return Outcome::Done;
        }
    };
    act_on_match(ctx, m, &media, &hashes[0], &hit, update).await;
    Outcome::Done
}

async fn act_on_match(ctx: &Ctx, m: &Message, media: &Media, hash: &Hash256, hit: &Hit, update: i64) {
    let chat = m.chat.id;
    // A match on local evidence only follows the chat's derive policy; any other acts.
    let policy = if hit.local_evidence_only() { policy_of(ctx, chat).2 } else { DerivePolicy::Act };
    // Held for the admins: only where they will see it.
    let held = policy == DerivePolicy::Report && ctx.state.chat(chat, |c| c.log_chat.is_some());
    let deleted = if held {
        false
    } else {
        match ctx.api.delete_message(chat, m.message_id).await {
            Ok(_) => true,
            Err(e) if e.is_message_gone() => true,
            Err(e) => {
                tracing::error!(chat, message = m.message_id, error = %e, "deleteMessage failed");
                false
            }
        }
    };
    let now = unix_now();
    let (action, notice, log_chat, lang) = ctx.state.chat(chat, |c| {
        c.matched += 1;
        c.deleted += u64::from(deleted);
        c.last_match_at = Some(now);
        (
            c.action.unwrap_or(ctx.cfg.default_action),
            c.notice.unwrap_or(ctx.cfg.default_notice),
            c.log_chat,
            c.lang,
        )
    });
    let lang = lang.unwrap_or(ctx.cfg.default_lang);
    // The sanction, counting strikes per user (an album counts once); none on local evidence
    // alone unless the chat's derive policy is `act`.
    let sanction: String = match (&m.from, &m.sender_chat) {
        _ if held => "held".into(),
        _ if policy != DerivePolicy::Act => "local-only".into(),
        (Some(u), None) => {
            let strike = ctx.state.chat(chat, |c| {
                let s = c.strikes.entry(u.id).or_default();
                if m.media_group_id.is_some() && s.last_media_group == m.media_group_id {
                    None
                } else {
                    s.count += 1;
                    s.last_media_group = m.media_group_id.clone();
                    s.last_at = now;
                    Some(s.count)
                }
            });
            match strike {
                None => "repeat".into(),
                Some(n) => {
                    let what = match (action, n) {
                        (Action::None, _) => "none",
                        (Action::Ban, _) => "ban",
                        (Action::Restrict, 1) => "restrict-day",
                        (Action::Restrict, 2) => "restrict-week",
                        (Action::Restrict, _) => "ban",
                        (Action::Escalate, 1) => "none",
                        (Action::Escalate, 2) => "restrict-day",
                        (Action::Escalate, _) => "ban",
                    };
                    let r = match what {
                        "ban" => Some(ctx.api.ban_chat_member(chat, u.id, 0).await),
                        "restrict-day" => Some(ctx.api.restrict_chat_member(chat, u.id, now + 86_400).await),
                        "restrict-week" => {
                            Some(ctx.api.restrict_chat_member(chat, u.id, now + 7 * 86_400).await)
                        }
                        _ => None,
                    };
                    match r {
                        Some(Err(e)) => {
                            tracing::warn!(chat, user = u.id, sanction = what, error = %e, "sanction failed");
                            format!("{what}: {e}")
                        }
                        _ => what.to_owned(),
                    }
                }
            }
        }
        _ => "channel".into(),
    };
    tracing::info!(
        update, chat, message = m.message_id, file = %media.unique_id, kind = media.what,
        hash = %hash.to_hex(), bank = %hit.bank, signal = hit.signal, distance = hit.distance,
        inliers = hit.inliers, score = hit.score, band_distance = hit.band_distance, mirrored = hit.mirrored,
        deleted, sanction = %sanction,
        "match"
    );
    if let Matcher::Embedded(app) = &ctx.matcher {
        // The store's audit log: ids, hashes and distances only, never the image.
        let mut details = serde_json::json!({
            "update_id": update,
            "chat_id": chat,
            "message_id": m.message_id,
            "sender_id": m.from.as_ref().map(|u| u.id),
            "sender_chat_id": m.sender_chat.as_ref().map(|c| c.id),
            "file_unique_id": media.unique_id,
            "media": media.what,
            "pdq": hash.to_hex(),
            "bank": hit.bank,
            "entry_id": hit.entry_id,
            "distance": hit.distance,
            "signal": hit.signal,
            "deleted": deleted,
            "sanction": sanction,
        });
        if hit.signal == "derive" {
            details["inliers"] = hit.inliers.into();
            details["score"] = hit.score.into();
            details["band_distance"] = hit.band_distance.into();
            details["mirrored"] = hit.mirrored.into();
        }
        let target = format!("telegram-message:{chat}:{}", m.message_id);
        let actor = consentry_store::Actor::named("telegram-bot");
        if let Err(e) = app.store().record_audit(&actor, "telegram.match", &target, details).await {
            tracing::error!(chat, message = m.message_id, error = %e, "cannot record the audit event");
        }
    }
    if notice && deleted && sanction != "repeat" {
        ctx.out.send(chat, texts::removed_notice(lang), None, Kind::Notice);
    }
    if let Some(log) = log_chat {
        let bank_label = if hit.signal == "derive" {
            let mut evidence = Vec::new();
            if hit.inliers > 0 {
                let how = if hit.mirrored { " (mirrored)" } else { "" };
                evidence.push(format!("{} keypoints{how}, score {}", hit.inliers, hit.score));
            }
            if let Some(d) = hit.band_distance {
                evidence.push(format!("top band at distance {d}"));
            }
            if evidence.is_empty() {
                // the signature's global PDQ hash matched
                evidence.push(format!("PDQ distance {}", hit.distance));
            }
            format!("{} (derivative: {})", hit.bank, evidence.join("; "))
        } else {
            hit.bank.clone()
        };
        let llang = ctx.lang_of_chat(log);
        let title = m.chat.title.clone().unwrap_or_default();
        let text = texts::match_report(
            llang,
            &texts::MatchReport {
                chat_title: &title,
                chat_id: chat,
                bank: &bank_label,
                distance: hit.distance,
                sender: &describe_sender(m),
                link: &message_link(m),
                outcome: &if held {
                    texts::held_for_admins(llang)
                } else {
                    texts::outcome(llang, deleted, &texts::sanction(llang, &sanction))
                },
            },
        );
        ctx.out.send(log, text, None, Kind::Report);
    }
}

/// `/cmd@bot a b` → ("cmd", ["a", "b"]); `None` for non-commands and other bots' commands.
fn parse_command(text: &str, me: Option<&str>) -> Option<(String, Vec<String>)> {
    let text = text.trim();
    let rest = text.strip_prefix('/')?;
    let mut parts = rest.split_whitespace();
    let head = parts.next()?;
    let (cmd, target) = match head.split_once('@') {
        Some((c, t)) => (c, Some(t)),
        None => (head, None),
    };
    if let (Some(t), Some(me)) = (target, me) {
        if !t.eq_ignore_ascii_case(me) {
            return None;
        }
    }
    Some((cmd.to_ascii_lowercase(), parts.map(str::to_owned).collect()))
}

async fn group_command(ctx: &Ctx, m: &Message, cmd: &str, args: &[String]) {
    let chat = m.chat.id;
    let lang = ctx.lang_of_chat(chat);
    let admin_only = matches!(cmd, "status" | "policy" | "logchat" | "banks" | "approve" | "reject" | "lang");
    if admin_only && !ctx.is_admin(m).await {
        ctx.reply(m, texts::admins_only(lang));
        return;
    }
    match cmd {
        "start" | "help" => ctx.reply(m, texts::help_group(lang)),
        "status" => {
            let index = ctx.matcher.index_size().map(|n| n.to_string()).unwrap_or_else(|| "remote".into());
            let (action, notice, _) = policy_of(ctx, chat);
            let text = ctx.state.chat(chat, |c| {
                texts::group_status(
                    lang,
                    c.scanned,
                    c.matched,
                    c.deleted,
                    c.last_match_at,
                    &index,
                    action.name(),
                    notice,
                    c.log_chat,
                    c.reviews.len(),
                    c.bank.len(),
                )
            });
            ctx.reply(m, text);
        }
        "policy" => {
            match args.first().map(String::as_str) {
                None => {}
                Some("notice") => match args.get(1).map(|s| s.to_ascii_lowercase()).as_deref() {
                    Some("on") => ctx.state.chat(chat, |c| c.notice = Some(true)),
                    Some("off") => ctx.state.chat(chat, |c| c.notice = Some(false)),
                    _ => {}
                },
                Some("derive") => {
                    if let Some(p) = args.get(1).and_then(|a| DerivePolicy::parse(a)) {
                        ctx.state.chat(chat, |c| c.derive = Some(p));
                    }
                }
                Some(a) => {
                    if let Some(a) = Action::parse(a) {
                        ctx.state.chat(chat, |c| c.action = Some(a));
                    }
                }
            }
            let (action, notice, derive) = policy_of(ctx, chat);
            ctx.reply(m, texts::policy(lang, action.name(), notice, derive.name()));
        }
        "logchat" => logchat(ctx, m, args, lang).await,
        "banks" => {
            let lines = match ctx.matcher.banks().await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "listing banks failed");
                    vec![texts::try_later(lang)]
                }
            };
            let own = ctx.state.chat(chat, |c| c.bank.len());
            ctx.reply(m, texts::banks(lang, &lines, own));
        }
        "lang" => {
            if let Some(l) = args.first().and_then(|a| Lang::parse(a)) {
                ctx.state.chat(chat, |c| c.lang = Some(l));
                ctx.reply(m, texts::lang_set(l));
            }
        }
        "report" => report(ctx, m, lang).await,
        "approve" | "reject" => {
            let n = args.first().and_then(|a| a.trim_start_matches('#').parse::<u64>().ok());
            let review = n.and_then(|n| {
                ctx.state.chat(chat, |c| {
                    let i = c.reviews.iter().position(|r| r.id == n)?;
                    Some(c.reviews.remove(i))
                })
            });
            let Some(r) = review else {
                let ids = ctx.state.chat(chat, |c| c.reviews.iter().map(|r| r.id).collect::<Vec<_>>());
                ctx.reply(m, texts::review_queue(lang, &ids));
                return;
            };
            if cmd == "approve" {
                let by = m.from.as_ref().map(|u| u.id).unwrap_or(chat);
                ctx.state.chat(chat, |c| {
                    c.bank.push(ChatBankEntry {
                        hash: r.hash.clone(),
                        review_id: r.id,
                        approved_by: by,
                        at: unix_now(),
                    })
                });
                match ctx.api.delete_message(chat, r.message_id).await {
                    Ok(_) => ctx.state.chat(chat, |c| c.deleted += 1),
                    Err(e) if e.is_message_gone() => {}
                    Err(e) => {
                        tracing::warn!(chat, message = r.message_id, error = %e, "deleting the approved report failed")
                    }
                }
                tracing::info!(chat, review = r.id, hash = %r.hash, "report approved: hash added to the chat's bank");
                ctx.reply(m, texts::approved(lang, r.id));
            } else {
                tracing::info!(chat, review = r.id, "report rejected");
                ctx.reply(m, texts::rejected(lang, r.id));
            }
        }
        _ => {}
    }
}

fn policy_of(ctx: &Ctx, chat: i64) -> (Action, bool, DerivePolicy) {
    ctx.state.chat(chat, |c| {
        (
            c.action.unwrap_or(ctx.cfg.default_action),
            c.notice.unwrap_or(ctx.cfg.default_notice),
            c.derive.unwrap_or(ctx.cfg.default_derive),
        )
    })
}

/// `/logchat <id>|off` in the moderated chat, or `/logchat from <channel id>` in the log chat
/// (channels cannot send commands as a person). The sender must be an admin of both chats.
async fn logchat(ctx: &Ctx, m: &Message, args: &[String], lang: Lang) {
    let chat = m.chat.id;
    match args.first().map(String::as_str) {
        None => {
            let cur = ctx.state.chat(chat, |c| c.log_chat);
            ctx.reply(m, texts::logchat_set(lang, cur));
        }
        Some("off") => {
            ctx.state.chat(chat, |c| c.log_chat = None);
            ctx.reply(m, texts::logchat_set(lang, None));
        }
        Some(a) => {
            let (moderated, log, target) = if a == "from" {
                match args.get(1).and_then(|s| s.parse::<i64>().ok()) {
                    Some(src) => (src, chat, src),
                    None => return ctx.reply(m, texts::logchat_usage(lang)),
                }
            } else {
                match a.parse::<i64>() {
                    Ok(t) => (chat, t, t),
                    Err(_) => return ctx.reply(m, texts::logchat_usage(lang)),
                }
            };
            let Some(u) = m.from.as_ref().filter(|_| m.sender_chat.is_none()) else {
                return ctx.reply(m, texts::logchat_usage(lang));
            };
            if !ctx.is_admin_of(target, u.id).await {
                return ctx.reply(m, texts::logchat_usage(lang));
            }
            ctx.state.chat(moderated, |c| c.log_chat = Some(log));
            tracing::info!(chat = moderated, log_chat = log, "log chat set");
            ctx.reply(m, texts::logchat_set(lang, Some(log)));
        }
    }
}

/// `/report` in reply to an image: its hash joins the chat's review queue (hashes only).
async fn report(ctx: &Ctx, m: &Message, lang: Lang) {
    let chat = m.chat.id;
    let Some(target) = m.reply_to_message.as_deref() else { return ctx.reply(m, texts::report_usage(lang)) };
    let Some(media) = media_of(target) else { return ctx.reply(m, texts::report_usage(lang)) };
    let Some(Hashed::Ok(hashes, _)) = ctx.hash_media(&media).await else {
        return ctx.reply(m, texts::report_failed(lang));
    };
    let hex = hashes[0].to_hex();
    let reporter = m.from.as_ref().map(|u| u.id).unwrap_or(0);
    let queued = ctx.state.with(|p| {
        let next = p.next_review_id + 1;
        let c = p.chats.entry(chat).or_default();
        if c.reviews.iter().any(|r| r.hash == hex) || c.bank.iter().any(|b| b.hash == hex) {
            return None;
        }
        p.next_review_id = next;
        let c = p.chats.entry(chat).or_default();
        c.reviews.push(Review {
            id: next,
            hash: hex.clone(),
            dihedral: hashes.iter().map(|h| h.to_hex()).collect(),
            message_id: target.message_id,
            reporter_id: reporter,
            at: unix_now(),
        });
        Some((next, c.log_chat))
    });
    match queued {
        None => ctx.reply(m, texts::report_known(lang)),
        Some((id, log)) => {
            tracing::info!(chat, review = id, hash = %hex, "image reported for review");
            ctx.reply(m, texts::report_queued(lang, id));
            if let Some(log) = log {
                let l = ctx.lang_of_chat(log);
                ctx.out.send(
                    log,
                    texts::report_for_admins(l, id, chat, &hex, &message_link(target)),
                    None,
                    Kind::Report,
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Private chats

async fn private_message(ctx: &Ctx, m: &Message) {
    let lang = ctx
        .state
        .chat(m.chat.id, |c| c.lang)
        .or_else(|| m.from.as_ref().and_then(|u| u.language_code.as_deref()).and_then(Lang::parse))
        .unwrap_or(ctx.cfg.default_lang);
    let has_media = m.photo.is_some()
        || m.document.is_some()
        || m.sticker.is_some()
        || m.animation.is_some()
        || m.video.is_some()
        || m.video_note.is_some();
    if has_media {
        // Never downloaded: the bot does not take images from people.
        return ctx.reply(m, texts::no_images_here(lang));
    }
    let Some((cmd, args)) = m.text.as_deref().and_then(|t| parse_command(t, ctx.me.username.as_deref()))
    else {
        return ctx.reply(m, texts::help_private(lang));
    };
    match cmd.as_str() {
        "protect" => {
            if args.is_empty() || args.len() > 100 {
                return ctx.reply(m, texts::protect_usage(lang));
            }
            let mut hashes = Vec::new();
            for (i, a) in args.iter().enumerate() {
                match Hash256::from_hex(a.trim_matches(',')) {
                    Ok(h) => hashes.push(h),
                    Err(e) => return ctx.reply(m, texts::protect_bad_hash(lang, i, &e.to_string())),
                }
            }
            let user = m.from.as_ref().map(|u| u.id).unwrap_or(m.chat.id);
            let limit = ctx.cfg.protect_per_hour;
            let hour = std::time::Duration::from_secs(3600);
            let recent = {
                let mut g = ctx.protects.lock().unwrap_or_else(|p| p.into_inner());
                let v = g.entry(user).or_default();
                v.retain(|t| t.elapsed() < hour);
                v.len()
            };
            if limit > 0 && recent >= limit as usize {
                tracing::info!(user, limit, "/protect rate limit reached");
                return ctx.reply(m, texts::protect_rate_limited(lang, limit));
            }
            match ctx.matcher.create_case(&hashes).await {
                Ok((number, pin)) => {
                    ctx.protects
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(user)
                        .or_default()
                        .push(Instant::now());
                    tracing::info!(hashes = hashes.len(), "case opened through Telegram");
                    ctx.reply(m, texts::protect_done(lang, &number, &pin, hashes.len()));
                }
                Err(MatchError::InvalidHash(i, r)) => ctx.reply(m, texts::protect_bad_hash(lang, i, &r)),
                Err(e) => {
                    tracing::error!(error = %e, "opening a case failed");
                    ctx.reply(m, texts::try_later(lang));
                }
            }
        }
        "status" | "withdraw" => {
            let (Some(number), Some(pin)) = (args.first(), args.get(1)) else {
                return ctx.reply(m, texts::case_usage(lang));
            };
            // The message holds a PIN: remove it from the chat history (best effort).
            if let Err(e) = ctx.api.delete_message(m.chat.id, m.message_id).await {
                tracing::debug!(error = %e, "could not delete the message holding a PIN");
            }
            let text = if cmd == "status" {
                match ctx.matcher.case_status(number, pin).await {
                    Ok(c) => {
                        let caught = c.caught.as_ref().filter(|_| ctx.cfg.show_case_matches);
                        texts::case_status(lang, &c.number, &c.status, c.active, c.total, caught)
                    }
                    Err(e) => case_error(lang, e),
                }
            } else {
                match ctx.matcher.withdraw_case(number, pin).await {
                    Ok(n) => {
                        tracing::info!("case withdrawn through Telegram");
                        texts::case_withdrawn(lang, &n)
                    }
                    Err(e) => case_error(lang, e),
                }
            };
            ctx.out.send(m.chat.id, text, None, Kind::Reply);
        }
        "lang" => {
            if let Some(l) = args.first().and_then(|a| Lang::parse(a)) {
                ctx.state.chat(m.chat.id, |c| c.lang = Some(l));
                ctx.reply(m, texts::lang_set(l));
            }
        }
        _ => ctx.reply(m, texts::help_private(lang)),
    }
}

fn case_error(lang: Lang, e: MatchError) -> String {
    match e {
        MatchError::BadCredentials => texts::bad_credentials(lang),
        MatchError::Locked => texts::locked(lang),
        other => {
            tracing::error!(error = %other, "case operation failed");
            texts::try_later(lang)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_other_bots_are_ignored() {
        assert_eq!(parse_command("/policy ban", Some("cbot")), Some(("policy".into(), vec!["ban".into()])));
        assert_eq!(parse_command("/Status@CBot", Some("cbot")), Some(("status".into(), vec![])));
        assert_eq!(parse_command("/status@otherbot", Some("cbot")), None);
        assert_eq!(parse_command("hello /status", Some("cbot")), None);
    }

    #[test]
    fn links_for_public_private_and_basic_groups() {
        let mut m: Message = serde_json::from_value(serde_json::json!({
            "message_id": 7, "chat": {"id": -1001234, "type": "supergroup"}
        }))
        .unwrap();
        assert_eq!(message_link(&m), "https://t.me/c/1234/7");
        m.chat.username = Some("pub".into());
        assert_eq!(message_link(&m), "https://t.me/pub/7");
        m.chat.username = None;
        m.chat.id = -55;
        assert!(message_link(&m).starts_with("message 7"));
    }

    #[test]
    fn largest_photo_and_thumbnails_are_chosen() {
        let m: Message = serde_json::from_value(serde_json::json!({
            "message_id": 1, "chat": {"id": -1, "type": "group"},
            "photo": [
                {"file_id": "s", "file_unique_id": "us", "width": 90, "height": 60},
                {"file_id": "l", "file_unique_id": "ul", "width": 1280, "height": 853},
                {"file_id": "m", "file_unique_id": "um", "width": 320, "height": 213}
            ]
        }))
        .unwrap();
        assert_eq!(media_of(&m).unwrap().file_id, "l");
        let v: Message = serde_json::from_value(serde_json::json!({
            "message_id": 1, "chat": {"id": -1, "type": "group"},
            "video": {"file_id": "v", "file_unique_id": "uv", "thumbnail": {"file_id": "t", "file_unique_id": "ut", "width": 320, "height": 180}}
        }))
        .unwrap();
        assert_eq!(media_of(&v).unwrap().file_id, "t");
        let s: Message = serde_json::from_value(serde_json::json!({
            "message_id": 1, "chat": {"id": -1, "type": "group"},
            "sticker": {"file_id": "st", "file_unique_id": "ust", "is_animated": true, "is_video": false,
                        "thumb": {"file_id": "th", "file_unique_id": "uth"}}
        }))
        .unwrap();
        assert_eq!(media_of(&s).unwrap().file_id, "th");
        let d: Message = serde_json::from_value(serde_json::json!({
            "message_id": 1, "chat": {"id": -1, "type": "group"},
            "document": {"file_id": "d", "file_unique_id": "ud", "mime_type": "image/png"}
        }))
        .unwrap();
        assert_eq!(media_of(&d).unwrap().file_id, "d");
    }
}
