//! End-to-end tests of `consentry match`.

use assert_cmd::Command;
use consentry_pdq::Hash256;
use predicates::prelude::*;
use std::io::Write;

fn bin() -> Command {
    Command::cargo_bin("consentry").unwrap()
}

/// Deterministic pseudo-random hashes with about 128 one bits (not degenerate).
fn hashes(seed: u64, n: usize) -> Vec<Hash256> {
    let mut s = seed;
    let mut next = move || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (0..n).map(|_| Hash256::from_words([next(), next(), next(), next()])).collect()
}

fn flipped(h: &Hash256, bits: &[u32]) -> Hash256 {
    let mut o = *h;
    for &b in bits {
        o.flip_bit(b);
    }
    o
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let p = dir.path().join(name);
    std::fs::File::create(&p).unwrap().write_all(text.as_bytes()).unwrap();
    p.to_string_lossy().into_owned()
}

/// Parsed output rows: (query, query_place, matched, distance, against_line, against_label).
fn rows(stdout: &[u8]) -> Vec<(String, String, String, u32, usize, String)> {
    String::from_utf8(stdout.to_vec())
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 6, "bad output line {l:?}");
            (f[0].into(), f[1].into(), f[2].into(), f[3].parse().unwrap(), f[4].parse().unwrap(), f[5].into())
        })
        .collect()
}

#[test]
fn tsv_against_plain_queries_reports_every_match() {
    let dir = tempfile::tempdir().unwrap();
    let h = hashes(1, 4);
    let against = format!(
        "# protected hashes\nhash\tquality\tpath\n{}\t100\t/img/a.jpg\n{}\t90\t/img/b.jpg\n\n{}\t80\t/img/c.jpg\n",
        h[0], h[1], h[2]
    );
    let a = write(&dir, "against.tsv", &against);
    let q_near = flipped(&h[1], &[0, 17, 200]); // distance 3 from b
    let q = write(&dir, "q.txt", &format!("{q_near}\n{}\n", h[3]));
    let out = bin().args(["match", "--against", &a, &q]).assert().success().get_output().stdout.clone();
    let r = rows(&out);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].0, q_near.to_hex());
    assert!(r[0].1.ends_with("q.txt:1"));
    assert_eq!(r[0].2, h[1].to_hex());
    assert_eq!(r[0].3, 3);
    assert_eq!(r[0].4, 4); // line 4 of the against file
    assert_eq!(r[0].5, "/img/b.jpg");

    // radius 2 excludes it: exit status 1, no output
    bin().args(["match", "--against", &a, "--radius", "2", &q]).assert().code(1).stdout("");
}

#[test]
fn matches_agree_with_brute_force_on_a_larger_list() {
    let dir = tempfile::tempdir().unwrap();
    let base = hashes(2, 6000);
    let against: String = base.iter().enumerate().map(|(i, h)| format!("{h},0.9,item{i}\n")).collect();
    let a = write(&dir, "against.csv", &format!("hash,quality,path\n{against}"));
    let mut queries = Vec::new();
    for i in 0..40 {
        let bits: Vec<u32> = (0..(i % 40) as u32).map(|k| (k * 37 + i as u32) % 256).collect();
        let mut bits = bits;
        bits.sort();
        bits.dedup();
        queries.push(flipped(&base[i * 150], &bits));
    }
    queries.extend(hashes(3, 20));
    let qtext: String = queries.iter().map(|q| format!("{q}\n")).collect();
    let out = bin()
        .args(["match", "-a", &a, "-"])
        .write_stdin(qtext)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let got: Vec<(String, String, u32, usize)> =
        rows(&out).into_iter().map(|r| (r.0, r.2, r.3, r.4)).collect();
    let mut want = Vec::new();
    for q in &queries {
        let mut m: Vec<(u32, usize)> = base
            .iter()
            .enumerate()
            .filter(|(_, h)| h.distance(q) <= 31)
            .map(|(i, h)| (h.distance(q), i))
            .collect();
        m.sort();
        for (d, i) in m {
            want.push((q.to_hex(), base[i].to_hex(), d, i + 2));
        }
    }
    assert!(want.len() >= 30);
    assert_eq!(got, want);
}

#[test]
fn malformed_lines_are_errors_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let h = hashes(4, 2);
    let a = write(&dir, "bad.txt", &format!("{}\n{}\nnot-a-hash\n", h[0], h[1]));
    bin()
        .args(["match", "--against", &a, &h[0].to_hex()])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("bad.txt:3"));
    let a = write(&dir, "short.txt", &format!("{}\n{}\n", h[0], &h[1].to_hex()[..60]));
    bin()
        .args(["match", "--against", &a, &h[0].to_hex()])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("short.txt:2"));
    bin().args(["match", "--against", "/nonexistent/list", &h[0].to_hex()]).assert().code(2);
    bin().args(["match", "--against", &a, "nonexistent-query-file"]).assert().code(2);
}

#[test]
fn degenerate_hashes_are_skipped_unless_kept() {
    let dir = tempfile::tempdir().unwrap();
    let h = hashes(5, 1);
    let zero = Hash256::ZERO.to_hex();
    let a = write(&dir, "a.txt", &format!("{zero}\n{}\n", h[0]));
    let near_zero = flipped(&Hash256::ZERO, &[1, 2, 3]).to_hex();
    bin()
        .args(["match", "--against", &a, &near_zero])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("a.txt:1").and(predicate::str::contains("degenerate")));
    let out = bin()
        .args(["match", "--against", &a, "--keep-degenerate", &near_zero])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let r = rows(&out);
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].2.as_str(), r[0].3, r[0].4), (zero.as_str(), 3, 1));
}

#[test]
fn dihedral_queries_report_each_entry_once() {
    let dir = tempfile::tempdir().unwrap();
    let h = hashes(6, 10);
    let a = write(&dir, "a.txt", &h.iter().map(|x| format!("{x}\n")).collect::<String>());
    // the 8 "variants": two near entry 3 (distances 5 and 2), one near entry 7, five unrelated
    let mut variants =
        vec![flipped(&h[3], &[1, 2, 3, 4, 5]), flipped(&h[3], &[9, 10]), flipped(&h[7], &[100])];
    variants.extend(hashes(7, 5));
    let list = variants.iter().map(|v| v.to_hex()).collect::<Vec<_>>().join(",");
    let q = write(&dir, "q.csv", &format!("\"{list}\",100,photo.jpg\n"));
    let out = bin()
        .args(["match", "--against", &a, "--dihedral", &q])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let r: Vec<(String, u32, usize)> = rows(&out).into_iter().map(|r| (r.2, r.3, r.4)).collect();
    assert_eq!(r, vec![(h[7].to_hex(), 1, 8), (h[3].to_hex(), 2, 4)]);
}

#[test]
fn header_option_and_stdin_against() {
    let h = hashes(8, 3);
    let text: String = h.iter().map(|x| format!("{x}\n")).collect();
    bin()
        .args(["match", "--against", "-", "--header", &h[2].to_hex()])
        .write_stdin(text)
        .assert()
        .success()
        .stdout(predicate::str::starts_with("query\tquery_place\tmatched_hash\tdistance"))
        .stdout(predicate::str::contains(format!("{}\t0\t3\t", h[2])));
}
