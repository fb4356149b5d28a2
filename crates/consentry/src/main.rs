//! `consentry`: the command-line front of the consentry crates.
//!
//! This binary only parses arguments, reads files and prints; the work is
//! done by the library crates (`consentry-pdq`, `consentry-media`,
//! `consentry-index`).

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod cases_cmd;
mod derive_cmd;
mod hash_cmd;
mod match_cmd;
mod protect_cmd;
mod serve_cmd;
mod telegram_cmd;

#[derive(Debug, Parser)]
#[command(name = "consentry", version, about = "Hash images and match them against protected hashes", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Compute PDQ hashes of image files (nothing leaves this machine).
    Hash(hash_cmd::HashArgs),
    /// Compute derivative-matching signatures (PDQ + local keypoints) of image files, locally.
    Derive(derive_cmd::DeriveArgs),
    /// Protect photos: hash them here and open a case with a consentry service (or save the codes).
    Protect(protect_cmd::ProtectArgs),
    /// Check or withdraw a case opened with `protect` or the protect page (number and PIN).
    Case(protect_cmd::CaseArgs),
    /// Review cases as a helpline's staff: list, show, confirm, withdraw, new PIN (curate key).
    Cases(cases_cmd::CasesArgs),
    /// Match hashes against a list of hashes, offline.
    Match(match_cmd::MatchArgs),
    /// Run the matching service (HTTP API; SQLite in ./consentry-data by default).
    Serve(serve_cmd::ServeArgs),
    /// Manage the API keys of a store (the first admin key comes from here).
    Keys(serve_cmd::KeysArgs),
    /// How often protected hashes matched, from a store's match counts (TSV).
    Stats(serve_cmd::StatsArgs),
    /// Run the Telegram moderation bot (token in $CONSENTRY_TELEGRAM_TOKEN).
    Telegram(Box<telegram_cmd::TelegramArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Hash(args) => hash_cmd::run(args),
        Command::Derive(args) => derive_cmd::run(args),
        Command::Protect(args) => protect_cmd::run_protect(args),
        Command::Case(args) => protect_cmd::run_case(args),
        Command::Cases(args) => cases_cmd::run(args),
        Command::Match(args) => match_cmd::run(args),
        Command::Serve(args) => serve_cmd::run_serve(args),
        Command::Keys(args) => serve_cmd::run_keys(args),
        Command::Stats(args) => serve_cmd::run_stats(args),
        Command::Telegram(args) => telegram_cmd::run(*args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("consentry: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
