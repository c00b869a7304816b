//! Debian packages the project's tools and tests call.

use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::{command, privilege};

/// Packages the project needs, all in Debian 12 (bookworm) main. The VM test with a stock
/// distribution kernel (not written yet) needs qemu-system-x86, busybox-static for its
/// initramfs and xz-utils, because the 6.12 cloud kernel's modules are xz-compressed.
const REQUIRED: &[&str] = &[
    "tmux",
    "bpftrace",
    "umoci",
    "skopeo",
    "qemu-system-x86",
    "busybox-static",
    "xz-utils",
    "zstd",
    "iproute2",
];

/// Packages that are installed when the archive has them and skipped otherwise.
const OPTIONAL: &[&str] = &["linux-perf"];

/// Installs the packages in [`REQUIRED`] and [`OPTIONAL`] that are missing, running `apt-get
/// update` only when something is missing.
pub fn ensure_packages() -> Result<()> {
    let missing_required = missing(REQUIRED);
    let missing_optional = missing(OPTIONAL);
    if missing_required.is_empty() && missing_optional.is_empty() {
        eprintln!(
            "    all installed: {}",
            [REQUIRED, OPTIONAL].concat().join(" ")
        );
        return Ok(());
    }
    eprintln!(
        "    missing: {}",
        [&missing_required[..], &missing_optional[..]]
            .concat()
            .join(" ")
    );

    let mut update = apt_get()?;
    update.arg("update");
    command::run(&mut update).context(
        "failed to update the apt package lists; check that the Debian mirrors in \
         /etc/apt/sources.list are reachable",
    )?;

    let mut install = missing_required.clone();
    for package in missing_optional {
        if has_candidate(package) {
            install.push(package);
        } else {
            eprintln!("    note: optional package {package} is not in the archive; skipped");
        }
    }
    if !install.is_empty() {
        let mut apt_install = apt_get()?;
        apt_install
            .args(["install", "--yes", "--no-install-recommends"])
            .args(&install);
        command::run(&mut apt_install).with_context(|| {
            format!(
                "failed to install {}; run `apt-get install {}` as root to see why",
                install.join(" "),
                install.join(" ")
            )
        })?;
    }

    let still_missing = missing(&missing_required);
    if !still_missing.is_empty() {
        bail!(
            "still not installed after apt-get install: {}",
            still_missing.join(" ")
        );
    }
    Ok(())
}

/// Returns the packages in `packages` that dpkg does not report as installed.
fn missing<'a>(packages: &[&'a str]) -> Vec<&'a str> {
    packages
        .iter()
        .copied()
        .filter(|package| !is_installed(package))
        .collect()
}

/// Returns whether dpkg reports `package` as `install ok installed`; a package that was
/// removed but left its configuration files reports `deinstall ok config-files`.
fn is_installed(package: &str) -> bool {
    command::probe(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_some_and(|status| status.trim() == "install ok installed")
}

/// Returns whether `apt-cache policy` shows a version of `package` that apt can install.
fn has_candidate(package: &str) -> bool {
    let Some(policy) = command::probe(Command::new("apt-cache").args(["policy", package])) else {
        return false;
    };
    policy.lines().any(|line| {
        line.trim()
            .strip_prefix("Candidate:")
            .is_some_and(|candidate| candidate.trim() != "(none)")
    })
}

/// Returns `apt-get` run as root and without interactive prompts.
fn apt_get() -> Result<Command> {
    let mut command = privilege::as_root("env", "installing Debian packages")?;
    command.args(["DEBIAN_FRONTEND=noninteractive", "apt-get"]);
    Ok(command)
}
