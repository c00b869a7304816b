//! Every map the programs share, with its key, value and the reason for its size.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf, StackTrace},
};
use mountscope_common::{
    Breakdown, CalibKey, HIST_BUCKETS, Inflight, LOCK_MODE_COUNT, LockStats, PendingSiteWait,
    PendingWait, SYSCALL_COUNT, SyscallStats, WaitSiteKey, WaitSiteStats, drop_slot, sampler_slot,
    switch_slot,
};

/// Threads that can be inside a traced syscall or a contention at once. Each thread holds at
/// most one entry, so this bounds concurrent threads, not calls; 16384 is far above the thread
/// count of any mount storm seen, and a full map is counted in `DROPS`.
const MAX_THREADS: u32 = 16384;

/// Thread id -> the traced syscall it is in, for threads whose slot in `INFLIGHT_SLOTS` was
/// owned by another thread at enter. Inserted at enter, removed at exit.
#[map]
pub static INFLIGHT: HashMap<u32, Inflight> = HashMap::with_max_entries(MAX_THREADS, 0);

/// `errno_key(syscall index, errno)` -> failed calls, shared by all CPUs and added to
/// atomically. At most `SYSCALL_COUNT * (ERRNO_MAX + 1)` keys exist, fewer than the entries.
#[map]
pub static SYSCALL_ERRNOS: HashMap<u32, u64> = HashMap::with_max_entries(4096, 0);

/// Thread id -> its contention on `namespace_sem` in progress. Inserted at
/// `contention_begin`, removed at `contention_end`.
#[map]
pub static PENDING_WAITS: HashMap<u32, PendingWait> = HashMap::with_max_entries(MAX_THREADS, 0);

/// `switch_slot` -> a switch the agent flips at run time: 1 is on.
#[map]
pub static SWITCHES: Array<u32> = Array::with_max_entries(switch_slot::COUNT, 0);

/// Syscall index -> call counters.
#[map]
pub static SYSCALL_STATS: PerCpuArray<SyscallStats> =
    PerCpuArray::with_max_entries(SYSCALL_COUNT as u32, 0);

/// Syscall index * `HIST_BUCKETS` + bucket -> calls with that latency.
#[map]
pub static SYSCALL_HIST: PerCpuArray<u64> =
    PerCpuArray::with_max_entries((SYSCALL_COUNT * HIST_BUCKETS) as u32, 0);

/// Lock mode index -> contended acquisitions of `namespace_sem` and their wait.
#[map]
pub static WAIT_STATS: PerCpuArray<LockStats> =
    PerCpuArray::with_max_entries(LOCK_MODE_COUNT as u32, 0);

/// Lock mode index * `HIST_BUCKETS` + bucket -> waits with that duration.
#[map]
pub static WAIT_HIST: PerCpuArray<u64> =
    PerCpuArray::with_max_entries((LOCK_MODE_COUNT * HIST_BUCKETS) as u32, 0);

/// Syscall index -> waits on `namespace_sem` made inside that syscall.
#[map]
pub static WAIT_BY_SYSCALL: PerCpuArray<LockStats> =
    PerCpuArray::with_max_entries(SYSCALL_COUNT as u32, 0);

/// Lock mode index -> exact holds of `namespace_sem` (fentry or kprobe tier only).
#[map]
pub static HOLD_STATS: PerCpuArray<LockStats> =
    PerCpuArray::with_max_entries(LOCK_MODE_COUNT as u32, 0);

/// Lock mode index * `HIST_BUCKETS` + bucket -> holds with that duration.
#[map]
pub static HOLD_HIST: PerCpuArray<u64> =
    PerCpuArray::with_max_entries((LOCK_MODE_COUNT * HIST_BUCKETS) as u32, 0);

/// Syscall index -> exact holds made inside that syscall.
#[map]
pub static HOLD_BY_SYSCALL: PerCpuArray<LockStats> =
    PerCpuArray::with_max_entries(SYSCALL_COUNT as u32, 0);

/// `sampler_slot` -> cpu-clock samples, for the hold-time estimate.
#[map]
pub static SAMPLER: PerCpuArray<u64> = PerCpuArray::with_max_entries(sampler_slot::COUNT, 0);

/// `drop_slot` -> events lost on the way to user space.
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(drop_slot::COUNT, 0);

/// Per-event records (`mountscope_common::Event`, 120 bytes). 4 MiB holds about 35,000
/// records, over a second of a mount storm between two drains 100 ms apart.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Thread id -> acquisition in progress of `namespace_sem` (exact tier): start of the wait
/// or of the hold, and the lock mode.
#[map]
pub static EXACT_STATE: HashMap<u32, crate::exact::ExactState> =
    HashMap::with_max_entries(MAX_THREADS, 0);

/// (lock address, thread, flags) -> contentions, recorded only for the calibrating process.
/// The calibration runs for about 50 ms with three threads, so a few thousand keys suffice.
#[map]
pub static CALIB: HashMap<CalibKey, u64> = HashMap::with_max_entries(8192, 0);

/// Kernel stacks of waits inside mount syscalls, by stack id. 8192 distinct stacks is far
/// more than the mount paths produce; a hash collision is counted in `DROPS`.
#[map]
pub static STACKS: StackTrace = StackTrace::with_max_entries(8192, 0);

/// (lock address, stack, syscall, kind, flags) -> count, total and histogram of the waits.
/// Shared by all CPUs and updated with atomic adds.
#[map]
pub static WAIT_SITES: HashMap<WaitSiteKey, WaitSiteStats> = HashMap::with_max_entries(8192, 0);

/// Thread id -> its lock contention in progress inside a mount syscall, any lock.
#[map]
pub static SITE_LOCK_WAITS: HashMap<u32, PendingSiteWait> =
    HashMap::with_max_entries(MAX_THREADS, 0);

/// Thread id -> its off-CPU span in progress inside a mount syscall.
#[map]
pub static SITE_OFF_CPU: HashMap<u32, PendingSiteWait> = HashMap::with_max_entries(MAX_THREADS, 0);

/// Syscall index -> latency split into lock waits, blocked and preempted time.
#[map]
pub static SYSCALL_BREAKDOWN: PerCpuArray<Breakdown> =
    PerCpuArray::with_max_entries(SYSCALL_COUNT as u32, 0);

/// One all-zero `WaitSiteStats`, never written: the initial value of a new `WAIT_SITES`
/// entry, kept in a map because it does not fit on the BPF stack.
#[map]
pub static EMPTY_SITE: PerCpuArray<WaitSiteStats> = PerCpuArray::with_max_entries(1, 0);
