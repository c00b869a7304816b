//! `cargo xtask install`: a release build of `mountscope` copied to `<prefix>/bin`.

use std::{fs, os::unix::fs::PermissionsExt as _, path::PathBuf};

use anyhow::{Context as _, Result};

use crate::{build, setup};

#[derive(clap::Args)]
pub struct Args {
    /// Installation prefix; the binary goes to `<PREFIX>/bin/mountscope`.
    #[arg(long, value_name = "PREFIX", default_value = "/usr/local")]
    pub prefix: PathBuf,
}

/// Runs setup and a release build, then installs the binary.
pub fn run(args: &Args) -> Result<()> {
    setup::run(&setup::Args::default())?;
    let binary = build::build(true)?;

    let bin_dir = args.prefix.join("bin");
    let target = bin_dir.join("mountscope");
    eprintln!("install: {} -> {}", binary.display(), target.display());
    let next_step = "run it as root or pick a writable --prefix such as ~/.local";
    fs::create_dir_all(&bin_dir)
        .with_context(|| format!("failed to create {}; {next_step}", bin_dir.display()))?;

    // Copy next to the target, then rename over it: writing into a running binary fails with
    // ETXTBSY, and the rename never leaves a half-written file behind.
    let partial = bin_dir.join(".mountscope.partial");
    fs::copy(&binary, &partial)
        .with_context(|| format!("failed to write {}; {next_step}", partial.display()))?;
    fs::set_permissions(&partial, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("failed to make {} executable", partial.display()))?;
    fs::rename(&partial, &target).with_context(|| {
        format!(
            "failed to move {} to {}",
            partial.display(),
            target.display()
        )
    })?;

    eprintln!("install: done; run `sudo {} watch`", target.display());
    Ok(())
}
