//! `consentry-eval CORPUS_DIR [--seed N] [--protected N] [--transforms LIST] [--quick] [--out FILE.md]`

use consentry_eval::derive_matcher::DeriveMatcher;
use consentry_eval::matcher::{MediaPdqMatcher, PdqTopBandMatcher};
use consentry_eval::{load_corpus, quick_set, run, standard_set, transforms, Config, Matcher, PdqMatcher};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: consentry-eval CORPUS_DIR [--seed N] [--protected N] [--distractors N] \
[--transforms LIST] [--matchers LIST] [--quick] [--list] [--work-max-side PX] [--threads N] [--out FILE.md] [--tsv FILE.tsv]

  --seed N            seed for the split, donors and transforms (default 1)
  --protected N       protected originals (default 200; --quick: 100)
  --distractors N     use at most N distractors (default all; --quick: 100)
  --transforms LIST   comma-separated families, names or labels (e.g. crop,undress-donor,jpeg@q40)
  --matchers LIST     comma-separated, from pdq, pdq-dihedral (on the harness's decoded pixels),
                      media-pdq, media-pdq-dihedral (consentry-media's hash_bytes on the bytes),
                      derive (consentry-derive: PDQ+dihedral, local keypoints verified geometrically,
                      or the top band; derive:k=N+s=N+h=N+px=X+gap=X+plane=N+spread=X+stop=S+band=R|none
                      +bandq=Q+trim=0|1+mirror=0|1: the same with other rule parameters),
                      pdq-top:F[:Q][:trim] (experimental: PDQ of the top F of the height, unused below
                      quality Q (50); trim: uniform borders cut off both sides first)
                      (default pdq,pdq-dihedral)
  --quick             a quarter of the transforms, fewer images: a few minutes
  --list              print the transform labels and exit
  --work-max-side PX  originals reduced to this longest side before transforms (default 1280)
  --threads N         worker threads (default: all cores)
  --out FILE.md       also write the Markdown report there
  --tsv FILE.tsv      write every query's outcome (transform, source, protected, donor, matches per matcher)";

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("consentry-eval: {e}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let command = std::iter::once("consentry-eval".to_string())
        .chain(args[1..].iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    let mut dir: Option<PathBuf> = None;
    let (mut seed, mut protected, mut distractors) = (1u64, None, None);
    let (mut list, mut quick, mut show_list) = (None::<String>, false, false);
    let mut matcher_list = String::from("pdq,pdq-dihedral");
    let (mut out, mut tsv, mut work_max_side, mut threads) =
        (None::<PathBuf>, None::<PathBuf>, 1280u32, None::<usize>);
    let mut it = args.into_iter().skip(1);
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--seed" => seed = val("--seed")?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--protected" => {
                protected = Some(val("--protected")?.parse().map_err(|e| format!("--protected: {e}"))?)
            }
            "--distractors" => {
                distractors = Some(val("--distractors")?.parse().map_err(|e| format!("--distractors: {e}"))?)
            }
            "--transforms" => list = Some(val("--transforms")?),
            "--matchers" => matcher_list = val("--matchers")?,
            "--work-max-side" => {
                work_max_side =
                    val("--work-max-side")?.parse().map_err(|e| format!("--work-max-side: {e}"))?
            }
            "--threads" => threads = Some(val("--threads")?.parse().map_err(|e| format!("--threads: {e}"))?),
            "--out" => out = Some(val("--out")?.into()),
            "--tsv" => tsv = Some(val("--tsv")?.into()),
            "--quick" => quick = true,
            "--list" => show_list = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            _ if dir.is_none() => dir = Some(a.into()),
            _ => return Err(format!("unexpected argument {a}")),
        }
    }
    let mut set = if quick { quick_set() } else { standard_set() };
    if let Some(l) = &list {
        set = transforms::select(standard_set(), l);
        if set.is_empty() {
            return Err(format!("--transforms {l}: matches no transform (see --list)"));
        }
    }
    if show_list {
        for t in &set {
            println!("{}\t{}", t.family, t.label());
        }
        return Ok(());
    }
    let dir = dir.ok_or("missing CORPUS_DIR")?;
    if let Some(n) = threads {
        rayon::ThreadPoolBuilder::new().num_threads(n).build_global().map_err(|e| e.to_string())?;
    }
    let corpus = load_corpus(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if corpus.len() < 2 {
        return Err(format!("{}: need at least 2 images", dir.display()));
    }
    let cfg = Config {
        seed,
        n_protected: protected.unwrap_or(if quick { 100 } else { 200 }),
        transforms: set,
        work_max_side,
        max_distractors: distractors.or(if quick { Some(100) } else { None }),
        progress: true,
    };
    let mut matchers: Vec<Box<dyn Matcher>> = Vec::new();
    for name in matcher_list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        matchers.push(match name {
            "pdq" => Box::new(PdqMatcher::global(31)),
            "pdq-dihedral" => Box::new(PdqMatcher::dihedral(31)),
            "media-pdq" => Box::new(MediaPdqMatcher::global(31)),
            "media-pdq-dihedral" => Box::new(MediaPdqMatcher::dihedral(31)),
            // pdq-top:F[:Q][:trim] — the top F of the height, bands of quality < Q (50) unused,
            // uniform borders trimmed off first with `trim`
            k if k.starts_with("pdq-top:") => {
                let bad = || format!("{k}: expected pdq-top:FRACTION[:MIN_QUALITY][:trim]");
                let mut parts = k["pdq-top:".len()..].split(':');
                let f: f32 = parts.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
                let mut m = PdqTopBandMatcher::new(f, 31);
                for p in parts {
                    m = match p {
                        "trim" => m.trimmed(),
                        q => m.min_quality(q.parse().map_err(|_| bad())?),
                    };
                }
                Box::new(m)
            }
            "derive" => Box::new(DeriveMatcher::default()),
            k if k.starts_with("derive:") => Box::new(DeriveMatcher::parse(&k["derive:".len()..])?),
            other => return Err(format!("unknown matcher {other}")),
        });
    }
    if matchers.is_empty() {
        return Err("--matchers: none given".into());
    }
    let result = run(&corpus, &mut matchers, &cfg);
    let md = consentry_eval::report::markdown(&result, &command);
    print!("{md}");
    if let Some(p) = out {
        std::fs::write(&p, &md).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    if let Some(p) = tsv {
        let mut s = String::from("transform\tsource\tprotected\tdonor");
        for m in &result.matchers {
            s.push('\t');
            s.push_str(m);
        }
        s.push('\n');
        for o in &result.outcomes {
            s.push_str(&format!(
                "{}\t{}\t{}\t{}",
                result.transforms[o.transform].label(),
                result.names[o.source as usize],
                o.protected,
                o.donor.map_or("-", |d| result.names[d as usize].as_str())
            ));
            for m in &o.matches {
                let names: Vec<&str> = m.iter().map(|&i| result.names[i as usize].as_str()).collect();
                s.push('\t');
                s.push_str(&names.join(","));
            }
            s.push('\n');
        }
        std::fs::write(&p, s).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(())
}
