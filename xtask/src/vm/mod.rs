//! `cargo xtask vm-test`: the exact-tier tests in a VM booted from a stock Debian cloud kernel,
//! where fentry and kprobes work, under qemu's software emulation (TCG).
//!
//! Kernels and unpacked packages are cached under `~/.cache/mountscope/vm`, so only the first
//! run downloads anything.

mod initramfs;
mod kernel;
mod qemu;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use self::{
    initramfs::Initramfs,
    kernel::{Kernel, Series},
};
use crate::{build, command};

/// The guest's `/init`.
const INIT_SCRIPT: &str = include_str!("init.sh");
/// Source of the static helper that ends qemu through the isa-debug-exit device.
const EXIT_HELPER_SOURCE: &str = include_str!("exit_qemu.c");
/// The integration test binary the guest runs, from `tests/tests/exact_tier.rs`.
const TEST_TARGET: &str = "exact_tier";
const TEST_PACKAGE: &str = "mountscope-tests";

#[derive(clap::Args)]
pub struct Args {
    /// Kernel series to boot; repeat the option for several. Defaults to every series the apt
    /// lists contain.
    #[arg(long = "kernel", value_enum)]
    pub kernels: Vec<Series>,
    /// Seconds each VM may run before it is killed.
    #[arg(long, default_value_t = 240)]
    pub timeout_secs: u64,
    /// Virtual CPUs of the VM. More than the host's cores slows the run down under TCG.
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    /// Also run the measurements: the fentry programs' cost on an mmap loop,
    /// `mountscope bench --builders 4 --duration 5` at 20 and at 50 layers, and
    /// `mountscope overhead --no-bpftrace --rounds 3 --iterations 1000`.
    #[arg(long)]
    pub bench: bool,
    /// Print every console line, kernel messages included.
    #[arg(long)]
    pub verbose: bool,
    /// Build the guest's binaries with the dev profile instead of the release profile. Under
    /// software emulation the tests then run about three times longer (measured on 6.12).
    #[arg(long)]
    pub dev: bool,
}

impl Default for Args {
    fn default() -> Args {
        Args {
            kernels: Vec::new(),
            timeout_secs: 240,
            cpus: 2,
            bench: false,
            verbose: false,
            dev: false,
        }
    }
}

/// Releases of the kernels whose guests passed; series apt does not list are left out.
pub struct Summary {
    pub passed: Vec<String>,
}

/// Builds the binaries and the initramfs, boots each kernel and fails unless every guest
/// reports that its checks passed.
pub fn run(args: &Args) -> Result<Summary> {
    let start = Instant::now();
    check_tools()?;
    let cache = cache_dir()?;

    let mountscope = build::build(!args.dev)?;
    let test_binary = build_test_binary(!args.dev)?;
    let exit_helper = build_exit_helper(&cache)?;
    let busybox = find_busybox()?;

    let series = if args.kernels.is_empty() {
        Series::ALL.to_vec()
    } else {
        args.kernels.clone()
    };
    let mut summary = Summary { passed: Vec::new() };
    let mut failed = Vec::new();
    for series in series {
        eprintln!("vm-test: Linux {}", series.label());
        let Some(kernel) = kernel::fetch(series, &cache)? else {
            eprintln!(
                "    note: apt lists no linux-image-{}-cloud-amd64 package, so Linux {} is \
                 skipped; bookworm-security must be in the apt sources for 6.12",
                series.label(),
                series.label()
            );
            continue;
        };

        let run_dir = cache.join("runs").join(&kernel.release);
        fs::create_dir_all(&run_dir)
            .with_context(|| format!("failed to create {}", run_dir.display()))?;
        let image = run_dir.join("initramfs.cpio.gz");
        let files = GuestFiles {
            mountscope: &mountscope,
            test_binary: &test_binary,
            exit_helper: &exit_helper,
            busybox: &busybox,
        };
        write_initramfs(&kernel, &files, &run_dir, &image)?;

        let boot = qemu::boot(&qemu::BootOptions {
            vmlinuz: &kernel.vmlinuz,
            initramfs: &image,
            log: &run_dir.join("console.log"),
            timeout: Duration::from_secs(args.timeout_secs),
            cpus: args.cpus,
            bench: args.bench,
            verbose: args.verbose,
        })
        .with_context(|| format!("the VM with {} failed", kernel.package))?;
        let verdict = if boot.passed { "passed" } else { "FAILED" };
        eprintln!(
            "vm-test: {} {verdict} in {:.1} s (console log in {})",
            kernel.release,
            boot.elapsed.as_secs_f64(),
            run_dir.join("console.log").display()
        );
        if boot.passed {
            summary.passed.push(kernel.release);
        } else {
            failed.push(kernel.release);
        }
    }

    eprintln!("vm-test: took {:.1} s", start.elapsed().as_secs_f64());
    if !failed.is_empty() {
        bail!(
            "checks failed in the VM with {}; the lines starting with \
             MOUNTSCOPE-VM-CHECK-FAILED above name them",
            failed.join(" and ")
        );
    }
    Ok(summary)
}

/// Fails with the package to install when a program the VM test runs is missing.
fn check_tools() -> Result<()> {
    for (program, package) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("apt-get", "apt"),
        ("dpkg-deb", "dpkg"),
        ("gcc", "gcc"),
        ("objcopy", "binutils"),
        ("xz", "xz-utils"),
        ("gzip", "gzip"),
    ] {
        if !command::in_path(program) {
            bail!("`{program}` is not installed; run `cargo xtask setup` or install {package}");
        }
    }
    Ok(())
}

/// Returns `~/.cache/mountscope/vm`, creating it.
fn cache_dir() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set; the kernel cache lives in it")?;
    let cache = PathBuf::from(home).join(".cache/mountscope/vm");
    fs::create_dir_all(&cache).with_context(|| format!("failed to create {}", cache.display()))?;
    Ok(cache)
}

/// Builds the exact-tier integration test without running it and returns its path.
fn build_test_binary(release: bool) -> Result<PathBuf> {
    eprintln!("vm-test: build the {TEST_TARGET} test binary");
    let mut cargo = crate::cargo();
    cargo
        .args(["test", "--package", TEST_PACKAGE, "--test", TEST_TARGET])
        .args(["--no-run", "--message-format=json-render-diagnostics"])
        .env_remove("AYA_BUILD_SKIP")
        .stdout(Stdio::piped());
    if release {
        cargo.arg("--release");
    }
    let messages = command::output(&mut cargo)?;
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| {
            message["reason"] == "compiler-artifact" && message["target"]["name"] == TEST_TARGET
        })
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .with_context(|| format!("cargo reported no executable for the {TEST_TARGET} test"))
}

/// Compiles the exit helper statically into the cache and returns its path.
fn build_exit_helper(cache: &Path) -> Result<PathBuf> {
    let source = cache.join("exit_qemu.c");
    let binary = cache.join("exit-qemu");
    fs::write(&source, EXIT_HELPER_SOURCE)
        .with_context(|| format!("failed to write {}", source.display()))?;
    command::run(
        Command::new("gcc")
            .args(["-static", "-O2", "-o"])
            .arg(&binary)
            .arg(&source),
    )
    .context("failed to build the static exit helper; it needs libc6-dev for a static libc")?;
    Ok(binary)
}

/// Returns the path of the statically linked busybox from `busybox-static`.
fn find_busybox() -> Result<PathBuf> {
    for candidate in ["/bin/busybox", "/usr/bin/busybox"] {
        let path = Path::new(candidate);
        if path.is_file() {
            // ldd fails on a static binary, so a listing means a dynamic busybox.
            if command::probe(Command::new("ldd").arg(path)).is_some() {
                bail!(
                    "{candidate} is dynamically linked; install busybox-static, which the \
                     initramfs needs"
                );
            }
            return Ok(path.to_path_buf());
        }
    }
    bail!("busybox is not installed; run `cargo xtask setup` or install busybox-static")
}

/// Host files copied into the guest.
struct GuestFiles<'a> {
    mountscope: &'a Path,
    test_binary: &'a Path,
    exit_helper: &'a Path,
    busybox: &'a Path,
}

fn write_initramfs(
    kernel: &Kernel,
    files: &GuestFiles,
    run_dir: &Path,
    image: &Path,
) -> Result<()> {
    let start = Instant::now();
    let mut initramfs = Initramfs::new();
    initramfs.add_file("bin/busybox", files.busybox)?;
    initramfs.add_file("bin/exit-qemu", files.exit_helper)?;
    initramfs.add_file("lib/overlay.ko", &kernel.overlay_module)?;
    initramfs.add_executable("bin/mountscope", files.mountscope, run_dir)?;
    initramfs.add_executable(&format!("bin/{TEST_TARGET}"), files.test_binary, run_dir)?;
    initramfs.add_bytes("init", INIT_SCRIPT.as_bytes().to_vec(), 0o755);
    initramfs.write(image)?;

    let size_mib = fs::metadata(image).map(|m| m.len()).unwrap_or(0) as f64 / (1 << 20) as f64;
    eprintln!(
        "    wrote {} ({size_mib:.1} MiB) in {:.1} s",
        image.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
