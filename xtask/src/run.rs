//! `cargo xtask run -- <args>`: builds `mountscope` in release mode and runs it as root.

use std::{ffi::OsString, os::unix::process::CommandExt as _, process::Command};

use anyhow::{Result, bail};

use crate::{build, command, privilege, setup};

#[derive(clap::Args)]
pub struct Args {
    /// Arguments passed to `mountscope`, for example `watch`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<OsString>,
}

/// Runs setup and a release build, then replaces this process with `mountscope`, through
/// `sudo` when not root.
pub fn run(args: Args) -> Result<()> {
    setup::run(&setup::Args::default())?;
    let binary = build::build(true)?;

    let mut mountscope = if privilege::is_root() {
        Command::new(&binary)
    } else if command::in_path("sudo") {
        let mut sudo = Command::new("sudo");
        sudo.arg("--").arg(&binary);
        sudo
    } else {
        bail!(
            "mountscope loads eBPF programs and needs root, but this is not root and `sudo` is not \
             installed; run `{} {}` as root",
            binary.display(),
            args.args
                .iter()
                .map(|arg| arg.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
    };
    mountscope.args(&args.args);

    let command_line = command::display(&mountscope);
    eprintln!("run: $ {command_line}");
    // `exec` returns only if it failed.
    let error = mountscope.exec();
    bail!("failed to run `{command_line}`: {error}")
}
