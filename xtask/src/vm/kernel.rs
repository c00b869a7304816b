//! Stock Debian cloud kernels for the VM: resolved from the host's apt lists at run time,
//! downloaded with `apt-get download` and unpacked with `dpkg-deb -x` into the cache, never
//! installed on the host.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::command;

/// A kernel series the VM test boots, and how to find its current package.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Series {
    /// Debian 12's own kernel, `linux-image-6.1.0-<abi>-cloud-amd64`.
    #[value(name = "6.1")]
    Linux6_1,
    /// The 6.12 kernel Debian 12 ships in its security suite, named by the
    /// `linux-image-6.12-cloud-amd64` metapackage.
    #[value(name = "6.12")]
    Linux6_12,
}

impl Series {
    pub const ALL: [Series; 2] = [Series::Linux6_1, Series::Linux6_12];

    pub fn label(self) -> &'static str {
        match self {
            Series::Linux6_1 => "6.1",
            Series::Linux6_12 => "6.12",
        }
    }

    /// The metapackage whose `Depends:` names the current image package.
    fn metapackage(self) -> &'static str {
        match self {
            // In bookworm this metapackage tracks the 6.1 series.
            Series::Linux6_1 => "linux-image-cloud-amd64",
            Series::Linux6_12 => "linux-image-6.12-cloud-amd64",
        }
    }

    /// Prefix every image package of the series starts with, to check the resolved name.
    fn package_prefix(self) -> &'static str {
        match self {
            Series::Linux6_1 => "linux-image-6.1.",
            Series::Linux6_12 => "linux-image-6.12.",
        }
    }
}

/// An unpacked kernel image package.
pub struct Kernel {
    pub package: String,
    /// `uname -r` of the kernel, the directory name under `lib/modules`.
    pub release: String,
    pub vmlinuz: PathBuf,
    /// `overlay.ko`, decompressed when the package ships it xz-compressed.
    pub overlay_module: PathBuf,
}

/// Resolves the current package of `series`, downloads it unless the cache has it and unpacks
/// it. Returns `None` when the host's apt lists do not contain the series.
pub fn fetch(series: Series, cache: &Path) -> Result<Option<Kernel>> {
    let Some(package) = resolve(series)? else {
        return Ok(None);
    };
    let version = candidate_version(&package)?;
    let deb = download(&package, &version, &cache.join("debs"))?;
    let root = cache
        .join("kernels")
        .join(format!("{package}_{version}").replace(':', "%3a"));
    unpack(&deb, &root)?;
    locate(&package, &root).map(Some)
}

/// Returns the image package the series' metapackage depends on, or `None` when apt does not
/// know the metapackage or it has no install candidate.
fn resolve(series: Series) -> Result<Option<String>> {
    let metapackage = series.metapackage();
    let Some(depends) =
        command::probe(Command::new("apt-cache").args(["depends", "--important", metapackage]))
    else {
        return Ok(None);
    };
    let package = depends
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Depends: "))
        .map(str::trim)
        .find(|name| name.starts_with(series.package_prefix()) && name.ends_with("-cloud-amd64"));
    Ok(package.map(str::to_string))
}

/// Returns the version `apt-get download` fetches for `package`.
fn candidate_version(package: &str) -> Result<String> {
    let policy = command::output(Command::new("apt-cache").args(["policy", package]))?;
    let version = policy
        .lines()
        .find_map(|line| line.trim().strip_prefix("Candidate: "))
        .map(str::trim)
        .filter(|version| *version != "(none)")
        .with_context(|| {
            format!("apt has no install candidate for {package}; run `apt-get update` and retry")
        })?;
    Ok(version.to_string())
}

/// Downloads `package` at `version` into `dir` unless it is already there, and returns the
/// path of the `.deb`.
fn download(package: &str, version: &str, dir: &Path) -> Result<PathBuf> {
    // apt-get download names the file <package>_<version>_<arch>.deb, with `:` of an epoch
    // written as `%3a`.
    let deb = dir.join(format!(
        "{package}_{}_amd64.deb",
        version.replace(':', "%3a")
    ));
    if deb.is_file() {
        eprintln!("    cached {}", deb.display());
        return Ok(deb);
    }
    fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    command::run(
        Command::new("apt-get")
            .current_dir(dir)
            // The cache directory belongs to the user running xtask, which apt's `_apt`
            // sandbox user cannot write to.
            .args(["-o", "APT::Sandbox::User=root", "download"])
            .arg(format!("{package}={version}")),
    )
    .with_context(|| {
        format!(
            "failed to download {package} {version}; check that the Debian mirror is reachable \
             and run `apt-get update` if the version is no longer in the archive"
        )
    })?;
    if !deb.is_file() {
        bail!(
            "`apt-get download` did not write {}; the file name apt chose differs from the \
             expected one",
            deb.display()
        );
    }
    Ok(deb)
}

/// Unpacks `deb` into `root` unless a previous run finished doing so.
fn unpack(deb: &Path, root: &Path) -> Result<()> {
    let done = root.join(".unpacked");
    if done.is_file() {
        return Ok(());
    }
    if root.exists() {
        fs::remove_dir_all(root)
            .with_context(|| format!("failed to remove the partial {}", root.display()))?;
    }
    fs::create_dir_all(root).with_context(|| format!("failed to create {}", root.display()))?;
    command::run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(root))?;
    fs::write(&done, b"").with_context(|| format!("failed to write {}", done.display()))?;
    Ok(())
}

/// Finds the kernel image and `overlay.ko` in an unpacked package.
fn locate(package: &str, root: &Path) -> Result<Kernel> {
    let modules = root.join("lib/modules");
    let release = fs::read_dir(&modules)
        .with_context(|| format!("failed to read {}", modules.display()))?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .next()
        .with_context(|| format!("{} contains no kernel release", modules.display()))?;

    let vmlinuz = root.join(format!("boot/vmlinuz-{release}"));
    if !vmlinuz.is_file() {
        bail!("{package} contains no {}", vmlinuz.display());
    }

    let overlay_dir = modules.join(&release).join("kernel/fs/overlayfs");
    let plain = overlay_dir.join("overlay.ko");
    let compressed = overlay_dir.join("overlay.ko.xz");
    if !plain.is_file() {
        if !compressed.is_file() {
            bail!(
                "{package} contains no overlay.ko in {}",
                overlay_dir.display()
            );
        }
        // -k keeps the .xz file, so the unpacked tree stays as dpkg-deb left it.
        command::run(Command::new("xz").args(["-d", "-k"]).arg(&compressed))
            .context("failed to decompress overlay.ko.xz; `cargo xtask setup` installs xz-utils")?;
    }

    Ok(Kernel {
        package: package.to_string(),
        release,
        vmlinuz,
        overlay_module: plain,
    })
}
