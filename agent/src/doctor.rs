//! `mountscope doctor`: checks for real, by loading small programs, what this kernel allows,
//! and which measurement tier mountscope will use.

use std::path::Path;

use aya::{
    Ebpf, EbpfLoader,
    programs::{
        BtfTracePoint, FExit, KProbe, PerfEvent, TracePoint,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
    },
};
use mountscope_common::snapshot::{AddressSource, LockAddress, SyscallProbes, Tier, TierKind};
use serde::Serialize;

use crate::probes::{
    SAMPLE_PERIOD_NS, SYSCALL_FUNCTION_PREFIX,
    btf::{Btf, KernelOffsets, VMLINUX_BTF},
    calibrate, describe_program_error, kallsyms, kprobes_available, object, tracefs,
};

/// Outcome of one check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Yes,
    No,
    /// The kernel rejected the program; the detail names the error.
    Refused,
    /// The kernel lacks the feature altogether.
    Missing,
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// Stable identifier, for example `fentry`.
    pub id: &'static str,
    pub what: &'static str,
    pub status: Status,
    pub detail: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub kernel: String,
    pub checks: Vec<Check>,
    pub lock_address: Option<LockAddress>,
    pub tier: Tier,
    /// Method that will time the mount syscalls: fentry/fexit where the syscall fentry check
    /// passes.
    pub syscall_probes: SyscallProbes,
}

impl Report {
    pub fn check(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }

    fn passed(&self, id: &str) -> bool {
        self.check(id).is_some_and(|c| c.status == Status::Yes)
    }
}

fn check(id: &'static str, what: &'static str, result: Result<String, (Status, String)>) -> Check {
    match result {
        Ok(detail) => Check {
            id,
            what,
            status: Status::Yes,
            detail,
        },
        Err((status, detail)) => Check {
            id,
            what,
            status,
            detail,
        },
    }
}

/// Runs every check. Needs root; without it most checks report the permission error.
pub fn run() -> Report {
    let mut checks = Vec::new();

    let btf = Btf::from_sys_fs();
    checks.push(check(
        "btf",
        "kernel BTF (/sys/kernel/btf/vmlinux)",
        match &btf {
            Ok(btf) => match KernelOffsets::from_btf(btf) {
                Ok(o) => Ok(format!(
                    "rw_semaphore.owner at +{}, task_struct.comm at +{}",
                    o.rwsem_owner, o.task_comm
                )),
                Err(e) => Err((Status::No, e.to_string())),
            },
            Err(e) => Err((Status::Missing, e.to_string())),
        },
    ));

    checks.push(check(
        "tracefs",
        "tracefs mounted",
        match tracefs::ensure_mounted() {
            Ok(tracefs::TracefsState::AlreadyMounted) => Ok("already mounted".into()),
            Ok(tracefs::TracefsState::MountedNow) => Ok("mounted it at /sys/kernel/tracing".into()),
            Err(e) => Err((Status::No, e.to_string())),
        },
    ));

    let kallsyms_all = kallsyms::lists_data_symbols();
    checks.push(check(
        "kallsyms_all",
        "CONFIG_KALLSYMS_ALL (data symbols in /proc/kallsyms)",
        if kallsyms_all {
            Ok("data symbols are listed".into())
        } else {
            Err((
                Status::Missing,
                "/proc/kallsyms lists no data symbols, so namespace_sem is found by calibration"
                    .into(),
            ))
        },
    ));

    let mut ebpf = if object::is_embedded() {
        EbpfLoader::new()
            .load(object::EBPF_OBJECT)
            .map_err(|e| e.to_string())
    } else {
        Err("this binary was built without its eBPF programs (AYA_BUILD_SKIP)".to_string())
    };

    let tracepoints = match &mut ebpf {
        Ok(ebpf) => check_syscall_tracepoints(ebpf),
        Err(e) => Err((Status::No, e.clone())),
    };
    checks.push(check(
        "syscall_tracepoints",
        "syscalls:sys_{enter,exit}_mount fire",
        tracepoints,
    ));

    let contention = match &mut ebpf {
        Ok(ebpf) => load_tracepoint(ebpf, "contention_begin", "lock", "contention_begin")
            .map(|()| "lock:contention_begin attached".to_string()),
        Err(e) => Err((Status::No, e.clone())),
    };
    checks.push(check(
        "contention_tracepoints",
        "lock:contention_* tracepoints",
        contention,
    ));

    let (tp_btf, fentry, syscall_fentry, kprobe) = match (&mut ebpf, &btf) {
        (Ok(ebpf), _) => {
            let aya_btf = aya::Btf::from_sys_fs();
            let tp_btf = match &aya_btf {
                Ok(b) => check_tp_btf(ebpf, b),
                Err(e) => Err((Status::Missing, e.to_string())),
            };
            let fentry = match &aya_btf {
                Ok(b) => check_fentry(ebpf, b),
                Err(e) => Err((Status::Missing, e.to_string())),
            };
            let syscall_fentry = match &aya_btf {
                Ok(b) => check_syscall_fentry(ebpf, b),
                Err(e) => Err((Status::Missing, e.to_string())),
            };
            (tp_btf, fentry, syscall_fentry, check_kprobe(ebpf))
        }
        (Err(e), _) => (
            Err((Status::No, e.clone())),
            Err((Status::No, e.clone())),
            Err((Status::No, e.clone())),
            Err((Status::No, e.clone())),
        ),
    };
    checks.push(check("tp_btf", "BTF tracepoints (tp_btf)", tp_btf));
    checks.push(check("fentry", "fentry/fexit on down_write", fentry));
    checks.push(check(
        "syscall_fentry",
        "fentry/fexit on the mount syscall",
        syscall_fentry,
    ));
    checks.push(check("kprobe", "kprobes on up_write", kprobe));

    let perf = match &mut ebpf {
        Ok(ebpf) => check_perf(ebpf),
        Err(e) => Err((Status::No, e.clone())),
    };
    checks.push(check(
        "perf_sampling",
        "cpu-clock sampling with a BPF program",
        perf,
    ));
    drop(ebpf);

    let lock_address = find_address(&mut checks);

    let mut report = Report {
        kernel: crate::collect::kernel_release(),
        checks,
        lock_address,
        tier: Tier {
            kind: TierKind::SyscallsOnly,
            reason: String::new(),
        },
        syscall_probes: SyscallProbes::Tracepoints,
    };
    report.tier = choose_tier(&report);
    if report.passed("syscall_fentry") {
        report.syscall_probes = SyscallProbes::Fentry;
    }
    report
}

fn find_address(checks: &mut Vec<Check>) -> Option<LockAddress> {
    if let Some(address) = kallsyms::lookup("namespace_sem") {
        checks.push(check(
            "namespace_sem",
            "namespace_sem address",
            Ok(format!("{address:#x} from /proc/kallsyms")),
        ));
        return Some(LockAddress {
            address: format!("{address:#x}"),
            source: AddressSource::Kallsyms,
        });
    }
    if !object::is_embedded() {
        checks.push(check(
            "namespace_sem",
            "namespace_sem address",
            Err((Status::No, "no eBPF programs in this binary".into())),
        ));
        return None;
    }
    match calibrate::find_namespace_sem() {
        Ok(c) => {
            checks.push(check(
                "namespace_sem",
                "namespace_sem address",
                Ok(format!(
                    "{:#x} found by calibration in {} ms",
                    c.address,
                    c.duration.as_millis()
                )),
            ));
            Some(LockAddress {
                address: format!("{:#x}", c.address),
                source: AddressSource::Calibration,
            })
        }
        Err(e) => {
            checks.push(check(
                "namespace_sem",
                "namespace_sem address",
                Err((Status::No, e.to_string())),
            ));
            None
        }
    }
}

/// Returns the tier `Probes::load` would pick given these checks.
fn choose_tier(report: &Report) -> Tier {
    let reason_no = |id: &str| {
        report
            .check(id)
            .map(|c| format!("{id}: {}", c.detail))
            .unwrap_or_default()
    };
    if !report.passed("syscall_tracepoints") {
        return Tier {
            kind: TierKind::SyscallsOnly,
            reason: format!(
                "syscall tracepoints do not work ({})",
                reason_no("syscall_tracepoints")
            ),
        };
    }
    if report.lock_address.is_none() || !report.passed("contention_tracepoints") {
        return Tier {
            kind: TierKind::SyscallsOnly,
            reason: format!(
                "lock figures need the namespace_sem address and lock:contention_* ({}; {})",
                reason_no("namespace_sem"),
                reason_no("contention_tracepoints")
            ),
        };
    }
    if report.passed("fentry") {
        return Tier {
            kind: TierKind::ExactFentry,
            reason: "fentry/fexit load: exact wait and hold per acquisition".into(),
        };
    }
    if report.passed("kprobe") {
        return Tier {
            kind: TierKind::ExactKprobe,
            reason: format!(
                "fentry is unavailable ({}); kprobes give exact hold times",
                reason_no("fentry")
            ),
        };
    }
    if report.passed("perf_sampling") {
        return Tier {
            kind: TierKind::ContentionEstimate,
            reason: format!(
                "exact waits from lock:contention_*; hold time is an estimate from a cpu-clock \
                 sampler every {} µs, because fentry ({}) and kprobes ({}) are unavailable",
                SAMPLE_PERIOD_NS / 1000,
                report.check("fentry").map_or("", |c| c.detail.as_str()),
                report.check("kprobe").map_or("", |c| c.detail.as_str()),
            ),
        };
    }
    Tier {
        kind: TierKind::ContentionOnly,
        reason: format!(
            "exact waits from lock:contention_*; no hold-time method loads ({}; {}; {})",
            reason_no("fentry"),
            reason_no("kprobe"),
            reason_no("perf_sampling"),
        ),
    }
}

fn load_tracepoint(
    ebpf: &mut Ebpf,
    program: &str,
    category: &str,
    name: &str,
) -> Result<(), (Status, String)> {
    let tp: &mut TracePoint = ebpf
        .program_mut(program)
        .ok_or_else(|| (Status::No, format!("program `{program}` missing")))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| (Status::No, e.to_string()))?;
    tp.load()
        .map_err(|e| (Status::Refused, describe_program_error(&e)))?;
    tp.attach(category, name)
        .map_err(|e| (Status::Refused, describe_program_error(&e)))?;
    Ok(())
}

/// Attaches the mount tracepoints, calls `mount(2)` on a path that does not exist, and checks
/// that the exit program counted it.
fn check_syscall_tracepoints(ebpf: &mut Ebpf) -> Result<String, (Status, String)> {
    load_tracepoint(ebpf, "exit_mount", "syscalls", "sys_exit_mount")?;
    load_tracepoint(ebpf, "enter_mount", "syscalls", "sys_enter_mount")?;
    let missing = Path::new("/nonexistent/mountscope-doctor");
    let result = nix::mount::mount(
        Some("none"),
        missing,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    );
    if result.is_ok() {
        let _ = nix::mount::umount(missing);
    }
    let stats: aya::maps::PerCpuArray<_, mountscope_common::SyscallStats> =
        aya::maps::PerCpuArray::try_from(
            ebpf.map("SYSCALL_STATS")
                .ok_or((Status::No, "map `SYSCALL_STATS` missing".to_string()))?,
        )
        .map_err(|e| (Status::No, e.to_string()))?;
    let calls: u64 = stats
        .get(&(mountscope_common::MountSyscall::Mount.index() as u32), 0)
        .map_err(|e| (Status::No, e.to_string()))?
        .iter()
        .map(|s| s.calls)
        .sum();
    if calls == 0 {
        return Err((
            Status::No,
            "attached, but a test mount(2) call was not seen".into(),
        ));
    }
    Ok(format!(
        "attached; a test mount(2) call was counted ({calls} seen)"
    ))
}

fn check_tp_btf(ebpf: &mut Ebpf, btf: &aya::Btf) -> Result<String, (Status, String)> {
    let p: &mut BtfTracePoint = ebpf
        .program_mut("doctor_tp_btf")
        .ok_or((Status::No, "program `doctor_tp_btf` missing".to_string()))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| (Status::No, e.to_string()))?;
    p.load("contention_begin", btf)
        .map_err(|e| (Status::Refused, describe_program_error(&e)))?;
    p.attach()
        .map_err(|e| (Status::Refused, describe_program_error(&e)))?;
    Ok("tp_btf/contention_begin attached".into())
}

fn check_fentry(ebpf: &mut Ebpf, btf: &aya::Btf) -> Result<String, (Status, String)> {
    check_fexit(ebpf, btf, "fexit_down_write", "down_write")
}

/// Loads fexit on the mount syscall's function, as the loader does for every mount syscall.
fn check_syscall_fentry(ebpf: &mut Ebpf, btf: &aya::Btf) -> Result<String, (Status, String)> {
    let function = format!("{SYSCALL_FUNCTION_PREFIX}mount");
    check_fexit(ebpf, btf, "fexit_sys_mount", &function)
}

/// Loads the fexit program `program` on the kernel function `function` and attaches it.
fn check_fexit(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    program: &str,
    function: &str,
) -> Result<String, (Status, String)> {
    let p: &mut FExit = ebpf
        .program_mut(program)
        .ok_or_else(|| (Status::No, format!("program `{program}` missing")))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| (Status::No, e.to_string()))?;
    p.load(function, btf)
        .map_err(|e| (Status::Refused, describe_program_error(&e)))?;
    p.attach()
        .map_err(|e| (Status::Refused, describe_program_error(&e)))?;
    Ok(format!("fexit/{function} attached"))
}

fn check_kprobe(ebpf: &mut Ebpf) -> Result<String, (Status, String)> {
    if !kprobes_available() {
        return Err((
            Status::Missing,
            "the kernel has no kprobe support (no kprobe PMU, no kprobe_events; CONFIG_KPROBES \
             is unset)"
                .into(),
        ));
    }
    let p: &mut KProbe = ebpf
        .program_mut("kprobe_up_write")
        .ok_or((Status::No, "program `kprobe_up_write` missing".to_string()))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| (Status::No, e.to_string()))?;
    p.load()
        .map_err(|e| (Status::Refused, describe_program_error(&e)))?;
    p.attach("up_write", 0)
        .map_err(|e| (Status::Refused, describe_program_error(&e)))?;
    Ok("kprobe/up_write attached".into())
}

fn check_perf(ebpf: &mut Ebpf) -> Result<String, (Status, String)> {
    let p: &mut PerfEvent = ebpf
        .program_mut("sample_hold")
        .ok_or((Status::No, "program `sample_hold` missing".to_string()))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| (Status::No, e.to_string()))?;
    p.load()
        .map_err(|e| (Status::Refused, describe_program_error(&e)))?;
    p.attach(
        PerfEventConfig::Software(SoftwareEvent::CpuClock),
        PerfEventScope::AllProcessesOneCpu { cpu: 0 },
        SamplePolicy::Period(SAMPLE_PERIOD_NS),
        false,
    )
    .map_err(|e| (Status::Refused, describe_program_error(&e)))?;
    Ok(format!(
        "cpu-clock every {} µs attached on CPU 0",
        SAMPLE_PERIOD_NS / 1000
    ))
}

/// Formats the report as an aligned table for a terminal.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    out.push_str(&format!("kernel {}\n\n", report.kernel));
    let width = report
        .checks
        .iter()
        .map(|c| c.what.len())
        .max()
        .unwrap_or(0);
    for c in &report.checks {
        let status = match c.status {
            Status::Yes => "yes",
            Status::No => "no",
            Status::Refused => "refused",
            Status::Missing => "missing",
        };
        out.push_str(&format!("{:<width$}  {:<8} {}\n", c.what, status, c.detail));
    }
    out.push_str(&format!(
        "\ntier: {}\nwhy:  {}\nsyscalls timed with: {}\n",
        report.tier.kind.label(),
        report.tier.reason,
        report.syscall_probes.label()
    ));
    if !Path::new(VMLINUX_BTF).exists() {
        out.push_str("note: without kernel BTF mountscope cannot run\n");
    }
    out
}
