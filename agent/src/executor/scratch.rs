//! Each builder's scratch space: a tmpfs that the builder mounts once in its private mount
//! namespace, holding the container directories that all of its starts reuse.
//!
//! The scratch space keeps directory work off the store's filesystem. Creating and removing a
//! container's directories on every start, and the sync of the upper filesystem that overlayfs
//! makes when an overlay's superblock shuts down, cost far more than the mount syscalls. On an
//! ext4 mounted with `discard`, each removed directory also waited for a block discard. None of
//! that work takes `namespace_sem`, so moving it leaves the lock traffic unchanged.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use super::{ExecutorError, build::ContainerDir, syscalls};

/// Options of the scratch tmpfs. The upper directories stay empty because the merged-view
/// check only reads, so the size limit only bounds a container that writes by mistake.
const SCRATCH_OPTIONS: &std::ffi::CStr = c"mode=0700,size=16m";

/// Kind of a builder's container directory: the container itself, or its inspection pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ContainerKind {
    Container,
    Inspection,
}

impl ContainerKind {
    fn dir_name(self) -> &'static str {
        match self {
            ContainerKind::Container => "c",
            ContainerKind::Inspection => "i",
        }
    }
}

/// Returns the scratch directory of builder `builder`: `<run_dir>/<builder>`, three digits wide.
fn scratch_root(run_dir: &Path, builder: u32) -> PathBuf {
    run_dir.join(format!("{builder:03}"))
}

/// Returns the root of a container directory. Builder indexes stay below `MAX_BUILDERS` (256),
/// so the path has the same length for every builder and `auto` picks the same mount API.
pub(crate) fn container_root(run_dir: &Path, builder: u32, kind: ContainerKind) -> PathBuf {
    scratch_root(run_dir, builder).join(kind.dir_name())
}

/// A builder's mounted scratch tmpfs. Dropping it unmounts the tmpfs and removes its mount
/// point from the run directory.
pub(crate) struct Scratch {
    root: PathBuf,
}

impl Scratch {
    /// Mounts the scratch tmpfs of builder `builder` under `run_dir`. The caller must already
    /// be in its private mount namespace, so that the mount never reaches the host.
    pub(crate) fn mount(run_dir: &Path, builder: u32) -> Result<Scratch, ExecutorError> {
        let root = scratch_root(run_dir, builder);
        match fs::create_dir(&root) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(ExecutorError::io("create the scratch directory", &root, e));
            }
            _ => {}
        }
        if let Err(e) = syscalls::mount_tmpfs(&root, SCRATCH_OPTIONS) {
            // Leaves the run directory empty, so that stopping the executor can remove it.
            let _ = fs::remove_dir(&root);
            return Err(ExecutorError::syscall("mount(tmpfs)", &root, e));
        }
        Ok(Scratch { root })
    }

    /// Returns the container directory of `kind` on this tmpfs. The first build creates its
    /// subdirectories, and later builds reuse them.
    pub(crate) fn container_dir(&self, kind: ContainerKind) -> ContainerDir {
        ContainerDir::new(self.root.join(kind.dir_name()))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Detached, because a failed build may have left an overlay mounted on the tmpfs.
        if let Err(error) = syscalls::umount(&self.root, libc::MNT_DETACH) {
            tracing::warn!(dir = %self.root.display(), %error, "failed to unmount a builder's scratch tmpfs");
            return;
        }
        if let Err(error) = fs::remove_dir(&self.root) {
            tracing::warn!(dir = %self.root.display(), %error, "failed to remove a builder's scratch directory");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_root_width_is_fixed() {
        let run_dir = Path::new("/s/run/1-0");
        let first = container_root(run_dir, 0, ContainerKind::Container);
        let last = container_root(
            run_dir,
            super::super::MAX_BUILDERS - 1,
            ContainerKind::Inspection,
        );
        assert_eq!(first.as_os_str().len(), last.as_os_str().len());
    }
}
