//! Mounting the overlay itself: the legacy `mount(2)` option string, or `fsopen("overlay")` with
//! one `fsconfig` call per lowerdir, and the choice between them.

use std::{
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use mountscope_common::snapshot::MountApi;

use super::{ExecutorError, syscalls};

/// Maximum length of the option string `mount(2)` passes whole: it copies one page (4096 bytes on x86-64)
/// including the terminating NUL, and a longer `lowerdir=` fails with ENOENT.
pub const LEGACY_OPTIONS_MAX: usize = 4095;
/// Maximum length of a string value `fsconfig(FSCONFIG_SET_STRING)` accepts (the kernel copies at most 256
/// bytes including the NUL).
pub const FSCONFIG_STRING_MAX: usize = 255;

/// The overlay mount API a build uses once [`MountApi::Auto`] is resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OverlayApi {
    /// One `mount(2)` with a `lowerdir=` option string.
    Legacy,
    /// `fsopen`, `fsconfig` per lowerdir plus upperdir and workdir, `FSCONFIG_CMD_CREATE`,
    /// `fsmount` and `move_mount`: N + 6 syscalls for N lowerdirs.
    Fsconfig,
}

/// Directories of one overlay mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OverlayDirs {
    /// Lower directories, top layer first, as overlayfs orders them.
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
}

impl OverlayDirs {
    /// Formats the option string for `mount(2)`.
    pub(crate) fn legacy_options(&self) -> String {
        let lowers: Vec<String> = self
            .lowers
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        format!(
            "lowerdir={},upperdir={},workdir={}",
            lowers.join(":"),
            self.upper.display(),
            self.work.display()
        )
    }

    /// Resolves `api` for these directories: `Auto` picks `mount(2)` while the option string
    /// fits in [`LEGACY_OPTIONS_MAX`] bytes. Fails when the chosen API cannot carry the paths.
    pub(crate) fn resolve_api(&self, api: MountApi) -> Result<OverlayApi, ExecutorError> {
        let options_len = self.legacy_options().len();
        let resolved = match api {
            MountApi::Legacy => OverlayApi::Legacy,
            MountApi::Fsconfig => OverlayApi::Fsconfig,
            MountApi::Auto if options_len <= LEGACY_OPTIONS_MAX => OverlayApi::Legacy,
            MountApi::Auto => OverlayApi::Fsconfig,
        };

        if resolved == OverlayApi::Legacy && options_len > LEGACY_OPTIONS_MAX {
            return Err(ExecutorError::LegacyOptionsTooLong {
                layers: self.lowers.len(),
                len: options_len,
            });
        }
        if resolved == OverlayApi::Fsconfig {
            let all = self.lowers.iter().chain([&self.upper, &self.work]);
            if let Some(long) = all
                .into_iter()
                .find(|p| p.as_os_str().len() > FSCONFIG_STRING_MAX)
            {
                return Err(ExecutorError::LowerdirTooLong {
                    path: long.clone(),
                    len: long.as_os_str().len(),
                });
            }
        }
        Ok(resolved)
    }
}

/// Mount-family syscalls that mounting one overlay of `layers` lowerdirs makes with `api`.
pub(crate) fn overlay_mount_syscalls(api: OverlayApi, layers: u64) -> u64 {
    match api {
        OverlayApi::Legacy => 1,
        // fsopen, N lowerdir+, upperdir, workdir, create, fsmount, move_mount
        OverlayApi::Fsconfig => layers + 6,
    }
}

/// Mounts the overlay of `dirs` on `dirs.merged` with `api`.
pub(crate) fn mount_overlay(dirs: &OverlayDirs, api: OverlayApi) -> Result<(), ExecutorError> {
    match api {
        OverlayApi::Legacy => syscalls::mount_overlay_legacy(&dirs.merged, &dirs.legacy_options())
            .map_err(|e| ExecutorError::syscall("mount(overlay)", &dirs.merged, e)),
        OverlayApi::Fsconfig => mount_overlay_fsconfig(dirs),
    }
}

fn mount_overlay_fsconfig(dirs: &OverlayDirs) -> Result<(), ExecutorError> {
    let fs_fd = syscalls::fsopen(c"overlay")
        .map_err(|e| ExecutorError::syscall("fsopen(overlay)", &dirs.merged, e))?;
    let context_error = |syscall: &'static str, path: &Path, source| {
        let messages = syscalls::fs_context_messages(fs_fd.as_fd());
        ExecutorError::Syscall {
            syscall,
            path: path.to_path_buf(),
            detail: if messages.is_empty() {
                messages
            } else {
                format!(" ({messages})")
            },
            source,
        }
    };

    for lower in &dirs.lowers {
        syscalls::fsconfig_set_string(fs_fd.as_fd(), c"lowerdir+", lower)
            .map_err(|e| context_error("fsconfig(lowerdir+)", lower, e))?;
    }
    syscalls::fsconfig_set_string(fs_fd.as_fd(), c"upperdir", &dirs.upper)
        .map_err(|e| context_error("fsconfig(upperdir)", &dirs.upper, e))?;
    syscalls::fsconfig_set_string(fs_fd.as_fd(), c"workdir", &dirs.work)
        .map_err(|e| context_error("fsconfig(workdir)", &dirs.work, e))?;
    syscalls::fsconfig_create(fs_fd.as_fd())
        .map_err(|e| context_error("fsconfig(FSCONFIG_CMD_CREATE)", &dirs.merged, e))?;

    let mount_fd = syscalls::fsmount(fs_fd.as_fd())
        .map_err(|e| context_error("fsmount(overlay)", &dirs.merged, e))?;
    syscalls::move_mount_to(mount_fd.as_fd(), &dirs.merged)
        .map_err(|e| ExecutorError::syscall("move_mount(overlay)", &dirs.merged, e))?;
    // The mount fd pins the mount: it must be closed before the overlay is unmounted, or
    // umount2 fails with EBUSY. Both descriptors close here.
    drop(mount_fd);
    drop(fs_fd);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(layers: usize, lower_len: usize) -> OverlayDirs {
        let lowers = (0..layers)
            .map(|_| PathBuf::from("l".repeat(lower_len)))
            .collect();
        OverlayDirs {
            lowers,
            upper: "/u".into(),
            work: "/w".into(),
            merged: "/m".into(),
        }
    }

    #[test]
    fn legacy_options_order_and_fields() {
        let dirs = OverlayDirs {
            lowers: vec!["/top".into(), "/bottom".into()],
            upper: "/u".into(),
            work: "/w".into(),
            merged: "/m".into(),
        };
        assert_eq!(
            dirs.legacy_options(),
            "lowerdir=/top:/bottom,upperdir=/u,workdir=/w"
        );
    }

    #[test]
    fn auto_keeps_legacy_at_limit() {
        // "lowerdir=" (9) + 100 * 30 + 99 colons + ",upperdir=/u,workdir=/w" (23) = 3131 bytes
        let short = dirs(100, 30);
        assert_eq!(
            short.resolve_api(MountApi::Auto).unwrap(),
            OverlayApi::Legacy
        );
    }

    #[test]
    fn auto_switches_past_limit() {
        let long = dirs(200, 30);
        assert!(long.legacy_options().len() > LEGACY_OPTIONS_MAX);
        assert_eq!(
            long.resolve_api(MountApi::Auto).unwrap(),
            OverlayApi::Fsconfig
        );
    }

    #[test]
    fn auto_boundary_is_4095_bytes() {
        // 9 + 4063 + 23 = 4095 bytes with one lowerdir.
        let at_limit = dirs(1, 4063);
        assert_eq!(at_limit.legacy_options().len(), 4095);
        let api = at_limit.resolve_api(MountApi::Auto);
        assert!(matches!(api, Ok(OverlayApi::Legacy)));
        let over = dirs(1, 4064);
        let api = over.resolve_api(MountApi::Auto);
        assert!(matches!(
            api,
            Err(ExecutorError::LowerdirTooLong { len: 4064, .. })
        ));
    }

    #[test]
    fn legacy_rejects_long_options() {
        let long = dirs(200, 30);
        let error = long.resolve_api(MountApi::Legacy).unwrap_err();
        assert!(matches!(
            error,
            ExecutorError::LegacyOptionsTooLong { layers: 200, .. }
        ));
    }

    #[test]
    fn fsconfig_rejects_long_lowerdir() {
        let error = dirs(1, 256).resolve_api(MountApi::Fsconfig).unwrap_err();
        assert!(matches!(
            error,
            ExecutorError::LowerdirTooLong { len: 256, .. }
        ));
    }

    #[test]
    fn fsconfig_syscalls_grow_with_layers() {
        assert_eq!(overlay_mount_syscalls(OverlayApi::Fsconfig, 20), 26);
        assert_eq!(overlay_mount_syscalls(OverlayApi::Legacy, 20), 1);
    }
}
