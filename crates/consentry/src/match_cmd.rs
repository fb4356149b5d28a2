//! `consentry match`: match hash lists against a hash list, offline.
//!
//! Hash lists are text, one hash per line: plain hex, or TSV/CSV whose first
//! field is a 64-hex-digit hash (the output of `consentry hash`:
//! `hash<TAB>quality<TAB>path`, or CSV `hash,quality,path`). Empty lines and
//! lines starting with `#` are skipped, and so is a header line (a first line
//! whose first field is a word such as `hash` or `pdq`). Any other line that
//! does not start with a hash is an error naming `file:line`. The label of an
//! entry is the last field of its line (e.g. the path), empty for plain hex.
//!
//! Output (TSV, one line per match, sorted by distance within each query):
//! `query  query_place  matched_hash  distance  against_line  against_label`
//! (`query_place` is `file:line` of the query, or the literal hash argument;
//! with `--dihedral`, `query` is the first hash of the line).
//!
//! Exit status: 0 if anything matched, 1 if nothing did, 2 on error.

use anyhow::{bail, Context, Result};
use consentry_index::{is_degenerate, DegeneratePolicy, Hash256, Index, IndexConfig};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct MatchArgs {
    /// The hash list to match against (protected hashes); `-` for stdin.
    #[arg(long, short = 'a', value_name = "HASHFILE")]
    against: PathBuf,

    /// Query hash lists (`-` for stdin) or literal 64-hex-digit hashes. Default: stdin.
    #[arg(value_name = "QUERY")]
    queries: Vec<String>,

    /// Largest Hamming distance that counts as a match (PDQ's usual threshold is 31).
    #[arg(long, short = 'r', default_value_t = consentry_index::DEFAULT_RADIUS,
          value_parser = clap::value_parser!(u32).range(0..=256))]
    radius: u32,

    /// Query lines carry the 8 dihedral hashes of an image as a comma-separated first
    /// field (quoted in CSV); each matched entry is reported once, with its smallest distance.
    #[arg(long)]
    dihedral: bool,

    /// Also index and query degenerate hashes (all-zero, all-ones, fewer than 32 or
    /// more than 224 one bits). By default they are skipped with a warning.
    #[arg(long)]
    keep_degenerate: bool,

    /// Print a header line first.
    #[arg(long)]
    header: bool,
}

/// One parsed line of a hash list.
#[derive(Debug)]
struct Line {
    hashes: Vec<Hash256>,
    /// `file:line`
    place: String,
    /// line number (0 for a literal hash argument)
    line: usize,
    label: String,
}

fn read_source(path: &str) -> Result<Box<dyn BufRead>> {
    if path == "-" {
        Ok(Box::new(std::io::BufReader::new(std::io::stdin())))
    } else {
        let f = std::fs::File::open(path).with_context(|| format!("cannot open {path}"))?;
        Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, f)))
    }
}

/// Splits a line into fields: TSV if it has a tab, else CSV (double quotes group).
fn fields(line: &str) -> Vec<String> {
    if line.contains('\t') {
        return line.split('\t').map(|s| s.trim().to_string()).collect();
    }
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur).trim().to_string()),
            _ => cur.push(c),
        }
    }
    out.push(cur.trim().to_string());
    out
}

fn parse_list(path: &str, dihedral: bool) -> Result<Vec<Line>> {
    let name = if path == "-" { "<stdin>" } else { path };
    let reader = read_source(path)?;
    let mut out = Vec::new();
    let mut seen_data = false;
    for (i, line) in reader.lines().enumerate() {
        let lineno = i + 1;
        let line = line.with_context(|| format!("{name}:{lineno}: cannot read"))?;
        let line = line.trim_start_matches('\u{feff}').trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f = fields(line);
        let first = &f[0];
        let parts: Vec<&str> =
            if dihedral { first.split(',').map(str::trim).collect() } else { vec![first.as_str()] };
        let parsed: Result<Vec<Hash256>, _> = parts.iter().map(|p| Hash256::from_hex(p)).collect();
        match parsed {
            Ok(hashes) => {
                seen_data = true;
                let label = if f.len() > 1 { f[f.len() - 1].clone() } else { String::new() };
                out.push(Line { hashes, place: format!("{name}:{lineno}"), line: lineno, label });
            }
            Err(e) => {
                let is_header =
                    !seen_data && first.chars().all(|c| c.is_ascii_alphabetic() || c == '_' || c == ' ');
                if !is_header {
                    bail!("{name}:{lineno}: not a hash list line ({e}): {}", truncate(line));
                }
            }
        }
    }
    Ok(out)
}

fn truncate(s: &str) -> String {
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s.to_string()
    }
}

pub fn run(args: MatchArgs) -> Result<ExitCode> {
    let against_path = args.against.to_string_lossy().into_owned();
    let stdin_queries = args.queries.is_empty() || args.queries.iter().any(|q| q == "-");
    if against_path == "-" && stdin_queries {
        bail!("--against - and queries from stdin cannot both read stdin");
    }
    let against = parse_list(&against_path, false)?;
    let policy = if args.keep_degenerate { DegeneratePolicy::Accept } else { DegeneratePolicy::Reject };
    let mut entries = Vec::with_capacity(against.len());
    for (i, l) in against.iter().enumerate() {
        let h = l.hashes[0];
        if policy == DegeneratePolicy::Reject && is_degenerate(&h) {
            eprintln!(
                "consentry: warning: {}: degenerate hash {h} skipped (use --keep-degenerate to keep it)",
                l.place
            );
            continue;
        }
        entries.push((i as u64, h));
    }
    let index = Index::build(entries, IndexConfig { degenerate: policy })?;

    // Queries: files, stdin, or literal hashes.
    let mut queries: Vec<Line> = Vec::new();
    let sources: Vec<String> =
        if args.queries.is_empty() { vec!["-".to_string()] } else { args.queries.clone() };
    for q in &sources {
        let is_file = q == "-" || std::path::Path::new(q).exists();
        if !is_file {
            if let Ok(h) = Hash256::from_hex(q) {
                queries.push(Line { hashes: vec![h], place: q.clone(), line: 0, label: String::new() });
                continue;
            }
            bail!("{q}: no such file, and not a 64-hex-digit hash");
        }
        queries.extend(parse_list(q, args.dihedral)?);
    }
    let mut skipped = 0usize;
    queries.retain(|l| {
        let keep = args.keep_degenerate || !l.hashes.iter().all(is_degenerate);
        if !keep {
            skipped += 1;
            eprintln!("consentry: warning: {}: degenerate query hash skipped", l.place);
        }
        keep
    });

    let searched: Vec<Vec<Hash256>> = queries
        .iter()
        .map(|l| {
            if args.keep_degenerate {
                l.hashes.clone()
            } else {
                l.hashes.iter().copied().filter(|h| !is_degenerate(h)).collect()
            }
        })
        .collect();
    // every hash of every query (with its dihedral variants, if any) in one batch
    let results = index.search_batch_dihedral(&searched, args.radius);

    let any = results.iter().any(|m| !m.is_empty());
    let write = || -> std::io::Result<()> {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        if args.header {
            writeln!(out, "query\tquery_place\tmatched_hash\tdistance\tagainst_line\tagainst_label")?;
        }
        for (q, ms) in queries.iter().zip(&results) {
            for m in ms {
                let e = &against[m.id as usize];
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    q.hashes[0], q.place, m.hash, m.distance, e.line, e.label
                )?;
            }
        }
        out.flush()
    };
    // A reader that stops early (`| head`) is not an error.
    if let Err(e) = write() {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e.into());
        }
    }
    Ok(if any { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
