//! The survivor-facing protect page, served at `/protect/`: static files that hash photos in the
//! browser (PDQ compiled to WebAssembly from `consentry-pdq` by `build.rs`) and send only the
//! hashes to `POST /v1/cases`; plus the pages to check (`status.html`) and withdraw
//! (`withdraw.html`) a case.
//!
//! The files are compiled into the binary. Any web server can host them instead: see
//! [`static_files`] and the README ("Hosting the protect page"). Every response carries a
//! Content-Security-Policy that allows nothing but this origin, so the page cannot load a
//! third-party resource or send data anywhere else even if edited by mistake.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::{ApiError, AppState};

/// The WebAssembly module, or empty when the build had no wasm-capable rustc.
static WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pdq.wasm"));
/// How `pdq.wasm` was built, or why it was not.
static WASM_NOTE: &str = include_str!(concat!(env!("OUT_DIR"), "/wasm-note.txt"));

const HTML: &str = "text/html; charset=utf-8";

/// Name, content type and bytes of each file of the page (`pdq.wasm` only when it was built).
pub fn static_files() -> Vec<(&'static str, &'static str, &'static [u8])> {
    let mut files: Vec<(&'static str, &'static str, &'static [u8])> = vec![
        ("index.html", HTML, include_bytes!("../protect/index.html")),
        ("status.html", HTML, include_bytes!("../protect/status.html")),
        ("withdraw.html", HTML, include_bytes!("../protect/withdraw.html")),
        ("protect.js", "text/javascript; charset=utf-8", include_bytes!("../protect/protect.js")),
        ("i18n.js", "text/javascript; charset=utf-8", include_bytes!("../protect/i18n.js")),
        ("style.css", "text/css; charset=utf-8", include_bytes!("../protect/style.css")),
    ];
    if wasm_available() {
        files.push(("pdq.wasm", "application/wasm", WASM));
    }
    files
}

/// True when this build carries the page's WebAssembly hasher.
pub fn wasm_available() -> bool {
    !WASM.is_empty()
}

/// How the WebAssembly hasher was built, or why it was not.
pub fn wasm_build_note() -> &'static str {
    WASM_NOTE
}

/// `/protect` (redirects to `/protect/`), `/protect/` and `/protect/{file}`.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/protect", get(redirect))
        .route("/protect/", get(|| file("index.html")))
        .route("/protect/{file}", get(|Path(name): Path<String>| file_owned(name)))
}

async fn redirect() -> Response {
    // Relative, so that the page also works behind a path prefix.
    (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, "protect/")]).into_response()
}

async fn file_owned(name: String) -> Response {
    file(&name).await
}

async fn file(name: &str) -> Response {
    let Some((_, ctype, bytes)) = static_files().into_iter().find(|(n, _, _)| *n == name) else {
        return ApiError::not_found("no such file of the protect page").into_response();
    };
    let mut resp = bytes.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; \
             img-src 'self' blob:; connect-src 'self'; form-action 'self'; base-uri 'none'; \
             frame-ancestors 'none'",
        ),
    );
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}
