//! Every endpoint through the real router (`oneshot`) on a real SQLite store: success paths and
//! the main error paths, with the stable error codes.

use std::time::Duration;

use crate::common::*;
use axum::http::{Method, StatusCode};
use consentry_server::{codes, openapi_document, registered_routes, ServerConfig};
use serde_json::{json, Value};

const SYNC: Duration = Duration::from_secs(1);

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<no code>")
}

async fn sqlite_app() -> (TestDb, TestApp) {
    let db = TestDb::sqlite();
    let app = TestApp::on(&db, test_config()).await;
    (db, app)
}

/// Every reply in these tests goes through `check_documented`; this shows that it finds what it
/// is there to find.
#[test]
fn replies_are_checked_against_the_openapi_document() {
    // Literal segments win over templates; undocumented routes are not checked.
    let op = |m: Method, p: &str| documented_operation(&m, p).map(|(t, _)| t);
    assert_eq!(op(Method::POST, "/v1/lookup/image").as_deref(), Some("/v1/lookup/image"));
    assert_eq!(op(Method::POST, "/v1/entries/12/disable").as_deref(), Some("/v1/entries/{id}/disable"));
    assert_eq!(op(Method::GET, "/v1/cases/7K3Q-M2XD-PW9A").as_deref(), Some("/v1/cases/{number}"));
    assert_eq!(op(Method::PUT, "/v1/entries/12"), None);
    assert_eq!(op(Method::GET, "/protect/"), None);

    let not_found = json!({"error": {"code": "not_found", "message": "no such entry"}});
    let check = |m: Method, path: &'static str, status: StatusCode, ct: Option<&'static str>, body: Value| {
        std::panic::catch_unwind(move || check_documented(&m, path, status, ct, true, &body)).is_ok()
    };
    let json_ct = Some("application/json");
    // Documented: passes.
    assert!(check(Method::GET, "/v1/entries/12", StatusCode::NOT_FOUND, json_ct, not_found.clone()));
    assert!(check(
        Method::GET,
        "/v1/banks/b/export",
        StatusCode::OK,
        Some("text/csv; charset=utf-8"),
        Value::Null
    ));
    assert!(check(Method::GET, "/v1/entries/12", StatusCode::OK, json_ct, json!({"id": 12})));
    // A status the operation does not list, a media type not listed for it, an error without a
    // documented code: each fails.
    assert!(!check(Method::GET, "/v1/entries/12", StatusCode::CONFLICT, json_ct, not_found.clone()));
    assert!(!check(Method::GET, "/v1/banks/b/export", StatusCode::OK, Some("text/html"), Value::Null));
    assert!(!check(Method::GET, "/v1/entries/12", StatusCode::OK, None, json!({"id": 12})));
    assert!(!check(
        Method::GET,
        "/v1/entries/12",
        StatusCode::NOT_FOUND,
        json_ct,
        json!({"error": {"code": "gone", "message": "?"}})
    ));
    assert!(!check(Method::GET, "/v1/entries/12", StatusCode::NOT_FOUND, json_ct, json!("not found")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_metrics_and_openapi() {
    let (_db, app) = sqlite_app().await;
    let (s, v) = app.call(Method::GET, "/health", None, None).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (s, v) = app.call(Method::GET, "/ready", None, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "ready");
    assert_eq!(v["index_entries"], 0);

    let (s, _) = app.call(Method::GET, "/nope", None, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = app.call(Method::PUT, "/v1/compare", Some(&app.admin), None).await;
    assert_eq!((s, code(&v)), (StatusCode::METHOD_NOT_ALLOWED, codes::METHOD_NOT_ALLOWED));

    // /openapi.json describes exactly the routes the router serves.
    let (s, doc) = app.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc, openapi_document());
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = std::collections::BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let routes = registered_routes();
    assert_eq!(documented, routes);
    // Every schema reference resolves.
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                out.extend(m.get("$ref").and_then(Value::as_str));
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 40, "{}", all.len());
    for r in all {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("{r}"));
        assert!(doc["components"]["schemas"][name].is_object(), "{r} does not resolve");
    }
    assert!(routes.len() >= 20, "{routes:?}");
    // ... and every one of them is really routed (no JSON 404 `no such endpoint`/405 from the router).
    for (method, path) in &routes {
        let uri =
            path.replace("{name}", "nobank").replace("{id}", "999999").replace("{number}", "AAAA-AAAA-AAAA");
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let (s, v) = app.call(m, &uri, Some(&app.admin), None).await;
        assert_ne!(s, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}: {v}");
        if s == StatusCode::NOT_FOUND {
            assert_ne!(v["error"]["message"], "no such endpoint", "{method} {path} is not routed");
        }
    }
    // Every error code appears in the document.
    let doc_text = doc.to_string();
    for c in codes::ALL {
        assert!(doc_text.contains(c), "code {c} missing from /openapi.json");
    }

    // Metrics: requests by route and status, the index gauges, the lookup histogram.
    let h = random_pdq();
    app.call(Method::GET, &format!("/v1/lookup?hash={}", h.to_hex()), Some(&app.lookup), None).await;
    let req = axum::http::Request::get("/metrics").body(axum::body::Body::empty()).unwrap();
    let resp = tower::ServiceExt::oneshot(app.router.clone(), req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = String::from_utf8(
        http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes().to_vec(),
    )
    .unwrap();
    // /health: once above, once in the route walk.
    assert!(
        text.contains(r#"consentry_http_requests_total{route="/health",method="GET",status="200"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"consentry_http_requests_total{route="/v1/lookup",method="GET",status="200"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"route="unmatched",method="GET",status="404""#), "{text}");
    assert!(text.contains("consentry_lookup_duration_seconds_count 1"), "{text}");
    assert!(text.contains("consentry_index_entries 0"), "{text}");
    assert!(text.contains("consentry_index_applied_seq "), "{text}");
    // Query strings (hashes) never reach the metrics labels.
    assert!(!text.contains(&h.to_hex()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_and_scopes() {
    let (_db, app) = sqlite_app().await;
    let h = random_pdq().to_hex();
    let lookup = format!("/v1/lookup?hash={h}");
    let (s, v) = app.call(Method::GET, &lookup, None, None).await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, codes::MISSING_API_KEY));
    let (s, v) = app.call(Method::GET, &lookup, Some("csk_000000000000_00"), None).await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, codes::INVALID_API_KEY));
    // A key with a wrong secret but a real prefix.
    let mut forged = app.lookup.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    let (s, v) = app.call(Method::GET, &lookup, Some(&forged), None).await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, codes::INVALID_API_KEY));
    assert!(!v.to_string().contains(&forged), "the secret is never echoed");

    // lookup may look up but not curate; curate may curate but not look up; admin may do both.
    let (s, _) = app.call(Method::GET, &lookup, Some(&app.lookup), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = app.call(Method::POST, "/v1/banks", Some(&app.lookup), Some(json!({"name": "x"}))).await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, codes::INSUFFICIENT_SCOPE));
    let (s, v) = app.call(Method::GET, &lookup, Some(&app.curate), None).await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, codes::INSUFFICIENT_SCOPE));
    let (s, _) = app.call(Method::POST, "/v1/banks", Some(&app.curate), Some(json!({"name": "x"}))).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = app.call(Method::GET, &lookup, Some(&app.admin), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app.call(Method::POST, "/v1/banks", Some(&app.admin), Some(json!({"name": "y"}))).await;
    assert_eq!(s, StatusCode::CREATED);
    // Bank listing is open to lookup and curate keys.
    let (s, v) = app.call(Method::GET, "/v1/banks", Some(&app.lookup), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["banks"].as_array().unwrap().iter().any(|b| b["name"] == "x"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_key_stops_working_after_the_cache_ttl() {
    let db = TestDb::sqlite();
    let config = ServerConfig { key_cache_ttl: Duration::from_millis(300), ..test_config() };
    let app = TestApp::on(&db, config).await;
    let store = app.state.store().clone();
    let created = store
        .create_api_key(&consentry_store::Actor::system(), "temp", &[consentry_store::Scope::Lookup])
        .await
        .unwrap();
    let uri = format!("/v1/lookup?hash={}", random_pdq().to_hex());
    assert_eq!(app.call(Method::GET, &uri, Some(&created.secret), None).await.0, StatusCode::OK);
    store.revoke_api_key(&consentry_store::Actor::system(), created.key.id).await.unwrap();
    let t = within(Duration::from_secs(2), || async {
        app.call(Method::GET, &uri, Some(&created.secret), None).await.0 == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(t.is_some(), "a revoked key must stop working once its cache entry expires");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn banks_crud() {
    let (_db, app) = sqlite_app().await;
    let key = Some(app.curate.as_str());
    let (s, v) = app
        .call(
            Method::POST,
            "/v1/banks",
            key,
            Some(json!({"name": "known", "description": "d", "purpose": "known-abuse"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        (v["name"].as_str(), v["purpose"].as_str(), v["enabled"].as_bool()),
        (Some("known"), Some("known-abuse"), Some(true))
    );
    let (s, v) = app.call(Method::POST, "/v1/banks", key, Some(json!({"name": "known"}))).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, codes::CONFLICT));
    let (s, v) = app.call(Method::POST, "/v1/banks", key, Some(json!({"name": ""}))).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, codes::INVALID_REQUEST));
    let (s, v) = app.call(Method::POST, "/v1/banks", key, Some(json!({"name": "p", "purpose": "fun"}))).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, codes::INVALID_REQUEST));
    let (s, v) = app.call(Method::POST, "/v1/banks", key, Some(json!({"nom": "p"}))).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, codes::INVALID_JSON));
    let (s, v) = app.upload("/v1/banks", key, "application/json", b"{not json".to_vec()).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, codes::INVALID_JSON));

    let (s, v) = app.call(Method::GET, "/v1/banks/known", key, None).await;
    assert_eq!((s, v["description"].as_str()), (StatusCode::OK, Some("d")));
    let (s, v) = app.call(Method::GET, "/v1/banks/missing", key, None).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, codes::NOT_FOUND));

    let (s, v) = app
        .call(
            Method::PATCH,
            "/v1/banks/known",
            key,
            Some(json!({"name": "renamed", "description": "e", "enabled": false})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["name"].as_str(), v["description"].as_str(), v["enabled"].as_bool()),
        (Some("renamed"), Some("e"), Some(false))
    );
    let (s, _) = app.call(Method::GET, "/v1/banks/known", key, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = app.call(Method::PATCH, "/v1/banks/missing", key, Some(json!({"enabled": true}))).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, codes::NOT_FOUND));

    let (s, v) = app.call(Method::GET, "/v1/banks", key, None).await;
    assert_eq!(s, StatusCode::OK);
    let names: Vec<&str> =
        v["banks"].as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"renamed") && names.contains(&"survivors"), "{names:?}");

    let (s, _) = app.call(Method::DELETE, "/v1/banks/renamed", key, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = app.call(Method::DELETE, "/v1/banks/renamed", key, None).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, codes::NOT_FOUND));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_and_lookups() {
    let (_db, app) = sqlite_app().await;
    app.create_bank("known").await;
    let h = random_pdq();
    let id = app.add_entry("known", &h, json!({"source": "report-17"})).await;

    // Visible to lookups within a second (the index follows the change feed).
    assert!(within(SYNC, || async { !app.matches(&h).await.is_empty() }).await.is_some());
    let near = flip(&h, 5);
    let (s, v) =
        app.call(Method::GET, &format!("/v1/lookup?hash={}", near.to_hex()), Some(&app.lookup), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["query"]["hash"], near.to_hex(), "the query hash is echoed");
    assert_eq!(v["query"]["radius"], 31);
    let m = &v["matches"][0];
    assert_eq!(
        (m["bank"].as_str(), m["entry_id"].as_i64(), m["distance"].as_u64()),
        (Some("known"), Some(id), Some(5))
    );
    assert_eq!(m["metadata"]["source"], "report-17");
    assert_eq!(m["hash"], h.to_hex());
    // Radius is honoured; too large a radius is refused.
    let (_, v) = app
        .call(Method::GET, &format!("/v1/lookup?hash={}&radius=4", near.to_hex()), Some(&app.lookup), None)
        .await;
    assert_eq!(v["matches"].as_array().unwrap().len(), 0);
    let (s, v) = app
        .call(Method::GET, &format!("/v1/lookup?hash={}&radius=300", h.to_hex()), Some(&app.lookup), None)
        .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, codes::INVALID_REQUEST));
    // Malformed hashes.
    for bad in ["xyz", "00", &format!("{}0", h.to_hex()), ""] {
        let (s, v) = app.call(Method::GET, &format!("/v1/lookup?hash={bad}"), Some(&app.lookup), None).await;
        assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, codes::INVALID_HASH), "{bad}");
    }
    let (s, v) = app.call(Method::GET, "/v1/lookup", Some(&app.lookup), None).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, codes::INVALID_HASH));

    // Entry reads.
    let (s, v) = app.call(Method::GET, &format!("/v1/entries/{id}"), Some(&app.lookup), None).await;
    assert_eq!(
        (s, v["hash"].as_str(), v["active"].as_bool()),
        (StatusCode::OK, Some(h.to_hex().as_str()), Some(true))
    );
    let (s, v) = app.call(Method::GET, "/v1/entries/424242", Some(&app.lookup), None).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, codes::NOT_FOUND));
    let (s, v) = app.call(Method::GET, "/v1/entries/abc", Some(&app.lookup), None).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, codes::INVALID_REQUEST));
    let (s, v) = app.call(Method::GET, "/v1/banks/known/entries", Some(&app.lookup), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["entries"].as_array().unwrap().len(), 1);
    for bad in ["?limit=0", "?limit=1001", "?after=x"] {
        let (s, v) =
            app.call(Method::GET, &format!("/v1/banks/known/entries{bad}"), Some(&app.lookup), None).await;
        assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, codes::INVALID_REQUEST), "{bad}: {v}");
    }

    // Adding: malformed hex, degenerate hash, unknown bank.
    let url = "/v1/banks/known/entries";
    let (s, v) = app.call(Method::POST, url, Some(&app.curate), Some(json!({"hash": "12zz"}))).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, codes::INVALID_HASH));
    let (s, v) = app.call(Method::POST, url, Some(&app.curate), Some(json!({"hash": "0".repeat(64)}))).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, codes::HASH_REJECTED));
    let (s, v) = app
        .call(Method::POST, "/v1/banks/nobank/entries", Some(&app.curate), Some(json!({"hash": h.to_hex()})))
        .await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, codes::NOT_FOUND));
    let (s, v) = app.call(Method::POST, url, Some(&app.lookup), Some(json!({"hash": h.to_hex()}))).await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, codes::INSUFFICIENT_SCOPE));

    // An array: good lines stored, bad ones reported by index.
    let (a, b) = (random_pdq(), random_pdq());
    let (s, v) = app
        .call(
            Method::POST,
            url,
            Some(&app.curate),
            Some(json!([{"hash": a.to_hex()}, {"hash": "nothex"}, {"hash": "f".repeat(64)}, {"hash": b.to_hex(), "metadata": {"k": 1}}])),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let added: Vec<i64> =
        v["added"].as_array().unwrap().iter().map(|x| x["index"].as_i64().unwrap()).collect();
    let rejected: Vec<i64> =
        v["rejected"].as_array().unwrap().iter().map(|x| x["index"].as_i64().unwrap()).collect();
    assert_eq!((added, rejected), (vec![0, 3], vec![1, 2]));

    // Batch lookup.
    let miss = random_pdq();
    let wait = within(SYNC, || async {
        let (_, v) = app
            .call(
                Method::POST,
                "/v1/lookup",
                Some(&app.lookup),
                Some(json!({"hashes": [a.to_hex(), miss.to_hex(), flip(&b, 3).to_hex()]})),
            )
            .await;
        let r = v["results"].as_array().unwrap();
        r[0]["matches"].as_array().unwrap().len() == 1
            && r[1]["matches"].as_array().unwrap().is_empty()
            && r[2]["matches"][0]["distance"] == 3
            && r[2]["matches"][0]["metadata"]["k"] == 1
            && r[1]["hash"] == miss.to_hex()
    })
    .await;
    assert!(wait.is_some());
    let (s, v) = app
        .call(Method::POST, "/v1/lookup", Some(&app.lookup), Some(json!({"hashes": [a.to_hex(), "bad"]})))
        .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, codes::INVALID_HASH));
    assert!(v["error"]["message"].as_str().unwrap().contains("hashes[1]"));
    // The hashes are parsed as the body is read: the first bad one is named, a JSON escape or
    // upper case is still a hash, an element that is not a string is bad JSON, and a list over
    // the limit is refused for its length whatever it holds.
    let (s, v) = app
        .call(
            Method::POST,
            "/v1/lookup",
            Some(&app.lookup),
            Some(json!({"hashes": [a.to_hex(), "x", a.to_hex(), "y"]})),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, codes::INVALID_HASH));
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("hashes[1] ") && !message.contains("hashes[3]"), "{message}");
    let escaped = format!("\\u00{:02x}{}", a.to_hex().as_bytes()[0], &a.to_hex()[1..]);
    let body = format!(r#"{{"hashes": ["{escaped}", "{}"], "radius": 0}}"#, a.to_hex().to_uppercase());
    let (s, v) = app.upload("/v1/lookup", Some(&app.lookup), "application/json", body.into_bytes()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for r in v["results"].as_array().unwrap() {
        assert_eq!((r["hash"].as_str(), r["matches"][0]["distance"].as_u64()), (Some(&*a.to_hex()), Some(0)));
    }
    let (s, v) = app
        .call(Method::POST, "/v1/lookup", Some(&app.lookup), Some(json!({"hashes": [a.to_hex(), 7]})))
        .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, codes::INVALID_JSON));
    let mut too_many_with_a_bad_one: Vec<String> = (0..10_001).map(|_| a.to_hex()).collect();
    too_many_with_a_bad_one[5] = "bad".into();
    let (s, v) = app
        .call(Method::POST, "/v1/lookup", Some(&app.lookup), Some(json!({"hashes": too_many_with_a_bad_one})))
        .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, codes::TOO_MANY_HASHES));
    let too_many: Vec<String> = (0..10_001).map(|_| a.to_hex()).collect();
    let (s, v) =
        app.call(Method::POST, "/v1/lookup", Some(&app.lookup), Some(json!({"hashes": too_many}))).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, codes::TOO_MANY_HASHES));
    let ok_many: Vec<String> =
        (0..10_000).map(|i| if i % 2 == 0 { a.to_hex() } else { miss.to_hex() }).collect();
    let (s, v) =
        app.call(Method::POST, "/v1/lookup", Some(&app.lookup), Some(json!({"hashes": ok_many}))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["results"].as_array().unwrap().len(), 10_000);
    assert_eq!(v["results"][9_998]["matches"].as_array().unwrap().len(), 1);

    // Items may be lists of up to 8 hashes (an image's dihedral hashes): each entry once, with
    // its smallest distance, as GET with dihedral=true answers; the list is echoed as `hashes`.
    let (near2, near5) = (flip(&a, 2), flip(&a, 5));
    let list = json!([miss.to_hex(), near5.to_hex(), near2.to_hex()]);
    let (s, v) = app
        .call(
            Method::POST,
            "/v1/lookup",
            Some(&app.lookup),
            Some(json!({"hashes": [list, a.to_hex(), [miss.to_hex()]]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let r = v["results"].as_array().unwrap();
    assert_eq!(r.len(), 3);
    assert_eq!((&r[0]["hash"], &r[0]["hashes"]), (&json!(miss.to_hex()), &list));
    let m = r[0]["matches"].as_array().unwrap();
    assert_eq!(m.len(), 1, "{v}");
    assert_eq!((&m[0]["hash"], &m[0]["distance"]), (&json!(a.to_hex()), &json!(2)));
    let joined = [miss, near5, near2].map(|h| h.to_hex()).join(",");
    let (_, g) = app
        .call(Method::GET, &format!("/v1/lookup?hash={joined}&dihedral=true"), Some(&app.lookup), None)
        .await;
    assert_eq!(g["matches"], r[0]["matches"], "the batch item answers as GET does");
    assert_eq!((r[1]["hash"].as_str(), r[1].get("hashes")), (Some(&*a.to_hex()), None));
    assert_eq!(r[1]["matches"][0]["distance"], 0);
    assert!(r[2]["matches"].as_array().unwrap().is_empty() && r[2].get("hashes").is_none(), "{v}");
    // Bad lists are named by their item: empty, more than 8, a bad hash inside; the limit counts
    // hashes, not items.
    for (bad, says) in [
        (json!([a.to_hex(), []]), "hashes[1]: an empty list"),
        (json!([vec![a.to_hex(); 9]]), "hashes[0]: a list holds at most 8"),
        (json!([a.to_hex(), a.to_hex(), [a.to_hex(), "zz"]]), "hashes[2] is not a PDQ hash"),
    ] {
        let (s, v) =
            app.call(Method::POST, "/v1/lookup", Some(&app.lookup), Some(json!({"hashes": bad}))).await;
        assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, codes::INVALID_HASH), "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(says), "{message}");
    }
    let lists: Vec<Vec<String>> = (0..1_251).map(|_| vec![a.to_hex(); 8]).collect();
    let (s, v) =
        app.call(Method::POST, "/v1/lookup", Some(&app.lookup), Some(json!({"hashes": lists}))).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, codes::TOO_MANY_HASHES), "{v}");

    // Disable → stops matching; enable → matches again; delete → gone.
    let (s, v) = app.call(Method::POST, &format!("/v1/entries/{id}/disable"), Some(&app.curate), None).await;
    assert_eq!((s, v["active"].as_bool()), (StatusCode::OK, Some(false)));
    assert!(
        app.matches(&h).await.is_empty(),
        "a disabled entry never matches, even before the index catches up"
    );
    let (s, v) = app.call(Method::POST, &format!("/v1/entries/{id}/enable"), Some(&app.curate), None).await;
    assert_eq!((s, v["active"].as_bool()), (StatusCode::OK, Some(true)));
    assert!(within(SYNC, || async { app.matches(&h).await.len() == 1 }).await.is_some());
    let (s, v) = app.call(Method::POST, "/v1/entries/999999/disable", Some(&app.curate), None).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, codes::NOT_FOUND));

    // A disabled bank never matches.
    let (s, _) =
        app.call(Method::PATCH, "/v1/banks/known", Some(&app.curate), Some(json!({"enabled": false}))).await;
    assert_eq!(s, StatusCode::OK);
    assert!(app.matches(&h).await.is_empty());
    assert!(
        within(SYNC, || async { app.state.index().search(&h, 0).is_empty() }).await.is_some(),
        "index follows"
    );
    app.call(Method::PATCH, "/v1/banks/known", Some(&app.curate), Some(json!({"enabled": true}))).await;
    assert!(within(SYNC, || async { app.matches(&h).await.len() == 1 }).await.is_some());

    let (s, _) = app.call(Method::DELETE, &format!("/v1/entries/{id}"), Some(&app.curate), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(app.matches(&h).await.is_empty());
    let (s, v) = app.call(Method::DELETE, &format!("/v1/entries/{id}"), Some(&app.curate), None).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, codes::NOT_FOUND));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_hashes() {
    let (_db, app) = sqlite_app().await;
    let a = random_pdq();
    for (n, want) in [(0u32, true), (31, true), (32, false)] {
        let b = flip(&a, n);
        let (s, v) = app
            .call(
                Method::POST,
                "/v1/compare",
                Some(&app.lookup),
                Some(json!({"a": a.to_hex(), "b": b.to_hex()})),
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!((v["distance"].as_u64(), v["match"].as_bool()), (Some(n as u64), Some(want)));
    }
    let (s, v) = app
        .call(Method::POST, "/v1/compare", Some(&app.lookup), Some(json!({"a": a.to_hex(), "b": "q"})))
        .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, codes::INVALID_HASH));
    let (s, v) =
        app.call(Method::POST, "/v1/compare", Some(&app.lookup), Some(json!({"a": a.to_hex()}))).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, codes::INVALID_JSON));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashing_images() {
    let db = TestDb::sqlite();
    let app = TestApp::on(&db, ServerConfig { max_body_bytes: 256 * 1024, ..test_config() }).await;
    let img = test_image(3, 320, 240);
    let png = png_bytes(&img);
    let (s, v) = app.upload("/v1/hash", Some(&app.lookup), "image/png", png.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64(), v["format"].as_str()),
        (Some(320), Some(240), Some("png"))
    );
    let pdq = v["pdq"].as_str().unwrap().to_owned();
    let expected =
        consentry_media::hash_bytes(&png, &Default::default(), &mut consentry_pdq::Hasher::new()).unwrap();
    assert_eq!(pdq, expected.pdq.hash.to_hex());
    assert_eq!(v["quality"].as_u64(), Some(expected.pdq.quality as u64));
    assert!(v.get("dihedral").is_none());

    // Multipart, with dihedral.
    let (ct, body) = multipart("file", &png);
    let (s, v) = app.upload("/v1/hash?dihedral=true", Some(&app.lookup), &ct, body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["pdq"], pdq);
    assert_eq!(v["dihedral"]["original"], pdq);
    assert_eq!(v["dihedral"].as_object().unwrap().len(), 8);
    let (ct, body) = multipart("other", &png);
    let (s, v) = app.upload("/v1/hash", Some(&app.lookup), &ct, body).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, codes::INVALID_MULTIPART));

    // JPEG works too.
    let (s, v) = app.upload("/v1/hash", Some(&app.lookup), "image/jpeg", jpeg_bytes(&img)).await;
    assert_eq!((s, v["format"].as_str()), (StatusCode::OK, Some("jpeg")));

    // Corrupt (truncated) image → 422; not an image → 415; empty → 400; too big → 413.
    let mut truncated = png.clone();
    truncated.truncate(png.len() / 2);
    let (s, v) = app.upload("/v1/hash", Some(&app.lookup), "image/png", truncated).await;
    assert_eq!((s, code(&v)), (StatusCode::UNPROCESSABLE_ENTITY, codes::CORRUPT_IMAGE), "{v}");
    let (s, v) =
        app.upload("/v1/hash", Some(&app.lookup), "image/png", b"hello, not an image".to_vec()).await;
    assert_eq!((s, code(&v)), (StatusCode::UNSUPPORTED_MEDIA_TYPE, codes::UNSUPPORTED_IMAGE_FORMAT));
    let (s, v) = app.upload("/v1/hash", Some(&app.lookup), "image/png", Vec::new()).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, codes::EMPTY_IMAGE));
    let big = vec![0u8; 300 * 1024];
    let (s, v) = app.upload("/v1/hash", Some(&app.lookup), "image/png", big.clone()).await;
    assert_eq!((s, code(&v)), (StatusCode::PAYLOAD_TOO_LARGE, codes::PAYLOAD_TOO_LARGE));
    let (ct, body) = multipart("file", &big);
    let (s, v) = app.upload("/v1/hash", Some(&app.lookup), &ct, body).await;
    assert_eq!((s, code(&v)), (StatusCode::PAYLOAD_TOO_LARGE, codes::PAYLOAD_TOO_LARGE));
    // No key → 401 before the body is even read.
    let (s, v) = app.upload("/v1/hash", None, "image/png", png.clone()).await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, codes::MISSING_API_KEY));

    // Image lookup: the computed hash and quality are echoed; a rotated copy matches only with
    // dihedral=true.
    app.create_bank("known").await;
    let h = consentry_pdq::Hash256::from_hex(&pdq).unwrap();
    let id = app.add_entry("known", &h, json!({})).await;
    assert!(within(SYNC, || async { !app.matches(&h).await.is_empty() }).await.is_some());
    let (s, v) = app.upload("/v1/lookup/image", Some(&app.lookup), "image/png", png.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["query"]["hash"], pdq);
    assert_eq!(v["query"]["quality"].as_u64(), Some(expected.pdq.quality as u64));
    assert_eq!(
        (v["matches"][0]["entry_id"].as_i64(), v["matches"][0]["distance"].as_u64()),
        (Some(id), Some(0))
    );
    let rotated = png_bytes(&image::imageops::rotate90(&img));
    let (_, v) = app.upload("/v1/lookup/image", Some(&app.lookup), "image/png", rotated.clone()).await;
    assert!(v["matches"].as_array().unwrap().is_empty(), "{v}");
    let (s, v) = app.upload("/v1/lookup/image?dihedral=true", Some(&app.lookup), "image/png", rotated).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["matches"][0]["entry_id"].as_i64(), Some(id), "{v}");
    assert!(v["matches"][0]["distance"].as_u64().unwrap() <= 31);
    let mut broken = png.clone();
    broken.truncate(100);
    let (s, v) = app.upload("/v1/lookup/image", Some(&app.lookup), "image/png", broken).await;
    assert_eq!((s, code(&v)), (StatusCode::UNPROCESSABLE_ENTITY, codes::CORRUPT_IMAGE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survivor_cases() {
    let (db, app) = sqlite_app().await;
    let (h1, h2) = (random_pdq(), random_pdq());
    let (s, v) = app
        .call(
            Method::POST,
            "/v1/cases",
            None,
            Some(json!({"hashes": [h1.to_hex(), {"hash": h2.to_hex(), "quality": 90}]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let number = v["case_number"].as_str().unwrap().to_owned();
    let pin = v["pin"].as_str().unwrap().to_owned();
    assert_eq!((number.len(), pin.len(), v["status"].as_str()), (14, 10, Some("received")));

    // The case's hashes match, in the survivors' bank.
    assert!(within(SYNC, || async { app.matches(&h1).await.len() == 1 }).await.is_some());
    assert_eq!(app.matches(&h2).await[0]["bank"], "survivors");

    // Status with the PIN (number typed without dashes, lower case).
    let compact = number.replace('-', "").to_lowercase();
    let (s, v) =
        app.call(Method::POST, &format!("/v1/cases/{compact}/status"), None, Some(json!({"pin": pin}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!((v["case_number"].as_str(), v["status"].as_str()), (Some(number.as_str()), Some("received")));
    assert_eq!(v["hashes"].as_array().unwrap().len(), 2);
    assert!(!v.to_string().contains(&pin), "the PIN is shown only at creation");
    // What was caught: the lookups above matched each hash (h1 perhaps several times), all
    // through one API key, which is counted but never named.
    let per_hash: Vec<i64> =
        v["hashes"].as_array().unwrap().iter().map(|h| h["matches"].as_i64().unwrap()).collect();
    let matched_h2 = v["hashes"].as_array().unwrap().iter().find(|h| h["hash"] == h2.to_hex()).unwrap();
    assert_eq!(matched_h2["matches"], 1, "{v}");
    assert!(per_hash.iter().all(|&n| n >= 1), "{v}");
    let caught = &v["caught"];
    assert_eq!(caught["matches"].as_i64(), Some(per_hash.iter().sum()), "{v}");
    assert_eq!(
        (caught["hashes"].as_i64(), caught["sources"].as_i64(), caught["days"].as_i64()),
        (Some(2), Some(1), Some(1))
    );
    assert!(caught["first_at"].as_i64() <= caught["last_at"].as_i64() && caught["last_at"].is_i64(), "{v}");
    assert!(!v.to_string().contains("lookup"), "the source is not named: {v}");
    // A server that hides them says nothing of it.
    let hidden = TestApp::on(&db, ServerConfig { case_matches_shown: false, ..test_config() }).await;
    let (s, hv) = hidden
        .call(Method::POST, &format!("/v1/cases/{number}/status"), None, Some(json!({"pin": pin})))
        .await;
    assert_eq!(s, StatusCode::OK, "{hv}");
    assert!(hv.get("caught").is_none() && hv["hashes"][0].get("matches").is_none(), "{hv}");
    assert_eq!(hv["hashes"].as_array().unwrap().len(), 2);

    // Wrong PIN and unknown case: the same 401.
    let (s, v) = app
        .call(Method::POST, &format!("/v1/cases/{number}/status"), None, Some(json!({"pin": "0000000000"})))
        .await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, codes::BAD_CREDENTIALS));
    let (s2, v2) = app
        .call(Method::POST, "/v1/cases/2222-2222-2222/status", None, Some(json!({"pin": "0000000000"})))
        .await;
    assert_eq!((s2, &v2), (s, &v));
    let (s, v) = app
        .call(Method::POST, &format!("/v1/cases/{number}/withdraw"), None, Some(json!({"pin": "1"})))
        .await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, codes::BAD_CREDENTIALS));

    // Withdraw: the hashes stop matching within a second.
    let (s, v) = app
        .call(Method::POST, &format!("/v1/cases/{number}/withdraw"), None, Some(json!({"pin": pin})))
        .await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("withdrawn")), "{v}");
    let t = within(SYNC, || async { app.matches(&h1).await.is_empty() && app.matches(&h2).await.is_empty() })
        .await;
    assert!(t.is_some(), "withdrawn hashes must stop matching within 1 s");
    assert!(within(SYNC, || async { app.state.index().search(&h1, 0).is_empty() }).await.is_some());
    let (_, v) =
        app.call(Method::POST, &format!("/v1/cases/{number}/status"), None, Some(json!({"pin": pin}))).await;
    assert_eq!(v["status"], "withdrawn");
    assert!(v["hashes"].as_array().unwrap().iter().all(|h| h["active"] == false));

    // Hashes only: image data is refused, in every shape.
    let png = png_bytes(&test_image(1, 64, 64));
    let (s, v) = app.upload("/v1/cases", None, "image/png", png.clone()).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, codes::IMAGE_NOT_ACCEPTED));
    let (s, v) = app.upload("/v1/cases", None, "application/json", png.clone()).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, codes::IMAGE_NOT_ACCEPTED));
    let (ct, body) = multipart("file", &png);
    let (s, v) = app.upload("/v1/cases", None, &ct, body).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, codes::IMAGE_NOT_ACCEPTED));
    let data_url = format!("data:image/png;base64,{}", "iVBORw0KGgo".repeat(20));
    let (s, v) = app.call(Method::POST, "/v1/cases", None, Some(json!({"hashes": [data_url]}))).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, codes::IMAGE_NOT_ACCEPTED));
    let (s, v) = app.call(Method::POST, "/v1/cases", None, Some(json!({"hashes": ["abc"]}))).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, codes::INVALID_HASH));
    let (s, v) = app.call(Method::POST, "/v1/cases", None, Some(json!({"hashes": []}))).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, codes::INVALID_REQUEST));
    let (s, v) = app.call(Method::POST, "/v1/cases", None, Some(json!({"hashes": ["0".repeat(64)]}))).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, codes::HASH_REJECTED));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_review_cases() {
    let (_db, app) = sqlite_app().await;
    let open = |hashes: Vec<String>| {
        let app = &app;
        async move {
            let (s, v) = app.call(Method::POST, "/v1/cases", None, Some(json!({ "hashes": hashes }))).await;
            assert_eq!(s, StatusCode::CREATED, "{v}");
            (v["case_number"].as_str().unwrap().to_owned(), v["pin"].as_str().unwrap().to_owned())
        }
    };
    let (h1, h2, h3) = (random_pdq(), random_pdq(), random_pdq());
    let (first, pin) = open(vec![h1.to_hex(), h2.to_hex()]).await;
    let (second, _) = open(vec![h3.to_hex()]).await;

    // The list, by id, filtered by status, in pages; the staff's key, not the survivors' limit.
    let list = |q: &'static str| {
        let app = &app;
        async move { app.call(Method::GET, &format!("/v1/cases{q}"), Some(&app.curate), None).await }
    };
    let (s, v) = list("").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let numbers: Vec<&str> =
        v["cases"].as_array().unwrap().iter().map(|c| c["case_number"].as_str().unwrap()).collect();
    assert_eq!(numbers, [first.as_str(), second.as_str()]);
    assert_eq!(
        (v["cases"][0]["bank"].as_str(), v["cases"][0]["status"].as_str()),
        (Some("survivors"), Some("received"))
    );
    assert!(v["next_after"].is_null());
    let (_, page) = list("?limit=1").await;
    assert_eq!(page["cases"].as_array().unwrap().len(), 1);
    let after = page["next_after"].as_i64().unwrap();
    let (_, rest) =
        app.call(Method::GET, &format!("/v1/cases?limit=1&after={after}"), Some(&app.curate), None).await;
    assert_eq!(rest["cases"][0]["case_number"], second.as_str());
    for bad in ["?status=open", "?limit=0", "?limit=1001", "?limit=-1"] {
        let (s, v) = list(bad).await;
        assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, codes::INVALID_REQUEST), "{bad}: {v}");
    }
    for key in [None, Some(&app.lookup)] {
        let (s, _) = app.call(Method::GET, "/v1/cases", key.map(String::as_str), None).await;
        assert!(s == StatusCode::UNAUTHORIZED || s == StatusCode::FORBIDDEN, "{s}");
    }

    // One case by the number the survivor gives (typed any way), with what was caught and the
    // PIN's state; no PIN is needed, none is shown.
    assert!(within(SYNC, || async { app.matches(&h1).await.len() == 1 }).await.is_some());
    let wrong = if pin.starts_with('0') { pin.replacen('0', "1", 1) } else { format!("0{}", &pin[1..]) };
    app.call(Method::POST, &format!("/v1/cases/{first}/status"), None, Some(json!({ "pin": wrong }))).await;
    let typed = first.replace('-', " ").to_lowercase();
    let (s, v) = app
        .call(Method::GET, &format!("/v1/cases/{}", typed.replace(' ', "%20")), Some(&app.curate), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!((v["case_number"].as_str(), v["bank"].as_str()), (Some(first.as_str()), Some("survivors")));
    let hashes = v["hashes"].as_array().unwrap();
    assert!(hashes.iter().all(|h| h["entry_id"].is_i64() && h["active"] == true), "{v}");
    let one = hashes.iter().find(|h| h["hash"] == h1.to_hex()).unwrap();
    assert!(one["matches"].as_i64().unwrap() >= 1, "{v}");
    assert_eq!(v["caught"]["hashes"], 1, "{v}");
    assert_eq!(
        (v["pin"]["failed_attempts"].as_i64(), v["pin"]["lockouts"].as_i64()),
        (Some(1), Some(0)),
        "{v}"
    );
    assert!(!v.to_string().contains(&pin));
    let (s, v) = app.call(Method::GET, "/v1/cases/2222-2222-2222", Some(&app.curate), None).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, codes::NOT_FOUND));

    // She lost her PIN: staff give her a new one (shown once); the old one stops working.
    let (s, v) = app.call(Method::POST, &format!("/v1/cases/{first}/pin"), Some(&app.curate), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let new_pin = v["pin"].as_str().unwrap().to_owned();
    assert_ne!(new_pin, pin);
    let (s, _) =
        app.call(Method::POST, &format!("/v1/cases/{first}/status"), None, Some(json!({ "pin": pin }))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let pin = new_pin;
    let (s, _) = app.call(Method::POST, &format!("/v1/cases/{first}/pin"), Some(&app.lookup), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Reviewed: active (the survivor sees it); withdrawn on her behalf: its hashes stop
    // matching; a withdrawn case stays withdrawn.
    let patch = |number: String, status: &'static str| {
        let app = &app;
        async move {
            app.call(
                Method::PATCH,
                &format!("/v1/cases/{number}"),
                Some(&app.curate),
                Some(json!({ "status": status })),
            )
            .await
        }
    };
    let (s, v) = patch(first.clone(), "active").await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("active")), "{v}");
    let (_, v) =
        app.call(Method::POST, &format!("/v1/cases/{first}/status"), None, Some(json!({ "pin": pin }))).await;
    assert_eq!(v["status"], "active");
    assert!(v.get("id").is_none() && v.get("bank").is_none(), "the survivor's view has no ids: {v}");
    let (s, v) = patch(first.clone(), "received").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = patch(second.clone(), "withdrawn").await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("withdrawn")), "{v}");
    assert!(within(SYNC, || async { app.matches(&h3).await.is_empty() }).await.is_some());
    let (s, v) = patch(second.clone(), "active").await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, codes::CONFLICT));
    let (_, v) = list("?status=withdrawn").await;
    assert_eq!(v["cases"].as_array().unwrap().len(), 1);
    // The changes are in the audit log under the staff's key.
    let events = app.state.store().audit_events(0, 1000).await.unwrap();
    let by_staff: Vec<&str> = events
        .iter()
        .filter(|e| e.actor.starts_with("api-key:") && e.action.starts_with("case."))
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(by_staff, ["case.pin_reset", "case.status", "case.withdraw"], "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_lockout_after_wrong_pins() {
    let (_db, app) = sqlite_app().await;
    let (_, v) =
        app.call(Method::POST, "/v1/cases", None, Some(json!({"hashes": [random_pdq().to_hex()]}))).await;
    let number = v["case_number"].as_str().unwrap().to_owned();
    let pin = v["pin"].as_str().unwrap().to_owned();
    let wrong = if pin == "0123456789" { "9876543210" } else { "0123456789" };
    let url = format!("/v1/cases/{number}/status");
    for _ in 0..5 {
        let (s, v) = app.call(Method::POST, &url, None, Some(json!({"pin": wrong}))).await;
        assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, codes::BAD_CREDENTIALS));
    }
    // Locked now: even the right PIN gets 429 with Retry-After.
    let req = axum::http::Request::post(&url)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(json!({"pin": pin}).to_string()))
        .unwrap();
    let resp = tower::ServiceExt::oneshot(app.router.clone(), req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry > 0 && retry <= 15 * 60, "{retry}");
    let (s, v) = app
        .call(Method::POST, &format!("/v1/cases/{number}/withdraw"), None, Some(json!({"pin": pin})))
        .await;
    assert_eq!((s, code(&v)), (StatusCode::TOO_MANY_REQUESTS, codes::CASE_LOCKED));
}

async fn metrics_text(app: &TestApp) -> String {
    let req = axum::http::Request::get("/metrics").body(axum::body::Body::empty()).unwrap();
    let resp = tower::ServiceExt::oneshot(app.router.clone(), req).await.unwrap();
    String::from_utf8(http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes().to_vec())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn match_counts_by_bank_entry_source_day_and_signal() {
    let (_db, app) = sqlite_app().await;
    app.create_bank("known").await;
    app.create_bank("other").await;
    let (h1, h2) = (random_pdq(), random_pdq());
    let e1 = app.add_entry("known", &h1, json!({})).await;
    let e2 = app.add_entry("other", &h2, json!({})).await;
    assert!(within(SYNC, || async { app.state.index().len() == 2 }).await.is_some());

    // Two single lookups with the lookup key, one batch with the admin key (one hash matching
    // nothing), one lookup that matches nothing.
    for _ in 0..2 {
        let (s, v) = app
            .call(Method::GET, &format!("/v1/lookup?hash={}", flip(&h1, 3).to_hex()), Some(&app.lookup), None)
            .await;
        assert_eq!((s, v["matches"].as_array().map(Vec::len)), (StatusCode::OK, Some(1)), "{v}");
    }
    let batch = json!({ "hashes": [h1.to_hex(), h2.to_hex(), random_pdq().to_hex()] });
    let (s, _) = app.call(Method::POST, "/v1/lookup", Some(&app.admin), Some(batch)).await;
    assert_eq!(s, StatusCode::OK);
    app.call(Method::GET, &format!("/v1/lookup?hash={}", random_pdq().to_hex()), Some(&app.lookup), None)
        .await;

    // Written to the store in the background within a second, without anyone asking.
    let today = consentry_store::day_of(consentry_store::Timestamp::now());
    let q = consentry_store::StatsQuery::over(consentry_store::StatsGroup::Entry, today - 1, today + 1);
    let store = app.state.store().clone();
    let written = within(Duration::from_secs(3), || {
        let (store, q) = (store.clone(), q.clone());
        async move { store.match_stats(&q).await.unwrap().iter().map(|r| r.matches).sum::<i64>() == 4 }
    })
    .await;
    assert!(written.is_some(), "the counts reach the store by themselves");

    let stats = |query: &str| {
        let uri = format!("/v1/stats/matches{query}");
        let app = &app;
        async move {
            let (s, v) = app.call(Method::GET, &uri, Some(&app.curate), None).await;
            assert_eq!(s, StatusCode::OK, "{uri}: {v}");
            v
        }
    };
    let v = stats("?by=entry").await;
    assert_eq!(v["by"], "entry");
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{v}");
    assert_eq!(
        (
            rows[0]["entry_id"].as_i64(),
            rows[0]["bank"].as_str(),
            rows[0]["matches"].as_i64(),
            rows[0]["sources"].as_i64()
        ),
        (Some(e1), Some("known"), Some(3), Some(2))
    );
    assert_eq!((rows[1]["entry_id"].as_i64(), rows[1]["matches"].as_i64()), (Some(e2), Some(1)));
    assert!(rows[0]["first_at"].as_i64().unwrap() <= rows[0]["last_at"].as_i64().unwrap());

    let by = |v: &Value, key: &str| -> Vec<(String, i64)> {
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r[key].as_str().unwrap_or("?").to_owned(), r["matches"].as_i64().unwrap()))
            .collect()
    };
    // The default grouping is by bank.
    assert_eq!(by(&stats("").await, "bank"), vec![("known".into(), 3), ("other".into(), 1)]);
    assert_eq!(by(&stats("?by=source").await, "source"), vec![("admin".into(), 2), ("lookup".into(), 2)]);
    assert_eq!(by(&stats("?by=signal").await, "signal"), vec![("pdq".into(), 4)]);
    let days = stats("?by=day").await;
    assert_eq!(days["rows"].as_array().unwrap().len(), 1);
    assert_eq!(days["rows"][0]["day"], days["until"], "today, UTC");
    assert_eq!(
        by(&stats("?by=source&bank=known").await, "source"),
        vec![("lookup".into(), 2), ("admin".into(), 1)]
    );
    assert_eq!(by(&stats(&format!("?by=source&entry={e2}")).await, "source"), vec![("admin".into(), 1)]);
    assert_eq!(by(&stats("?by=entry&source=admin&limit=1").await, "bank").len(), 1);
    assert!(stats("?since=2099-01-01&until=2099-12-31").await["rows"].as_array().unwrap().is_empty());

    // Prometheus: matches by bank and signal since start.
    let text = metrics_text(&app).await;
    assert!(text.contains("consentry_matches_total{bank=\"known\",signal=\"pdq\"} 3"), "{text}");
    assert!(text.contains("consentry_matches_total{bank=\"other\",signal=\"pdq\"} 1"), "{text}");

    // A lookup answered just before a stats request is in it (the request writes what is pending).
    app.call(Method::GET, &format!("/v1/lookup?hash={}", h2.to_hex()), Some(&app.lookup), None).await;
    assert_eq!(by(&stats("?by=bank").await, "bank"), vec![("known".into(), 3), ("other".into(), 2)]);

    // The counts outlive a removed entry.
    let (s, _) = app.call(Method::DELETE, &format!("/v1/entries/{e2}"), Some(&app.curate), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(stats("?by=entry").await["rows"].as_array().unwrap().len(), 2);

    // Bad requests, and who may ask.
    for bad in [
        "?by=everything",
        "?since=2026-02-30",
        "?until=yesterday",
        "?since=2026-12-02&until=2026-12-01",
        "?limit=0",
        "?limit=10001",
        "?colour=red",
    ] {
        let (s, v) = app.call(Method::GET, &format!("/v1/stats/matches{bad}"), Some(&app.curate), None).await;
        assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, codes::INVALID_REQUEST), "{bad}: {v}");
    }
    let (s, _) = app.call(Method::GET, "/v1/stats/matches?bank=nobank", Some(&app.curate), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app.call(Method::GET, "/v1/stats/matches", Some(&app.lookup), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = app.call(Method::GET, "/v1/stats/matches", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}
