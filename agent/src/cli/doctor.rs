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
    let euid = nix::unistd::geteuid();
    if !euid.is_root() {
        anyhow::bail!(
            "doctor must run as root to load its test programs (effective uid is {euid}); run \
             it with sudo"
        );
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
