//! Read-only globals the agent sets before loading: the lock address, kernel structure
//! offsets from BTF, and filters. Each is read with `read_volatile` so the compiler cannot
//! fold the zero initialiser into the code.

use core::ptr::read_volatile;

use mountscope_common::INFLIGHT_SLOTS;

/// Address of `namespace_sem`; 0 disables every lock program.
#[unsafe(no_mangle)]
static NS_SEM_ADDR: u64 = 0;

#[unsafe(no_mangle)]
static OFF_RWSEM_OWNER: u64 = 0;
#[unsafe(no_mangle)]
static OFF_TASK_PID: u64 = 0;
#[unsafe(no_mangle)]
static OFF_TASK_TGID: u64 = 0;
#[unsafe(no_mangle)]
static OFF_TASK_COMM: u64 = 0;
#[unsafe(no_mangle)]
static OFF_TASK_NSPROXY: u64 = 0;
#[unsafe(no_mangle)]
static OFF_NSPROXY_MNT_NS: u64 = 0;
#[unsafe(no_mangle)]
static OFF_MNT_NS_INUM: u64 = 0;

/// Trace only this process (thread group id); 0 traces all.
#[unsafe(no_mangle)]
static FILTER_TGID: u32 = 0;
/// Trace only tasks in this cgroup v2 id; 0 traces all.
#[unsafe(no_mangle)]
static FILTER_CGROUP: u64 = 0;
/// Trace only tasks in this mount namespace (inode number); 0 traces all.
#[unsafe(no_mangle)]
static FILTER_MNTNS: u64 = 0;

/// 1 when wait sites are recorded: kernel stacks of lock waits and off-CPU spans inside
/// mount syscalls. Off by default because a stack walk costs more than the rest of a probe.
#[unsafe(no_mangle)]
static WAIT_SITES_ON: u8 = 0;

/// Mask applied to a thread id to pick its in-flight slot: the slot count minus one. The
/// agent keeps the whole table; tests shrink it to make threads share slots.
#[unsafe(no_mangle)]
static INFLIGHT_SLOT_MASK: u32 = INFLIGHT_SLOTS - 1;

/// Process whose lock contentions the calibration program records.
#[unsafe(no_mangle)]
static CALIB_TGID: u32 = 0;

#[inline(always)]
fn get<T: Copy>(value: &T) -> T {
    // SAFETY: the reference points at a static that lives for the whole program.
    unsafe { read_volatile(value) }
}

#[inline(always)]
pub fn ns_sem_addr() -> u64 {
    get(&NS_SEM_ADDR)
}

#[inline(always)]
pub fn off_rwsem_owner() -> u64 {
    get(&OFF_RWSEM_OWNER)
}

#[inline(always)]
pub fn off_task_pid() -> u64 {
    get(&OFF_TASK_PID)
}

#[inline(always)]
pub fn off_task_tgid() -> u64 {
    get(&OFF_TASK_TGID)
}

#[inline(always)]
pub fn off_task_comm() -> u64 {
    get(&OFF_TASK_COMM)
}

#[inline(always)]
pub fn off_task_nsproxy() -> u64 {
    get(&OFF_TASK_NSPROXY)
}

#[inline(always)]
pub fn off_nsproxy_mnt_ns() -> u64 {
    get(&OFF_NSPROXY_MNT_NS)
}

#[inline(always)]
pub fn off_mnt_ns_inum() -> u64 {
    get(&OFF_MNT_NS_INUM)
}

#[inline(always)]
pub fn filter_tgid() -> u32 {
    get(&FILTER_TGID)
}

#[inline(always)]
pub fn filter_cgroup() -> u64 {
    get(&FILTER_CGROUP)
}

#[inline(always)]
pub fn filter_mntns() -> u64 {
    get(&FILTER_MNTNS)
}

#[inline(always)]
pub fn wait_sites_on() -> bool {
    get(&WAIT_SITES_ON) != 0
}

#[inline(always)]
pub fn inflight_slot_mask() -> u32 {
    get(&INFLIGHT_SLOT_MASK)
}

#[inline(always)]
pub fn calib_tgid() -> u32 {
    get(&CALIB_TGID)
}
