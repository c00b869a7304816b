//! One builder thread: its own private mount namespace and scratch tmpfs, then container
//! starts in a loop while the settings allow it, each recorded in the shared statistics.

use std::{
    os::fd::{AsFd as _, BorrowedFd, OwnedFd},
    sync::Arc,
    time::{Duration, Instant},
};

use mountscope_common::snapshot::ExecutorSettings;

use super::{
    ExecutorError, Shared,
    build::{self, BuildSpec, ContainerDir},
    scratch::{ContainerKind, Scratch},
    syscalls,
    userns::{container_idmap_base, create_idmap_userns},
};

/// Pause after a failed container start, so a persistent failure does not spin a core.
const FAILURE_BACKOFF: Duration = Duration::from_millis(50);

pub(crate) fn run_builder(shared: Arc<Shared>, index: u32) {
    syscalls::count_busy_retries_in(Arc::clone(&shared.unmount_busy_retries));
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
        let result = start_one(
            &shared,
            &settings,
            index,
            round,
            &mut dir,
            inspection_dir.as_mut(),
        );
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

/// The user namespace of one container start's idmapped layers and the host id that id 0
/// maps to.
enum StartUserns {
    Shared(Arc<OwnedFd>, u32),
    Own(OwnedFd, u32),
}

impl StartUserns {
    fn idmap(&self) -> (BorrowedFd<'_>, u32) {
        match self {
            StartUserns::Shared(fd, base) => (fd.as_fd(), *base),
            StartUserns::Own(fd, base) => (fd.as_fd(), *base),
        }
    }
}

/// Returns the user namespace for a start with idmap on: the executor's shared one, or a new
/// one for this container whose creation time is recorded and returned.
fn start_userns(
    shared: &Shared,
    index: u32,
    round: u64,
) -> Result<(StartUserns, Duration), ExecutorError> {
    if !shared.per_container_userns {
        return Ok((
            StartUserns::Shared(shared.userns()?, shared.idmap_base),
            Duration::ZERO,
        ));
    }
    let base = container_idmap_base(index, round);
    let started = Instant::now();
    let fd = create_idmap_userns(base)?;
    let elapsed = started.elapsed();
    shared.record_userns_created(elapsed);
    Ok((StartUserns::Own(fd, base), elapsed))
}

/// Makes one container start and returns its latency, from the start of user namespace
/// creation (when the start has its own) until the checked root filesystem is ready.
fn start_one(
    shared: &Shared,
    settings: &ExecutorSettings,
    index: u32,
    round: u64,
    dir: &mut ContainerDir,
    inspection_dir: Option<&mut ContainerDir>,
) -> Result<Duration, ExecutorError> {
    let stack = shared.store.stack(settings.layers)?;
    let (userns, userns_latency) = if settings.idmap {
        let (userns, latency) = start_userns(shared, index, round)?;
        (Some(userns), latency)
    } else {
        (None, Duration::ZERO)
    };

    let spec = BuildSpec {
        strategy: settings.strategy,
        mount_api: settings.mount_api,
        layers: &stack.layers,
        snapshots: shared.store.snapshots(),
        idmap: userns.as_ref().map(StartUserns::idmap),
        check: &stack.check,
        round,
    };
    let build_latency = build::start_container(&spec, inspection_dir, dir, || {
        shared.sleep_until(Instant::now() + shared.lifetime);
    })?;
    Ok(userns_latency + build_latency)
}
