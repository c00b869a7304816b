//! `cargo xtask setup`: everything the build and the tests need beyond the machine image's
//! stable and nightly Rust toolchains. Each step checks first and changes nothing when it is
//! already done.

mod apt;
mod bpf_linker;
mod toolchain;
mod tracefs;

use std::path::PathBuf;

use anyhow::{Context as _, Result};

#[derive(clap::Args, Default)]
pub struct Args {
    /// Check and install bpf-linker in `<DIR>/bin` (`cargo install --root <DIR>`) instead of the
    /// `bpf-linker` found in `PATH`. Builds still use the one in `PATH`.
    #[arg(long, value_name = "DIR")]
    pub bpf_linker_root: Option<PathBuf>,
}

/// Runs every set-up step in order and stops at the first failure.
pub fn run(args: &Args) -> Result<()> {
    eprintln!("setup: nightly toolchain");
    let nightly = toolchain::check_nightly().context("setup step `nightly toolchain` failed")?;

    eprintln!("setup: rust-src component for nightly");
    toolchain::ensure_rust_src().context("setup step `rust-src` failed")?;

    eprintln!("setup: bpf-linker {}", bpf_linker::VERSION);
    bpf_linker::ensure(&nightly, args.bpf_linker_root.as_deref())
        .context("setup step `bpf-linker` failed")?;

    eprintln!("setup: Debian packages");
    apt::ensure_packages().context("setup step `Debian packages` failed")?;

    eprintln!("setup: tracefs at {}", tracefs::MOUNT_POINT);
    tracefs::ensure_mounted().context("setup step `tracefs` failed")?;

    eprintln!("setup: done");
    Ok(())
}
