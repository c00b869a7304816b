//! `lock:contention_begin` and `lock:contention_end` filtered to `namespace_sem`: the wait of
//! every contended acquisition, and who held the lock when the wait began.
//!
//! The kernel traces only the sleeping slow path (Linux 5.19+); an acquisition that succeeds
//! while optimistically spinning on the owner emits no contention event.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use mountscope_common::{
    EventKind, HolderKind, LCB_F_READ, LCB_F_WRITE, LockMode, PendingWait, RWSEM_OWNER_FLAGS_MASK,
    RWSEM_READER_OWNED, drop_slot,
};

use crate::{
    events, globals, hist, inflight,
    maps::{DROPS, PENDING_WAITS, WAIT_BY_SYSCALL, WAIT_HIST, WAIT_STATS},
    task, waits,
};

/// Offsets in the `lock:contention_*` records: `lock_addr` after the 8-byte common header,
/// then `flags` (begin) or `ret` (end).
const LOCK_ADDR_OFFSET: usize = 8;
const FLAGS_OFFSET: usize = 16;

/// Returns the mode of a contention from its flags, or `None` for anything but an rwsem.
#[inline(always)]
fn mode_of(flags: u32) -> Option<LockMode> {
    if flags & LCB_F_WRITE != 0 {
        Some(LockMode::Write)
    } else if flags & LCB_F_READ != 0 {
        Some(LockMode::Read)
    } else {
        None
    }
}

#[tracepoint(category = "lock", name = "contention_begin")]
pub fn contention_begin(ctx: TracePointContext) -> u32 {
    let sem = globals::ns_sem_addr();
    // SAFETY: the record has a pointer at this offset.
    let lock: u64 = unsafe { ctx.read_at(LOCK_ADDR_OFFSET) }.unwrap_or(0);
    // SAFETY: the record has a u32 at this offset.
    let flags: u32 = unsafe { ctx.read_at(FLAGS_OFFSET) }.unwrap_or(0);
    let (tgid, tid) = task::current_ids();
    waits::lock_wait_begins(&ctx, tid, lock, flags);
    if sem == 0 || lock != sem {
        return 0;
    }
    let Some(mode) = mode_of(flags) else {
        return 0;
    };
    if !task::passes_cheap_filters(tgid, task::current_cgroup()) {
        return 0;
    }
    if globals::filter_mntns() != 0 && !task::passes_mntns_filter(task::current_mntns()) {
        return 0;
    }

    let mut pending = PendingWait {
        // SAFETY: the helper has no preconditions.
        start_ns: unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() },
        mode: mode as u32,
        holder_kind: HolderKind::Unknown as u32,
        holder_pid: 0,
        holder_tid: 0,
        holder_syscall: 0,
        _pad0: 0,
        holder_cgroup_id: 0,
        holder_comm: [0; 16],
    };

    let owner = task::rwsem_owner(sem);
    if owner & RWSEM_READER_OWNED != 0 {
        pending.holder_kind = HolderKind::Readers as u32;
    } else {
        let holder = owner & !RWSEM_OWNER_FLAGS_MASK;
        if holder != 0
            && let Some((holder_tid, holder_tgid, comm)) = task::task_ids(holder)
        {
            pending.holder_kind = HolderKind::Writer as u32;
            pending.holder_pid = holder_tgid;
            pending.holder_tid = holder_tid;
            pending.holder_comm = comm;
            if let Some(inflight) = inflight::find(holder_tid) {
                pending.holder_syscall = inflight.syscall;
                pending.holder_cgroup_id = inflight.cgroup_id;
            }
        }
    }

    if PENDING_WAITS.insert(tid, pending, 0).is_err() {
        hist::count(&DROPS, drop_slot::PENDING);
    }
    0
}

#[tracepoint(category = "lock", name = "contention_end")]
pub fn contention_end(ctx: TracePointContext) -> u32 {
    let sem = globals::ns_sem_addr();
    // SAFETY: the record has a pointer at this offset.
    let lock: u64 = unsafe { ctx.read_at(LOCK_ADDR_OFFSET) }.unwrap_or(0);
    let (tgid, tid) = task::current_ids();
    waits::lock_wait_ends(tid);
    if sem == 0 || lock != sem {
        return 0;
    }
    // SAFETY: the helper has no preconditions.
    let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    // SAFETY: the pointer comes from the map and is read before the entry is removed.
    let Some(pending) = PENDING_WAITS.get_ptr(tid).map(|p| unsafe { *p }) else {
        return 0;
    };
    let _ = PENDING_WAITS.remove(tid);
    let Some(mode) = LockMode::from_id(pending.mode) else {
        return 0;
    };

    let wait_ns = now.saturating_sub(pending.start_ns);
    let current = inflight::find(tid);
    let syscall = current.map(|i| i.syscall).unwrap_or(0);

    hist::add_lock(&WAIT_STATS, mode.index() as u32, wait_ns, syscall != 0);
    hist::record(&WAIT_HIST, mode.index() as u32, wait_ns);
    if syscall != 0 {
        hist::add_lock(&WAIT_BY_SYSCALL, syscall - 1, wait_ns, true);
    }

    if let Some(mut entry) = events::reserve() {
        let event = entry.as_mut_ptr();
        // SAFETY: the entry is reserved memory of exactly one Event, written before submit.
        unsafe {
            core::ptr::write_bytes(event, 0, 1);
            (*event).kind = EventKind::LockWait as u32;
            (*event).syscall = syscall;
            (*event).pid = tgid;
            (*event).tid = tid;
            (*event).cgroup_id = task::current_cgroup();
            (*event).mntns_id = current.map(|i| i.mntns_id).unwrap_or(0);
            (*event).start_ns = pending.start_ns;
            (*event).duration_ns = wait_ns;
            (*event).mode = pending.mode;
            (*event).holder_kind = pending.holder_kind;
            (*event).holder_pid = pending.holder_pid;
            (*event).holder_tid = pending.holder_tid;
            (*event).holder_syscall = pending.holder_syscall;
            (*event).holder_cgroup_id = pending.holder_cgroup_id;
            (*event).comm = aya_ebpf::helpers::bpf_get_current_comm().unwrap_or([0; 16]);
            (*event).holder_comm = pending.holder_comm;
        }
        events::submit(entry);
    }
    0
}
