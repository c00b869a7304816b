//! The overlay executor: builds container root filesystems the way runtimes do, so the
//! probes have real `namespace_sem` traffic to measure.
//!
//! ```no_run
//! use std::time::Duration;
//! use mountscope_agent::executor::{Executor, ExecutorConfig};
//! use mountscope_common::snapshot::Strategy;
//!
//! let executor = Executor::start(ExecutorConfig::new("/var/tmp/mountscope-store"))?;
//! let control = executor.control();
//! control.set_strategy(Strategy::CommonParent);
//! std::thread::sleep(Duration::from_secs(1));
//! let stats = executor.stats();
//! let latencies = control.take_build_latencies();
//! executor.stop();
//! # Ok::<(), mountscope_agent::executor::ExecutorError>(())
//! ```
//!
//! Each of K builder threads calls `unshare(CLONE_NEWNS)` and makes `/` recursively private, so
//! every mount stays in namespaces that die with the threads and nothing reaches the host's
//! mount table, even when the process is killed. The lock they contend for is the one global
//! `namespace_sem` all the same. Each builder then mounts a tmpfs for its container
//! directories (upper, work, merged and the temporary mount points), creates them once and
//! reuses them for every start. One container start is: the creation of its own user namespace
//! when idmapped layers use per-container id ranges, an optional inspection pass (build, check,
//! teardown), then build, merged-view check, hold for the configured lifetime, and teardown. Settings changed through [`ExecutorControl`] apply at each builder's next start.
//!
//! [`expected_syscalls_per_build`] gives the exact count of mount-family syscalls of one start
//! (see [`build::syscalls_per_container_start`] for the terms). Besides those, each builder
//! makes one `mount(MS_REC | MS_PRIVATE)` and one tmpfs mount for its scratch space when its
//! thread starts and one `umount2(MNT_DETACH)` when it stops, and a failed build makes
//! `umount2(MNT_DETACH)` calls to clean up. An unmount that fails with EBUSY is tried again
//! after a short pause, for up to about 0.5 s, because a child forked by another thread keeps
//! copies of the builders' open descriptors until it calls exec. Each new try is one more
//! `umount2` and is counted in [`ExecutorStats::unmount_busy_retries`].

mod build;
mod error;
mod layers;
mod limits;
mod oci;
mod overlay;
mod scratch;
mod store;
mod syscalls;
mod userns;
mod verify;
mod view;
mod worker;

use std::{
    fs,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    sync::{
        Arc, Condvar, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use mountscope_common::snapshot::{ExecutorSettings, MountApi, Strategy};

pub use build::{mount_operations_per_container_start, syscalls_per_container_start};
pub use error::{ExecutorError, error_chain};
pub use layers::Layer;
pub use limits::resource_hint;
pub use overlay::{FSCONFIG_STRING_MAX, LEGACY_OPTIONS_MAX, OverlayApi};
pub use userns::{
    CONTAINER_RANGES, DEFAULT_IDMAP_BASE, IDMAP_RANGE, container_idmap_base, create_idmap_userns,
};

use build::ContainerDir;
use store::Store;

/// Maximum lower layers of one overlay (`OVL_MAX_STACK` in fs/overlayfs, 500 since Linux 3.18).
pub const MAX_LAYERS: u32 = 500;
/// Maximum builder threads; the limit keeps container directory names at a fixed width.
pub const MAX_BUILDERS: u32 = 256;
/// Build latencies kept until [`ExecutorControl::take_build_latencies`] drains them; later ones
/// are counted in [`ExecutorStats::latencies_dropped`].
pub const MAX_PENDING_LATENCIES: usize = 1 << 20;

/// Configuration of [`Executor::start`].
#[derive(Clone, Debug, PartialEq)]
pub struct ExecutorConfig {
    /// Directory of the layer store (`snapshots/`) and of the containers' directories (`run/`).
    /// Created when missing. One executor at a time per store.
    pub store_root: PathBuf,
    /// Initial settings; with `image`, `layers` is replaced by the image's layer count.
    pub settings: ExecutorSettings,
    /// Files in each synthetic layer's `data/<layer>/` directory.
    pub files_per_layer: u32,
    /// How long each container stays mounted after its build is checked.
    pub lifetime: Duration,
    /// Whether each start is preceded by an inspection pass (build, check, teardown), as
    /// runtimes do to read the image's `/etc/passwd`. Doubles the mount syscalls per start.
    pub inspection: bool,
    /// Maximum container starts per second over all builders; `None` for no limit.
    pub rate_limit_per_s: Option<f64>,
    /// An OCI image layout directory whose layers replace the synthetic ones.
    pub image: Option<PathBuf>,
    /// Whether each container start creates its own user namespace for its idmapped layers,
    /// mapping the range at [`container_idmap_base`], instead of every start sharing one
    /// namespace at [`DEFAULT_IDMAP_BASE`]. Only applies while idmap is on. The creation is
    /// part of the start latency and is also counted on its own in [`ExecutorStats`].
    pub per_container_userns: bool,
}

impl ExecutorConfig {
    /// Returns a configuration of 20 synthetic layers of 16 files, strategy A, 4 builders, plain bind
    /// mounts, the `auto` mount API, no hold, no inspection, no rate limit and one shared user
    /// namespace for idmapped mounts.
    pub fn new(store_root: impl Into<PathBuf>) -> ExecutorConfig {
        ExecutorConfig {
            store_root: store_root.into(),
            settings: ExecutorSettings {
                strategy: Strategy::PerLayer,
                layers: 20,
                builders: 4,
                idmap: false,
                mount_api: MountApi::Auto,
                paused: false,
            },
            files_per_layer: 16,
            lifetime: Duration::ZERO,
            inspection: false,
            rate_limit_per_s: None,
            image: None,
            per_container_userns: false,
        }
    }
}

/// Successful container starts by strategy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BuildsByStrategy {
    pub per_layer: u64,
    pub common_parent: u64,
}

/// Executor counters since it started.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecutorStats {
    pub settings: ExecutorSettings,
    /// Container starts whose root filesystem was built, checked and torn down.
    pub builds_total: u64,
    /// Container starts that failed; `last_error` contains the latest reason.
    pub failures_total: u64,
    pub builds_by_strategy: BuildsByStrategy,
    /// Mount-family syscalls made by container starts, failed ones included.
    pub mount_syscalls_total: u64,
    pub last_error: Option<String>,
    /// Build latencies not kept because [`MAX_PENDING_LATENCIES`] were waiting to be taken.
    pub latencies_dropped: u64,
    /// Per-container user namespaces created, failed attempts excluded.
    pub userns_created: u64,
    /// Time spent creating per-container user namespaces, summed over all builders.
    pub userns_create_total: Duration,
    /// `umount2` calls repeated because the mount was busy, each included in
    /// `mount_syscalls_total`.
    pub unmount_busy_retries: u64,
}

/// Mount-family syscalls one container start makes with `settings`, the overlay mounted with
/// `overlay_api`. [`MountApi::Auto`] depends on the length of the store's paths, so the caller
/// passes the resolved API: [`ExecutorControl::overlay_api`] returns it.
pub fn expected_syscalls_per_build(
    settings: &ExecutorSettings,
    overlay_api: OverlayApi,
    inspection: bool,
) -> u64 {
    syscalls_per_container_start(
        settings.strategy,
        settings.layers,
        settings.idmap,
        overlay_api,
        inspection,
    )
}

#[derive(Default)]
struct Counters {
    builds_total: u64,
    failures_total: u64,
    builds_by_strategy: BuildsByStrategy,
    mount_syscalls_total: u64,
    last_error: Option<String>,
    latencies: Vec<Duration>,
    latencies_dropped: u64,
    userns_created: u64,
    userns_create_total: Duration,
    userns_latencies: Vec<Duration>,
}

/// State shared by the builders, the executor and its control handles.
struct Shared {
    store: Store,
    /// `<store>/run/<pid>-<executor>`: this executor's container directories.
    run_dir: PathBuf,
    lifetime: Duration,
    inspection: bool,
    rate_interval: Option<Duration>,
    idmap_base: u32,
    per_container_userns: bool,
    settings: Mutex<ExecutorSettings>,
    /// Signalled, with `settings` locked, on every settings change and on stop.
    wake: Condvar,
    stopping: AtomicBool,
    userns: Mutex<Option<Arc<OwnedFd>>>,
    counters: Mutex<Counters>,
    /// `umount2` calls repeated because the mount was busy, added by each call as it is made.
    unmount_busy_retries: Arc<AtomicU64>,
    next_rate_slot: Mutex<Instant>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Waits until builder `index` may start a container and returns the settings to use, or
    /// `None` once the executor stops.
    fn wait_for_turn(&self, index: u32) -> Option<ExecutorSettings> {
        let mut settings = lock(&self.settings);
        loop {
            if self.stopping.load(Ordering::Acquire) {
                return None;
            }
            if !settings.paused && index < settings.builders {
                return Some(settings.clone());
            }
            settings = self
                .wake
                .wait(settings)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Sleeps until `deadline` or until the executor stops. Returns false if it stopped.
    fn sleep_until(&self, deadline: Instant) -> bool {
        let mut settings = lock(&self.settings);
        loop {
            if self.stopping.load(Ordering::Acquire) {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            let (guard, _) = self
                .wake
                .wait_timeout(settings, deadline - now)
                .unwrap_or_else(PoisonError::into_inner);
            settings = guard;
        }
    }

    /// Takes the next start slot of the rate limit and sleeps until it. Returns false if the
    /// executor stopped meanwhile.
    fn wait_for_rate_slot(&self) -> bool {
        let Some(interval) = self.rate_interval else {
            return true;
        };
        let slot = {
            let mut next = lock(&self.next_rate_slot);
            let slot = (*next).max(Instant::now());
            *next = slot + interval;
            slot
        };
        self.sleep_until(slot)
    }

    fn userns(&self) -> Result<Arc<OwnedFd>, ExecutorError> {
        let mut userns = lock(&self.userns);
        if let Some(fd) = userns.as_ref() {
            return Ok(Arc::clone(fd));
        }
        let fd = Arc::new(create_idmap_userns(self.idmap_base)?);
        *userns = Some(Arc::clone(&fd));
        Ok(fd)
    }

    fn record_userns_created(&self, latency: Duration) {
        let mut counters = lock(&self.counters);
        counters.userns_created += 1;
        counters.userns_create_total += latency;
        if counters.userns_latencies.len() < MAX_PENDING_LATENCIES {
            counters.userns_latencies.push(latency);
        }
    }

    fn record_build(&self, strategy: Strategy, latency: Duration, syscalls: u64) {
        let mut counters = lock(&self.counters);
        counters.builds_total += 1;
        counters.mount_syscalls_total += syscalls;
        match strategy {
            Strategy::PerLayer => counters.builds_by_strategy.per_layer += 1,
            Strategy::CommonParent => counters.builds_by_strategy.common_parent += 1,
        }
        if counters.latencies.len() < MAX_PENDING_LATENCIES {
            counters.latencies.push(latency);
        } else {
            counters.latencies_dropped += 1;
        }
    }

    fn record_failure(&self, error: &ExecutorError, syscalls: u64) {
        let mut message = error_chain(error);
        if let Some(hint) = resource_hint(error) {
            message = format!("{message} ({hint})");
        }
        let mut counters = lock(&self.counters);
        counters.failures_total += 1;
        counters.mount_syscalls_total += syscalls;
        // Logs the 1st, 2nd, 4th, 8th… failure, so a persistent one does not flood the log.
        if counters.failures_total.is_power_of_two() {
            tracing::warn!(
                failures = counters.failures_total,
                error = %message,
                "a container start failed; the builder goes on with the next one"
            );
        }
        counters.last_error = Some(message);
    }

    fn spawn_builders(self: &Arc<Self>, count: u32) -> Result<(), ExecutorError> {
        let mut threads = lock(&self.threads);
        if self.stopping.load(Ordering::Acquire) {
            return Err(ExecutorError::Stopped);
        }
        for index in threads.len() as u32..count {
            let shared = Arc::clone(self);
            let handle = std::thread::Builder::new()
                .name(format!("overlay-builder-{index}"))
                .spawn(move || worker::run_builder(shared, index))
                .map_err(|source| ExecutorError::Spawn { index, source })?;
            threads.push(handle);
        }
        Ok(())
    }

    fn update_settings(&self, change: impl FnOnce(&mut ExecutorSettings)) {
        let mut settings = lock(&self.settings);
        change(&mut settings);
        self.wake.notify_all();
    }

    fn stop(&self) {
        {
            let _settings = lock(&self.settings);
            self.stopping.store(true, Ordering::Release);
            self.wake.notify_all();
        }
        let threads: Vec<JoinHandle<()>> = lock(&self.threads).drain(..).collect();
        for thread in threads {
            if thread.join().is_err() {
                tracing::error!("a builder thread panicked; its mount namespace died with it");
            }
        }
        if let Err(error) = fs::remove_dir(&self.run_dir)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.run_dir.display(), %error, "failed to remove the executor's run directory");
        }
    }
}

/// A cloneable handle that changes the executor's settings and reads its figures. Changes
/// apply at each builder's next container start.
#[derive(Clone)]
pub struct ExecutorControl {
    shared: Arc<Shared>,
}

impl ExecutorControl {
    pub fn settings(&self) -> ExecutorSettings {
        lock(&self.shared.settings).clone()
    }

    pub fn set_strategy(&self, strategy: Strategy) {
        self.shared.update_settings(|s| s.strategy = strategy);
    }

    pub fn set_mount_api(&self, mount_api: MountApi) {
        self.shared.update_settings(|s| s.mount_api = mount_api);
    }

    pub fn set_paused(&self, paused: bool) {
        self.shared.update_settings(|s| s.paused = paused);
    }

    /// Switches idmapped layer mounts on or off, creating the shared user namespace first if
    /// needed.
    pub fn set_idmap(&self, idmap: bool) -> Result<(), ExecutorError> {
        if idmap && !self.shared.per_container_userns {
            self.shared.userns()?;
        }
        self.shared.update_settings(|s| s.idmap = idmap);
        Ok(())
    }

    /// Sets the number of builder threads, starting new ones if needed. Surplus threads wait.
    pub fn set_builders(&self, builders: u32) -> Result<(), ExecutorError> {
        validate_builders(builders)?;
        limits::check(builders, self.shared.per_container_userns)?;
        self.shared.spawn_builders(builders)?;
        self.shared.update_settings(|s| s.builders = builders);
        Ok(())
    }

    /// Sets the number of layers per overlay, writing new synthetic layers if needed.
    pub fn set_layers(&self, layers: u32) -> Result<(), ExecutorError> {
        validate_layers(layers)?;
        self.shared.store.ensure_layers(layers)?;
        self.shared.update_settings(|s| s.layers = layers);
        Ok(())
    }

    /// Applies every field of `settings` at once.
    pub fn apply(&self, settings: &ExecutorSettings) -> Result<(), ExecutorError> {
        validate_layers(settings.layers)?;
        validate_builders(settings.builders)?;
        self.shared.store.ensure_layers(settings.layers)?;
        if settings.idmap && !self.shared.per_container_userns {
            self.shared.userns()?;
        }
        self.shared.spawn_builders(settings.builders)?;
        self.shared.update_settings(|s| *s = settings.clone());
        Ok(())
    }

    /// Resolves the overlay mount API of the current settings against the store's paths.
    pub fn overlay_api(&self) -> Result<OverlayApi, ExecutorError> {
        let settings = self.settings();
        let stack = self.shared.store.stack(settings.layers)?;
        // Same length as every real container directory name, so the same choice.
        let template = ContainerDir::new(scratch::container_root(
            &self.shared.run_dir,
            0,
            scratch::ContainerKind::Container,
        ));
        template
            .overlay_dirs(
                settings.strategy,
                &stack.layers,
                self.shared.store.snapshots(),
            )
            .resolve_api(settings.mount_api)
    }

    /// Mount-family syscalls each container start makes with the current settings.
    pub fn expected_syscalls_per_build(&self) -> Result<u64, ExecutorError> {
        let api = self.overlay_api()?;
        Ok(expected_syscalls_per_build(
            &self.settings(),
            api,
            self.shared.inspection,
        ))
    }

    pub fn stats(&self) -> ExecutorStats {
        let settings = self.settings();
        let counters = lock(&self.shared.counters);
        ExecutorStats {
            settings,
            builds_total: counters.builds_total,
            failures_total: counters.failures_total,
            builds_by_strategy: counters.builds_by_strategy,
            mount_syscalls_total: counters.mount_syscalls_total,
            last_error: counters.last_error.clone(),
            latencies_dropped: counters.latencies_dropped,
            userns_created: counters.userns_created,
            userns_create_total: counters.userns_create_total,
            unmount_busy_retries: self.shared.unmount_busy_retries.load(Ordering::Relaxed),
        }
    }

    /// Removes and returns the build latencies recorded since the last call, each from the
    /// start of a container until its checked root filesystem was ready (inspection included).
    pub fn take_build_latencies(&self) -> Vec<Duration> {
        std::mem::take(&mut lock(&self.shared.counters).latencies)
    }

    /// Removes and returns the creation times of per-container user namespaces recorded since
    /// the last call. At most [`MAX_PENDING_LATENCIES`] are kept between calls.
    pub fn take_userns_latencies(&self) -> Vec<Duration> {
        std::mem::take(&mut lock(&self.shared.counters).userns_latencies)
    }
}

/// A running executor. [`Executor::stop`] or dropping it stops and joins the builders.
pub struct Executor {
    control: ExecutorControl,
}

impl Executor {
    /// Checks `config`, prepares the store (writing synthetic layers or importing the image)
    /// and starts the builders.
    pub fn start(config: ExecutorConfig) -> Result<Executor, ExecutorError> {
        // SAFETY: geteuid takes no arguments and touches no memory.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            return Err(ExecutorError::NotRoot { euid });
        }
        config.validate()?;
        let mut settings = config.settings.clone();
        let rate_interval = config
            .rate_limit_per_s
            .map(|rate| Duration::from_secs_f64(1.0 / rate));

        let store_root = prepare_store_root(&config.store_root)?;
        let store = Store::open(
            &store_root,
            config.files_per_layer,
            config.image.as_deref(),
            settings.layers,
        )?;
        if store.image().is_some() {
            settings.layers = store.layer_count();
            validate_layers(settings.layers)?;
        }
        let run_dir = prepare_run_dir(&store_root)?;

        let shared = Arc::new(Shared {
            store,
            run_dir,
            lifetime: config.lifetime,
            inspection: config.inspection,
            rate_interval,
            idmap_base: DEFAULT_IDMAP_BASE,
            per_container_userns: config.per_container_userns,
            settings: Mutex::new(settings.clone()),
            wake: Condvar::new(),
            stopping: AtomicBool::new(false),
            userns: Mutex::new(None),
            counters: Mutex::new(Counters::default()),
            unmount_busy_retries: Arc::new(AtomicU64::new(0)),
            next_rate_slot: Mutex::new(Instant::now()),
            threads: Mutex::new(Vec::new()),
        });
        let executor = Executor {
            control: ExecutorControl {
                shared: Arc::clone(&shared),
            },
        };
        if settings.idmap && !config.per_container_userns {
            shared.userns()?;
        }
        shared.spawn_builders(settings.builders)?;
        tracing::info!(
            store = %store_root.display(),
            strategy = settings.strategy.label(),
            layers = settings.layers,
            builders = settings.builders,
            per_container_userns = config.per_container_userns,
            "overlay executor started"
        );
        Ok(executor)
    }

    pub fn control(&self) -> ExecutorControl {
        self.control.clone()
    }

    pub fn stats(&self) -> ExecutorStats {
        self.control.stats()
    }

    /// Stops the builders and waits for them. Each builder finishes its current container
    /// start (cutting the hold short) and tears it down; their mount namespaces end with them.
    /// Calling it again does nothing.
    pub fn stop(&self) {
        if self.control.shared.stopping.load(Ordering::Acquire) {
            return;
        }
        self.control.shared.stop();
        tracing::info!("overlay executor stopped");
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.stop();
    }
}

impl ExecutorConfig {
    /// Checks the options that need no store: the builder and layer counts, the rate limit
    /// and the kernel limits for that many builders. Callers run it before loading the
    /// probes, so a bad option fails at once; [`Executor::start`] runs it again.
    pub fn validate(&self) -> Result<(), ExecutorError> {
        validate_builders(self.settings.builders)?;
        if self.image.is_none() {
            validate_layers(self.settings.layers)?;
        }
        if let Some(rate) = self.rate_limit_per_s
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err(ExecutorError::RateLimit { rate_per_s: rate });
        }
        limits::check(self.settings.builders, self.per_container_userns)
    }
}

fn validate_layers(layers: u32) -> Result<(), ExecutorError> {
    if layers == 0 || layers > MAX_LAYERS {
        return Err(ExecutorError::LayerCount { layers });
    }
    Ok(())
}

fn validate_builders(builders: u32) -> Result<(), ExecutorError> {
    if builders == 0 || builders > MAX_BUILDERS {
        return Err(ExecutorError::BuilderCount { builders });
    }
    Ok(())
}

/// Creates the store root if missing and returns its canonical path, rejecting a path that is
/// not a directory or that overlay mount options cannot carry.
fn prepare_store_root(path: &Path) -> Result<PathBuf, ExecutorError> {
    if path.exists() && !path.is_dir() {
        return Err(ExecutorError::StoreNotDirectory {
            path: path.to_path_buf(),
        });
    }
    fs::create_dir_all(path).map_err(|e| ExecutorError::io("create the store root", path, e))?;
    let root =
        fs::canonicalize(path).map_err(|e| ExecutorError::io("resolve the store root", path, e))?;
    let text = root.to_string_lossy();
    if let Some(character) = text.chars().find(|c| matches!(c, ':' | ',' | '\\' | '\n')) {
        return Err(ExecutorError::StorePathCharacter {
            path: root.clone(),
            character,
        });
    }
    Ok(root)
}

/// Number of executors this process started, to name their run directories.
static EXECUTORS_STARTED: AtomicU64 = AtomicU64::new(0);

/// Removes run directories left by processes that no longer exist, then creates this
/// executor's own.
fn prepare_run_dir(store_root: &Path) -> Result<PathBuf, ExecutorError> {
    let runs = store_root.join("run");
    fs::create_dir_all(&runs)
        .map_err(|e| ExecutorError::io("create the run directory", &runs, e))?;
    remove_stale_run_dirs(&runs);

    let sequence = EXECUTORS_STARTED.fetch_add(1, Ordering::Relaxed);
    let run_dir = runs.join(format!("{}-{sequence}", std::process::id()));
    fs::create_dir_all(&run_dir)
        .map_err(|e| ExecutorError::io("create the run directory", &run_dir, e))?;
    Ok(run_dir)
}

/// Removes `<runs>/<pid>-<n>` directories whose process is gone. Their mounts lived in that
/// process's builder namespaces, which ended with it, so nothing is mounted under them here.
fn remove_stale_run_dirs(runs: &Path) {
    let Ok(listing) = fs::read_dir(runs) else {
        return;
    };
    for item in listing.flatten() {
        let name = item.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.split('-').next()) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let path = item.path();
        match fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::info!(dir = %path.display(), "removed the run directory of an executor that is gone")
            }
            Err(error) => {
                tracing::warn!(dir = %path.display(), %error, "failed to remove a stale run directory")
            }
        }
    }
}
