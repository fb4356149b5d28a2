//! Body extractors with the API's JSON errors: a JSON body parsed by serde, and an image sent as
//! the raw body or as the `file` field of a multipart form. Image bytes stay in memory.

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::{codes, ApiError};
use crate::AppState;

fn body_error(status: StatusCode, text: String, limit: usize) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(limit)
    } else {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::INVALID_REQUEST,
            format!("cannot read the request body: {text}"),
        )
    }
}

/// The raw body, with 413 `payload_too_large` past the limit.
pub(crate) async fn read_bytes(req: Request, state: &AppState) -> Result<Bytes, ApiError> {
    let limit = state.inner.config.max_body_bytes;
    Bytes::from_request(req, state).await.map_err(|r| body_error(r.status(), r.body_text(), limit))
}

/// A JSON body (any content type) parsed into `T`; 400 `invalid_json` when it does not parse.
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = read_bytes(req, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        // serde's message names the field and position, never more than a few input bytes.
        ApiError::new(StatusCode::BAD_REQUEST, codes::INVALID_JSON, format!("invalid JSON body: {e}"))
    })
}

/// An uploaded image: the raw body, or the `file` field of a `multipart/form-data` body.
#[derive(Debug)]
pub(crate) struct ImageUpload(pub(crate) Bytes);

impl FromRequest<AppState> for ImageUpload {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        upload(req, state, "file").await.map(ImageUpload)
    }
}

/// The raw body, or the `field` field of a `multipart/form-data` body, within the body limit.
pub(crate) async fn upload(req: Request, state: &AppState, field_name: &str) -> Result<Bytes, ApiError> {
    let limit = state.inner.config.max_body_bytes;
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("multipart/form-data"));
    if !is_multipart {
        return read_bytes(req, state).await;
    }
    let bad = |msg: String| ApiError::new(StatusCode::BAD_REQUEST, codes::INVALID_MULTIPART, msg);
    let mut form = Multipart::from_request(req, state).await.map_err(|r| bad(r.body_text()))?;
    loop {
        let field = form.next_field().await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large(limit)
            } else {
                bad(format!("malformed multipart body: {}", e.body_text()))
            }
        })?;
        let Some(field) = field else {
            return Err(bad(format!("the multipart body has no `{field_name}` field")));
        };
        if field.name() == Some(field_name) {
            return field.bytes().await.map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::too_large(limit)
                } else {
                    bad(format!("malformed multipart body: {}", e.body_text()))
                }
            });
        }
    }
}
