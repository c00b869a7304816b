//! bpf-linker, which links the eBPF programs. It is built against the nightly toolchain's own
//! LLVM shared library, so the machine needs no separate LLVM installation.

use std::{
    ffi::OsString,
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use super::toolchain::Nightly;
use crate::command;

/// The bpf-linker release that setup installs.
pub const VERSION: &str = "0.13.0";

/// The LLVM majors bpf-linker 0.13.0 has a `llvm-<major>` cargo feature for.
const SUPPORTED_LLVM_MAJORS: std::ops::RangeInclusive<u32> = 21..=23;

/// Builds bpf-linker unless the binary in `root/bin` (or in `PATH` without `root`) runs and
/// reports [`VERSION`].
///
/// A bpf-linker built for an older nightly stops running once rustup removes that nightly's
/// `libLLVM`, so "runs" is part of the check.
pub fn ensure(nightly: &Nightly, root: Option<&Path>) -> Result<()> {
    let binary = root.map_or_else(
        || PathBuf::from("bpf-linker"),
        |root| root.join("bin/bpf-linker"),
    );
    match installed_version(&binary) {
        Some(version) if version == VERSION => {
            eprintln!("    already installed: {}", binary.display());
            return Ok(());
        }
        Some(version) => eprintln!("    {} reports version {version}", binary.display()),
        None => eprintln!("    {} not found or does not run", binary.display()),
    }

    build(nightly, root)?;

    match installed_version(&binary) {
        Some(version) if version == VERSION => Ok(()),
        _ if root.is_none() => bail!(
            "bpf-linker {VERSION} was installed into cargo's bin directory, but `bpf-linker \
             --version` in PATH does not report it; add `$CARGO_HOME/bin` (by default \
             `~/.cargo/bin`) to PATH"
        ),
        _ => bail!(
            "`{} --version` does not report {VERSION} after the install",
            binary.display()
        ),
    }
}

/// Runs `cargo +nightly install bpf-linker` against the nightly's `libLLVM`.
fn build(nightly: &Nightly, root: Option<&Path>) -> Result<()> {
    if !SUPPORTED_LLVM_MAJORS.contains(&nightly.llvm_major) {
        bail!(
            "the nightly toolchain uses LLVM {}, but bpf-linker {VERSION} supports only LLVM {} to \
             {}; install a nightly built with one of those, or update `VERSION` in xtask",
            nightly.llvm_major,
            SUPPORTED_LLVM_MAJORS.start(),
            SUPPORTED_LLVM_MAJORS.end()
        );
    }

    let sysroot_lib = nightly.sysroot.join("lib");
    let llvm_prefix = link_libllvm(&sysroot_lib)?;

    // The rpath lets bpf-linker find the nightly's libLLVM without LD_LIBRARY_PATH.
    let mut rustflags = OsString::from("-C link-arg=-Wl,-rpath,");
    rustflags.push(&sysroot_lib);

    let mut install = Command::new("cargo");
    install
        .env("LLVM_PREFIX", &llvm_prefix)
        .env("RUSTFLAGS", rustflags)
        // CARGO_ENCODED_RUSTFLAGS takes precedence over RUSTFLAGS, and CARGO_TARGET_DIR would
        // move the build from cargo's temporary directory into the developer's target dir.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .args(["+nightly", "install", "bpf-linker", "--version", VERSION])
        .args(["--locked", "--force", "--no-default-features", "--features"])
        .arg(format!("llvm-{}", nightly.llvm_major));
    if let Some(root) = root {
        install.arg("--root").arg(root);
    }

    eprintln!("    building bpf-linker {VERSION}, about 1 min on an idle 2-core machine");
    command::run(&mut install).context(
        "failed to build bpf-linker; check that crates.io is reachable and that a C compiler \
         (`cc`) is installed, then run `cargo xtask setup` again",
    )
}

/// Points `<cache>/llvm/lib/libLLVM.so` at the nightly's versioned `libLLVM` and returns
/// `<cache>/llvm`, the `LLVM_PREFIX` that bpf-linker's build script reads.
fn link_libllvm(sysroot_lib: &Path) -> Result<PathBuf> {
    let library = find_libllvm(sysroot_lib)?;
    let prefix = cache_dir()?.join("llvm");
    let lib_dir = prefix.join("lib");
    fs::create_dir_all(&lib_dir)
        .with_context(|| format!("failed to create {}", lib_dir.display()))?;

    // Replaced every time, since the nightly it pointed to may have been updated.
    let link = lib_dir.join("libLLVM.so");
    if fs::symlink_metadata(&link).is_ok() {
        fs::remove_file(&link).with_context(|| format!("failed to remove {}", link.display()))?;
    }
    symlink(&library, &link)
        .with_context(|| format!("failed to link {} to {}", link.display(), library.display()))?;
    eprintln!("    {} -> {}", link.display(), library.display());
    Ok(prefix)
}

/// Finds `libLLVM.so.<LLVM version>-rust-<rustc version>` in the nightly's `lib` directory.
fn find_libllvm(sysroot_lib: &Path) -> Result<PathBuf> {
    let entries = fs::read_dir(sysroot_lib)
        .with_context(|| format!("failed to read {}", sysroot_lib.display()))?;
    let mut libraries = Vec::new();
    for entry in entries {
        let name = entry?.file_name();
        if name
            .to_str()
            .is_some_and(|name| name.starts_with("libLLVM.so.") && name.contains("-rust-"))
        {
            libraries.push(sysroot_lib.join(name));
        }
    }
    libraries.sort();
    match libraries.as_slice() {
        [library] => Ok(library.clone()),
        [] => bail!(
            "no libLLVM.so.<version>-rust-<version> in {}; reinstall the nightly toolchain with \
             `rustup toolchain install nightly --force`",
            sysroot_lib.display()
        ),
        _ => bail!(
            "more than one libLLVM in {}: {libraries:?}; remove the stale ones",
            sysroot_lib.display()
        ),
    }
}

/// Returns `$XDG_CACHE_HOME/mountscope`, or `~/.cache/mountscope` without it.
fn cache_dir() -> Result<PathBuf> {
    if let Some(cache) = std::env::var_os("XDG_CACHE_HOME").filter(|dir| !dir.is_empty()) {
        return Ok(PathBuf::from(cache).join("mountscope"));
    }
    let home = std::env::var_os("HOME")
        .filter(|dir| !dir.is_empty())
        .context("neither XDG_CACHE_HOME nor HOME is set, so there is no cache directory")?;
    Ok(PathBuf::from(home).join(".cache/mountscope"))
}

/// Returns the version `binary --version` reports (`bpf-linker 0.13.0` gives `0.13.0`), or
/// `None` if it is missing or fails to run.
fn installed_version(binary: &Path) -> Option<String> {
    let output = command::probe(Command::new(binary).arg("--version"))?;
    let version = output.trim().strip_prefix("bpf-linker ")?;
    Some(version.to_owned())
}
