//! `consentry protect PATH...` and `consentry case status|withdraw NUMBER`: the survivor's side on
//! the command line, as on the protect page. Photos are hashed on this machine; only their codes
//! (per photo its PDQ hash with its quality, and its derivative signature) go to the service, which
//! answers a case number and a PIN. The PIN is never taken from the command line.

use anyhow::{bail, Context, Result};
use consentry_derive::{Extractor, Signature};
use consentry_media::{DecodeOptions, HashOptions};
use consentry_pdq::{Hash256, DEFAULT_MIN_QUALITY};
use consentry_store::{day_of, format_day, Timestamp};
use rayon::prelude::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::hash_cmd::{collect_inputs, csv_field, signature_of, Input};

#[derive(Debug, clap::Args)]
#[command(after_help = "Only codes leave this machine: no photo, no file name, no size. \
With --server, prints the case number and the PIN (shown only this once: keep them to check or \
withdraw the case with `consentry case`). With --save, writes the codes to a file a helpline can \
import into a bank as it is (`POST /v1/banks/NAME/import?format=csv`); nothing is sent.\n\
Exit status: 0 when every photo gave codes, 1 when any was left out (not an image, quality too \
low), 2 when nothing could be sent or saved.")]
pub struct ProtectArgs {
    /// Photos, or directories searched for them.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,

    /// The consentry service to open a case with (its address, e.g. https://helpline.example/).
    #[arg(long, value_name = "URL", required_unless_present = "save")]
    server: Option<String>,

    /// Write the codes to FILE (CSV `hash,quality,path,signal_type`, the protect page's file;
    /// `path` is the file's name only). Written before anything is sent.
    #[arg(long, value_name = "FILE")]
    save: Option<PathBuf>,

    /// Refuse images with more pixels than this (decompression bombs).
    #[arg(long, default_value_t = DecodeOptions::default().max_pixels, value_name = "N")]
    max_pixels: u64,
}

#[derive(Debug, clap::Args)]
pub struct CaseArgs {
    #[command(subcommand)]
    command: CaseCommand,
}

#[derive(Debug, clap::Subcommand)]
enum CaseCommand {
    /// A case's status, its codes, and how often copies were stopped.
    Status(CaseTarget),
    /// Withdraw a case: its codes stop matching. This cannot be undone.
    Withdraw {
        #[command(flatten)]
        target: CaseTarget,
        /// Confirms the withdrawal.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, clap::Args)]
struct CaseTarget {
    /// The consentry service that holds the case.
    #[arg(long, value_name = "URL")]
    server: String,

    /// The case number (dashes and letter case do not matter).
    number: String,

    /// Environment variable holding the PIN; when it is not set, the PIN is read from standard
    /// input. (Never on the command line, where other users and the shell history would see it.)
    #[arg(long, value_name = "VAR", default_value = "CONSENTRY_PIN")]
    pin_env: String,
}

/// The codes of one photo.
struct Codes {
    name: String,
    pdq: Hash256,
    quality: u8,
    derive: String,
}

pub fn run_protect(args: ProtectArgs) -> Result<ExitCode> {
    let (inputs, walk_errors) = collect_inputs(&args.paths);
    let mut left_out = walk_errors.len();
    for e in &walk_errors {
        eprintln!("consentry: {e}");
    }
    let opts = HashOptions {
        decode: DecodeOptions { max_pixels: args.max_pixels, ..DecodeOptions::default() },
        ..HashOptions::default()
    };
    // Hashed on every core; reported and de-duplicated in the order given.
    let outcomes: Vec<Result<Box<Signature>, String>> = inputs
        .par_iter()
        .map_init(Extractor::new, |ex, input| signature_of(input, &opts, 256 << 20, ex))
        .collect();
    let mut photos: Vec<Codes> = Vec::new();
    let mut seen = HashSet::new();
    for (input, outcome) in inputs.iter().zip(outcomes) {
        let shown = input.display();
        let sig = match outcome {
            Ok(sig) => sig,
            Err(msg) => {
                left_out += 1;
                eprintln!("consentry: {shown}: left out: {msg}");
                continue;
            }
        };
        if sig.quality < DEFAULT_MIN_QUALITY {
            left_out += 1;
            eprintln!(
                "consentry: {shown}: left out: quality {} is below {DEFAULT_MIN_QUALITY} (too plain or too small to be recognised)",
                sig.quality
            );
            continue;
        }
        if !seen.insert(sig.pdq) {
            eprintln!("consentry: {shown}: the same photo as one before, sent once");
            continue;
        }
        let name = match input {
            Input::File(p) => {
                p.file_name().map_or_else(|| shown.clone(), |n| n.to_string_lossy().into_owned())
            }
            Input::Stdin => "-".to_owned(),
        };
        photos.push(Codes { name, pdq: sig.pdq, quality: sig.quality, derive: sig.to_base64() });
    }
    eprintln!("consentry: {} photo(s) ready, {left_out} left out", photos.len());
    if photos.is_empty() {
        bail!("no photo gave usable codes: nothing was sent or saved");
    }
    if let Some(path) = &args.save {
        let mut text = String::from("hash,quality,path,signal_type\n");
        for p in &photos {
            let name = csv_field(&p.name);
            text.push_str(&format!(
                "{},{},{name},pdq\n{},{},{name},derive\n",
                p.pdq, p.quality, p.derive, p.quality
            ));
        }
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("consentry: codes saved to {}", path.display());
    }
    if let Some(server) = &args.server {
        let hashes: Vec<Value> = photos
            .iter()
            .flat_map(|p| {
                [
                    json!({ "hash": p.pdq.to_hex(), "quality": p.quality }),
                    json!({ "signal": "derive", "hash": p.derive }),
                ]
            })
            .collect();
        let v = post(server, "v1/cases", &json!({ "hashes": hashes }))
            .context("the codes were not sent (run the command again, or keep them with --save)")?;
        let (Some(number), Some(pin)) = (v["case_number"].as_str(), v["pin"].as_str()) else {
            bail!("the service answered without a case number: {v}");
        };
        println!("Case number: {number}");
        println!("PIN: {pin}");
        std::io::stdout().flush()?;
        eprintln!(
            "consentry: the codes of {} photo(s) are protected. Keep the case number and the PIN: \
             the PIN is shown only this once (`consentry case status --server {server} {number}`).",
            photos.len()
        );
    }
    Ok(if left_out > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

pub fn run_case(args: CaseArgs) -> Result<ExitCode> {
    let (target, action) = match &args.command {
        CaseCommand::Status(t) => (t, "status"),
        CaseCommand::Withdraw { target, yes } => {
            if !yes {
                bail!("a withdrawn case cannot be active again; add --yes to withdraw it");
            }
            (target, "withdraw")
        }
    };
    check_number(&target.number)?;
    let pin = read_pin(&target.pin_env)?;
    let v = post(&target.server, &format!("v1/cases/{}/{action}", target.number), &json!({ "pin": pin }))?;
    let number = v["case_number"].as_str().unwrap_or(&target.number);
    let day = |ms: &Value| ms.as_i64().map(|ms| format_day(day_of(Timestamp(ms))));
    let mut out = String::new();
    if action == "withdraw" {
        out.push_str(&format!("Case {number}: withdrawn. Its codes no longer match anything.\n"));
    } else {
        out.push_str(&format!("Case {number}: {}\n", v["status"].as_str().unwrap_or("?")));
        if let (Some(sent), Some(changed)) = (day(&v["created_at"]), day(&v["updated_at"])) {
            out.push_str(&format!("Sent on {sent}, last changed on {changed} (UTC)\n"));
        }
        let hashes = v["hashes"].as_array().map(Vec::as_slice).unwrap_or_default();
        let active = hashes.iter().filter(|h| h["active"] == true).count();
        if hashes.is_empty() {
            out.push_str("Codes: deleted from the service\n");
        } else {
            out.push_str(&format!("Codes active: {active} of {}\n", hashes.len()));
        }
        let caught = &v["caught"];
        match caught["matches"].as_i64() {
            None => {}
            Some(0) => out.push_str("No copy found so far.\n"),
            Some(n) => out.push_str(&format!(
                "Copies stopped: {n}, in {} place(s); the last on {} (UTC)\n",
                caught["sources"].as_i64().unwrap_or(0),
                day(&caught["last_at"]).as_deref().unwrap_or("?")
            )),
        }
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// A case number as typed: letters, digits and dashes only (it goes into a URL path).
pub(crate) fn check_number(number: &str) -> Result<()> {
    if number.is_empty() || !number.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        bail!("a case number has only letters, digits and dashes");
    }
    Ok(())
}

/// The PIN from `$var`, or else one line of standard input (with a prompt on a terminal).
fn read_pin(var: &str) -> Result<String> {
    if let Some(pin) = std::env::var(var).ok().filter(|p| !p.trim().is_empty()) {
        return Ok(pin.trim().to_owned());
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("PIN: ");
    }
    let mut line = String::new();
    stdin.read_line(&mut line).context("cannot read the PIN from standard input")?;
    let pin: String = line.chars().filter(|c| !c.is_whitespace()).collect();
    if pin.is_empty() {
        bail!("no PIN: set ${var} or give it on standard input");
    }
    Ok(pin)
}

/// POSTs `body` as JSON to `server`/`path` (a case endpoint: no key) and returns the JSON answer.
fn post(server: &str, path: &str, body: &Value) -> Result<Value> {
    call(reqwest::Method::POST, server, path, None, Some(body), "unknown case number or wrong PIN")
}

/// Sends `method` `server`/`path` with `body` as JSON and the `bearer` key, and returns the JSON
/// answer; an error answer becomes an error with the service's own message (`unauthorized` for a
/// 401).
pub(crate) fn call(
    method: reqwest::Method,
    server: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&Value>,
    unauthorized: &str,
) -> Result<Value> {
    let url = format!("{}/{path}", server.trim_end_matches('/'));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .context("cannot start the HTTP client")?;
        let mut req = client.request(method, &url);
        if let Some(key) = bearer {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.with_context(|| format!("cannot reach {server}"))?;
        let status = resp.status();
        let text = resp.text().await.with_context(|| format!("no answer from {server}"))?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(v);
        }
        let msg = match (status.as_u16(), v["error"]["message"].as_str()) {
            (401, _) => unauthorized.to_owned(),
            (_, Some(m)) => m.to_owned(),
            _ => format!("HTTP {status} from {url}"),
        };
        bail!("{msg}")
    })
}
