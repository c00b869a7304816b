//! Kernel and process limits that a large executor runs into: checked before the builders
//! start where the value can be read, and named with their fix when a syscall fails on one.

use std::{fs, io};

use nix::sys::resource::{Resource, getrlimit};

use super::ExecutorError;

/// File descriptors one builder may hold at once: its namespace and tree descriptors, the
/// fsconfig context and mount, the pipe of a user namespace child, and directory listings of
/// the merged-view check, rounded up.
const FDS_PER_BUILDER: u64 = 16;
/// File descriptors kept for the rest of the process: the probes' maps and links, the ring
/// buffer, logs and the runtime.
const FDS_RESERVED: u64 = 512;
/// User namespaces each builder may keep alive at once with per-container user namespaces. The
/// kernel frees a user namespace from a work queue after its last reference goes, so the
/// previous start's namespace can still count against the limit.
const USER_NAMESPACES_PER_BUILDER: u64 = 2;

const MAX_USER_NAMESPACES: &str = "/proc/sys/user/max_user_namespaces";
const MAX_MNT_NAMESPACES: &str = "/proc/sys/user/max_mnt_namespaces";
const MOUNT_MAX: &str = "/proc/sys/fs/mount-max";
const THREADS_MAX: &str = "/proc/sys/kernel/threads-max";

/// Checks the limits that `builders` builders need and raises the soft `RLIMIT_NOFILE` to the
/// hard limit when the soft one is too low. Returns an error that names the limit, its value
/// and the fix when a limit is too low and cannot be raised from here.
pub(crate) fn check(builders: u32, per_container_userns: bool) -> Result<(), ExecutorError> {
    let builders = u64::from(builders);
    ensure_open_files(builders * FDS_PER_BUILDER + FDS_RESERVED)?;

    // Each builder unshares one mount namespace, and the process itself has one.
    check_sysctl(MAX_MNT_NAMESPACES, builders + 1, "user.max_mnt_namespaces")?;
    let user_namespaces = if per_container_userns {
        builders * USER_NAMESPACES_PER_BUILDER
    } else {
        1
    };
    check_sysctl(
        MAX_USER_NAMESPACES,
        user_namespaces,
        "user.max_user_namespaces",
    )?;
    Ok(())
}

fn read_sysctl(path: &str) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn check_sysctl(path: &'static str, needed: u64, key: &'static str) -> Result<(), ExecutorError> {
    match read_sysctl(path) {
        Some(value) if value < needed => Err(ExecutorError::ResourceLimit {
            limit: path,
            value,
            needed,
            fix: format!("raise it with `sysctl -w {key}={needed}` or use fewer builders"),
        }),
        // A missing file means a kernel without that limit, so there is nothing to check.
        _ => Ok(()),
    }
}

/// Raises the soft `RLIMIT_NOFILE` to `needed`, or to the hard limit when that is lower.
fn ensure_open_files(needed: u64) -> Result<(), ExecutorError> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(ExecutorError::io(
            "read RLIMIT_NOFILE of",
            "/proc/self/limits",
            io::Error::last_os_error(),
        ));
    }
    if limit.rlim_cur >= needed {
        return Ok(());
    }
    if limit.rlim_max < needed {
        return Err(ExecutorError::ResourceLimit {
            limit: "RLIMIT_NOFILE hard limit",
            value: limit.rlim_max,
            needed,
            fix: format!("raise it with `ulimit -Hn {needed}` as root or use fewer builders"),
        });
    }
    let previous = limit.rlim_cur;
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: `limit` is a valid rlimit whose soft value does not exceed its hard value.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(ExecutorError::io(
            "raise RLIMIT_NOFILE of",
            "/proc/self/limits",
            io::Error::last_os_error(),
        ));
    }
    tracing::info!(
        previous,
        raised_to = limit.rlim_cur,
        needed,
        "raised the soft RLIMIT_NOFILE to the hard limit"
    );
    Ok(())
}

/// Describes the exhausted resource behind an error's chain: the limit involved, its current
/// value and how to raise it. Returns `None` when no cause in the chain is a known
/// resource errno.
pub fn resource_hint(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause = Some(error);
    while let Some(current) = cause {
        if let Some(errno) = current
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
            && let Some(hint) = hint_for_errno(errno)
        {
            return Some(hint);
        }
        cause = current.source();
    }
    None
}

fn sysctl_text(path: &str) -> String {
    read_sysctl(path).map_or_else(|| "unknown".to_string(), |value| value.to_string())
}

/// Returns the soft and hard values of `resource`, or zeros when they cannot be read.
fn rlimit(resource: Resource) -> (u64, u64) {
    getrlimit(resource).unwrap_or((0, 0))
}

fn hint_for_errno(errno: i32) -> Option<String> {
    let hint = match errno {
        libc::EMFILE => {
            let (soft, hard) = rlimit(Resource::RLIMIT_NOFILE);
            format!(
                "EMFILE: the process reached RLIMIT_NOFILE (soft {soft}, hard {hard}); raise it \
                 with `ulimit -n` or use fewer builders"
            )
        }
        libc::ENFILE => format!(
            "ENFILE: the system file table is full (/proc/sys/fs/file-max is {}); raise it \
             with `sysctl -w fs.file-max=N`",
            sysctl_text("/proc/sys/fs/file-max")
        ),
        libc::ENOSPC => format!(
            "ENOSPC: a namespace or mount limit is reached ({MAX_USER_NAMESPACES} is {}, \
             {MAX_MNT_NAMESPACES} is {}, {MOUNT_MAX} is {}) or a filesystem is full; raise the \
             limit with sysctl, free space in the store, or use fewer builders",
            sysctl_text(MAX_USER_NAMESPACES),
            sysctl_text(MAX_MNT_NAMESPACES),
            sysctl_text(MOUNT_MAX)
        ),
        libc::EUSERS => format!(
            "EUSERS: the user namespace limit is reached ({MAX_USER_NAMESPACES} is {}); raise \
             it with `sysctl -w user.max_user_namespaces=N`",
            sysctl_text(MAX_USER_NAMESPACES)
        ),
        libc::ENOMEM => "ENOMEM: the kernel could not allocate memory for a mount, namespace \
                         or process; free memory or use fewer builders"
            .to_string(),
        libc::EAGAIN => {
            let (soft, _) = rlimit(Resource::RLIMIT_NPROC);
            format!(
                "EAGAIN: no new process or thread could be created (RLIMIT_NPROC soft {}, \
                 {THREADS_MAX} is {}, or the cgroup's pids.max); raise the limit or use fewer \
                 builders",
                soft,
                sysctl_text(THREADS_MAX)
            )
        }
        _ => return None,
    };
    Some(hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hint_names_emfile() {
        let error = io::Error::from_raw_os_error(libc::EMFILE);
        let hint = resource_hint(&error).expect("EMFILE has a hint");
        assert!(hint.contains("RLIMIT_NOFILE"), "{hint}");
    }

    #[test]
    fn hint_found_in_source_chain() {
        let error = ExecutorError::UserNamespace {
            base_id: 100_000,
            source: io::Error::from_raw_os_error(libc::ENOSPC),
        };
        let hint = resource_hint(&error).expect("ENOSPC has a hint");
        assert!(hint.contains(MAX_USER_NAMESPACES), "{hint}");
    }

    #[test]
    fn hint_absent_for_other_errno() {
        let error = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(resource_hint(&error), None);
    }
}
