//! Streaming bulk import and export of a bank's entries.
//!
//! `POST /v1/banks/{name}/import?format=csv|jsonl|hma[&keep_paths=true]` reads the body as a
//! stream of lines (never all of it in memory), parses each line, and commits the good lines in
//! chunks of [`CHUNK`] (one transaction each). Bad lines — unparsable, or degenerate hashes (all
//! zeros, lopsided, quality below the minimum) — are reported with their 1-based line numbers and
//! the reason; they never stop the import. The reply says how many lines were committed. If the
//! client stalls longer than `body_idle_timeout` between two pieces of the body, the import
//! stops with 408 `request_timeout`; the chunks committed before stay committed and the message
//! says through which line.
//!
//! Formats:
//! - `csv` (default): Meta's `pdq-photo-hasher` layout `hash,quality,path` without a header
//!   (quality and path optional, so a plain list of hex hashes works too; TAB-separated lines
//!   such as `consentry hash` output are accepted), or any CSV with a header naming its columns:
//!   `hash` (or `pdq`, `signal`, `signal_value`), `quality`, `path` (or `filename`),
//!   `signal_type` (`pdq`, or `derive` with the base64 signature in the hash column),
//!   `metadata` (a JSON object); other columns (`id`,
//!   `added_at`, ... as written by the export) are ignored.
//! - `jsonl`: one JSON object per line: `{"hash", "quality"?, "metadata"?, "signal_type"?}`;
//!   `signal_type` (or `signal`) `derive` takes a base64 derivative signature in `hash` (or
//!   `value`), as `consentry derive --jsonl` prints it.
//! - `hma`: the hash-list file of Meta's HMA / python-threatexchange
//!   (`LocalFileSignalExchangeAPI`): `<signal_type> <signal>` per line, e.g. `pdq 3ad1…`
//!   (`derive <base64>` for derivative signatures).
//!
//! Paths name the survivor's or moderator's files; they are dropped unless `keep_paths=true`,
//! which stores them as `metadata.path`.
//!
//! `GET /v1/banks/{name}/export?format=csv|meta|jsonl|hma[&include_disabled=true]` streams the
//! bank page by page: `csv` has a header
//! (`hash,quality,id,source,added_at,disabled_at,metadata,signal_type`),
//! `meta` is `hash,quality,path` (path from `metadata.path`, else `entry-<id>`), `jsonl` one
//! object per entry, `hma` `<signal_type> <value>` lines. Every export re-imports with the same format.

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use consentry_pdq::Hash256;
use consentry_store::{Bank, BulkLine, Entry, EntrySourceKind, LineError, SignalType, SignalValue};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::{bank_by_name, path, query};
use crate::auth::Auth;
use crate::error::{codes, ApiError, ApiResult};
use crate::AppState;

/// Lines committed per transaction.
pub(crate) const CHUNK: usize = 5_000;
/// Rejected lines listed in the reply (all are counted).
const MAX_LISTED_REJECTIONS: usize = 10_000;
/// Longest line accepted.
const MAX_LINE: usize = 64 * 1024;
/// Entries read per page during an export.
const EXPORT_PAGE: u32 = 2_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Csv,
    Jsonl,
    Hma,
    Meta,
}

fn parse_format(s: Option<&str>, export: bool) -> ApiResult<Format> {
    match s.unwrap_or("csv") {
        "csv" => Ok(Format::Csv),
        "jsonl" | "ndjson" => Ok(Format::Jsonl),
        "hma" => Ok(Format::Hma),
        "meta" if export => Ok(Format::Meta),
        "meta" => Ok(Format::Csv),
        other => Err(ApiError::bad_request(format!(
            "unknown format `{other}`: expected csv, jsonl or hma{}",
            if export { " (or meta)" } else { "" }
        ))),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ImportParams {
    format: Option<String>,
    #[serde(default)]
    keep_paths: bool,
}

/// Column roles of a CSV with a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Col {
    Hash,
    Quality,
    Path,
    SignalType,
    Metadata,
    Ignored,
}

/// Parser state across lines.
struct LineParser {
    format: Format,
    keep_paths: bool,
    /// Header columns, once a header was seen.
    header: Option<Vec<Col>>,
    /// The first meaningful line was seen.
    started: bool,
}

fn is_hex_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Splits one CSV line (RFC 4180 quoting within the line).
fn split_csv(line: &str, sep: char) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut in_quotes = false;
    let mut quoted_field = false;
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    cur.push('"');
                    chars.next();
                } else {
                    in_quotes = false;
                }
            } else {
                cur.push(c);
            }
        } else if c == '"' && cur.trim().is_empty() && !quoted_field {
            cur.clear();
            in_quotes = true;
            quoted_field = true;
        } else if c == sep {
            fields.push(std::mem::take(&mut cur));
            quoted_field = false;
        } else {
            cur.push(c);
        }
    }
    if in_quotes {
        return Err("unterminated quoted field (fields cannot span lines)".to_owned());
    }
    fields.push(cur);
    Ok(fields)
}

fn parse_quality(s: &str) -> Result<Option<i32>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    s.parse::<i32>().map(Some).map_err(|_| format!("quality `{}` is not an integer", short(s)))
}

fn parse_hex(s: &str) -> Result<Hash256, String> {
    let s = s.trim();
    Hash256::from_hex(s).map_err(|e| format!("`{}` is not a PDQ hash (64 hexadecimal digits): {e}", short(s)))
}

/// At most 80 characters of user input in a message.
fn short(s: &str) -> String {
    let mut t: String = s.chars().take(80).collect();
    if t.len() < s.len() {
        t.push('…');
    }
    t
}

fn check_signal_type(s: &str) -> Result<SignalType, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("pdq") {
        Ok(SignalType::Pdq)
    } else if s.eq_ignore_ascii_case("derive") {
        Ok(SignalType::Derive)
    } else {
        Err(format!("signal type `{}` is not supported (pdq or derive)", short(s)))
    }
}

/// A value of `signal`: hex PDQ hash, or base64 derivative signature.
fn parse_signal_value(signal: SignalType, s: &str) -> Result<SignalValue, String> {
    match signal {
        SignalType::Pdq => parse_hex(s).map(SignalValue::Pdq),
        SignalType::Derive => SignalValue::derive_from_base64(s)
            .map_err(|e| format!("`{}` is not a derivative signature: {e}", short(s.trim()))),
    }
}

impl LineParser {
    fn new(format: Format, keep_paths: bool) -> LineParser {
        LineParser { format, keep_paths, header: None, started: false }
    }

    /// Parses one line: `Ok(None)` for blank lines, comments and a header.
    fn parse(&mut self, line_no: u64, raw: &str) -> Result<Option<BulkLine>, String> {
        let mut t = raw.trim_end_matches(['\r', '\n']);
        if !self.started {
            t = t.trim_start_matches('\u{feff}');
        }
        if t.trim().is_empty() || t.trim_start().starts_with('#') {
            return Ok(None);
        }
        let first = !self.started;
        self.started = true;
        match self.format {
            Format::Csv | Format::Meta => self.parse_csv(line_no, t, first),
            Format::Jsonl => self.parse_jsonl(line_no, t),
            Format::Hma => {
                let mut parts = t.split([' ', '\t', ',']).filter(|p| !p.is_empty());
                let st = parts.next().unwrap_or_default();
                let sig = parts.next().ok_or_else(|| "expected `<signal_type> <signal>`".to_owned())?;
                if let Some(extra) = parts.next() {
                    return Err(format!("unexpected field `{}`", short(extra)));
                }
                let value = parse_signal_value(check_signal_type(st)?, sig)?;
                Ok(Some(BulkLine { line: line_no, value, quality: None, metadata: Value::Null }))
            }
        }
    }

    fn parse_csv(&mut self, line_no: u64, t: &str, first: bool) -> Result<Option<BulkLine>, String> {
        let sep = if !t.contains(',') && t.contains('\t') { '\t' } else { ',' };
        let fields = split_csv(t, sep)?;
        if first && !is_hex_hash(fields[0].trim()) {
            let cols: Vec<Col> = fields
                .iter()
                .map(|f| match f.trim().to_ascii_lowercase().as_str() {
                    "hash" | "pdq" | "signal" | "signal_value" | "pdq_hash" => Col::Hash,
                    "quality" => Col::Quality,
                    "path" | "filename" | "file" => Col::Path,
                    "signal_type" => Col::SignalType,
                    "metadata" => Col::Metadata,
                    _ => Col::Ignored,
                })
                .collect();
            if cols.iter().filter(|c| **c == Col::Hash).count() == 1 {
                self.header = Some(cols);
                return Ok(None);
            }
            // Not a header: fall through and report the bad hash.
        }
        let mut hash: Option<String> = None;
        let mut signal = SignalType::Pdq;
        let mut quality = None;
        let mut path = None;
        let mut metadata = Value::Null;
        match &self.header {
            Some(cols) => {
                if fields.len() > cols.len() {
                    return Err(format!("{} fields, the header has {}", fields.len(), cols.len()));
                }
                for (f, c) in fields.iter().zip(cols) {
                    match c {
                        Col::Hash => hash = Some(f.clone()),
                        Col::Quality => quality = parse_quality(f)?,
                        Col::Path => path = Some(f.clone()).filter(|p| !p.is_empty()),
                        Col::SignalType => signal = check_signal_type(f)?,
                        Col::Metadata => {
                            if !f.trim().is_empty() {
                                metadata = serde_json::from_str(f)
                                    .map_err(|e| format!("metadata is not JSON: {e}"))?;
                                if !metadata.is_object() && !metadata.is_null() {
                                    return Err("metadata must be a JSON object".to_owned());
                                }
                            }
                        }
                        Col::Ignored => {}
                    }
                }
            }
            None => {
                if fields.len() > 3 {
                    return Err(format!(
                        "{} fields: expected hash,quality,path (Meta's pdq-photo-hasher layout)",
                        fields.len()
                    ));
                }
                hash = Some(fields[0].clone());
                if let Some(q) = fields.get(1) {
                    quality = parse_quality(q)?;
                }
                path = fields.get(2).cloned().filter(|p| !p.is_empty());
            }
        }
        let value = parse_signal_value(signal, &hash.ok_or_else(|| "no hash in this line".to_owned())?)?;
        if self.keep_paths {
            if let Some(p) = path {
                let mut m = match metadata {
                    Value::Object(m) => m,
                    _ => serde_json::Map::new(),
                };
                m.insert("path".to_owned(), Value::String(p));
                metadata = Value::Object(m);
            }
        }
        Ok(Some(BulkLine { line: line_no, value, quality, metadata }))
    }

    fn parse_jsonl(&mut self, line_no: u64, t: &str) -> Result<Option<BulkLine>, String> {
        let v: Value = serde_json::from_str(t).map_err(|e| format!("not JSON: {e}"))?;
        let Value::Object(o) = v else { return Err("expected a JSON object".to_owned()) };
        // The signal type is `signal_type`, or `signal` when it names a type (`pdq`, `derive`);
        // otherwise `signal` may hold the value, as HMA's exports have it.
        let type_name = |v: &Value| v.as_str().filter(|t| check_signal_type(t).is_ok()).map(str::to_owned);
        let signal = match (o.get("signal_type"), o.get("signal").and_then(type_name)) {
            (Some(st), _) => check_signal_type(st.as_str().ok_or("signal_type must be a string")?)?,
            (None, Some(t)) => check_signal_type(&t)?,
            (None, None) => SignalType::Pdq,
        };
        let signal_is_type = o.get("signal").and_then(type_name).is_some();
        let hash_v = ["hash", "value", "pdq", "signature", "signal", "signal_value"]
            .iter()
            .filter(|k| !(signal_is_type && **k == "signal"))
            .find_map(|k| o.get(*k))
            .ok_or_else(|| "no `hash` field".to_owned())?;
        let value = parse_signal_value(signal, hash_v.as_str().ok_or("`hash` must be a string")?)?;
        let quality = match o.get("quality") {
            None | Some(Value::Null) => None,
            Some(q) => Some(
                q.as_i64()
                    .and_then(|q| i32::try_from(q).ok())
                    .ok_or_else(|| format!("quality `{}` is not an integer", short(&q.to_string())))?,
            ),
        };
        let mut metadata = match o.get("metadata") {
            None | Some(Value::Null) => Value::Null,
            Some(m @ Value::Object(_)) => m.clone(),
            Some(_) => return Err("metadata must be a JSON object".to_owned()),
        };
        if self.keep_paths {
            if let Some(Value::String(p)) = o.get("path") {
                let mut m = match metadata {
                    Value::Object(m) => m,
                    _ => serde_json::Map::new(),
                };
                m.insert("path".to_owned(), Value::String(p.clone()));
                metadata = Value::Object(m);
            }
        }
        Ok(Some(BulkLine { line: line_no, value, quality, metadata }))
    }
}

/// What an import did so far.
#[derive(Default)]
struct Progress {
    lines: u64,
    added: u64,
    rejected_total: u64,
    rejected: Vec<LineError>,
    committed_through: u64,
    first_id: Option<i64>,
    last_id: Option<i64>,
}

impl Progress {
    fn reject(&mut self, e: LineError) {
        self.rejected_total += 1;
        if self.rejected.len() < MAX_LISTED_REJECTIONS {
            self.rejected.push(e);
        }
    }
}

async fn commit(
    state: &AppState,
    auth: &Auth,
    bank: &Bank,
    batch: &mut Vec<BulkLine>,
    p: &mut Progress,
) -> ApiResult<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let lines = std::mem::take(batch);
    let last_line = lines.last().map(|l| l.line).unwrap_or(0);
    let actor = auth.require(consentry_store::Scope::Curate)?;
    let report = state.inner.store.add_entries_bulk(&actor, bank.id, EntrySourceKind::Import, lines).await?;
    p.added += report.added.len() as u64;
    if let Some((_, id)) = report.added.first() {
        p.first_id.get_or_insert(*id);
    }
    if let Some((_, id)) = report.added.last() {
        p.last_id = Some(*id);
    }
    for e in report.rejected {
        p.reject(e);
    }
    p.committed_through = last_line;
    Ok(())
}

fn stopped(p: &Progress, status: StatusCode, code: &'static str, why: &str) -> ApiError {
    ApiError::new(
        status,
        code,
        format!(
            "{why}; the import stopped: {} entries through line {} are committed (re-send the lines after it)",
            p.added, p.committed_through
        ),
    )
}

/// `POST /v1/banks/{name}/import`.
pub(crate) async fn import(
    State(state): State<AppState>,
    auth: Auth,
    name: Result<Path<String>, PathRejection>,
    params: Result<Query<ImportParams>, QueryRejection>,
    req: Request,
) -> ApiResult<Json<Value>> {
    auth.require(consentry_store::Scope::Curate)?;
    let name = path(name)?;
    let params = query(params)?;
    let format = parse_format(params.format.as_deref(), false)?;
    let bank = bank_by_name(&state, &name).await?;
    let max_bytes = state.inner.config.max_import_bytes;
    let idle = state.inner.config.body_idle_timeout;
    let mut stream = req.into_body().into_data_stream();
    let mut parser = LineParser::new(format, params.keep_paths);
    let mut p = Progress::default();
    let mut pending: Vec<u8> = Vec::new();
    let mut batch: Vec<BulkLine> = Vec::with_capacity(CHUNK);
    let mut total_bytes: u64 = 0;
    let mut line_no: u64 = 0;
    loop {
        let next = match tokio::time::timeout(idle, stream.next()).await {
            Ok(n) => n,
            Err(_) => {
                commit(&state, &auth, &bank, &mut batch, &mut p).await?;
                return Err(stopped(
                    &p,
                    StatusCode::REQUEST_TIMEOUT,
                    codes::REQUEST_TIMEOUT,
                    &format!("no data from the client for {} s", idle.as_secs_f32()),
                ));
            }
        };
        let chunk: Option<Bytes> = match next {
            Some(Ok(b)) => Some(b),
            Some(Err(e)) => {
                commit(&state, &auth, &bank, &mut batch, &mut p).await?;
                return Err(stopped(
                    &p,
                    StatusCode::BAD_REQUEST,
                    codes::INVALID_REQUEST,
                    &format!("cannot read the body: {e}"),
                ));
            }
            None => None,
        };
        let done = chunk.is_none();
        if let Some(c) = chunk {
            total_bytes += c.len() as u64;
            if total_bytes > max_bytes {
                commit(&state, &auth, &bank, &mut batch, &mut p).await?;
                return Err(stopped(
                    &p,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    codes::PAYLOAD_TOO_LARGE,
                    &format!("the body is larger than the import limit of {max_bytes} bytes"),
                ));
            }
            pending.extend_from_slice(&c);
        } else if !pending.is_empty() && pending.last() != Some(&b'\n') {
            pending.push(b'\n');
        }
        // Every complete line in `pending`.
        let mut start = 0;
        while let Some(nl) = pending[start..].iter().position(|b| *b == b'\n') {
            let end = start + nl;
            line_no += 1;
            let bytes = &pending[start..end];
            start = end + 1;
            let res = match std::str::from_utf8(bytes) {
                Ok(text) => parser.parse(line_no, text),
                Err(_) => Err("not UTF-8 text".to_owned()),
            };
            match res {
                Ok(Some(l)) => {
                    p.lines += 1;
                    batch.push(l);
                }
                Ok(None) => {}
                Err(reason) => {
                    p.lines += 1;
                    p.reject(LineError { line: line_no, reason });
                }
            }
            if batch.len() >= CHUNK {
                commit(&state, &auth, &bank, &mut batch, &mut p).await?;
            }
        }
        pending.drain(..start);
        if pending.len() > MAX_LINE {
            commit(&state, &auth, &bank, &mut batch, &mut p).await?;
            return Err(stopped(
                &p,
                StatusCode::BAD_REQUEST,
                codes::INVALID_REQUEST,
                &format!("line {} is longer than {MAX_LINE} bytes", line_no + 1),
            ));
        }
        if done {
            break;
        }
    }
    commit(&state, &auth, &bank, &mut batch, &mut p).await?;
    p.rejected.sort_by_key(|e| e.line);
    tracing::info!(
        bank = bank.id,
        lines = p.lines,
        added = p.added,
        rejected = p.rejected_total,
        "bulk import"
    );
    Ok(Json(json!({
        "bank": bank.name,
        "lines": p.lines,
        "added": p.added,
        "first_id": p.first_id,
        "last_id": p.last_id,
        "rejected_total": p.rejected_total,
        "rejected": p.rejected.iter().map(|e| json!({"line": e.line, "reason": e.reason})).collect::<Vec<_>>(),
        "rejected_truncated": p.rejected_total as usize > p.rejected.len(),
    })))
}

#[derive(Debug, Deserialize)]
pub(crate) struct ExportParams {
    format: Option<String>,
    #[serde(default)]
    include_disabled: bool,
}

fn csv_quote(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// The value's text: hex for PDQ, base64 for derive.
fn hex(e: &Entry) -> String {
    e.value.to_text()
}

fn render(format: Format, bank: &Bank, e: &Entry, out: &mut String) {
    use std::fmt::Write as _;
    let q = e.quality.map(|q| q.to_string()).unwrap_or_default();
    match format {
        Format::Csv => {
            let meta = if e.metadata.is_null() { String::new() } else { e.metadata.to_string() };
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{}",
                hex(e),
                q,
                e.id,
                e.source.kind().as_str(),
                e.added_at.as_millis(),
                e.disabled_at.map(|t| t.as_millis().to_string()).unwrap_or_default(),
                csv_quote(&meta),
                e.value.signal_type().as_str()
            );
        }
        Format::Meta => {
            let path = e
                .metadata
                .get("path")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("entry-{}", e.id));
            let _ = writeln!(out, "{},{},{}", hex(e), q, csv_quote(&path));
        }
        Format::Hma => {
            let _ = writeln!(out, "{} {}", e.value.signal_type().as_str(), hex(e));
        }
        Format::Jsonl => {
            let v = json!({
                "id": e.id,
                "bank": bank.name,
                "signal_type": e.value.signal_type().as_str(),
                "hash": hex(e),
                "quality": e.quality,
                "source": e.source.kind().as_str(),
                "metadata": e.metadata,
                "added_at": e.added_at.as_millis(),
                "disabled_at": e.disabled_at.map(|t| t.as_millis()),
            });
            let _ = writeln!(out, "{v}");
        }
    }
}

/// `GET /v1/banks/{name}/export`: streams the entries page by page.
pub(crate) async fn export(
    State(state): State<AppState>,
    auth: Auth,
    name: Result<Path<String>, PathRejection>,
    params: Result<Query<ExportParams>, QueryRejection>,
) -> ApiResult<Response> {
    auth.require_any(&[consentry_store::Scope::Curate])?;
    let name = path(name)?;
    let params = query(params)?;
    let format = parse_format(params.format.as_deref(), true)?;
    let bank = bank_by_name(&state, &name).await?;
    let include_disabled = params.include_disabled;
    let content_type = match format {
        Format::Csv | Format::Meta => "text/csv; charset=utf-8",
        Format::Jsonl => "application/x-ndjson",
        Format::Hma => "text/plain; charset=utf-8",
    };
    tracing::info!(bank = bank.id, format = ?format, "bulk export");
    let header_line = (format == Format::Csv)
        .then(|| "hash,quality,id,source,added_at,disabled_at,metadata,signal_type\n".to_owned());
    // State: (after id, finished, header pending).
    let stream =
        futures_util::stream::unfold((0i64, false, header_line), move |(after, finished, header)| {
            let state = state.clone();
            let bank = bank.clone();
            async move {
                if finished {
                    return None;
                }
                let mut out = header.unwrap_or_default();
                let page = match state.inner.store.list_entries(bank.id, after, EXPORT_PAGE).await {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::error!(error = %e, bank = bank.id, "export failed; aborting the stream");
                        return Some((Err(std::io::Error::other("export failed")), (after, true, None)));
                    }
                };
                let done = page.len() < EXPORT_PAGE as usize;
                let next_after = page.last().map(|e| e.id).unwrap_or(after);
                for e in &page {
                    if include_disabled || e.disabled_at.is_none() {
                        render(format, &bank, e, &mut out);
                    }
                }
                Some((Ok::<_, std::io::Error>(Bytes::from(out)), (next_after, done, None)))
            }
        });
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-store")],
        Body::from_stream(stream),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_splitting_and_header_detection() {
        assert_eq!(
            split_csv(r#"a,"b,c"#, ',').unwrap_err(),
            "unterminated quoted field (fields cannot span lines)"
        );
        assert_eq!(split_csv(r#"a,"b,c","x""y""#, ',').unwrap(), vec!["a", "b,c", "x\"y"]);
        let h = "f".repeat(32) + &"0".repeat(32);
        let mut p = LineParser::new(Format::Csv, true);
        assert!(p.parse(1, "quality,path,pdq").unwrap().is_none());
        let l = p.parse(2, &format!("90,\"a,b.jpg\",{h}")).unwrap().unwrap();
        assert_eq!(l.quality, Some(90));
        assert_eq!(l.metadata["path"], "a,b.jpg");
        let mut p = LineParser::new(Format::Csv, false);
        let l = p.parse(1, &format!("{h},77,photo.jpg")).unwrap().unwrap();
        assert_eq!((l.quality, l.metadata.clone()), (Some(77), Value::Null), "paths are dropped by default");
        assert!(p.parse(2, "nothex,1").unwrap_err().contains("not a PDQ hash"));
        let mut p = LineParser::new(Format::Hma, false);
        assert!(p.parse(1, &format!("pdq {h}")).unwrap().is_some());
        assert!(p.parse(2, &format!("video_md5 {h}")).unwrap_err().contains("not supported"));
    }
}
