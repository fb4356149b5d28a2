//! The lookup and hashing endpoints of Meta's Hasher-Matcher-Actioner 2.0 (OpenMediaMatch), so a
//! client written for HMA works against consentry by changing its base URL and sending a
//! consentry API key of the `lookup` scope as its bearer token: `/m/raw_lookup`, `/m/lookup`
//! (GET by hash, POST by uploaded photo), `/m/compare`, `/m/index/status` and `/h/hash`, with
//! HMA's parameters and reply shapes. The signal types are `pdq` and, for uploaded photos while
//! derive entries exist, `derive`. Two differences, both deliberate: consentry never fetches
//! media from a URL (HMA's `?url=` forms answer 400: upload the photo instead), and disabled
//! entries and banks never match, in `raw_lookup` too. A lookup here is counted and fires
//! webhooks like any other.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State};
use axum::Json;
use consentry_pdq::Hash256;
use consentry_store::Scope;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::api::{lookup_many, match_image, parse_hash, query, upload_pdq, MATCH_THRESHOLD};
use crate::auth::Auth;
use crate::body::{upload, JsonBody};
use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// HMA's query parameters (the ones consentry has no use for, such as `seed`, are accepted and
/// ignored, as HMA ignores what it does not know).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Params {
    signal_type: Option<String>,
    signal: Option<String>,
    include_distance: Option<String>,
    /// Only matches in these banks (comma-separated names).
    banks: Option<String>,
    url: Option<String>,
}

/// HMA's `str_to_bool`.
fn truthy(v: Option<&str>) -> bool {
    v.is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "t" | "1" | "yes" | "y"))
}

fn fetch_refused() -> ApiError {
    ApiError::bad_request(
        "consentry does not fetch media from a URL: POST the photo (multipart field `photo`) instead",
    )
}

/// The PDQ hash of `signal_type=pdq&signal=HEX`, with HMA's errors for the rest.
fn pdq_signal(p: &Params) -> ApiResult<Hash256> {
    let (Some(kind), Some(signal)) = (p.signal_type.as_deref(), p.signal.as_deref()) else {
        return Err(ApiError::bad_request("both `signal` and `signal_type` are required"));
    };
    if kind != "pdq" {
        return Err(ApiError::bad_request(format!("No such SignalType '{kind}' (hash lookups: pdq)")));
    }
    parse_hash(signal, "signal")
}

/// Whether a match in `bank` passes the `banks` filter.
fn wanted(p: &Params, bank: &str) -> bool {
    p.banks.as_deref().map_or(true, |list| list.split(',').any(|b| b.trim() == bank))
}

/// Matches (consentry's lookup reply entries) grouped by bank as HMA gives them:
/// `{"BANK": [{"bank_content_id": ID, "distance": "D"}]}`. A derive match without a global PDQ
/// distance gives its keypoint score instead (`"score": S`, `"distance": null`).
fn by_bank(p: &Params, matches: &[Value]) -> Map<String, Value> {
    let mut out = Map::new();
    for m in matches {
        let Some(bank) = m["bank"].as_str().filter(|b| wanted(p, b)) else { continue };
        let mut item = json!({
            "bank_content_id": m["entry_id"],
            "distance": m["distance"].as_u64().map(|d| d.to_string()),
        });
        if m["signal"] == "derive" {
            item["score"] = m["score"].clone();
        }
        if let Some(list) = out.entry(bank.to_owned()).or_insert_with(|| json!([])).as_array_mut() {
            list.push(item);
        }
    }
    out
}

/// The `signal_type=pdq&signal=HEX` of `p` looked up at the server's radius (PDQ's 31 by
/// default), for the key's name.
async fn pdq_matches(state: &AppState, auth: &Auth, p: &Params) -> ApiResult<Vec<Value>> {
    let h = pdq_signal(p)?;
    let mut res = lookup_many(state, &auth.0.name, vec![vec![h]], state.inner.config.default_radius).await?;
    Ok(res.pop().map(|(m, _)| m).unwrap_or_default())
}

/// `GET /m/raw_lookup?signal_type=pdq&signal=HEX[&include_distance=true][&banks=A,B]`.
pub(crate) async fn raw_lookup(
    State(state): State<AppState>,
    auth: Auth,
    params: Result<Query<Params>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    auth.require(Scope::Lookup)?;
    let p = query(params)?;
    let matches = pdq_matches(&state, &auth, &p).await?;
    let with_distance = truthy(p.include_distance.as_deref());
    let out: Vec<Value> = matches
        .iter()
        .filter(|m| m["bank"].as_str().is_some_and(|b| wanted(&p, b)))
        .map(|m| match with_distance {
            true => json!({ "bank_content_id": m["entry_id"], "distance": m["distance"].to_string() }),
            false => m["entry_id"].clone(),
        })
        .collect();
    Ok(Json(json!({ "matches": out })))
}

/// `GET /m/lookup?signal_type=pdq&signal=HEX[&banks=A,B]`: the matches by bank.
pub(crate) async fn lookup_get(
    State(state): State<AppState>,
    auth: Auth,
    params: Result<Query<Params>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    auth.require(Scope::Lookup)?;
    let p = query(params)?;
    if p.url.is_some() {
        return Err(fetch_refused());
    }
    let matches = pdq_matches(&state, &auth, &p).await?;
    Ok(Json(Value::Object(by_bank(&p, &matches))))
}

/// `POST /m/lookup[?banks=A,B]` with the photo in the multipart field `photo`: the matches by
/// signal type and bank (`derive` too while derive entries exist).
pub(crate) async fn lookup_post(
    State(state): State<AppState>,
    auth: Auth,
    params: Result<Query<Params>, QueryRejection>,
    req: Request,
) -> ApiResult<Json<Value>> {
    auth.require(Scope::Lookup)?;
    let p = query(params)?;
    let bytes = upload(req, &state, "photo").await?;
    let found = match_image(&state, &auth.0.name, bytes, false, state.inner.config.default_radius).await?;
    let (pdq, derive): (Vec<Value>, Vec<Value>) =
        found.matches.into_iter().partition(|m| m["signal"] != "derive");
    let mut out = json!({ "pdq": by_bank(&p, &pdq) });
    if found.derive {
        out["derive"] = Value::Object(by_bank(&p, &derive));
    }
    Ok(Json(out))
}

/// `POST /m/compare` with `{"pdq": [A, B]}`: `{"pdq": [match, {"distance": D}]}`.
pub(crate) async fn compare(
    auth: Auth,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    auth.require(Scope::Lookup)?;
    let mut out = Map::new();
    for (kind, pair) in &body {
        if kind != "pdq" {
            return Err(ApiError::bad_request(format!("No such SignalType '{kind}' (comparisons: pdq)")));
        }
        let (Some(a), Some(b), Some(2)) = (pair[0].as_str(), pair[1].as_str(), pair.as_array().map(Vec::len))
        else {
            return Err(ApiError::bad_request("Comparison hash list length must be exactly 2 hashes"));
        };
        let d = parse_hash(a, "pdq[0]")?.distance(&parse_hash(b, "pdq[1]")?);
        out.insert(kind.clone(), json!([d <= MATCH_THRESHOLD, { "distance": d }]));
    }
    Ok(Json(Value::Object(out)))
}

/// `GET /m/index/status[?signal_type=pdq|derive]`: per signal type whether its index is loaded,
/// its size, and `built_to`: the time (seconds) it is current to — now, since it follows every
/// write within a poll interval; -1 before it is loaded.
pub(crate) async fn index_status(
    State(state): State<AppState>,
    auth: Auth,
    params: Result<Query<Params>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    auth.require(Scope::Lookup)?;
    let p = query(params)?;
    let loaded = state.sync_status().loaded.load(std::sync::atomic::Ordering::Relaxed);
    let now = consentry_store::Timestamp::now().as_millis() / 1000;
    let status =
        |size: usize| json!({ "present": loaded, "built_to": if loaded { now } else { -1 }, "size": size });
    let mut out = json!({ "pdq": status(state.index().len()), "derive": status(state.inner.derive.len()) });
    if let Some(kind) = p.signal_type.as_deref() {
        let one = out
            .get(kind)
            .cloned()
            .ok_or_else(|| ApiError::bad_request(format!("No such signal type '{kind}'")))?;
        out = json!({ kind: one });
    }
    Ok(Json(out))
}

/// `GET /h/hash?url=...`: refused (consentry never fetches media).
pub(crate) async fn hash_get(auth: Auth) -> ApiResult<Json<Value>> {
    auth.require(Scope::Lookup)?;
    Err(fetch_refused())
}

/// `POST /h/hash` with the photo in the multipart field `photo`: `{"pdq": HEX}`.
pub(crate) async fn hash_post(
    State(state): State<AppState>,
    auth: Auth,
    req: Request,
) -> ApiResult<Json<Value>> {
    auth.require(Scope::Lookup)?;
    let bytes = upload(req, &state, "photo").await?;
    Ok(Json(json!({ "pdq": upload_pdq(&state, bytes).await?.to_hex() })))
}
