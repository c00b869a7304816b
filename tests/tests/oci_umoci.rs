//! Privileged test of the executor on a real OCI image layout made by umoci at test time: 32
//! layers, each adding a marker and overriding one file, with some files deleted so that umoci
//! writes `.wh.` whiteouts. Both strategies must build, check and tear down the image's
//! overlay without a failure and without leaving a mount behind.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use mountscope_agent::executor::{Executor, ExecutorConfig};
use mountscope_common::snapshot::{MountApi, Strategy};

/// Layers in the image; more than 30, as the image stores of real runtimes often hold.
const LAYERS: u32 = 32;
/// Layers whose repack deletes the marker of an earlier layer.
const DELETING_LAYERS: [u32; 3] = [5, 17, 30];

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid takes no arguments and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root to mount overlays".into());
    }
    let umoci = Command::new("umoci").arg("--version").output();
    if !umoci.is_ok_and(|o| o.status.success()) {
        return Some("umoci is not installed; run `cargo xtask setup`".into());
    }
    None
}

fn umoci(dir: &Path, args: &[&str]) {
    let output = Command::new("umoci")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("failed to start umoci");
    assert!(
        output.status.success(),
        "umoci {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Scratch directory removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Builds the image layout `<dir>/img` with `LAYERS` layers and returns its path.
fn build_image(dir: &Path) -> PathBuf {
    umoci(dir, &["init", "--layout", "img"]);
    umoci(dir, &["new", "--image", "img:latest"]);
    umoci(dir, &["unpack", "--image", "img:latest", "bundle"]);
    let rootfs = dir.join("bundle/rootfs");
    fs::create_dir_all(rootfs.join("layers")).unwrap();
    fs::create_dir_all(rootfs.join("etc")).unwrap();
    for layer in 1..=LAYERS {
        fs::write(
            rootfs.join(format!("layers/marker-{layer}")),
            format!("{layer}\n"),
        )
        .unwrap();
        fs::write(rootfs.join("etc/top"), format!("{layer}\n")).unwrap();
        if DELETING_LAYERS.contains(&layer) {
            fs::remove_file(rootfs.join(format!("layers/marker-{}", layer - 3))).unwrap();
        }
        umoci(
            dir,
            &[
                "repack",
                "--refresh-bundle",
                "--image",
                "img:latest",
                "bundle",
            ],
        );
    }
    dir.join("img")
}

fn whiteouts_in_layout(image: &Path) -> usize {
    let mut count = 0;
    for blob in fs::read_dir(image.join("blobs/sha256")).unwrap() {
        let path = blob.unwrap().path();
        let listing = Command::new("tar").arg("tzf").arg(&path).output().unwrap();
        if listing.status.success() {
            count += String::from_utf8_lossy(&listing.stdout)
                .lines()
                .filter(|l| l.contains(".wh."))
                .count();
        }
    }
    count
}

fn mountinfo_lines() -> usize {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count()
}

fn run_strategy(image: &Path, store: &Path, strategy: Strategy) {
    let mounts_before = mountinfo_lines();
    let mut config = ExecutorConfig::new(store);
    config.image = Some(image.to_path_buf());
    config.settings.strategy = strategy;
    config.settings.builders = 2;
    config.settings.mount_api = MountApi::Auto;
    let executor = Executor::start(config).expect("executor starts on the umoci image");
    let control = executor.control();
    let per_build = control.expected_syscalls_per_build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while executor.stats().builds_total + executor.stats().failures_total < 4
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    control.set_paused(true);
    executor.stop();
    let stats = executor.stats();

    assert_eq!(stats.settings.layers, LAYERS, "{strategy:?}: layer count");
    assert_eq!(stats.last_error, None, "{strategy:?}: a build failed");
    assert_eq!(stats.failures_total, 0, "{strategy:?}: failed builds");
    assert!(
        stats.builds_total >= 4,
        "{strategy:?}: {} builds",
        stats.builds_total
    );
    assert_eq!(
        stats.mount_syscalls_total,
        stats.builds_total * per_build,
        "{strategy:?}: mount syscalls per build differ from {per_build}"
    );
    assert_eq!(
        mountinfo_lines(),
        mounts_before,
        "{strategy:?}: host mounts changed"
    );
}

#[test]
fn umoci_image_builds_in_both_strategies() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let scratch = Scratch(PathBuf::from(format!(
        "/tmp/mountscope-umoci-{}",
        std::process::id()
    )));
    let _ = fs::remove_dir_all(&scratch.0);
    fs::create_dir_all(&scratch.0).unwrap();
    let image = build_image(&scratch.0);
    assert!(
        whiteouts_in_layout(&image) >= DELETING_LAYERS.len(),
        "umoci wrote fewer whiteouts than files deleted"
    );

    let store = scratch.0.join("store");
    run_strategy(&image, &store, Strategy::PerLayer);
    run_strategy(&image, &store, Strategy::CommonParent);
}
