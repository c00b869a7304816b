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
    /// Medians over rounds of the mean wall-clock and CPU time of one bind mount + umount
    /// pair, by condition.
    bare: Figures,
    mountscope: Figures,
    bpftrace: Option<Figures>,
    /// Ratios to `bare`, of wall-clock time and of the mounting thread's CPU time.
    mountscope_wall_ratio: f64,
    mountscope_cpu_ratio: f64,
    bpftrace_wall_ratio: Option<f64>,
    bpftrace_cpu_ratio: Option<f64>,
    bpftrace_note: Option<String>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

/// CPU time this thread has used, in nanoseconds. Probes run in the context of the syscall
/// they trace, so their cost shows in the mounting thread's CPU time, which other load on the
/// machine disturbs far less than wall-clock time.
fn thread_cpu_ns() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into valid memory.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e9 + ts.tv_nsec as f64
}

/// Mean wall-clock and CPU nanoseconds of one bind mount + umount pair over `iterations`.
fn time_loop(src: &Path, dst: &Path, iterations: u32) -> anyhow::Result<Timing> {
    let started = Instant::now();
    let cpu_started = thread_cpu_ns();
    for _ in 0..iterations {
        mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .with_context(|| format!("failed to bind-mount {}", dst.display()))?;
        umount2(dst, MntFlags::empty())
            .with_context(|| format!("failed to unmount {}", dst.display()))?;
    }
    Ok(Timing {
        wall_ns: started.elapsed().as_nanos() as f64 / iterations as f64,
        cpu_ns: (thread_cpu_ns() - cpu_started) / iterations as f64,
    })
}

#[derive(Clone, Copy)]
struct Timing {
    wall_ns: f64,
    cpu_ns: f64,
}

/// Medians of the round means of one condition.
#[derive(Debug, Serialize)]
struct Figures {
    wall_ns: f64,
    cpu_ns: f64,
}

fn figures(rounds: &[Timing]) -> Figures {
    Figures {
        wall_ns: median(rounds.iter().map(|t| t.wall_ns).collect()),
        cpu_ns: median(rounds.iter().map(|t| t.cpu_ns).collect()),
    }
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
    // A thread reads the rest of bpftrace's output so it cannot block on a full pipe.
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
        print!("{}", render(&report));
    }
    Ok(())
}

/// Formats the report as a table: wall-clock and CPU time per pair, with ratios to no probes.
fn render(report: &Report) -> String {
    let us = |ns: f64| ns / 1000.0;
    let mut out = String::from("                      wall µs  ratio     CPU µs  ratio\n");
    out.push_str(&format!(
        "without probes     {:>10.2}         {:>10.2}\n",
        us(report.bare.wall_ns),
        us(report.bare.cpu_ns)
    ));
    out.push_str(&format!(
        "mountscope probes  {:>10.2}  {:.3}  {:>10.2}  {:.3}\n",
        us(report.mountscope.wall_ns),
        report.mountscope_wall_ratio,
        us(report.mountscope.cpu_ns),
        report.mountscope_cpu_ratio
    ));
    match (
        &report.bpftrace,
        report.bpftrace_wall_ratio,
        report.bpftrace_cpu_ratio,
    ) {
        (Some(b), Some(wall), Some(cpu)) => out.push_str(&format!(
            "bpftrace script    {:>10.2}  {wall:.3}  {:>10.2}  {cpu:.3}\n",
            us(b.wall_ns),
            us(b.cpu_ns)
        )),
        _ => out.push_str(&format!(
            "bpftrace script    not run: {}\n",
            report.bpftrace_note.as_deref().unwrap_or("")
        )),
    }
    out
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

    let bare = figures(&bare);
    let mountscope = figures(&probed);
    let bpftrace = (!traced.is_empty()).then(|| figures(&traced));
    Ok((
        Report {
            kernel: mountscope_agent::collect::kernel_release(),
            tier,
            iterations: args.iterations,
            rounds: args.rounds,
            mountscope_wall_ratio: mountscope.wall_ns / bare.wall_ns,
            mountscope_cpu_ratio: mountscope.cpu_ns / bare.cpu_ns,
            bpftrace_wall_ratio: bpftrace.as_ref().map(|b| b.wall_ns / bare.wall_ns),
            bpftrace_cpu_ratio: bpftrace.as_ref().map(|b| b.cpu_ns / bare.cpu_ns),
            bare,
            mountscope,
            bpftrace,
            bpftrace_note,
        },
        args.json,
    ))
}
