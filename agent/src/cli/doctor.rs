//! `mountscope doctor`.

use anyhow::Context as _;
use clap::Args;
use mountscope_agent::doctor;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: DoctorArgs) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("mountscope: doctor runs as root to load programs; most checks will fail");
    }
    let report = doctor::run();
    if args.json {
        let text = serde_json::to_string_pretty(&report).context("failed to encode the report")?;
        println!("{text}");
    } else {
        print!("{}", doctor::render(&report));
    }
    Ok(())
}
