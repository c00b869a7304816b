//! Wait sites of mount syscalls: every contended lock of any type, and every span off CPU,
//! while a thread is inside a traced mount syscall, grouped by kernel stack.
//!
//! Off unless the agent sets `WAIT_SITES_ON`: taking a kernel stack at every wait roughly
//! doubles what the probes cost a mount.
//!
//! Only threads inside a traced syscall are followed, and that check comes before any stack
//! is taken, so tasks outside mount syscalls cost one array lookup per event.

use aya_ebpf::{
    macros::tracepoint,
    programs::{TracePointContext, tracing::StackIdContext},
};
use mountscope_common::{HIST_BUCKETS, PendingSiteWait, WaitKind, WaitSiteKey, drop_slot};

use crate::{
    globals, hist, inflight,
    maps::{
        DROPS, EMPTY_SITE, SITE_LOCK_WAITS, SITE_OFF_CPU, STACKS, SYSCALL_BREAKDOWN, WAIT_SITES,
    },
};

/// Stack id stored when the stack could not be recorded.
const NO_STACK: u32 = u32::MAX;

/// Offsets in the `sched:sched_switch` record.
const PREV_PID_OFFSET: usize = 24;
const PREV_STATE_OFFSET: usize = 32;
const NEXT_PID_OFFSET: usize = 56;

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: the helper has no preconditions.
    unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() }
}

/// Records the current task's kernel stack and returns its id, counting a failure as a
/// stack drop.
#[inline(always)]
fn stack_id(ctx: &TracePointContext) -> u32 {
    match ctx.get_stackid(&STACKS, 0) {
        Ok(id) => id as u32,
        Err(_) => {
            hist::count(&DROPS, drop_slot::STACK);
            NO_STACK
        }
    }
}

/// Adds `delta` to a counter shared between CPUs. The BPF target has no compare-and-swap,
/// so core's atomic types lack `fetch_add`; the intrinsic compiles to BPF's atomic add.
#[inline(always)]
pub fn add(value: *mut u64, delta: u64) {
    // SAFETY: `value` points into a live map value, and the atomic add makes concurrent
    // updates from several CPUs safe.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            value, delta,
        );
    }
}

/// Adds one finished wait to its site and to its syscall's breakdown.
#[inline(always)]
fn finish(wait: &PendingSiteWait, now: u64) {
    let duration_ns = now.saturating_sub(wait.start_ns);
    let key = WaitSiteKey {
        lock_addr: wait.lock_addr,
        stack_id: wait.stack_id,
        syscall: wait.syscall,
        kind: wait.kind,
        flags: wait.flags,
    };
    let stats = match WAIT_SITES.get_ptr_mut(key) {
        Some(stats) => stats,
        None => {
            // The zeroed value comes from a map because it is too large for the 512-byte
            // BPF stack. BPF_NOEXIST: if another CPU inserted the key meanwhile, use its entry.
            let Some(empty) = EMPTY_SITE.get(0) else {
                return;
            };
            let _ = WAIT_SITES.insert(key, empty, 1);
            match WAIT_SITES.get_ptr_mut(key) {
                Some(stats) => stats,
                None => {
                    hist::count(&DROPS, drop_slot::SITE);
                    return;
                }
            }
        }
    };
    // SAFETY: the pointer comes from the map; every field is updated atomically.
    unsafe {
        add(&raw mut (*stats).count, 1);
        add(&raw mut (*stats).total_ns, duration_ns);
        let bucket = hist::bucket(duration_ns) as usize;
        if bucket < HIST_BUCKETS {
            add(&raw mut (*stats).hist[bucket], 1);
        }
    }

    if wait.syscall >= 1
        && wait.syscall as usize <= mountscope_common::SYSCALL_COUNT
        && let Some(b) = SYSCALL_BREAKDOWN.get_ptr_mut(wait.syscall - 1)
    {
        // SAFETY: per-CPU slot, written only by this CPU.
        let b = unsafe { &mut *b };
        match WaitKind::from_id(wait.kind) {
            Some(WaitKind::Lock) => b.lock_wait_ns += duration_ns,
            Some(WaitKind::Blocked) => b.blocked_ns += duration_ns,
            Some(WaitKind::Preempted) => b.preempted_ns += duration_ns,
            None => {}
        }
    }
}

/// `lock:contention_begin` for a thread inside a mount syscall, any lock.
#[inline(always)]
pub fn lock_wait_begins(ctx: &TracePointContext, tid: u32, lock_addr: u64, flags: u32) {
    if !globals::wait_sites_on() {
        return;
    }
    let Some(inflight) = inflight::find(tid) else {
        return;
    };
    let syscall = inflight.syscall;
    let wait = PendingSiteWait {
        start_ns: now_ns(),
        lock_addr,
        stack_id: stack_id(ctx),
        syscall,
        kind: WaitKind::Lock as u32,
        flags,
    };
    if SITE_LOCK_WAITS.insert(tid, wait, 0).is_err() {
        hist::count(&DROPS, drop_slot::PENDING);
    }
}

/// `lock:contention_end` for a thread with a lock wait in progress.
#[inline(always)]
pub fn lock_wait_ends(tid: u32) {
    if !globals::wait_sites_on() {
        return;
    }
    // SAFETY: the pointer comes from the map and is read before the entry is removed.
    let Some(wait) = SITE_LOCK_WAITS.get_ptr(tid).map(|p| unsafe { *p }) else {
        return;
    };
    let _ = SITE_LOCK_WAITS.remove(tid);
    finish(&wait, now_ns());
}

#[tracepoint(category = "sched", name = "sched_switch")]
pub fn sched_switch(ctx: TracePointContext) -> u32 {
    // SAFETY: the record has these fields at these offsets (see the tracepoint's format).
    let (prev_pid, prev_state, next_pid) = unsafe {
        (
            ctx.read_at::<i32>(PREV_PID_OFFSET).unwrap_or(0) as u32,
            ctx.read_at::<i64>(PREV_STATE_OFFSET).unwrap_or(0),
            ctx.read_at::<i32>(NEXT_PID_OFFSET).unwrap_or(0) as u32,
        )
    };
    let now = now_ns();

    // The task switching out is the current task, so its stack is the stack it blocked in.
    // A thread in a lock wait is already timed by the lock tracepoints, so its off-CPU span
    // is not counted twice.
    // The in-flight entry is checked first because most switched-out tasks are in no mount
    // syscall, so the common case costs one array lookup.
    if prev_pid != 0
        && let Some(inflight) = inflight::find(prev_pid)
        && SITE_LOCK_WAITS.get_ptr(prev_pid).is_none()
    {
        let syscall = inflight.syscall;
        let kind = if prev_state == 0 {
            WaitKind::Preempted
        } else {
            WaitKind::Blocked
        };
        let wait = PendingSiteWait {
            start_ns: now,
            lock_addr: 0,
            stack_id: stack_id(&ctx),
            syscall,
            kind: kind as u32,
            flags: 0,
        };
        if SITE_OFF_CPU.insert(prev_pid, wait, 0).is_err() {
            hist::count(&DROPS, drop_slot::PENDING);
        }
    }

    if next_pid != 0 {
        // SAFETY: the pointer comes from the map and is read before the entry is removed.
        if let Some(wait) = SITE_OFF_CPU.get_ptr(next_pid).map(|p| unsafe { *p }) {
            let _ = SITE_OFF_CPU.remove(next_pid);
            finish(&wait, now);
        }
    }
    0
}
