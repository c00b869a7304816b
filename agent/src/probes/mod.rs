//! Loading and attaching the kernel programs, and choosing the measurement tier.
//!
//! The syscall tracepoints always load. Lock programs need the address of `namespace_sem`;
//! hold times come from the best method that loads: fentry/fexit, then kprobes, then a
//! cpu-clock sampler whose figures are estimates.

pub mod btf;
pub mod calibrate;
pub mod kallsyms;
pub mod object;
pub mod tracefs;

use aya::{
    Ebpf, EbpfLoader,
    maps::Array,
    programs::{
        FEntry, FExit, KProbe, PerfEvent, ProgramError, TracePoint,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
    },
};
use mountscope_common::{
    INFLIGHT_SLOTS, MountSyscall,
    snapshot::{AddressSource, LockAddress, SyscallProbes, Tier, TierKind},
    switch_slot,
};
use thiserror::Error;
use tracing::{debug, info, warn};

use self::btf::{Btf, KernelOffsets};

/// Sampling period of the hold-time estimate, per CPU. Each sample is a timer interrupt, which
/// is costly in a virtual machine. On a 2-vCPU Linux 6.18 guest the sampler made a bind
/// mount + umount about 40% slower with a 100 µs period and 6 to 15% slower with 1 ms. With
/// 5 ms its cost was within the noise, and a 30 s run still takes 12000 samples on two CPUs.
/// `--sample-period-us` trades cost for a finer estimate.
pub const SAMPLE_PERIOD_NS: u64 = 5_000_000;

#[derive(Debug, Error)]
pub enum ProbeError {
    #[error(
        "this mountscope binary was built without its eBPF programs (AYA_BUILD_SKIP was set); \
         rebuild with `cargo xtask build`"
    )]
    NotEmbedded,
    #[error("mountscope must run as root (effective uid is {0}); run it with sudo")]
    NotRoot(u32),
    #[error(transparent)]
    Btf(#[from] btf::BtfError),
    #[error("{0}")]
    Tracefs(std::io::Error),
    #[error("failed to load the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("failed to load or attach `{program}`: {source}")]
    Program {
        program: String,
        #[source]
        source: ProgramError,
    },
    #[error("program `{0}` is missing from the eBPF object")]
    Missing(String),
    #[error(
        "--hold-method {method} is not available on this kernel ({reason}); use --hold-method \
         auto to take the best method the kernel allows"
    )]
    HoldMethodUnavailable {
        method: &'static str,
        reason: String,
    },
    #[error("{0}")]
    System(String),
}

/// How hold times should be measured: `Auto` tries the best first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldMethod {
    #[default]
    Auto,
    Fentry,
    Kprobe,
    Sample,
    None,
}

/// Which tasks to trace; zero or `None` means all.
#[derive(Clone, Copy, Debug, Default)]
pub struct Filters {
    pub pid: Option<u32>,
    pub cgroup_id: Option<u64>,
    pub mntns_id: Option<u64>,
}

/// Options of [`Probes::load`].
#[derive(Clone, Debug, Default)]
pub struct ProbeOptions {
    pub filters: Filters,
    pub hold_method: HoldMethod,
    /// Use this address for `namespace_sem` instead of looking it up.
    pub lock_address: Option<u64>,
    /// Record wait sites: the kernel stack of every lock wait and off-CPU span inside a mount
    /// syscall. Off by default because the stack walks cost more than the other probes.
    pub wait_sites: bool,
    /// Write a ring-buffer record of every traced syscall from the start. The counters and
    /// histograms do not need them, and a record costs about as much as the rest of the
    /// probe, so only consumers of per-call events turn this on (see
    /// [`Probes::set_syscall_records`]).
    pub syscall_records: bool,
    /// Use only this many in-flight slots (a power of two, at most `INFLIGHT_SLOTS`) instead
    /// of all. Tests set 1 so that concurrent threads share a slot and take the hash map.
    #[doc(hidden)]
    pub inflight_slots: Option<u32>,
    /// Time the syscalls with the tracepoints even where fentry/fexit would load.
    pub syscall_tracepoints: bool,
    /// Period of the hold-time estimate's cpu-clock sampler per CPU; `None` means
    /// `SAMPLE_PERIOD_NS`.
    pub sample_period_ns: Option<u64>,
}

/// The loaded programs. Dropping this detaches and unloads everything.
pub struct Probes {
    pub ebpf: Ebpf,
    pub tier: Tier,
    pub lock_address: Option<LockAddress>,
    pub offsets: KernelOffsets,
    /// Lock programs that could not load, with the error, for `doctor` and the logs.
    pub notes: Vec<String>,
    /// Whether wait sites are recorded.
    pub wait_sites: bool,
    /// Whether the cpu-clock sampler runs, so that the snapshot has a hold estimate.
    pub hold_sampled: bool,
    /// The sampler's period per CPU.
    pub sample_period_ns: u64,
    /// Whether the syscall programs write a record of every call.
    syscall_records: bool,
    /// Method that times the mount-family syscalls.
    pub syscall_probes: SyscallProbes,
}

impl Probes {
    /// Loads and attaches the programs and picks the tier.
    pub fn load(options: &ProbeOptions) -> Result<Probes, ProbeError> {
        if !object::is_embedded() {
            return Err(ProbeError::NotEmbedded);
        }
        let euid = nix::unistd::geteuid().as_raw();
        if euid != 0 {
            return Err(ProbeError::NotRoot(euid));
        }
        raise_memlock_limit();
        tracefs::ensure_mounted().map_err(ProbeError::Tracefs)?;

        let offsets = KernelOffsets::from_btf(&Btf::from_sys_fs()?)?;
        let mut notes = Vec::new();
        let lock_address = find_lock_address(options, &mut notes);
        let address = lock_address
            .as_ref()
            .and_then(|a| u64::from_str_radix(a.address.trim_start_matches("0x"), 16).ok())
            .unwrap_or(0);

        let filters = options.filters;
        let pid = filters.pid.unwrap_or(0);
        let cgroup = filters.cgroup_id.unwrap_or(0);
        let mntns = filters.mntns_id.unwrap_or(0);
        let wait_sites_on = u8::from(options.wait_sites);
        let slots = options.inflight_slots.unwrap_or(INFLIGHT_SLOTS);
        if !slots.is_power_of_two() || slots > INFLIGHT_SLOTS {
            return Err(ProbeError::System(format!(
                "invalid in-flight slot count {slots}: give a power of two up to {INFLIGHT_SLOTS}"
            )));
        }
        let slot_mask = slots - 1;
        let sample_period_ns = options.sample_period_ns.unwrap_or(SAMPLE_PERIOD_NS);
        let mut ebpf = EbpfLoader::new()
            .override_global("NS_SEM_ADDR", &address, true)
            .override_global("OFF_RWSEM_OWNER", &offsets.rwsem_owner, true)
            .override_global("OFF_TASK_PID", &offsets.task_pid, true)
            .override_global("OFF_TASK_TGID", &offsets.task_tgid, true)
            .override_global("OFF_TASK_COMM", &offsets.task_comm, true)
            .override_global("OFF_TASK_NSPROXY", &offsets.task_nsproxy, true)
            .override_global("OFF_NSPROXY_MNT_NS", &offsets.nsproxy_mnt_ns, true)
            .override_global("OFF_MNT_NS_INUM", &offsets.mnt_ns_inum, true)
            .override_global("FILTER_TGID", &pid, true)
            .override_global("FILTER_CGROUP", &cgroup, true)
            .override_global("FILTER_MNTNS", &mntns, true)
            .override_global("WAIT_SITES_ON", &wait_sites_on, true)
            .override_global("INFLIGHT_SLOT_MASK", &slot_mask, true)
            .load(object::EBPF_OBJECT)?;
        write_switch(
            &mut ebpf,
            switch_slot::SYSCALL_RECORDS,
            options.syscall_records,
        )?;

        // Kept apart until the tier is chosen, because the tier's reason lists the notes of
        // the hold methods that failed and nothing else.
        let mut syscall_notes = Vec::new();
        let kernel_btf = KernelBtf::default();
        let syscall_probes =
            attach_syscall_programs(&mut ebpf, options, &kernel_btf, &mut syscall_notes)?;
        info!("mount syscalls timed with {}", syscall_probes.label());

        // Off-CPU time inside mount syscalls; lock waits of any type come from the contention
        // tracepoints attached with the lock programs.
        let mut wait_sites = options.wait_sites;
        if wait_sites
            && let Err(e) = attach_tracepoint(&mut ebpf, "sched_switch", "sched", "sched_switch")
        {
            warn!("wait sites are not recorded: {e}");
            notes.push(format!("sched_switch: {e}"));
            wait_sites = false;
        }

        let tier = if address == 0 {
            Tier {
                kind: TierKind::SyscallsOnly,
                reason: "the address of namespace_sem is unknown, so no lock program runs".into(),
            }
        } else {
            match attach_lock_programs(
                &mut ebpf,
                options.hold_method,
                sample_period_ns,
                &kernel_btf,
                &mut notes,
            ) {
                Ok(tier) => tier,
                Err(e @ ProbeError::HoldMethodUnavailable { .. }) => return Err(e),
                Err(e) => {
                    warn!("lock programs failed to attach, showing syscall latency only: {e}");
                    notes.push(e.to_string());
                    Tier {
                        kind: TierKind::SyscallsOnly,
                        reason: format!("lock:contention_* could not attach: {e}"),
                    }
                }
            }
        };
        info!("measurement tier: {} ({})", tier.kind.label(), tier.reason);
        notes.extend(syscall_notes);
        let hold_sampled = tier.kind == TierKind::ContentionEstimate;
        Ok(Probes {
            ebpf,
            tier,
            lock_address,
            offsets,
            notes,
            wait_sites,
            hold_sampled,
            sample_period_ns,
            syscall_records: options.syscall_records,
            syscall_probes,
        })
    }

    /// Turns the per-call syscall records on or off while the programs run.
    pub fn set_syscall_records(&mut self, on: bool) -> Result<(), ProbeError> {
        if on != self.syscall_records {
            write_switch(&mut self.ebpf, switch_slot::SYSCALL_RECORDS, on)?;
            self.syscall_records = on;
        }
        Ok(())
    }
}

/// Prefix of the syscall functions' names on this architecture.
pub(crate) const SYSCALL_FUNCTION_PREFIX: &str = if cfg!(target_arch = "aarch64") {
    "__arm64_sys_"
} else {
    "__x64_sys_"
};

/// Attaches the enter and exit programs of every mount-family syscall the kernel has:
/// fentry/fexit on the syscall functions where they load, otherwise the tracepoints.
fn attach_syscall_programs(
    ebpf: &mut Ebpf,
    options: &ProbeOptions,
    kernel_btf: &KernelBtf,
    notes: &mut Vec<String>,
) -> Result<SyscallProbes, ProbeError> {
    let present: Vec<&str> = MountSyscall::ALL
        .iter()
        .map(|s| s.tracepoint_name())
        .filter(|name| {
            let exists = syscall_tracepoints_exist(name);
            if !exists {
                // Older kernels lack the newer syscalls, for example open_tree_attr (6.15).
                info!(
                    "{name} is not traced because this kernel has no sys_enter_{name} tracepoint"
                );
            }
            exists
        })
        .collect();
    if !options.syscall_tracepoints {
        match attach_syscall_fentry(ebpf, kernel_btf, &present) {
            Ok(()) => return Ok(SyscallProbes::Fentry),
            Err(e) => {
                let programs: Vec<String> = present
                    .iter()
                    .flat_map(|name| [format!("fentry_sys_{name}"), format!("fexit_sys_{name}")])
                    .collect();
                detach_all(ebpf, programs.iter().map(String::as_str));
                let text = describe_probe_error(&e);
                debug!("syscall fentry unavailable, using tracepoints: {text}");
                notes.push(format!("syscall fentry: {text}"));
            }
        }
    }
    for name in &present {
        attach_tracepoint(
            ebpf,
            &format!("exit_{name}"),
            "syscalls",
            &format!("sys_exit_{name}"),
        )?;
        attach_tracepoint(
            ebpf,
            &format!("enter_{name}"),
            "syscalls",
            &format!("sys_enter_{name}"),
        )?;
    }
    Ok(SyscallProbes::Tracepoints)
}

/// fentry/fexit on each syscall function. Each exit program is attached before its entry
/// program, so that no call is entered without its exit being traced.
fn attach_syscall_fentry(
    ebpf: &mut Ebpf,
    kernel_btf: &KernelBtf,
    names: &[&str],
) -> Result<(), ProbeError> {
    let btf = kernel_btf.get()?;
    for name in names {
        let function = format!("{SYSCALL_FUNCTION_PREFIX}{name}");
        attach_trampoline(ebpf, btf, &format!("fexit_sys_{name}"), &function, true)?;
        attach_trampoline(ebpf, btf, &format!("fentry_sys_{name}"), &function, false)?;
    }
    Ok(())
}

/// The kernel's BTF as aya reads it to load fentry/fexit programs. The syscall and the hold
/// programs both need it, and `/sys/kernel/btf/vmlinux` is several megabytes, so it is parsed
/// at most once per load of the probes.
#[derive(Default)]
struct KernelBtf(std::cell::OnceCell<Result<aya::Btf, String>>);

impl KernelBtf {
    fn get(&self) -> Result<&aya::Btf, ProbeError> {
        self.0
            .get_or_init(|| aya::Btf::from_sys_fs().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| ProbeError::System(format!("failed to read the kernel BTF: {e}")))
    }
}

/// Loads `program` as an fexit (`is_exit`) or fentry program on kernel `function` and
/// attaches it.
fn attach_trampoline(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    program: &str,
    function: &str,
    is_exit: bool,
) -> Result<(), ProbeError> {
    let prog = ebpf
        .program_mut(program)
        .ok_or_else(|| ProbeError::Missing(program.to_string()))?;
    if is_exit {
        let p: &mut FExit = prog.try_into().map_err(program_error(program))?;
        p.load(function, btf).map_err(program_error(program))?;
        p.attach().map_err(program_error(program))?;
    } else {
        let p: &mut FEntry = prog.try_into().map_err(program_error(program))?;
        p.load(function, btf).map_err(program_error(program))?;
        p.attach().map_err(program_error(program))?;
    }
    Ok(())
}

/// Sets one slot of the `SWITCHES` array that the programs read at every call.
fn write_switch(ebpf: &mut Ebpf, slot: u32, on: bool) -> Result<(), ProbeError> {
    let map = ebpf.map_mut("SWITCHES").ok_or_else(|| {
        ProbeError::System("map `SWITCHES` is missing from the eBPF object".into())
    })?;
    let mut switches = Array::<_, u32>::try_from(map)
        .map_err(|e| ProbeError::System(format!("map `SWITCHES`: {e}")))?;
    switches
        .set(slot, u32::from(on), 0)
        .map_err(|e| ProbeError::System(format!("failed to write map `SWITCHES`: {e}")))
}

/// Raises RLIMIT_MEMLOCK for kernels before 5.11 that charge BPF maps to it. Newer kernels
/// charge the memory cgroup, so a failure here is harmless and only logged.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        debug!(
            "setrlimit(RLIMIT_MEMLOCK) failed: {}; harmless on Linux 5.11+",
            std::io::Error::last_os_error()
        );
    }
}

/// Finds the address of `namespace_sem`: given, from kallsyms, or calibrated.
fn find_lock_address(options: &ProbeOptions, notes: &mut Vec<String>) -> Option<LockAddress> {
    if let Some(address) = options.lock_address {
        return Some(LockAddress {
            address: format!("{address:#x}"),
            source: AddressSource::Kallsyms,
        });
    }
    if let Some(address) = kallsyms::lookup("namespace_sem") {
        return Some(LockAddress {
            address: format!("{address:#x}"),
            source: AddressSource::Kallsyms,
        });
    }
    match calibrate::find_namespace_sem() {
        Ok(c) => Some(LockAddress {
            address: format!("{:#x}", c.address),
            source: AddressSource::Calibration,
        }),
        Err(e) => {
            warn!("could not find namespace_sem: {e}");
            notes.push(format!("namespace_sem not found: {e}"));
            None
        }
    }
}

/// Returns whether tracefs lists `syscalls:sys_enter_<name>`, which exists only when the
/// kernel has the syscall.
fn syscall_tracepoints_exist(name: &str) -> bool {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .any(|root| {
            std::path::Path::new(root)
                .join(format!("events/syscalls/sys_enter_{name}"))
                .is_dir()
        })
}

fn program_error(program: &str) -> impl FnOnce(ProgramError) -> ProbeError + '_ {
    move |source| ProbeError::Program {
        program: program.to_string(),
        source,
    }
}

fn attach_tracepoint(
    ebpf: &mut Ebpf,
    program: &str,
    category: &str,
    name: &str,
) -> Result<(), ProbeError> {
    let tp: &mut TracePoint = ebpf
        .program_mut(program)
        .ok_or_else(|| ProbeError::Missing(program.to_string()))?
        .try_into()
        .map_err(program_error(program))?;
    tp.load().map_err(program_error(program))?;
    tp.attach(category, name).map_err(program_error(program))?;
    Ok(())
}

/// Attaches the contention tracepoints and the best hold-time method allowed.
fn attach_lock_programs(
    ebpf: &mut Ebpf,
    method: HoldMethod,
    sample_period_ns: u64,
    kernel_btf: &KernelBtf,
    notes: &mut Vec<String>,
) -> Result<Tier, ProbeError> {
    attach_tracepoint(ebpf, "contention_end", "lock", "contention_end")?;
    attach_tracepoint(ebpf, "contention_begin", "lock", "contention_begin")?;

    if matches!(method, HoldMethod::Auto | HoldMethod::Fentry) {
        match attach_fentry(ebpf, kernel_btf) {
            Ok(()) => {
                return Ok(Tier {
                    kind: TierKind::ExactFentry,
                    reason: "fentry/fexit on the rwsem operations loaded".into(),
                });
            }
            Err(e) => {
                detach_all(ebpf, FENTRY_PROGRAMS.iter().map(|(p, _, _)| *p));
                let text = describe_probe_error(&e);
                debug!("fentry tier unavailable: {text}");
                notes.push(format!("fentry: {text}"));
            }
        }
    }
    if matches!(method, HoldMethod::Auto | HoldMethod::Kprobe) && !kprobes_available() {
        let text = "the kernel has no kprobe support (no kprobe PMU and no kprobe_events file)";
        debug!("kprobe tier unavailable: {text}");
        notes.push(format!("kprobe: {text}"));
    } else if matches!(method, HoldMethod::Auto | HoldMethod::Kprobe) {
        match attach_kprobes(ebpf) {
            Ok(()) => {
                return Ok(Tier {
                    kind: TierKind::ExactKprobe,
                    reason: "fentry is unavailable; kprobes on the rwsem operations loaded".into(),
                });
            }
            Err(e) => {
                detach_all(ebpf, KPROBE_PROGRAMS.iter().map(|(p, _, _)| *p));
                let text = describe_probe_error(&e);
                debug!("kprobe tier unavailable: {text}");
                notes.push(format!("kprobe: {text}"));
            }
        }
    }
    if matches!(method, HoldMethod::Auto | HoldMethod::Sample) {
        if let Err(e) = attach_sampler(ebpf, sample_period_ns) {
            detach_all(ebpf, ["sample_hold"]);
            let text = describe_probe_error(&e);
            if method == HoldMethod::Sample {
                return Err(ProbeError::HoldMethodUnavailable {
                    method: "sample",
                    reason: text,
                });
            }
            warn!("no hold-time method loads, so hold time is not measured: {text}");
            notes.push(format!("sampler: {text}"));
            return Ok(Tier {
                kind: TierKind::ContentionOnly,
                reason: format!(
                    "waits from lock:contention_*; no hold-time method loads ({})",
                    notes.join("; ")
                ),
            });
        }
        let why = if method == HoldMethod::Sample {
            format!(
                "the cpu-clock sampler was requested, every {} µs",
                sample_period_ns / 1000
            )
        } else {
            format!(
                "fentry and kprobes are unavailable ({}), so a cpu-clock sampler every {} µs \
                 estimates hold time",
                notes.join("; "),
                sample_period_ns / 1000
            )
        };
        return Ok(Tier {
            kind: TierKind::ContentionEstimate,
            reason: why,
        });
    }
    let method_name = match method {
        HoldMethod::Fentry => "fentry",
        HoldMethod::Kprobe => "kprobe",
        _ => {
            return Ok(Tier {
                kind: TierKind::ContentionOnly,
                reason: "waits from lock:contention_*; hold time is not measured, as \
                         --hold-method none requests"
                    .into(),
            });
        }
    };
    Err(ProbeError::HoldMethodUnavailable {
        method: method_name,
        reason: notes.join("; "),
    })
}

/// Reports whether the kernel has kprobes: a kprobe PMU, or the tracefs file for kprobe
/// events.
pub fn kprobes_available() -> bool {
    std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists()
        || std::path::Path::new("/sys/kernel/tracing/kprobe_events").exists()
}

/// A program error on one line. aya's message already carries the errno; it ends with
/// "Verifier output:" and the log, which is empty when the kernel rejects the program before
/// the verifier runs, as kernels that forbid fentry do.
pub fn describe_program_error(e: &ProgramError) -> String {
    let text = e.to_string();
    let Some(at) = text.find("Verifier output:") else {
        return text;
    };
    let log = text[at + "Verifier output:".len()..].trim();
    let head = text[..at].trim_end().trim_end_matches('.');
    if log.is_empty() {
        format!("{head}, with an empty verifier log (the kernel rejects this program type)")
    } else {
        format!("{head}; verifier: {log}")
    }
}

fn describe_probe_error(e: &ProbeError) -> String {
    match e {
        ProbeError::Program { program, source } => {
            format!("`{program}`: {}", describe_program_error(source))
        }
        other => other.to_string(),
    }
}

/// fentry/fexit programs of the exact tier: (program, kernel function, whether it is fexit).
const FENTRY_PROGRAMS: [(&str, &str, bool); 5] = [
    ("fexit_down_write", "down_write", true),
    ("fexit_down_read", "down_read", true),
    ("fentry_up_write", "up_write", false),
    ("fentry_up_read", "up_read", false),
    ("fentry_downgrade_write", "downgrade_write", false),
];

fn attach_fentry(ebpf: &mut Ebpf, kernel_btf: &KernelBtf) -> Result<(), ProbeError> {
    let btf = kernel_btf.get()?;
    for (program, function, is_exit) in FENTRY_PROGRAMS {
        attach_trampoline(ebpf, btf, program, function, is_exit)?;
    }
    Ok(())
}

/// kprobe programs: (program, function, whether it is a return probe).
const KPROBE_PROGRAMS: [(&str, &str, bool); 7] = [
    ("kprobe_down_write", "down_write", false),
    ("kretprobe_down_write", "down_write", true),
    ("kprobe_down_read", "down_read", false),
    ("kretprobe_down_read", "down_read", true),
    ("kprobe_up_write", "up_write", false),
    ("kprobe_up_read", "up_read", false),
    ("kprobe_downgrade_write", "downgrade_write", false),
];

fn attach_kprobes(ebpf: &mut Ebpf) -> Result<(), ProbeError> {
    for (program, function, _) in KPROBE_PROGRAMS {
        let p: &mut KProbe = ebpf
            .program_mut(program)
            .ok_or_else(|| ProbeError::Missing(program.to_string()))?
            .try_into()
            .map_err(program_error(program))?;
        p.load().map_err(program_error(program))?;
        p.attach(function, 0).map_err(program_error(program))?;
    }
    Ok(())
}

fn attach_sampler(ebpf: &mut Ebpf, period_ns: u64) -> Result<(), ProbeError> {
    let program = "sample_hold";
    let p: &mut PerfEvent = ebpf
        .program_mut(program)
        .ok_or_else(|| ProbeError::Missing(program.to_string()))?
        .try_into()
        .map_err(program_error(program))?;
    p.load().map_err(program_error(program))?;
    let cpus = aya::util::online_cpus()
        .map_err(|(what, e)| ProbeError::System(format!("failed to read {what}: {e}")))?;
    for cpu in cpus {
        p.attach(
            PerfEventConfig::Software(SoftwareEvent::CpuClock),
            PerfEventScope::AllProcessesOneCpu { cpu },
            SamplePolicy::Period(period_ns),
            false,
        )
        .map_err(program_error(program))?;
    }
    Ok(())
}

/// Unloads programs of a tier that failed half-way, so none of them stays attached.
fn detach_all<'a>(ebpf: &mut Ebpf, programs: impl IntoIterator<Item = &'a str>) {
    for name in programs {
        if let Some(program) = ebpf.program_mut(name) {
            let result = match program {
                aya::programs::Program::FEntry(p) => p.unload(),
                aya::programs::Program::FExit(p) => p.unload(),
                aya::programs::Program::KProbe(p) => p.unload(),
                _ => Ok(()),
            };
            if let Err(e) = result {
                debug!("unloading {name}: {e}");
            }
        }
    }
}
