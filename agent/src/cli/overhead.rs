//! `mountscope overhead`: what the probes cost a mount. A bind mount + umount loop runs in a
//! private mount namespace under each condition in turn, and the ratios come from the same
//! run. The conditions: no probes, mountscope's default probes and four variants of them, a
//! bpftrace script measuring the same syscalls, and empty bpftrace programs on the same
//! tracepoints.

use std::{
    ffi::CString,
    fs,
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicI32, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Args;
use mountscope_agent::{
    collect::Collector,
    probes::{HoldMethod, ProbeOptions, Probes, calibrate},
};
use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, unshare},
    sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, kill, sigaction},
    unistd::Pid,
};
use serde::Serialize;

use super::args::FilterArgs;

#[derive(Debug, Args)]
pub struct OverheadArgs {
    /// Bind mount + umount pairs per round.
    #[arg(long, default_value_t = 3000)]
    iterations: u32,
    /// Rounds per condition; conditions alternate within each round.
    #[arg(long, default_value_t = 7)]
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

/// Empty programs on the same four tracepoints: what the tracepoints cost with no work in the
/// programs, the floor for any tool that uses them.
const BPFTRACE_EMPTY: &str = r#"
tracepoint:syscalls:sys_enter_mount, tracepoint:syscalls:sys_enter_umount { }
tracepoint:syscalls:sys_exit_mount, tracepoint:syscalls:sys_exit_umount { }
BEGIN { printf("attached\n"); }
"#;

/// Probe set attached while a loop runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Condition {
    /// No probes.
    Bare,
    /// mountscope's default probes, as `watch` and `bench` load them.
    Mountscope,
    /// The default probes without the hold-time estimate's cpu-clock sampler.
    MountscopeNoHold,
    /// The default probes with the syscall tracepoints even where fentry loads.
    MountscopeTracepoints,
    /// The default probes writing a record of every call, as `record` loads them.
    MountscopeRecords,
    /// mountscope's probes with `--wait-sites`: every probe it has.
    MountscopeWaitSites,
    /// The bpftrace latency script.
    Bpftrace,
    /// Empty bpftrace programs on the same tracepoints.
    BpftraceEmpty,
}

impl Condition {
    fn label(self) -> &'static str {
        match self {
            Condition::Bare => "without probes",
            Condition::Mountscope => "mountscope",
            Condition::MountscopeNoHold => "mountscope --hold-method none",
            Condition::MountscopeTracepoints => "mountscope --syscall-tracepoints",
            Condition::MountscopeRecords => "mountscope, a record per call",
            Condition::MountscopeWaitSites => "mountscope --wait-sites",
            Condition::Bpftrace => "bpftrace script",
            Condition::BpftraceEmpty => "bpftrace, empty programs",
        }
    }
}

#[derive(Debug, Serialize)]
struct Report {
    kernel: String,
    tier: String,
    iterations: u32,
    rounds: u32,
    settle_ms: u64,
    /// One row per condition, `bare` first.
    rows: Vec<Row>,
    bpftrace_note: Option<String>,
    /// Set when a condition with probes ran faster than the one without, so noise or other
    /// work on the host outweighed the probes' cost and the ratios mean little.
    disturbed: Option<String>,
}

/// Medians over rounds of the wall-clock and CPU time of one bind mount + umount pair (each
/// round's figure is its median batch), and their ratios to the condition without probes.
#[derive(Debug, Serialize)]
struct Row {
    condition: Condition,
    wall_ns: f64,
    cpu_ns: f64,
    wall_ratio: f64,
    cpu_ratio: f64,
    /// Mean wall-clock time of a getppid call, which no probe watches, and its ratio.
    getppid_ns: f64,
    getppid_ratio: f64,
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

/// Pause before each timed loop. Loading BPF programs keeps the kernel busy for a few hundred
/// milliseconds, and a long mount loop leaves deferred work behind. Mounts ran up to five
/// times slower meanwhile on a 2-vCPU guest, so every condition starts after the same pause.
const SETTLE: Duration = Duration::from_secs(1);

/// getppid calls per round. Enabling any `syscalls:` tracepoint sends every syscall of every
/// task through the kernel's slower traced entry path, so a syscall that no probe watches
/// shows what tracing costs the rest of the host.
const OTHER_CALLS: u32 = 200_000;

/// Bind mount + umount pairs timed together. Each round reports the median batch, so an
/// interrupt, a page of other work or a slow spell of the host spoils one batch instead of
/// the round's mean.
const PAIRS_PER_BATCH: u32 = 100;

/// getppid calls timed together.
const CALLS_PER_BATCH: u32 = 10_000;

/// Times the mount loop and then the getppid loop, after the settling pause.
fn timed_loop(src: &Path, dst: &Path, iterations: u32) -> anyhow::Result<Timing> {
    std::thread::sleep(SETTLE);
    let mut timing = time_loop(src, dst, iterations)?;
    let mut batches = Vec::new();
    for _ in 0..OTHER_CALLS.div_ceil(CALLS_PER_BATCH) {
        let started = Instant::now();
        for _ in 0..CALLS_PER_BATCH {
            // SAFETY: getppid takes no arguments and touches no memory.
            std::hint::black_box(unsafe { libc::getppid() });
        }
        batches.push(started.elapsed().as_nanos() as f64 / f64::from(CALLS_PER_BATCH));
    }
    timing.getppid_ns = median(batches);
    Ok(timing)
}

/// Wall-clock and CPU nanoseconds of one bind mount + umount pair: the median over batches of
/// `PAIRS_PER_BATCH` pairs, `iterations` pairs in all (rounded up to whole batches).
fn time_loop(src: &Path, dst: &Path, iterations: u32) -> anyhow::Result<Timing> {
    let batches = iterations.div_ceil(PAIRS_PER_BATCH);
    let mut wall = Vec::with_capacity(batches as usize);
    let mut cpu = Vec::with_capacity(batches as usize);
    for _ in 0..batches {
        let started = Instant::now();
        let cpu_started = thread_cpu_ns();
        for _ in 0..PAIRS_PER_BATCH {
            mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .with_context(|| format!("failed to bind-mount {}", dst.display()))?;
            umount2(dst, MntFlags::empty())
                .with_context(|| format!("failed to unmount {}", dst.display()))?;
        }
        cpu.push((thread_cpu_ns() - cpu_started) / f64::from(PAIRS_PER_BATCH));
        wall.push(started.elapsed().as_nanos() as f64 / f64::from(PAIRS_PER_BATCH));
    }
    Ok(Timing {
        wall_ns: median(wall),
        cpu_ns: median(cpu),
        getppid_ns: 0.0,
    })
}

#[derive(Clone, Copy)]
struct Timing {
    wall_ns: f64,
    cpu_ns: f64,
    /// Mean wall-clock nanoseconds of one getppid call; 0 when not measured.
    getppid_ns: f64,
}

/// Starts bpftrace with `script` and waits until its probes are attached.
fn start_bpftrace(script: &str) -> anyhow::Result<Child> {
    let mut child = Command::new("bpftrace")
        .arg("-e")
        .arg(script)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("failed to start bpftrace; install it with `apt-get install bpftrace`")?;
    BPFTRACE_PID.store(child.id() as i32, Ordering::SeqCst);
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
                BPFTRACE_PID.store(0, Ordering::SeqCst);
                bail!("bpftrace exited before attaching its probes");
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            BPFTRACE_PID.store(0, Ordering::SeqCst);
            bail!("bpftrace did not attach within 30 s");
        }
    }
    // A thread reads the rest of bpftrace's output so it cannot block on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok(child)
}

/// Pid of the running bpftrace child, or 0, for the signal handler to end it.
static BPFTRACE_PID: AtomicI32 = AtomicI32::new(0);

/// How long bpftrace gets to exit after SIGINT before it gets SIGKILL. bpftrace 0.17 was seen
/// to ignore a SIGINT that came soon after it attached.
const BPFTRACE_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Stops bpftrace with SIGINT, or SIGKILL when it is still running after the timeout. Either
/// way its programs are detached once it has exited.
fn stop_bpftrace(mut child: Child) -> anyhow::Result<()> {
    let pid = Pid::from_raw(child.id() as i32);
    let _ = kill(pid, Signal::SIGINT);
    let deadline = Instant::now() + BPFTRACE_STOP_TIMEOUT;
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            BPFTRACE_PID.store(0, Ordering::SeqCst);
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = kill(pid, Signal::SIGKILL);
    child.wait()?;
    BPFTRACE_PID.store(0, Ordering::SeqCst);
    tracing::warn!(
        "bpftrace (pid {pid}) ignored SIGINT for {} s and was killed",
        BPFTRACE_STOP_TIMEOUT.as_secs()
    );
    Ok(())
}

/// The scratch directories, innermost first, for the signal handler to remove.
static SCRATCH_DIRS: OnceLock<Vec<CString>> = OnceLock::new();

/// Handles SIGINT and SIGTERM: kills bpftrace if it runs, so its programs are detached,
/// removes the scratch directories and exits with 128 + the signal number. It calls only
/// async-signal-safe functions.
extern "C" fn on_signal(signal: libc::c_int) {
    let child = BPFTRACE_PID.load(Ordering::SeqCst);
    // SAFETY: kill, rmdir, write and _exit are async-signal-safe, and the paths are
    // NUL-terminated strings that live for the whole process.
    unsafe {
        if child != 0 {
            libc::kill(child, libc::SIGKILL);
        }
        if let Some(dirs) = SCRATCH_DIRS.get() {
            for dir in dirs {
                libc::rmdir(dir.as_ptr());
            }
        }
        let message = b"mountscope: stopped by a signal\n";
        libc::write(2, message.as_ptr().cast(), message.len());
        libc::_exit(128 + signal);
    }
}

/// Installs [`on_signal`] for SIGINT and SIGTERM, with the scratch directories it removes.
fn handle_signals(dirs: &[&Path]) -> anyhow::Result<()> {
    let dirs = dirs
        .iter()
        .map(|d| CString::new(d.as_os_str().as_encoded_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .context("a scratch path contains a NUL byte")?;
    let _ = SCRATCH_DIRS.set(dirs);
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler calls only async-signal-safe functions.
        unsafe { sigaction(signal, &action) }
            .with_context(|| format!("failed to install a handler for {signal}"))?;
    }
    Ok(())
}

pub fn run(args: OverheadArgs) -> anyhow::Result<()> {
    if args.iterations == 0 {
        bail!("invalid --iterations 0: give at least 1");
    }
    if args.rounds == 0 {
        bail!("invalid --rounds 0: give at least 1");
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

    handle_signals(&[&dst, &src, &scratch])?;
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
             {} ms pause before each, median of batch medians\n",
            report.kernel, report.tier, report.iterations, report.rounds, report.settle_ms
        );
        print!("{}", render(&report));
    }
    Ok(())
}

/// Returns a warning naming the conditions with probes that ran faster than the one
/// without. Then noise or other work on the host outweighed the probes' cost.
fn disturbed_warning(rows: &[Row]) -> Option<String> {
    let faster: Vec<&str> = rows
        .iter()
        .filter(|r| r.wall_ratio < 1.0 || r.cpu_ratio < 1.0)
        .map(|r| r.condition.label())
        .collect();
    (!faster.is_empty()).then(|| {
        format!(
            "{} ran faster than without probes, so noise or other work on the host (mounts \
             elsewhere contend on the same global lock) outweighed the probes' cost. Run it \
             again on a quiet host, with more --rounds.",
            faster.join(", ")
        )
    })
}

/// Formats the report as a table: wall-clock and CPU time per pair, with ratios to no probes.
fn render(report: &Report) -> String {
    let us = |ns: f64| ns / 1000.0;
    let mut out = String::from(
        "                                 bind mount + umount pair         getppid\n\
         \x20                                 wall µs  ratio     CPU µs  ratio     ns  ratio\n",
    );
    for row in &report.rows {
        if row.condition == Condition::Bare {
            out.push_str(&format!(
                "{:<32}{:>9.2}         {:>10.2}         {:>6.0}\n",
                row.condition.label(),
                us(row.wall_ns),
                us(row.cpu_ns),
                row.getppid_ns
            ));
        } else {
            out.push_str(&format!(
                "{:<32}{:>9.2}  {:.3}  {:>10.2}  {:.3}  {:>6.0}  {:.3}\n",
                row.condition.label(),
                us(row.wall_ns),
                row.wall_ratio,
                us(row.cpu_ns),
                row.cpu_ratio,
                row.getppid_ns,
                row.getppid_ratio
            ));
        }
    }
    if let Some(warning) = &report.disturbed {
        out.push_str(&format!("warning: {warning}\n"));
    }
    if let Some(note) = &report.bpftrace_note {
        out.push_str(&format!("bpftrace not run: {note}\n"));
    }
    out
}

/// Times one round of `condition`: attaches what it needs, waits for the kernel to settle,
/// runs the loop and detaches.
fn time_condition(
    condition: Condition,
    options: &ProbeOptions,
    src: &Path,
    dst: &Path,
    iterations: u32,
    tier: &mut String,
) -> anyhow::Result<Timing> {
    match condition {
        Condition::Bare => timed_loop(src, dst, iterations),
        Condition::Mountscope
        | Condition::MountscopeNoHold
        | Condition::MountscopeTracepoints
        | Condition::MountscopeRecords
        | Condition::MountscopeWaitSites => {
            let options = ProbeOptions {
                hold_method: if condition == Condition::MountscopeNoHold {
                    HoldMethod::None
                } else {
                    options.hold_method
                },
                wait_sites: condition == Condition::MountscopeWaitSites,
                syscall_records: condition == Condition::MountscopeRecords,
                syscall_tracepoints: options.syscall_tracepoints
                    || condition == Condition::MountscopeTracepoints,
                ..options.clone()
            };
            let probes = Probes::load(&options).context("failed to load the kernel programs")?;
            if condition == Condition::Mountscope {
                *tier = format!(
                    "{}, syscalls timed with {}",
                    probes.tier.kind.label(),
                    probes.syscall_probes.label()
                );
            }
            let mut collector = Collector::new(probes)?;
            let timing = timed_loop(src, dst, iterations);
            collector.drain(|_| true);
            timing
        }
        Condition::Bpftrace | Condition::BpftraceEmpty => {
            let script = if condition == Condition::Bpftrace {
                BPFTRACE_SCRIPT
            } else {
                BPFTRACE_EMPTY
            };
            let child = start_bpftrace(script)?;
            let timing = timed_loop(src, dst, iterations);
            stop_bpftrace(child)?;
            timing
        }
    }
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

    let mut conditions = vec![
        Condition::Bare,
        Condition::Mountscope,
        Condition::MountscopeNoHold,
        Condition::MountscopeTracepoints,
        Condition::MountscopeRecords,
        Condition::MountscopeWaitSites,
    ];
    let mut bpftrace_note = (!use_bpftrace).then(|| "--no-bpftrace was given".to_string());
    if use_bpftrace {
        conditions.extend([Condition::Bpftrace, Condition::BpftraceEmpty]);
    }
    let mut timings: Vec<Vec<Timing>> = vec![Vec::new(); conditions.len()];
    let mut tier = String::new();
    // Conditions alternate within each round, so a slow spell of the machine hits all alike.
    for _ in 0..args.rounds {
        for (i, &condition) in conditions.iter().enumerate() {
            let skip_bpftrace = bpftrace_note.is_some()
                && matches!(condition, Condition::Bpftrace | Condition::BpftraceEmpty);
            if skip_bpftrace {
                continue;
            }
            match time_condition(condition, options, src, dst, args.iterations, &mut tier) {
                Ok(t) => timings[i].push(t),
                Err(e) if matches!(condition, Condition::Bpftrace | Condition::BpftraceEmpty) => {
                    bpftrace_note = Some(format!("{e:#}"));
                }
                Err(e) => return Err(e),
            }
        }
    }

    let medians: Vec<(Condition, Timing)> = conditions
        .iter()
        .zip(&timings)
        .filter(|(_, t)| !t.is_empty())
        .map(|(&c, t)| {
            let timing = Timing {
                wall_ns: median(t.iter().map(|t| t.wall_ns).collect()),
                cpu_ns: median(t.iter().map(|t| t.cpu_ns).collect()),
                getppid_ns: median(t.iter().map(|t| t.getppid_ns).collect()),
            };
            (c, timing)
        })
        .collect();
    let bare = medians[0].1;
    let rows = medians
        .into_iter()
        .map(|(condition, t)| Row {
            condition,
            wall_ns: t.wall_ns,
            cpu_ns: t.cpu_ns,
            wall_ratio: t.wall_ns / bare.wall_ns,
            cpu_ratio: t.cpu_ns / bare.cpu_ns,
            getppid_ns: t.getppid_ns,
            getppid_ratio: t.getppid_ns / bare.getppid_ns,
        })
        .collect::<Vec<Row>>();
    let disturbed = disturbed_warning(&rows);
    Ok((
        Report {
            kernel: mountscope_agent::collect::kernel_release(),
            tier,
            iterations: args.iterations,
            rounds: args.rounds,
            settle_ms: SETTLE.as_millis() as u64,
            rows,
            bpftrace_note,
            disturbed,
        },
        args.json,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(condition: Condition, wall_ratio: f64, cpu_ratio: f64) -> Row {
        Row {
            condition,
            wall_ns: 0.0,
            cpu_ns: 0.0,
            wall_ratio,
            cpu_ratio,
            getppid_ns: 0.0,
            getppid_ratio: 1.0,
        }
    }

    #[test]
    fn ratios_above_one_not_flagged() {
        let rows = [
            row(Condition::Bare, 1.0, 1.0),
            row(Condition::Mountscope, 1.2, 1.1),
        ];
        assert_eq!(disturbed_warning(&rows), None);
    }

    #[test]
    fn faster_condition_flagged_by_name() {
        let rows = [
            row(Condition::Bare, 1.0, 1.0),
            row(Condition::Mountscope, 0.4, 1.1),
            row(Condition::Bpftrace, 1.3, 1.3),
        ];
        let warning = disturbed_warning(&rows).expect("a warning");
        assert!(warning.starts_with("mountscope ran faster"), "{warning}");
        assert!(!warning.contains("bpftrace"), "{warning}");
    }
}
