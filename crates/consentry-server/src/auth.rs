//! API key authentication: `Authorization: Bearer <key>`, verified by the store and cached for a
//! short time under the SHA-256 of the secret (never the secret itself).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use consentry_store::{Actor, ApiKey, Scope, StoreError};
use sha2::{Digest, Sha256};

use crate::error::{codes, ApiError};
use crate::AppState;

/// Entries kept at most; the cache is cleared when it grows past this.
const MAX_CACHED: usize = 10_000;

pub(crate) struct KeyCache {
    ttl: Duration,
    map: Mutex<HashMap<[u8; 32], (ApiKey, Instant)>>,
}

impl KeyCache {
    pub(crate) fn new(ttl: Duration) -> KeyCache {
        KeyCache { ttl, map: Mutex::new(HashMap::new()) }
    }

    fn get(&self, k: &[u8; 32]) -> Option<ApiKey> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(k).filter(|(_, at)| at.elapsed() < self.ttl).map(|(key, _)| key.clone())
    }

    fn put(&self, k: [u8; 32], key: ApiKey) {
        if self.ttl.is_zero() {
            return;
        }
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_CACHED {
            map.retain(|_, (_, at)| at.elapsed() < self.ttl);
            if map.len() >= MAX_CACHED {
                map.clear();
            }
        }
        map.insert(k, (key, Instant::now()));
    }
}

/// The API key of the request (extractor): 401 when missing or invalid.
#[derive(Debug, Clone)]
pub(crate) struct Auth(pub(crate) ApiKey);

impl Auth {
    /// 403 unless the key has `scope` (admin has every scope).
    pub(crate) fn require(&self, scope: Scope) -> Result<Actor, ApiError> {
        self.require_any(&[scope])
    }

    /// 403 unless the key has one of `scopes`.
    pub(crate) fn require_any(&self, scopes: &[Scope]) -> Result<Actor, ApiError> {
        if scopes.iter().any(|s| self.0.allows(*s)) {
            Ok(Actor::api_key(self.0.id))
        } else {
            let names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                codes::INSUFFICIENT_SCOPE,
                format!("this API key lacks the `{}` scope", names.join("` or `")),
            ))
        }
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let missing = || {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                codes::MISSING_API_KEY,
                "this endpoint needs an `Authorization: Bearer <API key>` header",
            )
        };
        let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(missing)?;
        let text = value.to_str().map_err(|_| missing())?;
        let secret = match text.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            _ => return Err(missing()),
        };
        if secret.is_empty() {
            return Err(missing());
        }
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let limited = |key: ApiKey| match state.inner.key_limiter.check(&key.id) {
            Ok(()) => Ok(Auth(key)),
            Err(wait) => Err(ApiError::rate_limited(wait, "too many requests for this API key")),
        };
        if let Some(key) = state.inner.keys.get(&digest) {
            return limited(key);
        }
        match state.inner.store.verify_api_key(secret).await {
            Ok(key) => {
                state.inner.keys.put(digest, key.clone());
                limited(key)
            }
            Err(StoreError::Unauthorized) => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                codes::INVALID_API_KEY,
                "the API key is invalid or revoked",
            )),
            Err(e) => Err(e.into()),
        }
    }
}
