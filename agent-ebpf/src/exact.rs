//! Exact hold time of `namespace_sem`, per acquisition, where the kernel allows fentry/fexit
//! (or, failing that, kprobes): from the return of `down_write`/`down_read` to `up_write`,
//! `downgrade_write` or `up_read` on the same thread.
//!
//! Since Linux 6.15 `namespace_unlock()` may downgrade the write lock and release it with
//! `up_read()`; that is counted as a write hold ending at `downgrade_write` followed by a
//! read hold ending at `up_read`. These functions run for every rwsem in the system, so each
//! program returns at once unless the semaphore is `namespace_sem`.

use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use mountscope_common::{EventKind, LockMode};

use crate::{
    events, globals, hist, inflight,
    maps::{EXACT_STATE, HOLD_BY_SYSCALL, HOLD_HIST, HOLD_STATS},
    task,
};

/// A thread's acquisition of `namespace_sem` in progress.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExactState {
    /// Start of the hold; 0 while the kprobe tier waits for `down_*` to return.
    pub start_ns: u64,
    /// A `LockMode` id.
    pub mode: u32,
    pub _pad0: u32,
}

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: the helper has no preconditions.
    unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() }
}

#[inline(always)]
fn is_ns_sem(sem: u64) -> bool {
    let addr = globals::ns_sem_addr();
    addr != 0 && sem == addr
}

/// Starts timing a hold of the lock in `mode` by thread `tid`.
#[inline(always)]
fn hold_begins(tid: u32, mode: LockMode) {
    let state = ExactState {
        start_ns: now_ns(),
        mode: mode as u32,
        _pad0: 0,
    };
    let _ = EXACT_STATE.insert(tid, state, 0);
}

/// Records the hold of the lock in `mode` that the current thread just released.
#[inline(always)]
fn hold_ends(mode: LockMode) {
    let now = now_ns();
    let (tgid, tid) = task::current_ids();
    // SAFETY: the pointer comes from the map and is read before the entry is removed.
    let Some(state) = EXACT_STATE.get_ptr(tid).map(|p| unsafe { *p }) else {
        return;
    };
    let _ = EXACT_STATE.remove(tid);
    if state.start_ns == 0 || state.mode != mode as u32 {
        return;
    }
    if !task::passes_cheap_filters(tgid, task::current_cgroup()) {
        return;
    }
    if globals::filter_mntns() != 0 && !task::passes_mntns_filter(task::current_mntns()) {
        return;
    }
    let hold_ns = now.saturating_sub(state.start_ns);
    let current = inflight::find(tid);
    let syscall = current.map(|i| i.syscall).unwrap_or(0);

    hist::add_lock(&HOLD_STATS, mode.index() as u32, hold_ns, syscall != 0);
    hist::record(&HOLD_HIST, mode.index() as u32, hold_ns);
    if syscall != 0 {
        hist::add_lock(&HOLD_BY_SYSCALL, syscall - 1, hold_ns, true);
    }

    if let Some(mut entry) = events::reserve() {
        let event = entry.as_mut_ptr();
        // SAFETY: the entry is reserved memory of exactly one Event, written before submit.
        unsafe {
            core::ptr::write_bytes(event, 0, 1);
            (*event).kind = EventKind::LockHold as u32;
            (*event).syscall = syscall;
            (*event).pid = tgid;
            (*event).tid = tid;
            (*event).cgroup_id = task::current_cgroup();
            (*event).mntns_id = current.map(|i| i.mntns_id).unwrap_or(0);
            (*event).start_ns = state.start_ns;
            (*event).duration_ns = hold_ns;
            (*event).mode = mode as u32;
            (*event).comm = aya_ebpf::helpers::bpf_get_current_comm().unwrap_or([0; 16]);
        }
        events::submit(entry);
    }
}

/// `downgrade_write`: the write hold ends and a read hold begins on the same thread.
#[inline(always)]
fn downgraded() {
    hold_ends(LockMode::Write);
    let (_, tid) = task::current_ids();
    hold_begins(tid, LockMode::Read);
}

// fentry/fexit tier (Linux 5.5+ with BTF).

#[fexit(function = "down_write")]
pub fn fexit_down_write(ctx: FExitContext) -> u32 {
    let sem: u64 = ctx.arg(0);
    if is_ns_sem(sem) {
        hold_begins(task::current_ids().1, LockMode::Write);
    }
    0
}

#[fexit(function = "down_read")]
pub fn fexit_down_read(ctx: FExitContext) -> u32 {
    let sem: u64 = ctx.arg(0);
    if is_ns_sem(sem) {
        hold_begins(task::current_ids().1, LockMode::Read);
    }
    0
}

#[fentry(function = "up_write")]
pub fn fentry_up_write(ctx: FEntryContext) -> u32 {
    let sem: u64 = ctx.arg(0);
    if is_ns_sem(sem) {
        hold_ends(LockMode::Write);
    }
    0
}

#[fentry(function = "up_read")]
pub fn fentry_up_read(ctx: FEntryContext) -> u32 {
    let sem: u64 = ctx.arg(0);
    if is_ns_sem(sem) {
        hold_ends(LockMode::Read);
    }
    0
}

#[fentry(function = "downgrade_write")]
pub fn fentry_downgrade_write(ctx: FEntryContext) -> u32 {
    let sem: u64 = ctx.arg(0);
    if is_ns_sem(sem) {
        downgraded();
    }
    0
}

// kprobe tier: a kretprobe has no arguments, so the entry probe marks the thread and the
// return probe starts the hold.

#[inline(always)]
fn acquiring(sem: u64, mode: LockMode) {
    if !is_ns_sem(sem) {
        return;
    }
    let state = ExactState {
        start_ns: 0,
        mode: mode as u32,
        _pad0: 0,
    };
    let _ = EXACT_STATE.insert(task::current_ids().1, state, 0);
}

#[inline(always)]
fn acquired() {
    let (_, tid) = task::current_ids();
    let Some(state) = EXACT_STATE.get_ptr_mut(tid) else {
        return;
    };
    // SAFETY: the pointer comes from the map and only this thread uses its entry.
    unsafe {
        if (*state).start_ns == 0 {
            (*state).start_ns = now_ns();
        }
    }
}

#[kprobe(function = "down_write")]
pub fn kprobe_down_write(ctx: ProbeContext) -> u32 {
    acquiring(ctx.arg(0).unwrap_or(0), LockMode::Write);
    0
}

#[kretprobe(function = "down_write")]
pub fn kretprobe_down_write(_ctx: RetProbeContext) -> u32 {
    acquired();
    0
}

#[kprobe(function = "down_read")]
pub fn kprobe_down_read(ctx: ProbeContext) -> u32 {
    acquiring(ctx.arg(0).unwrap_or(0), LockMode::Read);
    0
}

#[kretprobe(function = "down_read")]
pub fn kretprobe_down_read(_ctx: RetProbeContext) -> u32 {
    acquired();
    0
}

#[kprobe(function = "up_write")]
pub fn kprobe_up_write(ctx: ProbeContext) -> u32 {
    if is_ns_sem(ctx.arg(0).unwrap_or(0)) {
        hold_ends(LockMode::Write);
    }
    0
}

#[kprobe(function = "up_read")]
pub fn kprobe_up_read(ctx: ProbeContext) -> u32 {
    if is_ns_sem(ctx.arg(0).unwrap_or(0)) {
        hold_ends(LockMode::Read);
    }
    0
}

#[kprobe(function = "downgrade_write")]
pub fn kprobe_downgrade_write(ctx: ProbeContext) -> u32 {
    if is_ns_sem(ctx.arg(0).unwrap_or(0)) {
        downgraded();
    }
    0
}
