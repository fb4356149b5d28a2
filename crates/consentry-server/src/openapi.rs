//! `/openapi.json`: an OpenAPI 3.0 description of every endpoint, built from one table so that
//! the router and the document cannot drift apart (`app` checks it in debug builds, the tests
//! check it in every build).

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use crate::error::codes;

/// (method, path, scope needed or "", summary, request body schema or Null, success status,
/// extra error statuses)
struct Op {
    method: &'static str,
    path: &'static str,
    scope: &'static str,
    summary: &'static str,
    body: &'static str,
    ok: u16,
    errors: &'static [u16],
}

const IMAGE: &str = "image";
const NONE: &str = "";

const OPS: &[Op] = &[
    Op { method: "GET", path: "/health", scope: "", summary: "Liveness: the process answers.", body: NONE, ok: 200, errors: &[] },
    Op { method: "GET", path: "/ready", scope: "", summary: "Readiness: the store answers and the PDQ index is loaded.", body: NONE, ok: 200, errors: &[503] },
    Op { method: "GET", path: "/metrics", scope: "", summary: "Prometheus metrics (text): requests by route and status, lookup latency histogram, matches by bank and signal, index size, segments and compactions, last applied change seq, match-details cache hits and misses.", body: NONE, ok: 200, errors: &[] },
    Op { method: "GET", path: "/openapi.json", scope: "", summary: "This document.", body: NONE, ok: 200, errors: &[] },
    Op { method: "POST", path: "/v1/hash", scope: "lookup", summary: "PDQ-hash an image (raw body or multipart field `file`; `?dihedral=true` adds the 8 dihedral hashes; `?signal=derive` adds `derive.signature`, the base64 derivative signature to protect the image with). The image is never stored.", body: IMAGE, ok: 200, errors: &[400, 413, 415, 422] },
    Op { method: "GET", path: "/v1/lookup", scope: "lookup", summary: "Look up one hash (`?hash=HEX[&radius=N]`), or the 8 dihedral hashes of one image (`?hash=H1,...,H8&dihedral=true`).", body: NONE, ok: 200, errors: &[400] },
    Op { method: "POST", path: "/v1/lookup", scope: "lookup", summary: "Look up a batch of hashes (`{\"hashes\": [...], \"radius\"?: N}`, at most 10,000). An item may be a list of up to 8 hashes, an image's dihedral hashes (`consentry hash --dihedral`), searched together: each entry is reported once with its smallest distance, and the result echoes them as `hashes`.", body: "LookupBatch", ok: 200, errors: &[400, 413] },
    Op { method: "POST", path: "/v1/lookup/image", scope: "lookup", summary: "Hash an image and look it up (`?dihedral=true&radius=N`). The reply echoes the computed hash and quality. While derive entries exist, the image's derivative features are matched too: each match has `signal` (`pdq` or `derive`); derive matches carry `distance` (global PDQ distance, null when the global hash did not match), `band_distance` (distance of the top fifth's hash, null when it did not match), `inliers` and `score` (0 when the local keypoints did not match) and `mirrored` (true when the keypoints matched as a mirror image).", body: IMAGE, ok: 200, errors: &[400, 413, 415, 422] },
    Op { method: "POST", path: "/v1/lookup/features", scope: "lookup", summary: "Derive matches for derivative query features computed by the client (`{\"features\": base64}`, `consentry_derive::QueryFeatures`), so the image never leaves it; the reply echoes the first dihedral hash and the keypoint count, and gives `derive_entries`, how many derive entries the server holds.", body: "Features", ok: 200, errors: &[400, 413] },
    Op { method: "POST", path: "/v1/compare", scope: "lookup", summary: "Distance between two hashes; `match` is distance <= 31.", body: "Compare", ok: 200, errors: &[400] },
    Op { method: "GET", path: "/v1/banks", scope: "lookup|curate", summary: "List banks.", body: NONE, ok: 200, errors: &[] },
    Op { method: "POST", path: "/v1/banks", scope: "curate", summary: "Create a bank (`{name, description?, enabled?, purpose?}`; purpose: survivor-protected, known-abuse, other).", body: "CreateBank", ok: 201, errors: &[400, 409] },
    Op { method: "GET", path: "/v1/banks/{name}", scope: "lookup|curate", summary: "One bank.", body: NONE, ok: 200, errors: &[404] },
    Op { method: "PATCH", path: "/v1/banks/{name}", scope: "curate", summary: "Rename, re-describe, re-purpose, enable or disable a bank (a disabled bank's entries stop matching).", body: "PatchBank", ok: 200, errors: &[400, 404, 409] },
    Op { method: "DELETE", path: "/v1/banks/{name}", scope: "curate", summary: "Delete a bank and its entries (refused if cases were submitted into it).", body: NONE, ok: 204, errors: &[404, 409] },
    Op { method: "GET", path: "/v1/banks/{name}/entries", scope: "lookup|curate", summary: "A page of a bank's entries (`?after=ID&limit=N`, limit at most 1000; `next_after` continues).", body: NONE, ok: 200, errors: &[404] },
    Op { method: "POST", path: "/v1/banks/{name}/entries", scope: "curate", summary: "Add one entry (`{hash, quality?, metadata?, signal?}` → 201; `signal: \"derive\"` takes a base64 derivative signature as `hash` or `value`) or a JSON array of them (→ 200 with `added` and `rejected` by array index; at most 10,000).", body: "Entries", ok: 201, errors: &[400, 404] },
    Op { method: "POST", path: "/v1/banks/{name}/import", scope: "curate", summary: "Bulk import, streamed (`?format=csv|jsonl|hma&keep_paths=true`): CSV in Meta's pdq-photo-hasher layout `hash,quality,path` or with a header, JSON lines, or HMA's `pdq <hash>` lines (`signal_type` `derive` / `derive <base64>` lines for derivative signatures). Good lines are committed in chunks; bad and degenerate ones are reported with line numbers and reasons.", body: "ImportBody", ok: 200, errors: &[400, 404, 408, 413] },
    Op { method: "GET", path: "/v1/banks/{name}/export", scope: "curate", summary: "Bulk export, streamed (`?format=csv|meta|jsonl|hma&include_disabled=true`).", body: NONE, ok: 200, errors: &[400, 404] },
    Op { method: "GET", path: "/v1/entries/{id}", scope: "lookup|curate", summary: "One entry.", body: NONE, ok: 200, errors: &[404] },
    Op { method: "DELETE", path: "/v1/entries/{id}", scope: "curate", summary: "Delete an entry for good.", body: NONE, ok: 204, errors: &[404] },
    Op { method: "POST", path: "/v1/entries/{id}/disable", scope: "curate", summary: "Disable an entry (it stops matching).", body: NONE, ok: 200, errors: &[404] },
    Op { method: "POST", path: "/v1/entries/{id}/enable", scope: "curate", summary: "Enable an entry again (refused for entries of withdrawn cases).", body: NONE, ok: 200, errors: &[404, 409] },
    Op { method: "POST", path: "/v1/cases", scope: "", summary: "A survivor submits hashes or derivative signatures (`{hash, signal: \"derive\"}`; never images: image data is refused). Returns the case number and the PIN, shown only this once.", body: "CreateCase", ok: 201, errors: &[400, 413] },
    Op { method: "GET", path: "/v1/cases", scope: "curate", summary: "The cases by id, for staff to review (`?status=received|active|withdrawn&after=ID&limit=N`, limit 1–1000, default 100; `next_after` continues): id, number, status, bank, dates.", body: NONE, ok: 200, errors: &[400] },
    Op { method: "GET", path: "/v1/cases/{number}", scope: "curate", summary: "The staff view of a case by the number the survivor gives (no PIN): its hashes with their `entry_id`, `active`, `matches` and `last_matched_at`, `caught` (the sums), and `pin` (`failed_attempts`, `locked_until`, `lockouts`).", body: NONE, ok: 200, errors: &[404] },
    Op { method: "PATCH", path: "/v1/cases/{number}", scope: "curate", summary: "Staff set a case's status: `{\"status\": \"active\"}` (reviewed and confirmed) or `{\"status\": \"withdrawn\"}` (on the survivor's behalf: its hashes stop matching within a second). A withdrawn case stays withdrawn (409). In the audit log under the key.", body: "PatchCase", ok: 200, errors: &[400, 404, 409] },
    Op { method: "POST", path: "/v1/cases/{number}/pin", scope: "curate", summary: "Staff give a case a new PIN, for a survivor who lost hers once the helpline has checked who she is: `{case_number, pin}`, the PIN in this reply only (stored as an Argon2id hash). The old PIN stops working and a lock is lifted. In the audit log under the key.", body: NONE, ok: 200, errors: &[404] },
    Op { method: "POST", path: "/v1/cases/{number}/status", scope: "", summary: "A case's status and hashes (each with its signal, pdq or derive, whether it is active, and unless the server hides them, `matches` and `last_matched_at`), with its number and PIN; `caught` sums what was stopped: `matches`, the `hashes` that matched, the distinct `sources` (platforms and chats, counted, never named) and `days`, `first_at` and `last_at` (ms, null when nothing matched). Counts cover the days the server keeps. Wrong number or PIN: 401 (never says which); too many wrong PINs: 429.", body: "Pin", ok: 200, errors: &[400, 401, 429] },
    Op { method: "GET", path: "/v1/stats/matches", scope: "curate", summary: "How often entries matched (`?by=bank|entry|source|day|signal`, default bank; filters `bank=NAME`, `entry=ID`, `source=S`, `case=ID` (the entries of one case); `since`/`until` as YYYY-MM-DD, UTC, the last 30 days by default; `limit` 1–10,000, default 100, the most matches first, days oldest first). A source is the name of the API key that looked the image up, or `telegram:<chat id>` for the bot. Each row: `matches`, distinct `entries`, `sources` and `days`, `first_at` and `last_at` (ms). Only ids, names and counts are kept, never a hash or an image.", body: NONE, ok: 200, errors: &[400, 404] },
    Op { method: "POST", path: "/v1/cases/{number}/withdraw", scope: "", summary: "Withdraw a case with its number and PIN: its hashes stop matching within a second.", body: "Pin", ok: 200, errors: &[400, 401, 409, 429] },
    Op { method: "GET", path: "/m/raw_lookup", scope: "lookup", summary: "HMA 2.0 compatibility: `?signal_type=pdq&signal=HEX[&include_distance=true][&banks=A,B]` → `{\"matches\": [entry ids]}` (with `include_distance`, `[{bank_content_id, distance}]`, the distance as a string). Disabled entries never match.", body: NONE, ok: 200, errors: &[400] },
    Op { method: "GET", path: "/m/lookup", scope: "lookup", summary: "HMA 2.0 compatibility: `?signal_type=pdq&signal=HEX[&banks=A,B]` → the matches by bank, `{\"BANK\": [{bank_content_id, distance}]}`. `?url=` is refused: consentry never fetches media.", body: NONE, ok: 200, errors: &[400] },
    Op { method: "POST", path: "/m/lookup", scope: "lookup", summary: "HMA 2.0 compatibility: the photo in the multipart field `photo` (or the raw body), `?banks=A,B` → `{\"pdq\": {BANK: [{bank_content_id, distance}]}}`, and `derive` the same way while derive entries exist (a derive match without a global PDQ distance has `distance` null and its keypoint `score`). Hashed in memory, never stored.", body: IMAGE, ok: 200, errors: &[400, 413, 415, 422] },
    Op { method: "POST", path: "/m/compare", scope: "lookup", summary: "HMA 2.0 compatibility: `{\"pdq\": [A, B]}` → `{\"pdq\": [match, {\"distance\": D}]}` (match: D ≤ 31).", body: "HmaCompare", ok: 200, errors: &[400] },
    Op { method: "GET", path: "/m/index/status", scope: "lookup", summary: "HMA 2.0 compatibility: per signal type (`?signal_type=` for one) `{present, built_to, size}`; `built_to` is now (seconds), since the index follows every write, or -1 before it is loaded.", body: NONE, ok: 200, errors: &[400] },
    Op { method: "GET", path: "/h/hash", scope: "lookup", summary: "HMA 2.0 compatibility: `?url=` is refused (consentry never fetches media); POST the photo instead.", body: NONE, ok: 400, errors: &[] },
    Op { method: "POST", path: "/h/hash", scope: "lookup", summary: "HMA 2.0 compatibility: the photo in the multipart field `photo` (or the raw body) → `{\"pdq\": HEX}`. Hashed in memory, never stored.", body: IMAGE, ok: 200, errors: &[400, 413, 415, 422] },
];

/// Every (method, path) the document describes.
pub(crate) fn documented_routes() -> BTreeSet<(String, String)> {
    OPS.iter().map(|o| (o.method.to_owned(), o.path.to_owned())).collect()
}

fn status_text(s: u16) -> &'static str {
    match s {
        200 => "OK",
        201 => "Created",
        204 => "No content",
        400 => "Bad request (invalid_json, invalid_hash, hash_rejected, invalid_request, too_many_hashes, image_not_accepted, empty_image, invalid_multipart)",
        401 => "Missing or invalid credentials (missing_api_key, invalid_api_key, bad_credentials)",
        403 => "The API key lacks the scope (insufficient_scope)",
        404 => "Not found (not_found)",
        409 => "Conflict (conflict)",
        413 => "Body too large (payload_too_large)",
        415 => "Not a supported image format (unsupported_image_format)",
        422 => "Corrupt or oversized image (corrupt_image, image_too_large)",
        408 => "The client stalled while sending the body (request_timeout)",
        429 => "Too many requests (rate_limited, Retry-After) or case locked after too many wrong PINs (case_locked)",
        500 => "Internal error (internal)",
        503 => "Not ready, timed out, or the database unreachable (not_ready, timeout, store_unavailable; Retry-After)",
        _ => "",
    }
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// The multipart field an image upload is read from: HMA's `photo` on its routes, `file` on
/// consentry's own.
fn image_field(op: &Op) -> &'static str {
    if op.path.starts_with("/m/") || op.path.starts_with("/h/") {
        "photo"
    } else {
        "file"
    }
}

fn request_body(op: &Op) -> Option<Value> {
    match op.body {
        "" => None,
        IMAGE => {
            let field = image_field(op);
            Some(json!({
                "required": true,
                "content": {
                    "application/octet-stream": { "schema": { "type": "string", "format": "binary" } },
                    "image/*": { "schema": { "type": "string", "format": "binary" } },
                    "multipart/form-data": { "schema": { "type": "object", "required": [field], "properties": { field: { "type": "string", "format": "binary" } } } }
                }
            }))
        }
        // An import streams lines in any of its formats; an empty body is an empty import.
        "ImportBody" => {
            let text = schema_ref("ImportBody");
            Some(json!({
                "required": false,
                "content": {
                    "text/csv": { "schema": text },
                    "application/x-ndjson": { "schema": text },
                    "text/plain": { "schema": text },
                    "application/octet-stream": { "schema": text }
                }
            }))
        }
        name => Some(
            json!({ "required": true, "content": { "application/json": { "schema": schema_ref(name) } } }),
        ),
    }
}

/// A bank's name or description: no control characters (C0 but the line feed, DEL, C1).
const TEXT_PATTERN: &str = "^[^\\u0000-\\u0009\\u000b-\\u001f\\u007f-\\u009f]*$";

/// A PDQ hash in a query string: 64 hex digits.
const HASH_PATTERN: &str = "^[0-9a-fA-F]{64}$";

fn parameters(op: &Op) -> Vec<Value> {
    let mut ps = Vec::new();
    for seg in op.path.split('/') {
        if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let ty = if name == "id" {
                json!({"type": "integer", "format": "int64", "minimum": 1, "maximum": i64::MAX})
            } else {
                json!({"type": "string", "minLength": 1})
            };
            ps.push(json!({ "name": name, "in": "path", "required": true, "schema": ty }));
        }
    }
    let q = |name: &str, ty: Value, desc: &str| json!({ "name": name, "in": "query", "required": false, "schema": ty, "description": desc });
    let radius =
        || q("radius", json!({"type": "integer", "minimum": 0, "maximum": 64}), "match radius (default 31)");
    let hma_signal = || {
        [
            json!({ "name": "signal_type", "in": "query", "required": true, "schema": {"type": "string", "enum": ["pdq"]}, "description": "HMA's signal type: pdq" }),
            json!({ "name": "signal", "in": "query", "required": true, "schema": {"type": "string", "pattern": HASH_PATTERN}, "description": "the PDQ hash" }),
        ]
    };
    // `after` and `limit` of a paged list (see `page_limit` in api.rs)
    let page = |after: &str| {
        [
            q("after", json!({"type": "integer", "format": "int64"}), after),
            q("limit", json!({"type": "integer", "minimum": 1, "maximum": 1000}), "page size (default 100)"),
        ]
    };
    let banks =
        || q("banks", json!({"type": "string"}), "only matches in these banks (comma-separated names)");
    match (op.method, op.path) {
        ("GET", "/v1/lookup") => {
            ps.push(json!({ "name": "hash", "in": "query", "required": true, "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{64}(,[0-9a-fA-F]{64}){0,7}$"}, "description": "64 hex digits; with dihedral=true up to 8 comma-separated" }));
            ps.push(q(
                "dihedral",
                json!({"type": "boolean"}),
                "the hashes are the dihedral variants of one image",
            ));
            ps.push(radius());
        }
        ("POST", "/v1/hash") => {
            ps.push(q("dihedral", json!({"type": "boolean"}), "also return the 8 dihedral hashes"));
            ps.push(q(
                "signal",
                json!({"type": "string", "enum": ["pdq", "derive"]}),
                "derive: also return the derivative signature",
            ));
        }
        ("POST", "/v1/lookup/image") => {
            ps.push(q("dihedral", json!({"type": "boolean"}), "search with the 8 dihedral hashes"));
            ps.push(radius());
        }
        ("POST", "/v1/banks/{name}/import") => {
            ps.push(q(
                "format",
                json!({"type": "string", "enum": ["csv", "jsonl", "ndjson", "hma"]}),
                "input format (default csv)",
            ));
            ps.push(q(
                "keep_paths",
                json!({"type": "boolean"}),
                "store the path column as metadata.path (dropped by default)",
            ));
        }
        ("GET", "/v1/banks/{name}/export") => {
            ps.push(q(
                "format",
                json!({"type": "string", "enum": ["csv", "meta", "jsonl", "ndjson", "hma"]}),
                "output format (default csv)",
            ));
            ps.push(q("include_disabled", json!({"type": "boolean"}), "also export disabled entries"));
        }
        ("GET", "/v1/banks/{name}/entries") => ps.extend(page("entries with a larger id")),
        ("GET", "/v1/cases") => {
            ps.push(q(
                "status",
                json!({"type": "string", "enum": ["received", "active", "withdrawn"]}),
                "only cases with this status",
            ));
            ps.extend(page("cases with a larger id"));
        }
        ("GET", "/v1/stats/matches") => {
            let day = json!({"type": "string", "format": "date", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"});
            ps.push(q(
                "by",
                json!({"type": "string", "enum": ["bank", "entry", "source", "day", "signal"]}),
                "what the rows sum over (default bank)",
            ));
            ps.push(q("bank", json!({"type": "string"}), "only this bank's entries"));
            ps.push(q("entry", json!({"type": "integer", "format": "int64"}), "only this entry"));
            ps.push(q(
                "source",
                json!({"type": "string"}),
                "only this source (API key name or telegram:<chat id>)",
            ));
            ps.push(q(
                "case",
                json!({"type": "integer", "format": "int64"}),
                "only the entries of this case (its id)",
            ));
            ps.push(q("since", day.clone(), "first day, UTC (default: 30 days ago)"));
            ps.push(q("until", day, "last day, UTC (default: today)"));
            ps.push(q(
                "limit",
                json!({"type": "integer", "minimum": 1, "maximum": 10000}),
                "most rows (default 100)",
            ));
        }
        ("GET", "/m/raw_lookup") => {
            ps.extend(hma_signal());
            ps.push(q(
                "include_distance",
                json!({"type": "string"}),
                "true, t, 1, yes or y (HMA's str_to_bool): list {bank_content_id, distance}",
            ));
            ps.push(banks());
        }
        ("GET", "/m/lookup") => {
            ps.extend(hma_signal());
            ps.push(banks());
        }
        ("POST", "/m/lookup") => ps.push(banks()),
        ("GET", "/m/index/status") => ps.push(q(
            "signal_type",
            json!({"type": "string", "enum": ["pdq", "derive"]}),
            "only this signal type",
        )),
        _ => {}
    }
    ps
}

/// The schema of an operation's success reply (`None`: a JSON object described in the summary).
fn reply_schema(op: &Op) -> Option<&'static str> {
    Some(match (op.method, op.path) {
        ("GET", "/v1/lookup") | ("POST", "/v1/lookup/image") | ("POST", "/v1/lookup/features") => {
            "LookupReply"
        }
        ("POST", "/v1/lookup") => "BatchReply",
        ("POST", "/v1/hash") => "HashReply",
        ("POST", "/v1/compare") => "CompareReply",
        ("GET", "/v1/banks") => "BankList",
        ("POST", "/v1/banks") | ("GET", "/v1/banks/{name}") | ("PATCH", "/v1/banks/{name}") => "Bank",
        ("GET", "/v1/entries/{id}")
        | ("POST", "/v1/entries/{id}/disable")
        | ("POST", "/v1/entries/{id}/enable") => "EntryOut",
        ("POST", "/v1/cases") | ("POST", "/v1/cases/{number}/pin") => "CaseCreated",
        _ => return None,
    })
}

/// The reply's media types for `status`: the export's are its formats'.
fn reply_content(op: &Op, status: u16) -> Value {
    let object = || json!({ "type": "object" });
    match (op.method, op.path) {
        ("GET", "/metrics") => json!({ "text/plain": { "schema": { "type": "string" } } }),
        ("GET", "/v1/banks/{name}/export") => json!({
            "text/csv": { "schema": { "type": "string" } },
            "application/x-ndjson": { "schema": { "type": "string" } },
            "text/plain": { "schema": { "type": "string" } }
        }),
        // A list of entries answers 200 with what was added and rejected by index.
        ("POST", "/v1/banks/{name}/entries") if status == 200 => {
            json!({ "application/json": { "schema": schema_ref("EntriesAdded") } })
        }
        _ => {
            json!({ "application/json": { "schema": reply_schema(op).map(schema_ref).unwrap_or_else(object) } })
        }
    }
}

/// A second success status: a list of entries answers 200 where one entry answers 201.
fn extra_success(op: &Op) -> Option<u16> {
    (op.method == "POST" && op.path == "/v1/banks/{name}/entries").then_some(200)
}

/// The error statuses an operation can answer: its own, and those of the layers every request
/// goes through (credentials and the per-key rate limit, the body's size and pace, malformed query
/// strings and path parameters, the request timeout, internal errors).
fn error_statuses(op: &Op) -> Vec<u16> {
    let mut errs: Vec<u16> = op.errors.to_vec();
    if !op.scope.is_empty() {
        errs.extend([401, 403, 429]);
    }
    if !op.body.is_empty() {
        errs.extend([400, 408, 413]);
    }
    // The survivor's case endpoints are rate-limited per client.
    if op.path.starts_with("/v1/cases") {
        errs.push(429);
    }
    if op.path.contains('{') || !parameters(op).is_empty() {
        errs.push(400);
    }
    errs.extend([500, 503]);
    errs.sort_unstable();
    errs.dedup();
    errs
}

fn schemas() -> Value {
    let hash = json!({ "type": "string", "pattern": HASH_PATTERN, "description": "PDQ hash, 64 hex digits (where hashes are stored, a lopsided one, with fewer than 96 or more than 160 one bits by default, is refused: `hash_rejected`)" });
    let signature = json!({ "type": "string", "format": "byte", "minLength": 48, "maxLength": 2516, "description": "derivative signature (consentry-derive), base64 as `consentry derive` prints it" });
    let hex_entry = |extra: Value| {
        let mut props = json!({
            "hash": hash,
            "signal": { "type": "string", "enum": ["pdq", "", null], "nullable": true, "description": "pdq (the default; empty or null say the same)" },
            "quality": { "type": "integer", "minimum": 0, "maximum": 100, "nullable": true }
        });
        let derive = json!({
            "hash": signature,
            "signal": { "type": "string", "enum": ["derive"] },
            "quality": { "type": "integer", "minimum": 0, "maximum": 100, "nullable": true }
        });
        let mut derive = derive;
        for (k, v) in extra.as_object().into_iter().flatten() {
            props[k] = v.clone();
            derive[k] = v.clone();
        }
        json!({ "oneOf": [
            { "type": "object", "additionalProperties": false, "required": ["hash"], "properties": props, "description": "a PDQ hash" },
            { "type": "object", "additionalProperties": false, "required": ["hash", "signal"], "properties": derive, "description": "a derivative signature" }
        ] })
    };
    let millis = json!({ "type": "integer", "format": "int64", "description": "ms since the Unix epoch" });
    let int = json!({ "type": "integer" });
    let nullable_int = json!({ "type": "integer", "nullable": true });
    let purpose = json!({ "type": "string", "enum": ["survivor-protected", "known-abuse", "other"] });
    let dihedral = json!({ "type": "object", "additionalProperties": hash, "description": "the 8 dihedral hashes by name" });
    json!({
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": { "error": { "type": "object", "required": ["code", "message"], "properties": {
                "code": { "type": "string", "enum": codes::ALL },
                "message": { "type": "string" }
            } } }
        },
        "PatchCase": { "type": "object", "additionalProperties": false, "required": ["status"], "properties": { "status": { "type": "string", "enum": ["active", "withdrawn"] } } },
        "LookupBatch": { "type": "object", "additionalProperties": false, "required": ["hashes"], "properties": {
            "hashes": { "type": "array", "maxItems": 10000, "items": { "oneOf": [hash, { "type": "array", "minItems": 1, "maxItems": 8, "items": hash }] } },
            "radius": { "type": "integer", "minimum": 0, "maximum": 64, "nullable": true }
        } },
        "Compare": { "type": "object", "additionalProperties": false, "required": ["a", "b"], "properties": { "a": hash, "b": hash } },
        "HmaCompare": { "type": "object", "additionalProperties": false, "properties": {
            "pdq": { "type": "array", "minItems": 2, "maxItems": 2, "items": hash }
        } },
        "Features": { "type": "object", "additionalProperties": false, "required": ["features"], "properties": { "features": { "type": "string", "format": "byte", "description": "base64 of consentry_derive::QueryFeatures::to_bytes" } } },
        "CreateBank": { "type": "object", "additionalProperties": false, "required": ["name"], "properties": {
            "name": { "type": "string", "minLength": 1, "maxLength": 100, "pattern": TEXT_PATTERN },
            "description": { "type": "string", "maxLength": 2000, "pattern": TEXT_PATTERN },
            "enabled": { "type": "boolean", "nullable": true },
            "purpose": { "type": "string", "enum": ["survivor-protected", "known-abuse", "other", null], "nullable": true }
        } },
        "PatchBank": { "type": "object", "additionalProperties": false, "properties": {
            "name": { "type": "string", "minLength": 1, "maxLength": 100, "pattern": TEXT_PATTERN, "nullable": true },
            "description": { "type": "string", "maxLength": 2000, "pattern": TEXT_PATTERN, "nullable": true },
            "enabled": { "type": "boolean", "nullable": true },
            "purpose": { "type": "string", "enum": ["survivor-protected", "known-abuse", "other", null], "nullable": true }
        } },
        "Entry": hex_entry(json!({ "metadata": { "type": "object", "nullable": true } })),
        "Entries": { "oneOf": [ schema_ref("Entry"), { "type": "array", "maxItems": 10000, "items": schema_ref("Entry") } ] },
        "CreateCase": { "type": "object", "additionalProperties": false, "required": ["hashes"], "properties": {
            "hashes": { "type": "array", "minItems": 1, "maxItems": 1000, "items": { "oneOf": [ hash, hex_entry(json!({})) ] } }
        } },
        "Pin": { "type": "object", "additionalProperties": false, "required": ["pin"], "properties": { "pin": { "type": "string" } } },
        "ImportBody": { "type": "string", "description": "text/csv, application/x-ndjson or text/plain lines" },
        "Match": { "type": "object", "required": ["signal", "bank", "entry_id", "quality", "source", "metadata"], "properties": {
            "signal": { "type": "string", "enum": ["pdq", "derive"] },
            "bank": { "type": "string" },
            "entry_id": { "type": "integer", "format": "int64" },
            "distance": { "type": "integer", "nullable": true, "description": "Hamming distance of the PDQ hashes (derive: null when the global hash did not match)" },
            "hash": { "type": "string", "description": "pdq: the matched entry's hash" },
            "band_distance": { "type": "integer", "nullable": true },
            "inliers": int,
            "score": int,
            "mirrored": { "type": "boolean" },
            "quality": nullable_int,
            "source": { "type": "string", "enum": ["case", "moderator", "import"] },
            "metadata": {}
        } },
        "LookupReply": { "type": "object", "required": ["query", "matches", "truncated"], "properties": {
            "query": { "type": "object", "required": ["hash"], "properties": {
                "hash": hash,
                "hashes": { "type": "array", "items": hash },
                "radius": int,
                "dihedral": { "type": "boolean" },
                "quality": int,
                "width": int,
                "height": int,
                "format": { "type": "string" },
                "derive": { "type": "boolean" },
                "dihedral_hashes": dihedral,
                "keypoints": int
            } },
            "matches": { "type": "array", "items": schema_ref("Match") },
            "truncated": { "type": "boolean", "description": "more matches than the server returns per hash" },
            "derive_entries": int
        } },
        "BatchReply": { "type": "object", "required": ["radius", "results"], "properties": {
            "radius": int,
            "results": { "type": "array", "items": { "type": "object", "required": ["hash", "matches", "truncated"], "properties": {
                "hash": hash,
                "hashes": { "type": "array", "items": hash },
                "matches": { "type": "array", "items": schema_ref("Match") },
                "truncated": { "type": "boolean" }
            } } }
        } },
        "HashReply": { "type": "object", "required": ["pdq", "quality", "width", "height", "format"], "properties": {
            "pdq": hash,
            "quality": int,
            "width": int,
            "height": int,
            "format": { "type": "string" },
            "dihedral": dihedral,
            "derive": { "type": "object", "required": ["signature", "keypoints"], "properties": {
                "signature": signature, "keypoints": int, "band_quality": nullable_int
            } }
        } },
        "CompareReply": { "type": "object", "required": ["a", "b", "distance", "match", "threshold"], "properties": {
            "a": hash, "b": hash, "distance": int, "match": { "type": "boolean" }, "threshold": int
        } },
        "Bank": { "type": "object", "required": ["id", "name", "description", "enabled", "purpose", "created_at", "updated_at"], "properties": {
            "id": { "type": "integer", "format": "int64" },
            "name": { "type": "string" },
            "description": { "type": "string" },
            "enabled": { "type": "boolean" },
            "purpose": purpose,
            "created_at": millis,
            "updated_at": millis
        } },
        "BankList": { "type": "object", "required": ["banks"], "properties": { "banks": { "type": "array", "items": schema_ref("Bank") } } },
        "EntryOut": { "type": "object", "required": ["id", "bank", "signal", "hash", "source", "added_at", "active"], "properties": {
            "id": { "type": "integer", "format": "int64" },
            "bank": { "type": "string" },
            "signal": { "type": "string", "enum": ["pdq", "derive"] },
            "hash": { "type": "string" },
            "quality": nullable_int,
            "source": { "type": "string", "enum": ["case", "moderator", "import"] },
            "metadata": {},
            "added_at": millis,
            "disabled_at": { "type": "integer", "format": "int64", "nullable": true },
            "active": { "type": "boolean" }
        } },
        "EntriesAdded": { "type": "object", "required": ["bank", "added", "rejected"], "properties": {
            "bank": { "type": "string" },
            "added": { "type": "array", "items": { "type": "object", "required": ["index", "id"], "properties": { "index": int, "id": { "type": "integer", "format": "int64" } } } },
            "rejected": { "type": "array", "items": { "type": "object", "required": ["index", "reason"], "properties": { "index": int, "reason": { "type": "string" } } } }
        } },
        "CaseCreated": { "type": "object", "required": ["case_number", "pin"], "properties": {
            "case_number": { "type": "string" },
            "pin": { "type": "string", "description": "shown only in this reply; stored as an Argon2id hash" }
        } }
    })
}

/// The OpenAPI 3.0 document served at `/openapi.json`.
pub fn openapi_document() -> Value {
    let mut paths = Map::new();
    for op in OPS {
        let mut o = Map::new();
        o.insert("summary".into(), json!(op.summary));
        o.insert("operationId".into(), json!(format!("{} {}", op.method.to_lowercase(), op.path)));
        let params = parameters(op);
        if !params.is_empty() {
            o.insert("parameters".into(), Value::Array(params));
        }
        if let Some(b) = request_body(op) {
            o.insert("requestBody".into(), b);
        }
        let mut responses = Map::new();
        let mut ok = json!({ "description": status_text(op.ok) });
        if op.ok != 204 {
            ok["content"] = reply_content(op, op.ok);
        }
        responses.insert(op.ok.to_string(), ok);
        if let Some(extra) = extra_success(op) {
            responses.insert(
                extra.to_string(),
                json!({ "description": status_text(extra), "content": reply_content(op, extra) }),
            );
        }
        for e in error_statuses(op) {
            responses.insert(
                e.to_string(),
                json!({ "description": status_text(e), "content": { "application/json": { "schema": schema_ref("Error") } } }),
            );
        }
        o.insert("responses".into(), Value::Object(responses));
        if op.scope.is_empty() {
            o.insert("security".into(), json!([]));
        } else {
            o.insert("x-required-scope".into(), json!(op.scope));
        }
        let entry = paths.entry(op.path.to_owned()).or_insert_with(|| Value::Object(Map::new()));
        entry[op.method.to_lowercase()] = Value::Object(o);
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "consentry",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Hasher-matcher-actioner against the non-consensual spread of intimate images. Only PDQ hashes and derivative signatures are kept; uploaded images are hashed in memory and dropped. Errors are {\"error\": {\"code\", \"message\"}} with stable codes. API keys (Authorization: Bearer) carry scopes: lookup, curate, admin (admin implies all). Times are milliseconds since the Unix epoch."
        },
        "servers": [ { "url": "/" } ],
        "security": [ { "bearer": [] } ],
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "description": "API key `csk_...`" } },
            "schemas": schemas()
        },
        "paths": Value::Object(paths)
    })
}
