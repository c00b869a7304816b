//! Records and constants shared by mountscope's eBPF programs and its user-space agent.
//!
//! Both sides compile this crate, so every record is `#[repr(C)]` with fixed-width fields and
//! explicit padding, and a compile-time assertion pins its size. Zero is never a valid kind, so
//! a zeroed record is recognisably empty.
#![cfg_attr(not(feature = "user"), no_std)]

#[cfg(feature = "user")]
pub mod snapshot;

/// Length of a task's `comm`, including the terminating NUL (`TASK_COMM_LEN` in the kernel).
pub const TASK_COMM_LEN: usize = 16;

/// Buckets of a log2 histogram: bucket `b` counts values in `[2^(b-1), 2^b)` nanoseconds, and
/// bucket 0 counts zero.
pub const HIST_BUCKETS: usize = 48;

/// The mount-family syscalls that mountscope traces.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "user", serde(rename_all = "snake_case"))]
pub enum MountSyscall {
    Mount = 1,
    Umount2 = 2,
    MoveMount = 3,
    OpenTree = 4,
    OpenTreeAttr = 5,
    Fsopen = 6,
    Fsconfig = 7,
    Fsmount = 8,
    Fspick = 9,
    MountSetattr = 10,
}

/// Number of traced syscalls; per-syscall arrays are indexed by [`MountSyscall::index`].
pub const SYSCALL_COUNT: usize = 10;

impl MountSyscall {
    pub const ALL: [MountSyscall; SYSCALL_COUNT] = [
        MountSyscall::Mount,
        MountSyscall::Umount2,
        MountSyscall::MoveMount,
        MountSyscall::OpenTree,
        MountSyscall::OpenTreeAttr,
        MountSyscall::Fsopen,
        MountSyscall::Fsconfig,
        MountSyscall::Fsmount,
        MountSyscall::Fspick,
        MountSyscall::MountSetattr,
    ];

    /// Returns the syscall with the given id, or `None` for zero and unknown ids.
    pub const fn from_id(id: u32) -> Option<MountSyscall> {
        if id == 0 || id as usize > SYSCALL_COUNT {
            return None;
        }
        Some(Self::ALL[id as usize - 1])
    }

    /// Position of this syscall in per-syscall arrays.
    pub const fn index(self) -> usize {
        self as usize - 1
    }

    /// Syscall name as in `man 2`.
    pub const fn name(self) -> &'static str {
        match self {
            MountSyscall::Mount => "mount",
            MountSyscall::Umount2 => "umount2",
            MountSyscall::MoveMount => "move_mount",
            MountSyscall::OpenTree => "open_tree",
            MountSyscall::OpenTreeAttr => "open_tree_attr",
            MountSyscall::Fsopen => "fsopen",
            MountSyscall::Fsconfig => "fsconfig",
            MountSyscall::Fsmount => "fsmount",
            MountSyscall::Fspick => "fspick",
            MountSyscall::MountSetattr => "mount_setattr",
        }
    }

    /// Name of the syscall's tracepoints under `syscalls:` (`sys_enter_<name>`), which for
    /// umount2 is `umount` because the kernel defines it as `SYSCALL_DEFINE2(umount, ...)`.
    pub const fn tracepoint_name(self) -> &'static str {
        match self {
            MountSyscall::Umount2 => "umount",
            other => other.name(),
        }
    }
}

/// How a lock was requested, from the `flags` of `lock:contention_begin`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "user", serde(rename_all = "snake_case"))]
pub enum LockMode {
    Read = 1,
    Write = 2,
}

/// Number of lock modes; per-mode arrays are indexed by [`LockMode::index`].
pub const LOCK_MODE_COUNT: usize = 2;

impl LockMode {
    pub const ALL: [LockMode; LOCK_MODE_COUNT] = [LockMode::Read, LockMode::Write];

    pub const fn from_id(id: u32) -> Option<LockMode> {
        match id {
            1 => Some(LockMode::Read),
            2 => Some(LockMode::Write),
            _ => None,
        }
    }

    pub const fn index(self) -> usize {
        self as usize - 1
    }

    pub const fn name(self) -> &'static str {
        match self {
            LockMode::Read => "read",
            LockMode::Write => "write",
        }
    }
}

/// `lock:contention_begin` flag bits (`LCB_F_*` in include/trace/events/lock.h, Linux 5.19+).
pub const LCB_F_SPIN: u32 = 1 << 0;
pub const LCB_F_READ: u32 = 1 << 1;
pub const LCB_F_WRITE: u32 = 1 << 2;

/// Low bits of `rw_semaphore.owner` that are flags, not part of the task pointer
/// (`RWSEM_OWNER_FLAGS_MASK` in kernel/locking/rwsem.c).
pub const RWSEM_OWNER_FLAGS_MASK: u64 = 0x7;
/// Set in `rw_semaphore.owner` while readers own the lock.
pub const RWSEM_READER_OWNED: u64 = 1 << 0;

/// Kind of a per-event record in the ring buffer.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// One completed mount-family syscall.
    Syscall = 1,
    /// One contended acquisition of `namespace_sem`: the wait and who held the lock.
    LockWait = 2,
    /// One hold of `namespace_sem`, measured exactly (fentry or kprobe tier only).
    LockHold = 3,
}

/// Who held `namespace_sem` when a task started to wait for it.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "user", serde(rename_all = "snake_case"))]
pub enum HolderKind {
    /// Not a contention record, or the owner field was empty (the writer was releasing it).
    Unknown = 1,
    /// A writer task, named in the holder fields.
    Writer = 2,
    /// One or more readers; the kernel does not track which.
    Readers = 3,
}

impl HolderKind {
    pub const fn from_id(id: u32) -> Option<HolderKind> {
        match id {
            1 => Some(HolderKind::Unknown),
            2 => Some(HolderKind::Writer),
            3 => Some(HolderKind::Readers),
            _ => None,
        }
    }
}

/// One per-event record, written by the kernel programs into the `EVENTS` ring buffer.
///
/// Field use by kind: `Syscall` fills the task fields, `syscall`, `ret`, `start_ns` and
/// `duration_ns`. `LockWait` fills the task fields, `syscall` (the syscall the waiter is in, 0
/// when none), `mode`, `start_ns`, `duration_ns` (the wait) and the holder fields. `LockHold`
/// fills the task fields, `syscall`, `mode` and `duration_ns` (the hold).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Event {
    /// An [`EventKind`].
    pub kind: u32,
    /// A [`MountSyscall`] id, or 0 when the task was not in a traced syscall.
    pub syscall: u32,
    /// Thread group id (the user-visible process id).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// cgroup v2 id of the task (`bpf_get_current_cgroup_id`).
    pub cgroup_id: u64,
    /// Inode number of the task's mount namespace (as in `/proc/PID/ns/mnt`).
    pub mntns_id: u64,
    /// `bpf_ktime_get_ns` at the start of the call or wait.
    pub start_ns: u64,
    pub duration_ns: u64,
    /// Syscall return value; a negative errno on failure.
    pub ret: i64,
    /// A [`LockMode`] id for lock records, 0 otherwise.
    pub mode: u32,
    /// A [`HolderKind`] id for lock-wait records, 0 otherwise.
    pub holder_kind: u32,
    pub holder_pid: u32,
    pub holder_tid: u32,
    /// The [`MountSyscall`] the holder was in, or 0.
    pub holder_syscall: u32,
    /// Explicit padding so that `holder_cgroup_id` is 8-byte aligned on both sides.
    pub _pad0: u32,
    /// cgroup id of the holder, known only when the holder was in a traced syscall.
    pub holder_cgroup_id: u64,
    pub comm: [u8; TASK_COMM_LEN],
    pub holder_comm: [u8; TASK_COMM_LEN],
}

const _: () = assert!(core::mem::size_of::<Event>() == 120);

/// Slots of the in-flight array, a power of two. Two threads collide only when both are inside
/// a mount syscall at once and their ids agree in the low 14 bits. The second then takes a
/// slower hash map.
pub const INFLIGHT_SLOTS: u32 = 1 << 14;

/// A thread's traced syscall in progress, kept between enter and exit.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Inflight {
    pub start_ns: u64,
    pub cgroup_id: u64,
    pub mntns_id: u64,
    /// A [`MountSyscall`] id.
    pub syscall: u32,
    pub _pad0: u32,
}

const _: () = assert!(core::mem::size_of::<Inflight>() == 32);

/// A thread's contention on `namespace_sem` in progress, kept between `contention_begin` and
/// `contention_end`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PendingWait {
    pub start_ns: u64,
    /// A [`LockMode`] id.
    pub mode: u32,
    /// A [`HolderKind`] id.
    pub holder_kind: u32,
    pub holder_pid: u32,
    pub holder_tid: u32,
    pub holder_syscall: u32,
    pub _pad0: u32,
    pub holder_cgroup_id: u64,
    pub holder_comm: [u8; TASK_COMM_LEN],
}

const _: () = assert!(core::mem::size_of::<PendingWait>() == 56);

/// Per-CPU counters of one traced syscall (`SYSCALL_STATS`, indexed by syscall).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallStats {
    pub calls: u64,
    pub errors: u64,
    pub total_ns: u64,
    pub max_ns: u64,
}

const _: () = assert!(core::mem::size_of::<SyscallStats>() == 32);

/// Per-CPU counters of one lock mode (`LOCK_WAIT_STATS` and `LOCK_HOLD_STATS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LockStats {
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    /// Acquisitions made while the task was in a traced syscall.
    pub in_syscall: u64,
}

const _: () = assert!(core::mem::size_of::<LockStats>() == 32);

/// Slots of the `SAMPLER` per-CPU array filled by the cpu-clock sampler, which estimates
/// hold time where neither fentry nor kprobes can attach.
pub mod sampler_slot {
    /// Samples taken.
    pub const TOTAL: u32 = 0;
    /// Samples that found `namespace_sem` held for write.
    pub const WRITE_HELD: u32 = 1;
    /// Samples that found `namespace_sem` held for write by the interrupted task.
    pub const HELD_BY_CURRENT: u32 = 2;
    /// First of [`crate::SYSCALL_COUNT`] slots counting `HELD_BY_CURRENT` samples by the
    /// syscall the holder was in.
    pub const BY_SYSCALL: u32 = 3;
    pub const COUNT: u32 = BY_SYSCALL + crate::SYSCALL_COUNT as u32;
}

/// Largest errno counted on its own in `SYSCALL_ERRNOS`; larger values, which Linux does not
/// return to user space, are counted under this one. With ten syscalls the map can hold every
/// possible key, so no error goes uncounted.
pub const ERRNO_MAX: u32 = 255;

/// Key of `SYSCALL_ERRNOS`: the syscall index in the high half, the errno in the low half.
pub const fn errno_key(syscall_index: u32, errno: u32) -> u32 {
    let errno = if errno > ERRNO_MAX { ERRNO_MAX } else { errno };
    (syscall_index << 16) | errno
}

/// Slots of the `SWITCHES` array, which the agent writes while the programs run.
pub mod switch_slot {
    /// 1 while a consumer wants a ring-buffer record of every traced syscall.
    pub const SYSCALL_RECORDS: u32 = 0;
    pub const COUNT: u32 = 1;
}

/// Slots of the `DROPS` per-CPU array.
pub mod drop_slot {
    /// Ring buffer full: a per-event record was lost (the aggregates still counted it).
    pub const RINGBUF: u32 = 0;
    /// `INFLIGHT` full: a syscall's enter could not be stored, so it is missing everywhere.
    pub const INFLIGHT: u32 = 1;
    /// `PENDING_WAITS` full: a contention could not be timed.
    pub const PENDING: u32 = 2;
    /// A syscall exit or contention end without its start (attached mid-call).
    pub const UNPAIRED: u32 = 3;
    /// A kernel stack not stored because its hash bucket in `STACKS` was taken by another.
    pub const STACK: u32 = 4;
    /// `WAIT_SITES` full: a wait inside a mount syscall was not attributed to its site.
    pub const SITE: u32 = 5;
    pub const COUNT: u32 = 6;
}

/// What kept a thread inside a mount syscall from running its own code.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "user", serde(rename_all = "snake_case"))]
pub enum WaitKind {
    /// A contended lock: `lock:contention_begin` to `contention_end`, any lock type.
    Lock = 1,
    /// Off CPU while blocked (switched out in a sleeping state), outside a lock wait.
    Blocked = 2,
    /// Off CPU while still runnable: preempted, waiting on a run queue.
    Preempted = 3,
}

impl WaitKind {
    pub const fn from_id(id: u32) -> Option<WaitKind> {
        match id {
            1 => Some(WaitKind::Lock),
            2 => Some(WaitKind::Blocked),
            3 => Some(WaitKind::Preempted),
            _ => None,
        }
    }
}

/// Key of `WAIT_SITES`: one kind of wait at one kernel stack inside one syscall.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WaitSiteKey {
    /// Lock address for lock waits, 0 otherwise.
    pub lock_addr: u64,
    /// Id in the `STACKS` map, or `u32::MAX` when the stack could not be stored.
    pub stack_id: u32,
    /// A [`MountSyscall`] id.
    pub syscall: u32,
    /// A [`WaitKind`] id.
    pub kind: u32,
    /// `lock:contention_begin` flags for lock waits, 0 otherwise.
    pub flags: u32,
}

const _: () = assert!(core::mem::size_of::<WaitSiteKey>() == 24);

/// Value of `WAIT_SITES`, updated with atomic adds because the map is shared by all CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WaitSiteStats {
    pub count: u64,
    pub total_ns: u64,
    pub hist: [u64; HIST_BUCKETS],
}

const _: () = assert!(core::mem::size_of::<WaitSiteStats>() == 16 + 8 * HIST_BUCKETS);

/// Per-syscall split of latency (`SYSCALL_BREAKDOWN`, indexed by syscall): the rest of the
/// syscall's total latency was spent on CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Breakdown {
    /// Time in contended locks of any type.
    pub lock_wait_ns: u64,
    /// Time off CPU while blocked, outside lock waits.
    pub blocked_ns: u64,
    /// Time off CPU while runnable.
    pub preempted_ns: u64,
    pub _reserved: u64,
}

const _: () = assert!(core::mem::size_of::<Breakdown>() == 32);

/// A thread's wait in progress inside a mount syscall: a lock contention or an off-CPU span.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PendingSiteWait {
    pub start_ns: u64,
    pub lock_addr: u64,
    pub stack_id: u32,
    pub syscall: u32,
    /// A [`WaitKind`] id.
    pub kind: u32,
    pub flags: u32,
}

const _: () = assert!(core::mem::size_of::<PendingSiteWait>() == 32);

/// Key of the calibration map: one lock address contended by one thread with given flags.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CalibKey {
    pub lock_addr: u64,
    pub tid: u32,
    pub flags: u32,
}

const _: () = assert!(core::mem::size_of::<CalibKey>() == 16);

/// Kernel structure offsets, read from the running kernel's BTF by the agent and handed to the
/// programs as globals, since aya's Rust programs have no CO-RE relocations.
pub mod offsets {
    /// Globals the programs declare, by name.
    pub const RWSEM_OWNER: &str = "OFF_RWSEM_OWNER";
    pub const TASK_PID: &str = "OFF_TASK_PID";
    pub const TASK_TGID: &str = "OFF_TASK_TGID";
    pub const TASK_COMM: &str = "OFF_TASK_COMM";
    pub const TASK_NSPROXY: &str = "OFF_TASK_NSPROXY";
    pub const NSPROXY_MNT_NS: &str = "OFF_NSPROXY_MNT_NS";
    pub const MNT_NS_INUM: &str = "OFF_MNT_NS_INUM";
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all these types are `#[repr(C)]`, `Copy`, made of integers and byte arrays with
    // explicit padding, so every bit pattern is valid.
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::Inflight {}
    unsafe impl aya::Pod for super::PendingWait {}
    unsafe impl aya::Pod for super::SyscallStats {}
    unsafe impl aya::Pod for super::LockStats {}
    unsafe impl aya::Pod for super::CalibKey {}
    unsafe impl aya::Pod for super::WaitSiteKey {}
    unsafe impl aya::Pod for super::WaitSiteStats {}
    unsafe impl aya::Pod for super::Breakdown {}
    unsafe impl aya::Pod for super::PendingSiteWait {}
}
