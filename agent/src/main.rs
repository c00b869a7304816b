//! The `mountscope` command: watch mount-lock contention live, record it, benchmark the two
//! overlay strategies, and check what the kernel allows.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.is::<cli::Logged>() {
                eprintln!("mountscope: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}
