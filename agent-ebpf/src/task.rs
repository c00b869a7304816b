//! Reads of the current task and of other tasks through kernel structure offsets that the
//! agent found in BTF.

use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_probe_read_kernel,
    generated::bpf_get_current_task,
};

use crate::globals;

/// Returns the current thread's (tgid, tid).
#[inline(always)]
pub fn current_ids() -> (u32, u32) {
    let id = bpf_get_current_pid_tgid();
    ((id >> 32) as u32, id as u32)
}

/// Returns the current task's `task_struct` address.
#[inline(always)]
pub fn current_task() -> u64 {
    // SAFETY: the helper has no preconditions.
    unsafe { bpf_get_current_task() }
}

#[inline(always)]
pub fn current_cgroup() -> u64 {
    // SAFETY: the helper has no preconditions.
    unsafe { bpf_get_current_cgroup_id() }
}

/// Inode number of the current task's mount namespace, or 0 when the offsets are unknown.
#[inline(always)]
pub fn current_mntns() -> u64 {
    let off_nsproxy = globals::off_task_nsproxy();
    let off_mnt_ns = globals::off_nsproxy_mnt_ns();
    let off_inum = globals::off_mnt_ns_inum();
    if off_nsproxy == 0 || off_mnt_ns == 0 || off_inum == 0 {
        return 0;
    }
    let task = current_task();
    // SAFETY: bpf_probe_read_kernel checks each address and fails instead of faulting.
    unsafe {
        let Ok(nsproxy) = bpf_probe_read_kernel((task + off_nsproxy) as *const u64) else {
            return 0;
        };
        if nsproxy == 0 {
            return 0;
        }
        let Ok(mnt_ns) = bpf_probe_read_kernel((nsproxy + off_mnt_ns) as *const u64) else {
            return 0;
        };
        if mnt_ns == 0 {
            return 0;
        }
        bpf_probe_read_kernel((mnt_ns + off_inum) as *const u32).unwrap_or(0) as u64
    }
}

/// Whether the current task passes the pid and cgroup filters. The mount namespace filter is
/// applied separately because reading the namespace costs three kernel reads.
#[inline(always)]
pub fn passes_cheap_filters(tgid: u32, cgroup: u64) -> bool {
    let want_tgid = globals::filter_tgid();
    if want_tgid != 0 && want_tgid != tgid {
        return false;
    }
    let want_cgroup = globals::filter_cgroup();
    want_cgroup == 0 || want_cgroup == cgroup
}

#[inline(always)]
pub fn passes_mntns_filter(mntns: u64) -> bool {
    let want = globals::filter_mntns();
    want == 0 || want == mntns
}

/// (tid, tgid, comm) of the task at `task`, or `None` when the offsets are unknown or a read
/// fails.
#[inline(always)]
pub fn task_ids(task: u64) -> Option<(u32, u32, [u8; 16])> {
    let off_pid = globals::off_task_pid();
    let off_tgid = globals::off_task_tgid();
    let off_comm = globals::off_task_comm();
    if off_pid == 0 || off_tgid == 0 || off_comm == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks each address and fails instead of faulting.
    unsafe {
        let tid = bpf_probe_read_kernel((task + off_pid) as *const u32).ok()?;
        let tgid = bpf_probe_read_kernel((task + off_tgid) as *const u32).ok()?;
        let comm = bpf_probe_read_kernel((task + off_comm) as *const [u8; 16]).ok()?;
        Some((tid, tgid, comm))
    }
}

/// Reads `namespace_sem`'s owner word, or 0 when it cannot be read.
#[inline(always)]
pub fn rwsem_owner(sem: u64) -> u64 {
    if sem == 0 {
        return 0;
    }
    let off = globals::off_rwsem_owner();
    // SAFETY: bpf_probe_read_kernel checks the address and fails instead of faulting.
    unsafe { bpf_probe_read_kernel((sem + off) as *const u64).unwrap_or(0) }
}
