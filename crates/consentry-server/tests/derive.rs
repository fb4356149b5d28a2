//! The derive signal end to end through `consentry serve`'s router: a benign synthetic photo is
//! protected with its derivative signature (from `/v1/hash?signal=derive`), a derivative that
//! global PDQ misses (20% cropped off one side, padded, the lower centre replaced with noise) is
//! found by `/v1/lookup/image` with the derive evidence and fires a match webhook, an unrelated
//! image is not, a copy with most of the body area replaced matches through its top band, and disabling the entry or withdrawing a case stops the match within a second.
//! `/v1/lookup/features` finds the same match from query features computed on the client.

use std::time::Duration;

use crate::common::*;
use axum::http::{Method, StatusCode};
use consentry_derive::synth;
use consentry_pdq::Hash256;
use consentry_server::{ServerConfig, WebhookConfig};
use serde_json::{json, Value};

fn png(img: &synth::RgbImage) -> Vec<u8> {
    let i = image::RgbImage::from_raw(img.width, img.height, img.data.clone()).expect("sizes agree");
    png_bytes(&i)
}

fn config() -> ServerConfig {
    ServerConfig {
        // Events are queued in the outbox (checked below); nothing is sent.
        webhooks: WebhookConfig {
            urls: vec!["http://127.0.0.1:9/hook".into()],
            secret: b"derive-test-secret".to_vec(),
            run_sender: false,
            ..WebhookConfig::default()
        },
        ..test_config()
    }
}

async fn hash(app: &TestApp, img: &synth::RgbImage, signal: &str) -> Value {
    let (s, v) = app
        .upload(&format!("/v1/hash?signal={signal}&dihedral=true"), Some(&app.lookup), "image/png", png(img))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

async fn lookup(app: &TestApp, img: &synth::RgbImage) -> Vec<Value> {
    let (s, v) = app.upload("/v1/lookup/image", Some(&app.lookup), "image/png", png(img)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["matches"].as_array().cloned().unwrap_or_default()
}

fn signals(ms: &[Value]) -> Vec<(String, i64)> {
    let mut v: Vec<(String, i64)> = ms
        .iter()
        .map(|m| (m["signal"].as_str().unwrap_or("?").to_owned(), m["entry_id"].as_i64().unwrap()))
        .collect();
    v.sort();
    v
}

async fn run(db: TestDb) {
    let app = TestApp::on(&db, config()).await;
    app.create_bank("protected").await;
    let photo = synth::scene(480, 360, 11);
    let derived = synth::derivative(&photo, 5);
    let unrelated = synth::scene(480, 360, 12);

    // The survivor's side: the signature of her photo (computed here by the server's hash
    // endpoint; `consentry derive` prints the same base64 form).
    let h = hash(&app, &photo, "derive").await;
    let sig = h["derive"]["signature"].as_str().expect("derive signature").to_owned();
    assert!(h["derive"]["keypoints"].as_u64().unwrap() >= 20, "{h}");
    let decoded = consentry_derive::Signature::from_base64(&sig).unwrap();
    assert_eq!(decoded.pdq.to_hex(), h["pdq"].as_str().unwrap(), "the signature's PDQ is the image's");
    assert_eq!(h["derive"]["band_quality"].as_u64(), decoded.band.map(|b| u64::from(b.quality)), "{h}");
    assert!(h["derive"]["band_quality"].as_u64().is_some_and(|q| q >= 50), "a textured top band: {h}");

    // The derivative is out of PDQ's reach (every dihedral variant).
    let dh = hash(&app, &derived, "pdq").await;
    assert!(dh.get("derive").is_none());
    let d = dh["dihedral"]
        .as_object()
        .unwrap()
        .values()
        .map(|x| Hash256::from_hex(x.as_str().unwrap()).unwrap().distance(&decoded.pdq))
        .min()
        .unwrap();
    assert!(d > 31, "PDQ distance {d}: the derivative would not test the derive path");

    // Nothing is protected yet: no match, and no derive features computed.
    assert!(lookup(&app, &derived).await.is_empty());
    // The client-side path: query features computed here, never the image, sent to the server.
    let features = consentry_derive::Extractor::new().query(&derived.pixels()).to_base64();
    let lookup_features = |f: String| {
        let app = &app;
        async move {
            app.call(Method::POST, "/v1/lookup/features", Some(&app.lookup), Some(json!({ "features": f })))
                .await
        }
    };
    let (s, v) = lookup_features(features.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["derive_entries"].as_u64(), v["matches"].as_array().map(Vec::len)),
        (Some(0), Some(0)),
        "{v}"
    );
    assert_eq!(v["query"]["hash"].as_str().unwrap().len(), 64, "{v}");

    // Protect the photo with both signals: a derive entry and a PDQ entry.
    let (s, e) = app
        .call(
            Method::POST,
            "/v1/banks/protected/entries",
            Some(&app.curate),
            Some(json!({ "signal": "derive", "value": sig, "metadata": { "ref": "photo-1" } })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    assert_eq!(e["signal"], "derive");
    assert_eq!(e["hash"], sig.as_str());
    let derive_id = e["id"].as_i64().unwrap();
    let pdq_id = app.add_entry("protected", &decoded.pdq, json!({ "ref": "photo-1" })).await;
    let idx = app.state.derive_index().clone();
    assert!(within(Duration::from_secs(1), || async { idx.len() == 1 }).await.is_some(), "derive mirror");
    assert!(within(Duration::from_secs(1), || async { app.state.index().len() == 1 }).await.is_some());

    // The derivative matches its derive entry only, with the keypoint evidence.
    let ms = lookup(&app, &derived).await;
    assert_eq!(signals(&ms), vec![("derive".to_owned(), derive_id)], "{ms:?}");
    let m = &ms[0];
    assert_eq!(m["bank"], "protected");
    assert_eq!(m["metadata"], json!({ "ref": "photo-1" }));
    assert!(m["distance"].is_null(), "global PDQ did not match: {m}");
    let rule = consentry_derive::Params::default();
    assert!(
        m["inliers"].as_u64().unwrap() >= rule.min_inliers as u64
            && m["score"].as_u64().unwrap() >= u64::from(rule.min_score),
        "{m}"
    );
    // A match webhook was queued, saying it is a derive match.
    let w = app.state.store().get_webhook(1).await.expect("match event queued");
    let wm = &w.payload["results"][0]["matches"][0];
    assert_eq!(
        (wm["signal"].as_str(), wm["entry_id"].as_i64()),
        (Some("derive"), Some(derive_id)),
        "{}",
        w.payload
    );

    // The photo itself matches both entries: PDQ (distance 0) and derive (PDQ path, distance 0).
    let ms = lookup(&app, &photo).await;
    assert_eq!(signals(&ms), vec![("derive".to_owned(), derive_id), ("pdq".to_owned(), pdq_id)], "{ms:?}");
    assert!(ms.iter().all(|m| m["distance"] == 0), "{ms:?}");

    // Most of the body area replaced (70 % of the image, up to 80 % of its height from the
    // bottom) and nothing else changed: the top band matches, and says so.
    let undressed = synth::replace_body(&photo, &unrelated, 0.7);
    let ms = lookup(&app, &undressed).await;
    assert_eq!(signals(&ms), vec![("derive".to_owned(), derive_id)], "{ms:?}");
    assert!(ms[0]["distance"].is_null(), "global PDQ did not match: {ms:?}");
    assert!(ms[0]["band_distance"].as_u64().is_some_and(|d| d <= 31), "{ms:?}");
    assert!(m["band_distance"].is_null(), "the cropped and padded derivative's band differs: {m}");
    assert_eq!(m["mirrored"], false, "{m}");

    // The derivative mirrored left to right: found through the query's mirrored keypoints, and
    // the reply says so.
    let ms = lookup(&app, &synth::mirror(&derived)).await;
    assert_eq!(signals(&ms), vec![("derive".to_owned(), derive_id)], "{ms:?}");
    assert!(ms[0]["distance"].is_null() && ms[0]["band_distance"].is_null(), "{ms:?}");
    assert_eq!(ms[0]["mirrored"], true, "{ms:?}");

    // The same match from the client's query features, with a webhook of its own.
    let (s, v) = lookup_features(features.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["derive_entries"], 1, "{v}");
    let fm = v["matches"].as_array().unwrap();
    assert_eq!(signals(fm), vec![("derive".to_owned(), derive_id)], "{v}");
    assert_eq!(
        (fm[0]["inliers"].clone(), fm[0]["score"].clone()),
        (m["inliers"].clone(), m["score"].clone())
    );
    assert!(app.state.store().get_webhook(2).await.is_ok(), "second match event queued");
    // Bad features, or none, are refused with a clear message; no key: 401.
    for bad in ["AQID", "not base64!", &sig] {
        let (s, v) = lookup_features(bad.to_owned()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains("not derivative query features"), "{v}");
    }
    let (s, _) =
        app.call(Method::POST, "/v1/lookup/features", None, Some(json!({ "features": features }))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // An unrelated benign image matches nothing.
    assert!(lookup(&app, &unrelated).await.is_empty());

    // The match counts so far, by signal and by entry: the derivative, the photo, the undressed
    // copy, the mirrored derivative and the client's features matched the derive entry; the
    // photo also the PDQ entry.
    let (s, v) = app.call(Method::GET, "/v1/stats/matches?by=signal", Some(&app.curate), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let rows: Vec<(&str, i64)> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["signal"].as_str().unwrap(), r["matches"].as_i64().unwrap()))
        .collect();
    assert_eq!(rows, vec![("derive", 5), ("pdq", 1)], "{v}");
    let (_, v) = app.call(Method::GET, "/v1/stats/matches?by=entry", Some(&app.curate), None).await;
    assert_eq!(v["rows"][0]["entry_id"].as_i64(), Some(derive_id), "{v}");
    assert_eq!(v["rows"][0]["bank"], "protected", "{v}");

    // Bad signatures are refused with a clear message.
    let (s, v) = app
        .call(
            Method::POST,
            "/v1/banks/protected/entries",
            Some(&app.curate),
            Some(json!({ "signal": "derive", "hash": "AQID" })),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("not a derivative signature"), "{v}");

    // Disabled: the mirror drops it within a second, and the derivative no longer matches.
    let (s, v) =
        app.call(Method::POST, &format!("/v1/entries/{derive_id}/disable"), Some(&app.curate), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(
        within(Duration::from_secs(1), || async { idx.is_empty() }).await.is_some(),
        "disable reaches the mirror"
    );
    assert!(lookup(&app, &derived).await.is_empty());

    // A survivor's case with the derive signature: matches, then withdrawn, stops within 1 s.
    let (s, c) = app
        .call(
            Method::POST,
            "/v1/cases",
            None,
            Some(json!({ "hashes": [{ "hash": sig, "signal": "derive" }] })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    assert!(within(Duration::from_secs(1), || async { idx.len() == 1 }).await.is_some());
    let ms = lookup(&app, &derived).await;
    assert_eq!(ms.len(), 1, "{ms:?}");
    assert_eq!((ms[0]["signal"].as_str(), ms[0]["bank"].as_str()), (Some("derive"), Some("survivors")));
    let number = c["case_number"].as_str().unwrap();
    let (s, v) = app
        .call(Method::POST, &format!("/v1/cases/{number}/withdraw"), None, Some(json!({ "pin": c["pin"] })))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(
        within(Duration::from_secs(1), || async { idx.is_empty() }).await.is_some(),
        "withdraw reaches the mirror"
    );
    assert!(lookup(&app, &derived).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derive_signal_end_to_end_sqlite() {
    run(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derive_signal_end_to_end_postgres() {
    run(TestDb::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derive_entries_import_and_export_as_json_lines() {
    let db = TestDb::sqlite();
    let app = TestApp::on(&db, test_config()).await;
    app.create_bank("imported").await;
    let mut ex = consentry_derive::Extractor::new();
    let sig = ex.signature(&synth::scene(320, 240, 3).pixels()).to_base64();
    let body = format!(
        "{}\n{}\n{}\n",
        json!({ "signal": "derive", "value": sig, "metadata": { "n": 1 } }),
        json!({ "signal_type": "derive", "hash": "not base64!" }),
        json!({ "hash": random_pdq().to_hex() }),
    );
    let (s, v) = app
        .upload(
            "/v1/banks/imported/import?format=jsonl",
            Some(&app.curate),
            "application/x-ndjson",
            body.into_bytes(),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["added"], 2, "{v}");
    assert_eq!(v["rejected"][0]["line"], 2, "{v}");
    assert!(v["rejected"][0]["reason"].as_str().unwrap().contains("derivative signature"), "{v}");
    let idx = app.state.derive_index().clone();
    assert!(within(Duration::from_secs(1), || async { idx.len() == 1 }).await.is_some());
    // Export as HMA lines and as JSON lines, and re-import into another bank.
    for format in ["hma", "jsonl", "csv"] {
        let (s, text) = app
            .call(Method::GET, &format!("/v1/banks/imported/export?format={format}"), Some(&app.curate), None)
            .await;
        assert_eq!(s, StatusCode::OK);
        let text = text.as_str().unwrap().to_owned();
        assert!(text.contains(&sig), "{format}: {text}");
        let bank = format!("again-{format}");
        app.create_bank(&bank).await;
        let (s, v) = app
            .upload(
                &format!("/v1/banks/{bank}/import?format={format}"),
                Some(&app.curate),
                "text/plain",
                text.into_bytes(),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["added"], 2, "{format}: {v}");
    }
    assert!(within(Duration::from_secs(1), || async { idx.len() == 4 }).await.is_some());
}

/// `ServerConfig::derive_params` reaches the derivative index: six keypoints with flat or ramp
/// descriptors (what a smooth sky gives in any photo) match their copy when no key is stopped, and
/// make no correspondence when the ramp keys are stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derive_stop_keys_and_mirrored_settings_reach_the_index() {
    let keypoints = synth::ramp_keypoints();
    let sig = consentry_derive::Signature {
        pdq: random_pdq(),
        quality: 90,
        keypoints: keypoints.clone(),
        band: None,
        source_side: 0,
        grid: None,
    };
    let q = consentry_derive::QueryFeatures {
        pdq: [random_pdq(); 8],
        quality: 90,
        keypoints,
        mirrored: Vec::new(),
        band: None,
        trimmed_band: None,
        levels_per_octave: consentry_derive::QUERY_LEVELS_PER_OCTAVE,
        source_side: 0,
        grid: None,
    };
    // the same keypoints offered as the query's mirrored ones
    let qm =
        consentry_derive::QueryFeatures { keypoints: Vec::new(), mirrored: q.keypoints.clone(), ..q.clone() };
    use consentry_derive::StopKeys::{None as NoStop, Ramp};
    for (stop_keys, mirrored, q, want) in
        [(NoStop, true, &q, 1), (Ramp, true, &q, 0), (NoStop, true, &qm, 1), (NoStop, false, &qm, 0)]
    {
        let db = TestDb::sqlite();
        let derive_params =
            consentry_derive::Params { stop_keys, mirrored, ..consentry_derive::Params::default() };
        let app = TestApp::on(&db, ServerConfig { derive_params, ..test_config() }).await;
        app.create_bank("b").await;
        let (s, e) = app
            .call(
                Method::POST,
                "/v1/banks/b/entries",
                Some(&app.curate),
                Some(json!({ "signal": "derive", "value": sig.to_base64() })),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{e}");
        let idx = app.state.derive_index().clone();
        assert!(within(Duration::from_secs(1), || async { idx.len() == 1 }).await.is_some());
        let (s, v) = app
            .call(
                Method::POST,
                "/v1/lookup/features",
                Some(&app.lookup),
                Some(json!({ "features": q.to_base64() })),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(
            v["matches"].as_array().map(Vec::len),
            Some(want),
            "{stop_keys:?}, mirrored {mirrored}: {v}"
        );
        if want == 1 {
            assert_eq!(v["matches"][0]["mirrored"], q.keypoints.is_empty(), "{v}");
        }
    }
}
