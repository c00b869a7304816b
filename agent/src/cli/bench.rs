//! `mountscope bench`: runs the overlay executor with the probes attached, one strategy after
//! the other, and prints their figures side by side with B/A ratios measured in the same run.

use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use mountscope_agent::{
    collect::{Collector, hist, totals::Totals},
    executor::{Executor, ExecutorConfig},
    monitor::percentile_ns,
    probes::Probes,
};
use mountscope_common::{
    LockMode, MountSyscall, sampler_slot,
    snapshot::{Strategy, TierKind},
};
use serde::Serialize;

use super::{
    args::{ExecutorArgs, FilterArgs},
    record::seconds,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchStrategy {
    A,
    B,
    Both,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
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
    /// Mount-family syscalls per build, counted by the probes.
    pub syscalls_per_build: f64,
    /// What the executor's formula says one build makes.
    pub expected_syscalls_per_build: u64,
    pub syscalls: Vec<(MountSyscall, u64)>,
    pub waits_per_build: f64,
    pub wait_p50_ns: u64,
    pub wait_p99_ns: u64,
    /// Write-hold time of namespace_sem per build.
    pub hold_ns_per_build: f64,
    pub hold_is_estimate: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    kernel: String,
    tier: String,
    layers: u32,
    builders: u32,
    idmap: bool,
    results: Vec<StrategyResult>,
    /// B divided by A for each figure, when both ran.
    ratios: Option<Ratios>,
}

#[derive(Debug, Serialize)]
struct Ratios {
    builds_per_s: f64,
    build_p50: f64,
    build_p99: f64,
    syscalls_per_build: f64,
    waits_per_build: f64,
    hold_per_build: f64,
}

fn ratio(b: f64, a: f64) -> f64 {
    if a > 0.0 { b / a } else { f64::NAN }
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let duration = seconds(args.duration, "--duration")?;
    let warmup = Duration::try_from_secs_f64(args.warmup).with_context(|| {
        format!(
            "invalid --warmup `{}`: give seconds, 0 or more",
            args.warmup
        )
    })?;
    let options = args.filters.probe_options()?;
    let strategies = match args.which {
        BenchStrategy::A => vec![Strategy::PerLayer],
        BenchStrategy::B => vec![Strategy::CommonParent],
        BenchStrategy::Both => vec![Strategy::PerLayer, Strategy::CommonParent],
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let report = runtime.block_on(async {
        let probes = Probes::load(&options).context("failed to load the kernel programs")?;
        let tier = probes.tier.clone();
        let mut collector = Collector::new(probes)?;
        let mut results = Vec::new();
        for strategy in strategies {
            let mut config = args.executor.config();
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
                syscalls_per_build: ratio(b.syscalls_per_build, a.syscalls_per_build),
                waits_per_build: ratio(b.waits_per_build, a.waits_per_build),
                hold_per_build: ratio(b.hold_ns_per_build, a.hold_ns_per_build),
            }
        });
        anyhow::Ok(Report {
            kernel: mountscope_agent::collect::kernel_release(),
            tier: format!("{} ({})", tier.kind.label(), tier.reason),
            layers: args.executor.layers,
            builders: args.executor.builders,
            idmap: args.executor.idmap,
            results,
            ratios,
        })
    })?;

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
    let executor = Executor::start(config).context("failed to start the overlay executor")?;
    let control = executor.control();
    drain_for(collector, warmup).await;

    collector.reset()?;
    let _ = control.take_build_latencies();
    let before = control.stats();
    let started = std::time::Instant::now();
    drain_for(collector, duration).await;
    let totals = collector.totals_since_reset()?;
    let elapsed = started.elapsed();
    let after = control.stats();
    let mut latencies = control.take_build_latencies();
    let expected = control.expected_syscalls_per_build()?;
    executor.stop();
    collector.drain(|_| true);

    latencies.sort_unstable();
    let builds = after.builds_total - before.builds_total;
    let failures = after.failures_total - before.failures_total;
    Ok(result(
        strategy, &totals, elapsed, builds, failures, &latencies, expected, tier,
    ))
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
    builds: u64,
    failures: u64,
    latencies: &[Duration],
    expected: u64,
    tier: TierKind,
) -> StrategyResult {
    let per_build = |v: f64| if builds > 0 { v / builds as f64 } else { 0.0 };
    let calls: u64 = totals.syscalls.iter().map(|s| s.calls).sum();
    let waits: u64 = totals.waits.iter().map(|w| w.count).sum();
    let mut wait_hist = totals.wait_hist[0];
    for (x, y) in wait_hist.iter_mut().zip(&totals.wait_hist[1]) {
        *x += y;
    }
    let hold_ns = match tier {
        TierKind::ExactFentry | TierKind::ExactKprobe => {
            totals.holds[LockMode::Write.index()].total_ns as f64
        }
        _ => {
            let samples = totals.sampler[sampler_slot::TOTAL as usize];
            let held = totals.sampler[sampler_slot::WRITE_HELD as usize];
            if samples > 0 {
                held as f64 / samples as f64 * elapsed.as_nanos() as f64
            } else {
                0.0
            }
        }
    };
    StrategyResult {
        strategy,
        seconds: elapsed.as_secs_f64(),
        builds,
        failures,
        builds_per_s: builds as f64 / elapsed.as_secs_f64(),
        build_p50_ns: percentile_ns(latencies, 0.50),
        build_p99_ns: percentile_ns(latencies, 0.99),
        syscalls_per_build: per_build(calls as f64),
        expected_syscalls_per_build: expected,
        syscalls: MountSyscall::ALL
            .iter()
            .map(|&s| (s, totals.syscalls[s.index()].calls))
            .filter(|(_, n)| *n > 0)
            .collect(),
        waits_per_build: per_build(waits as f64),
        wait_p50_ns: hist::quantile(&wait_hist, 0.50),
        wait_p99_ns: hist::quantile(&wait_hist, 0.99),
        hold_ns_per_build: per_build(hold_ns),
        hold_is_estimate: tier.hold_is_estimate(),
    }
}

fn us(ns: f64) -> String {
    format!("{:.1} µs", ns / 1000.0)
}

/// One table row: label, the value of one strategy, and the B/A ratio.
type Row<'a> = (&'a str, Box<dyn Fn(&StrategyResult) -> String>, Option<f64>);

fn render(report: &Report) -> String {
    let mut out = format!(
        "kernel {}, tier {}\nlayers {}, builders {}, idmap {}\n\n",
        report.kernel, report.tier, report.layers, report.builders, report.idmap
    );
    let estimate = report.results.iter().any(|r| r.hold_is_estimate);
    let hold_label = if estimate {
        "hold per build (estimate)"
    } else {
        "hold per build"
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
        ("wait p50", Box::new(|r| us(r.wait_p50_ns as f64)), None),
        ("wait p99", Box::new(|r| us(r.wait_p99_ns as f64)), None),
        (
            hold_label,
            Box::new(|r| us(r.hold_ns_per_build)),
            report.ratios.as_ref().map(|x| x.hold_per_build),
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
        if let Some(x) = ratio {
            out.push_str(&format!("{x:.2}"));
        }
        out.push('\n');
    }
    out
}
