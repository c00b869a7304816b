//! Makes sure tracefs is mounted, because aya resolves tracepoint ids through it.

use std::{fs, io, path::Path};

use nix::mount::{MsFlags, mount};
use tracing::{debug, info};

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// How tracefs was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TracefsState {
    AlreadyMounted,
    MountedNow,
}

fn is_mounted(dir: &str) -> bool {
    Path::new(dir).join("events").is_dir()
}

/// Mounts tracefs at `/sys/kernel/tracing` when neither it nor debugfs's copy is there.
pub fn ensure_mounted() -> io::Result<TracefsState> {
    if is_mounted(TRACEFS) || is_mounted(DEBUGFS_TRACING) {
        debug!("tracefs is mounted");
        return Ok(TracefsState::AlreadyMounted);
    }
    fs::create_dir_all(TRACEFS).ok();
    mount(
        Some("nodev"),
        TRACEFS,
        Some("tracefs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|errno| {
        io::Error::other(format!(
            "failed to mount tracefs at {TRACEFS}: {errno}; mount it with \
             `mount -t tracefs nodev {TRACEFS}` and run mountscope as root"
        ))
    })?;
    info!("mounted tracefs at {TRACEFS}");
    Ok(TracefsState::MountedNow)
}
