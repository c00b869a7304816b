//! The nightly toolchain and its rust-src component, which `-Z build-std=core` needs to build
//! the eBPF programs for `bpfel-unknown-none`.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::command;

const INSTALL_NIGHTLY: &str =
    "rustup toolchain install nightly --profile minimal --component rust-src";

/// The facts about the nightly toolchain that the bpf-linker build needs.
pub struct Nightly {
    /// `rustc +nightly --print sysroot`.
    pub sysroot: PathBuf,
    /// The major of the LLVM version rustc is built with, from the `LLVM version:` line of
    /// `rustc +nightly -vV`.
    pub llvm_major: u32,
}

/// Checks that rustup has a `nightly` toolchain and reads its sysroot and LLVM version.
pub fn check_nightly() -> Result<Nightly> {
    let toolchains = command::output(Command::new("rustup").args(["toolchain", "list"]))
        .context("failed to list the rustup toolchains; mountscope needs rustup")?;
    if !toolchains.lines().any(is_plain_nightly) {
        bail!(
            "the `nightly` toolchain is not installed; run `{INSTALL_NIGHTLY}`, then `cargo xtask \
             setup` again"
        );
    }

    let version = command::output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let release = field(&version, "release").unwrap_or("unknown release");
    let llvm_version = field(&version, "LLVM version").with_context(|| {
        format!("`rustc +nightly -vV` printed no `LLVM version:` line:\n{version}")
    })?;
    let llvm_major = llvm_version
        .split('.')
        .next()
        .and_then(|major| major.parse().ok())
        .with_context(|| {
            format!("invalid LLVM version `{llvm_version}` from `rustc +nightly -vV`")
        })?;

    let sysroot = command::output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let sysroot = PathBuf::from(sysroot.trim());
    eprintln!("    found rustc {release} with LLVM {llvm_version}");
    Ok(Nightly {
        sysroot,
        llvm_major,
    })
}

/// Adds the rust-src component to the nightly toolchain unless it is installed already.
pub fn ensure_rust_src() -> Result<()> {
    let installed = command::output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    // rustup prints `rust-src` without a target triple, since the sources are the same for all.
    if installed.lines().any(|line| line.trim() == "rust-src") {
        eprintln!("    already installed");
        return Ok(());
    }

    command::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
    .context("failed to add rust-src; check that the registry at static.rust-lang.org is reachable")
}

/// Returns whether a `rustup toolchain list` line names the toolchain that `+nightly` selects,
/// `nightly-<host>`, rather than a dated one such as `nightly-2026-05-19-<host>`.
fn is_plain_nightly(line: &str) -> bool {
    let name = line.split_whitespace().next().unwrap_or("");
    name.strip_prefix("nightly-")
        .is_some_and(|host| !host.starts_with(|c: char| c.is_ascii_digit()))
}

/// Returns the value of a `name: value` line of `rustc -vV`.
fn field<'a>(version: &'a str, name: &str) -> Option<&'a str> {
    version.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == name).then(|| value.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_nightly_matches_host_toolchain() {
        assert!(is_plain_nightly("nightly-x86_64-unknown-linux-gnu"));
        assert!(is_plain_nightly(
            "nightly-x86_64-unknown-linux-gnu (active)"
        ));
    }

    #[test]
    fn plain_nightly_rejects_others() {
        assert!(!is_plain_nightly(
            "nightly-2026-05-19-x86_64-unknown-linux-gnu"
        ));
        assert!(!is_plain_nightly(
            "stable-x86_64-unknown-linux-gnu (default)"
        ));
        assert!(!is_plain_nightly(""));
    }

    #[test]
    fn field_reads_llvm_version() {
        let version = "rustc 1.97.0-nightly\nrelease: 1.97.0-nightly\nLLVM version: 22.1.4\n";
        assert_eq!(field(version, "LLVM version"), Some("22.1.4"));
        assert_eq!(field(version, "release"), Some("1.97.0-nightly"));
        assert_eq!(field(version, "host"), None);
    }
}
