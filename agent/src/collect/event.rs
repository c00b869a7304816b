//! Per-event records from the ring buffer, decoded into the form `record` writes as JSON.

use mountscope_common::{Event, EventKind, HolderKind, LockMode, MountSyscall};
use serde::Serialize;

/// One decoded event. Field meanings are documented in docs/record-format.md.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EventRecord {
    /// `syscall`, `lock_wait` or `lock_hold`.
    pub kind: &'static str,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    pub mntns_id: u64,
    /// The traced syscall the task was in, if any.
    pub syscall: Option<MountSyscall>,
    /// Monotonic clock (`CLOCK_MONOTONIC`, as `bpf_ktime_get_ns`) at the start.
    pub start_ns: u64,
    pub duration_ns: u64,
    /// Syscall records: the return value, negative errno on failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ret: Option<i64>,
    /// Syscall records that failed: the errno name, for example `ENOENT`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<LockMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder: Option<Holder>,
}

/// Who held `namespace_sem` when a wait began.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Holder {
    pub kind: HolderKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syscall: Option<MountSyscall>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_id: Option<u64>,
}

/// Returns a `comm` without its NUL padding.
pub fn comm_str(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// The errno name of a negative syscall return value.
pub fn errno_name(ret: i64) -> Option<String> {
    if ret >= 0 {
        return None;
    }
    Some(errno_code_name(
        ret.unsigned_abs().min(u64::from(u32::MAX)) as u32
    ))
}

/// Returns the name of a slot of the kernel's per-errno counts, where the last slot also
/// counts every larger code.
pub fn errno_slot_name(code: u32) -> String {
    if code >= mountscope_common::ERRNO_MAX {
        return format!("errno_{}_or_more", mountscope_common::ERRNO_MAX);
    }
    errno_code_name(code)
}

/// Returns the name of an errno code, such as `ENOENT`, or `errno_N` for a code Linux lacks.
pub fn errno_code_name(code: u32) -> String {
    match nix::errno::Errno::from_raw(code as i32) {
        nix::errno::Errno::UnknownErrno => format!("errno_{code}"),
        errno => format!("{errno:?}"),
    }
}

impl EventRecord {
    /// Decodes a raw record, or `None` for an unknown kind.
    pub fn decode(e: &Event) -> Option<EventRecord> {
        let kind = match e.kind {
            k if k == EventKind::Syscall as u32 => "syscall",
            k if k == EventKind::LockWait as u32 => "lock_wait",
            k if k == EventKind::LockHold as u32 => "lock_hold",
            _ => return None,
        };
        let is_syscall = kind == "syscall";
        let holder = (kind == "lock_wait").then(|| {
            let holder_kind = HolderKind::from_id(e.holder_kind).unwrap_or(HolderKind::Unknown);
            let writer = holder_kind == HolderKind::Writer;
            Holder {
                kind: holder_kind,
                pid: writer.then_some(e.holder_pid),
                tid: writer.then_some(e.holder_tid),
                comm: writer.then(|| comm_str(&e.holder_comm)),
                syscall: MountSyscall::from_id(e.holder_syscall),
                cgroup_id: (e.holder_cgroup_id != 0).then_some(e.holder_cgroup_id),
            }
        });
        Some(EventRecord {
            kind,
            pid: e.pid,
            tid: e.tid,
            comm: comm_str(&e.comm),
            cgroup_id: e.cgroup_id,
            mntns_id: e.mntns_id,
            syscall: MountSyscall::from_id(e.syscall),
            start_ns: e.start_ns,
            duration_ns: e.duration_ns,
            ret: is_syscall.then_some(e.ret),
            errno: if is_syscall { errno_name(e.ret) } else { None },
            mode: LockMode::from_id(e.mode),
            holder,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_name_of_enoent() {
        assert_eq!(errno_name(-2).as_deref(), Some("ENOENT"));
    }

    #[test]
    fn unknown_errno_has_number() {
        assert_eq!(errno_code_name(200), "errno_200");
    }

    #[test]
    fn last_errno_slot_counts_larger_codes() {
        assert_eq!(errno_slot_name(255), "errno_255_or_more");
    }

    #[test]
    fn success_has_no_errno() {
        assert_eq!(errno_name(0), None);
    }

    #[test]
    fn comm_stops_at_nul() {
        let mut comm = [0u8; 16];
        comm[..5].copy_from_slice(b"mount");
        assert_eq!(comm_str(&comm), "mount");
    }
}
