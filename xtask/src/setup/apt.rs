//! Debian packages the project's tools and tests call.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{command, privilege};

/// Packages the project needs, all in Debian 12 (bookworm) main. The VM test with a stock
/// distribution kernel (`cargo xtask vm-test`) needs busybox-static for its initramfs and xz-utils,
/// because the 6.12 cloud kernel's modules are xz-compressed.
const REQUIRED: &[&str] = &[
    "tmux",
    "bpftrace",
    "umoci",
    "skopeo",
    "busybox-static",
    "xz-utils",
    "zstd",
    "iproute2",
];

/// Packages that are installed when the archive has them and skipped otherwise.
const OPTIONAL: &[&str] = &["linux-perf"];

/// Packages installed from `<codename>-backports`. The machine image has qemu-utils 10.0 from
/// bookworm-backports, and bookworm's qemu-system-x86 7.2 cannot be installed beside it without
/// removing it, so qemu for the VM test comes from the same suite.
const BACKPORTS: &[&str] = &["qemu-system-x86"];

/// The Debian archive the backports suite is read from.
const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";

/// Installs the packages in [`REQUIRED`], [`OPTIONAL`] and [`BACKPORTS`] that are missing,
/// running `apt-get update` only when something is missing.
pub fn ensure_packages() -> Result<()> {
    let missing_required = missing(REQUIRED);
    let missing_optional = missing(OPTIONAL);
    let missing_backports = missing(BACKPORTS);
    let all_missing = [&missing_required[..], &missing_optional, &missing_backports].concat();
    if all_missing.is_empty() {
        let all = [REQUIRED, OPTIONAL, BACKPORTS].concat();
        eprintln!("    all installed: {}", all.join(" "));
        return Ok(());
    }
    eprintln!("    missing: {}", all_missing.join(" "));

    let mut update = apt_get()?;
    update.arg("update");
    command::run(&mut update).context(
        "failed to update the apt package lists; check that the Debian mirrors in the files under \
         /etc/apt are reachable",
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
        apt_install.args(INSTALL_FLAGS).args(&install);
        command::run(&mut apt_install).with_context(|| {
            format!(
                "failed to install {}; run `apt-get install {}` as root to see why",
                install.join(" "),
                install.join(" ")
            )
        })?;
    }
    if !missing_backports.is_empty() {
        install_from_backports(&missing_backports)?;
    }

    let still_missing = missing(&[&missing_required[..], &missing_backports].concat());
    if !still_missing.is_empty() {
        bail!(
            "still not installed after apt-get install: {}",
            still_missing.join(" ")
        );
    }
    Ok(())
}

/// `apt-get install` flags. `--no-remove` makes apt fail rather than remove an installed
/// package that conflicts with a new one.
const INSTALL_FLAGS: &[&str] = &["install", "--yes", "--no-install-recommends", "--no-remove"];

/// Installs `packages` from `<codename>-backports` without adding that suite to the system's
/// apt sources: the system's sources and the backports suite are copied into a temporary
/// directory that this apt-get run alone reads.
fn install_from_backports(packages: &[&str]) -> Result<()> {
    let suite = format!("{}-backports", debian_codename()?);
    let dir = std::env::temp_dir().join(format!("mountscope-apt-{}", std::process::id()));
    let result = (|| {
        let options = backports_options(&dir, &suite)?;

        let mut update = apt_get()?;
        update.args(&options).arg("update");
        command::run(&mut update).with_context(|| {
            format!("failed to read the {suite} package lists from {DEBIAN_MIRROR}")
        })?;

        let mut install = apt_get()?;
        install
            .args(&options)
            .args(INSTALL_FLAGS)
            .args(["--target-release", &suite])
            .args(packages);
        command::run(&mut install)
            .with_context(|| format!("failed to install {} from {suite}", packages.join(" ")))
    })();
    // The directory only ever holds package lists, so a failure to remove it is harmless.
    let _ = fs::remove_dir_all(&dir);
    result
}

/// Creates `dir` with the system's apt sources plus `suite` and returns the `apt-get` options
/// that point apt at it.
fn backports_options(dir: &Path, suite: &str) -> Result<Vec<String>> {
    let parts = dir.join("sources.list.d");
    let lists = dir.join("lists");
    fs::create_dir_all(lists.join("partial"))
        .with_context(|| format!("failed to create {}", lists.display()))?;
    fs::create_dir_all(&parts).with_context(|| format!("failed to create {}", parts.display()))?;

    for source in system_sources()? {
        let name = source
            .file_name()
            .context("apt source without a file name")?;
        fs::copy(&source, parts.join(name))
            .with_context(|| format!("failed to copy {}", source.display()))?;
    }
    let backports = parts.join("mountscope-backports.list");
    fs::write(&backports, format!("deb {DEBIAN_MIRROR} {suite} main\n"))
        .with_context(|| format!("failed to write {}", backports.display()))?;

    Ok(vec![
        "-o".into(),
        "Dir::Etc::sourcelist=-".into(),
        "-o".into(),
        format!("Dir::Etc::sourceparts={}", parts.display()),
        "-o".into(),
        format!("Dir::State::lists={}", lists.display()),
    ])
}

/// Returns `/etc/apt/sources.list` (when present) and the `.list` and `.sources` files in
/// `/etc/apt/sources.list.d`.
fn system_sources() -> Result<Vec<PathBuf>> {
    let mut sources = Vec::new();
    let main_list = Path::new("/etc/apt/sources.list");
    if main_list.is_file() {
        sources.push(main_list.to_path_buf());
    }
    let parts = Path::new("/etc/apt/sources.list.d");
    if parts.is_dir() {
        for entry in fs::read_dir(parts).context("failed to read /etc/apt/sources.list.d")? {
            let path = entry?.path();
            if path
                .extension()
                .is_some_and(|ext| ext == "list" || ext == "sources")
            {
                sources.push(path);
            }
        }
    }
    Ok(sources)
}

/// Returns `VERSION_CODENAME` from `/etc/os-release`, such as `bookworm`.
fn debian_codename() -> Result<String> {
    let os_release =
        fs::read_to_string("/etc/os-release").context("failed to read /etc/os-release")?;
    os_release
        .lines()
        .find_map(|line| line.strip_prefix("VERSION_CODENAME="))
        .map(|codename| codename.trim_matches('"').to_owned())
        .filter(|codename| !codename.is_empty())
        .context("/etc/os-release has no VERSION_CODENAME, so the backports suite is unknown")
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
