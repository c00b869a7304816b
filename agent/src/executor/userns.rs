//! The user namespace behind idmapped mounts: a short-lived child process enters a new user
//! namespace, the parent writes its id maps and keeps a descriptor of the namespace, then kills
//! and reaps the child.

use std::{
    fs,
    io::{self, Read as _, Write as _},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use super::ExecutorError;

/// Default first host uid and gid that uid and gid 0 map to.
pub const DEFAULT_IDMAP_BASE: u32 = 100_000;
/// Number of ids each idmap covers, starting at 0 inside and at the base outside.
pub const IDMAP_RANGE: u32 = 65_536;
/// The id the kernel shows for an id that the mapping does not cover (`/proc/sys/kernel/overflowuid`
/// defaults to it).
pub const OVERFLOW_UID: u32 = 65_534;

/// Creates a user namespace mapping ids `0..IDMAP_RANGE` to `base_id..base_id + IDMAP_RANGE`
/// and returns a descriptor of it, usable as `userns_fd` in `mount_setattr(MOUNT_ATTR_IDMAP)`.
pub fn create_idmap_userns(base_id: u32) -> Result<OwnedFd, ExecutorError> {
    create(base_id).map_err(|source| ExecutorError::UserNamespace { base_id, source })
}

fn pipe() -> io::Result<(fs::File, fs::File)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are new and owned by no one else.
    let (read, write) = unsafe { (fs::File::from_raw_fd(fds[0]), fs::File::from_raw_fd(fds[1])) };
    Ok((read, write))
}

fn create(base_id: u32) -> io::Result<OwnedFd> {
    let (mut ready_read, ready_write) = pipe()?;

    // SAFETY: the child only calls async-signal-safe functions (unshare, write, pause, _exit),
    // as required after fork in a multithreaded process.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: see above; the child never returns from this block.
        unsafe {
            let status: u8 = if libc::unshare(libc::CLONE_NEWUSER) == 0 {
                1
            } else {
                0
            };
            libc::write(ready_write.as_raw_fd(), (&status as *const u8).cast(), 1);
            loop {
                libc::pause();
            }
        }
    }
    drop(ready_write);

    let result = map_and_open(pid, base_id, &mut ready_read);

    // SAFETY: `pid` is our own child, not yet reaped, so the id cannot have been reused.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    result
}

fn map_and_open(pid: libc::pid_t, base_id: u32, ready: &mut fs::File) -> io::Result<OwnedFd> {
    let mut status = [0u8; 1];
    ready.read_exact(&mut status)?;
    if status[0] != 1 {
        return Err(io::Error::other(
            "the child failed to unshare its user namespace",
        ));
    }

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
