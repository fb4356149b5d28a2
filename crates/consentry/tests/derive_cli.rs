//! End-to-end test of `consentry derive`, running the real binary on a
//! synthetic benign image (coloured shapes).

use assert_cmd::Command;
use consentry_derive::Signature;

fn scene_png(w: u32, h: u32, seed: u32) -> Vec<u8> {
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
