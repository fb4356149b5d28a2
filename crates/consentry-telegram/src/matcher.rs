//! Where hashes are matched and cases opened: the embedded store + index (the same banks
//! `consentry serve` uses, through `consentry_server::AppState`, which only supplies the store and
//! the index that follows the store's change feed — no HTTP), or a remote `consentry serve`
//! (`POST /v1/lookup`, `/v1/cases`, with an API key).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use consentry_derive::QueryFeatures;
use consentry_pdq::Hash256;
use consentry_server::AppState;
use consentry_store::{Actor, CaseHash, NewCase, StoreError};
use serde_json::{json, Value};

/// The best match of one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    /// Bank name.
    pub bank: String,
    /// Hamming distance (over the 8 dihedral hashes, the smallest). For a derive match, the
    /// distance to the signature's global PDQ hash (above the radius when only the keypoints
    /// matched).
    pub distance: u32,
    /// Entry id (store or server), when known.
    pub entry_id: Option<i64>,
    /// `pdq` or `derive` (the entry's signal).
    pub signal: &'static str,
    /// Derive matches: geometrically consistent keypoints (0 for PDQ matches).
    pub inliers: u32,
    /// Derive matches: their descriptor-agreement score (0 for PDQ matches).
    pub score: u32,
    /// Derive matches: the top band's hash distance, when the band matched.
    pub band_distance: Option<u32>,
    /// Derive matches: the keypoints matched as a mirror image (the copy was mirrored).
    pub mirrored: bool,
}

impl Hit {
    /// A derive match whose only evidence is local (keypoints or top band): the photo's global
    /// PDQ hash (every dihedral variant) is farther than PDQ's radius from the protected one's.
    pub fn local_evidence_only(&self) -> bool {
        self.signal == "derive" && self.distance > consentry_index::DEFAULT_RADIUS
    }

    /// A PDQ match.
    pub fn pdq(bank: String, distance: u32, entry_id: Option<i64>) -> Hit {
        Hit {
            bank,
            distance,
            entry_id,
            signal: "pdq",
            inliers: 0,
            score: 0,
            band_distance: None,
            mirrored: false,
        }
    }
}

/// A lookup or case operation that failed.
#[derive(Debug)]
pub enum MatchError {
    /// Wrong case number or PIN.
    BadCredentials,
    /// Too many wrong PINs.
    Locked,
    /// A hash refused (index in the request, reason).
    InvalidHash(usize, String),
    /// The store or the server cannot be reached, or answered 5xx or 429: worth retrying.
    Unavailable(String),
    /// Anything else (a refused key, an unexpected answer, ...).
    Other(String),
}

impl std::fmt::Display for MatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MatchError::BadCredentials => f.write_str("bad credentials"),
            MatchError::Locked => f.write_str("case locked"),
            MatchError::InvalidHash(i, r) => write!(f, "hash #{i}: {r}"),
            MatchError::Unavailable(e) | MatchError::Other(e) => f.write_str(e),
        }
    }
}

/// An index hit's entry and bank, if both still exist and are enabled. The index follows the
/// feed within a poll interval; the store has the last word on whether an entry still matches.
async fn live_entry(
    state: &AppState,
    id: u64,
) -> Result<Option<(consentry_store::Entry, consentry_store::Bank)>, MatchError> {
    let e = match state.store().get_entry(id as i64).await {
        Ok(e) => e,
        Err(StoreError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if e.disabled_at.is_some() {
        return Ok(None);
    }
    match state.store().get_bank(e.bank_id).await {
        Ok(b) if b.enabled => Ok(Some((e, b))),
        Ok(_) | Err(StoreError::NotFound(_)) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

impl From<StoreError> for MatchError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::BadCredentials => MatchError::BadCredentials,
            StoreError::Locked { .. } => MatchError::Locked,
            StoreError::InvalidHash { index, reason } => MatchError::InvalidHash(index, reason.to_string()),
            other if other.is_unavailable() => MatchError::Unavailable(other.to_string()),
            other => MatchError::Other(other.to_string()),
        }
    }
}

/// A case as the survivor sees it.
#[derive(Debug)]
pub struct CaseInfo {
    /// `XXXX-XXXX-XXXX`.
    pub number: String,
    /// open / withdrawn / ...
    pub status: String,
    /// Hashes still matching.
    pub active: usize,
    /// All its hashes.
    pub total: usize,
    /// How often its hashes matched, when the store (or the server) tells.
    pub caught: Option<Caught>,
}

/// How often a case's hashes matched: counts only, never where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caught {
    /// Lookups that matched one of them.
    pub matches: i64,
    /// Distinct platforms and chats they matched in.
    pub sources: i64,
    /// UTC day (`consentry_store::day_of`) of the last match; `None` when none.
    pub last_day: Option<i64>,
}

/// Remote verdicts by the image's (original) hash, with the time they were obtained.
type VerdictCache = HashMap<Hash256, (std::time::Instant, Option<Hit>)>;

/// A remote `consentry serve`.
#[derive(Clone)]
pub struct Remote {
    http: reqwest::Client,
    url: String,
    key: String,
    verdicts: std::sync::Arc<Mutex<VerdictCache>>,
    /// Whether the server held derive entries at its last features lookup, and when that was
    /// (`None`: not asked yet). While it holds none, the bot skips the features.
    derive_entries: std::sync::Arc<Mutex<Option<(std::time::Instant, bool)>>>,
    /// Set once the server refused an image's hashes as one list item (a release before list
    /// items): they then go as separate items.
    flat_lookups: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("url", &self.url).field("key", &"<redacted>").finish()
    }
}

/// How long a remote verdict is reused for the same image (the server's banks can change).
pub const REMOTE_VERDICT_TTL: Duration = Duration::from_secs(60);
/// How long "the server holds no derive entries" is believed before features are sent again.
pub const REMOTE_DERIVE_RECHECK: Duration = Duration::from_secs(60);

impl Remote {
    /// A client for the server at `url` with API key `key` (scope `lookup`).
    pub fn new(url: &str, key: &str) -> Result<Remote, MatchError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| MatchError::Other(e.without_url().to_string()))?;
        Ok(Remote {
            http,
            url: url.trim_end_matches('/').to_owned(),
            key: key.to_owned(),
            verdicts: Default::default(),
            derive_entries: Default::default(),
            flat_lookups: Default::default(),
        })
    }

    async fn post(&self, path: &str, body: Value, auth: bool) -> Result<Value, MatchError> {
        let mut req = self.http.post(format!("{}{path}", self.url)).json(&body);
        if auth {
            req = req.bearer_auth(&self.key);
        }
        // No answer (refused, reset, timed out): the server is down or unreachable. A request
        // that could not even be built (a malformed URL) is a configuration error.
        let resp = req.send().await.map_err(|e| {
            let unreachable = !e.is_builder();
            let text = e.without_url().to_string();
            if unreachable {
                MatchError::Unavailable(text)
            } else {
                MatchError::Other(text)
            }
        })?;
        let status = resp.status();
        let transient = status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
        let v: Value = match resp.json().await {
            Ok(v) => v,
            Err(e) if transient => {
                return Err(MatchError::Unavailable(format!("{path}: HTTP {status}: {}", e.without_url())))
            }
            Err(e) => return Err(MatchError::Other(e.without_url().to_string())),
        };
        if status.is_success() {
            return Ok(v);
        }
        let code = v["error"]["code"].as_str().unwrap_or("");
        if transient {
            return Err(MatchError::Unavailable(format!("{path}: HTTP {status}: {code}")));
        }
        let msg = v["error"]["message"].as_str().unwrap_or("").to_owned();
        Err(match code {
            "bad_credentials" => MatchError::BadCredentials,
            "case_locked" => MatchError::Locked,
            "invalid_hash" | "hash_rejected" => MatchError::InvalidHash(0, msg),
            _ => MatchError::Other(format!("{path}: HTTP {status}: {code} {msg}")),
        })
    }

    /// `POST /v1/lookup` of one image's hashes as one list item, so that the server counts (and
    /// reports to its webhooks) each entry once per image; to a server that takes only plain
    /// hashes (an earlier release answers `invalid_json`), as separate items.
    async fn lookup_hashes(&self, hashes: &[Hash256], radius: u32) -> Result<Value, MatchError> {
        use std::sync::atomic::Ordering::Relaxed;
        let hex: Vec<String> = hashes.iter().map(|h| h.to_hex()).collect();
        let flat = json!({ "hashes": hex, "radius": radius });
        if hashes.len() == 1 || self.flat_lookups.load(Relaxed) {
            return self.post("/v1/lookup", flat, true).await;
        }
        match self.post("/v1/lookup", json!({ "hashes": [hex], "radius": radius }), true).await {
            Err(MatchError::Other(m)) if m.contains("invalid_json") => {
                tracing::warn!("the server takes no list items in batch lookups; the hashes go one by one");
                self.flat_lookups.store(true, Relaxed);
                self.post("/v1/lookup", flat, true).await
            }
            r => r,
        }
    }

    /// Derive matches from the server for query features computed here (the image stays with
    /// the bot); remembers whether the server holds derive entries at all.
    async fn lookup_features(&self, q: &QueryFeatures) -> Result<Option<Hit>, MatchError> {
        // A server older than the bot reads query features up to format 5 (no grid), 4 (no image size), 3
        // (keypoint levels half an octave apart) or 2 (no mirrored keypoints either): ask it again
        // in the next older format until it reads one (without the mirrored keypoints it cannot
        // find mirrored crops).
        let mut q = std::borrow::Cow::Borrowed(q);
        let v = loop {
            match self.post("/v1/lookup/features", json!({ "features": q.to_base64() }), true).await {
                Err(MatchError::Other(m))
                    if m.contains(&format!("version {} is not supported", q.format_version())) =>
                {
                    let Some(older) = q.in_older_format() else { return Err(MatchError::Other(m)) };
                    tracing::warn!(
                        refused = q.format_version(),
                        sent = older.format_version(),
                        "the server does not read query features of this format; sent in an older one"
                    );
                    q = std::borrow::Cow::Owned(older);
                }
                r => break r?,
            }
        };
        let any = v["derive_entries"].as_u64().is_some_and(|n| n > 0);
        *self.derive_entries.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((std::time::Instant::now(), any));
        let mut out = None;
        for m in v["matches"].as_array().into_iter().flatten() {
            let Some(bank) = m["bank"].as_str() else { continue };
            let pdq = m["distance"].as_u64();
            let hit = Hit {
                bank: bank.to_owned(),
                // The server gives the PDQ distance only when it matched; 256 (every bit) otherwise.
                distance: pdq.map_or(256, |d| d as u32),
                entry_id: m["entry_id"].as_i64(),
                signal: "derive",
                inliers: m["inliers"].as_u64().unwrap_or(0) as u32,
                score: m["score"].as_u64().unwrap_or(0) as u32,
                band_distance: m["band_distance"].as_u64().map(|d| d as u32),
                mirrored: m["mirrored"].as_bool().unwrap_or(false),
            };
            out = better_derive(out, hit, pdq.is_some());
        }
        Ok(out)
    }
}

/// The matching back end.
#[derive(Clone, Debug)]
pub enum Matcher {
    /// Same store and in-memory index as `consentry serve`.
    Embedded(AppState),
    /// A `consentry serve` over HTTP.
    Remote(Remote),
}

/// The better of two derive hits: a global PDQ match of the signature first, then the higher
/// score, then the smaller distance.
fn better_derive(cur: Option<Hit>, hit: Hit, hit_pdq_matched: bool) -> Option<Hit> {
    let replace = match &cur {
        None => true,
        Some(o) => {
            (hit_pdq_matched, hit.score, std::cmp::Reverse(hit.distance))
                > (
                    o.distance <= consentry_pdq::DEFAULT_MATCH_DISTANCE,
                    o.score,
                    std::cmp::Reverse(o.distance),
                )
        }
    };
    if replace {
        Some(hit)
    } else {
        cur
    }
}

fn best(a: Option<Hit>, b: Hit) -> Option<Hit> {
    match a {
        Some(a) if a.distance <= b.distance => Some(a),
        _ => Some(b),
    }
}

impl Matcher {
    /// The closest active entry within `radius` of any of `hashes` (the 8 dihedral hashes of
    /// one image), if any.
    pub async fn lookup(&self, hashes: &[Hash256], radius: u32) -> Result<Option<Hit>, MatchError> {
        match self {
            Matcher::Embedded(state) => {
                let matches = state.index().search_dihedral(hashes, radius);
                let mut out: Option<Hit> = None;
                for m in matches {
                    let Some((e, b)) = live_entry(state, m.id).await? else { continue };
                    out = best(out, Hit::pdq(b.name, m.distance, Some(e.id)));
                }
                Ok(out)
            }
            Matcher::Remote(r) => {
                let key = hashes[0];
                if let Some((at, v)) = r.verdicts.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
                    if at.elapsed() < REMOTE_VERDICT_TTL {
                        return Ok(v.clone());
                    }
                }
                let v = r.lookup_hashes(hashes, radius).await?;
                let mut out = None;
                for res in v["results"].as_array().into_iter().flatten() {
                    for m in res["matches"].as_array().into_iter().flatten() {
                        let (Some(bank), Some(d)) = (m["bank"].as_str(), m["distance"].as_u64()) else {
                            continue;
                        };
                        out = best(out, Hit::pdq(bank.to_owned(), d as u32, m["entry_id"].as_i64()));
                    }
                }
                let mut cache = r.verdicts.lock().unwrap_or_else(|p| p.into_inner());
                if cache.len() > 100_000 {
                    cache.clear();
                }
                cache.insert(key, (std::time::Instant::now(), out.clone()));
                Ok(out)
            }
        }
    }

    /// Whether derive entries are active: only then are the derivative features of posted
    /// images worth computing. Embedded: the derive index is not empty. Remote: the server held
    /// derive entries at the last features lookup, or that answer is older than
    /// [`REMOTE_DERIVE_RECHECK`] (the features, never the image, go to the server).
    pub fn derive_active(&self) -> bool {
        match self {
            Matcher::Embedded(s) => !s.derive_index().is_empty(),
            Matcher::Remote(r) => match *r.derive_entries.lock().unwrap_or_else(|p| p.into_inner()) {
                Some((at, any)) => any || at.elapsed() >= REMOTE_DERIVE_RECHECK,
                None => true,
            },
        }
    }

    /// The best active derive entry matching an image's query features. A global PDQ match of
    /// the signature ranks first, then the highest score. Remote: `POST /v1/lookup/features`.
    pub async fn lookup_derive(&self, q: &QueryFeatures) -> Result<Option<Hit>, MatchError> {
        let state = match self {
            Matcher::Embedded(state) => state,
            Matcher::Remote(r) => return r.lookup_features(q).await,
        };
        let hits = state.derive_index().search(q);
        let mut out: Option<Hit> = None;
        for h in hits {
            let Some((e, b)) = live_entry(state, h.id).await? else { continue };
            let distance = match (h.pdq_distance, e.value.derive_signature()) {
                (Some(d), _) => d,
                (None, Some(Ok(sig))) => q.pdq.iter().map(|x| x.distance(&sig.pdq)).min().unwrap_or(u32::MAX),
                (None, _) => u32::MAX,
            };
            let hit = Hit {
                bank: b.name,
                distance,
                entry_id: Some(e.id),
                signal: "derive",
                inliers: h.inliers as u32,
                score: h.score,
                band_distance: h.band_distance,
                mirrored: h.mirrored,
            };
            out = better_derive(out, hit, h.pdq_distance.is_some());
        }
        Ok(out)
    }

    /// Counts a match of entry `id` in chat `chat` in the server's match counts
    /// (`GET /v1/stats/matches`, source `telegram:<chat id>`). Embedded mode only: a remote
    /// server counts the bot's lookups itself, under the name of the bot's API key.
    pub fn count_match(&self, chat: i64, id: i64) {
        if let Matcher::Embedded(state) = self {
            state.count_matches(&format!("telegram:{chat}"), [id]);
        }
    }

    /// Entries in the in-memory index (embedded mode).
    pub fn index_size(&self) -> Option<usize> {
        match self {
            Matcher::Embedded(s) => Some(s.index().len()),
            Matcher::Remote(_) => None,
        }
    }

    /// One line per bank: name, purpose, enabled.
    pub async fn banks(&self) -> Result<Vec<String>, MatchError> {
        match self {
            Matcher::Embedded(s) => Ok(s
                .store()
                .list_banks()
                .await?
                .into_iter()
                .map(|b| {
                    format!("{} ({}, {})", b.name, b.purpose.as_str(), if b.enabled { "on" } else { "off" })
                })
                .collect()),
            Matcher::Remote(r) => {
                let resp = r
                    .http
                    .get(format!("{}/v1/banks", r.url))
                    .bearer_auth(&r.key)
                    .send()
                    .await
                    .map_err(|e| MatchError::Other(e.without_url().to_string()))?;
                let v: Value =
                    resp.json().await.map_err(|e| MatchError::Other(e.without_url().to_string()))?;
                Ok(v["banks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|b| {
                        format!(
                            "{} ({}, {})",
                            b["name"].as_str().unwrap_or("?"),
                            b["purpose"].as_str().unwrap_or("?"),
                            if b["enabled"].as_bool().unwrap_or(false) { "on" } else { "off" }
                        )
                    })
                    .collect())
            }
        }
    }

    /// Opens a case with `hashes`; returns (display number, PIN).
    pub async fn create_case(&self, hashes: &[Hash256]) -> Result<(String, String), MatchError> {
        match self {
            Matcher::Embedded(s) => {
                let bank = s.store().get_bank_by_name(&s.config().case_bank).await?;
                let created = s
                    .store()
                    .create_case(
                        &Actor::named("telegram"),
                        NewCase {
                            bank_id: bank.id,
                            hashes: hashes.iter().map(|h| CaseHash::pdq(*h, None)).collect(),
                            metadata: json!({ "via": "telegram" }),
                        },
                    )
                    .await?;
                s.wake_webhooks();
                Ok((created.case.display_number(), created.pin))
            }
            Matcher::Remote(r) => {
                let hex: Vec<String> = hashes.iter().map(|h| h.to_hex()).collect();
                let v = r.post("/v1/cases", json!({ "hashes": hex }), false).await?;
                match (v["case_number"].as_str(), v["pin"].as_str()) {
                    (Some(n), Some(p)) => Ok((n.to_owned(), p.to_owned())),
                    _ => Err(MatchError::Other("unexpected /v1/cases answer".into())),
                }
            }
        }
    }

    /// A case's status (number + PIN).
    pub async fn case_status(&self, number: &str, pin: &str) -> Result<CaseInfo, MatchError> {
        match self {
            Matcher::Embedded(s) => {
                // This process's own recent matches count too.
                s.flush_match_counts_before("case status").await;
                let view = s.store().case_status(number, pin).await?;
                let bank = s.store().get_bank(view.case.bank_id).await?;
                let active = view.entries.iter().filter(|e| e.disabled_at.is_none() && bank.enabled).count();
                let total = view.matches.total.as_ref();
                Ok(CaseInfo {
                    number: view.case.display_number(),
                    status: view.case.status.as_str().to_owned(),
                    active,
                    total: view.entries.len(),
                    caught: Some(Caught {
                        matches: total.map_or(0, |r| r.matches),
                        sources: total.map_or(0, |r| r.sources),
                        last_day: total.map(|r| consentry_store::day_of(r.last_at)),
                    }),
                })
            }
            Matcher::Remote(r) => {
                let v = r
                    .post(&format!("/v1/cases/{}/status", url_seg(number)), json!({ "pin": pin }), false)
                    .await?;
                let hashes = v["hashes"].as_array().cloned().unwrap_or_default();
                Ok(CaseInfo {
                    number: v["case_number"].as_str().unwrap_or(number).to_owned(),
                    status: v["status"].as_str().unwrap_or("?").to_owned(),
                    active: hashes.iter().filter(|h| h["active"].as_bool() == Some(true)).count(),
                    total: hashes.len(),
                    // Absent when the server hides them.
                    caught: v["caught"]["matches"].as_i64().map(|matches| Caught {
                        matches,
                        sources: v["caught"]["sources"].as_i64().unwrap_or(0),
                        last_day: v["caught"]["last_at"]
                            .as_i64()
                            .map(|ms| consentry_store::day_of(consentry_store::Timestamp(ms))),
                    }),
                })
            }
        }
    }

    /// Withdraws a case (number + PIN); returns its display number.
    pub async fn withdraw_case(&self, number: &str, pin: &str) -> Result<String, MatchError> {
        match self {
            Matcher::Embedded(s) => {
                let case = s.store().withdraw_case(number, pin).await?;
                s.wake_webhooks();
                Ok(case.display_number())
            }
            Matcher::Remote(r) => {
                let v = r
                    .post(&format!("/v1/cases/{}/withdraw", url_seg(number)), json!({ "pin": pin }), false)
                    .await?;
                Ok(v["case_number"].as_str().unwrap_or(number).to_owned())
            }
        }
    }
}

/// Keeps only the characters a case number can have, so user input cannot change the path.
fn url_seg(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::{routing::post, Json, Router};
    use std::sync::{Arc, Mutex};

    /// A server of an earlier release: query features up to format `max` (2 to 5); records the
    /// format of every request.
    fn older_server(max: u8, seen: Arc<Mutex<Vec<(u8, u8)>>>) -> Router {
        Router::new().route(
            "/v1/lookup/features",
            post(move |Json(v): Json<Value>| async move {
                let q = QueryFeatures::from_base64(v["features"].as_str().unwrap()).unwrap();
                let version = q.format_version();
                seen.lock().unwrap().push((version, q.levels_per_octave));
                if version > max {
                    let message = format!("`features` is not derivative query features: derivative signature version {version} is not supported (expected 1 to {max})");
                    let body = json!({ "error": { "code": "bad_request", "message": message } });
                    return (axum::http::StatusCode::BAD_REQUEST, Json(body));
                }
                let m = json!({ "bank": "protected", "entry_id": 7, "distance": null, "band_distance": null, "inliers": 4, "score": 90 });
                (axum::http::StatusCode::OK, Json(json!({ "derive_entries": 1, "matches": [m], "truncated": false })))
            }),
        )
    }

    /// A batch lookup endpoint that takes plain hashes only (`lists: false`, as before list items)
    /// or also lists; records every body's `hashes`.
    fn lookup_server(lists: bool, seen: Arc<Mutex<Vec<Value>>>) -> Router {
        Router::new().route(
            "/v1/lookup",
            post(move |Json(v): Json<Value>| async move {
                let items = v["hashes"].as_array().unwrap().clone();
                seen.lock().unwrap().push(json!(items));
                if !lists && items.iter().any(Value::is_array) {
                    let body = json!({ "error": { "code": "invalid_json", "message": "invalid type: sequence, expected a PDQ hash" } });
                    return (axum::http::StatusCode::BAD_REQUEST, Json(body));
                }
                let m = json!({ "bank": "protected", "entry_id": 3, "distance": 4 });
                let results: Vec<Value> =
                    items.iter().enumerate().map(|(i, _)| json!({ "matches": if i == 0 { vec![m.clone()] } else { vec![] } })).collect();
                (axum::http::StatusCode::OK, Json(json!({ "radius": 31, "results": results })))
            }),
        )
    }

    #[tokio::test]
    async fn an_images_hashes_go_as_one_list_item_or_one_by_one_to_an_older_server() {
        let hashes: Vec<Hash256> =
            (0..8u64).map(|i| Hash256::from_words([i, !i, i << 7, i ^ 0x5555])).collect();
        let hex: Vec<Value> = hashes.iter().map(|h| json!(h.to_hex())).collect();
        for (lists, want) in
            [(true, vec![json!([hex.clone()])]), (false, vec![json!([hex.clone()]), json!(hex.clone())])]
        {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let app = lookup_server(lists, seen.clone());
            tokio::spawn(async move { axum::serve(listener, app).await });
            let remote = Matcher::Remote(Remote::new(&url, "key").unwrap());
            let hit = remote.lookup(&hashes, 31).await.unwrap().expect("a match");
            assert_eq!((hit.entry_id, hit.distance), (Some(3), 4));
            assert_eq!(*seen.lock().unwrap(), want, "lists: {lists}");
            // Remembered: the next image goes the way that worked, in one request.
            let other: Vec<Hash256> =
                hashes.iter().map(|h| Hash256::from_words([!h.words()[0], 1, 2, 3])).collect();
            remote.lookup(&other, 31).await.unwrap();
            let last = seen.lock().unwrap().last().unwrap().clone();
            assert_eq!(last[0].is_array(), lists);
            assert_eq!(seen.lock().unwrap().len(), want.len() + 1);
        }
    }

    #[tokio::test]
    async fn an_older_server_gets_the_features_in_a_format_it_reads() {
        let mut ex = consentry_derive::Extractor::new();
        let scene = consentry_derive::synth::scene(640, 480, 5);
        let q = ex.query(&scene.pixels());
        assert!(!q.mirrored.is_empty());
        assert_eq!((q.levels_per_octave, q.source_side, q.grid.is_some()), (3, 640, true));
        for (max, want) in [
            (6, vec![(6, 3)]),
            (5, vec![(6, 3), (5, 3)]),
            (4, vec![(6, 3), (5, 3), (4, 3)]),
            (3, vec![(6, 3), (5, 3), (4, 3), (3, 2)]),
            (2, vec![(6, 3), (5, 3), (4, 3), (3, 2), (2, 2)]),
        ] {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let app = older_server(max, seen.clone());
            tokio::spawn(async move { axum::serve(listener, app).await });
            let hit = Remote::new(&url, "key").unwrap().lookup_features(&q).await.unwrap().expect("a match");
            assert_eq!((hit.entry_id, hit.inliers, hit.mirrored), (Some(7), 4, false));
            assert_eq!(*seen.lock().unwrap(), want, "formats sent to a server reading up to {max}");
        }
    }
}
