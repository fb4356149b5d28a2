//! End-to-end tests of `consentry hash`, running the real binary.

use assert_cmd::Command;
use consentry_pdq::Hash256;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn testdata() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata");
    if p.join("pdq-vectors.tsv").is_file() {
        Some(p.canonicalize().unwrap())
    } else {
        eprintln!("SKIPPED: ../shared/testdata not found beside the project");
        None
    }
}

/// Reference hash and quality by file path relative to pdq-reference/.
fn vectors(dir: &Path) -> HashMap<String, (Hash256, u8)> {
    std::fs::read_to_string(dir.join("pdq-vectors.tsv"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("file\t"))
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].to_string(), (f[4].parse().unwrap(), f[5].parse().unwrap()))
        })
        .collect()
}

fn consentry() -> Command {
    Command::cargo_bin("consentry").unwrap()
}

fn stdout_of(out: &std::process::Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

#[test]
fn hashes_every_reference_image_like_meta_does() {
    let Some(dir) = testdata() else { return };
    let refdir = dir.join("pdq-reference");
    let vectors = vectors(&dir);
    let out = consentry().args(["hash", "--exact", "--min-quality", "0"]).arg(&refdir).output().unwrap();
    assert!(out.status.success(), "stderr: {}", stderr_of(&out));
    let stdout = stdout_of(&out);
    let mut seen = 0;
    for line in stdout.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 3, "TSV row: {line}");
        let hash: Hash256 = f[0].parse().unwrap();
        let quality: u8 = f[1].parse().unwrap();
        let rel = Path::new(f[2]).strip_prefix(&refdir).unwrap().to_str().unwrap().to_string();
        let (want, want_q) = vectors[&rel];
        if want_q >= 80 {
            assert!(hash.distance(&want) <= 10, "{rel}: {} bits from Meta's hash", hash.distance(&want));
            assert!(quality >= 70, "{rel}: quality {quality}, Meta's {want_q}");
        }
        seen += 1;
    }
    assert_eq!(seen, vectors.len(), "every image of the reference set is hashed once");
    let err = stderr_of(&out);
    assert!(err.contains(&format!("{} hashed, 0 below quality 0, 0 failed", vectors.len())), "{err}");
}

#[test]
fn low_quality_hashes_are_reported_unusable_and_left_out() {
    let Some(dir) = testdata() else { return };
    let q3 = dir.join("pdq-reference/reg-test-input/labelme-subset/q0003.jpg");
    let good = dir.join("pdq-reference/bridge-mods/aaa-orig.jpg");
    let out = consentry().arg("hash").arg(&q3).arg(&good).output().unwrap();
    assert!(out.status.success(), "low quality is not a failure");
    let stdout = stdout_of(&out);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains("aaa-orig.jpg"));
    let err = stderr_of(&out);
    assert!(err.contains("q0003.jpg: quality") && err.contains("below 50, hash unusable"), "{err}");
    assert!(err.contains("1 hashed, 1 below quality 50, 0 failed"), "{err}");

    // JSON lines keeps it, marked unusable.
    let out = consentry().args(["hash", "--format", "jsonl"]).arg(&q3).output().unwrap();
    let v: serde_json::Value = serde_json::from_str(stdout_of(&out).trim()).unwrap();
    assert_eq!(v["usable"], false);
    assert!(v["quality"].as_u64().unwrap() < 50);
}

#[test]
fn output_formats_and_dihedral() {
    let Some(dir) = testdata() else { return };
    let img = dir.join("pdq-reference/reg-test-input/dih/bridge-1-original.jpg");
    let rot = dir.join("pdq-reference/reg-test-input/dih/bridge-2-rotate-90.jpg");

    let tsv = stdout_of(&consentry().args(["hash", "--dihedral"]).arg(&img).output().unwrap());
    let f: Vec<&str> = tsv.trim_end().split('\t').collect();
    assert_eq!(f.len(), 11, "hash, quality, 8 dihedral hashes, path: {tsv}");
    assert_eq!(f[0], f[2], "the first dihedral hash is the hash itself");

    let csv = stdout_of(&consentry().args(["hash", "--format", "csv"]).arg(&img).output().unwrap());
    let f: Vec<&str> = csv.trim_end().split(',').collect();
    assert_eq!(f.len(), 3, "{csv}");
    assert_eq!(f[0].len(), 64);
    assert_eq!(f[2], img.to_str().unwrap());

    // The rotated file's hash is close to the original's predicted rot90 hash.
    let out =
        consentry().args(["hash", "--format", "jsonl", "--dihedral"]).arg(&img).arg(&rot).output().unwrap();
    let rows: Vec<serde_json::Value> =
        stdout_of(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2);
    let predicted: Hash256 = rows[0]["dihedral"]["rot90"].as_str().unwrap().parse().unwrap();
    let actual: Hash256 = rows[1]["pdq"].as_str().unwrap().parse().unwrap();
    assert!(predicted.distance(&actual) <= 16, "distance {}", predicted.distance(&actual));
    assert_eq!(rows[0]["format"], "jpeg");
    assert_eq!(rows[0]["width"], 1600);
}

#[test]
fn stdin_gives_the_same_hash_as_the_file() {
    let Some(dir) = testdata() else { return };
    let img = dir.join("pdq-reference/misc-images/c.png");
    let from_file = stdout_of(&consentry().arg("hash").arg(&img).output().unwrap());
    let out = consentry().args(["hash", "-"]).write_stdin(std::fs::read(&img).unwrap()).output().unwrap();
    assert!(out.status.success());
    let from_stdin = stdout_of(&out);
    assert_eq!(from_file.split('\t').next(), from_stdin.split('\t').next());
    assert!(from_stdin.trim_end().ends_with("\t-"));
}

#[test]
fn hostile_files_fail_one_by_one_and_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // A good image, generated here: a gradient PNG.
    let mut good = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut good, 64, 48);
        enc.set_color(png::ColorType::Rgb);
        let mut w = enc.write_header().unwrap();
        let px: Vec<u8> = (0..64 * 48 * 3).map(|i| ((i * 13) % 251) as u8).collect();
        w.write_image_data(&px).unwrap();
    }
    std::fs::write(d.join("a-good.png"), &good).unwrap();
    std::fs::write(d.join("b-empty.jpg"), b"").unwrap();
    std::fs::write(d.join("c-text.png"), b"this is not an image at all\n").unwrap();
    std::fs::write(d.join("d-truncated.png"), &good[..good.len() / 2]).unwrap();
    // A PNG whose header claims 60000 x 60000 pixels (a decompression bomb).
    let mut bomb = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bomb, 60000, 60000);
        enc.set_color(png::ColorType::Rgb);
        let header = enc.write_header().unwrap(); // signature and IHDR, with valid CRCs
        drop(header);
    }
    std::fs::write(d.join("e-bomb.png"), &bomb).unwrap();
    std::fs::write(d.join("notes.txt"), b"not picked up from a directory walk").unwrap();

    let out = consentry().arg("hash").arg(d).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "any failed file gives exit status 1");
    let stdout = stdout_of(&out);
    assert_eq!(stdout.lines().count(), 1, "the good file is still hashed: {stdout}");
    assert!(stdout.contains("a-good.png"));
    let err = stderr_of(&out);
    for name in ["b-empty.jpg", "c-text.png", "d-truncated.png", "e-bomb.png"] {
        assert!(err.lines().any(|l| l.contains(name)), "{name} is named on stderr: {err}");
    }
    assert!(!err.contains("notes.txt"));
    assert!(err.contains("1 hashed, 0 below quality 50, 4 failed"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn missing_files_and_size_limits_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = consentry().arg("hash").arg(tmp.path().join("nope.jpg")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("nope.jpg: cannot open"), "{}", stderr_of(&out));

    let big = tmp.path().join("big.jpg");
    std::fs::write(&big, vec![0u8; 5000]).unwrap();
    let out = consentry().args(["hash", "--max-file-size", "1000"]).arg(&big).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("more than --max-file-size 1000"), "{}", stderr_of(&out));

    let out = consentry().args(["hash", "--min-quality", "101", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "usage errors exit with 2");
    let out = consentry().arg("hash").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "a path is required");
}

#[test]
fn pixel_limit_is_enforced() {
    let Some(dir) = testdata() else { return };
    let img = dir.join("pdq-reference/bridge-mods/aaa-orig.jpg"); // 1600 x 1004
    let out = consentry().args(["hash", "--max-pixels", "1000000"]).arg(&img).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("aaa-orig.jpg"), "{}", stderr_of(&out));
    let out = consentry().args(["hash", "--max-pixels", "2000000"]).arg(&img).output().unwrap();
    assert!(out.status.success());
}

#[test]
fn exif_orientation_is_applied_by_default_and_not_with_exact() {
    let Some(dir) = testdata() else { return };
    let exif = dir.join("pdq-reference/reg-test-input/exif-rotn");
    let run = |args: &[&str], f: &str| -> Vec<Hash256> {
        let out = consentry().arg("hash").args(args).arg(exif.join(f)).output().unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
        let line = stdout_of(&out);
        let fields: Vec<&str> = line.trim_end().split('\t').collect();
        fields[..fields.len() - 1].iter().filter(|x| x.len() == 64).map(|x| x.parse().unwrap()).collect()
    };
    // Orientation 3 shows the stored pixels turned 180°, 6 turned 90° clockwise
    // (PDQ's rot270), 8 turned 90° counter-clockwise (PDQ's rot90).
    for (f, variant) in
        [("exif-rotn-1.jpg", 0), ("exif-rotn-3.jpg", 2), ("exif-rotn-6.jpg", 3), ("exif-rotn-8.jpg", 1)]
    {
        // hash, then the eight dihedral hashes
        let stored = run(&["--exact", "--dihedral"], f)[1..].to_vec();
        let upright = run(&["--exact", "--orient"], f)[0];
        let default = run(&[], f)[0];
        let d = upright.distance(&stored[variant]);
        assert!(d <= 16, "{f}: upright hash is {d} bits from the predicted dihedral hash");
        assert!(default.distance(&upright) <= 16, "{f}: the default (fast) hash is rotated too");
        if variant != 0 {
            assert!(upright.distance(&stored[0]) > 60, "{f}: rotation changes the hash");
        }
    }
}
