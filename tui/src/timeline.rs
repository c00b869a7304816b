//! The last minute of `namespace_sem` waits and hold time, one point per snapshot.

use std::collections::VecDeque;

use mountscope_common::{LockMode, snapshot::Snapshot};

/// How far back the timeline reaches, in milliseconds of snapshot time.
pub const TIMELINE_SPAN_MS: u64 = 60_000;

/// Lock figures of one snapshot, scaled to one second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimelinePoint {
    /// End of the snapshot's interval, milliseconds since the Unix epoch.
    pub time_unix_ms: u64,
    /// Contended acquisitions per second, read and write together.
    pub waits_per_s: f64,
    /// Write-hold time per second of the interval: exact at the fentry and kprobe tiers, the
    /// sampler's estimate at the contention tier, zero when no hold figures exist.
    pub hold_ns_per_s: u64,
}

impl TimelinePoint {
    /// Takes the lock figures of one snapshot.
    pub fn from_snapshot(snapshot: &Snapshot) -> TimelinePoint {
        let waits_per_s = snapshot.lock_waits.iter().map(|w| w.rate_per_s).sum();

        let hold_ns = match &snapshot.hold_estimate {
            Some(estimate) if snapshot.tier.kind.hold_is_estimate() => estimate.hold_ns,
            _ => snapshot
                .lock_holds
                .iter()
                .filter(|h| h.mode == LockMode::Write)
                .map(|h| h.total_ns)
                .sum(),
        };

        TimelinePoint {
            time_unix_ms: snapshot.time_unix_ms,
            waits_per_s,
            hold_ns_per_s: per_second(hold_ns, snapshot.interval_ms),
        }
    }
}

/// Scales a total over an interval of `interval_ms` to one second.
pub(crate) fn per_second(total_ns: u64, interval_ms: u64) -> u64 {
    if interval_ms == 0 {
        return total_ns;
    }
    let scaled = u128::from(total_ns) * 1000 / u128::from(interval_ms);
    u64::try_from(scaled).unwrap_or(u64::MAX)
}

/// Points of the last [`TIMELINE_SPAN_MS`], oldest first.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    points: VecDeque<TimelinePoint>,
}

impl Timeline {
    /// Appends the figures of a snapshot and drops points older than the span.
    ///
    /// A snapshot older than the newest point (the wall clock stepped back) starts the
    /// timeline afresh, because the old points would otherwise never age out.
    pub fn push(&mut self, snapshot: &Snapshot) {
        let point = TimelinePoint::from_snapshot(snapshot);

        if self
            .points
            .back()
            .is_some_and(|newest| newest.time_unix_ms > point.time_unix_ms)
        {
            self.points.clear();
        }

        let oldest_kept_ms = point.time_unix_ms.saturating_sub(TIMELINE_SPAN_MS);
        while self
            .points
            .front()
            .is_some_and(|oldest| oldest.time_unix_ms <= oldest_kept_ms)
        {
            self.points.pop_front();
        }

        self.points.push_back(point);
    }

    pub fn clear(&mut self) {
        self.points.clear();
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Points, oldest first.
    pub fn points(&self) -> impl Iterator<Item = &TimelinePoint> {
        self.points.iter()
    }

    /// Waits per second, rounded, of the newest `count` points, oldest first.
    pub fn waits_series(&self, count: usize) -> Vec<u64> {
        self.newest(count)
            .map(|p| p.waits_per_s.round() as u64)
            .collect()
    }

    /// Hold nanoseconds per second of the newest `count` points, oldest first.
    pub fn hold_series(&self, count: usize) -> Vec<u64> {
        self.newest(count).map(|p| p.hold_ns_per_s).collect()
    }

    fn newest(&self, count: usize) -> impl Iterator<Item = &TimelinePoint> {
        self.points
            .iter()
            .skip(self.points.len().saturating_sub(count))
    }
}

#[cfg(test)]
mod tests {
    use mountscope_common::snapshot::{Drops, Latency, LockFigures, Snapshot, Tier, TierKind};

    use super::*;

    fn snapshot_at(time_unix_ms: u64) -> Snapshot {
        Snapshot {
            time_unix_ms,
            interval_ms: 1000,
            uptime_ms: 0,
            kernel: String::new(),
            tier: Tier {
                kind: TierKind::ExactFentry,
                reason: String::new(),
            },
            syscall_probes: Default::default(),
            lock_address: None,
            syscalls: Vec::new(),
            lock_waits: Vec::new(),
            lock_holds: Vec::new(),
            hold_estimate: None,
            holders_by_process: Vec::new(),
            holders_by_cgroup: Vec::new(),
            drops: Drops::default(),
            drops_total: Drops::default(),
            wait_sites_recorded: false,
            wait_sites: Vec::new(),
            breakdown: Vec::new(),
            executor: None,
        }
    }

    #[test]
    fn timeline_keeps_last_minute() {
        let mut timeline = Timeline::default();
        for second in 0..90 {
            timeline.push(&snapshot_at(second * 1000));
        }
        assert_eq!(timeline.len(), 60);
    }

    #[test]
    fn timeline_restarts_when_clock_steps_back() {
        let mut timeline = Timeline::default();
        timeline.push(&snapshot_at(10_000));
        timeline.push(&snapshot_at(5_000));
        assert_eq!(timeline.len(), 1);
    }

    #[test]
    fn series_holds_newest_points() {
        let mut timeline = Timeline::default();
        for second in 0..5 {
            let mut snapshot = snapshot_at(second * 1000);
            snapshot.lock_holds = vec![LockFigures {
                mode: LockMode::Write,
                count_total: 1,
                count: 1,
                rate_per_s: 1.0,
                total_ns: second,
                in_syscall: 0,
                latency: Latency::default(),
            }];
            timeline.push(&snapshot);
        }
        assert_eq!(timeline.hold_series(3), vec![2, 3, 4]);
    }

    #[test]
    fn per_second_scales_interval() {
        assert_eq!(per_second(500, 500), 1000);
    }
}
