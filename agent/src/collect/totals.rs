//! Reading the per-CPU maps into totals, and differences between two readings.

use std::collections::BTreeMap;

use aya::{
    Ebpf,
    maps::{HashMap, MapData, PerCpuArray},
};
use mountscope_common::{
    HIST_BUCKETS, LOCK_MODE_COUNT, LockStats, SYSCALL_COUNT, SyscallStats, drop_slot, sampler_slot,
};

/// Sums over all CPUs of every aggregate map, since the programs were loaded.
#[derive(Clone, Debug, PartialEq)]
pub struct Totals {
    pub syscalls: [SyscallStats; SYSCALL_COUNT],
    pub syscall_hist: [[u64; HIST_BUCKETS]; SYSCALL_COUNT],
    pub waits: [LockStats; LOCK_MODE_COUNT],
    pub wait_hist: [[u64; HIST_BUCKETS]; LOCK_MODE_COUNT],
    pub wait_by_syscall: [LockStats; SYSCALL_COUNT],
    pub holds: [LockStats; LOCK_MODE_COUNT],
    pub hold_hist: [[u64; HIST_BUCKETS]; LOCK_MODE_COUNT],
    pub hold_by_syscall: [LockStats; SYSCALL_COUNT],
    pub sampler: [u64; sampler_slot::COUNT as usize],
    pub drops: [u64; drop_slot::COUNT as usize],
    /// Failed calls by `errno_key(syscall index, errno)`; keys appear with the first failure.
    pub errnos: BTreeMap<u32, u64>,
}

impl Default for Totals {
    fn default() -> Self {
        Totals {
            syscalls: [SyscallStats::default(); SYSCALL_COUNT],
            syscall_hist: [[0; HIST_BUCKETS]; SYSCALL_COUNT],
            waits: [LockStats::default(); LOCK_MODE_COUNT],
            wait_hist: [[0; HIST_BUCKETS]; LOCK_MODE_COUNT],
            wait_by_syscall: [LockStats::default(); SYSCALL_COUNT],
            holds: [LockStats::default(); LOCK_MODE_COUNT],
            hold_hist: [[0; HIST_BUCKETS]; LOCK_MODE_COUNT],
            hold_by_syscall: [LockStats::default(); SYSCALL_COUNT],
            sampler: [0; sampler_slot::COUNT as usize],
            drops: [0; drop_slot::COUNT as usize],
            errnos: BTreeMap::new(),
        }
    }
}

/// Handles on the aggregate maps, taken once from the loaded object.
pub struct AggregateMaps {
    syscalls: PerCpuArray<MapData, SyscallStats>,
    syscall_hist: PerCpuArray<MapData, u64>,
    waits: PerCpuArray<MapData, LockStats>,
    wait_hist: PerCpuArray<MapData, u64>,
    wait_by_syscall: PerCpuArray<MapData, LockStats>,
    holds: PerCpuArray<MapData, LockStats>,
    hold_hist: PerCpuArray<MapData, u64>,
    hold_by_syscall: PerCpuArray<MapData, LockStats>,
    sampler: PerCpuArray<MapData, u64>,
    drops: PerCpuArray<MapData, u64>,
    errnos: HashMap<MapData, u32, u64>,
}

fn take<V: aya::Pod>(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<PerCpuArray<MapData, V>> {
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow::anyhow!("map `{name}` is missing from the eBPF object"))?;
    Ok(PerCpuArray::try_from(map)?)
}

fn sum_stats(
    map: &PerCpuArray<MapData, SyscallStats>,
    out: &mut [SyscallStats],
) -> anyhow::Result<()> {
    for (i, slot) in out.iter_mut().enumerate() {
        let mut total = SyscallStats::default();
        for v in map.get(&(i as u32), 0)?.iter() {
            total.calls += v.calls;
            total.errors += v.errors;
            total.total_ns += v.total_ns;
            total.max_ns = total.max_ns.max(v.max_ns);
        }
        *slot = total;
    }
    Ok(())
}

fn sum_lock(map: &PerCpuArray<MapData, LockStats>, out: &mut [LockStats]) -> anyhow::Result<()> {
    for (i, slot) in out.iter_mut().enumerate() {
        let mut total = LockStats::default();
        for v in map.get(&(i as u32), 0)?.iter() {
            total.count += v.count;
            total.total_ns += v.total_ns;
            total.in_syscall += v.in_syscall;
            total.max_ns = total.max_ns.max(v.max_ns);
        }
        *slot = total;
    }
    Ok(())
}

fn sum_counters(map: &PerCpuArray<MapData, u64>, out: &mut [u64]) -> anyhow::Result<()> {
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = map.get(&(i as u32), 0)?.iter().sum();
    }
    Ok(())
}

fn sum_hist(
    map: &PerCpuArray<MapData, u64>,
    out: &mut [[u64; HIST_BUCKETS]],
) -> anyhow::Result<()> {
    for (row, buckets) in out.iter_mut().enumerate() {
        for (b, slot) in buckets.iter_mut().enumerate() {
            let index = (row * HIST_BUCKETS + b) as u32;
            *slot = map.get(&index, 0)?.iter().sum();
        }
    }
    Ok(())
}

impl AggregateMaps {
    pub fn take(ebpf: &mut Ebpf) -> anyhow::Result<AggregateMaps> {
        Ok(AggregateMaps {
            syscalls: take(ebpf, "SYSCALL_STATS")?,
            syscall_hist: take(ebpf, "SYSCALL_HIST")?,
            waits: take(ebpf, "WAIT_STATS")?,
            wait_hist: take(ebpf, "WAIT_HIST")?,
            wait_by_syscall: take(ebpf, "WAIT_BY_SYSCALL")?,
            holds: take(ebpf, "HOLD_STATS")?,
            hold_hist: take(ebpf, "HOLD_HIST")?,
            hold_by_syscall: take(ebpf, "HOLD_BY_SYSCALL")?,
            sampler: take(ebpf, "SAMPLER")?,
            drops: take(ebpf, "DROPS")?,
            errnos: HashMap::try_from(ebpf.take_map("SYSCALL_ERRNOS").ok_or_else(|| {
                anyhow::anyhow!("map `SYSCALL_ERRNOS` is missing from the eBPF object")
            })?)?,
        })
    }

    /// Reads and sums every map. Each map is read element by element, so a reading is not
    /// one atomic instant; counters can be a few events apart between maps.
    pub fn read(&self) -> anyhow::Result<Totals> {
        let mut t = Totals::default();
        sum_stats(&self.syscalls, &mut t.syscalls)?;
        sum_hist(&self.syscall_hist, &mut t.syscall_hist)?;
        sum_lock(&self.waits, &mut t.waits)?;
        sum_hist(&self.wait_hist, &mut t.wait_hist)?;
        sum_lock(&self.wait_by_syscall, &mut t.wait_by_syscall)?;
        sum_lock(&self.holds, &mut t.holds)?;
        sum_hist(&self.hold_hist, &mut t.hold_hist)?;
        sum_lock(&self.hold_by_syscall, &mut t.hold_by_syscall)?;
        sum_counters(&self.sampler, &mut t.sampler)?;
        sum_counters(&self.drops, &mut t.drops)?;
        for entry in self.errnos.iter() {
            let (key, count) = entry?;
            t.errnos.insert(key, count);
        }
        Ok(t)
    }
}

fn sub_hist<const N: usize>(a: &mut [[u64; HIST_BUCKETS]; N], b: &[[u64; HIST_BUCKETS]; N]) {
    for (row_a, row_b) in a.iter_mut().zip(b) {
        for (x, y) in row_a.iter_mut().zip(row_b) {
            *x = x.saturating_sub(*y);
        }
    }
}

/// `a - b` for lock counters; `max_ns` stays `a`'s because a maximum cannot be subtracted.
fn sub_lock(a: &mut [LockStats], b: &[LockStats]) {
    for (x, y) in a.iter_mut().zip(b) {
        x.count = x.count.saturating_sub(y.count);
        x.total_ns = x.total_ns.saturating_sub(y.total_ns);
        x.in_syscall = x.in_syscall.saturating_sub(y.in_syscall);
    }
}

impl Totals {
    /// What happened between `earlier` and `self`. Maxima stay those of `self`, the
    /// cumulative ones; [`Totals::interval_max`] narrows them for an interval.
    pub fn since(&self, earlier: &Totals) -> Totals {
        let mut d = self.clone();
        for (x, y) in d.syscalls.iter_mut().zip(&earlier.syscalls) {
            x.calls = x.calls.saturating_sub(y.calls);
            x.errors = x.errors.saturating_sub(y.errors);
            x.total_ns = x.total_ns.saturating_sub(y.total_ns);
        }
        sub_hist(&mut d.syscall_hist, &earlier.syscall_hist);
        sub_lock(&mut d.waits, &earlier.waits);
        sub_hist(&mut d.wait_hist, &earlier.wait_hist);
        sub_lock(&mut d.wait_by_syscall, &earlier.wait_by_syscall);
        sub_lock(&mut d.holds, &earlier.holds);
        sub_hist(&mut d.hold_hist, &earlier.hold_hist);
        sub_lock(&mut d.hold_by_syscall, &earlier.hold_by_syscall);
        for (x, y) in d.sampler.iter_mut().zip(&earlier.sampler) {
            *x = x.saturating_sub(*y);
        }
        for (x, y) in d.drops.iter_mut().zip(&earlier.drops) {
            *x = x.saturating_sub(*y);
        }
        for (key, count) in &mut d.errnos {
            *count = count.saturating_sub(earlier.errnos.get(key).copied().unwrap_or(0));
        }
        d.errnos.retain(|_, count| *count > 0);
        d
    }

    /// The largest value of an interval: exact when the cumulative maximum grew during it,
    /// otherwise the top edge of the interval's highest bucket, capped by the cumulative max.
    pub fn interval_max(
        cumulative_now: u64,
        cumulative_before: u64,
        interval_hist: &[u64; HIST_BUCKETS],
    ) -> u64 {
        if interval_hist.iter().all(|&c| c == 0) {
            return 0;
        }
        if cumulative_now > cumulative_before {
            return cumulative_now;
        }
        super::hist::highest_edge(interval_hist).min(cumulative_now)
    }
}
