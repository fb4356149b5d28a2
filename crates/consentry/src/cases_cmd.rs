//! `consentry cases list|show|confirm|withdraw|new-pin`: the helpline staff's side of cases, as
//! clients of the service's staff endpoints (`/v1/cases...`, curate scope). Every change goes
//! through the service, so it is audited under the key's name and sends its case events; the key
//! is read from an environment variable, never the command line.

use anyhow::{bail, Result};
use consentry_store::{day_of, format_day, Timestamp};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::process::ExitCode;

use crate::protect_cmd::{call, check_number};

#[derive(Debug, clap::Args)]
#[command(after_help = "For a helpline's staff: needs an API key with the curate scope in \
$CONSENTRY_API_KEY (or the variable --key-env names). Survivors use `consentry case` with their \
PIN instead.")]
pub struct CasesArgs {
    #[command(subcommand)]
    command: CasesCommand,
}

#[derive(Debug, clap::Subcommand)]
enum CasesCommand {
    /// The cases, oldest first, as TSV: number, status, bank, opened, last changed (UTC days).
    List {
        #[command(flatten)]
        service: Service,
        /// Only cases of this status: received (to review), active or withdrawn.
        #[arg(long)]
        status: Option<String>,
    },
    /// One case by the number the survivor gives: its status, its codes with their entry ids
    /// and what each caught, and whether its PIN is locked.
    Show {
        #[command(flatten)]
        service: Service,
        number: String,
    },
    /// Mark a case reviewed and confirmed (`active`): the survivor's status says so.
    Confirm {
        #[command(flatten)]
        service: Service,
        number: String,
    },
    /// Withdraw a case on the survivor's behalf: its codes stop matching. Cannot be undone.
    Withdraw {
        #[command(flatten)]
        service: Service,
        number: String,
        /// Confirms the withdrawal.
        #[arg(long)]
        yes: bool,
    },
    /// Give a case a new PIN, for a survivor who lost hers (once you have checked who she is):
    /// the old PIN stops working and a lock is lifted. The new PIN is shown only this once.
    NewPin {
        #[command(flatten)]
        service: Service,
        number: String,
    },
}

#[derive(Debug, clap::Args)]
struct Service {
    /// The consentry service (its address, e.g. https://helpline.example/).
    #[arg(long, value_name = "URL")]
    server: String,

    /// Environment variable holding the API key (curate scope).
    #[arg(long, value_name = "VAR", default_value = "CONSENTRY_API_KEY")]
    key_env: String,
}

impl Service {
    fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let key = match std::env::var(&self.key_env) {
            Ok(k) if !k.trim().is_empty() => k.trim().to_owned(),
            _ => bail!("no API key: set ${} to a key with the curate scope", self.key_env),
        };
        call(method, &self.server, path, Some(&key), body, "the service refused the API key")
    }
}

pub fn run(args: CasesArgs) -> Result<ExitCode> {
    use reqwest::Method;
    let out = match &args.command {
        CasesCommand::List { service, status } => list(service, status.as_deref())?,
        CasesCommand::Show { service, number } => {
            check_number(number)?;
            show(&service.call(Method::GET, &format!("v1/cases/{number}"), None)?)
        }
        CasesCommand::Confirm { service, number } => {
            check_number(number)?;
            let body = json!({ "status": "active" });
            let v = service.call(Method::PATCH, &format!("v1/cases/{number}"), Some(&body))?;
            format!("Case {}: {}\n", text(&v["case_number"]), text(&v["status"]))
        }
        CasesCommand::Withdraw { service, number, yes } => {
            check_number(number)?;
            if !yes {
                bail!("a withdrawn case cannot be active again; add --yes to withdraw it");
            }
            let body = json!({ "status": "withdrawn" });
            let v = service.call(Method::PATCH, &format!("v1/cases/{number}"), Some(&body))?;
            format!(
                "Case {}: {}. Its codes no longer match anything.\n",
                text(&v["case_number"]),
                text(&v["status"])
            )
        }
        CasesCommand::NewPin { service, number } => {
            check_number(number)?;
            let v = service.call(Method::POST, &format!("v1/cases/{number}/pin"), Some(&json!({})))?;
            eprintln!("The new PIN below is shown only now; the old one no longer works:");
            format!("Case number: {}\nPIN: {}\n", text(&v["case_number"]), text(&v["pin"]))
        }
    };
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("?")
}

fn day(ms: &Value) -> String {
    ms.as_i64().map_or_else(|| "-".to_owned(), |ms| format_day(day_of(Timestamp(ms))))
}

/// Every page of `GET /v1/cases`.
fn list(service: &Service, status: Option<&str>) -> Result<String> {
    // (it goes into the query string; the service names an unknown one)
    if let Some(s) = status.filter(|s| !s.chars().all(|c| c.is_ascii_alphabetic())) {
        bail!("unknown status `{s}` (received, active or withdrawn)");
    }
    let mut out = String::from("case_number\tstatus\tbank\topened\tchanged\n");
    let mut after = 0i64;
    loop {
        let mut path = format!("v1/cases?limit=1000&after={after}");
        if let Some(s) = status {
            path.push_str(&format!("&status={s}"));
        }
        let v = service.call(reqwest::Method::GET, &path, None)?;
        for c in v["cases"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let _ = writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}",
                text(&c["case_number"]),
                text(&c["status"]),
                text(&c["bank"]),
                day(&c["created_at"]),
                day(&c["updated_at"])
            );
        }
        match v["next_after"].as_i64() {
            Some(next) if next > after => after = next,
            _ => return Ok(out),
        }
    }
}

/// The staff view of one case, for a person to read.
fn show(v: &Value) -> String {
    let mut out = String::new();
    let _ =
        writeln!(out, "Case {}: {} (bank {})", text(&v["case_number"]), text(&v["status"]), text(&v["bank"]));
    let _ = writeln!(out, "Opened {}, last changed {} (UTC)", day(&v["created_at"]), day(&v["updated_at"]));
    let pin = &v["pin"];
    match pin["locked_until"].as_i64() {
        Some(until) if until > Timestamp::now().as_millis() => {
            let _ = writeln!(out, "PIN: locked after too many wrong attempts (a new PIN lifts the lock)");
        }
        _ => {
            let _ =
                writeln!(out, "PIN: {} wrong attempt(s) since the last right one", pin["failed_attempts"]);
        }
    }
    let hashes = v["hashes"].as_array().map(Vec::as_slice).unwrap_or_default();
    if hashes.is_empty() {
        let _ = writeln!(out, "Codes: deleted from the service");
    } else {
        let active = hashes.iter().filter(|h| h["active"] == true).count();
        let _ = writeln!(out, "Codes: {} ({active} active)", hashes.len());
        let _ = writeln!(out, "entry\tsignal\tactive\tmatches\tlast matched");
        for h in hashes {
            let _ = writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}",
                h["entry_id"],
                text(&h["signal"]),
                if h["active"] == true { "yes" } else { "no" },
                h["matches"].as_i64().unwrap_or(0),
                day(&h["last_matched_at"])
            );
        }
    }
    let caught = &v["caught"];
    match caught["matches"].as_i64() {
        Some(n) if n > 0 => {
            let _ = writeln!(
                out,
                "Copies stopped: {n}, in {} place(s) on {} day(s); first {}, last {} (UTC)",
                caught["sources"],
                caught["days"],
                day(&caught["first_at"]),
                day(&caught["last_at"])
            );
        }
        _ => {
            let _ = writeln!(out, "No copy found so far.");
        }
    }
    out
}
