//! Options shared by several subcommands.

use std::{num::IntErrorKind, os::unix::fs::MetadataExt as _, path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};
use clap::{Arg, Args, ValueEnum};
use mountscope_agent::{
    executor::ExecutorConfig,
    probes::{Filters, HoldMethod, ProbeOptions},
};
use mountscope_common::snapshot::{ExecutorSettings, MountApi, Strategy};

/// Bounds of `--sample-period-us`. A 20 µs period slowed mounts sevenfold on a 2-vCPU guest.
/// Above a second, a snapshot interval gets too few samples to estimate anything.
const MIN_SAMPLE_PERIOD_US: u64 = 100;
const MAX_SAMPLE_PERIOD_US: u64 = 1_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StrategyArg {
    /// Per-layer bind mounts.
    A,
    /// One bind mount of the layers' common parent.
    B,
}

impl From<StrategyArg> for Strategy {
    fn from(s: StrategyArg) -> Strategy {
        match s {
            StrategyArg::A => Strategy::PerLayer,
            StrategyArg::B => Strategy::CommonParent,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MountApiArg {
    Auto,
    Legacy,
    Fsconfig,
}

impl From<MountApiArg> for MountApi {
    fn from(a: MountApiArg) -> MountApi {
        match a {
            MountApiArg::Auto => MountApi::Auto,
            MountApiArg::Legacy => MountApi::Legacy,
            MountApiArg::Fsconfig => MountApi::Fsconfig,
        }
    }
}

/// Which tasks to trace and how to measure hold times.
#[derive(Clone, Debug, Default, Args)]
pub struct FilterArgs {
    /// Trace only this process id.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Trace only this cgroup v2: a directory under /sys/fs/cgroup or a numeric cgroup id.
    #[arg(long)]
    pub cgroup: Option<String>,
    /// Trace only this mount namespace: a path such as /proc/PID/ns/mnt or an inode number.
    #[arg(long)]
    pub mntns: Option<String>,
    /// How to measure namespace_sem hold times: `auto` picks the best the kernel allows, and
    /// a method given by name that the kernel refuses is an error.
    #[arg(long, value_enum, default_value_t = HoldMethod::Auto)]
    pub hold_method: HoldMethod,
    /// Also record where mount syscalls wait: the kernel stack of every lock wait and
    /// off-CPU span inside one. Mounts then cost more to trace (docs/BENCHMARKS.md).
    #[arg(long)]
    pub wait_sites: bool,
    /// Time the mount syscalls with the syscall tracepoints even where fentry/fexit on the
    /// syscall functions loads. The tracepoints slow every syscall on the host a little.
    #[arg(long)]
    pub syscall_tracepoints: bool,
    /// Period per CPU, in microseconds, of the cpu-clock sampler that estimates hold times
    /// where fentry and kprobes are unavailable (100 to 1000000, default 5000). A shorter
    /// period gives a finer estimate and costs more (docs/BENCHMARKS.md).
    #[arg(long, value_parser = parse_sample_period_us, allow_negative_numbers = true)]
    pub sample_period_us: Option<u64>,
}

/// Returns the name that the command line uses for `value`, such as `b` or `none`.
pub fn value_name(value: impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_string())
}

/// Parses `--sample-period-us`: a whole number of microseconds within the allowed bounds.
fn parse_sample_period_us(value: &str) -> Result<u64, String> {
    let bounds = format!("give {MIN_SAMPLE_PERIOD_US} to {MAX_SAMPLE_PERIOD_US} microseconds");
    match value.parse::<i128>() {
        Ok(period)
            if (MIN_SAMPLE_PERIOD_US.into()..=MAX_SAMPLE_PERIOD_US.into()).contains(&period) =>
        {
            Ok(period as u64)
        }
        Ok(_) => Err(format!("out of range; {bounds}")),
        Err(e)
            if matches!(
                e.kind(),
                IntErrorKind::PosOverflow | IntErrorKind::NegOverflow
            ) =>
        {
            Err(format!("out of range; {bounds}"))
        }
        Err(_) => Err(format!("not a whole number; {bounds}")),
    }
}

/// A number, or the inode number of a path (a cgroup directory's inode is its cgroup id).
fn id_or_inode(value: &str, what: &str) -> anyhow::Result<u64> {
    if let Ok(id) = value.parse::<u64>() {
        return Ok(id);
    }
    let meta = std::fs::metadata(value).with_context(|| {
        format!("invalid {what} `{value}`: not a number and not an existing path")
    })?;
    Ok(meta.ino())
}

impl FilterArgs {
    pub fn probe_options(&self) -> anyhow::Result<ProbeOptions> {
        let cgroup_id = self
            .cgroup
            .as_deref()
            .map(|c| id_or_inode(c, "--cgroup"))
            .transpose()?;
        let mntns_id = self
            .mntns
            .as_deref()
            .map(|m| id_or_inode(m, "--mntns"))
            .transpose()?;
        if let Some(period) = self.sample_period_us
            && !matches!(self.hold_method, HoldMethod::Auto | HoldMethod::Sample)
        {
            bail!(
                "--sample-period-us {period} has no effect with --hold-method {}: the period \
                 is the cpu-clock sampler's, which runs only with --hold-method auto or sample; \
                 drop --sample-period-us or use --hold-method sample",
                value_name(self.hold_method)
            );
        }
        if let Some(pid) = self.pid
            && (pid == 0 || !std::path::Path::new(&format!("/proc/{pid}")).exists())
        {
            bail!("invalid --pid {pid}: no such process; give the id of a running process");
        }
        Ok(ProbeOptions {
            filters: Filters {
                pid: self.pid,
                cgroup_id,
                mntns_id,
            },
            hold_method: self.hold_method,
            lock_address: None,
            wait_sites: self.wait_sites,
            syscall_records: false,
            inflight_slots: None,
            syscall_tracepoints: self.syscall_tracepoints,
            sample_period_ns: self.sample_period_us.map(|us| us * 1000),
        })
    }
}

/// How the overlay executor builds root filesystems.
#[derive(Clone, Debug, Args)]
pub struct ExecutorArgs {
    /// Strategy at start: a = per-layer bind mounts (the default), b = one common-parent bind
    /// mount.
    #[arg(long, value_enum)]
    pub strategy: Option<StrategyArg>,
    /// Image layers per container (1 to 500).
    #[arg(long, default_value_t = 20)]
    pub layers: u32,
    /// Concurrent builders (container starts in flight).
    #[arg(long, default_value_t = 8)]
    pub builders: u32,
    /// Make each layer an idmapped mount instead of a plain bind mount.
    #[arg(long)]
    pub idmap: bool,
    /// With --idmap, give each container start its own user namespace and host id range
    /// (65536 ids), as runtimes do for user-namespaced containers, instead of one shared
    /// namespace.
    #[arg(long, requires = "idmap")]
    pub per_container_userns: bool,
    /// How the overlay is mounted: legacy mount(2), fsopen/fsconfig, or auto by option length.
    #[arg(long, value_enum, default_value_t = MountApiArg::Auto)]
    pub mount_api: MountApiArg,
    /// Before each start, build and tear down the rootfs once more, as runtimes do to read the
    /// image's user database.
    #[arg(long)]
    pub inspection: bool,
    /// How long each container stays mounted, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub lifetime_ms: u64,
    /// Maximum container starts per second over all builders.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Files per synthetic layer.
    #[arg(long, default_value_t = 16)]
    pub files_per_layer: u32,
    /// An OCI image layout directory to use instead of synthetic layers.
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Layer store and container directories; created when missing.
    #[arg(long, default_value = "/var/tmp/mountscope/store")]
    pub store: PathBuf,
}

impl ExecutorArgs {
    pub fn config(&self) -> ExecutorConfig {
        ExecutorConfig {
            store_root: self.store.clone(),
            settings: ExecutorSettings {
                strategy: self.strategy.unwrap_or(StrategyArg::A).into(),
                layers: self.layers,
                builders: self.builders,
                idmap: self.idmap,
                mount_api: self.mount_api.into(),
                paused: false,
            },
            files_per_layer: self.files_per_layer,
            lifetime: Duration::from_millis(self.lifetime_ms),
            inspection: self.inspection,
            rate_limit_per_s: self.rate,
            image: self.image.clone(),
            per_container_userns: self.per_container_userns,
        }
    }
}

/// A named set of executor options for a known scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// A node starting many containers at once: 100 builders, 50 layers, idmapped layers with
    /// a user namespace and host id range per container, and an inspection pass per start.
    Storm,
}

/// Options that `--connect` cannot honour besides the executor options, because the agent's
/// probes, filters and interval apply.
const PROBE_FLAGS: [&str; 8] = [
    "interval",
    "pid",
    "cgroup",
    "mntns",
    "hold_method",
    "wait_sites",
    "syscall_tracepoints",
    "sample_period_us",
];

/// Returns the ids of the options that are an error next to `--connect`: the probe, filter
/// and interval options and the executor options, which the agent sets.
pub fn connect_conflicts() -> impl Iterator<Item = &'static str> {
    PROBE_FLAGS.into_iter().chain(EXECUTOR_FLAGS)
}

/// Ids of the executor options. `record` and `agent` start no executor without `--exec`, so on
/// those commands these options require it.
pub const EXECUTOR_FLAGS: [&str; 12] = [
    "strategy",
    "layers",
    "builders",
    "idmap",
    "per_container_userns",
    "mount_api",
    "inspection",
    "lifetime_ms",
    "rate",
    "files_per_layer",
    "image",
    "store",
];

/// Makes `arg` require `--exec` when it is an executor option, for commands whose executor is
/// off unless `--exec` is given.
pub fn executor_requires_exec(arg: Arg) -> Arg {
    if EXECUTOR_FLAGS.contains(&arg.get_id().as_str()) {
        arg.requires("exec")
    } else {
        arg
    }
}

/// Executor options that a preset sets, which clap rejects next to `--preset`.
pub const PRESET_FLAGS: [&str; 5] = [
    "builders",
    "layers",
    "idmap",
    "per_container_userns",
    "inspection",
];

impl Preset {
    /// Sets the executor options of this preset in `config`, keeping the others.
    pub fn apply(self, config: &mut ExecutorConfig) {
        match self {
            Preset::Storm => {
                config.settings.builders = 100;
                config.settings.layers = 50;
                config.settings.idmap = true;
                config.per_container_userns = true;
                config.inspection = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_period_default_matches_help() {
        // The help of --sample-period-us names 5000 as the default.
        assert_eq!(mountscope_agent::probes::SAMPLE_PERIOD_NS, 5_000_000);
    }

    #[test]
    fn sample_period_in_range_parses() {
        assert_eq!(parse_sample_period_us("5000"), Ok(5000));
    }

    #[test]
    fn sample_period_below_range_names_bounds() {
        let error = parse_sample_period_us("99").expect_err("below the range");
        assert!(error.contains("100 to 1000000"), "{error}");
    }

    #[test]
    fn sample_period_negative_is_out_of_range() {
        let error = parse_sample_period_us("-100").expect_err("negative");
        assert!(error.starts_with("out of range"), "{error}");
    }

    #[test]
    fn sample_period_overflow_is_out_of_range() {
        let error = parse_sample_period_us("99999999999999999999999999999999999999999")
            .expect_err("too large");
        assert!(error.starts_with("out of range"), "{error}");
    }

    #[test]
    fn sample_period_not_a_number_names_bounds() {
        let error = parse_sample_period_us("5ms").expect_err("not a number");
        assert!(error.contains("100 to 1000000"), "{error}");
    }
}
