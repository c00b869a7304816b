//! Building a [`Snapshot`] from two readings of the aggregate maps.

use std::time::Duration;

use mountscope_common::{
    LockMode, MountSyscall, drop_slot, sampler_slot,
    snapshot::{Drops, ErrnoCount, HoldEstimate, LockFigures, SyscallFigures},
};

use super::{event::errno_slot_name, hist, totals::Totals};

fn per_second(count: u64, interval: Duration) -> f64 {
    let secs = interval.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

fn mean(total_ns: u64, count: u64) -> u64 {
    total_ns.checked_div(count).unwrap_or(0)
}

/// Per-syscall figures: counts since `base`, the interval between `prev` and `now`.
pub fn syscall_figures(
    base: &Totals,
    prev: &Totals,
    now: &Totals,
    interval: Duration,
) -> Vec<SyscallFigures> {
    let since_base = now.since(base);
    let delta = now.since(prev);
    MountSyscall::ALL
        .iter()
        .map(|&syscall| {
            let i = syscall.index();
            let d = &delta.syscalls[i];
            let max = Totals::interval_max(
                now.syscalls[i].max_ns,
                prev.syscalls[i].max_ns,
                &delta.syscall_hist[i],
            );
            SyscallFigures {
                syscall,
                calls_total: since_base.syscalls[i].calls,
                errors_total: since_base.syscalls[i].errors,
                calls: d.calls,
                errors: d.errors,
                rate_per_s: per_second(d.calls, interval),
                latency: hist::latency(&delta.syscall_hist[i], max, mean(d.total_ns, d.calls)),
                errors_by_errno: errors_by_errno(&since_base, i),
            }
        })
        .collect()
}

/// Failures of the syscall with index `index` by errno, most frequent first.
fn errors_by_errno(totals: &Totals, index: usize) -> Vec<ErrnoCount> {
    let mut counts: Vec<ErrnoCount> = totals
        .errnos
        .iter()
        .filter(|&(&key, &count)| (key >> 16) as usize == index && count > 0)
        .map(|(&key, &count)| ErrnoCount {
            errno: errno_slot_name(key & 0xffff),
            count,
        })
        .collect();
    counts.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.errno.cmp(&b.errno)));
    counts
}

/// Per-mode lock figures from either the wait or the hold maps.
pub fn lock_figures(
    base: &Totals,
    prev: &Totals,
    now: &Totals,
    interval: Duration,
    holds: bool,
) -> Vec<LockFigures> {
    let since_base = now.since(base);
    let delta = now.since(prev);
    let pick = |t: &Totals| if holds { t.holds } else { t.waits };
    let pick_hist = |t: &Totals| if holds { t.hold_hist } else { t.wait_hist };
    LockMode::ALL
        .iter()
        .map(|&mode| {
            let i = mode.index();
            let d = pick(&delta)[i];
            let d_hist = pick_hist(&delta)[i];
            let max = Totals::interval_max(pick(now)[i].max_ns, pick(prev)[i].max_ns, &d_hist);
            LockFigures {
                mode,
                count_total: pick(&since_base)[i].count,
                count: d.count,
                rate_per_s: per_second(d.count, interval),
                total_ns: d.total_ns,
                in_syscall: d.in_syscall,
                latency: hist::latency(&d_hist, max, mean(d.total_ns, d.count)),
            }
        })
        .collect()
}

/// The sampler's estimate of write-hold time over the interval. Samples run on every CPU,
/// so the share of samples that found the lock write-held estimates the share of wall time
/// it was held, whichever CPU held it.
pub fn hold_estimate(delta: &Totals, interval: Duration, period_ns: u64) -> HoldEstimate {
    let samples = delta.sampler[sampler_slot::TOTAL as usize];
    let held = delta.sampler[sampler_slot::WRITE_HELD as usize];
    let share = if samples > 0 {
        held as f64 / samples as f64
    } else {
        0.0
    };
    let hold_ns = (share * interval.as_nanos() as f64) as u64;
    let hold_ns_by_syscall = MountSyscall::ALL
        .iter()
        .filter_map(|&s| {
            let n = delta.sampler[sampler_slot::BY_SYSCALL as usize + s.index()];
            (n > 0).then_some((s, n * period_ns))
        })
        .collect();
    HoldEstimate {
        period_ns,
        samples,
        write_held_samples: held,
        share_held: share,
        hold_ns,
        hold_ns_by_syscall,
    }
}

pub fn drops(counters: &[u64; drop_slot::COUNT as usize], user_lost: u64) -> Drops {
    Drops {
        ringbuf: counters[drop_slot::RINGBUF as usize] + user_lost,
        inflight: counters[drop_slot::INFLIGHT as usize],
        pending: counters[drop_slot::PENDING as usize],
        unpaired: counters[drop_slot::UNPAIRED as usize],
        stacks: counters[drop_slot::STACK as usize],
        sites: counters[drop_slot::SITE as usize],
    }
}
