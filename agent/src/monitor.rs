//! Executor figures per snapshot interval, and the last steady figures of each strategy for
//! the A/B comparison.

use std::time::Duration;

use mountscope_common::snapshot::{
    ExecutorSettings, ExecutorStatus, Snapshot, Strategy, StrategyFigures,
};

use crate::executor::ExecutorControl;

/// Intervals a setting must stay unchanged before its figures count as steady: the first
/// interval after a change mixes builds of the old and the new settings.
const STEADY_INTERVALS: u32 = 2;

/// Follows one executor across snapshots.
pub struct ExecutorMonitor {
    control: ExecutorControl,
    prev_builds: u64,
    prev_settings: Option<ExecutorSettings>,
    unchanged_intervals: u32,
    last_a: Option<StrategyFigures>,
    last_b: Option<StrategyFigures>,
}

/// The value at share `q` of sorted `values`, in nanoseconds.
pub fn percentile_ns(sorted: &[Duration], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_nanos() as u64
}

impl ExecutorMonitor {
    pub fn new(control: ExecutorControl) -> ExecutorMonitor {
        let stats = control.stats();
        ExecutorMonitor {
            control,
            prev_builds: stats.builds_total,
            prev_settings: None,
            unchanged_intervals: 0,
            last_a: None,
            last_b: None,
        }
    }

    pub fn control(&self) -> &ExecutorControl {
        &self.control
    }

    /// Forgets the A/B figures, as after a statistics reset.
    pub fn reset(&mut self) {
        self.last_a = None;
        self.last_b = None;
        self.unchanged_intervals = 0;
        let _ = self.control.take_build_latencies();
    }

    /// Fills `snapshot.executor` from the builds completed during the snapshot's interval
    /// and the mount syscalls and lock waits the probes counted in it.
    pub fn annotate(&mut self, snapshot: &mut Snapshot) {
        let stats = self.control.stats();
        let mut latencies = self.control.take_build_latencies();
        latencies.sort_unstable();

        let builds = stats.builds_total.saturating_sub(self.prev_builds);
        self.prev_builds = stats.builds_total;

        let interval = Duration::from_millis(snapshot.interval_ms.max(1));
        let per_build = |count: u64| {
            if builds > 0 {
                count as f64 / builds as f64
            } else {
                0.0
            }
        };
        let waits: u64 = snapshot.lock_waits.iter().map(|w| w.count).sum();
        let current = StrategyFigures {
            builds_per_s: builds as f64 / interval.as_secs_f64(),
            build_p50_ns: percentile_ns(&latencies, 0.50),
            build_p99_ns: percentile_ns(&latencies, 0.99),
            syscalls_per_build: per_build(snapshot.syscall_calls()),
            waits_per_build: per_build(waits),
        };

        let settings = stats.settings.clone();
        let mut steady_basis = settings.clone();
        steady_basis.paused = false;
        let same = self.prev_settings.as_ref().is_some_and(|p| {
            let mut p = p.clone();
            p.paused = false;
            p == steady_basis
        });
        self.unchanged_intervals = if same {
            self.unchanged_intervals + 1
        } else {
            0
        };
        self.prev_settings = Some(settings.clone());
        if self.unchanged_intervals >= STEADY_INTERVALS && builds > 0 && !settings.paused {
            match settings.strategy {
                Strategy::PerLayer => self.last_a = Some(current.clone()),
                Strategy::CommonParent => self.last_b = Some(current.clone()),
            }
        }

        snapshot.executor = Some(ExecutorStatus {
            settings,
            builds_total: stats.builds_total,
            failures_total: stats.failures_total,
            builds,
            current,
            last_a: self.last_a.clone(),
            last_b: self.last_b.clone(),
            last_error: stats.last_error,
            unmount_busy_retries: stats.unmount_busy_retries,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_of_empty_is_zero() {
        assert_eq!(percentile_ns(&[], 0.5), 0);
    }

    #[test]
    fn p50_of_four() {
        let v: Vec<Duration> = (1..=4).map(Duration::from_nanos).collect();
        assert_eq!(percentile_ns(&v, 0.5), 2);
    }

    #[test]
    fn p99_is_the_top_of_few() {
        let v: Vec<Duration> = (1..=10).map(Duration::from_nanos).collect();
        assert_eq!(percentile_ns(&v, 0.99), 10);
    }
}
