//! The Markdown report of a run.

use crate::protocol::{RunResult, Score};
use std::fmt::Write;

fn fm_cell(s: &Score, n_protected: usize) -> String {
    let pairs = s.queries as f64 * n_protected as f64;
    let excl = if s.false_matches_excl == 0 {
        "0".to_string()
    } else {
        format!("{} ({:.1e})", s.false_matches_excl, s.false_matches_excl as f64 / pairs)
    };
    format!("{excl} / {}", s.false_matches)
}

/// The results table with a header describing the run. `command` is printed as the reproducing command.
pub fn markdown(r: &RunResult, command: &str) -> String {
    let np = r.split.protected.len();
    let nm = r.matchers.len();
    let mut out = String::new();
    let queries = r.outcomes.len();
    let pq = r.outcomes.iter().filter(|o| o.protected).count();
    let _ = writeln!(out, "Command: `{command}`\n");
    let _ = writeln!(
        out,
        "{} protected originals, {} distractors; {} transforms; {} queries ({} from protected images, {} from distractors); \
         {:.3e} query × protected pairs. {} threads, {:.0} s wall.\n",
        np,
        r.split.distractors.len(),
        r.transforms.len(),
        queries,
        pq,
        queries - pq,
        queries as f64 * np as f64,
        r.threads,
        r.wall_s
    );
    let mean = |f: &dyn Fn(&crate::protocol::Outcome) -> f64| {
        r.outcomes.iter().map(f).sum::<f64>() / queries.max(1) as f64
    };
    let _ = writeln!(
        out,
        "Per query, outside the matchers: making it (transform + recompression) {:.1} ms, decoding it {:.1} ms; mean size {:.0} KB.\n",
        mean(&|o| o.make_ms),
        mean(&|o| o.decode_ms),
        mean(&|o| o.query_bytes as f64) / 1024.0
    );
    let _ = writeln!(
        out,
        "Recall: share of queries made from a protected image whose match set contains that image. \
         False: matched (query, protected) pairs from different source images, over all queries of the row \
         (protected and distractor), written `A (rate) / B`: A excludes pairs of images that are near-duplicates \
         within the corpus itself (listed below), with its rate over the row's query × protected pairs; B counts all. \
         ms: the matcher's own time per query (hashing + lookup, decoding excluded). \
         PDQ dist. median: median PDQ distance between a protected image's query and its full-resolution original.\n"
    );
    // Header.
    let mut h1 = String::from("| family | transform@strength | PDQ dist. median |");
    let mut h2 = String::from("|---|---|---:|");
    for m in &r.matchers {
        let _ = write!(h1, " {m} recall % | {m} false | {m} ms |");
        h2.push_str("---:|---:|---:|");
    }
    let _ = writeln!(out, "{h1}\n{h2}");
    let mut total = vec![Score::default(); nm];
    let mut last_family = String::new();
    for (ti, (t, row)) in r.transforms.iter().zip(&r.scores).enumerate() {
        let fam = if t.family == last_family { String::new() } else { t.family.clone() };
        last_family = t.family.clone();
        let mut d: Vec<u32> =
            r.outcomes.iter().filter(|o| o.transform == ti).filter_map(|o| o.pdq_distance).collect();
        d.sort_unstable();
        let med = d.get(d.len() / 2).map_or("-".to_string(), u32::to_string);
        let mut line = format!("| {} | {} | {} |", fam, t.label(), med);
        for (m, s) in row.iter().enumerate() {
            total[m].add(s);
            let _ =
                write!(line, " {:.1} | {} | {:.2} |", 100.0 * s.recall(), fm_cell(s, np), s.ms_per_query());
        }
        let _ = writeln!(out, "{line}");
    }
    let mut line = String::from("| **all** | all transforms | |");
    for s in &total {
        let _ = write!(line, " {:.1} | {} | {:.2} |", 100.0 * s.recall(), fm_cell(s, np), s.ms_per_query());
    }
    let _ = writeln!(out, "{line}\n");

    let _ = writeln!(
        out,
        "| matcher | false matches excl. corpus near-duplicates | rate per query × protected pair | \
         false matches, all | rate | index ms / image | stored bytes / image |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    for (m, name) in r.matchers.iter().enumerate() {
        let pairs = total[m].queries as f64 * np as f64;
        let _ = writeln!(
            out,
            "| {name} | {} | {:.2e} | {} | {:.2e} | {:.2} | {} |",
            total[m].false_matches_excl,
            total[m].false_matches_excl as f64 / pairs.max(1.0),
            total[m].false_matches,
            total[m].false_match_rate(np),
            r.index_ms[m],
            r.stored_bytes[m]
        );
    }
    let _ = writeln!(out);
    if !r.near_duplicates.is_empty() {
        let _ = writeln!(
            out,
            "Near-duplicates in the corpus (protected image within PDQ distance 31 of another used image, untransformed): {}. \
             Matches between them are left out of the first false-match count, kept in the second.\n",
            r.near_duplicates.iter().map(|(a, b, d)| format!("{a}~{b} ({d})")).collect::<Vec<_>>().join(", ")
        );
    } else {
        let _ = writeln!(out, "No near-duplicates in the corpus (no protected image within PDQ distance 31 of another used image).\n");
    }
    if !r.undecodable.is_empty() {
        let _ = writeln!(out, "Skipped (undecodable): {}\n", r.undecodable.join(", "));
    }
    out
}
