//! `mountscope bench`: runs the overlay executor with the probes attached, one strategy after
//! the other, and prints their figures side by side with B/A ratios measured in the same run.
//! `--preset storm` runs a node starting 100 containers at once.

use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use mountscope_agent::{
    collect::{Collector, hist, totals::Totals},
    executor::{
        Executor, ExecutorConfig, ExecutorStats, mount_operations_per_container_start,
        resource_hint,
    },
    monitor::percentile_ns,
    probes::Probes,
};
use mountscope_common::{
    LockMode, MountSyscall, sampler_slot,
    snapshot::{Strategy, SyscallProbes, TierKind},
};
use serde::Serialize;

use super::{
    args::{ExecutorArgs, FilterArgs, PRESET_FLAGS, Preset, value_name},
    record::seconds,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchStrategy {
    A,
    B,
    Both,
}

/// Seconds measured per strategy with `--preset storm`. With 100 builders and user namespace
/// creation, stopping the executor waits for up to 100 starts in flight, so warm-up, measure
/// and stop stay well under two minutes per strategy on a 2-vCPU machine.
const STORM_DURATION_S: f64 = 30.0;
/// Seconds of warm-up per strategy with `--preset storm`.
const STORM_WARMUP_S: f64 = 5.0;

#[derive(Debug, Args)]
#[command(mut_arg("strategy", |arg| arg.hide(true)))]
pub struct BenchArgs {
    /// Run a named scenario with both strategies. `storm` sets 100 builders, 50 idmapped
    /// layers with a user namespace per container and an inspection pass per start. It
    /// measures 30 s after 5 s of warm-up per strategy.
    #[arg(
        long,
        value_enum,
        conflicts_with_all = PRESET_FLAGS,
        conflicts_with_all = ["which", "duration", "warmup"]
    )]
    preset: Option<Preset>,
    /// Strategies to run; `both` runs A then B.
    #[arg(long = "strategies", value_enum, default_value_t = BenchStrategy::Both)]
    which: BenchStrategy,
    /// Seconds measured per strategy.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds run before measuring, per strategy, so the layer store and caches are warm.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Print the results as JSON on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    filters: FilterArgs,
    #[command(flatten)]
    executor: ExecutorArgs,
}

/// Figures of one strategy over the measured period.
#[derive(Clone, Debug, Serialize)]
pub struct StrategyResult {
    pub strategy: Strategy,
    pub seconds: f64,
    pub builds: u64,
    pub failures: u64,
    pub builds_per_s: f64,
    pub build_p50_ns: u64,
    pub build_p99_ns: u64,
    /// Sum of the start latencies of all measured starts.
    pub start_latency_total_ns: u64,
    /// Mount operations one start makes as a runtime's design counts them (overlay mount,
    /// layer mounts, layer unmounts), to compare with the syscalls the probes counted.
    pub mount_operations_per_start: u64,
    /// Mount-family syscalls per build, counted by the probes.
    pub syscalls_per_build: f64,
    /// Mount-family syscalls per build by the executor's formula.
    pub expected_syscalls_per_build: u64,
    pub syscalls: Vec<(MountSyscall, u64)>,
    pub waits_per_build: f64,
    pub waits_total: u64,
    pub wait_p50_ns: u64,
    pub wait_p99_ns: u64,
    /// Write-hold time of namespace_sem per build, `None` at tiers that do not measure it.
    pub hold_ns_per_build: Option<f64>,
    /// Write-hold time of namespace_sem over the measured period, `None` at tiers that do not
    /// measure it.
    pub hold_ns_total: Option<f64>,
    pub hold_is_estimate: bool,
    /// Per-container user namespaces created in the measured period and their creation times.
    pub userns_created: u64,
    pub userns_create_total_ns: u64,
    pub userns_create_p99_ns: u64,
    /// The latest failure, with the exhausted resource and its fix when one caused it.
    pub last_error: Option<String>,
    /// `umount2` calls repeated because the mount was busy, included in `syscalls_per_build`.
    pub unmount_busy_retries: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    kernel: String,
    tier_kind: TierKind,
    /// The tier's label and the reason it was chosen.
    tier: String,
    syscall_probes: SyscallProbes,
    layers: u32,
    builders: u32,
    idmap: bool,
    per_container_userns: bool,
    inspection: bool,
    preset: Option<String>,
    /// Tasks whose syscalls and waits were counted: this process unless a filter was given.
    traced: String,
    /// Whether the host's mount table has as many entries after the run as before it.
    host_mounts_unchanged: bool,
    results: Vec<StrategyResult>,
    /// B divided by A for each figure, when both ran.
    ratios: Option<Ratios>,
}

#[derive(Debug, Serialize)]
struct Ratios {
    builds_per_s: f64,
    build_p50: f64,
    build_p99: f64,
    mount_operations_per_start: f64,
    syscalls_per_build: f64,
    waits_per_build: f64,
    hold_per_build: Option<f64>,
    userns_create_p99: f64,
}

fn ratio(b: f64, a: f64) -> f64 {
    if a > 0.0 { b / a } else { f64::NAN }
}

fn host_mount_count() -> anyhow::Result<usize> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .context("failed to read /proc/self/mountinfo")?;
    Ok(text.lines().count())
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(strategy) = args.executor.strategy {
        let name = value_name(strategy);
        anyhow::bail!(
            "--strategy {name} has no effect on bench, which runs the strategies that \
             --strategies names; use --strategies {name}"
        );
    }
    let (duration_s, warmup_s, which) = match args.preset {
        Some(Preset::Storm) => (STORM_DURATION_S, STORM_WARMUP_S, BenchStrategy::Both),
        None => (args.duration, args.warmup, args.which),
    };
    let duration = seconds(duration_s, "--duration")?;
    let warmup = Duration::try_from_secs_f64(warmup_s)
        .with_context(|| format!("invalid --warmup `{warmup_s}`: give seconds, 0 or more"))?;
    let mut options = args.filters.probe_options()?;
    // Without a filter, the figures per build would include every other process's mounts
    // on the host, so only this process, whose threads run the executor, is traced.
    let filters = &mut options.filters;
    if filters.pid.is_none() && filters.cgroup_id.is_none() && filters.mntns_id.is_none() {
        filters.pid = Some(std::process::id());
    }
    let traced = match filters.pid {
        Some(pid) if pid == std::process::id() => "this process".to_string(),
        _ => "the given filter".to_string(),
    };
    let mut base_config = args.executor.config();
    if let Some(preset) = args.preset {
        preset.apply(&mut base_config);
    }
    base_config.validate()?;
    let strategies = match which {
        BenchStrategy::A => vec![Strategy::PerLayer],
        BenchStrategy::B => vec![Strategy::CommonParent],
        BenchStrategy::Both => vec![Strategy::PerLayer, Strategy::CommonParent],
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let mounts_before = host_mount_count()?;
    let mut report = runtime.block_on(async {
        let probes = Probes::load(&options).context("failed to load the kernel programs")?;
        let tier = probes.tier.clone();
        let syscall_probes = probes.syscall_probes;
        let mut collector = Collector::new(probes)?;
        let mut results = Vec::new();
        for strategy in strategies {
            let mut config = base_config.clone();
            config.settings.strategy = strategy;
            eprintln!(
                "mountscope: running {} for {:.0} s (+{:.0} s warm-up)…",
                strategy.label(),
                duration.as_secs_f64(),
                warmup.as_secs_f64()
            );
            results.push(measure(&mut collector, config, warmup, duration, tier.kind).await?);
        }
        let ratios = (results.len() == 2).then(|| {
            let (a, b) = (&results[0], &results[1]);
            Ratios {
                builds_per_s: ratio(b.builds_per_s, a.builds_per_s),
                build_p50: ratio(b.build_p50_ns as f64, a.build_p50_ns as f64),
                build_p99: ratio(b.build_p99_ns as f64, a.build_p99_ns as f64),
                mount_operations_per_start: ratio(
                    b.mount_operations_per_start as f64,
                    a.mount_operations_per_start as f64,
                ),
                syscalls_per_build: ratio(b.syscalls_per_build, a.syscalls_per_build),
                waits_per_build: ratio(b.waits_per_build, a.waits_per_build),
                hold_per_build: b
                    .hold_ns_per_build
                    .zip(a.hold_ns_per_build)
                    .map(|(b, a)| ratio(b, a)),
                userns_create_p99: ratio(
                    b.userns_create_p99_ns as f64,
                    a.userns_create_p99_ns as f64,
                ),
            }
        });
        anyhow::Ok(Report {
            kernel: mountscope_agent::collect::kernel_release(),
            tier_kind: tier.kind,
            tier: format!("{} ({})", tier.kind.label(), tier.reason),
            syscall_probes,
            layers: base_config.settings.layers,
            builders: base_config.settings.builders,
            idmap: base_config.settings.idmap,
            per_container_userns: base_config.per_container_userns,
            inspection: base_config.inspection,
            preset: args.preset.map(|p| format!("{p:?}").to_lowercase()),
            traced: traced.clone(),
            host_mounts_unchanged: false,
            results,
            ratios,
        })
    })?;

    let mounts_after = host_mount_count()?;
    report.host_mounts_unchanged = mounts_after == mounts_before;
    if !report.host_mounts_unchanged {
        eprintln!(
            "mountscope: the host mount table had {mounts_before} entries before the run and \
             {mounts_after} after; check /proc/self/mountinfo for mounts left under the store"
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

/// Runs one strategy: warm-up, reset, measure.
async fn measure(
    collector: &mut Collector,
    config: ExecutorConfig,
    warmup: Duration,
    duration: Duration,
    tier: TierKind,
) -> anyhow::Result<StrategyResult> {
    let strategy = config.settings.strategy;
    let operations =
        mount_operations_per_container_start(strategy, config.settings.layers, config.inspection);
    let executor = Executor::start(config).map_err(|error| {
        let hint = resource_hint(&error);
        anyhow::Error::new(error).context(match hint {
            Some(hint) => format!("failed to start the overlay executor: {hint}"),
            None => "failed to start the overlay executor".to_string(),
        })
    })?;
    let control = executor.control();
    drain_for(collector, warmup).await;

    collector.reset()?;
    let _ = control.take_build_latencies();
    let _ = control.take_userns_latencies();
    let before = control.stats();
    let started = std::time::Instant::now();
    drain_for(collector, duration).await;
    let totals = collector.totals_since_reset()?;
    let elapsed = started.elapsed();
    let after = control.stats();
    let mut latencies = control.take_build_latencies();
    let mut userns_latencies = control.take_userns_latencies();
    let expected = control.expected_syscalls_per_build()?;
    eprintln!("mountscope: stopping {} builders…", after.settings.builders);
    executor.stop();
    collector.drain(|_| true);

    latencies.sort_unstable();
    userns_latencies.sort_unstable();
    let builds = after.builds_total - before.builds_total;
    let failures = after.failures_total - before.failures_total;
    if failures > 0 {
        eprintln!(
            "mountscope: {failures} of {} starts with {} failed; the latest: {}",
            builds + failures,
            strategy.label(),
            after.last_error.as_deref().unwrap_or("no message")
        );
    }
    let busy_retries = after.unmount_busy_retries - before.unmount_busy_retries;
    if busy_retries > 0 {
        eprintln!(
            "mountscope: {busy_retries} umount2 calls with {} were repeated because the mount was busy; each adds to the syscalls per build",
            strategy.label()
        );
    }
    if builds == 0 && failures > 0 {
        anyhow::bail!(
            "every container start with {} failed: {}",
            strategy.label(),
            after.last_error.as_deref().unwrap_or("no message")
        );
    }
    let counts = Counts {
        builds,
        failures,
        expected_syscalls: expected,
        mount_operations: operations,
        busy_retries,
    };
    let userns = UsernsFigures::new(&before, &after, &userns_latencies);
    Ok(result(
        strategy,
        &totals,
        elapsed,
        counts,
        &latencies,
        userns,
        after.last_error.filter(|_| failures > 0),
        tier,
    ))
}

/// Counts of one measured period.
struct Counts {
    builds: u64,
    failures: u64,
    expected_syscalls: u64,
    mount_operations: u64,
    busy_retries: u64,
}

/// User namespace figures of one measured period.
struct UsernsFigures {
    created: u64,
    total_ns: u64,
    p99_ns: u64,
}

impl UsernsFigures {
    fn new(before: &ExecutorStats, after: &ExecutorStats, sorted: &[Duration]) -> Self {
        let total = after
            .userns_create_total
            .saturating_sub(before.userns_create_total);
        UsernsFigures {
            created: after.userns_created - before.userns_created,
            total_ns: u64::try_from(total.as_nanos()).unwrap_or(u64::MAX),
            p99_ns: percentile_ns(sorted, 0.99),
        }
    }
}

async fn drain_for(collector: &mut Collector, period: Duration) {
    let end = tokio::time::Instant::now() + period;
    while tokio::time::Instant::now() < end {
        tokio::time::sleep(mountscope_agent::collect::DRAIN_PERIOD).await;
        collector.drain(|_| true);
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site, each value a separate figure"
)]
fn result(
    strategy: Strategy,
    totals: &Totals,
    elapsed: Duration,
    counts: Counts,
    latencies: &[Duration],
    userns: UsernsFigures,
    last_error: Option<String>,
    tier: TierKind,
) -> StrategyResult {
    let builds = counts.builds;
    let per_build = |v: f64| if builds > 0 { v / builds as f64 } else { 0.0 };
    let calls: u64 = totals.syscalls.iter().map(|s| s.calls).sum();
    let waits: u64 = totals.waits.iter().map(|w| w.count).sum();
    let mut wait_hist = totals.wait_hist[0];
    for (x, y) in wait_hist.iter_mut().zip(&totals.wait_hist[1]) {
        *x += y;
    }
    let hold_ns = match tier {
        TierKind::ExactFentry | TierKind::ExactKprobe => {
            Some(totals.holds[LockMode::Write.index()].total_ns as f64)
        }
        TierKind::ContentionEstimate => {
            let samples = totals.sampler[sampler_slot::TOTAL as usize];
            let held = totals.sampler[sampler_slot::WRITE_HELD as usize];
            if samples > 0 {
                Some(held as f64 / samples as f64 * elapsed.as_nanos() as f64)
            } else {
                Some(0.0)
            }
        }
        TierKind::ContentionOnly | TierKind::SyscallsOnly => None,
    };
    StrategyResult {
        strategy,
        seconds: elapsed.as_secs_f64(),
        builds,
        failures: counts.failures,
        builds_per_s: builds as f64 / elapsed.as_secs_f64(),
        build_p50_ns: percentile_ns(latencies, 0.50),
        build_p99_ns: percentile_ns(latencies, 0.99),
        start_latency_total_ns: latencies
            .iter()
            .map(|l| u64::try_from(l.as_nanos()).unwrap_or(u64::MAX))
            .fold(0, u64::saturating_add),
        mount_operations_per_start: counts.mount_operations,
        syscalls_per_build: per_build(calls as f64),
        expected_syscalls_per_build: counts.expected_syscalls,
        syscalls: MountSyscall::ALL
            .iter()
            .map(|&s| (s, totals.syscalls[s.index()].calls))
            .filter(|(_, n)| *n > 0)
            .collect(),
        waits_per_build: per_build(waits as f64),
        waits_total: waits,
        wait_p50_ns: hist::quantile(&wait_hist, 0.50),
        wait_p99_ns: hist::quantile(&wait_hist, 0.99),
        hold_ns_per_build: hold_ns.map(per_build),
        hold_ns_total: hold_ns,
        hold_is_estimate: tier.hold_is_estimate(),
        userns_created: userns.created,
        userns_create_total_ns: userns.total_ns,
        userns_create_p99_ns: userns.p99_ns,
        last_error,
        unmount_busy_retries: counts.busy_retries,
    }
}

fn us(ns: f64) -> String {
    format!("{:.1} µs", ns / 1000.0)
}

/// Returns the table cell of a figure that the tier does not measure.
fn not_measured() -> String {
    "not measured".to_string()
}

/// One table row: label, the value of one strategy, and the B/A ratio.
type Row<'a> = (&'a str, Box<dyn Fn(&StrategyResult) -> String>, Option<f64>);

fn render(report: &Report) -> String {
    let mut out = format!(
        "kernel {}, tier {}\nsyscalls timed with {}\nlayers {}, builders {}, idmap {}, user \
         namespace per container {}, inspection {}{}\ncounting the mount syscalls and waits of \
         {}\n\n",
        report.kernel,
        report.tier,
        report.syscall_probes.label(),
        report.layers,
        report.builders,
        report.idmap,
        report.per_container_userns,
        report.inspection,
        report
            .preset
            .as_ref()
            .map(|p| format!(", preset {p}"))
            .unwrap_or_default(),
        report.traced,
    );
    let estimate = report.results.iter().any(|r| r.hold_is_estimate);
    let (hold_label, hold_total_label) = if estimate {
        ("hold per build (estimate)", "hold total (estimate)")
    } else {
        ("hold per build", "hold total")
    };
    let rows: Vec<Row> = vec![
        (
            "builds/s",
            Box::new(|r| format!("{:.1}", r.builds_per_s)),
            report.ratios.as_ref().map(|x| x.builds_per_s),
        ),
        (
            "build p50",
            Box::new(|r| us(r.build_p50_ns as f64)),
            report.ratios.as_ref().map(|x| x.build_p50),
        ),
        (
            "build p99",
            Box::new(|r| us(r.build_p99_ns as f64)),
            report.ratios.as_ref().map(|x| x.build_p99),
        ),
        (
            "start latency total",
            Box::new(|r| format!("{:.2} s", r.start_latency_total_ns as f64 / 1e9)),
            None,
        ),
        (
            "mount operations/start",
            Box::new(|r| r.mount_operations_per_start.to_string()),
            report.ratios.as_ref().map(|x| x.mount_operations_per_start),
        ),
        (
            "mount syscalls/build",
            Box::new(|r| {
                format!(
                    "{:.1} (formula {})",
                    r.syscalls_per_build, r.expected_syscalls_per_build
                )
            }),
            report.ratios.as_ref().map(|x| x.syscalls_per_build),
        ),
        (
            "namespace_sem waits/build",
            Box::new(|r| format!("{:.2}", r.waits_per_build)),
            report.ratios.as_ref().map(|x| x.waits_per_build),
        ),
        (
            "namespace_sem waits total",
            Box::new(|r| r.waits_total.to_string()),
            None,
        ),
        ("wait p50", Box::new(|r| us(r.wait_p50_ns as f64)), None),
        ("wait p99", Box::new(|r| us(r.wait_p99_ns as f64)), None),
        (
            hold_label,
            Box::new(|r| r.hold_ns_per_build.map_or_else(not_measured, us)),
            report.ratios.as_ref().and_then(|x| x.hold_per_build),
        ),
        (
            hold_total_label,
            Box::new(|r| r.hold_ns_total.map_or_else(not_measured, us)),
            None,
        ),
        (
            "user namespaces created",
            Box::new(|r| r.userns_created.to_string()),
            None,
        ),
        (
            "userns create total",
            Box::new(|r| format!("{:.2} s", r.userns_create_total_ns as f64 / 1e9)),
            None,
        ),
        (
            "userns create p99",
            Box::new(|r| us(r.userns_create_p99_ns as f64)),
            report.ratios.as_ref().map(|x| x.userns_create_p99),
        ),
        ("failed builds", Box::new(|r| r.failures.to_string()), None),
    ];
    out.push_str(&format!("{:<28}", ""));
    for r in &report.results {
        out.push_str(&format!("{:<24}", r.strategy.label()));
    }
    if report.ratios.is_some() {
        out.push_str("B/A");
    }
    out.push('\n');
    for (label, value, ratio) in rows {
        out.push_str(&format!("{label:<28}"));
        for r in &report.results {
            out.push_str(&format!("{:<24}", value(r)));
        }
        match ratio {
            // No ratio when A's figure is 0, such as namespaces created without per-container
            // user namespaces.
            Some(x) if x.is_nan() => out.push('-'),
            Some(x) => out.push_str(&format!("{x:.2}")),
            None => {}
        }
        out.push('\n');
    }
    if !report.host_mounts_unchanged {
        out.push_str("\nhost mount table changed during the run\n");
    }
    out
}
