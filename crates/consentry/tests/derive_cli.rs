//! End-to-end test of `consentry derive`, running the real binary on a
//! synthetic benign image (coloured shapes).

use assert_cmd::Command;
use consentry_derive::Signature;

pub(crate) fn scene_png(w: u32, h: u32, seed: u32) -> Vec<u8> {
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        s
    };
    let mut px = vec![0u8; (w * h * 3) as usize];
    for y in 0..h {
        for x in 0..w {
            let i = ((y * w + x) * 3) as usize;
            px[i..i + 3].copy_from_slice(&[(x * 255 / w) as u8, (y * 255 / h) as u8, 90]);
        }
    }
    for _ in 0..50 {
        let (cx, cy, r) = (next() % w, next() % h, 6 + next() % (w / 8));
        let c = [next() as u8, next() as u8, next() as u8];
        for y in cy.saturating_sub(r)..(cy + r).min(h) {
            for x in cx.saturating_sub(r)..(cx + r).min(w) {
                let i = ((y * w + x) * 3) as usize;
                px[i..i + 3].copy_from_slice(&c);
            }
        }
    }
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header().unwrap().write_image_data(&px).unwrap();
    out
}

#[test]
fn derive_prints_a_decodable_signature_whose_pdq_is_the_hash_commands() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("scene.png");
    std::fs::write(&f, scene_png(480, 360, 3)).unwrap();
    let out = Command::cargo_bin("consentry").unwrap().arg("derive").arg(&f).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let fields: Vec<&str> = text.trim_end().split('\t').collect();
    assert_eq!(fields.len(), 5, "{text}");
    let sig = Signature::from_base64(fields[0]).unwrap();
    assert_eq!(sig.pdq.to_hex(), fields[1]);
    assert_eq!(sig.quality.to_string(), fields[2]);
    assert_eq!(sig.keypoints.len().to_string(), fields[3]);
    assert!(sig.keypoints.len() >= 20, "a scene of shapes has corners: {}", sig.keypoints.len());
    assert!(sig.to_bytes().len() <= consentry_derive::MAX_SIGNATURE_BYTES);
    assert_eq!(fields[4], f.display().to_string());
    // The PDQ part is the same hash `consentry hash` prints.
    let h = Command::cargo_bin("consentry").unwrap().arg("hash").arg(&f).output().unwrap();
    assert!(h.status.success());
    assert_eq!(String::from_utf8(h.stdout).unwrap().split('\t').next().unwrap(), fields[1]);

    // A missing file and a non-image fail with exit status 1; the good file is still printed.
    let bad = dir.path().join("bad.png");
    std::fs::write(&bad, b"not an image").unwrap();
    let out = Command::cargo_bin("consentry")
        .unwrap()
        .arg("derive")
        .arg(dir.path().join("missing.png"))
        .arg(&bad)
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missing.png") && stderr.contains("bad.png"), "{stderr}");
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_signal_derive_lines_import_into_a_bank_as_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = dir.path().join("photos");
    std::fs::create_dir(&imgs).unwrap();
    std::fs::write(imgs.join("a.png"), scene_png(480, 360, 3)).unwrap();
    std::fs::write(imgs.join("b.png"), scene_png(400, 300, 4)).unwrap();
    let run = |format: &str| {
        let out = Command::cargo_bin("consentry")
            .unwrap()
            .args(["hash", "--signal", "derive", "-q", "-f", format])
            .arg(&imgs)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let jsonl = run("jsonl");
    let lines: Vec<serde_json::Value> = jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{jsonl}");
    for l in &lines {
        assert_eq!(l["signal"], "derive");
        let sig = Signature::from_base64(l["hash"].as_str().unwrap()).unwrap();
        assert_eq!(l["pdq"].as_str().unwrap(), sig.pdq.to_hex());
        assert!(sig.keypoints.len() >= 20);
        assert_eq!(l["band_quality"].as_u64(), sig.band.map(|b| u64::from(b.quality)), "{l}");
        assert!(sig.band.is_some(), "new signatures carry the top band");
    }
    // The TSV layout is `consentry derive`'s; its PDQ column is `consentry hash`'s.
    let tsv = run("tsv");
    let first: Vec<&str> = tsv.lines().next().unwrap().split('\t').collect();
    assert_eq!(first.len(), 5, "{tsv}");
    let h = Command::cargo_bin("consentry").unwrap().arg("hash").arg(imgs.join("a.png")).output().unwrap();
    assert_eq!(String::from_utf8(h.stdout).unwrap().split('\t').next().unwrap(), first[1]);
    let csv = run("csv");
    assert!(csv.starts_with("hash,quality,path,signal_type\n"), "{csv}");
    assert!(
        Command::cargo_bin("consentry")
            .unwrap()
            .args(["hash", "--signal", "derive", "--dihedral"])
            .arg(&imgs)
            .output()
            .unwrap()
            .status
            .code()
            != Some(0)
    );

    // Both outputs import into a bank unchanged.
    let store = consentry_store::Store::open_data_dir(dir.path().join("data")).await.unwrap();
    let key = store
        .create_api_key(&consentry_store::Actor::system(), "t", &[consentry_store::Scope::Admin])
        .await
        .unwrap()
        .secret;
    let state =
        consentry_server::AppState::start(store, consentry_server::ServerConfig::default()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(consentry_server::serve(listener, state.clone(), std::future::pending()));
    let http = reqwest::Client::new();
    for (bank, format, body) in [("j", "jsonl", jsonl), ("c", "csv", csv)] {
        let r =
            http.post(format!("{url}/v1/banks")).bearer_auth(&key).json(&serde_json::json!({ "name": bank }));
        assert!(r.send().await.unwrap().status().is_success());
        let r = http
            .post(format!("{url}/v1/banks/{bank}/import?format={format}"))
            .bearer_auth(&key)
            .body(body)
            .send()
            .await
            .unwrap();
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["added"], 2, "{format}: {v}");
    }
    let start = std::time::Instant::now();
    while state.derive_index().len() < 4 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(2),
            "imported signatures reach the derive index"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
