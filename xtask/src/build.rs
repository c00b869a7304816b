//! `cargo xtask build`: the `mountscope` binary with its eBPF programs embedded.

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::Stdio,
};

use anyhow::{Context as _, Result, bail};

use crate::{command, setup};

const PACKAGE: &str = "mountscope-agent";
const BINARY: &str = "mountscope";

#[derive(clap::Args, Default)]
pub struct Args {
    /// Build with the release profile instead of the dev profile.
    #[arg(long)]
    pub release: bool,
}

/// Runs setup, then builds `mountscope` and returns the path of the binary.
pub fn run(args: &Args) -> Result<PathBuf> {
    setup::run(&setup::Args::default())?;
    build(args.release)
}

/// Builds `mountscope` without running setup first and returns the path of the binary.
pub fn build(release: bool) -> Result<PathBuf> {
    let profile = if release { "release" } else { "dev" };
    eprintln!("build: {BINARY} ({profile} profile)");

    let mut cargo = crate::cargo();
    cargo
        .args(["build", "--package", PACKAGE, "--bin", BINARY])
        // JSON on stdout gives the binary's path wherever the target directory is; the
        // diagnostics are still rendered on stderr.
        .arg("--message-format=json-render-diagnostics")
        // Without the eBPF object the binary would build but fail to load its programs.
        .env_remove("AYA_BUILD_SKIP")
        .stdout(Stdio::piped());
    if release {
        cargo.arg("--release");
    }

    let command_line = command::display(&cargo);
    eprintln!("    $ {command_line}");
    let mut child = cargo
        .spawn()
        .with_context(|| format!("failed to start `{command_line}`"))?;
    let stdout = child.stdout.take().context("cargo's stdout is not piped")?;
    let mut binary = None;
    for line in BufReader::new(stdout).lines() {
        let line =
            line.with_context(|| format!("failed to read the output of `{command_line}`"))?;
        if let Some(path) = executable(&line) {
            binary = Some(path);
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("failed to wait for `{command_line}`"))?;
    if !status.success() {
        bail!("`{command_line}` failed ({status}); fix the errors above and run it again");
    }

    let binary =
        binary.with_context(|| format!("`{command_line}` reported no `{BINARY}` executable"))?;
    eprintln!("    built {}", binary.display());
    Ok(binary)
}

/// Returns the executable path from a cargo `compiler-artifact` message for [`BINARY`].
fn executable(message: &str) -> Option<PathBuf> {
    let message: serde_json::Value = serde_json::from_str(message).ok()?;
    if message["reason"] != "compiler-artifact" || message["target"]["name"] != BINARY {
        return None;
    }
    message["executable"].as_str().map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executable_from_artifact_message() {
        let message = r#"{"reason":"compiler-artifact","target":{"name":"mountscope"},
            "executable":"/w/target/release/mountscope"}"#;
        assert_eq!(
            executable(&message.replace('\n', "")),
            Some(PathBuf::from("/w/target/release/mountscope"))
        );
    }

    #[test]
    fn executable_ignores_other_messages() {
        let library = r#"{"reason":"compiler-artifact","target":{"name":"mountscope_agent"},"executable":null}"#;
        let finished = r#"{"reason":"build-finished","success":true}"#;
        assert_eq!(executable(library), None);
        assert_eq!(executable(finished), None);
        assert_eq!(executable("not json"), None);
    }
}
