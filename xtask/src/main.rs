//! Developer tasks for mountscope: `cargo xtask <command>` (the alias is in `.cargo/config.toml`).

mod build;
mod command;
mod install;
mod privilege;
mod run;
mod setup;
mod soak;
mod test;
mod vm;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Set-up, build, run, install and test tasks for mountscope")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the nightly rust-src component, bpf-linker and the Debian packages the tools and
    /// tests use, and mount tracefs. Steps that are already done are skipped.
    Setup(setup::Args),
    /// Run `setup`, then build the `mountscope` binary with its eBPF programs.
    Build(build::Args),
    /// Run `setup`, build in release mode and run `mountscope` as root with the given arguments.
    Run(run::Args),
    /// Run `setup`, build in release mode and copy `mountscope` to `<prefix>/bin`.
    Install(install::Args),
    /// Run `setup`, the format and lint checks and all tests, including the privileged ones.
    Test,
    /// Boot stock Debian cloud kernels (6.1 and 6.12) under qemu and run the exact-tier tests,
    /// which need fentry and kprobes, in them. Downloads the kernels on first use.
    VmTest(vm::Args),
    /// Run `mountscope agent` with the executor at full rate and two clients attached for
    /// 30 minutes (by default), printing the agent's memory once a minute.
    Soak(soak::Args),
}

/// Runs the subcommand. A failure is printed with each cause on its own line and without the
/// backtrace that anyhow adds under `RUST_BACKTRACE=1`, because the causes name the failed command.
fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup(args) => setup::run(&args),
        Command::Build(args) => build::run(&args).map(|_binary| ()),
        Command::Run(args) => run::run(args),
        Command::Install(args) => install::run(&args),
        Command::Test => test::run(),
        Command::VmTest(args) => vm::run(&args).map(|_summary| ()),
        Command::Soak(args) => soak::run(&args),
    };

    let Err(error) = result else {
        return ExitCode::SUCCESS;
    };
    eprintln!("error: {error}");
    for cause in error.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    ExitCode::FAILURE
}

/// Returns the workspace root, the parent of this crate's directory.
fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask's manifest directory has a parent")
}

/// Returns a `cargo` command that runs in the workspace root.
///
/// It uses the `cargo` that started xtask when cargo sets `CARGO`, so the toolchain stays the one
/// the developer picked.
fn cargo() -> std::process::Command {
    let program = std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from);
    let mut command = std::process::Command::new(program);
    command.current_dir(workspace_root());
    command
}
