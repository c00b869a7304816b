//! One builder thread: its own private mount namespace and scratch tmpfs, then container
//! starts in a loop while the settings allow it, each recorded in the shared statistics.

use std::{
    os::fd::AsFd as _,
    sync::Arc,
    time::{Duration, Instant},
};

use mountscope_common::snapshot::ExecutorSettings;

use super::{
    ExecutorError, Shared,
    build::{self, BuildSpec, ContainerDir},
    scratch::{ContainerKind, Scratch},
    syscalls,
};

/// Pause after a failed container start, so a persistent failure does not spin a core.
const FAILURE_BACKOFF: Duration = Duration::from_millis(50);

pub(crate) fn run_builder(shared: Arc<Shared>, index: u32) {
    if let Err(source) = syscalls::enter_private_mount_namespace() {
        let error = ExecutorError::syscall("unshare(CLONE_NEWNS)", "/", source);
        shared.record_failure(&error, 0);
        return;
    }
    let scratch = match Scratch::mount(&shared.run_dir, index) {
        Ok(scratch) => scratch,
        Err(error) => {
            shared.record_failure(&error, 0);
            return;
        }
    };
    tracing::debug!(
        builder = index,
        "builder entered its private mount namespace and mounted its scratch tmpfs"
    );

    let mut dir = scratch.container_dir(ContainerKind::Container);
    let mut inspection_dir = shared
        .inspection
        .then(|| scratch.container_dir(ContainerKind::Inspection));
    let mut round: u64 = 0;
    while let Some(settings) = shared.wait_for_turn(index) {
        if !shared.wait_for_rate_slot() {
            break;
        }
        round += 1;

        let syscalls_before = syscalls::thread_syscall_count();
        let result = start_one(&shared, &settings, round, &mut dir, inspection_dir.as_mut());
        let syscalls_made = syscalls::thread_syscall_count() - syscalls_before;

        match result {
            Ok(latency) => shared.record_build(settings.strategy, latency, syscalls_made),
            Err(error) => {
                shared.record_failure(&error, syscalls_made);
                shared.sleep_until(Instant::now() + FAILURE_BACKOFF);
            }
        }
    }
    drop(scratch);
    tracing::debug!(builder = index, "builder stopped");
}

fn start_one(
    shared: &Shared,
    settings: &ExecutorSettings,
    round: u64,
    dir: &mut ContainerDir,
    inspection_dir: Option<&mut ContainerDir>,
) -> Result<Duration, ExecutorError> {
    let stack = shared.store.stack(settings.layers)?;
    let userns = if settings.idmap {
        Some(shared.userns()?)
    } else {
        None
    };

    let spec = BuildSpec {
        strategy: settings.strategy,
        mount_api: settings.mount_api,
        layers: &stack.layers,
        snapshots: shared.store.snapshots(),
        idmap: userns.as_ref().map(|fd| (fd.as_fd(), shared.idmap_base)),
        check: &stack.check,
        round,
    };
    build::start_container(&spec, inspection_dir, dir, || {
        shared.sleep_until(Instant::now() + shared.lifetime);
    })
}
