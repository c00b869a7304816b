//! One container start. Strategy A attaches each lower layer with its own bind or idmapped
//! mount, and strategy B attaches their common parent once. The overlay is mounted over them,
//! the temporary mounts are removed, the merged view is checked, and the rootfs is torn down.

use std::{
    fs, io,
    os::fd::{AsFd as _, BorrowedFd},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use mountscope_common::snapshot::{MountApi, Strategy};

use super::{
    ExecutorError,
    layers::Layer,
    overlay::{self, OverlayApi, OverlayDirs},
    syscalls,
    verify::ViewCheck,
};

/// Everything one container start needs, fixed when it begins.
pub(crate) struct BuildSpec<'a> {
    pub strategy: Strategy,
    pub mount_api: MountApi,
    /// The stack, bottom first.
    pub layers: &'a [Layer],
    /// `<store>/snapshots`, the common parent of every layer's `fs` directory.
    pub snapshots: &'a Path,
    /// User namespace for idmapped layers and the host id that id 0 maps to; `None` for plain
    /// bind mounts.
    pub idmap: Option<(BorrowedFd<'a>, u32)>,
    pub check: &'a ViewCheck,
    /// This builder's start number, which picks the merged-view probes to check.
    pub round: u64,
}

/// Counts the mount-family syscalls of one container start, doubled when `inspection` is set.
/// A build of N layers makes the layer mounts (N for A, 1 for B), each one `mount` or, when
/// idmapped, `open_tree` + `mount_setattr` + `move_mount`. The overlay mount is one `mount`,
/// or N + 6 calls with fsconfig. Then come one `umount2` per temporary mount and one for the
/// overlay.
pub fn syscalls_per_container_start(
    strategy: Strategy,
    layers: u32,
    idmap: bool,
    api: OverlayApi,
    inspection: bool,
) -> u64 {
    let layers = u64::from(layers);
    let temporary_mounts = match strategy {
        Strategy::PerLayer => layers,
        Strategy::CommonParent => 1,
    };
    let per_temporary_mount = if idmap { 3 } else { 1 };
    let per_build = temporary_mounts * per_temporary_mount
        + overlay::overlay_mount_syscalls(api, layers)
        + temporary_mounts
        + 1;
    if inspection { 2 * per_build } else { per_build }
}

/// Counts the mount operations of one container start as a runtime's design counts them. They
/// are the overlay mount, one bind or idmapped mount per temporary mount (N for A, 1 for B)
/// and one unmount of each, doubled when `inspection` is set. The overlay's own unmount is left out,
/// and an idmapped mount is one operation here but three syscalls, so this is not the syscall
/// count of [`syscalls_per_container_start`].
pub fn mount_operations_per_container_start(
    strategy: Strategy,
    layers: u32,
    inspection: bool,
) -> u64 {
    let temporary_mounts = match strategy {
        Strategy::PerLayer => u64::from(layers),
        Strategy::CommonParent => 1,
    };
    let per_build = 1 + 2 * temporary_mounts;
    if inspection { 2 * per_build } else { per_build }
}

/// Directory of one container: `lower/` contains the temporary mount points, and
/// `upper/`, `work/` and `merged/` belong to the overlay. A builder reuses the same directory
/// for every start, so its subdirectories are created once.
pub(crate) struct ContainerDir {
    pub root: PathBuf,
    /// Whether `upper`, `work`, `merged` and `lower` exist.
    created: bool,
    /// Per-layer mount points `lower/000`, `lower/001`… created so far.
    layer_mount_points: usize,
    /// Whether the last overlay was detached instead of unmounted. A process with a file open
    /// inside it keeps it alive, with `upper` and `work` in use.
    overlay_detached: bool,
    /// Count of `upper` and `work` pairs moved aside so far, which also numbers the next one.
    retired: u64,
}

impl ContainerDir {
    pub(crate) fn new(root: PathBuf) -> ContainerDir {
        ContainerDir {
            root,
            created: false,
            layer_mount_points: 0,
            overlay_detached: false,
            retired: 0,
        }
    }

    /// Creates the directories that a build of `layers` layers with `strategy` needs and that
    /// do not exist yet, and empties `upper` if the previous container wrote to it.
    fn prepare(&mut self, strategy: Strategy, layers: usize) -> Result<(), ExecutorError> {
        let upper = self.root.join("upper");
        if self.created && self.overlay_detached {
            self.retire_upper_and_work()?;
        } else if !self.created {
            for name in ["upper", "work", "merged", "lower"] {
                create_dir(&self.root.join(name))?;
            }
            self.created = true;
        } else if !is_empty_dir(&upper)? {
            remove_tree(&upper)?;
            create_dir(&upper)?;
        }

        if strategy == Strategy::PerLayer {
            let missing = self.layer_mount_points..layers.max(self.layer_mount_points);
            for index in missing {
                create_dir(&self.layer_mount_point(index))?;
            }
            self.layer_mount_points = self.layer_mount_points.max(layers);
        }
        Ok(())
    }

    /// Moves `upper` and `work` to `retired/<n>/` and creates new ones. A detached overlay may
    /// still use the old pair, and overlayfs warns of undefined behaviour when a new overlay
    /// shares them. The old pair is freed when the builder's scratch tmpfs is unmounted.
    fn retire_upper_and_work(&mut self) -> Result<(), ExecutorError> {
        let aside = self.root.join("retired").join(self.retired.to_string());
        create_dir(&aside)?;
        for name in ["upper", "work"] {
            let from = self.root.join(name);
            fs::rename(&from, aside.join(name))
                .map_err(|e| ExecutorError::io("move aside an overlay directory", &from, e))?;
            create_dir(&from)?;
        }
        self.retired += 1;
        self.overlay_detached = false;
        tracing::debug!(
            dir = %self.root.display(),
            "the last overlay was detached, so the next one gets new upper and work directories"
        );
        Ok(())
    }

    fn layer_mount_point(&self, index: usize) -> PathBuf {
        self.lower_root().join(format!("{index:03}"))
    }

    fn lower_root(&self) -> PathBuf {
        self.root.join("lower")
    }

    /// Temporary mount points, bottom layer first: `lower/<index>` for strategy A, and the
    /// single `lower` for strategy B.
    fn temporary_mount_points(&self, strategy: Strategy, layers: usize) -> Vec<PathBuf> {
        match strategy {
            Strategy::PerLayer => (0..layers)
                .map(|index| self.layer_mount_point(index))
                .collect(),
            Strategy::CommonParent => vec![self.lower_root()],
        }
    }

    /// Lists the overlay's directories. Strategy B rewrites each layer's path to the same path under
    /// the one temporary mount of the snapshots directory.
    pub(crate) fn overlay_dirs(
        &self,
        strategy: Strategy,
        layers: &[Layer],
        snapshots: &Path,
    ) -> OverlayDirs {
        let mut lowers: Vec<PathBuf> = match strategy {
            Strategy::PerLayer => self.temporary_mount_points(strategy, layers.len()),
            Strategy::CommonParent => layers
                .iter()
                .map(|layer| {
                    let relative = layer.fs.strip_prefix(snapshots).unwrap_or(&layer.fs);
                    self.lower_root().join(relative)
                })
                .collect(),
        };
        lowers.reverse();
        OverlayDirs {
            lowers,
            upper: self.root.join("upper"),
            work: self.root.join("work"),
            merged: self.root.join("merged"),
        }
    }
}

/// A mounted root filesystem. Dropping it without [`Rootfs::teardown`] detaches whatever is
/// still mounted.
pub(crate) struct Rootfs<'a> {
    dirs: OverlayDirs,
    temporary_mounts: Vec<PathBuf>,
    overlay_mounted: bool,
    /// The container directory, marked when the overlay had to be detached.
    container: &'a mut ContainerDir,
}

impl Rootfs<'_> {
    pub(crate) fn merged(&self) -> &Path {
        &self.dirs.merged
    }

    /// Unmounts the overlay. Its directories stay for the builder's next start.
    pub(crate) fn teardown(mut self) -> Result<(), ExecutorError> {
        syscalls::umount_when_free(&self.dirs.merged)
            .map_err(|e| ExecutorError::syscall("umount2(overlay)", &self.dirs.merged, e))?;
        self.overlay_mounted = false;
        Ok(())
    }
}

impl Drop for Rootfs<'_> {
    fn drop(&mut self) {
        for target in self.temporary_mounts.drain(..).rev() {
            if let Err(error) = syscalls::umount(&target, libc::MNT_DETACH) {
                tracing::warn!(dir = %target.display(), %error, "failed to detach a layer mount after a failed build");
            }
        }
        if self.overlay_mounted {
            if let Err(error) = syscalls::umount(&self.dirs.merged, libc::MNT_DETACH) {
                tracing::warn!(dir = %self.dirs.merged.display(), %error, "failed to detach an overlay after a failed build");
            }
            self.container.overlay_detached = true;
        }
        self.overlay_mounted = false;
    }
}

/// Checks whether the directory at `path` has no entries.
fn is_empty_dir(path: &Path) -> Result<bool, ExecutorError> {
    let mut listing =
        fs::read_dir(path).map_err(|e| ExecutorError::io("list container directory", path, e))?;
    Ok(listing.next().is_none())
}

fn remove_tree(path: &Path) -> Result<(), ExecutorError> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(ExecutorError::io("remove container directory", path, e))
        }
        _ => Ok(()),
    }
}

fn create_dir(path: &Path) -> Result<(), ExecutorError> {
    fs::create_dir_all(path).map_err(|e| ExecutorError::io("create container directory", path, e))
}

/// Attaches `source` at `target`: a bind mount, or an idmapped clone moved into place.
fn attach_layer(
    source: &Path,
    target: &Path,
    userns: Option<BorrowedFd<'_>>,
) -> Result<(), ExecutorError> {
    let Some(userns) = userns else {
        return syscalls::bind_mount(source, target)
            .map_err(|e| ExecutorError::syscall("mount(MS_BIND)", source, e));
    };
    let tree = syscalls::open_tree_clone(source)
        .map_err(|e| ExecutorError::syscall("open_tree(OPEN_TREE_CLONE)", source, e))?;
    syscalls::set_idmap(tree.as_fd(), userns)
        .map_err(|e| ExecutorError::syscall("mount_setattr(MOUNT_ATTR_IDMAP)", source, e))?;
    syscalls::move_mount_to(tree.as_fd(), target)
        .map_err(|e| ExecutorError::syscall("move_mount", target, e))
}

/// Builds the root filesystem of one container in `dir`.
pub(crate) fn build_rootfs<'a>(
    spec: &BuildSpec<'_>,
    dir: &'a mut ContainerDir,
) -> Result<Rootfs<'a>, ExecutorError> {
    let dirs = dir.overlay_dirs(spec.strategy, spec.layers, spec.snapshots);
    let api = dirs.resolve_api(spec.mount_api)?;
    dir.prepare(spec.strategy, spec.layers.len())?;
    let mount_points = dir.temporary_mount_points(spec.strategy, spec.layers.len());

    let mut rootfs = Rootfs {
        dirs,
        temporary_mounts: Vec::with_capacity(mount_points.len()),
        overlay_mounted: false,
        container: dir,
    };

    let userns = spec.idmap.map(|(fd, _)| fd);
    let sources: Vec<&Path> = match spec.strategy {
        Strategy::PerLayer => spec.layers.iter().map(|layer| layer.fs.as_path()).collect(),
        Strategy::CommonParent => vec![spec.snapshots],
    };
    for (source, target) in sources.into_iter().zip(&mount_points) {
        attach_layer(source, target, userns)?;
        rootfs.temporary_mounts.push(target.clone());
    }

    overlay::mount_overlay(&rootfs.dirs, api)?;
    rootfs.overlay_mounted = true;

    // The overlay keeps private clones of its lower layers, so the temporary mounts can go.
    while let Some(target) = rootfs.temporary_mounts.pop() {
        if let Err(e) = syscalls::umount_when_free(&target) {
            rootfs.temporary_mounts.push(target.clone());
            return Err(ExecutorError::syscall("umount2(layer)", target, e));
        }
    }
    Ok(rootfs)
}

/// Builds, checks and tears down one root filesystem without holding it, as runtimes do to
/// read an image's `/etc/passwd` before the real start.
fn inspect(spec: &BuildSpec<'_>, dir: &mut ContainerDir) -> Result<(), ExecutorError> {
    let rootfs = build_rootfs(spec, dir)?;
    spec.check.verify(
        rootfs.merged(),
        spec.idmap.map(|(_, base)| base),
        spec.round,
    )?;
    rootfs.teardown()
}

/// Starts one container: the inspection pass when asked, then build and check, `hold` for the
/// container's lifetime, and teardown. Returns the build latency: from the start until the
/// checked root filesystem is ready, inspection included, hold and teardown excluded.
pub(crate) fn start_container(
    spec: &BuildSpec<'_>,
    inspection_dir: Option<&mut ContainerDir>,
    dir: &mut ContainerDir,
    hold: impl FnOnce(),
) -> Result<Duration, ExecutorError> {
    let started = Instant::now();
    if let Some(inspection_dir) = inspection_dir {
        inspect(spec, inspection_dir)?;
    }

    let rootfs = build_rootfs(spec, dir)?;
    spec.check.verify(
        rootfs.merged(),
        spec.idmap.map(|(_, base)| base),
        spec.round,
    )?;
    let latency = started.elapsed();

    hold();
    rootfs.teardown()?;
    Ok(latency)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_layer_plain_legacy_is_2n_plus_2() {
        let count =
            syscalls_per_container_start(Strategy::PerLayer, 20, false, OverlayApi::Legacy, false);
        assert_eq!(count, 42);
    }

    #[test]
    fn per_layer_idmap_legacy_is_4n_plus_2() {
        let count =
            syscalls_per_container_start(Strategy::PerLayer, 20, true, OverlayApi::Legacy, false);
        assert_eq!(count, 82);
    }

    #[test]
    fn common_parent_plain_legacy_is_4() {
        let count = syscalls_per_container_start(
            Strategy::CommonParent,
            20,
            false,
            OverlayApi::Legacy,
            false,
        );
        assert_eq!(count, 4);
    }

    #[test]
    fn common_parent_idmap_legacy_is_6() {
        let count = syscalls_per_container_start(
            Strategy::CommonParent,
            20,
            true,
            OverlayApi::Legacy,
            false,
        );
        assert_eq!(count, 6);
    }

    #[test]
    fn fsconfig_adds_n_plus_5() {
        let count = syscalls_per_container_start(
            Strategy::CommonParent,
            20,
            false,
            OverlayApi::Fsconfig,
            false,
        );
        assert_eq!(count, 4 + 25);
    }

    #[test]
    fn inspection_doubles_count() {
        let count =
            syscalls_per_container_start(Strategy::PerLayer, 20, false, OverlayApi::Legacy, true);
        assert_eq!(count, 84);
    }

    #[test]
    fn operations_per_layer_inspection() {
        let count = mount_operations_per_container_start(Strategy::PerLayer, 50, true);
        assert_eq!(count, 2 * (1 + 50 + 50));
    }

    #[test]
    fn operations_common_parent_inspection() {
        let count = mount_operations_per_container_start(Strategy::CommonParent, 50, true);
        assert_eq!(count, 2 * (1 + 1 + 1));
    }

    #[test]
    fn operations_without_inspection() {
        let count = mount_operations_per_container_start(Strategy::PerLayer, 20, false);
        assert_eq!(count, 41);
    }

    #[test]
    fn common_parent_rewrites_lowerdirs() {
        let dir = ContainerDir::new("/s/run/c".into());
        let layers = vec![
            Layer {
                id: "1".into(),
                fs: "/s/snapshots/1/fs".into(),
            },
            Layer {
                id: "2".into(),
                fs: "/s/snapshots/2/fs".into(),
            },
        ];
        let dirs = dir.overlay_dirs(Strategy::CommonParent, &layers, Path::new("/s/snapshots"));
        let expected: Vec<PathBuf> =
            vec!["/s/run/c/lower/2/fs".into(), "/s/run/c/lower/1/fs".into()];
        assert_eq!(dirs.lowers, expected);
    }

    #[test]
    fn per_layer_lowerdirs_top_first() {
        let dir = ContainerDir::new("/r/c".into());
        let layers = vec![
            Layer {
                id: "1".into(),
                fs: "/s/1/fs".into(),
            },
            Layer {
                id: "2".into(),
                fs: "/s/2/fs".into(),
            },
        ];
        let dirs = dir.overlay_dirs(Strategy::PerLayer, &layers, Path::new("/s"));
        let expected: Vec<PathBuf> = vec!["/r/c/lower/001".into(), "/r/c/lower/000".into()];
        assert_eq!(dirs.lowers, expected);
    }
}
