//! The one error type of the API: every failure becomes `{"error": {"code", "message"}}` with a
//! stable `code` (see [`codes`]) and an HTTP status. User errors carry a message that helps the
//! client; internal errors are logged here with their details and shown as a generic message.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use consentry_media::MediaError;
use consentry_store::StoreError;
use serde_json::json;

/// The stable error codes of the API (`error.code` in every error body).
///
/// | code | status | when |
/// |---|---|---|
/// | `invalid_json` | 400 | the body is not the JSON the endpoint expects |
/// | `invalid_hash` | 400 | a hash is not 64 hexadecimal digits |
/// | `hash_rejected` | 400 | a hash is degenerate (all-zero, lopsided) or its quality too low |
/// | `invalid_request` | 400 | a field or parameter is out of range or malformed |
/// | `too_many_hashes` | 400 | a batch is larger than the endpoint allows |
/// | `image_not_accepted` | 400 | image data sent where only hashes are accepted (cases) |
/// | `empty_image` | 400 | no image bytes were sent |
/// | `invalid_multipart` | 400 | a multipart body is malformed or has no `file` field |
/// | `missing_api_key` | 401 | no `Authorization: Bearer <key>` header |
/// | `invalid_api_key` | 401 | the key is unknown, malformed or revoked |
/// | `bad_credentials` | 401 | the case number or the PIN is wrong (never says which) |
/// | `insufficient_scope` | 403 | the key lacks the scope the endpoint needs |
/// | `not_found` | 404 | no such route, bank, entry or case |
/// | `method_not_allowed` | 405 | the route exists, not with this method |
/// | `conflict` | 409 | duplicate name, withdrawn case, bank with cases, ... |
/// | `payload_too_large` | 413 | the body is larger than the configured limit |
/// | `unsupported_image_format` | 415 | not a JPEG, PNG, GIF, WebP, BMP or TIFF image, or an unsupported variant |
/// | `corrupt_image` | 422 | the image is damaged or truncated |
/// | `image_too_large` | 422 | the image has more pixels (or frames) than the decoder allows |
/// | `request_timeout` | 408 | the client stalled while sending a streamed body |
/// | `case_locked` | 429 | too many wrong PINs: the case is locked for a while (`Retry-After`) |
/// | `rate_limited` | 429 | too many requests for this API key, or from this address to the case endpoints (`Retry-After`) |
/// | `internal` | 500 | our fault; details are in the server log only |
/// | `not_ready` | 503 | the store is unreachable or the index not loaded yet |
/// | `timeout` | 503 | the request took longer than the configured request timeout |
/// | `store_unavailable` | 503 | the database could not be reached or dropped the connection; retry (`Retry-After`) |
pub mod codes {
    #![allow(missing_docs)]
    pub const INVALID_JSON: &str = "invalid_json";
    pub const INVALID_HASH: &str = "invalid_hash";
    pub const HASH_REJECTED: &str = "hash_rejected";
    pub const INVALID_REQUEST: &str = "invalid_request";
    pub const TOO_MANY_HASHES: &str = "too_many_hashes";
    pub const IMAGE_NOT_ACCEPTED: &str = "image_not_accepted";
    pub const EMPTY_IMAGE: &str = "empty_image";
    pub const INVALID_MULTIPART: &str = "invalid_multipart";
    pub const MISSING_API_KEY: &str = "missing_api_key";
    pub const INVALID_API_KEY: &str = "invalid_api_key";
    pub const BAD_CREDENTIALS: &str = "bad_credentials";
    pub const INSUFFICIENT_SCOPE: &str = "insufficient_scope";
    pub const NOT_FOUND: &str = "not_found";
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    pub const CONFLICT: &str = "conflict";
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    pub const UNSUPPORTED_IMAGE_FORMAT: &str = "unsupported_image_format";
    pub const CORRUPT_IMAGE: &str = "corrupt_image";
    pub const IMAGE_TOO_LARGE: &str = "image_too_large";
    pub const CASE_LOCKED: &str = "case_locked";
    pub const REQUEST_TIMEOUT: &str = "request_timeout";
    pub const RATE_LIMITED: &str = "rate_limited";
    pub const INTERNAL: &str = "internal";
    pub const NOT_READY: &str = "not_ready";
    pub const TIMEOUT: &str = "timeout";
    pub const STORE_UNAVAILABLE: &str = "store_unavailable";

    /// Every code, for documentation and tests.
    pub const ALL: &[&str] = &[
        INVALID_JSON,
        INVALID_HASH,
        HASH_REJECTED,
        INVALID_REQUEST,
        TOO_MANY_HASHES,
        IMAGE_NOT_ACCEPTED,
        EMPTY_IMAGE,
        INVALID_MULTIPART,
        MISSING_API_KEY,
        INVALID_API_KEY,
        BAD_CREDENTIALS,
        INSUFFICIENT_SCOPE,
        NOT_FOUND,
        METHOD_NOT_ALLOWED,
        CONFLICT,
        PAYLOAD_TOO_LARGE,
        UNSUPPORTED_IMAGE_FORMAT,
        CORRUPT_IMAGE,
        IMAGE_TOO_LARGE,
        CASE_LOCKED,
        REQUEST_TIMEOUT,
        RATE_LIMITED,
        INTERNAL,
        NOT_READY,
        TIMEOUT,
        STORE_UNAVAILABLE,
    ];
}

/// An API error: status, stable code, message for the client, and (for `Locked`) when to retry.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code (one of [`codes`]).
    pub code: &'static str,
    /// Human-readable message for the client. Never secrets, never internals.
    pub message: String,
    retry_after_secs: Option<u64>,
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), retry_after_secs: None }
    }
    /// 400 `invalid_request`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, codes::INVALID_REQUEST, message)
    }
    /// 400 `invalid_hash`.
    pub fn invalid_hash(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, codes::INVALID_HASH, message)
    }
    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, message)
    }
    /// 413 `payload_too_large`.
    pub fn too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            codes::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }
    /// 429 `rate_limited` with `Retry-After` (whole seconds, at least 1).
    pub fn rate_limited(wait: std::time::Duration, message: impl Into<String>) -> ApiError {
        let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, codes::RATE_LIMITED, message);
        e.retry_after_secs = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
        e
    }
    /// 500 `internal`; `detail` goes to the log only.
    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %detail, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            codes::INTERNAL,
            "internal error; it has been logged",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        if e.is_unavailable() {
            // Not our fault and not the client's: the database is down or unreachable (a restart,
            // a failover, the network). Lookups that need no database keep answering meanwhile.
            tracing::warn!(error = %e, "store unreachable");
            let mut err = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                codes::STORE_UNAVAILABLE,
                "the database is unreachable; retry shortly",
            );
            err.retry_after_secs = Some(1);
            return err;
        }
        if !e.is_user_error() {
            return ApiError::internal(e);
        }
        match e {
            StoreError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            StoreError::Conflict(why) => {
                ApiError::new(StatusCode::CONFLICT, codes::CONFLICT, conflict_message(&why))
            }
            StoreError::InvalidInput(why) => ApiError::bad_request(why),
            StoreError::InvalidHash { index, reason } => ApiError::new(
                StatusCode::BAD_REQUEST,
                codes::HASH_REJECTED,
                format!("hash #{index} rejected: {reason}"),
            ),
            StoreError::BadCredentials => ApiError::new(
                StatusCode::UNAUTHORIZED,
                codes::BAD_CREDENTIALS,
                "the case number or the PIN is wrong",
            ),
            StoreError::Locked { until } => {
                let now = consentry_store::Timestamp::now().as_millis();
                let secs = (until.as_millis().saturating_sub(now).max(0) as u64).div_ceil(1000).max(1);
                let mut err = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    codes::CASE_LOCKED,
                    format!("too many wrong PINs: try again in {secs} seconds"),
                );
                err.retry_after_secs = Some(secs);
                err
            }
            StoreError::Unauthorized => ApiError::new(
                StatusCode::UNAUTHORIZED,
                codes::INVALID_API_KEY,
                "the API key is invalid or revoked",
            ),
            other => ApiError::internal(other),
        }
    }
}

/// The store's unique-violation message quotes the database; keep the client's message clean.
fn conflict_message(why: &str) -> String {
    if why.starts_with("already exists") {
        "already exists".to_owned()
    } else {
        why.to_owned()
    }
}

impl From<MediaError> for ApiError {
    fn from(e: MediaError) -> ApiError {
        let (status, code) = match &e {
            MediaError::Empty => (StatusCode::BAD_REQUEST, codes::EMPTY_IMAGE),
            MediaError::UnknownFormat | MediaError::Unsupported(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, codes::UNSUPPORTED_IMAGE_FORMAT)
            }
            MediaError::TooLarge { .. } | MediaError::TooManyFrames { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, codes::IMAGE_TOO_LARGE)
            }
            MediaError::Corrupt(_) => (StatusCode::UNPROCESSABLE_ENTITY, codes::CORRUPT_IMAGE),
        };
        // MediaError messages are one line and never contain image content.
        ApiError::new(status, code, e.to_string())
    }
}
