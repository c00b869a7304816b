//! `cargo xtask test`: setup, the format and lint checks, and every test, in that order. This is
//! what CI runs (`.ci/run`).

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{command, privilege, setup, vm};

/// The eBPF crate builds only for `bpfel-unknown-none`, so the host-target steps skip it.
const EBPF_PACKAGE: &str = "mountscope-ebpf";

/// How a step ended when it did not fail.
enum Outcome {
    Passed,
    Skipped(&'static str),
}

struct Step {
    name: &'static str,
    run: fn() -> Result<Outcome>,
}

const STEPS: &[Step] = &[
    Step {
        name: "setup",
        run: setup_step,
    },
    Step {
        name: "fmt",
        run: fmt,
    },
    Step {
        name: "clippy",
        run: clippy,
    },
    Step {
        name: "clippy-ebpf",
        run: clippy_ebpf,
    },
    Step {
        name: "test",
        run: test,
    },
    Step {
        name: "vm-test",
        run: vm_test,
    },
];

/// Runs the steps in order, stops at the first failure and prints each step's duration.
pub fn run() -> Result<()> {
    let mut finished = Vec::new();
    for step in STEPS {
        eprintln!("test: step {}", step.name);
        let start = Instant::now();
        let result = (step.run)();
        let elapsed = start.elapsed();
        match result {
            Ok(outcome) => finished.push((step.name, outcome, elapsed)),
            Err(error) => {
                print_summary(&finished);
                print_row(step.name, "FAILED", elapsed, "");
                return Err(error).with_context(|| format!("test step `{}` failed", step.name));
            }
        }
    }
    print_summary(&finished);
    Ok(())
}

fn print_summary(finished: &[(&str, Outcome, Duration)]) {
    eprintln!("test: summary");
    for (name, outcome, elapsed) in finished {
        match outcome {
            Outcome::Passed => print_row(name, "passed", *elapsed, ""),
            Outcome::Skipped(reason) => print_row(name, "skipped", *elapsed, reason),
        }
    }
}

fn print_row(name: &str, result: &str, elapsed: Duration, note: &str) {
    let duration = format_duration(elapsed);
    let row = format!("  {name:<12} {result:<8} {duration:>8}  {note}");
    eprintln!("{}", row.trim_end());
}

fn format_duration(elapsed: Duration) -> String {
    format!("{:.1} s", elapsed.as_secs_f64())
}

fn setup_step() -> Result<Outcome> {
    setup::run(&setup::Args::default())?;
    Ok(Outcome::Passed)
}

fn fmt() -> Result<Outcome> {
    command::run(crate::cargo().args(["fmt", "--all", "--check"]))
        .context("formatting differs; run `cargo fmt --all`")?;
    Ok(Outcome::Passed)
}

fn clippy() -> Result<Outcome> {
    command::run(
        crate::cargo()
            .args([
                "clippy",
                "--workspace",
                "--exclude",
                EBPF_PACKAGE,
                "--all-targets",
            ])
            .args(["--", "-D", "warnings"]),
    )?;
    Ok(Outcome::Passed)
}

fn clippy_ebpf() -> Result<Outcome> {
    command::run(
        Command::new("cargo")
            .current_dir(crate::workspace_root())
            .args(["+nightly", "clippy", "--package", EBPF_PACKAGE])
            .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
            .args(["--", "-D", "warnings"]),
    )?;
    Ok(Outcome::Passed)
}

/// Runs every test in the workspace as root, so the privileged tests in `tests/` can load the
/// real programs and make real mounts. When not root, cargo runs each test binary through `sudo`.
fn test() -> Result<Outcome> {
    // The end-to-end tests run the `mountscope` binary itself, which `cargo test` does not
    // build for another package's tests, so it is built first and named in MOUNTSCOPE_BIN.
    let binary = crate::build::build(false)?;
    let mut cargo = crate::cargo();
    cargo
        .args(["test", "--workspace", "--exclude", EBPF_PACKAGE])
        .env("MOUNTSCOPE_BIN", &binary)
        // The privileged tests load the real eBPF object, which this variable leaves out.
        .env_remove("AYA_BUILD_SKIP");
    if !privilege::is_root() {
        if !command::in_path("sudo") {
            bail!(
                "the privileged tests need root, but this is not root and `sudo` is not \
                 installed; run `cargo xtask test` as root"
            );
        }
        cargo.env(runner_variable()?, "sudo -E");
    }
    command::run(&mut cargo)?;
    Ok(Outcome::Passed)
}

/// Runs the exact-tier tests in VMs with stock Debian kernels, where fentry and kprobes work.
fn vm_test() -> Result<Outcome> {
    let summary = vm::run(&vm::Args::default())?;
    if summary.passed.is_empty() {
        return Ok(Outcome::Skipped("apt lists no Debian cloud kernel"));
    }
    Ok(Outcome::Passed)
}

/// Returns `CARGO_TARGET_<HOST>_RUNNER`, the variable that makes cargo start test binaries
/// through another program.
fn runner_variable() -> Result<String> {
    let version = command::output(Command::new("rustc").arg("-vV"))?;
    let host = version
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .context("`rustc -vV` printed no `host:` line")?;
    Ok(format!(
        "CARGO_TARGET_{}_RUNNER",
        host.to_uppercase().replace(['-', '.'], "_")
    ))
}
