//! Enter and exit probes of the ten mount-family syscalls: fentry/fexit on the syscall
//! functions where the kernel allows them, otherwise the `syscalls:` tracepoints. The two
//! sets run the same code; the agent attaches one of them.
//!
//! Enter stores the start under the thread id (`inflight`). Exit removes it on every path,
//! then adds the call to the per-CPU counters and histogram. It also writes one record while
//! a consumer wants them.

use aya_ebpf::{
    helpers::bpf_get_current_comm,
    macros::{fentry, fexit, tracepoint},
    programs::{FEntryContext, FExitContext, TracePointContext},
};
use mountscope_common::{EventKind, Inflight, MountSyscall, drop_slot, errno_key};

use crate::{
    events, hist, inflight,
    maps::{DROPS, SYSCALL_ERRNOS, SYSCALL_HIST, SYSCALL_STATS},
    task, waits,
};

/// Offset of `ret` in every `syscalls:sys_exit_*` record (after the 8-byte common header and
/// the 4-byte `__syscall_nr`, padded to 8).
const EXIT_RET_OFFSET: usize = 16;

#[inline(always)]
fn on_enter(syscall: MountSyscall) -> u32 {
    let (tgid, tid) = task::current_ids();
    let cgroup_id = task::current_cgroup();
    if !task::passes_cheap_filters(tgid, cgroup_id) {
        return 0;
    }
    let mntns_id = task::current_mntns();
    if !task::passes_mntns_filter(mntns_id) {
        return 0;
    }
    let entry = Inflight {
        // SAFETY: the helper has no preconditions.
        start_ns: unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() },
        cgroup_id,
        mntns_id,
        syscall: syscall as u32,
        _pad0: 0,
    };
    inflight::begin(tid, entry);
    0
}

/// Counts one failure of syscall `index` with `errno`.
#[inline(always)]
fn count_errno(index: u32, errno: u32) {
    let key = errno_key(index, errno);
    if let Some(count) = SYSCALL_ERRNOS.get_ptr_mut(key) {
        waits::add(count, 1);
        return;
    }
    // BPF_NOEXIST: when another CPU inserted the key meanwhile, add to its entry instead.
    if SYSCALL_ERRNOS.insert(key, 1, 1).is_err()
        && let Some(count) = SYSCALL_ERRNOS.get_ptr_mut(key)
    {
        waits::add(count, 1);
    }
}

#[inline(always)]
fn on_exit(ret: i64, syscall: MountSyscall) -> u32 {
    // SAFETY: the helper has no preconditions.
    let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    let (tgid, tid) = task::current_ids();
    let Some(inflight) = inflight::end(tid) else {
        // Filtered out at enter, or the enter happened before the programs were attached.
        return 0;
    };
    if inflight.syscall != syscall as u32 {
        hist::count(&DROPS, drop_slot::UNPAIRED);
        return 0;
    }

    let duration_ns = now.saturating_sub(inflight.start_ns);
    let index = syscall.index() as u32;

    if let Some(stats) = SYSCALL_STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, written only by this CPU.
        let stats = unsafe { &mut *stats };
        stats.calls += 1;
        if ret < 0 {
            stats.errors += 1;
        }
        stats.total_ns += duration_ns;
        if duration_ns > stats.max_ns {
            stats.max_ns = duration_ns;
        }
    }
    if ret < 0 {
        count_errno(index, ret.unsigned_abs() as u32);
    }
    hist::record(&SYSCALL_HIST, index, duration_ns);

    if !events::syscall_records_on() {
        return 0;
    }
    if let Some(mut entry) = events::reserve() {
        let event = entry.as_mut_ptr();
        // SAFETY: the entry is reserved memory of exactly one Event, written before submit.
        unsafe {
            core::ptr::write_bytes(event, 0, 1);
            (*event).kind = EventKind::Syscall as u32;
            (*event).syscall = syscall as u32;
            (*event).pid = tgid;
            (*event).tid = tid;
            (*event).cgroup_id = inflight.cgroup_id;
            (*event).mntns_id = inflight.mntns_id;
            (*event).start_ns = inflight.start_ns;
            (*event).duration_ns = duration_ns;
            (*event).ret = ret;
            (*event).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        }
        events::submit(entry);
    }
    0
}

/// Defines the enter and exit programs of one syscall: a tracepoint pair and an
/// fentry/fexit pair. The fentry targets named here are placeholders; the agent loads each
/// program against the syscall function of the running architecture, such as
/// `__x64_sys_mount`.
macro_rules! syscall_programs {
    (
        $enter:ident,
        $exit:ident,
        $fentry:ident,
        $fexit:ident,
        $tp_enter:literal,
        $tp_exit:literal,
        $syscall:expr
    ) => {
        #[tracepoint(category = "syscalls", name = $tp_enter)]
        pub fn $enter(_ctx: TracePointContext) -> u32 {
            on_enter($syscall)
        }

        #[tracepoint(category = "syscalls", name = $tp_exit)]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            // SAFETY: `ret` is a `long` at this offset in every sys_exit record.
            let ret: i64 = unsafe { ctx.read_at(EXIT_RET_OFFSET) }.unwrap_or(0);
            on_exit(ret, $syscall)
        }

        #[fentry(function = "__x64_sys_mount")]
        pub fn $fentry(_ctx: FEntryContext) -> u32 {
            on_enter($syscall)
        }

        /// The syscall function takes one argument, the saved registers, so its return
        /// value is argument 1.
        #[fexit(function = "__x64_sys_mount")]
        pub fn $fexit(ctx: FExitContext) -> u32 {
            on_exit(ctx.arg::<i64>(1), $syscall)
        }
    };
}

syscall_programs!(
    enter_mount,
    exit_mount,
    fentry_sys_mount,
    fexit_sys_mount,
    "sys_enter_mount",
    "sys_exit_mount",
    MountSyscall::Mount
);
syscall_programs!(
    enter_umount,
    exit_umount,
    fentry_sys_umount,
    fexit_sys_umount,
    "sys_enter_umount",
    "sys_exit_umount",
    MountSyscall::Umount2
);
syscall_programs!(
    enter_move_mount,
    exit_move_mount,
    fentry_sys_move_mount,
    fexit_sys_move_mount,
    "sys_enter_move_mount",
    "sys_exit_move_mount",
    MountSyscall::MoveMount
);
syscall_programs!(
    enter_open_tree,
    exit_open_tree,
    fentry_sys_open_tree,
    fexit_sys_open_tree,
    "sys_enter_open_tree",
    "sys_exit_open_tree",
    MountSyscall::OpenTree
);
syscall_programs!(
    enter_open_tree_attr,
    exit_open_tree_attr,
    fentry_sys_open_tree_attr,
    fexit_sys_open_tree_attr,
    "sys_enter_open_tree_attr",
    "sys_exit_open_tree_attr",
    MountSyscall::OpenTreeAttr
);
syscall_programs!(
    enter_fsopen,
    exit_fsopen,
    fentry_sys_fsopen,
    fexit_sys_fsopen,
    "sys_enter_fsopen",
    "sys_exit_fsopen",
    MountSyscall::Fsopen
);
syscall_programs!(
    enter_fsconfig,
    exit_fsconfig,
    fentry_sys_fsconfig,
    fexit_sys_fsconfig,
    "sys_enter_fsconfig",
    "sys_exit_fsconfig",
    MountSyscall::Fsconfig
);
syscall_programs!(
    enter_fsmount,
    exit_fsmount,
    fentry_sys_fsmount,
    fexit_sys_fsmount,
    "sys_enter_fsmount",
    "sys_exit_fsmount",
    MountSyscall::Fsmount
);
syscall_programs!(
    enter_fspick,
    exit_fspick,
    fentry_sys_fspick,
    fexit_sys_fspick,
    "sys_enter_fspick",
    "sys_exit_fspick",
    MountSyscall::Fspick
);
syscall_programs!(
    enter_mount_setattr,
    exit_mount_setattr,
    fentry_sys_mount_setattr,
    fexit_sys_mount_setattr,
    "sys_enter_mount_setattr",
    "sys_exit_mount_setattr",
    MountSyscall::MountSetattr
);
