//! Prometheus metrics: running totals that survive statistics resets, rendered in the text
//! exposition format 0.0.4.

use std::{fmt::Write as _, sync::Mutex};

use mountscope_common::{
    HIST_BUCKETS, LockMode, MountSyscall, drop_slot,
    snapshot::{Snapshot, TierKind},
};

use crate::{
    collect::{event::errno_slot_name, totals::Totals},
    executor::ExecutorStats,
};

/// `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Highest log2 bucket written with a finite `le`: bucket 36 ends at 2^36 ns, about 69 s.
/// Slower samples appear only in the `+Inf` bucket, which keeps each histogram at a fixed
/// 38 buckets whatever the kernel's 48 buckets hold.
const LAST_FINITE_BUCKET: usize = 36;

/// Drop reasons in `DROPS` slot order, as `reason` label values.
const DROP_REASONS: [(u32, &str); 4] = [
    (drop_slot::RINGBUF, "ringbuf_full"),
    (drop_slot::INFLIGHT, "inflight_map_full"),
    (drop_slot::PENDING, "pending_wait_map_full"),
    (drop_slot::UNPAIRED, "unpaired"),
];

/// Figures since the agent started, readable from the HTTP server while the agent updates
/// them once per snapshot.
#[derive(Default)]
pub struct Metrics {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Sum of the map readings taken just before each statistics reset.
    carried: Totals,
    /// The reading since the last reset, taken at the latest snapshot.
    current: Totals,
    /// Sum of the sampler's per-interval hold estimates.
    hold_estimate_ns: u64,
    tier: Option<TierKind>,
    executor: Option<ExecutorStats>,
    snapshots: u64,
}

impl Metrics {
    /// Takes the figures of one snapshot: `since_reset` is the map reading since the last
    /// reset, taken together with `snapshot`.
    pub fn update(
        &self,
        since_reset: Totals,
        snapshot: &Snapshot,
        executor: Option<ExecutorStats>,
    ) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.current = since_reset;
        if let Some(estimate) = &snapshot.hold_estimate {
            state.hold_estimate_ns += estimate.hold_ns;
        }
        state.tier = Some(snapshot.tier.kind);
        state.executor = executor;
        state.snapshots += 1;
    }

    /// Keeps the reading taken just before a statistics reset, so counters continue from it.
    pub fn carry_before_reset(&self, since_reset: &Totals) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        add_totals(&mut state.carried, since_reset);
        state.current = Totals::default();
    }

    /// Renders every metric in the text exposition format.
    pub fn render(&self) -> String {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut total = state.carried.clone();
        add_totals(&mut total, &state.current);
        let mut out = Text::default();

        write_syscalls(&mut out, &total);
        write_lock(&mut out, &total, state.tier);
        if state.tier == Some(TierKind::ContentionEstimate) {
            out.header(
                "mountscope_namespace_sem_hold_estimate_seconds_total",
                "Estimated time namespace_sem was held for write, from cpu-clock samples.",
                "counter",
            );
            out.sample(
                "mountscope_namespace_sem_hold_estimate_seconds_total",
                &[],
                seconds(state.hold_estimate_ns),
            );
        }
        write_drops(&mut out, &total);
        if let Some(executor) = &state.executor {
            write_executor(&mut out, executor);
        }
        if let Some(tier) = state.tier {
            out.header(
                "mountscope_tier_info",
                "Measurement tier in use: exact_fentry, exact_kprobe, contention_estimate, \
                 contention_only or syscalls_only.",
                "gauge",
            );
            out.sample("mountscope_tier_info", &[("tier", tier_name(tier))], "1");
        }
        out.header(
            "mountscope_snapshots_total",
            "Snapshots the agent has published.",
            "counter",
        );
        out.sample("mountscope_snapshots_total", &[], state.snapshots);
        out.text
    }
}

fn write_syscalls(out: &mut Text, total: &Totals) {
    out.header(
        "mountscope_mount_syscalls_total",
        "Completed mount-family syscalls, failed ones included.",
        "counter",
    );
    for syscall in MountSyscall::ALL {
        let stats = &total.syscalls[syscall.index()];
        let labels = [("syscall", syscall.name())];
        out.sample("mountscope_mount_syscalls_total", &labels, stats.calls);
    }

    out.header(
        "mountscope_mount_syscall_errors_total",
        "Mount-family syscalls that returned an error, by errno; a pair appears with its first \
         failure.",
        "counter",
    );
    for (&key, &count) in &total.errnos {
        let Some(syscall) = MountSyscall::ALL.get((key >> 16) as usize) else {
            continue;
        };
        let errno = errno_slot_name(key & 0xffff);
        let labels = [("syscall", syscall.name()), ("errno", errno.as_str())];
        out.sample("mountscope_mount_syscall_errors_total", &labels, count);
    }

    out.header(
        "mountscope_mount_syscall_duration_seconds",
        "Mount-family syscall latency, from the kernel's power-of-two histogram.",
        "histogram",
    );
    for syscall in MountSyscall::ALL {
        let i = syscall.index();
        out.histogram(
            "mountscope_mount_syscall_duration_seconds",
            ("syscall", syscall.name()),
            &total.syscall_hist[i],
            total.syscalls[i].total_ns,
        );
    }
}

fn write_lock(out: &mut Text, total: &Totals, tier: Option<TierKind>) {
    if tier == Some(TierKind::SyscallsOnly) {
        return;
    }
    out.header(
        "mountscope_namespace_sem_waits_total",
        "Contended namespace_sem acquisitions, by lock mode.",
        "counter",
    );
    for mode in LockMode::ALL {
        let labels = [("mode", mode.name())];
        let count = total.waits[mode.index()].count;
        out.sample("mountscope_namespace_sem_waits_total", &labels, count);
    }
    out.header(
        "mountscope_namespace_sem_wait_seconds",
        "Time spent waiting for namespace_sem, by lock mode.",
        "histogram",
    );
    for mode in LockMode::ALL {
        let i = mode.index();
        out.histogram(
            "mountscope_namespace_sem_wait_seconds",
            ("mode", mode.name()),
            &total.wait_hist[i],
            total.waits[i].total_ns,
        );
    }

    if !matches!(
        tier,
        Some(TierKind::ExactFentry) | Some(TierKind::ExactKprobe)
    ) {
        return;
    }
    out.header(
        "mountscope_namespace_sem_hold_seconds",
        "Time namespace_sem was held per acquisition, by lock mode.",
        "histogram",
    );
    for mode in LockMode::ALL {
        let i = mode.index();
        out.histogram(
            "mountscope_namespace_sem_hold_seconds",
            ("mode", mode.name()),
            &total.hold_hist[i],
            total.holds[i].total_ns,
        );
    }
}

fn write_drops(out: &mut Text, total: &Totals) {
    out.header(
        "mountscope_events_dropped_total",
        "Events lost in the kernel programs, by reason. Aggregates stay exact when only \
         per-event records are lost (reason ringbuf_full).",
        "counter",
    );
    for (slot, reason) in DROP_REASONS {
        let count = total.drops[slot as usize];
        out.sample(
            "mountscope_events_dropped_total",
            &[("reason", reason)],
            count,
        );
    }
}

fn write_executor(out: &mut Text, executor: &ExecutorStats) {
    out.header(
        "mountscope_executor_builds_total",
        "Container root filesystems the overlay executor built, checked and tore down.",
        "counter",
    );
    let builds = executor.builds_by_strategy;
    for (strategy, count) in [
        ("per_layer", builds.per_layer),
        ("common_parent", builds.common_parent),
    ] {
        let labels = [("strategy", strategy)];
        out.sample("mountscope_executor_builds_total", &labels, count);
    }
    out.header(
        "mountscope_executor_build_failures_total",
        "Container starts of the overlay executor that failed.",
        "counter",
    );
    out.sample(
        "mountscope_executor_build_failures_total",
        &[],
        executor.failures_total,
    );
    out.header(
        "mountscope_executor_unmount_busy_retries_total",
        "umount2 calls the overlay executor repeated because the mount was busy.",
        "counter",
    );
    out.sample(
        "mountscope_executor_unmount_busy_retries_total",
        &[],
        executor.unmount_busy_retries,
    );
}

/// Adds every counter and histogram of `from` to `into`. Maxima take the larger value.
fn add_totals(into: &mut Totals, from: &Totals) {
    for (a, b) in into.syscalls.iter_mut().zip(&from.syscalls) {
        a.calls += b.calls;
        a.errors += b.errors;
        a.total_ns += b.total_ns;
        a.max_ns = a.max_ns.max(b.max_ns);
    }
    let lock_pairs = [
        (&mut into.waits[..], &from.waits[..]),
        (&mut into.holds[..], &from.holds[..]),
        (&mut into.wait_by_syscall[..], &from.wait_by_syscall[..]),
        (&mut into.hold_by_syscall[..], &from.hold_by_syscall[..]),
    ];
    for (into_stats, from_stats) in lock_pairs {
        for (a, b) in into_stats.iter_mut().zip(from_stats) {
            a.count += b.count;
            a.total_ns += b.total_ns;
            a.in_syscall += b.in_syscall;
            a.max_ns = a.max_ns.max(b.max_ns);
        }
    }
    add_rows(&mut into.syscall_hist, &from.syscall_hist);
    add_rows(&mut into.wait_hist, &from.wait_hist);
    add_rows(&mut into.hold_hist, &from.hold_hist);
    for (a, b) in into.sampler.iter_mut().zip(&from.sampler) {
        *a += b;
    }
    for (a, b) in into.drops.iter_mut().zip(&from.drops) {
        *a += b;
    }
    for (key, count) in &from.errnos {
        *into.errnos.entry(*key).or_default() += count;
    }
}

fn add_rows<const N: usize>(into: &mut [[u64; HIST_BUCKETS]; N], from: &[[u64; HIST_BUCKETS]; N]) {
    for (row_a, row_b) in into.iter_mut().zip(from) {
        for (a, b) in row_a.iter_mut().zip(row_b) {
            *a += b;
        }
    }
}

fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn tier_name(tier: TierKind) -> &'static str {
    match tier {
        TierKind::ExactFentry => "exact_fentry",
        TierKind::ExactKprobe => "exact_kprobe",
        TierKind::ContentionEstimate => "contention_estimate",
        TierKind::ContentionOnly => "contention_only",
        TierKind::SyscallsOnly => "syscalls_only",
    }
}

/// The exposition text under construction.
#[derive(Default)]
struct Text {
    text: String,
}

impl Text {
    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                // Label values here are fixed names without `"`, `\` or newlines, so they
                // need no escaping.
                let _ = write!(self.text, "{key}=\"{value}\"");
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// Writes one histogram series from log2 buckets. Kernel bucket 0 counts zeros and bucket
    /// `b` counts `[2^(b-1), 2^b)` ns, so its upper edge 2^b ns becomes `le`. A sample of
    /// exactly 2^b ns is counted one bucket higher than Prometheus's inclusive `le` implies.
    fn histogram(
        &mut self,
        name: &str,
        label: (&str, &str),
        buckets: &[u64; HIST_BUCKETS],
        sum_ns: u64,
    ) {
        let bucket_name = format!("{name}_bucket");
        let mut cumulative = 0u64;
        for (b, count) in buckets.iter().enumerate().take(LAST_FINITE_BUCKET + 1) {
            cumulative += count;
            let le_ns = if b == 0 { 0u64 } else { 1u64 << b };
            let le = format!("{}", seconds(le_ns));
            self.sample(&bucket_name, &[label, ("le", &le)], cumulative);
        }
        let count: u64 = buckets.iter().sum();
        self.sample(&bucket_name, &[label, ("le", "+Inf")], count);
        self.sample(&format!("{name}_sum"), &[label], seconds(sum_ns));
        self.sample(&format!("{name}_count"), &[label], count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals_with_mounts(calls: u64) -> Totals {
        let mut totals = Totals::default();
        let i = MountSyscall::Mount.index();
        totals.syscalls[i].calls = calls;
        totals.syscalls[i].total_ns = calls * 3000;
        totals.syscall_hist[i][12] = calls;
        totals
    }

    fn mount_count(text: &str) -> &str {
        text.lines()
            .find_map(|l| l.strip_prefix("mountscope_mount_syscalls_total{syscall=\"mount\"} "))
            .expect("mount counter missing")
    }

    #[test]
    fn counters_survive_reset() {
        let metrics = Metrics::default();
        metrics.carry_before_reset(&totals_with_mounts(5));
        metrics.carry_before_reset(&totals_with_mounts(2));
        assert_eq!(mount_count(&metrics.render()), "7");
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let metrics = Metrics::default();
        metrics.carry_before_reset(&totals_with_mounts(4));
        let text = metrics.render();
        let bucket = |le: &str| {
            let prefix = format!(
                "mountscope_mount_syscall_duration_seconds_bucket{{syscall=\"mount\",le=\"{le}\"}} "
            );
            text.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()).map(str::to_string))
                .unwrap_or_else(|| panic!("bucket le={le} missing"))
        };
        assert_eq!(bucket("0.000002048"), "0");
        assert_eq!(bucket("0.000004096"), "4");
        assert_eq!(bucket("+Inf"), "4");
    }

    #[test]
    fn every_metric_has_help_and_type() {
        let text = Metrics::default().render();
        let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
        assert!(types > 0);
        assert_eq!(types, helps);
    }
}
