//! `consentry hash PATH...`: PDQ hashes (or, with `--signal derive`, derivative-matching
//! signatures) of image files, computed locally.

use anyhow::{Context, Result};
use consentry_derive::{Extractor, Pixels, Signature};
use consentry_media::{DecodeOptions, HashMode, HashOptions, HashedImage, MediaError};
use consentry_pdq::{Dihedral, Hasher};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// File name endings taken as images when walking a directory. Files named
/// on the command line are always tried, whatever their name.
const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "jpe", "jfif", "png", "gif", "webp", "bmp", "tif", "tiff"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// `hash<TAB>quality<TAB>path` (with --dihedral, the eight hashes follow the quality).
    Tsv,
    /// One JSON object per line, failures and low-quality files included.
    Jsonl,
    /// `hash,quality,path`, the layout of Meta's pdq-photo-hasher.
    Csv,
}

/// Which signal to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Signal {
    /// Meta's PDQ hash.
    Pdq,
    /// consentry-derive's signature (global PDQ, the top band's PDQ and local keypoints; also
    /// catches cropped, padded and partly replaced copies). TSV: `signature<TAB>pdq<TAB>quality<TAB>keypoints<TAB>path`;
    /// JSON lines `{"signal": "derive", "hash": SIGNATURE, ...}` and CSV (with a header) import
    /// directly into a bank (`POST /v1/banks/NAME/import?format=jsonl|csv`).
    Derive,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Only hashes are printed; the images never leave this machine.\n\
Exit status: 0 when every file was hashed, 1 when any file failed, 2 on a usage error.")]
pub struct HashArgs {
    /// Image files or directories (searched recursively); `-` reads one image from standard input.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,

    /// Output layout.
    #[arg(long, short = 'f', value_enum, default_value_t = OutputFormat::Tsv)]
    format: OutputFormat,

    /// Also output the hashes of the 8 rotations and flips (original, rot90,
    /// rot180, rot270, flipx, flipy, flip_plus1, flip_minus1).
    #[arg(long)]
    dihedral: bool,

    /// The signal: `pdq` hashes, or `derive` signatures (see `consentry derive`).
    #[arg(long, value_enum, default_value_t = Signal::Pdq)]
    signal: Signal,

    /// Hashes below this quality (0-100) are reported as unusable and left out
    /// of TSV/CSV output (JSON lines marks them `"usable": false`).
    #[arg(long, default_value_t = consentry_pdq::DEFAULT_MIN_QUALITY, value_parser = clap::value_parser!(u8).range(0..=100))]
    min_quality: u8,

    /// Reference behaviour, as Meta's tools hash: decode at full size and do
    /// not apply the EXIF orientation.
    #[arg(long)]
    exact: bool,

    /// Apply the EXIF orientation (the default, except with --exact).
    #[arg(long, overrides_with = "no_orient")]
    orient: bool,

    /// Do not apply the EXIF orientation.
    #[arg(long, overrides_with = "orient")]
    no_orient: bool,

    /// Refuse images with more pixels than this (decompression bombs).
    #[arg(long, default_value_t = DecodeOptions::default().max_pixels, value_name = "N")]
    max_pixels: u64,

    /// Refuse files larger than this many bytes.
    #[arg(long, default_value_t = 256 << 20, value_name = "BYTES")]
    max_file_size: u64,

    /// Worker threads (default: one per core).
    #[arg(long, short = 'j')]
    threads: Option<usize>,

    /// Never show a progress bar.
    #[arg(long, short = 'q')]
    quiet: bool,
}

/// One input, as named on the command line or found in a directory.
#[derive(Debug, Clone)]
pub(crate) enum Input {
    Stdin,
    File(PathBuf),
}

impl Input {
    pub(crate) fn display(&self) -> String {
        match self {
            Input::Stdin => "-".to_string(),
            Input::File(p) => p.display().to_string(),
        }
    }
}

/// What happened to one input.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The PDQ hash, and with `--signal derive` the signature.
    Hashed(Box<HashedImage>, Option<Box<Signature>>),
    Failed(String),
}

pub fn run(args: HashArgs) -> Result<ExitCode> {
    if args.signal == Signal::Derive && args.dihedral {
        anyhow::bail!("--dihedral is for PDQ hashes: a derive signature already matches rotated and flipped copies' PDQ");
    }
    let derive = args.signal == Signal::Derive;
    let (inputs, walk_errors) = collect_inputs(&args.paths);
    let mode = if args.exact { HashMode::Exact } else { HashMode::default() };
    let orient = if args.orient {
        true
    } else if args.no_orient {
        false
    } else {
        !args.exact
    };
    let opts = HashOptions {
        decode: DecodeOptions {
            max_pixels: args.max_pixels,
            apply_exif_orientation: orient,
            ..DecodeOptions::default()
        },
        mode,
        dihedral: args.dihedral,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.unwrap_or(0))
        .build()
        .context("starting worker threads")?;

    let show_progress = !args.quiet && std::io::stderr().is_terminal() && inputs.len() > 1;
    let bar = if show_progress {
        let b = ProgressBar::with_draw_target(Some(inputs.len() as u64), ProgressDrawTarget::stderr());
        b.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} images, {per_sec}, eta {eta}")
                .expect("valid template"),
        );
        b
    } else {
        ProgressBar::hidden()
    };

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut stats = Stats::default();
    let mut csv_header = false;
    for e in &walk_errors {
        bar.suspend(|| eprintln!("consentry: {e}"));
        stats.failed += 1;
    }

    // Hash in chunks so output streams in input order while all cores work.
    let chunk = 64 * pool.current_num_threads().max(1);
    for inputs in inputs.chunks(chunk) {
        let results: Vec<Outcome> = pool.install(|| {
            inputs
                .par_iter()
                .map_init(
                    || (Hasher::new(), derive.then(Extractor::new)),
                    |(hasher, ex), input| {
                        let r = hash_input(input, &opts, args.max_file_size, hasher, ex.as_mut());
                        bar.inc(1);
                        r
                    },
                )
                .collect()
        });
        for (input, outcome) in inputs.iter().zip(results) {
            let name = input.display();
            match outcome {
                Outcome::Failed(msg) => {
                    stats.failed += 1;
                    bar.suspend(|| eprintln!("consentry: {name}: {msg}"));
                    if args.format == OutputFormat::Jsonl {
                        writeln!(out, "{}", serde_json::json!({ "path": name, "error": msg }))?;
                    }
                }
                Outcome::Hashed(h, sig) => {
                    let usable = h.pdq.quality >= args.min_quality;
                    if usable {
                        stats.hashed += 1;
                    } else {
                        stats.low_quality += 1;
                        bar.suspend(|| {
                            eprintln!(
                                "consentry: {name}: quality {} is below {}, hash unusable",
                                h.pdq.quality, args.min_quality
                            )
                        });
                    }
                    if let Some(sig) = sig {
                        match args.format {
                            OutputFormat::Tsv if usable => writeln!(
                                out,
                                "{}\t{}\t{}\t{}\t{}",
                                sig.to_base64(),
                                sig.pdq,
                                sig.quality,
                                sig.keypoints.len(),
                                tsv_field(&name)
                            )?,
                            OutputFormat::Csv if usable => {
                                if !csv_header {
                                    writeln!(out, "hash,quality,path,signal_type")?;
                                    csv_header = true;
                                }
                                writeln!(
                                    out,
                                    "{},{},{},derive",
                                    sig.to_base64(),
                                    sig.quality,
                                    csv_field(&name)
                                )?
                            }
                            OutputFormat::Jsonl => {
                                let mut v = json_record(&name, &h, usable);
                                v["signal"] = "derive".into();
                                v["hash"] = sig.to_base64().into();
                                v["pdq"] = sig.pdq.to_hex().into();
                                v["quality"] = sig.quality.into();
                                v["keypoints"] = sig.keypoints.len().into();
                                v["band_quality"] = sig.band.map(|b| b.quality).into();
                                writeln!(out, "{v}")?
                            }
                            _ => {}
                        }
                        continue;
                    }
                    match args.format {
                        OutputFormat::Tsv if usable => write_tsv(&mut out, &name, &h)?,
                        OutputFormat::Csv if usable => write_csv(&mut out, &name, &h)?,
                        OutputFormat::Jsonl => writeln!(out, "{}", json_record(&name, &h, usable))?,
                        _ => {}
                    }
                }
            }
        }
        out.flush()?;
    }
    bar.finish_and_clear();
    drop(out);

    eprintln!(
        "consentry: {} hashed, {} below quality {}, {} failed",
        stats.hashed, stats.low_quality, args.min_quality, stats.failed
    );
    Ok(if stats.failed > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

#[derive(Debug, Default)]
struct Stats {
    hashed: usize,
    low_quality: usize,
    failed: usize,
}

pub(crate) fn hash_input(
    input: &Input,
    opts: &HashOptions,
    max_file_size: u64,
    hasher: &mut Hasher,
    derive: Option<&mut Extractor>,
) -> Outcome {
    let bytes = match read_input(input, max_file_size) {
        Ok(b) => b,
        Err(e) => return Outcome::Failed(e),
    };
    let Some(ex) = derive else {
        return match consentry_media::hash_bytes(&bytes, opts, hasher) {
            Ok(h) => Outcome::Hashed(Box::new(h), None),
            Err(e) => Outcome::Failed(media_error_text(&e)),
        };
    };
    // One decode for both: the signature's own PDQ hash is the one of these pixels.
    let (info, img, mode) = match consentry_media::decode_for_hashing(&bytes, opts) {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(media_error_text(&e)),
    };
    drop(bytes);
    let h = consentry_media::hash_decoded(info, &img, mode, false, hasher);
    match signature_of_pixels(&img, ex) {
        Ok(sig) => Outcome::Hashed(Box::new(h), Some(sig)),
        Err(e) => Outcome::Failed(e),
    }
}

/// The derive signature of one input alone (what `consentry protect` sends): one decode, no PDQ
/// pass of its own (the signature carries the PDQ hash and quality of these same pixels).
pub(crate) fn signature_of(
    input: &Input,
    opts: &HashOptions,
    max_file_size: u64,
    ex: &mut Extractor,
) -> Result<Box<Signature>, String> {
    let bytes = read_input(input, max_file_size)?;
    let (_, img, _) = consentry_media::decode_for_hashing(&bytes, opts).map_err(|e| media_error_text(&e))?;
    drop(bytes);
    signature_of_pixels(&img, ex)
}

fn signature_of_pixels(
    img: &consentry_media::DecodedImage,
    ex: &mut Extractor,
) -> Result<Box<Signature>, String> {
    let px = Pixels::new(img.width, img.height, img.format, &img.data).map_err(|e| e.to_string())?;
    Ok(Box::new(ex.signature(&px)))
}

fn media_error_text(e: &MediaError) -> String {
    e.to_string()
}

/// Reads a whole input, refusing more than `max` bytes without reading them.
fn read_input(input: &Input, max: u64) -> std::result::Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    let read = match input {
        Input::Stdin => std::io::stdin().lock().take(max + 1).read_to_end(&mut buf),
        Input::File(p) => {
            let f = std::fs::File::open(p).map_err(|e| format!("cannot open: {e}"))?;
            if let Ok(meta) = f.metadata() {
                if meta.len() > max {
                    return Err(format!("file is {} bytes, more than --max-file-size {max}", meta.len()));
                }
                buf.reserve(meta.len() as usize);
            }
            f.take(max + 1).read_to_end(&mut buf)
        }
    };
    read.map_err(|e| format!("cannot read: {e}"))?;
    if buf.len() as u64 > max {
        return Err(format!("input is more than --max-file-size {max} bytes"));
    }
    Ok(buf)
}

/// Expands directories (recursively, image file names only, sorted) and keeps
/// files and `-` as given. Returns what could not be read alongside.
pub(crate) fn collect_inputs(paths: &[PathBuf]) -> (Vec<Input>, Vec<String>) {
    let mut inputs = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            inputs.push(Input::Stdin);
        } else if p.is_dir() {
            walk(p, &mut inputs, &mut errors);
        } else {
            inputs.push(Input::File(p.clone()));
        }
    }
    (inputs, errors)
}

fn walk(dir: &Path, inputs: &mut Vec<Input>, errors: &mut Vec<String>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            errors.push(format!("{}: cannot list directory: {e}", dir.display()));
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        // Symbolic links to directories are not followed (no loops).
        let is_link = std::fs::symlink_metadata(&p).map(|m| m.file_type().is_symlink()).unwrap_or(false);
        if p.is_dir() {
            if !is_link {
                walk(&p, inputs, errors);
            }
        } else if is_image_name(&p) {
            inputs.push(Input::File(p));
        }
    }
}

fn is_image_name(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Tabs and line breaks in a path would break the columns.
fn tsv_field(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\t', "\\t").replace('\n', "\\n").replace('\r', "\\r")
}

fn write_tsv(out: &mut impl Write, name: &str, h: &HashedImage) -> std::io::Result<()> {
    write!(out, "{}\t{}", h.pdq.hash, h.pdq.quality)?;
    if let Some(d) = &h.dihedral {
        for x in &d.hashes {
            write!(out, "\t{x}")?;
        }
    }
    writeln!(out, "\t{}", tsv_field(name))
}

fn write_csv(out: &mut impl Write, name: &str, h: &HashedImage) -> std::io::Result<()> {
    write!(out, "{},{}", h.pdq.hash, h.pdq.quality)?;
    if let Some(d) = &h.dihedral {
        for x in &d.hashes {
            write!(out, ",{x}")?;
        }
    }
    writeln!(out, ",{}", csv_field(name))
}

/// RFC 4180 quoting, only where a field needs it.
pub(crate) fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

fn json_record(name: &str, h: &HashedImage, usable: bool) -> serde_json::Value {
    let mut v = serde_json::json!({
        "path": name,
        "pdq": h.pdq.hash.to_hex(),
        "quality": h.pdq.quality,
        "usable": usable,
        "format": h.info.format.name(),
        "width": h.info.width,
        "height": h.info.height,
        "mode": h.mode.name(),
    });
    if let Some(d) = &h.dihedral {
        let map: serde_json::Map<String, serde_json::Value> =
            Dihedral::ALL.iter().map(|t| (t.name().to_string(), d.get(*t).to_hex().into())).collect();
        v["dihedral"] = map.into();
    }
    v
}
