//! The snapshot: every figure mountscope shows, published once per interval by the agent and
//! read by the TUI, the JSON export and the benchmark alike.

use serde::{Deserialize, Serialize};

use crate::{LockMode, MountSyscall};

/// How hold times are measured on this kernel, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TierKind {
    /// fentry/fexit on the rwsem operations: exact wait and hold per acquisition.
    ExactFentry,
    /// kprobes/kretprobes on the rwsem operations: exact wait and hold per acquisition.
    ExactKprobe,
    /// `lock:contention_*` tracepoints give exact waits; a cpu-clock sampler estimates holds.
    ContentionEstimate,
    /// `lock:contention_*` tracepoints give exact waits, and hold time is not measured: it was
    /// turned off with `--hold-method none`, or no hold method loads.
    ContentionOnly,
    /// Only syscall tracepoints load: syscall latency, no lock figures.
    SyscallsOnly,
}

impl TierKind {
    /// Whether hold figures at this tier are estimates.
    pub fn hold_is_estimate(self) -> bool {
        matches!(self, TierKind::ContentionEstimate)
    }

    /// Reports whether this tier measures or estimates how long namespace_sem is held.
    pub fn measures_hold(self) -> bool {
        matches!(
            self,
            TierKind::ExactFentry | TierKind::ExactKprobe | TierKind::ContentionEstimate
        )
    }

    pub fn label(self) -> &'static str {
        match self {
            TierKind::ExactFentry => "exact (fentry)",
            TierKind::ExactKprobe => "exact (kprobe)",
            TierKind::ContentionEstimate => "contention tracepoints + hold estimate",
            TierKind::ContentionOnly => "contention tracepoints, no hold time",
            TierKind::SyscallsOnly => "syscall latency only",
        }
    }
}

/// The measurement tier in use and why it was chosen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tier {
    pub kind: TierKind,
    pub reason: String,
}

/// Method that times the mount-family syscalls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyscallProbes {
    /// fentry/fexit on the syscall functions: no cost to other syscalls.
    Fentry,
    /// The `syscalls:sys_enter_*`/`sys_exit_*` tracepoints. While any is enabled, every
    /// syscall of every task takes the kernel's slower traced entry path.
    #[default]
    Tracepoints,
}

impl SyscallProbes {
    pub const fn label(self) -> &'static str {
        match self {
            SyscallProbes::Fentry => "fentry/fexit",
            SyscallProbes::Tracepoints => "syscall tracepoints",
        }
    }

    /// Returns the one-word form of [`SyscallProbes::label`], for panel titles.
    pub const fn short_label(self) -> &'static str {
        match self {
            SyscallProbes::Fentry => "fentry",
            SyscallProbes::Tracepoints => "tracepoints",
        }
    }
}

/// How the address of `namespace_sem` was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressSource {
    /// Read from `/proc/kallsyms` (needs `CONFIG_KALLSYMS_ALL`).
    Kallsyms,
    /// Found at run time by forcing contention between mounting threads and a mountinfo reader.
    Calibration,
}

/// The address of `namespace_sem` and how it was found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockAddress {
    /// Kernel address, formatted as `0x…` hex.
    pub address: String,
    pub source: AddressSource,
}

/// Latency figures over a set of samples, in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
    pub mean_ns: u64,
}

/// Figures of one mount-family syscall.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyscallFigures {
    pub syscall: MountSyscall,
    /// Calls since the agent started or statistics were reset.
    pub calls_total: u64,
    pub errors_total: u64,
    /// Calls completed during the last interval.
    pub calls: u64,
    pub errors: u64,
    pub rate_per_s: f64,
    /// Latency over the last interval (from the in-kernel log2 histogram, so each percentile
    /// is the upper edge of its power-of-two bucket, except `max_ns` and `mean_ns`).
    pub latency: Latency,
    /// Failures since start or the last reset by errno, most frequent first.
    #[serde(default)]
    pub errors_by_errno: Vec<ErrnoCount>,
}

/// Failed calls of one syscall with one errno.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrnoCount {
    /// Errno name such as `ENOENT`.
    pub errno: String,
    pub count: u64,
}

/// Wait or hold figures of `namespace_sem` for one lock mode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LockFigures {
    pub mode: LockMode,
    pub count_total: u64,
    /// Acquisitions (holds) or contended acquisitions (waits) during the last interval.
    pub count: u64,
    pub rate_per_s: f64,
    pub total_ns: u64,
    /// Of `count`, those made while the task was in a traced mount syscall.
    pub in_syscall: u64,
    pub latency: Latency,
}

/// Hold time of `namespace_sem` as the cpu-clock sampler estimates it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HoldEstimate {
    /// Sampling period per CPU, in nanoseconds.
    pub period_ns: u64,
    pub samples: u64,
    pub write_held_samples: u64,
    /// Estimated share of the interval during which the lock was held for write (0 to 1).
    pub share_held: f64,
    /// Estimated write-hold time during the interval.
    pub hold_ns: u64,
    /// Estimated write-hold time by the mount syscall the holder was in.
    pub hold_ns_by_syscall: Vec<(MountSyscall, u64)>,
}

/// Who held `namespace_sem` while others waited, summed over the waits they caused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HolderFigures {
    /// `pid:<n>`, `cgroup:<id>` or `readers`.
    pub key: String,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub cgroup_id: Option<u64>,
    /// The syscall the holder was in at most of these contentions.
    pub syscall: Option<MountSyscall>,
    pub waits: u64,
    pub wait_ns: u64,
}

/// Events lost on the way to user space. Aggregates stay exact when per-event records drop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drops {
    /// Per-event records lost because the ring buffer was full.
    pub ringbuf: u64,
    /// Syscalls not traced because the in-flight map was full.
    pub inflight: u64,
    /// Contentions not timed because the pending-wait map was full.
    pub pending: u64,
    /// Exits or contention ends seen without their start.
    pub unpaired: u64,
    /// Kernel stacks not stored because of a hash collision in the stack map.
    #[serde(default)]
    pub stacks: u64,
    /// Waits not attributed to a site because the site map was full.
    #[serde(default)]
    pub sites: u64,
}

impl Drops {
    pub fn total(&self) -> u64 {
        self.ringbuf + self.inflight + self.pending + self.unpaired + self.stacks + self.sites
    }
}

/// Strategy of the overlay executor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// A: one bind (or idmapped) mount per layer.
    PerLayer,
    /// B: one bind (or idmapped) mount of the layers' common parent.
    CommonParent,
}

impl Strategy {
    pub fn letter(self) -> &'static str {
        match self {
            Strategy::PerLayer => "A",
            Strategy::CommonParent => "B",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Strategy::PerLayer => "A per-layer binds",
            Strategy::CommonParent => "B common parent",
        }
    }

    pub fn toggled(self) -> Strategy {
        match self {
            Strategy::PerLayer => Strategy::CommonParent,
            Strategy::CommonParent => Strategy::PerLayer,
        }
    }
}

/// How the executor mounts the overlay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MountApi {
    /// `fsopen`/`fsconfig` when the legacy option string would pass one page, else `mount(2)`.
    Auto,
    /// `mount(2)` with a `lowerdir=` option string.
    Legacy,
    /// `fsopen("overlay")` with one `fsconfig` `lowerdir+` per layer.
    Fsconfig,
}

impl MountApi {
    pub fn label(self) -> &'static str {
        match self {
            MountApi::Auto => "auto",
            MountApi::Legacy => "mount(2)",
            MountApi::Fsconfig => "fsconfig",
        }
    }

    pub fn next(self) -> MountApi {
        match self {
            MountApi::Auto => MountApi::Legacy,
            MountApi::Legacy => MountApi::Fsconfig,
            MountApi::Fsconfig => MountApi::Auto,
        }
    }
}

/// Executor settings that can change while it runs; a change applies at the next start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorSettings {
    pub strategy: Strategy,
    pub layers: u32,
    pub builders: u32,
    pub idmap: bool,
    pub mount_api: MountApi,
    pub paused: bool,
}

/// Steady figures of one strategy, kept for the A/B comparison.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StrategyFigures {
    pub builds_per_s: f64,
    pub build_p50_ns: u64,
    pub build_p99_ns: u64,
    /// Mount-family syscalls counted by the probes, per completed build.
    pub syscalls_per_build: f64,
    /// Contended `namespace_sem` acquisitions per build.
    pub waits_per_build: f64,
}

/// Executor state and throughput over the last interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecutorStatus {
    pub settings: ExecutorSettings,
    pub builds_total: u64,
    pub failures_total: u64,
    /// Builds completed during the last interval.
    pub builds: u64,
    pub current: StrategyFigures,
    /// Last steady figures of each strategy, for the A/B panel.
    pub last_a: Option<StrategyFigures>,
    pub last_b: Option<StrategyFigures>,
    pub last_error: Option<String>,
    /// `umount2` calls repeated because the mount was busy, since the executor started. Recordings
    /// made before this field existed read as 0.
    #[serde(default)]
    pub unmount_busy_retries: u64,
}

/// One place where mount syscalls wait: a lock or an off-CPU span at one kernel call site.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WaitSite {
    /// A name a reader knows (`namespace_sem`, `RCU expedited grace period`, ...) or the
    /// first function outside the locking and scheduling code.
    pub name: String,
    pub kind: crate::WaitKind,
    pub syscall: MountSyscall,
    pub count: u64,
    pub total_ns: u64,
    pub p99_ns: u64,
    /// `total_ns` as a share of the syscall's total latency over the same time (0 to 1).
    pub share: f64,
    /// Symbolized kernel stack of the most frequent instance, innermost frame first.
    pub stack: Vec<String>,
}

/// A syscall's total latency split into what it spent on CPU, in lock waits, blocked off CPU
/// and preempted; the four shares add up to 1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyscallBreakdown {
    pub syscall: MountSyscall,
    pub total_ns: u64,
    pub on_cpu_share: f64,
    pub lock_wait_share: f64,
    pub blocked_share: f64,
    pub preempted_share: f64,
}

/// Every figure of one interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Wall-clock end of the interval, milliseconds since the Unix epoch.
    pub time_unix_ms: u64,
    pub interval_ms: u64,
    pub uptime_ms: u64,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    pub tier: Tier,
    /// Method that times the mount-family syscalls.
    #[serde(default)]
    pub syscall_probes: SyscallProbes,
    /// `None` when the address could not be found; lock figures are then empty.
    pub lock_address: Option<LockAddress>,
    pub syscalls: Vec<SyscallFigures>,
    pub lock_waits: Vec<LockFigures>,
    /// Exact per-acquisition holds; empty at the estimate tier.
    pub lock_holds: Vec<LockFigures>,
    /// Present at the estimate tier.
    pub hold_estimate: Option<HoldEstimate>,
    pub holders_by_process: Vec<HolderFigures>,
    pub holders_by_cgroup: Vec<HolderFigures>,
    /// Drops during the last interval and in total.
    pub drops: Drops,
    pub drops_total: Drops,
    /// Whether wait sites and the breakdown are recorded (`--wait-sites`); both are empty
    /// when not.
    #[serde(default)]
    pub wait_sites_recorded: bool,
    /// Top places where mount syscalls waited, since start or the last reset.
    #[serde(default)]
    pub wait_sites: Vec<WaitSite>,
    /// Per-syscall latency breakdown, since start or the last reset.
    #[serde(default)]
    pub breakdown: Vec<SyscallBreakdown>,
    pub executor: Option<ExecutorStatus>,
}

impl Snapshot {
    /// Total mount-family calls during the interval.
    pub fn syscall_calls(&self) -> u64 {
        self.syscalls.iter().map(|s| s.calls).sum()
    }

    /// Figures of one syscall.
    pub fn syscall(&self, syscall: MountSyscall) -> Option<&SyscallFigures> {
        self.syscalls.iter().find(|s| s.syscall == syscall)
    }

    /// Wait figures of one lock mode.
    pub fn lock_wait(&self, mode: LockMode) -> Option<&LockFigures> {
        self.lock_waits.iter().find(|l| l.mode == mode)
    }
}
