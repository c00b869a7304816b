//! Running as root: the eBPF programs, apt-get and mounting tracefs all need it.

use std::process::Command;

use anyhow::{Result, bail};

use crate::command;

/// Returns whether this process runs with effective uid 0.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Returns a command that runs `program` as root: directly when this process is root, through
/// `sudo` otherwise.
///
/// `task` names the work in the error returned when neither is possible.
pub fn as_root(program: &str, task: &str) -> Result<Command> {
    if is_root() {
        return Ok(Command::new(program));
    }
    if !command::in_path("sudo") {
        bail!(
            "{task} needs root, but this is not root and `sudo` is not installed; run it as root"
        );
    }
    let mut command = Command::new("sudo");
    command.arg("--").arg(program);
    Ok(command)
}
