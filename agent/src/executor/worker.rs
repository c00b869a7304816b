//! One builder thread: its own private mount namespace, then container starts in a loop while
//! the settings allow it, each recorded in the shared statistics.

use std::{
    os::fd::AsFd as _,
    sync::Arc,
    time::{Duration, Instant},
};

use mountscope_common::snapshot::ExecutorSettings;

use super::{
    ExecutorError, Shared,
    build::{self, BuildSpec, ContainerDir},
    syscalls,
};

/// Pause after a failed container start, so a persistent failure does not spin a core.
const FAILURE_BACKOFF: Duration = Duration::from_millis(50);

/// Container directory name: builder index, `c` for the container or `i` for its inspection
/// pass, and the builder's start sequence number. The width is fixed so the overlay option
/// string, and with it the `auto` mount API choice, does not change during a run.
pub(crate) fn container_name(builder: u32, kind: char, sequence: u64) -> String {
    format!("{builder:03}{kind}{sequence:016x}")
}

pub(crate) fn run_builder(shared: Arc<Shared>, index: u32) {
    if let Err(source) = syscalls::enter_private_mount_namespace() {
        let error = ExecutorError::syscall("unshare(CLONE_NEWNS)", "/", source);
        shared.record_failure(&error, 0);
        return;
    }
    tracing::debug!(
        builder = index,
        "builder entered its private mount namespace"
    );

    let mut sequence: u64 = 0;
    while let Some(settings) = shared.wait_for_turn(index) {
        if !shared.wait_for_rate_slot() {
            break;
        }
        sequence += 1;

        let syscalls_before = syscalls::thread_syscall_count();
        let result = start_one(&shared, index, sequence, &settings);
        let syscalls_made = syscalls::thread_syscall_count() - syscalls_before;

        match result {
            Ok(latency) => shared.record_build(settings.strategy, latency, syscalls_made),
            Err(error) => {
                shared.record_failure(&error, syscalls_made);
                shared.sleep_until(Instant::now() + FAILURE_BACKOFF);
            }
        }
    }
    tracing::debug!(builder = index, "builder stopped");
}

fn start_one(
    shared: &Shared,
    index: u32,
    sequence: u64,
    settings: &ExecutorSettings,
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
    };
    let dir = ContainerDir {
        root: shared.run_dir.join(container_name(index, 'c', sequence)),
    };
    let inspection_dir = shared.inspection.then(|| ContainerDir {
        root: shared.run_dir.join(container_name(index, 'i', sequence)),
    });

    build::start_container(&spec, inspection_dir.as_ref(), &dir, || {
        shared.sleep_until(Instant::now() + shared.lifetime);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_name_width_is_fixed() {
        assert_eq!(
            container_name(0, 'c', 1).len(),
            container_name(255, 'i', u64::MAX).len()
        );
    }
}
