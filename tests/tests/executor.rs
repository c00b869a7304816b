//! Privileged tests of the overlay executor: real overlays over real layers, built by builder
//! threads in their own mount namespaces. Each test uses its own store under /tmp and checks
//! that the test process's mount table is unchanged afterwards. They need root and skip with a
//! message otherwise.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use mountscope_agent::executor::{
    DEFAULT_IDMAP_BASE, Executor, ExecutorConfig, ExecutorError, ExecutorStats, IDMAP_RANGE,
    OverlayApi,
};
use mountscope_common::snapshot::{MountApi, Strategy};

/// Container starts each test waits for.
const TARGET_BUILDS: u64 = 6;
const BUILD_TIMEOUT: Duration = Duration::from_secs(60);
/// Container starts the spawn test waits for. Without the retry of busy unmounts, 28 of 1000
/// failed on a 2-core machine.
const SPAWN_TEST_BUILDS: u64 = 1000;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: the executor tests need root to mount overlays");
    }
    root
}

fn mountinfo_lines() -> usize {
    fs::read_to_string("/proc/self/mountinfo")
        .expect("failed to read /proc/self/mountinfo")
        .lines()
        .count()
}

fn mountinfo_mentions(path: &Path) -> bool {
    let text = fs::read_to_string("/proc/self/mountinfo").expect("failed to read mountinfo");
    text.contains(path.to_str().expect("store path is UTF-8"))
}

/// A store directory that is removed when dropped.
struct TempStore(PathBuf);

impl TempStore {
    fn new(name: &str) -> TempStore {
        let path = PathBuf::from(format!(
            "/tmp/mountscope-executor-{name}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&path);
        TempStore(path)
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn config(
    store: &TempStore,
    strategy: Strategy,
    idmap: bool,
    mount_api: MountApi,
) -> ExecutorConfig {
    let mut config = ExecutorConfig::new(&store.0);
    config.settings.strategy = strategy;
    config.settings.idmap = idmap;
    config.settings.mount_api = mount_api;
    config.settings.layers = 20;
    config.settings.builders = 2;
    config.files_per_layer = 4;
    config
}

/// Starts an executor, waits for `TARGET_BUILDS` builds and stops it. Returns the stopped
/// executor, its expected mount syscalls per build and its final figures.
fn run_to_target(config: ExecutorConfig) -> (Executor, u64, ExecutorStats) {
    let executor = Executor::start(config).expect("executor starts");
    let expected = executor
        .control()
        .expected_syscalls_per_build()
        .expect("count resolves");
    wait_for_builds(&executor, TARGET_BUILDS);
    executor.stop();
    let stats = executor.stats();
    (executor, expected, stats)
}

fn wait_for_builds(executor: &Executor, target: u64) -> ExecutorStats {
    let deadline = Instant::now() + BUILD_TIMEOUT;
    loop {
        let stats = executor.stats();
        if stats.builds_total + stats.failures_total >= target || Instant::now() > deadline {
            return stats;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs an executor until it made `TARGET_BUILDS` starts, then checks the figures of one case.
fn check_builds(
    name: &str,
    strategy: Strategy,
    idmap: bool,
    mount_api: MountApi,
    expected_api: OverlayApi,
) {
    if !is_root() {
        return;
    }
    let store = TempStore::new(name);
    let mounts_before = mountinfo_lines();

    let executor =
        Executor::start(config(&store, strategy, idmap, mount_api)).expect("executor starts");
    let control = executor.control();
    let api = control.overlay_api().expect("overlay API resolves");
    let expected_per_build = control
        .expected_syscalls_per_build()
        .expect("syscall count resolves");
    wait_for_builds(&executor, TARGET_BUILDS);
    control.set_paused(true);
    executor.stop();
    let stats = executor.stats();

    assert_eq!(stats.last_error, None, "{name}: a build failed");
    assert_eq!(stats.failures_total, 0, "{name}: failed builds");
    assert!(
        stats.builds_total >= TARGET_BUILDS,
        "{name}: only {} builds",
        stats.builds_total
    );
    assert_eq!(api, expected_api, "{name}: overlay API");
    assert_eq!(
        stats.mount_syscalls_total,
        stats.builds_total * expected_per_build + stats.unmount_busy_retries,
        "{name}: mount syscalls differ from {expected_per_build} per build"
    );
    assert_eq!(
        control.take_build_latencies().len() as u64,
        stats.builds_total,
        "{name}: latencies"
    );
    assert_eq!(
        mountinfo_lines(),
        mounts_before,
        "{name}: host mount table changed"
    );
    assert!(
        !mountinfo_mentions(&store.0),
        "{name}: a store path is mounted in the host namespace"
    );
}

#[test]
fn per_layer_bind_legacy() {
    check_builds(
        "a-bind-legacy",
        Strategy::PerLayer,
        false,
        MountApi::Legacy,
        OverlayApi::Legacy,
    );
}

#[test]
fn common_parent_bind_legacy() {
    check_builds(
        "b-bind-legacy",
        Strategy::CommonParent,
        false,
        MountApi::Legacy,
        OverlayApi::Legacy,
    );
}

#[test]
fn per_layer_idmap_legacy() {
    check_builds(
        "a-idmap-legacy",
        Strategy::PerLayer,
        true,
        MountApi::Legacy,
        OverlayApi::Legacy,
    );
}

#[test]
fn common_parent_idmap_legacy() {
    check_builds(
        "b-idmap-legacy",
        Strategy::CommonParent,
        true,
        MountApi::Legacy,
        OverlayApi::Legacy,
    );
}

#[test]
fn per_layer_bind_fsconfig() {
    check_builds(
        "a-bind-fsconfig",
        Strategy::PerLayer,
        false,
        MountApi::Fsconfig,
        OverlayApi::Fsconfig,
    );
}

#[test]
fn common_parent_idmap_fsconfig() {
    check_builds(
        "b-idmap-fsconfig",
        Strategy::CommonParent,
        true,
        MountApi::Fsconfig,
        OverlayApi::Fsconfig,
    );
}

#[test]
fn per_layer_idmap_fsconfig() {
    check_builds(
        "a-idmap-fsconfig",
        Strategy::PerLayer,
        true,
        MountApi::Fsconfig,
        OverlayApi::Fsconfig,
    );
}

#[test]
fn auto_uses_fsconfig_for_long_options() {
    if !is_root() {
        return;
    }
    let store = TempStore::new("auto-long");
    let mounts_before = mountinfo_lines();
    let mut config = config(&store, Strategy::PerLayer, false, MountApi::Auto);
    config.settings.layers = 120;
    config.files_per_layer = 1;

    let executor = Executor::start(config).expect("executor starts");
    let control = executor.control();
    let api = control.overlay_api().expect("overlay API resolves");
    wait_for_builds(&executor, 3);
    executor.stop();
    let stats = executor.stats();

    assert_eq!(api, OverlayApi::Fsconfig);
    assert_eq!(stats.last_error, None);
    assert!(
        stats.builds_total >= 3,
        "only {} builds",
        stats.builds_total
    );
    assert_eq!(mountinfo_lines(), mounts_before);
}

#[test]
fn legacy_rejects_long_options() {
    if !is_root() {
        return;
    }
    let store = TempStore::new("legacy-long");
    let mut config = config(&store, Strategy::PerLayer, false, MountApi::Legacy);
    config.settings.layers = 120;
    config.settings.builders = 1;
    config.files_per_layer = 1;

    let executor = Executor::start(config).expect("executor starts");
    let stats = wait_for_builds(&executor, 1);
    executor.stop();

    assert_eq!(stats.builds_total, 0);
    let error = stats.last_error.expect("the build failed");
    assert!(
        error.contains("4095-byte limit"),
        "unexpected error: {error}"
    );
    assert!(error.contains("fsconfig"), "error names no fix: {error}");
}

#[test]
fn inspection_doubles_syscalls() {
    if !is_root() {
        return;
    }
    let store = TempStore::new("inspection");
    let mut config = config(&store, Strategy::CommonParent, false, MountApi::Legacy);
    config.inspection = true;

    let (_executor, expected, stats) = run_to_target(config);

    assert_eq!(expected, 8);
    assert_eq!(stats.failures_total, 0, "{:?}", stats.last_error);
    assert_eq!(
        stats.mount_syscalls_total,
        stats.builds_total * 8 + stats.unmount_busy_retries
    );
}

/// Returns the ids of this process's builder threads (`overlay-builder-N`, which the kernel
/// cuts to the 15 bytes of `overlay-builder`).
fn builder_thread_ids() -> Vec<u32> {
    let mut ids = Vec::new();
    for task in fs::read_dir("/proc/self/task").expect("failed to list /proc/self/task") {
        let task = task.expect("failed to read a task entry");
        let comm = fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == "overlay-builder"
            && let Some(id) = task.file_name().to_str().and_then(|n| n.parse().ok())
        {
            ids.push(id);
        }
    }
    ids
}

/// Returns the mount point of the first overlay in thread `tid`'s mount namespace.
fn thread_overlay_mount_point(tid: u32) -> Option<PathBuf> {
    let text = fs::read_to_string(format!("/proc/self/task/{tid}/mountinfo")).ok()?;
    text.lines().find_map(|line| {
        let (fields, filesystem) = line.split_once(" - ")?;
        if !filesystem.starts_with("overlay ") {
            return None;
        }
        fields.split(' ').nth(4).map(PathBuf::from)
    })
}

/// Stats `relative` in the merged view of the overlay that thread `tid` has mounted, through
/// the thread's root directory, which resolves paths in the thread's own mount namespace.
fn merged_owner(tid: u32, relative: &str) -> Option<(PathBuf, u32)> {
    use std::os::unix::fs::MetadataExt as _;

    let merged = thread_overlay_mount_point(tid)?;
    let path = PathBuf::from(format!("/proc/self/task/{tid}/root"))
        .join(merged.strip_prefix("/").ok()?)
        .join(relative);
    let metadata = fs::metadata(&path).ok()?;
    Some((merged, metadata.uid()))
}

#[test]
fn per_container_userns_records_creation() {
    if !is_root() {
        return;
    }
    let store = TempStore::new("userns-stats");
    let mounts_before = mountinfo_lines();
    let mut config = config(&store, Strategy::PerLayer, true, MountApi::Legacy);
    config.per_container_userns = true;
    config.inspection = true;

    let (executor, expected, stats) = run_to_target(config);
    let userns_latencies = executor.control().take_userns_latencies();

    assert_eq!(stats.failures_total, 0, "{:?}", stats.last_error);
    assert!(
        stats.builds_total >= TARGET_BUILDS,
        "{} builds",
        stats.builds_total
    );
    // A builder stopped between creating its namespace and finishing the start still counts
    // the namespace, so there can be more namespaces than starts but never fewer.
    assert!(
        stats.userns_created >= stats.builds_total,
        "{} namespaces for {} starts",
        stats.userns_created,
        stats.builds_total
    );
    assert_eq!(userns_latencies.len() as u64, stats.userns_created);
    assert!(stats.userns_create_total > Duration::ZERO);
    assert_eq!(
        stats.mount_syscalls_total,
        stats.builds_total * expected + stats.unmount_busy_retries
    );
    assert_eq!(mountinfo_lines(), mounts_before, "host mount table changed");
}

#[test]
fn per_container_userns_distinct_host_ids() {
    if !is_root() {
        return;
    }
    let store = TempStore::new("userns-distinct");
    let mounts_before = mountinfo_lines();
    let mut config = config(&store, Strategy::PerLayer, true, MountApi::Legacy);
    config.per_container_userns = true;
    config.settings.layers = 4;
    // Long enough that both containers stay mounted while the test looks at them.
    config.lifetime = Duration::from_secs(5);

    let executor = Executor::start(config).expect("executor starts");
    let deadline = Instant::now() + BUILD_TIMEOUT;
    // `data/1/file-1` is owned by uid 0 in the bottom layer (layer 1) and overridden by no
    // layer.
    let owners = loop {
        let owners: Vec<(PathBuf, u32)> = builder_thread_ids()
            .into_iter()
            .filter_map(|tid| merged_owner(tid, "data/1/file-1"))
            // Tests run in parallel in this process, so keep only this store's builders.
            .filter(|(merged, _)| merged.starts_with(&store.0))
            .collect();
        if owners.len() == 2 || Instant::now() > deadline {
            break owners;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    executor.stop();
    let stats = executor.stats();

    assert_eq!(owners.len(), 2, "both builders' merged views: {owners:?}");
    assert_ne!(owners[0].0, owners[1].0, "merged mount points");
    assert_ne!(
        owners[0].1, owners[1].1,
        "host uids of the same file: {owners:?}"
    );
    for (merged, uid) in &owners {
        let offset = uid.checked_sub(DEFAULT_IDMAP_BASE);
        assert!(
            offset.is_some_and(|o| o % IDMAP_RANGE == 0),
            "uid {uid} at {} is not the start of a container range",
            merged.display()
        );
    }
    assert_eq!(stats.failures_total, 0, "{:?}", stats.last_error);
    assert_eq!(mountinfo_lines(), mounts_before, "host mount table changed");
}

#[test]
fn control_switches_strategy_and_layers() {
    if !is_root() {
        return;
    }
    let store = TempStore::new("switch");
    let executor =
        Executor::start(config(&store, Strategy::PerLayer, false, MountApi::Auto)).expect("starts");
    let control = executor.control();
    wait_for_builds(&executor, 3);

    control.set_strategy(Strategy::CommonParent);
    control.set_layers(25).expect("layers grow to 25");
    control.set_builders(3).expect("builders grow to 3");
    let before = executor.stats();
    wait_for_builds(&executor, before.builds_total + 6);
    executor.stop();
    let stats = executor.stats();

    assert!(stats.builds_by_strategy.per_layer >= 3);
    assert!(stats.builds_by_strategy.common_parent >= 1);
    assert_eq!(stats.settings.layers, 25);
    assert_eq!(stats.failures_total, 0, "{:?}", stats.last_error);
    assert!(store.0.join("snapshots/25/complete").exists());
}

#[test]
fn check_catches_wrong_top_layer() {
    if !is_root() {
        return;
    }
    let store = TempStore::new("corrupt");
    let mounts_before = mountinfo_lines();
    let mut config = config(&store, Strategy::CommonParent, false, MountApi::Legacy);
    config.settings.paused = true;
    let executor = Executor::start(config).expect("executor starts");
    let control = executor.control();
    // Computes and caches the expected view before the top layer changes under it.
    control.overlay_api().expect("overlay API resolves");
    fs::write(
        store.0.join("snapshots/20/fs/etc/mountscope/top"),
        "layer 02\n",
    )
    .expect("rewrite");

    control.set_paused(false);
    let stats = wait_for_builds(&executor, 1);
    executor.stop();

    assert_eq!(stats.builds_total, 0);
    let error = stats.last_error.expect("the build failed");
    assert!(error.contains("merged view"), "unexpected error: {error}");
    assert!(
        error.contains("etc/mountscope/top"),
        "error names no path: {error}"
    );
    assert_eq!(mountinfo_lines(), mounts_before);
}

fn start_error(config: ExecutorConfig) -> ExecutorError {
    match Executor::start(config) {
        Ok(executor) => {
            executor.stop();
            panic!("the executor started");
        }
        Err(error) => error,
    }
}

#[test]
fn zero_layers_rejected() {
    if !is_root() {
        return;
    }
    let store = TempStore::new("zero-layers");
    let mut config = config(&store, Strategy::PerLayer, false, MountApi::Auto);
    config.settings.layers = 0;
    let message = start_error(config).to_string();
    assert!(message.contains("layer count 0"), "{message}");
    assert!(message.contains("1 to 500"), "{message}");
}

#[test]
fn too_many_layers_rejected() {
    if !is_root() {
        return;
    }
    let store = TempStore::new("many-layers");
    let mut config = config(&store, Strategy::PerLayer, false, MountApi::Auto);
    config.settings.layers = 501;
    let message = start_error(config).to_string();
    assert!(message.contains("layer count 501"), "{message}");
}

#[test]
fn zero_builders_rejected() {
    if !is_root() {
        return;
    }
    let store = TempStore::new("zero-builders");
    let mut config = config(&store, Strategy::PerLayer, false, MountApi::Auto);
    config.settings.builders = 0;
    let message = start_error(config).to_string();
    assert!(message.contains("builder count 0"), "{message}");
}

#[test]
fn store_file_rejected() {
    if !is_root() {
        return;
    }
    let store = TempStore::new("store-file");
    fs::write(&store.0, "not a directory").expect("write file");
    let config = config(&store, Strategy::PerLayer, false, MountApi::Auto);
    let message = start_error(config).to_string();
    assert!(message.contains(store.0.to_str().unwrap()), "{message}");
    assert!(message.contains("not a directory"), "{message}");
    let _ = fs::remove_file(&store.0);
}

#[test]
fn set_layers_rejects_zero() {
    if !is_root() {
        return;
    }
    let store = TempStore::new("set-zero");
    let mut config = config(&store, Strategy::PerLayer, false, MountApi::Auto);
    config.settings.paused = true;
    let executor = Executor::start(config).expect("executor starts");
    let error = executor.control().set_layers(0).unwrap_err();
    executor.stop();
    assert!(
        matches!(error, ExecutorError::LayerCount { layers: 0 }),
        "{error}"
    );
}

/// Environment variable that turns `executor_child_process` into the child of
/// `killed_child_leaves_no_mounts`; its value is the store path.
const CHILD_STORE_VAR: &str = "MOUNTSCOPE_EXECUTOR_CHILD_STORE";
const CHILD_READY: &str = "mountscope-executor-child-ready";

#[test]
#[ignore = "runs only as the child process of killed_child_leaves_no_mounts"]
fn executor_child_process() {
    let Some(store) = std::env::var_os(CHILD_STORE_VAR) else {
        return;
    };
    let mut config = ExecutorConfig::new(PathBuf::from(store));
    config.settings.layers = 10;
    config.settings.builders = 2;
    config.files_per_layer = 2;
    config.lifetime = Duration::from_millis(200);
    let executor = Executor::start(config).expect("executor starts");
    wait_for_builds(&executor, 1);
    println!("{CHILD_READY}");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn child_overlay_mounts(pid: u32, store: &Path) -> usize {
    let mut count = 0;
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    for task in tasks.flatten() {
        let Ok(text) = fs::read_to_string(task.path().join("mountinfo")) else {
            continue;
        };
        count += text
            .lines()
            .filter(|line| line.contains(" - overlay ") && line.contains(store.to_str().unwrap()))
            .count();
    }
    count
}

#[test]
fn killed_child_leaves_no_mounts() {
    if !is_root() {
        return;
    }
    let store = TempStore::new("killed-child");
    let mounts_before = mountinfo_lines();
    let mut child = Command::new(std::env::current_exe().expect("test binary path"))
        .args([
            "--exact",
            "executor_child_process",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_STORE_VAR, &store.0)
        .stdout(Stdio::piped())
        .spawn()
        .expect("child starts");
    let pid = child.id();

    let stdout = child.stdout.take().expect("child stdout");
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.trim() == CHILD_READY);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut held = 0;
    while held == 0 && Instant::now() < deadline {
        held = child_overlay_mounts(pid, &store.0);
    }

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("child killed");
    let status = child.wait().expect("child reaped");

    assert!(ready, "the child never reported a build");
    assert!(
        held > 0,
        "the child held no overlay in its builder namespaces"
    );
    assert!(!status.success(), "the child exited on its own");
    assert_eq!(mountinfo_lines(), mounts_before, "host mount table changed");
    assert!(
        !mountinfo_mentions(&store.0),
        "a store path is mounted in the host namespace"
    );
}

/// One entry of a test layer: a file with content, or an OCI whiteout name with no content.
enum TarEntry<'a> {
    File(&'a str, &'a str),
    Marker(&'a str),
}

fn layer_tar(entries: &[TarEntry<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let (path, content) = match entry {
            TarEntry::File(path, content) => (*path, *content),
            TarEntry::Marker(path) => (*path, ""),
        };
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, path, content.as_bytes())
            .expect("append tar entry");
    }
    builder.into_inner().expect("finish tar")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip finish")
}

fn write_blob(image: &Path, bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let hex: String = sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = image.join("blobs/sha256");
    fs::create_dir_all(&dir).expect("create blobs dir");
    fs::write(dir.join(&hex), bytes).expect("write blob");
    format!("sha256:{hex}")
}

/// Writes an OCI image layout of two layers: the bottom one plain tar, the top one gzip, with a
/// whiteout and an opaque directory. Returns the layer digests, bottom first.
fn write_test_image(image: &Path) -> Vec<String> {
    let bottom = layer_tar(&[
        TarEntry::File("etc/passwd", "root:x:0:0:bottom\n"),
        TarEntry::File("etc/shadow", "root:*:bottom\n"),
        TarEntry::File("app/old", "old\n"),
        TarEntry::File("keep", "kept\n"),
    ]);
    let top = gzip(&layer_tar(&[
        TarEntry::File("etc/passwd", "root:x:0:0:top\n"),
        TarEntry::Marker("etc/.wh.shadow"),
        TarEntry::Marker("app/.wh..wh..opq"),
        TarEntry::File("app/new", "new\n"),
    ]));
    let bottom_digest = write_blob(image, &bottom);
    let top_digest = write_blob(image, &top);

    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": bottom_digest, "size": 0},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": bottom_digest, "size": bottom.len()},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": top_digest, "size": top.len()},
        ],
    });
    let manifest_bytes = serde_json::to_vec(&manifest).expect("manifest JSON");
    let manifest_digest = write_blob(image, &manifest_bytes);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_bytes.len(),
        }],
    });
    fs::write(
        image.join("index.json"),
        serde_json::to_vec(&index).expect("index JSON"),
    )
    .expect("write index");
    fs::write(
        image.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("write oci-layout");
    vec![bottom_digest, top_digest]
}

fn snapshot_fs(store: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    store.join(format!("snapshots/oci-{}/fs", &hex[..16]))
}

fn check_image_builds(name: &str, strategy: Strategy, idmap: bool) {
    if !is_root() {
        return;
    }
    let store = TempStore::new(name);
    let image = TempStore::new(&format!("{name}-image"));
    write_test_image(&image.0);
    let mounts_before = mountinfo_lines();
    let mut config = config(&store, strategy, idmap, MountApi::Auto);
    config.image = Some(image.0.clone());

    let executor = Executor::start(config).expect("executor starts");
    wait_for_builds(&executor, TARGET_BUILDS);
    executor.stop();
    let stats = executor.stats();

    assert_eq!(
        stats.settings.layers, 2,
        "{name}: layers come from the image"
    );
    assert_eq!(stats.last_error, None, "{name}: a build failed");
    assert!(
        stats.builds_total >= TARGET_BUILDS,
        "{name}: only {} builds",
        stats.builds_total
    );
    assert_eq!(
        mountinfo_lines(),
        mounts_before,
        "{name}: host mount table changed"
    );
}

#[test]
fn image_per_layer_builds() {
    check_image_builds("image-a", Strategy::PerLayer, false);
}

#[test]
fn image_common_parent_idmap_builds() {
    check_image_builds("image-b-idmap", Strategy::CommonParent, true);
}

#[test]
fn image_whiteouts_become_overlay_whiteouts() {
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};

    if !is_root() {
        return;
    }
    let store = TempStore::new("image-whiteouts");
    let image = TempStore::new("image-whiteouts-image");
    let digests = write_test_image(&image.0);
    let mut config = config(&store, Strategy::PerLayer, false, MountApi::Auto);
    config.image = Some(image.0.clone());
    config.settings.paused = true;
    let executor = Executor::start(config).expect("executor starts");
    executor.stop();

    let top = snapshot_fs(&store.0, &digests[1]);
    let shadow = fs::symlink_metadata(top.join("etc/shadow")).expect("whiteout exists");
    assert!(
        shadow.file_type().is_char_device(),
        "etc/shadow is no character device"
    );
    assert_eq!(shadow.rdev(), 0, "whiteout device number");
    assert!(
        !top.join("etc/.wh.shadow").exists(),
        "OCI whiteout name left in the layer"
    );
    assert!(
        !top.join("app/.wh..wh..opq").exists(),
        "OCI opaque marker left in the layer"
    );

    let mut value = [0u8; 2];
    let app = std::ffi::CString::new(top.join("app").to_str().unwrap()).unwrap();
    // SAFETY: the path and name are NUL-terminated; `value` is valid for its length.
    let len = unsafe {
        libc::lgetxattr(
            app.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    assert_eq!(len, 1, "app/ has no opaque xattr");
    assert_eq!(value[0], b'y');
}

#[test]
fn image_corrupt_blob_rejected() {
    if !is_root() {
        return;
    }
    let store = TempStore::new("image-corrupt");
    let image = TempStore::new("image-corrupt-image");
    let digests = write_test_image(&image.0);
    let blob = image
        .0
        .join("blobs/sha256")
        .join(digests[0].strip_prefix("sha256:").unwrap());
    let mut bytes = fs::read(&blob).expect("read blob");
    bytes[0] ^= 0xff;
    fs::write(&blob, bytes).expect("corrupt blob");
    let mut config = config(&store, Strategy::PerLayer, false, MountApi::Auto);
    config.image = Some(image.0.clone());

    let error = start_error(config);
    let message = error.to_string();
    assert!(
        matches!(error, ExecutorError::DigestMismatch { .. }),
        "{message}"
    );
    assert!(message.contains(&digests[0]), "{message}");
    assert!(message.contains("export the image again"), "{message}");
}

#[test]
fn image_missing_blob_rejected() {
    if !is_root() {
        return;
    }
    let store = TempStore::new("image-missing");
    let image = TempStore::new("image-missing-image");
    let digests = write_test_image(&image.0);
    fs::remove_file(
        image
            .0
            .join("blobs/sha256")
            .join(digests[1].strip_prefix("sha256:").unwrap()),
    )
    .expect("remove blob");
    let mut config = config(&store, Strategy::PerLayer, false, MountApi::Auto);
    config.image = Some(image.0.clone());

    let error = start_error(config);
    let message = error.to_string();
    assert!(
        matches!(error, ExecutorError::BlobMissing { .. }),
        "{message}"
    );
    assert!(message.contains(&digests[1]), "{message}");
}

#[test]
fn image_fixes_layer_count() {
    if !is_root() {
        return;
    }
    let store = TempStore::new("image-fixed");
    let image = TempStore::new("image-fixed-image");
    write_test_image(&image.0);
    let mut config = config(&store, Strategy::PerLayer, false, MountApi::Auto);
    config.image = Some(image.0.clone());
    config.settings.paused = true;
    let executor = Executor::start(config).expect("executor starts");
    let error = executor.control().set_layers(5).unwrap_err();
    executor.stop();
    assert!(
        matches!(error, ExecutorError::LayersFixedByImage { layers: 2, .. }),
        "{error}"
    );
}

/// Prints builds/s and p50 build latency of strategies A and B at 20 layers and 8 builders.
/// Run by hand: `cargo test -p mountscope-tests --test executor -- --ignored throughput`.
#[test]
#[ignore = "a measurement, not a check; run by hand"]
fn throughput_per_strategy() {
    if !is_root() {
        return;
    }
    let store = TempStore::new("throughput");
    for strategy in [Strategy::PerLayer, Strategy::CommonParent] {
        let mut config = config(&store, strategy, false, MountApi::Auto);
        config.settings.builders = 8;
        let executor = Executor::start(config).expect("executor starts");
        std::thread::sleep(Duration::from_millis(500));
        let control = executor.control();
        let before = executor.stats().builds_total;
        control.take_build_latencies();
        let started = Instant::now();
        std::thread::sleep(Duration::from_secs(3));
        let builds = executor.stats().builds_total - before;
        let elapsed = started.elapsed();
        let mut latencies = control.take_build_latencies();
        executor.stop();
        latencies.sort();
        let p50 = latencies
            .get(latencies.len() / 2)
            .copied()
            .unwrap_or_default();
        println!(
            "{}: {:.0} builds/s, p50 {:?}, failures {}",
            strategy.label(),
            builds as f64 / elapsed.as_secs_f64(),
            p50,
            executor.stats().failures_total
        );
    }
}

/// Container starts made while another thread of the process runs child processes. Each
/// child keeps copies of the builders' open descriptors until it calls exec, and a descriptor
/// inside an overlay makes its unmount fail with EBUSY until then.
#[test]
fn builds_survive_process_spawns() {
    if !is_root() {
        return;
    }
    let store = TempStore::new("spawns");
    let mounts_before = mountinfo_lines();
    let mut config = config(&store, Strategy::CommonParent, false, MountApi::Legacy);
    config.inspection = true;
    config.settings.layers = 2;
    let stop = Arc::new(AtomicBool::new(false));
    let spawner = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                Command::new("true").status().expect("`true` runs");
            }
        })
    };

    let executor = Executor::start(config).expect("executor starts");
    let stats = wait_for_builds(&executor, SPAWN_TEST_BUILDS);
    executor.stop();
    stop.store(true, Ordering::Relaxed);
    spawner.join().expect("the spawning thread panicked");

    assert_eq!(stats.failures_total, 0, "{:?}", stats.last_error);
    assert!(
        stats.builds_total >= SPAWN_TEST_BUILDS,
        "{} builds",
        stats.builds_total
    );
    assert_eq!(mountinfo_lines(), mounts_before, "host mount table changed");
}

/// Returns the kernel log lines written since `kmsg` was opened at the end of the log.
fn new_kernel_log_lines(kmsg: &mut fs::File) -> Vec<String> {
    use std::io::Read as _;

    let mut lines = Vec::new();
    let mut record = vec![0u8; 8192];
    loop {
        match kmsg.read(&mut record) {
            Ok(0) => break,
            Ok(n) => lines.push(String::from_utf8_lossy(&record[..n]).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            // EPIPE means that records were overwritten before this read, and the next read goes on.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) => panic!("failed to read /dev/kmsg: {e}"),
        }
    }
    lines
}

/// Opens the root of the overlay mounted by builder thread `tid`, through the thread's view of
/// the mount table, or returns `None` when no overlay is mounted at that moment.
fn open_merged_root(tid: u32) -> Option<fs::File> {
    use nix::sys::statfs::{OVERLAYFS_SUPER_MAGIC, fstatfs};

    let merged = thread_overlay_mount_point(tid)?;
    let path =
        PathBuf::from(format!("/proc/self/task/{tid}/root")).join(merged.strip_prefix("/").ok()?);
    let file = fs::File::open(path).ok()?;
    // The overlay may have been unmounted between the lookup and the open.
    let on_overlay = fstatfs(&file).ok()?.filesystem_type() == OVERLAYFS_SUPER_MAGIC;
    on_overlay.then_some(file)
}

/// A process keeps a container's overlay open past the unmount retries, so its teardown fails
/// and the overlay is detached while still alive. The next starts must not reuse its upper and
/// work directories, which overlayfs reports as "in-use" with undefined behaviour.
#[test]
fn busy_overlay_gets_new_upper_and_work() {
    use std::os::unix::fs::OpenOptionsExt as _;

    if !is_root() {
        return;
    }
    let store = TempStore::new("held-overlay");
    let mounts_before = mountinfo_lines();
    let mut config = config(&store, Strategy::CommonParent, false, MountApi::Legacy);
    config.settings.layers = 2;
    config.settings.builders = 1;
    config.lifetime = Duration::from_millis(200);
    let mut kmsg = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .expect("failed to open /dev/kmsg");
    std::io::Seek::seek(&mut kmsg, std::io::SeekFrom::End(0))
        .expect("failed to seek to the end of /dev/kmsg");

    let executor = Executor::start(config).expect("executor starts");
    let deadline = Instant::now() + BUILD_TIMEOUT;
    let open_overlay = loop {
        let found = builder_thread_ids()
            .into_iter()
            .filter(|&tid| {
                thread_overlay_mount_point(tid).is_some_and(|merged| merged.starts_with(&store.0))
            })
            .find_map(open_merged_root);
        if found.is_some() || Instant::now() > deadline {
            break found;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // Longer than the unmount retries (about 0.5 s), with the container's 0.2 s lifetime.
    std::thread::sleep(Duration::from_millis(1500));
    let released_at = executor.stats().builds_total;
    drop(open_overlay.expect("no overlay of this store was opened"));
    let deadline = Instant::now() + BUILD_TIMEOUT;
    while executor.stats().builds_total < released_at + 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    executor.stop();
    let stats = executor.stats();
    let in_use: Vec<String> = new_kernel_log_lines(&mut kmsg)
        .into_iter()
        .filter(|line| line.contains("in-use"))
        .collect();

    assert!(
        stats.failures_total >= 1,
        "the held overlay's teardown did not fail"
    );
    assert!(
        stats.builds_total >= released_at + 3,
        "{} builds after the overlay was released",
        stats.builds_total - released_at
    );
    assert_eq!(
        in_use,
        Vec::<String>::new(),
        "overlayfs reported directories in use"
    );
    assert_eq!(mountinfo_lines(), mounts_before, "host mount table changed");
}
