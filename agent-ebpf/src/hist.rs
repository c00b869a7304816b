//! Log2 histograms and counters in per-CPU arrays.

use aya_ebpf::maps::PerCpuArray;
use mountscope_common::{HIST_BUCKETS, LockStats};

/// Bucket of `value`: 0 for 0, otherwise one more than the index of its highest set bit,
/// capped at the last bucket. Written as a branchy binary search because BPF has no
/// count-leading-zeros instruction and the verifier rejects loops it cannot bound.
#[inline(always)]
pub fn bucket(value: u64) -> u32 {
    if value == 0 {
        return 0;
    }
    let mut v = value;
    let mut log = 0u32;
    if v >= 1 << 32 {
        v >>= 32;
        log += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        log += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        log += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        log += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        log += 2;
    }
    if v >= 1 << 1 {
        log += 1;
    }
    let b = log + 1;
    if b >= HIST_BUCKETS as u32 {
        HIST_BUCKETS as u32 - 1
    } else {
        b
    }
}

/// Adds one to the bucket of `value` in row `row` of a histogram array laid out as rows of
/// `HIST_BUCKETS` counters.
#[inline(always)]
pub fn record(hist: &PerCpuArray<u64>, row: u32, value: u64) {
    let index = row * HIST_BUCKETS as u32 + bucket(value);
    if let Some(slot) = hist.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, so no other CPU writes it; the pointer comes from the map.
        unsafe { *slot += 1 };
    }
}

/// Adds one to a counter slot.
#[inline(always)]
pub fn count(counters: &PerCpuArray<u64>, slot: u32) {
    if let Some(value) = counters.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, written only by this CPU.
        unsafe { *value += 1 };
    }
}

/// Adds one acquisition of `duration_ns` to lock counters.
#[inline(always)]
pub fn add_lock(stats: &PerCpuArray<LockStats>, slot: u32, duration_ns: u64, in_syscall: bool) {
    if let Some(s) = stats.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, written only by this CPU.
        let s = unsafe { &mut *s };
        s.count += 1;
        s.total_ns += duration_ns;
        if duration_ns > s.max_ns {
            s.max_ns = duration_ns;
        }
        if in_syscall {
            s.in_syscall += 1;
        }
    }
}
