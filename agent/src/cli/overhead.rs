//! `mountscope overhead`: what the probes cost a mount. A bind mount + umount loop runs in a
//! private mount namespace, alternately without probes, with mountscope's probes, and with a
//! bpftrace script measuring the same syscalls, and the ratios come from the same run.

use std::{
    fs,
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Args;
use mountscope_agent::{
    collect::Collector,
    probes::{ProbeOptions, Probes, calibrate},
};
use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, unshare},
};
use serde::Serialize;

use super::args::FilterArgs;

#[derive(Debug, Args)]
pub struct OverheadArgs {
    /// Bind mount + umount pairs per round.
    #[arg(long, default_value_t = 3000)]
    iterations: u32,
    /// Rounds per condition; conditions alternate round by round.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Skip the bpftrace comparison.
    #[arg(long)]
    no_bpftrace: bool,
    /// Print the results as JSON on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    filters: FilterArgs,
}

/// bpftrace's version of the same measurement: per-thread start time at enter, a latency
/// histogram at exit, for mount and umount2.
const BPFTRACE_SCRIPT: &str = r#"
tracepoint:syscalls:sys_enter_mount, tracepoint:syscalls:sys_enter_umount { @start[tid] = nsecs; }
tracepoint:syscalls:sys_exit_mount, tracepoint:syscalls:sys_exit_umount /@start[tid]/ {
  @latency[probe] = hist(nsecs - @start[tid]); delete(@start[tid]);
}
BEGIN { printf("attached\n"); }
"#;

#[derive(Debug, Serialize)]
struct Report {
    kernel: String,
    tier: String,
    iterations: u32,
    rounds: u32,
    /// Median over rounds of the mean time of one bind mount + umount pair.
    bare_ns: f64,
    mountscope_ns: f64,
    bpftrace_ns: Option<f64>,
    mountscope_ratio: f64,
    bpftrace_ratio: Option<f64>,
    bpftrace_note: Option<String>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

/// Mean nanoseconds of one bind mount + umount pair over `iterations`.
fn time_loop(src: &Path, dst: &Path, iterations: u32) -> anyhow::Result<f64> {
    let started = Instant::now();
    for _ in 0..iterations {
        mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .with_context(|| format!("failed to bind-mount {}", dst.display()))?;
        umount2(dst, MntFlags::empty())
            .with_context(|| format!("failed to unmount {}", dst.display()))?;
    }
    Ok(started.elapsed().as_nanos() as f64 / iterations as f64)
}

/// Starts bpftrace and waits until its probes are attached.
fn start_bpftrace() -> anyhow::Result<Child> {
    let mut child = Command::new("bpftrace")
        .arg("-e")
        .arg(BPFTRACE_SCRIPT)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("failed to start bpftrace; install it with `apt-get install bpftrace`")?;
    let stdout = child.stdout.take().context("bpftrace has no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("attached") => break,
            Some(Ok(_)) => {}
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("bpftrace exited before attaching its probes");
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("bpftrace did not attach within 30 s");
        }
    }
    // Keep reading so bpftrace never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok(child)
}

fn stop_bpftrace(mut child: Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
    let _ = child.wait();
}

pub fn run(args: OverheadArgs) -> anyhow::Result<()> {
    if args.iterations == 0 || args.rounds == 0 {
        bail!("invalid --iterations or --rounds 0: give at least 1");
    }
    let mut options: ProbeOptions = args.filters.probe_options()?;
    options.lock_address = Some(
        calibrate::find_namespace_sem()
            .context("failed to find namespace_sem")?
            .address,
    );

    let scratch = std::env::temp_dir().join(format!("mountscope-overhead-{}", std::process::id()));
    let src = scratch.join("src");
    let dst = scratch.join("dst");
    fs::create_dir_all(&src)
        .and_then(|()| fs::create_dir_all(&dst))
        .with_context(|| {
            format!(
                "failed to create the scratch directory {}",
                scratch.display()
            )
        })?;

    let use_bpftrace = !args.no_bpftrace;
    let result = std::thread::spawn(move || measure(&args, &options, &src, &dst, use_bpftrace))
        .join()
        .map_err(|_| anyhow::anyhow!("the measuring thread panicked"));
    let _ = fs::remove_dir_all(&scratch);
    let (report, json) = result??;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "kernel {}, tier {}\n{} bind mount + umount pairs per round, {} rounds per condition, \
             median of round means\n",
            report.kernel, report.tier, report.iterations, report.rounds
        );
        println!("without probes        {:>10.2} µs", report.bare_ns / 1000.0);
        println!(
            "mountscope probes     {:>10.2} µs   ratio {:.3}",
            report.mountscope_ns / 1000.0,
            report.mountscope_ratio
        );
        match (report.bpftrace_ns, report.bpftrace_ratio) {
            (Some(ns), Some(r)) => {
                println!(
                    "bpftrace script       {:>10.2} µs   ratio {r:.3}",
                    ns / 1000.0
                )
            }
            _ => println!(
                "bpftrace script       not run: {}",
                report.bpftrace_note.as_deref().unwrap_or("")
            ),
        }
    }
    Ok(())
}

fn measure(
    args: &OverheadArgs,
    options: &ProbeOptions,
    src: &Path,
    dst: &Path,
    use_bpftrace: bool,
) -> anyhow::Result<(Report, bool)> {
    unshare(CloneFlags::CLONE_NEWNS).context("unshare(CLONE_NEWNS) failed")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("failed to make / private")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let _guard = runtime.enter();

    // Warm the dentry cache and the mount paths before timing anything.
    time_loop(src, dst, args.iterations.min(500))?;

    let (mut bare, mut probed, mut traced) = (Vec::new(), Vec::new(), Vec::new());
    let mut tier = String::new();
    let mut bpftrace_note = (!use_bpftrace).then(|| "--no-bpftrace was given".to_string());
    for _ in 0..args.rounds {
        bare.push(time_loop(src, dst, args.iterations)?);

        let probes = Probes::load(options).context("failed to load the kernel programs")?;
        tier = probes.tier.kind.label().to_string();
        let mut collector = Collector::new(probes)?;
        probed.push(time_loop(src, dst, args.iterations)?);
        collector.drain(|_| true);
        drop(collector);

        if bpftrace_note.is_none() {
            match start_bpftrace() {
                Ok(child) => {
                    let t = time_loop(src, dst, args.iterations);
                    stop_bpftrace(child);
                    traced.push(t?);
                }
                Err(e) => bpftrace_note = Some(format!("{e:#}")),
            }
        }
    }

    let bare_ns = median(bare);
    let mountscope_ns = median(probed);
    let bpftrace_ns = (!traced.is_empty()).then(|| median(traced));
    Ok((
        Report {
            kernel: mountscope_agent::collect::kernel_release(),
            tier,
            iterations: args.iterations,
            rounds: args.rounds,
            bare_ns,
            mountscope_ns,
            bpftrace_ns,
            mountscope_ratio: mountscope_ns / bare_ns,
            bpftrace_ratio: bpftrace_ns.map(|b| b / bare_ns),
            bpftrace_note,
        },
        args.json,
    ))
}
