//! `consentry hash` (being written).

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct HashArgs {}

pub fn run(_args: HashArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
