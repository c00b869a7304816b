//! The user namespace behind idmapped mounts: a short-lived child process is cloned into a new
//! user namespace, the parent writes its id maps and keeps a descriptor of the namespace, then
//! kills and reaps the child.

use std::{
    fs,
    io::{self, Write as _},
    os::fd::OwnedFd,
};

use super::{ExecutorError, MAX_BUILDERS};

/// Default first host uid and gid that uid and gid 0 map to.
pub const DEFAULT_IDMAP_BASE: u32 = 100_000;
/// Number of ids each idmap covers, starting at 0 inside and at the base outside.
pub const IDMAP_RANGE: u32 = 65_536;
/// The id the kernel shows for an id that the mapping does not cover (`/proc/sys/kernel/overflowuid`
/// defaults to it).
pub const OVERFLOW_UID: u32 = 65_534;

/// Number of distinct id ranges that per-container user namespaces cycle through. It is a
/// multiple of `MAX_BUILDERS`, so containers started at the same time by different builders
/// never share a range, and the highest id, `DEFAULT_IDMAP_BASE + IDMAP_RANGE *
/// CONTAINER_RANGES - 1`, stays far below `u32::MAX`.
pub const CONTAINER_RANGES: u32 = 4 * MAX_BUILDERS;

/// Returns the first host id of the range of the container that builder `builder` starts in
/// its round `round`: `DEFAULT_IDMAP_BASE + IDMAP_RANGE * slot`, where the slot is the builder
/// index plus `MAX_BUILDERS` times the round modulo 4. A builder thus moves through four ranges
/// of its own, and two builders never use the same range.
pub fn container_idmap_base(builder: u32, round: u64) -> u32 {
    let round_slot = (round % u64::from(CONTAINER_RANGES / MAX_BUILDERS)) as u32;
    let slot = (builder % MAX_BUILDERS) + MAX_BUILDERS * round_slot;
    DEFAULT_IDMAP_BASE + IDMAP_RANGE * slot
}

/// Creates a user namespace mapping ids `0..IDMAP_RANGE` to `base_id..base_id + IDMAP_RANGE`
/// and returns a descriptor of it, usable as `userns_fd` in `mount_setattr(MOUNT_ATTR_IDMAP)`.
pub fn create_idmap_userns(base_id: u32) -> Result<OwnedFd, ExecutorError> {
    create(base_id).map_err(|source| ExecutorError::UserNamespace { base_id, source })
}

/// Stack of the cloned child, which only loops in `pause`.
const CHILD_STACK_BYTES: usize = 64 * 1024;

extern "C" fn pause_forever(_: *mut libc::c_void) -> libc::c_int {
    loop {
        // SAFETY: pause takes no arguments and touches no memory.
        unsafe { libc::pause() };
    }
}

fn create(base_id: u32) -> io::Result<OwnedFd> {
    // CLONE_VM and CLONE_FILES share the address space and the descriptor table with the
    // child instead of copying them. Copying the address space of a process with a hundred
    // threads took up to seconds under load. A copied descriptor table would hold
    // references to every descriptor the other builders have open at that moment (detached
    // `open_tree` clones, fsconfig mounts, directories of merged views) until the child is
    // reaped, and their unmounts would fail with EBUSY meanwhile.
    let flags = libc::CLONE_NEWUSER | libc::CLONE_VM | libc::CLONE_FILES | libc::SIGCHLD;
    let mut stack = vec![0u8; CHILD_STACK_BYTES];
    // SAFETY: the child runs `pause_forever` on its own stack, which stays allocated until the
    // child is reaped below. The stack grows down on x86_64 and aarch64, so the child starts
    // at the end of the buffer, aligned down to 16 bytes.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(CHILD_STACK_BYTES);
        let top = top.sub(top as usize % 16);
        libc::clone(pause_forever, top.cast(), flags, std::ptr::null_mut())
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }

    let result = map_and_open(pid, base_id);

    // SAFETY: `pid` is our own child, not yet reaped, so the id cannot have been reused.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    drop(stack);
    result
}

fn map_and_open(pid: libc::pid_t, base_id: u32) -> io::Result<OwnedFd> {
    let map = format!("0 {base_id} {IDMAP_RANGE}\n");
    for file in ["uid_map", "gid_map"] {
        let path = format!("/proc/{pid}/{file}");
        fs::OpenOptions::new()
            .write(true)
            .open(&path)?
            .write_all(map.as_bytes())?;
    }

    let namespace = fs::File::open(format!("/proc/{pid}/ns/user"))?;
    Ok(OwnedFd::from(namespace))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_base_first_builder() {
        assert_eq!(container_idmap_base(0, 0), DEFAULT_IDMAP_BASE);
    }

    #[test]
    fn container_base_distinct_per_builder() {
        for round in 0..8 {
            let bases: std::collections::HashSet<u32> = (0..MAX_BUILDERS)
                .map(|builder| container_idmap_base(builder, round))
                .collect();
            assert_eq!(bases.len(), MAX_BUILDERS as usize, "round {round}");
        }
    }

    #[test]
    fn container_base_changes_with_round() {
        assert_ne!(container_idmap_base(3, 0), container_idmap_base(3, 1));
        assert_eq!(container_idmap_base(3, 0), container_idmap_base(3, 4));
    }

    #[test]
    fn container_base_highest_range_fits() {
        let base = container_idmap_base(MAX_BUILDERS - 1, 3);
        let last = u64::from(base) + u64::from(IDMAP_RANGE) - 1;
        assert_eq!(
            last,
            u64::from(DEFAULT_IDMAP_BASE) + u64::from(IDMAP_RANGE) * u64::from(CONTAINER_RANGES)
                - 1
        );
        assert!(last < u64::from(u32::MAX));
    }
}
