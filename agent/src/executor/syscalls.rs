//! Thin wrappers over the mount-family syscalls the executor makes, each counted per thread so
//! the executor can report exactly how many it made.

use std::{
    cell::{Cell, RefCell},
    ffi::{CStr, CString},
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    path::Path,
    ptr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

// Kernel ABI values from include/uapi/linux/mount.h and fcntl.h (stable since Linux 5.2, and
// 5.12 for `mount_setattr`). Defined here because not every libc release exports them.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_EMPTY_PATH: libc::c_uint = 0x1000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x0000_0004;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const FSOPEN_CLOEXEC: libc::c_uint = 0x0000_0001;
const FSMOUNT_CLOEXEC: libc::c_uint = 0x0000_0001;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;

/// `struct mount_attr` as `mount_setattr(2)` reads it (`MOUNT_ATTR_SIZE_VER0`, 32 bytes).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

thread_local! {
    static MOUNT_SYSCALLS: Cell<u64> = const { Cell::new(0) };
    /// Counter of the calls that [`umount_when_free`] repeats on this thread, when one is set.
    static BUSY_RETRIES: RefCell<Option<Arc<AtomicU64>>> = const { RefCell::new(None) };
}

/// Maximum `umount2` calls that [`umount_when_free`] makes on one target. The pause before each
/// retry doubles from [`BUSY_FIRST_PAUSE`] up to [`BUSY_MAX_PAUSE`], about 0.5 s in all.
const BUSY_TRIES: u32 = 30;
const BUSY_FIRST_PAUSE: Duration = Duration::from_micros(200);
const BUSY_MAX_PAUSE: Duration = Duration::from_millis(20);

/// Mount-family syscalls made by the calling thread through this module, failed calls included.
pub(crate) fn thread_syscall_count() -> u64 {
    MOUNT_SYSCALLS.with(Cell::get)
}

/// Makes [`umount_when_free`] add each `umount2` call it repeats on the calling thread to
/// `counter` at once, so that readers see each call as soon as the probes count it.
pub(crate) fn count_busy_retries_in(counter: Arc<AtomicU64>) {
    BUSY_RETRIES.with(|slot| *slot.borrow_mut() = Some(counter));
}

fn count_busy_retry() {
    BUSY_RETRIES.with(|slot| {
        if let Some(counter) = slot.borrow().as_ref() {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
}

fn count_call() {
    MOUNT_SYSCALLS.with(|count| count.set(count.get() + 1));
}

fn path_cstring(path: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;

    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn check_status(status: libc::c_long) -> io::Result<libc::c_long> {
    if status < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(status)
    }
}

/// Takes ownership of a descriptor the kernel just returned.
fn owned_fd(raw: libc::c_long) -> OwnedFd {
    let raw = raw as libc::c_int;
    // SAFETY: `raw` is a new descriptor returned by a successful syscall and owned by no one else.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

/// Bind-mounts `source` onto `target` with `mount(2)` (`MS_BIND`, not recursive).
pub(crate) fn bind_mount(source: &Path, target: &Path) -> io::Result<()> {
    let source = path_cstring(source)?;
    let target = path_cstring(target)?;
    count_call();
    // SAFETY: both strings are NUL-terminated and outlive the call; type and data may be NULL.
    let status = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            ptr::null(),
            libc::MS_BIND,
            ptr::null(),
        )
    };
    check_status(status.into()).map(drop)
}

/// Mounts an overlay on `target` with `mount(2)` and a legacy option string.
pub(crate) fn mount_overlay_legacy(target: &Path, options: &str) -> io::Result<()> {
    let target = path_cstring(target)?;
    let options = CString::new(options)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "options contain a NUL byte"))?;
    count_call();
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    let status = unsafe {
        libc::mount(
            c"overlay".as_ptr(),
            target.as_ptr(),
            c"overlay".as_ptr(),
            0,
            options.as_ptr().cast(),
        )
    };
    check_status(status.into()).map(drop)
}

/// Mounts a tmpfs on `target` with `mount(2)` and the option string `options`.
pub(crate) fn mount_tmpfs(target: &Path, options: &CStr) -> io::Result<()> {
    let target = path_cstring(target)?;
    count_call();
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    let status = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            options.as_ptr().cast(),
        )
    };
    check_status(status.into()).map(drop)
}

/// Calls `umount2(2)` on `target` with `flags` (`0` or `libc::MNT_DETACH`).
pub(crate) fn umount(target: &Path, flags: libc::c_int) -> io::Result<()> {
    let target = path_cstring(target)?;
    count_call();
    // SAFETY: `target` is a NUL-terminated string that outlives the call.
    let status = unsafe { libc::umount2(target.as_ptr(), flags) };
    check_status(status.into()).map(drop)
}

/// Unmounts `target` with `umount2(2)` and no flags, and tries again while it fails with EBUSY.
///
/// A child forked by any thread of this process keeps a copy of every open descriptor until it
/// calls exec, and a descriptor of a file inside the mount keeps the mount busy. A lazy unmount
/// would hide a mount that stays busy for good, so after [`BUSY_TRIES`] calls the error is
/// returned.
pub(crate) fn umount_when_free(target: &Path) -> io::Result<()> {
    let mut pause = BUSY_FIRST_PAUSE;
    let mut tries = 1;
    loop {
        match umount(target, 0) {
            Err(error) if error.raw_os_error() == Some(libc::EBUSY) && tries < BUSY_TRIES => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(BUSY_MAX_PAUSE);
                tries += 1;
                count_busy_retry();
            }
            Err(error) if error.raw_os_error() == Some(libc::EBUSY) => {
                let message =
                    format!("{error} after {BUSY_TRIES} tries in 0.5 s; a file may be open in it");
                return Err(io::Error::new(error.kind(), message));
            }
            result => return result,
        }
    }
}

/// Clones the mount at `path` into a detached mount with `open_tree(OPEN_TREE_CLONE)`.
pub(crate) fn open_tree_clone(path: &Path) -> io::Result<OwnedFd> {
    let path = path_cstring(path)?;
    count_call();
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    // SAFETY: `path` is NUL-terminated and outlives the call; open_tree takes no other pointers.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
    check_status(fd).map(owned_fd)
}

/// Makes the detached mount `mount_fd` idmapped through the user namespace `userns`
/// (`mount_setattr(MOUNT_ATTR_IDMAP)`, Linux 5.12+).
pub(crate) fn set_idmap(mount_fd: BorrowedFd<'_>, userns: BorrowedFd<'_>) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    count_call();
    // SAFETY: the empty path and `attr` outlive the call, and the size passed is attr's size.
    let status = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mount_fd.as_raw_fd(),
            c"".as_ptr(),
            AT_EMPTY_PATH,
            &attr as *const MountAttr,
            size_of::<MountAttr>(),
        )
    };
    check_status(status).map(drop)
}

/// Attaches the detached mount `mount_fd` at `target` with `move_mount(2)`.
pub(crate) fn move_mount_to(mount_fd: BorrowedFd<'_>, target: &Path) -> io::Result<()> {
    let target = path_cstring(target)?;
    count_call();
    // SAFETY: both path strings are NUL-terminated and outlive the call.
    let status = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount_fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    check_status(status).map(drop)
}

/// Opens a filesystem context for `fstype` with `fsopen(2)`.
pub(crate) fn fsopen(fstype: &CStr) -> io::Result<OwnedFd> {
    count_call();
    // SAFETY: `fstype` is NUL-terminated and outlives the call.
    let fd = unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) };
    check_status(fd).map(owned_fd)
}

/// Sets a string parameter on a filesystem context (`fsconfig(FSCONFIG_SET_STRING)`).
pub(crate) fn fsconfig_set_string(
    fs_fd: BorrowedFd<'_>,
    key: &CStr,
    value: &Path,
) -> io::Result<()> {
    let value = path_cstring(value)?;
    count_call();
    // SAFETY: key and value are NUL-terminated strings that outlive the call.
    let status = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs_fd.as_raw_fd(),
            FSCONFIG_SET_STRING,
            key.as_ptr(),
            value.as_ptr(),
            0,
        )
    };
    check_status(status).map(drop)
}

/// Creates the superblock of a configured filesystem context (`fsconfig(FSCONFIG_CMD_CREATE)`).
pub(crate) fn fsconfig_create(fs_fd: BorrowedFd<'_>) -> io::Result<()> {
    count_call();
    // SAFETY: FSCONFIG_CMD_CREATE takes no key or value, so NULL pointers are valid.
    let status = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs_fd.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            ptr::null::<libc::c_char>(),
            ptr::null::<libc::c_void>(),
            0,
        )
    };
    check_status(status).map(drop)
}

/// Turns a created filesystem context into a detached mount with `fsmount(2)`.
pub(crate) fn fsmount(fs_fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    count_call();
    // SAFETY: fsmount takes no pointers.
    let fd = unsafe { libc::syscall(libc::SYS_fsmount, fs_fd.as_raw_fd(), FSMOUNT_CLOEXEC, 0) };
    check_status(fd).map(owned_fd)
}

/// Reads the messages the kernel queued on a filesystem context, such as the reason
/// `FSCONFIG_CMD_CREATE` failed. Returns them joined with "; ", or an empty string.
pub(crate) fn fs_context_messages(fs_fd: BorrowedFd<'_>) -> String {
    let mut messages = Vec::new();
    let mut buffer = [0u8; 512];
    loop {
        // SAFETY: `buffer` is valid for writes of its full length.
        let read =
            unsafe { libc::read(fs_fd.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len()) };
        if read <= 0 {
            break;
        }
        let text = String::from_utf8_lossy(&buffer[..read as usize]);
        messages.push(text.trim_end().to_string());
    }
    messages.join("; ")
}

/// Gives the calling thread its own mount namespace and makes every mount in it private, so
/// the thread's mounts never propagate to the host and die with the namespace.
pub(crate) fn enter_private_mount_namespace() -> io::Result<()> {
    // SAFETY: unshare takes no pointers; CLONE_NEWNS on one thread also unshares its fs_struct.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the strings are NUL-terminated; type and data may be NULL for a propagation change.
    let status = unsafe {
        libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            ptr::null(),
        )
    };
    check_status(status.into()).map(drop)
}
