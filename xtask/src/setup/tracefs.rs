//! tracefs, which aya reads to resolve tracepoint ids. Some kernels boot without it mounted.

use std::{fs, process::Command};

use anyhow::{Context as _, Result};

use crate::{command, privilege};

pub const MOUNT_POINT: &str = "/sys/kernel/tracing";

/// Mounts tracefs at [`MOUNT_POINT`] unless it is mounted there. When not root, prints a note
/// and carries on.
pub fn ensure_mounted() -> Result<()> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .context("failed to read /proc/self/mountinfo")?;
    if is_mounted(&mountinfo) {
        eprintln!("    already mounted");
        return Ok(());
    }
    if !privilege::is_root() {
        eprintln!(
            "    note: not mounted, and mounting needs root; skipped. Run `sudo mount -t tracefs \
             nodev {MOUNT_POINT}` before loading the eBPF programs"
        );
        return Ok(());
    }

    command::run(
        Command::new("mount")
            .args(["-t", "tracefs", "nodev"])
            .arg(MOUNT_POINT),
    )
    .context("failed to mount tracefs; check that the kernel has CONFIG_TRACING and that /sys is writable")
}

/// Returns whether a `/proc/self/mountinfo` line shows tracefs at [`MOUNT_POINT`].
///
/// Field 5 is the mount point and the first field after the ` - ` separator is the file system
/// type (proc(5)).
fn is_mounted(mountinfo: &str) -> bool {
    mountinfo.lines().any(|line| {
        let Some((mount, filesystem)) = line.split_once(" - ") else {
            return false;
        };
        mount.split(' ').nth(4) == Some(MOUNT_POINT)
            && filesystem.split(' ').next() == Some("tracefs")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_with_tracefs() {
        let mountinfo = "22 27 0:21 / /sys rw,nosuid - sysfs sysfs rw\n\
                         35 22 0:12 / /sys/kernel/tracing rw,relatime shared:18 - tracefs nodev rw\n";
        assert!(is_mounted(mountinfo));
    }

    #[test]
    fn mountinfo_without_tracefs() {
        let other_type = "35 22 0:12 / /sys/kernel/tracing rw - debugfs nodev rw\n";
        let other_place = "35 22 0:12 / /tmp/tracing rw - tracefs nodev rw\n";
        assert!(!is_mounted(other_type));
        assert!(!is_mounted(other_place));
        assert!(!is_mounted(""));
    }
}
