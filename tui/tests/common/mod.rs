//! Fixed snapshots for the tests and a golden-file check of rendered frames.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]

use std::fs;
use std::path::PathBuf;

use mountscope_common::snapshot::{
    AddressSource, Drops, ExecutorSettings, ExecutorStatus, HoldEstimate, HolderFigures, Latency,
    LockAddress, LockFigures, MountApi, Snapshot, Strategy, StrategyFigures, SyscallFigures,
    SyscallProbes, Tier, TierKind, WaitSite,
};
use mountscope_common::{LockMode, MountSyscall, WaitKind};
use mountscope_tui::{App, Event, draw};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

/// Builds a snapshot at the estimate tier, executor running strategy A with both A/B sides known.
pub fn estimate_with_executor() -> Snapshot {
    let mut snapshot = base(
        TierKind::ContentionEstimate,
        "fentry on rwsem unavailable (BTF lacks down_write)",
    );
    snapshot.lock_address = Some(LockAddress {
        address: "0xffffffff9a4c31e0".to_string(),
        source: AddressSource::Calibration,
    });
    snapshot.hold_estimate = Some(HoldEstimate {
        period_ns: 1_000_000,
        samples: 2_000,
        write_held_samples: 246,
        share_held: 0.123,
        hold_ns: 123_000_000,
        hold_ns_by_syscall: vec![(MountSyscall::Mount, 90_000_000)],
    });
    snapshot.drops = Drops {
        ringbuf: 3,
        ..Drops::default()
    };
    snapshot.drops_total = Drops {
        ringbuf: 17,
        unpaired: 2,
        ..Drops::default()
    };
    snapshot.wait_sites_recorded = true;
    snapshot.wait_sites = vec![
        WaitSite {
            name: "RCU expedited grace period".to_string(),
            kind: WaitKind::Blocked,
            syscall: MountSyscall::Umount2,
            count: 16916,
            total_ns: 6_658_946_436,
            p99_ns: 1_900_000,
            share: 0.762,
            stack: vec!["synchronize_rcu_expedited+0x10e".to_string()],
        },
        WaitSite {
            name: "namespace_sem".to_string(),
            kind: WaitKind::Lock,
            syscall: MountSyscall::Mount,
            count: 54,
            total_ns: 31_694_399,
            p99_ns: 2_400_000,
            share: 0.074,
            stack: Vec::new(),
        },
    ];
    snapshot.executor = Some(executor());
    snapshot
}

/// Builds a snapshot at the fentry tier with exact hold figures and no executor.
pub fn exact_no_executor() -> Snapshot {
    let mut snapshot = base(
        TierKind::ExactFentry,
        "fentry attached to down_write and up_write",
    );
    snapshot.syscall_probes = SyscallProbes::Fentry;
    snapshot.lock_holds = vec![
        lock_figures(LockMode::Write, 310, 48_000_000, 90_000, 1_400_000),
        lock_figures(LockMode::Read, 1_200, 6_000_000, 3_000, 16_000),
    ];
    snapshot
}

/// Builds an exact-tier snapshot with the executor paused and no A/B figures yet.
pub fn exact_with_executor() -> Snapshot {
    let mut snapshot = exact_no_executor();
    let mut executor = executor();
    executor.settings.paused = true;
    executor.last_a = None;
    executor.last_b = None;
    executor.failures_total = 1;
    executor.last_error = Some("fsmount: EBUSY".to_string());
    snapshot.executor = Some(executor);
    snapshot
}

/// Builds a snapshot at the contention tier with hold time turned off (`--hold-method none`):
/// waits but no hold figures, and no executor.
pub fn contention_only() -> Snapshot {
    let mut snapshot = estimate_with_executor();
    snapshot.tier = Tier {
        kind: TierKind::ContentionOnly,
        reason: "waits from lock:contention_*; hold time is not measured, as --hold-method none \
                 requests"
            .to_string(),
    };
    snapshot.hold_estimate = None;
    snapshot.executor = None;
    snapshot
}

/// Builds a snapshot taken right after start: no syscalls, no contention, no address.
pub fn empty() -> Snapshot {
    let mut snapshot = base(
        TierKind::SyscallsOnly,
        "lock tracepoints missing (needs Linux 5.19)",
    );
    snapshot.syscalls.clear();
    snapshot.lock_waits.clear();
    snapshot.holders_by_process.clear();
    snapshot.holders_by_cgroup.clear();
    snapshot.wait_sites_recorded = false;
    snapshot
}

/// Copies the snapshot `seconds` later, with waits scaled by `scale` so a timeline has shape.
pub fn later(snapshot: &Snapshot, seconds: u64, scale: f64) -> Snapshot {
    let mut later = snapshot.clone();
    later.time_unix_ms += seconds * 1000;
    later.uptime_ms += seconds * 1000;
    for waits in &mut later.lock_waits {
        waits.rate_per_s *= scale;
    }
    for holds in &mut later.lock_holds {
        holds.total_ns = (holds.total_ns as f64 * scale) as u64;
    }
    if let Some(estimate) = &mut later.hold_estimate {
        estimate.hold_ns = (estimate.hold_ns as f64 * scale) as u64;
    }
    later
}

fn base(kind: TierKind, reason: &str) -> Snapshot {
    Snapshot {
        time_unix_ms: 1_760_000_000_000,
        interval_ms: 1000,
        uptime_ms: 3_723_000,
        kernel: "6.8.0-45-generic".to_string(),
        tier: Tier {
            kind,
            reason: reason.to_string(),
        },
        syscall_probes: Default::default(),
        lock_address: Some(LockAddress {
            address: "0xffffffff9a4c31e0".to_string(),
            source: AddressSource::Kallsyms,
        }),
        syscalls: vec![
            syscall(MountSyscall::Mount, 420, 2, 38_000, 520_000, 2_100_000),
            syscall(MountSyscall::Umount2, 400, 0, 61_000, 1_050_000, 4_800_000),
            syscall(MountSyscall::OpenTree, 260, 0, 9_000, 33_000, 120_000),
            syscall(MountSyscall::MountSetattr, 250, 1, 17_000, 260_000, 900_000),
            syscall(MountSyscall::MoveMount, 130, 0, 8_000, 66_000, 310_000),
            syscall(MountSyscall::Fsconfig, 0, 0, 0, 0, 0),
        ],
        lock_waits: vec![
            lock_figures(LockMode::Write, 118, 31_000_000, 130_000, 2_100_000),
            lock_figures(LockMode::Read, 42, 5_000_000, 66_000, 520_000),
        ],
        lock_holds: Vec::new(),
        hold_estimate: None,
        holders_by_process: vec![
            holder(
                "pid:4242",
                Some(4242),
                Some("containerd"),
                None,
                90,
                21_000_000,
            ),
            holder(
                "pid:5150",
                Some(5150),
                Some("mountscope-exec"),
                None,
                60,
                14_000_000,
            ),
            holder("readers", None, None, None, 10, 1_000_000),
        ],
        holders_by_cgroup: vec![
            holder("cgroup:9912", None, None, Some(9912), 70, 16_000_000),
            holder("cgroup:8801", None, None, Some(8801), 80, 19_000_000),
        ],
        drops: Drops::default(),
        drops_total: Drops::default(),
        wait_sites_recorded: true,
        wait_sites: Vec::new(),
        breakdown: Vec::new(),
        executor: None,
    }
}

fn executor() -> ExecutorStatus {
    ExecutorStatus {
        settings: ExecutorSettings {
            strategy: Strategy::PerLayer,
            layers: 20,
            builders: 4,
            idmap: true,
            mount_api: MountApi::Fsconfig,
            paused: false,
        },
        builds_total: 5_120,
        failures_total: 0,
        unmount_busy_retries: 0,
        builds: 12,
        current: StrategyFigures {
            builds_per_s: 12.0,
            build_p50_ns: 82_000_000,
            build_p99_ns: 210_000_000,
            syscalls_per_build: 43.0,
            waits_per_build: 9.8,
        },
        last_a: Some(StrategyFigures {
            builds_per_s: 12.5,
            build_p50_ns: 80_000_000,
            build_p99_ns: 205_000_000,
            syscalls_per_build: 43.0,
            waits_per_build: 9.6,
        }),
        last_b: Some(StrategyFigures {
            builds_per_s: 30.1,
            build_p50_ns: 31_000_000,
            build_p99_ns: 74_000_000,
            syscalls_per_build: 5.0,
            waits_per_build: 1.2,
        }),
        last_error: None,
    }
}

fn syscall(
    syscall: MountSyscall,
    calls: u64,
    errors: u64,
    p50_ns: u64,
    p99_ns: u64,
    max_ns: u64,
) -> SyscallFigures {
    SyscallFigures {
        syscall,
        calls_total: calls * 60,
        errors_total: errors * 60,
        calls,
        errors,
        rate_per_s: calls as f64,
        latency: Latency {
            p50_ns,
            p90_ns: p99_ns / 2,
            p99_ns,
            max_ns,
            mean_ns: p50_ns,
        },
        errors_by_errno: Vec::new(),
    }
}

fn lock_figures(
    mode: LockMode,
    count: u64,
    total_ns: u64,
    p50_ns: u64,
    p99_ns: u64,
) -> LockFigures {
    LockFigures {
        mode,
        count_total: count * 60,
        count,
        rate_per_s: count as f64,
        total_ns,
        in_syscall: count / 2,
        latency: Latency {
            p50_ns,
            p90_ns: p99_ns / 2,
            p99_ns,
            max_ns: p99_ns * 2,
            mean_ns: p50_ns,
        },
    }
}

fn holder(
    key: &str,
    pid: Option<u32>,
    comm: Option<&str>,
    cgroup_id: Option<u64>,
    waits: u64,
    wait_ns: u64,
) -> HolderFigures {
    HolderFigures {
        key: key.to_string(),
        pid,
        comm: comm.map(str::to_string),
        cgroup_id,
        syscall: Some(MountSyscall::Mount),
        waits,
        wait_ns,
    }
}

/// Builds an app that has received `snapshots` in order.
pub fn app_with(snapshots: &[Snapshot]) -> App {
    let mut app = App::new();
    for snapshot in snapshots {
        app.update(Event::Snapshot(Box::new(snapshot.clone())));
    }
    app
}

/// Builds a minute of snapshots ending at `last`, with waits rising and falling.
pub fn minute_ending_with(last: &Snapshot) -> Vec<Snapshot> {
    let mut first = last.clone();
    first.time_unix_ms -= 59_000;
    first.uptime_ms -= 59_000;
    (0..60)
        .map(|second| {
            let scale = 0.5 + (second % 12) as f64 / 8.0;
            later(&first, second, if second == 59 { 1.0 } else { scale })
        })
        .collect()
}

/// Renders `app` on a test backend and returns the lines, trailing spaces trimmed.
pub fn render(app: &App, columns: u16, rows: u16) -> String {
    let mut terminal =
        Terminal::new(TestBackend::new(columns, rows)).expect("failed to create the test backend");
    terminal
        .draw(|frame| draw::draw(frame, app))
        .expect("failed to draw on the test backend");

    let buffer = terminal.backend().buffer();
    let mut text = String::new();
    for y in 0..buffer.area.height {
        let line: String = (0..buffer.area.width)
            .map(|x| buffer[(x, y)].symbol())
            .collect();
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// Compares `text` with `tests/snapshots/NAME.txt`. With `UPDATE_SNAPSHOTS=1` it rewrites the
/// file instead.
pub fn assert_golden(name: &str, text: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{name}.txt"));

    if std::env::var_os("UPDATE_SNAPSHOTS").is_some_and(|v| v == "1") {
        fs::write(&path, text)
            .unwrap_or_else(|e| panic!("failed to write {}: {e}", path.display()));
        return;
    }

    let expected = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "failed to read {}: {e}; run with UPDATE_SNAPSHOTS=1 to create it",
            path.display()
        )
    });
    assert!(
        expected == text,
        "frame differs from {}; rerun with UPDATE_SNAPSHOTS=1 and review the diff\n\
         --- expected\n{expected}--- rendered\n{text}",
        path.display()
    );
}
