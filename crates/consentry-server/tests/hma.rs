//! The HMA 2.0 compatibility endpoints (`/m/...`, `/h/hash`) through the real router: the
//! replies in HMA's shapes, PDQ by hash and by uploaded photo, derive matches for an uploaded
//! derivative, HMA's filters, and the refusals (URLs, unknown signal types, no key).

use std::time::Duration;

use crate::common::*;
use axum::http::{Method, StatusCode};
use consentry_derive::synth;
use serde_json::{json, Value};

fn png(img: &synth::RgbImage) -> Vec<u8> {
    png_bytes(&image::RgbImage::from_raw(img.width, img.height, img.data.clone()).expect("sizes agree"))
}

async fn get(app: &TestApp, uri: &str) -> (StatusCode, Value) {
    app.call(Method::GET, uri, Some(&app.lookup), None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hma_clients_find_pdq_and_derive_matches() {
    let db = TestDb::sqlite();
    let app = TestApp::on(&db, test_config()).await;
    app.create_bank("known").await;
    app.create_bank("other").await;
    let h = random_pdq();
    let near = flip(&h, 4);
    let id_known = app.add_entry("known", &h, json!({})).await;
    let id_other = app.add_entry("other", &near, json!({})).await;
    let far = app.add_entry("other", &flip(&h, 40), json!({})).await;
    assert!(within(Duration::from_secs(1), || async { app.state.index().len() == 3 }).await.is_some());
    let q = format!("signal_type=pdq&signal={}", h.to_hex());

    // raw_lookup: entry ids, closest first; with distances as HMA gives them (strings); by bank.
    let (s, v) = get(&app, &format!("/m/raw_lookup?{q}")).await;
    assert_eq!((s, &v), (StatusCode::OK, &json!({ "matches": [id_known, id_other] })));
    let (_, v) = get(&app, &format!("/m/raw_lookup?{q}&include_distance=true")).await;
    assert_eq!(
        v,
        json!({ "matches": [
            { "bank_content_id": id_known, "distance": "0" },
            { "bank_content_id": id_other, "distance": "4" },
        ] })
    );
    let (_, v) = get(&app, &format!("/m/raw_lookup?{q}&banks=other")).await;
    assert_eq!(v, json!({ "matches": [id_other] }));
    assert_ne!(id_other, far);

    // lookup by hash: the matches by bank.
    let (s, v) = get(&app, &format!("/m/lookup?{q}&seed=77")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v,
        json!({
            "known": [{ "bank_content_id": id_known, "distance": "0" }],
            "other": [{ "bank_content_id": id_other, "distance": "4" }],
        })
    );
    let (_, v) = get(&app, &format!("/m/lookup?{q}&banks=known,nobank")).await;
    assert_eq!(v, json!({ "known": [{ "bank_content_id": id_known, "distance": "0" }] }));
    let (_, v) = get(&app, &format!("/m/lookup?signal_type=pdq&signal={}", random_pdq().to_hex())).await;
    assert_eq!(v, json!({}));

    // A disabled entry never matches, in raw_lookup either.
    app.call(Method::POST, &format!("/v1/entries/{id_other}/disable"), Some(&app.curate), None).await;
    let (_, v) = get(&app, &format!("/m/raw_lookup?{q}")).await;
    assert_eq!(v, json!({ "matches": [id_known] }));

    // Refusals: a URL to fetch, another signal type, a bad hash, no key.
    for (uri, says) in [
        ("/m/lookup?url=https://example.org/a.jpg".to_owned(), "does not fetch"),
        ("/h/hash?url=https://example.org/a.jpg".to_owned(), "does not fetch"),
        (format!("/m/lookup?signal_type=video_md5&signal={}", h.to_hex()), "No such SignalType 'video_md5'"),
        ("/m/raw_lookup?signal_type=pdq&signal=abc".to_owned(), "signal is not a PDQ hash"),
        ("/m/raw_lookup?signal=abc".to_owned(), "both `signal` and `signal_type`"),
        ("/m/index/status?signal_type=md5".to_owned(), "No such signal type 'md5'"),
    ] {
        let (s, v) = get(&app, &uri).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(says), "{uri}: {v}");
    }
    let (s, _) = app.call(Method::GET, &format!("/m/raw_lookup?{q}"), None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // compare.
    let (s, v) = app
        .call(
            Method::POST,
            "/m/compare",
            Some(&app.lookup),
            Some(json!({ "pdq": [h.to_hex(), near.to_hex()] })),
        )
        .await;
    assert_eq!((s, v), (StatusCode::OK, json!({ "pdq": [true, { "distance": 4 }] })));
    let (_, v) = app
        .call(
            Method::POST,
            "/m/compare",
            Some(&app.lookup),
            Some(json!({ "pdq": [h.to_hex(), flip(&h, 40).to_hex()] })),
        )
        .await;
    assert_eq!(v, json!({ "pdq": [false, { "distance": 40 }] }));
    for bad in
        [json!({ "pdq": [h.to_hex()] }), json!({ "md5": ["a", "b"] }), json!({ "pdq": [h.to_hex(), "zz"] })]
    {
        let (s, v) = app.call(Method::POST, "/m/compare", Some(&app.lookup), Some(bad.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
    }

    // An uploaded photo (HMA's multipart field `photo`): hashed like /v1/hash, looked up by
    // signal type; the derive signal appears once derive entries exist.
    let photo = synth::scene(480, 360, 21);
    let (ct, body) = multipart("photo", &png(&photo));
    let (s, v) = app.upload("/h/hash", Some(&app.lookup), &ct, body.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, ours) = app.upload("/v1/hash?signal=derive", Some(&app.lookup), "image/png", png(&photo)).await;
    assert_eq!(v, json!({ "pdq": ours["pdq"] }));
    let (s, v) = app.upload("/m/lookup", Some(&app.lookup), &ct, body.clone()).await;
    assert_eq!((s, v), (StatusCode::OK, json!({ "pdq": {} })));
    let (wrong_ct, wrong) = multipart("video", &png(&photo));
    let (s, v) = app.upload("/m/lookup", Some(&app.lookup), &wrong_ct, wrong).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("no `photo` field"), "{v}");

    app.create_bank("protected").await;
    let pdq = consentry_pdq::Hash256::from_hex(ours["pdq"].as_str().unwrap()).unwrap();
    let pdq_id = app.add_entry("protected", &pdq, json!({})).await;
    let (s, e) = app
        .call(
            Method::POST,
            "/v1/banks/protected/entries",
            Some(&app.curate),
            Some(json!({ "signal": "derive", "value": ours["derive"]["signature"] })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    let derive_id = e["id"].as_i64().unwrap();
    let idx = app.state.derive_index().clone();
    assert!(within(Duration::from_secs(1), || async { idx.len() == 1 }).await.is_some());
    // (the disabled entry left the index)
    assert!(within(Duration::from_secs(1), || async { app.state.index().len() == 3 }).await.is_some());
    // The photo itself: both signals; a derivative (body region replaced) out of PDQ's reach:
    // derive only, with its keypoint score.
    let (_, v) = app.upload("/m/lookup", Some(&app.lookup), &ct, body).await;
    assert_eq!(v["pdq"], json!({ "protected": [{ "bank_content_id": pdq_id, "distance": "0" }] }), "{v}");
    assert_eq!(v["derive"]["protected"][0]["bank_content_id"], derive_id, "{v}");
    let derived = synth::derivative(&photo, 5);
    let (ct, body) = multipart("photo", &png(&derived));
    let (_, v) = app.upload("/m/lookup?banks=protected", Some(&app.lookup), &ct, body).await;
    assert_eq!(v["pdq"], json!({}), "{v}");
    let m = &v["derive"]["protected"][0];
    assert_eq!((m["bank_content_id"].as_i64(), m["distance"].is_null()), (Some(derive_id), true), "{v}");
    assert!(m["score"].as_u64().unwrap() > 0, "{v}");

    // index/status: both indexes, their sizes; one by `signal_type`.
    let (_, v) = get(&app, "/m/index/status").await;
    assert_eq!((v["pdq"]["present"].as_bool(), v["pdq"]["size"].as_u64()), (Some(true), Some(3)), "{v}");
    assert_eq!(v["derive"]["size"], 1);
    assert!(v["pdq"]["built_to"].as_i64().unwrap() > 1_700_000_000, "{v}");
    let (_, v) = get(&app, "/m/index/status?signal_type=derive").await;
    assert_eq!(v.as_object().unwrap().keys().collect::<Vec<_>>(), ["derive"]);

    // These lookups are counted like any other, under the key's name.
    let (_, v) = app.call(Method::GET, "/v1/stats/matches?by=source", Some(&app.curate), None).await;
    assert!(v["rows"][0]["matches"].as_i64().unwrap() >= 8, "{v}");
}
