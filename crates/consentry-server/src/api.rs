//! The endpoints and their wire types.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use consentry_derive::{Extractor, Pixels, QueryFeatures, Signature};
use consentry_index::Match;
use consentry_media::{HashOptions, ImageFormat};
use consentry_pdq::{Dihedral, Hash256, Hasher};
use consentry_store::{
    day_of, format_day, Actor, Bank, BankPurpose, BankUpdate, BulkLine, Case, CaseHash, CaseStatus, CaseView,
    Entry, EntrySourceKind, NewBank, NewCase, NewEntry, Scope, SignalType, SignalValue, StatsGroup, StatsKey,
    StatsQuery, StoreError, Timestamp,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Auth;
use crate::body::{parse_json, read_bytes, ImageUpload, JsonBody};
use crate::details::Details;
use crate::error::{codes, ApiError, ApiResult};
use crate::{AppState, Routes};

/// PDQ's match threshold, used by `/v1/compare`.
pub(crate) const MATCH_THRESHOLD: u32 = 31;

pub(crate) fn routes() -> Routes {
    Routes::new()
        .add("/health", &["GET"], get(health))
        .add("/ready", &["GET"], get(ready))
        .add("/metrics", &["GET"], get(metrics))
        .add("/openapi.json", &["GET"], get(openapi))
        .add("/v1/hash", &["POST"], post(hash_image))
        .add("/v1/lookup", &["GET", "POST"], get(lookup_get).post(lookup_post))
        .add("/v1/lookup/image", &["POST"], post(lookup_image))
        .add("/v1/lookup/features", &["POST"], post(lookup_features))
        .add("/v1/compare", &["POST"], post(compare))
        .add("/v1/banks", &["GET", "POST"], get(list_banks).post(create_bank))
        .add(
            "/v1/banks/{name}",
            &["GET", "PATCH", "DELETE"],
            get(get_bank).patch(patch_bank).delete(delete_bank),
        )
        .add("/v1/banks/{name}/entries", &["GET", "POST"], get(list_entries).post(add_entries))
        .add("/v1/banks/{name}/import", &["POST"], post(crate::bulk::import))
        .add("/v1/banks/{name}/export", &["GET"], get(crate::bulk::export))
        .add("/v1/entries/{id}", &["GET", "DELETE"], get(get_entry).delete(delete_entry))
        .add("/v1/entries/{id}/disable", &["POST"], post(disable_entry))
        .add("/v1/entries/{id}/enable", &["POST"], post(enable_entry))
        .add("/v1/cases", &["GET", "POST"], get(list_cases).post(create_case))
        .add("/v1/cases/{number}", &["GET", "PATCH"], get(staff_case).patch(patch_case))
        .add("/v1/cases/{number}/status", &["POST"], post(case_status))
        .add("/v1/cases/{number}/pin", &["POST"], post(reset_case_pin))
        .add("/v1/cases/{number}/withdraw", &["POST"], post(withdraw_case))
        .add("/v1/stats/matches", &["GET"], get(match_stats))
        // Meta's HMA 2.0 lookup and hashing API (`hma.rs`).
        .add("/m/raw_lookup", &["GET"], get(crate::hma::raw_lookup))
        .add("/m/lookup", &["GET", "POST"], get(crate::hma::lookup_get).post(crate::hma::lookup_post))
        .add("/m/compare", &["POST"], post(crate::hma::compare))
        .add("/m/index/status", &["GET"], get(crate::hma::index_status))
        .add("/h/hash", &["GET", "POST"], get(crate::hma::hash_get).post(crate::hma::hash_post))
}

// ---------------------------------------------------------------------------------------------
// Helpers

pub(crate) fn query<T>(q: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    q.map(|Query(t)| t).map_err(|e| ApiError::bad_request(format!("bad query string: {}", e.body_text())))
}

pub(crate) fn path<T>(p: Result<Path<T>, PathRejection>) -> ApiResult<T> {
    p.map(|Path(t)| t).map_err(|e| ApiError::bad_request(format!("bad path parameter: {}", e.body_text())))
}

/// Parses a 64-digit hex PDQ hash; `what` names it in the error (`hash`, `hashes[3]`).
pub(crate) fn parse_hash(text: &str, what: &str) -> ApiResult<Hash256> {
    Hash256::from_hex(text.trim()).map_err(|e| not_a_hash(what, &e))
}

/// The error for a text (`what`) that is not a PDQ hash.
fn not_a_hash(what: &str, e: &consentry_pdq::ParseHashError) -> ApiError {
    ApiError::invalid_hash(format!("{what} is not a PDQ hash (64 hexadecimal digits): {e}"))
}

fn check_radius(state: &AppState, radius: Option<u32>) -> ApiResult<u32> {
    let r = radius.unwrap_or(state.inner.config.default_radius);
    let max = state.inner.config.max_radius;
    if r > max {
        return Err(ApiError::bad_request(format!("radius {r} is larger than the maximum {max}")));
    }
    Ok(r)
}

/// The size of a page of entries or cases: 100 by default, 1 to 1,000 when given.
fn page_limit(limit: Option<u32>) -> ApiResult<u32> {
    match limit.unwrap_or(100) {
        l @ 1..=1000 => Ok(l),
        l => Err(ApiError::bad_request(format!("limit {l} is out of range: a page holds 1 to 1000"))),
    }
}

fn bank_json(b: &Bank) -> Value {
    json!({
        "id": b.id,
        "name": b.name,
        "description": b.description,
        "enabled": b.enabled,
        "purpose": b.purpose.as_str(),
        "created_at": b.created_at.as_millis(),
        "updated_at": b.updated_at.as_millis(),
    })
}

/// The value's text: hex for PDQ, base64 of the signature for derive.
fn entry_hash(e: &Entry) -> String {
    e.value.to_text()
}

/// `signal` of a request (`pdq` when absent).
pub(crate) fn parse_signal(s: Option<&str>) -> ApiResult<SignalType> {
    match s.map(str::trim) {
        None | Some("") => Ok(SignalType::Pdq),
        Some(t) => SignalType::from_str(&t.to_ascii_lowercase()).map_err(|_| {
            ApiError::bad_request(format!(
                "unknown signal `{t}`: expected one of {}",
                SignalType::ALL.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")
            ))
        }),
    }
}

/// Parses a value of `signal` (hex PDQ hash, or base64 derivative signature); `what` names it.
fn parse_value(signal: SignalType, text: &str, what: &str) -> ApiResult<SignalValue> {
    match signal {
        SignalType::Pdq => Ok(SignalValue::Pdq(parse_hash(text, what)?)),
        SignalType::Derive => SignalValue::derive_from_base64(text).map_err(|e| {
            ApiError::invalid_hash(format!(
                "{what} is not a derivative signature (base64, as `consentry derive` prints it): {}",
                short_reason(&e)
            ))
        }),
    }
}

fn short_reason(e: &StoreError) -> String {
    match e {
        StoreError::InvalidInput(m) => m.clone(),
        other => other.to_string(),
    }
}

fn entry_json(e: &Entry, bank: &Bank) -> Value {
    json!({
        "id": e.id,
        "bank": bank.name,
        "signal": e.value.signal_type().as_str(),
        "hash": entry_hash(e),
        "quality": e.quality,
        "source": e.source.kind().as_str(),
        "metadata": e.metadata,
        "added_at": e.added_at.as_millis(),
        "disabled_at": e.disabled_at.map(|t| t.as_millis()),
        "active": e.disabled_at.is_none() && bank.enabled,
    })
}

pub(crate) async fn bank_by_name(state: &AppState, name: &str) -> ApiResult<Bank> {
    match state.inner.store.get_bank_by_name(name).await {
        Err(StoreError::NotFound(_)) => Err(ApiError::not_found(format!("bank `{name}` not found"))),
        other => Ok(other?),
    }
}

async fn entry_by_id(state: &AppState, id: i64) -> ApiResult<Entry> {
    match state.inner.store.get_entry(id).await {
        Err(StoreError::NotFound(_)) => Err(ApiError::not_found(format!("entry {id} not found"))),
        other => Ok(other?),
    }
}

// ---------------------------------------------------------------------------------------------
// Operations

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn ready(State(state): State<AppState>) -> Response {
    let loaded = state.inner.sync.loaded.load(Ordering::Acquire);
    let store_seq = tokio::time::timeout(Duration::from_secs(2), state.inner.store.current_seq()).await;
    match (loaded, store_seq) {
        (true, Ok(Ok(seq))) => Json(json!({
            "status": "ready",
            "index_entries": state.inner.index.len(),
            "applied_seq": state.inner.sync.applied_seq.load(Ordering::Acquire),
            "store_seq": seq,
        }))
        .into_response(),
        (false, _) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, codes::NOT_READY, "the index is not loaded yet")
                .into_response()
        }
        (true, Ok(Err(e))) => {
            tracing::warn!(error = %e, "readiness: store unreachable");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, codes::NOT_READY, "the store is unreachable")
                .into_response()
        }
        (true, Err(_)) => {
            tracing::warn!("readiness: store did not answer within 2 s");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, codes::NOT_READY, "the store is unreachable")
                .into_response()
        }
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let s = &state.inner.sync;
    let text = state.inner.metrics.render(&[
        ("consentry_index_entries", "Entries in the in-memory PDQ index.", state.inner.index.len() as f64),
        (
            "consentry_index_applied_seq",
            "Last change-feed sequence number applied to the index.",
            s.applied_seq.load(Ordering::Acquire) as f64,
        ),
        (
            "consentry_index_changes_applied",
            "Change-feed records applied since start.",
            s.changes_applied.load(Ordering::Relaxed) as f64,
        ),
        (
            "consentry_index_reloads",
            "Full reloads of the index since start.",
            s.reloads.load(Ordering::Relaxed) as f64,
        ),
        (
            "consentry_index_segments",
            "Segments of the PDQ index, each searched on its own (1 after a load or a compaction).",
            state.inner.index.stats().segments as f64,
        ),
        (
            "consentry_index_compactions",
            "Compactions of the index into one segment (after writes, once the feed is quiet) since start.",
            s.compactions.load(Ordering::Relaxed) as f64,
        ),
        (
            "consentry_index_poll_errors",
            "Failed change-feed polls since start.",
            s.poll_errors.load(Ordering::Relaxed) as f64,
        ),
        (
            "consentry_lookup_details_cache_hits",
            "Matches whose entry and bank details came from the details cache, since start.",
            state.inner.details.hits.load(Ordering::Relaxed) as f64,
        ),
        (
            "consentry_lookup_details_cache_misses",
            "Matches whose entry and bank details were read from the store, since start.",
            state.inner.details.misses.load(Ordering::Relaxed) as f64,
        ),
        (
            "consentry_derive_index_entries",
            "Entries in the in-memory derive (derivative signature) index.",
            state.inner.derive.len() as f64,
        ),
        (
            "consentry_derive_index_applied_seq",
            "Last change-feed sequence number applied to the derive index.",
            state.inner.derive.applied_seq.load(Ordering::Acquire) as f64,
        ),
    ]);
    let mut text = text;
    text.push_str(
        "# HELP consentry_matches_total Matches reported by lookups since start, by bank and signal.\n\
         # TYPE consentry_matches_total counter\n",
    );
    for ((bank, signal), n) in state.inner.tally.totals() {
        text.push_str(&format!(
            "consentry_matches_total{{bank=\"{}\",signal=\"{}\"}} {n}\n",
            crate::metrics::escape(&bank),
            crate::metrics::escape(&signal)
        ));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::openapi_document())
}

// ---------------------------------------------------------------------------------------------
// Hashing

#[derive(Debug, Deserialize, Default)]
struct HashParams {
    #[serde(default)]
    dihedral: bool,
    radius: Option<u32>,
    /// `derive`: `/v1/hash` also returns the derivative signature.
    signal: Option<String>,
}

pub(crate) struct Hashed {
    pub(crate) pdq: Hash256,
    quality: u8,
    width: u32,
    height: u32,
    format: ImageFormat,
    dihedral: Option<[Hash256; 8]>,
    /// The derivative signature (what a protected image stores), when asked for.
    signature: Option<Signature>,
    /// The derivative query features (what a lookup matches), when asked for.
    features: Option<QueryFeatures>,
}

/// What derivative-matcher output [`hash_upload`] computes besides PDQ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DeriveWant {
    None,
    Signature,
    Query,
}

thread_local! {
    static EXTRACTOR: std::cell::RefCell<Extractor> = std::cell::RefCell::new(Extractor::new());
}

/// Hashes an image on the blocking pool (bounded by the hashing semaphore), and computes the
/// derivative signature or query features from the same decoded pixels when asked. The bytes
/// and pixels are dropped when this returns.
async fn hash_upload(
    state: &AppState,
    bytes: axum::body::Bytes,
    dihedral: bool,
    want: DeriveWant,
) -> ApiResult<Hashed> {
    let _permit = state.inner.hash_permits.acquire().await.map_err(ApiError::internal)?;
    let opts = HashOptions { dihedral, ..HashOptions::default() };
    // (the mirrored keypoints only when the rule uses them)
    let mirrored = state.inner.config.derive_params.mirrored;
    let (res, signature, features) = tokio::task::spawn_blocking(move || {
        let (info, img, mode) = consentry_media::decode_for_hashing(&bytes, &opts)?;
        drop(bytes);
        let mut hasher = Hasher::new();
        let res = consentry_media::hash_decoded(info, &img, mode, opts.dihedral, &mut hasher);
        let (mut signature, mut features) = (None, None);
        if want != DeriveWant::None {
            let px = Pixels::new(img.width, img.height, img.format, &img.data)
                .map_err(|e| consentry_media::MediaError::Corrupt(e.to_string()))?;
            EXTRACTOR.with(|ex| {
                let mut ex = ex.borrow_mut();
                match want {
                    DeriveWant::Signature => signature = Some(ex.signature(&px)),
                    DeriveWant::Query => features = Some(ex.query_with(&px, mirrored)),
                    DeriveWant::None => {}
                }
            });
        }
        Ok::<_, consentry_media::MediaError>((res, signature, features))
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(Hashed {
        pdq: res.pdq.hash,
        quality: res.pdq.quality,
        width: res.info.width,
        height: res.info.height,
        format: res.info.format,
        dihedral: res.dihedral.map(|d| d.hashes),
        signature,
        features,
    })
}

fn dihedral_json(hashes: &[Hash256; 8]) -> Value {
    let mut m = serde_json::Map::new();
    for d in Dihedral::ALL {
        m.insert(d.name().to_owned(), Value::String(hashes[d as usize].to_hex()));
    }
    Value::Object(m)
}

async fn hash_image(
    State(state): State<AppState>,
    auth: Auth,
    params: Result<Query<HashParams>, QueryRejection>,
    ImageUpload(bytes): ImageUpload,
) -> ApiResult<Json<Value>> {
    auth.require(Scope::Lookup)?;
    let params = query(params)?;
    let want = match parse_signal(params.signal.as_deref())? {
        SignalType::Pdq => DeriveWant::None,
        SignalType::Derive => DeriveWant::Signature,
    };
    let h = hash_upload(&state, bytes, params.dihedral, want).await?;
    tracing::info!(pdq = %h.pdq.to_hex(), quality = h.quality, "image hashed");
    let mut out = json!({
        "pdq": h.pdq.to_hex(),
        "quality": h.quality,
        "width": h.width,
        "height": h.height,
        "format": h.format.name(),
    });
    if let Some(d) = &h.dihedral {
        out["dihedral"] = dihedral_json(d);
    }
    if let Some(sig) = &h.signature {
        out["derive"] = json!({
            "signature": sig.to_base64(),
            "keypoints": sig.keypoints.len(),
            "band_quality": sig.band.map(|b| b.quality),
        });
    }
    Ok(Json(out))
}

// ---------------------------------------------------------------------------------------------
// Lookups

/// Looks up each query (one hash, or the 8 dihedral hashes of one image searched together) and
/// describes the matches. Entries found disabled (or whose bank is disabled) when their details
/// are read are dropped, so a disable is effective here even before the index catches up. The
/// matches are counted for `source` (the API key's name) in the match counts.
pub(crate) async fn lookup_many(
    state: &AppState,
    source: &str,
    queries: Vec<Vec<Hash256>>,
    radius: u32,
) -> ApiResult<Vec<(Vec<Value>, bool)>> {
    let firsts: Vec<Hash256> = queries.iter().map(|q| q.first().copied().unwrap_or(Hash256::ZERO)).collect();
    let started = Instant::now();
    let out = lookup_pdq(state, queries, radius).await?;
    let total = out.iter().map(|(l, _)| l.len()).sum();
    state.inner.metrics.observe_lookup(started.elapsed(), total);
    if total > 0 {
        for (m, _) in &out {
            state.inner.tally.add_reply(source, m);
        }
        // Persisted before the lookup is answered: a crash after the answer loses no event.
        crate::webhooks::enqueue_matches(state, &firsts, &out).await?;
    }
    Ok(out)
}

/// Reads an entry and its bank into the request's map (once per request; through the shared
/// details cache, see `details.rs`); `None` when either is gone.
async fn entry_and_bank(state: &AppState, id: i64, found: &mut HashMap<u64, Details>) -> ApiResult<()> {
    if let std::collections::hash_map::Entry::Vacant(v) = found.entry(id as u64) {
        v.insert(state.inner.details.get(&state.inner.store, &state.inner.sync.applied_seq, id).await?);
    }
    Ok(())
}

/// The derive index's matches for one query, described like PDQ matches (with `signal:
/// "derive"` and the evidence: `distance` when the global PDQ matched, `band_distance` when the
/// top band did, `inliers` and `score` when the local keypoints did, `mirrored` when those were
/// the query's mirrored keypoints). Disabled entries and banks are dropped like in PDQ lookups.
async fn lookup_derive(state: &AppState, q: QueryFeatures) -> ApiResult<(Vec<Value>, bool)> {
    let mirror = state.inner.derive.clone();
    let hits = tokio::task::spawn_blocking(move || mirror.search(&q)).await.map_err(ApiError::internal)?;
    let mut found: HashMap<u64, Details> = HashMap::new();
    let max = state.inner.config.max_matches_per_hash;
    let mut list = Vec::new();
    let mut truncated = false;
    for h in hits {
        entry_and_bank(state, h.id as i64, &mut found).await?;
        let Some((e, b)) = live(&found, h.id) else { continue };
        if list.len() == max {
            truncated = true;
            break;
        }
        list.push(json!({
            "signal": "derive",
            "bank": b.name,
            "entry_id": e.id,
            "distance": h.pdq_distance,
            "band_distance": h.band_distance,
            "inliers": h.inliers,
            "score": h.score,
            "mirrored": h.mirrored,
            "quality": e.quality,
            "source": e.source.kind().as_str(),
            "metadata": e.metadata,
        }));
    }
    Ok((list, truncated))
}

/// A matched entry and its bank from the details read by `entry_and_bank`, if both exist and
/// are enabled (the index may be a poll interval behind the store).
fn live(found: &HashMap<u64, Details>, id: u64) -> Option<(&Entry, &Bank)> {
    let (e, b) = found.get(&id)?.as_ref()?;
    (e.disabled_at.is_none() && b.enabled).then_some((&**e, &**b))
}

/// The largest radius at which a single-hash lookup searches on the request's own task.
const INLINE_RADIUS: u32 = 32;

/// PDQ lookups without metrics or webhooks.
async fn lookup_pdq(
    state: &AppState,
    queries: Vec<Vec<Hash256>>,
    radius: u32,
) -> ApiResult<Vec<(Vec<Value>, bool)>> {
    let index = state.inner.index.clone();
    let raw: Vec<Vec<Match>> = if queries.len() == 1 && queries[0].len() == 1 && radius <= INLINE_RADIUS {
        // One hash at a usual radius: tens of microseconds at 1M entries, under a millisecond at
        // 100M, so it runs on this task; a hand-off to the blocking pool would cost about as much
        // as the search itself.
        vec![index.search(&queries[0][0], radius)]
    } else {
        tokio::task::spawn_blocking(move || index.search_batch_dihedral(&queries, radius))
            .await
            .map_err(ApiError::internal)?
    };

    // Details of every matched entry and its bank, each read once.
    let mut found: HashMap<u64, Details> = HashMap::new();
    for m in raw.iter().flatten() {
        entry_and_bank(state, m.id as i64, &mut found).await?;
    }

    let max = state.inner.config.max_matches_per_hash;
    let out: Vec<(Vec<Value>, bool)> = raw
        .into_iter()
        .map(|ms| {
            let mut list = Vec::new();
            let mut truncated = false;
            for m in ms {
                let Some((e, b)) = live(&found, m.id) else { continue };
                if list.len() == max {
                    truncated = true;
                    break;
                }
                list.push(json!({
                    "signal": "pdq",
                    "bank": b.name,
                    "entry_id": e.id,
                    "distance": m.distance,
                    "hash": entry_hash(e),
                    "quality": e.quality,
                    "source": e.source.kind().as_str(),
                    "metadata": e.metadata,
                }));
            }
            (list, truncated)
        })
        .collect();
    Ok(out)
}

#[derive(Debug, Deserialize)]
struct LookupParams {
    hash: Option<String>,
    #[serde(default)]
    dihedral: bool,
    radius: Option<u32>,
}

/// `GET /v1/lookup?hash=HEX[&radius=N]`, or `?hash=H1,...,H8&dihedral=true` with the eight
/// dihedral hashes of one image (as `consentry hash --dihedral` prints them): each entry is
/// then reported once, with its smallest distance to any of them.
async fn lookup_get(
    State(state): State<AppState>,
    auth: Auth,
    params: Result<Query<LookupParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    auth.require(Scope::Lookup)?;
    let p = query(params)?;
    let text = p.hash.ok_or_else(|| ApiError::invalid_hash("the `hash` query parameter is missing"))?;
    let parts: Vec<&str> = text.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    if parts.len() > 1 && !p.dihedral {
        return Err(ApiError::bad_request(
            "several hashes are accepted only with dihedral=true (the 8 dihedral hashes of one image); \
             use POST /v1/lookup for batches",
        ));
    }
    if parts.len() > 8 {
        return Err(ApiError::bad_request("at most 8 dihedral hashes"));
    }
    let hashes = parts
        .iter()
        .enumerate()
        .map(|(i, s)| parse_hash(s, &format!("hash #{i}")))
        .collect::<ApiResult<Vec<_>>>()?;
    if hashes.is_empty() {
        return Err(ApiError::invalid_hash("the `hash` query parameter is empty"));
    }
    let radius = check_radius(&state, p.radius)?;
    let mut res = lookup_many(&state, &auth.0.name, vec![hashes.clone()], radius).await?;
    let (matches, truncated) = res.pop().unwrap_or_default();
    tracing::info!(hash = %hashes[0].to_hex(), radius, matches = matches.len(), "lookup");
    let mut q = json!({ "hash": hashes[0].to_hex(), "radius": radius, "dihedral": p.dihedral });
    if hashes.len() > 1 {
        q["hashes"] = json!(hashes.iter().map(|h| h.to_hex()).collect::<Vec<_>>());
    }
    Ok(Json(json!({ "query": q, "matches": matches, "truncated": truncated })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LookupBatch {
    hashes: HashList,
    radius: Option<u32>,
}

/// The `hashes` of a batch lookup, parsed as the JSON is read: no string is copied, and up to
/// 10,000 hashes arrive in one body. An item is a hash, or a list of up to 8 hashes (an image's
/// dihedral hashes, searched together). A text that is not a hash does not stop the reading (the
/// length check comes first, as for any other body); the first bad item is reported with its index.
#[derive(Debug, Default)]
struct HashList {
    /// Every hash, the lists' flattened in order.
    hashes: Vec<Hash256>,
    /// How many of `hashes` each item holds (1 for a plain hash).
    sizes: Vec<u8>,
    /// Hashes counted (the bad ones too), for the size limit.
    len: usize,
    first_bad: Option<(usize, BadItem)>,
}

#[derive(Debug)]
enum BadItem {
    Hash(consentry_pdq::ParseHashError),
    List(&'static str),
}

impl HashList {
    /// The items' hashes, one slice per item.
    fn items(&self) -> impl Iterator<Item = &[Hash256]> {
        let mut rest = &self.hashes[..];
        self.sizes.iter().map(move |&n| {
            let (q, r) = rest.split_at(usize::from(n));
            rest = r;
            q
        })
    }
}

impl<'de> Deserialize<'de> for HashList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> serde::de::Visitor<'de> for ListVisitor {
            type Value = HashList;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a list of PDQ hashes (64 hexadecimal digits each), or of lists of up to 8 of them",
                )
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<HashList, A::Error> {
                let cap = seq.size_hint().unwrap_or(0).min(10_000);
                let mut list = HashList {
                    hashes: Vec::with_capacity(cap),
                    sizes: Vec::with_capacity(cap),
                    ..HashList::default()
                };
                let mut item = 0;
                while seq.next_element_seed(QueryItem { list: &mut list, item })?.is_some() {
                    item += 1;
                }
                Ok(list)
            }
        }
        d.deserialize_seq(ListVisitor)
    }
}

/// Reads one item of a [`HashList`] into it: a JSON string parsed as a hash in place, or a list
/// of 1 to 8 such strings. A bad item adds no hash.
struct QueryItem<'a> {
    list: &'a mut HashList,
    item: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for QueryItem<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for QueryItem<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a PDQ hash as a string of 64 hexadecimal digits, or a list of up to 8 of them")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        let list = self.list;
        list.len += 1;
        match Hash256::from_hex(v) {
            Ok(h) => {
                list.hashes.push(h);
                list.sizes.push(1);
            }
            Err(e) => {
                list.first_bad.get_or_insert((self.item, BadItem::Hash(e)));
            }
        }
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let list = self.list;
        let start = list.hashes.len();
        let (mut n, mut bad) = (0usize, None);
        while let Some(HexItem(parsed)) = seq.next_element()? {
            n += 1;
            match parsed {
                Ok(h) if n <= 8 => list.hashes.push(h),
                Ok(_) => {
                    bad.get_or_insert(BadItem::List(
                        "a list holds at most 8 hashes (an image's dihedral hashes)",
                    ));
                }
                Err(e) => {
                    bad.get_or_insert(BadItem::Hash(e));
                }
            }
        }
        list.len += n;
        if n == 0 {
            bad = Some(BadItem::List("an empty list"));
        }
        match bad {
            None => list.sizes.push(n as u8),
            Some(e) => {
                list.hashes.truncate(start);
                list.first_bad.get_or_insert((self.item, e));
            }
        }
        Ok(())
    }
}

/// An element of a list item of a [`HashList`]: a JSON string, parsed as a hash in place.
struct HexItem(Result<Hash256, consentry_pdq::ParseHashError>);

impl<'de> Deserialize<'de> for HexItem {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ItemVisitor;
        impl serde::de::Visitor<'_> for ItemVisitor {
            type Value = HexItem;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a PDQ hash as a string of 64 hexadecimal digits")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HexItem, E> {
                Ok(HexItem(Hash256::from_hex(v)))
            }
        }
        d.deserialize_str(ItemVisitor)
    }
}

/// A hash written as its hex text without an intermediate `String`.
struct HexText([u8; 64]);

impl serde::Serialize for HexText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(std::str::from_utf8(&self.0).expect("hex digits are ASCII"))
    }
}

/// The reply of a batch lookup, written field by field (the same JSON as a `json!` value would
/// give, keys in the same order, without building one map per hash).
#[derive(serde::Serialize)]
struct BatchReply<'a> {
    radius: u32,
    results: Vec<BatchResult<'a>>,
}

#[derive(serde::Serialize)]
struct BatchResult<'a> {
    hash: HexText,
    /// A list item's hashes (its first is `hash`).
    #[serde(skip_serializing_if = "Option::is_none")]
    hashes: Option<Vec<HexText>>,
    matches: &'a [Value],
    truncated: bool,
}

async fn lookup_post(
    State(state): State<AppState>,
    auth: Auth,
    JsonBody(body): JsonBody<LookupBatch>,
) -> ApiResult<Response> {
    auth.require(Scope::Lookup)?;
    let max = state.inner.config.max_batch;
    let list = body.hashes;
    if list.len > max {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::TOO_MANY_HASHES,
            format!("{} hashes in one request; the maximum is {max}", list.len),
        ));
    }
    let radius = check_radius(&state, body.radius)?;
    match list.first_bad {
        Some((i, BadItem::Hash(e))) => return Err(not_a_hash(&format!("hashes[{i}]"), &e)),
        Some((i, BadItem::List(why))) => return Err(ApiError::invalid_hash(format!("hashes[{i}]: {why}"))),
        None => {}
    }
    let res = lookup_many(&state, &auth.0.name, list.items().map(<[_]>::to_vec).collect(), radius).await?;
    let n_matched = res.iter().filter(|(m, _)| !m.is_empty()).count();
    tracing::info!(queries = res.len(), hashes = list.len, matched = n_matched, radius, "batch lookup");
    let results = list
        .items()
        .zip(&res)
        .map(|(q, (matches, truncated))| BatchResult {
            hash: HexText(q[0].hex_bytes()),
            hashes: (q.len() > 1).then(|| q.iter().map(|h| HexText(h.hex_bytes())).collect()),
            matches,
            truncated: *truncated,
        })
        .collect();
    Ok(Json(BatchReply { radius, results }).into_response())
}

async fn lookup_image(
    State(state): State<AppState>,
    auth: Auth,
    params: Result<Query<HashParams>, QueryRejection>,
    ImageUpload(bytes): ImageUpload,
) -> ApiResult<Json<Value>> {
    auth.require(Scope::Lookup)?;
    let p = query(params)?;
    let radius = check_radius(&state, p.radius)?;
    let ImageMatches { hashed: h, matches, truncated, derive } =
        match_image(&state, &auth.0.name, bytes, p.dihedral, radius).await?;
    let mut q = json!({
        "hash": h.pdq.to_hex(),
        "quality": h.quality,
        "width": h.width,
        "height": h.height,
        "format": h.format.name(),
        "radius": radius,
        "dihedral": p.dihedral,
        "derive": derive,
    });
    if let Some(d) = &h.dihedral {
        q["dihedral_hashes"] = dihedral_json(d);
    }
    Ok(Json(json!({ "query": q, "matches": matches, "truncated": truncated })))
}

/// The PDQ hash of an uploaded image.
pub(crate) async fn upload_pdq(state: &AppState, bytes: axum::body::Bytes) -> ApiResult<Hash256> {
    Ok(hash_upload(state, bytes, false, DeriveWant::None).await?.pdq)
}

/// What an uploaded image matched.
pub(crate) struct ImageMatches {
    pub(crate) hashed: Hashed,
    /// PDQ matches first, then derive matches (an entry is one signal, so none is named twice).
    pub(crate) matches: Vec<Value>,
    pub(crate) truncated: bool,
    /// Whether its derivative features were matched too (only while derive entries exist).
    pub(crate) derive: bool,
}

/// Hashes an upload (the 8 dihedral hashes when `dihedral`) and looks it up: PDQ within
/// `radius`, and the derive index while it holds entries; counted for `source`, with webhooks.
pub(crate) async fn match_image(
    state: &AppState,
    source: &str,
    bytes: axum::body::Bytes,
    dihedral: bool,
    radius: u32,
) -> ApiResult<ImageMatches> {
    // The derivative features cost more than PDQ: computed only while derive entries exist.
    let want = if state.inner.derive.is_empty() { DeriveWant::None } else { DeriveWant::Query };
    let mut h = hash_upload(state, bytes, dihedral, want).await?;
    let started = Instant::now();
    let queries = match &h.dihedral {
        Some(d) => d.to_vec(),
        None => vec![h.pdq],
    };
    let mut res = lookup_pdq(state, vec![queries], radius).await?;
    let (mut matches, mut truncated) = res.pop().unwrap_or_default();
    let n_pdq = matches.len();
    if let Some(q) = h.features.take() {
        let (d, t) = lookup_derive(state, q).await?;
        matches.extend(d);
        truncated |= t;
    }
    let (matches, truncated) = finish_lookup(state, source, started, h.pdq, matches, truncated).await?;
    tracing::info!(
        pdq = %h.pdq.to_hex(), quality = h.quality, radius, matches = matches.len(),
        derive_matches = matches.len() - n_pdq, "image lookup"
    );
    Ok(ImageMatches { hashed: h, matches, truncated, derive: want == DeriveWant::Query })
}

/// The end of a one-image lookup: its latency and match count go to the metrics, its matches to
/// the match counts under `source`, and a match queues a webhook event naming the image's PDQ hash.
async fn finish_lookup(
    state: &AppState,
    source: &str,
    started: Instant,
    pdq: Hash256,
    matches: Vec<Value>,
    truncated: bool,
) -> ApiResult<(Vec<Value>, bool)> {
    state.inner.metrics.observe_lookup(started.elapsed(), matches.len());
    let out = vec![(matches, truncated)];
    if !out[0].0.is_empty() {
        state.inner.tally.add_reply(source, &out[0].0);
        crate::webhooks::enqueue_matches(state, &[pdq], &out).await?;
    }
    Ok(out.into_iter().next().unwrap_or_default())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeaturesBody {
    /// Base64 of `consentry_derive::QueryFeatures::to_bytes`.
    features: String,
}

/// `POST /v1/lookup/features`: derive matches for query features computed by the client (the
/// Telegram bot in remote mode), so that the image itself never leaves the client. The reply
/// says how many derive entries the server holds, so a client can skip the features while there
/// are none.
async fn lookup_features(
    State(state): State<AppState>,
    auth: Auth,
    JsonBody(body): JsonBody<FeaturesBody>,
) -> ApiResult<Json<Value>> {
    auth.require(Scope::Lookup)?;
    let q = QueryFeatures::from_base64(&body.features)
        .map_err(|e| ApiError::bad_request(format!("`features` is not derivative query features: {e}")))?;
    let started = Instant::now();
    let pdq = q.pdq[0];
    let keypoints = q.keypoints.len();
    let derive_entries = state.inner.derive.len();
    let (matches, truncated) =
        if derive_entries == 0 { (Vec::new(), false) } else { lookup_derive(&state, q).await? };
    let (matches, truncated) = finish_lookup(&state, &auth.0.name, started, pdq, matches, truncated).await?;
    tracing::info!(pdq = %pdq.to_hex(), keypoints, matches = matches.len(), "features lookup");
    Ok(Json(json!({
        "query": { "hash": pdq.to_hex(), "keypoints": keypoints },
        "derive_entries": derive_entries,
        "matches": matches,
        "truncated": truncated,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompareBody {
    a: String,
    b: String,
}

async fn compare(auth: Auth, JsonBody(body): JsonBody<CompareBody>) -> ApiResult<Json<Value>> {
    auth.require(Scope::Lookup)?;
    let a = parse_hash(&body.a, "a")?;
    let b = parse_hash(&body.b, "b")?;
    let d = a.distance(&b);
    Ok(Json(json!({
        "a": a.to_hex(),
        "b": b.to_hex(),
        "distance": d,
        "match": d <= MATCH_THRESHOLD,
        "threshold": MATCH_THRESHOLD,
    })))
}

// ---------------------------------------------------------------------------------------------
// Banks

const READ_SCOPES: &[Scope] = &[Scope::Lookup, Scope::Curate];

async fn list_banks(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    auth.require_any(READ_SCOPES)?;
    let banks = state.inner.store.list_banks().await?;
    Ok(Json(json!({ "banks": banks.iter().map(bank_json).collect::<Vec<_>>() })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBank {
    name: String,
    #[serde(default)]
    description: String,
    enabled: Option<bool>,
    purpose: Option<String>,
}

fn parse_purpose(s: &str) -> ApiResult<BankPurpose> {
    BankPurpose::from_str(s).map_err(|_| {
        ApiError::bad_request(format!(
            "unknown purpose `{s}`: expected one of {}",
            BankPurpose::ALL.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")
        ))
    })
}

async fn create_bank(
    State(state): State<AppState>,
    auth: Auth,
    JsonBody(body): JsonBody<CreateBank>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let actor = auth.require(Scope::Curate)?;
    let purpose = match &body.purpose {
        Some(p) => parse_purpose(p)?,
        None => BankPurpose::Other,
    };
    let bank = state
        .inner
        .store
        .create_bank(
            &actor,
            NewBank {
                name: body.name,
                description: body.description,
                enabled: body.enabled.unwrap_or(true),
                purpose,
            },
        )
        .await?;
    tracing::info!(bank = bank.id, "bank created");
    Ok((StatusCode::CREATED, Json(bank_json(&bank))))
}

async fn get_bank(
    State(state): State<AppState>,
    auth: Auth,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    auth.require_any(READ_SCOPES)?;
    let bank = bank_by_name(&state, &path(name)?).await?;
    Ok(Json(bank_json(&bank)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchBank {
    name: Option<String>,
    description: Option<String>,
    purpose: Option<String>,
    enabled: Option<bool>,
}

async fn patch_bank(
    State(state): State<AppState>,
    auth: Auth,
    name: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<PatchBank>,
) -> ApiResult<Json<Value>> {
    let actor = auth.require(Scope::Curate)?;
    let mut bank = bank_by_name(&state, &path(name)?).await?;
    let purpose = body.purpose.as_deref().map(parse_purpose).transpose()?;
    if body.name.is_some() || body.description.is_some() || purpose.is_some() {
        let update = BankUpdate { name: body.name, description: body.description, purpose };
        bank = state.inner.store.update_bank(&actor, bank.id, update).await?;
    }
    if let Some(enabled) = body.enabled {
        if enabled != bank.enabled {
            bank = state.inner.store.set_bank_enabled(&actor, bank.id, enabled).await?;
        }
    }
    tracing::info!(bank = bank.id, "bank updated");
    Ok(Json(bank_json(&bank)))
}

async fn delete_bank(
    State(state): State<AppState>,
    auth: Auth,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    let actor = auth.require(Scope::Curate)?;
    let bank = bank_by_name(&state, &path(name)?).await?;
    state.inner.store.delete_bank(&actor, bank.id).await?;
    tracing::info!(bank = bank.id, "bank deleted");
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// Entries

#[derive(Debug, Deserialize)]
struct ListParams {
    #[serde(default)]
    after: i64,
    limit: Option<u32>,
}

async fn list_entries(
    State(state): State<AppState>,
    auth: Auth,
    name: Result<Path<String>, PathRejection>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    auth.require_any(READ_SCOPES)?;
    let p = query(params)?;
    let bank = bank_by_name(&state, &path(name)?).await?;
    let limit = page_limit(p.limit)?;
    let entries = state.inner.store.list_entries(bank.id, p.after, limit).await?;
    let next = if entries.len() == limit as usize { entries.last().map(|e| e.id) } else { None };
    Ok(Json(json!({
        "bank": bank.name,
        "entries": entries.iter().map(|e| entry_json(e, &bank)).collect::<Vec<_>>(),
        "next_after": next,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryInput {
    /// The value: a hex PDQ hash, or with `signal: "derive"` a base64 derivative signature.
    #[serde(alias = "value")]
    hash: String,
    /// `pdq` (default) or `derive`.
    signal: Option<String>,
    quality: Option<i32>,
    #[serde(default)]
    metadata: Value,
}

/// `POST /v1/banks/{name}/entries`: one entry (`{"hash", "quality"?, "metadata"?}`) → 201 with
/// the entry; or a JSON array of them → 200 with `added` and `rejected` (by array index).
async fn add_entries(
    State(state): State<AppState>,
    auth: Auth,
    name: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult<Response> {
    let actor = auth.require(Scope::Curate)?;
    let bank = bank_by_name(&state, &path(name)?).await?;
    match body {
        Value::Array(items) => {
            let max = state.inner.config.max_batch;
            if items.len() > max {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    codes::TOO_MANY_HASHES,
                    format!("{} entries in one request; the maximum is {max}", items.len()),
                ));
            }
            let mut lines = Vec::with_capacity(items.len());
            let mut rejected = Vec::new();
            for (i, item) in items.into_iter().enumerate() {
                let parsed = serde_json::from_value::<EntryInput>(item)
                    .map_err(|e| format!("not an entry object: {e}"))
                    .and_then(|inp| {
                        let signal = parse_signal(inp.signal.as_deref()).map_err(|e| e.message)?;
                        parse_value(signal, &inp.hash, "hash").map(|v| (v, inp)).map_err(|e| e.message)
                    });
                match parsed {
                    Ok((v, inp)) => lines.push(BulkLine {
                        line: i as u64 + 1,
                        value: v,
                        quality: inp.quality,
                        metadata: inp.metadata,
                    }),
                    Err(reason) => rejected.push((i as u64, reason)),
                }
            }
            let report = state
                .inner
                .store
                .add_entries_bulk(&actor, bank.id, EntrySourceKind::Moderator, lines)
                .await?;
            rejected.extend(report.rejected.into_iter().map(|l| (l.line - 1, l.reason)));
            rejected.sort_by_key(|(i, _)| *i);
            tracing::info!(
                bank = bank.id,
                added = report.added.len(),
                rejected = rejected.len(),
                "entries added"
            );
            Ok(Json(json!({
                "bank": bank.name,
                "added": report.added.iter().map(|(l, id)| json!({"index": l - 1, "id": id})).collect::<Vec<_>>(),
                "rejected": rejected.iter().map(|(i, r)| json!({"index": i, "reason": r})).collect::<Vec<_>>(),
            }))
            .into_response())
        }
        Value::Object(_) => {
            let inp: EntryInput = serde_json::from_value(body).map_err(|e| {
                ApiError::new(StatusCode::BAD_REQUEST, codes::INVALID_JSON, format!("invalid entry: {e}"))
            })?;
            let signal = parse_signal(inp.signal.as_deref())?;
            let value = parse_value(signal, &inp.hash, "hash")?;
            let entry = state
                .inner
                .store
                .add_entry(
                    &actor,
                    NewEntry {
                        bank_id: bank.id,
                        value,
                        quality: inp.quality,
                        source: EntrySourceKind::Moderator,
                        metadata: inp.metadata,
                    },
                )
                .await?;
            match entry.value.as_pdq() {
                Some(h) => {
                    tracing::info!(bank = bank.id, entry = entry.id, hash = %h.to_hex(), "entry added")
                }
                None => {
                    tracing::info!(bank = bank.id, entry = entry.id, signal = signal.as_str(), "entry added")
                }
            }
            Ok((StatusCode::CREATED, Json(entry_json(&entry, &bank))).into_response())
        }
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::INVALID_JSON,
            "expected an entry object or an array of entry objects",
        )),
    }
}

async fn entry_with_bank(state: &AppState, e: Entry) -> ApiResult<Json<Value>> {
    let bank = state.inner.store.get_bank(e.bank_id).await?;
    Ok(Json(entry_json(&e, &bank)))
}

async fn get_entry(
    State(state): State<AppState>,
    auth: Auth,
    id: Result<Path<i64>, PathRejection>,
) -> ApiResult<Json<Value>> {
    auth.require_any(READ_SCOPES)?;
    let e = entry_by_id(&state, path(id)?).await?;
    entry_with_bank(&state, e).await
}

async fn set_entry(state: &AppState, auth: Auth, id: i64, disable: bool) -> ApiResult<Json<Value>> {
    let actor = auth.require(Scope::Curate)?;
    entry_by_id(state, id).await?;
    let e = if disable {
        state.inner.store.disable_entry(&actor, id).await?
    } else {
        state.inner.store.enable_entry(&actor, id).await?
    };
    tracing::info!(entry = id, disabled = disable, "entry updated");
    entry_with_bank(state, e).await
}

async fn disable_entry(
    State(state): State<AppState>,
    auth: Auth,
    id: Result<Path<i64>, PathRejection>,
) -> ApiResult<Json<Value>> {
    set_entry(&state, auth, path(id)?, true).await
}

async fn enable_entry(
    State(state): State<AppState>,
    auth: Auth,
    id: Result<Path<i64>, PathRejection>,
) -> ApiResult<Json<Value>> {
    set_entry(&state, auth, path(id)?, false).await
}

async fn delete_entry(
    State(state): State<AppState>,
    auth: Auth,
    id: Result<Path<i64>, PathRejection>,
) -> ApiResult<StatusCode> {
    let actor = auth.require(Scope::Curate)?;
    let id = path(id)?;
    entry_by_id(&state, id).await?;
    state.inner.store.remove_entry(&actor, id).await?;
    tracing::info!(entry = id, "entry removed");
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// Cases (survivors; no API key)

fn image_not_accepted() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        codes::IMAGE_NOT_ACCEPTED,
        "cases accept PDQ hashes only, never images: hash your photos on your own device",
    )
}

/// True when bytes look like an image or an encoded image rather than a JSON list of hashes.
fn looks_like_image(bytes: &[u8]) -> bool {
    ImageFormat::sniff(bytes).is_some()
}

fn looks_like_encoded_image(s: &str) -> bool {
    let t = s.trim_start();
    t.len() > 100 || t.starts_with("data:")
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum CaseHashInput {
    Hex(String),
    WithQuality {
        #[serde(alias = "value")]
        hash: String,
        quality: Option<i32>,
        /// `pdq` (default) or `derive` (then `hash` is the base64 signature).
        signal: Option<String>,
    },
}

/// Base64 starts of the image formats cases must never receive.
fn looks_like_base64_image(s: &str) -> bool {
    let t = s.trim_start();
    t.starts_with("data:")
        || ["/9j/", "iVBORw0KGgo", "R0lGOD", "UklGR", "Qk"].iter().any(|p| t.starts_with(p))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateCase {
    hashes: Vec<CaseHashInput>,
}

async fn create_case(
    State(state): State<AppState>,
    req: axum::extract::Request,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ct.starts_with("image/") || ct.starts_with("multipart/") || ct.starts_with("video/") {
        return Err(image_not_accepted());
    }
    let bytes = read_bytes(req, &state).await?;
    if looks_like_image(&bytes) {
        return Err(image_not_accepted());
    }
    let body: CreateCase = parse_json(&bytes)?;
    drop(bytes);
    let mut hashes = Vec::with_capacity(body.hashes.len());
    for (i, h) in body.hashes.iter().enumerate() {
        let (text, quality, signal) = match h {
            CaseHashInput::Hex(s) => (s, None, SignalType::Pdq),
            CaseHashInput::WithQuality { hash, quality, signal } => {
                (hash, *quality, parse_signal(signal.as_deref())?)
            }
        };
        // A derivative signature is long base64 text: it is checked by decoding it (an image
        // never decodes as one), after refusing anything that starts like an encoded image.
        let image = match signal {
            SignalType::Pdq => looks_like_encoded_image(text),
            SignalType::Derive => looks_like_base64_image(text),
        };
        if image {
            return Err(image_not_accepted());
        }
        hashes.push(CaseHash { value: parse_value(signal, text, &format!("hashes[{i}]"))?, quality });
    }
    let n = hashes.len();
    let created = state
        .inner
        .store
        .create_case(
            &Actor::named("survivor"),
            NewCase { bank_id: state.inner.case_bank_id, hashes, metadata: Value::Null },
        )
        .await?;
    tracing::info!(case = created.case.id, hashes = n, "case created");
    state.wake_webhooks();
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "case_number": created.case.display_number(),
            "pin": created.pin,
            "status": created.case.status.as_str(),
            "hashes": n,
            "notice": "Keep the case number and the PIN: the PIN is shown only now and cannot be recovered.",
        })),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PinBody {
    pin: String,
}

impl std::fmt::Debug for PinBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PinBody { pin: <redacted> }")
    }
}

async fn case_status(
    State(state): State<AppState>,
    number: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<PinBody>,
) -> ApiResult<Json<Value>> {
    let number = path(number)?;
    let shown = state.inner.config.case_matches_shown;
    // This process's own recent matches count too.
    if shown {
        state.flush_match_counts_before("case status").await;
    }
    let view = state.inner.store.case_status(&number, &body.pin).await?;
    let bank = state.inner.store.get_bank(view.case.bank_id).await?;
    Ok(Json(case_view_json(&view, &bank, shown, false)))
}

/// A case as JSON: its number, status, dates and hashes (each with its signal and whether it is
/// active); with `counts`, how often each matched and `caught`, the sums (counted, never named);
/// with `staff`, also the ids of the case, its entries and its bank's name.
fn case_view_json(view: &CaseView, bank: &Bank, counts: bool, staff: bool) -> Value {
    let hashes: Vec<Value> = view
        .entries
        .iter()
        .map(|e| {
            let mut h = json!({
                "hash": entry_hash(e),
                "signal": e.value.signal_type().as_str(),
                "active": e.disabled_at.is_none() && bank.enabled,
            });
            if staff {
                h["entry_id"] = json!(e.id);
            }
            if counts {
                let row = view.matches.entry(e.id);
                h["matches"] = json!(row.map_or(0, |r| r.matches));
                h["last_matched_at"] = json!(row.map(|r| r.last_at.as_millis()));
            }
            h
        })
        .collect();
    let mut out = case_json(&view.case);
    out["hashes"] = json!(hashes);
    if staff {
        out["bank"] = json!(bank.name);
    } else {
        out.as_object_mut().map(|o| o.remove("id"));
    }
    if counts {
        let total = view.matches.total.as_ref();
        out["caught"] = json!({
            "matches": total.map_or(0, |r| r.matches),
            "hashes": total.map_or(0, |r| r.entries),
            "sources": total.map_or(0, |r| r.sources),
            "days": total.map_or(0, |r| r.days),
            "first_at": total.map(|r| r.first_at.as_millis()),
            "last_at": total.map(|r| r.last_at.as_millis()),
        });
    }
    out
}

/// A case's own fields.
fn case_json(c: &Case) -> Value {
    json!({
        "id": c.id,
        "case_number": c.display_number(),
        "status": c.status.as_str(),
        "created_at": c.created_at.as_millis(),
        "updated_at": c.updated_at.as_millis(),
        "withdrawn_at": c.withdrawn_at.map(|t| t.as_millis()),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseListParams {
    status: Option<String>,
    after: Option<i64>,
    limit: Option<u32>,
}

/// `GET /v1/cases[?status=received|active|withdrawn][&after=ID][&limit=N]` (curate): the cases
/// by id, for staff to review (`next_after` continues).
async fn list_cases(
    State(state): State<AppState>,
    auth: Auth,
    params: Result<Query<CaseListParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    auth.require(Scope::Curate)?;
    let p = query(params)?;
    let status = p.status.as_deref().map(CaseStatus::from_str).transpose()?;
    let limit = page_limit(p.limit)?;
    let cases = state.inner.store.list_cases(status, p.after.unwrap_or(0), limit).await?;
    let names: HashMap<i64, String> =
        state.inner.store.list_banks().await?.into_iter().map(|b| (b.id, b.name)).collect();
    let next = if cases.len() == limit as usize { cases.last().map(|c| c.id) } else { None };
    let cases: Vec<Value> = cases
        .iter()
        .map(|c| {
            let mut v = case_json(c);
            v["bank"] = json!(names.get(&c.bank_id));
            v
        })
        .collect();
    Ok(Json(json!({ "cases": cases, "next_after": next })))
}

/// `GET /v1/cases/{number}` (curate): the staff view of a case, by the number the survivor gives
/// (no PIN): its entries with their ids, how often each matched, and the PIN's lock state.
async fn staff_case(
    State(state): State<AppState>,
    auth: Auth,
    number: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    auth.require(Scope::Curate)?;
    let number = path(number)?;
    state.flush_match_counts_before("case view").await;
    let view = state.inner.store.case_by_number(&number).await?;
    let bank = state.inner.store.get_bank(view.case.bank_id).await?;
    let pin = state.inner.store.case_pin_counters(view.case.id).await?;
    let mut out = case_view_json(&view, &bank, true, true);
    out["pin"] = json!({
        "failed_attempts": pin.failed_attempts,
        "locked_until": pin.locked_until.map(|t| t.as_millis()),
        "lockouts": pin.lockouts,
    });
    Ok(Json(out))
}

/// `POST /v1/cases/{number}/pin` (curate): a new PIN for a survivor who lost hers, once the
/// helpline has checked who she is: the old PIN stops working, a lock is lifted. The new PIN is
/// in this reply only.
async fn reset_case_pin(
    State(state): State<AppState>,
    auth: Auth,
    number: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let actor = auth.require(Scope::Curate)?;
    let number = path(number)?;
    let case = state.inner.store.case_by_number(&number).await?.case;
    let (case, pin) = state.inner.store.reset_case_pin(&actor, case.id).await?;
    tracing::info!(case = case.id, "case PIN reset by staff");
    Ok(Json(json!({ "case_number": case.display_number(), "pin": pin })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchCase {
    status: String,
}

/// `PATCH /v1/cases/{number}` with `{"status": "active"}` (reviewed and confirmed) or
/// `{"status": "withdrawn"}` (on the survivor's behalf: its hashes stop matching) (curate; in
/// the audit log under the key's name). A withdrawn case stays withdrawn: 409.
async fn patch_case(
    State(state): State<AppState>,
    auth: Auth,
    number: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<PatchCase>,
) -> ApiResult<Json<Value>> {
    let actor = auth.require(Scope::Curate)?;
    let number = path(number)?;
    let status: CaseStatus = body.status.parse()?;
    if status == CaseStatus::Received {
        return Err(ApiError::bad_request("a case can be made `active` or `withdrawn`"));
    }
    let case = state.inner.store.case_by_number(&number).await?.case;
    let case = state.inner.store.set_case_status(&actor, case.id, status).await?;
    tracing::info!(case = case.id, status = case.status.as_str(), "case status set by staff");
    state.wake_webhooks();
    Ok(Json(case_json(&case)))
}

async fn withdraw_case(
    State(state): State<AppState>,
    number: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<PinBody>,
) -> ApiResult<Json<Value>> {
    let number = path(number)?;
    let case = state.inner.store.withdraw_case(&number, &body.pin).await?;
    tracing::info!(case = case.id, "case withdrawn");
    state.wake_webhooks();
    Ok(Json(json!({
        "case_number": case.display_number(),
        "status": case.status.as_str(),
        "withdrawn_at": case.withdrawn_at.map(|t| t.as_millis()),
    })))
}

// ---------------------------------------------------------------------------------------------
// Match counts

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsParams {
    by: Option<String>,
    bank: Option<String>,
    entry: Option<i64>,
    source: Option<String>,
    case: Option<i64>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<u32>,
}

/// `GET /v1/stats/matches?by=bank|entry|source|day|signal[&bank=NAME][&entry=ID][&source=S]
/// [&case=ID][&since=YYYY-MM-DD][&until=YYYY-MM-DD][&limit=N]`: how often entries matched, summed per
/// bank, entry, source (the API key's name, or `telegram:<chat id>` for the bot), UTC day or
/// signal, over a range of days (the last 30 by default). The counts this process has not yet
/// written are written first, so a lookup answered before this request is counted in it.
async fn match_stats(
    State(state): State<AppState>,
    auth: Auth,
    params: Result<Query<StatsParams>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    auth.require(Scope::Curate)?;
    let p = query(params)?;
    let group: StatsGroup = p.by.as_deref().unwrap_or("bank").parse()?;
    let mut q =
        StatsQuery::for_days(group, p.since.as_deref(), p.until.as_deref(), day_of(Timestamp::now()))?;
    q.limit = p.limit.unwrap_or(q.limit);
    q.entry_id = p.entry;
    q.source = p.source;
    q.case_id = p.case;
    if let Some(name) = &p.bank {
        q.bank_id = Some(bank_by_name(&state, name).await?.id);
    }
    state.flush_match_counts_before("stats").await;
    let rows = state.inner.store.match_stats(&q).await?;
    let names: HashMap<i64, String> =
        state.inner.store.list_banks().await?.into_iter().map(|b| (b.id, b.name)).collect();
    let bank_name = |id: i64| names.get(&id).map_or(Value::Null, |n| json!(n));
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            let mut v = match r.key {
                StatsKey::Bank(id) => json!({ "bank": bank_name(id) }),
                StatsKey::Entry { id, bank_id } => json!({ "entry_id": id, "bank": bank_name(bank_id) }),
                StatsKey::Source(s) => json!({ "source": s }),
                StatsKey::Day(d) => json!({ "day": format_day(d) }),
                StatsKey::Signal(s) => json!({ "signal": s.as_str() }),
            };
            v["matches"] = json!(r.matches);
            v["entries"] = json!(r.entries);
            v["sources"] = json!(r.sources);
            v["days"] = json!(r.days);
            v["first_at"] = json!(r.first_at.as_millis());
            v["last_at"] = json!(r.last_at.as_millis());
            v
        })
        .collect();
    Ok(Json(json!({
        "by": group.as_str(),
        "since": format_day(q.since_day),
        "until": format_day(q.until_day),
        "rows": rows,
    })))
}
