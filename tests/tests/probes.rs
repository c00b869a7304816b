//! Privileged tests of the kernel programs: each test enters its own private mount namespace,
//! loads the real programs filtered to that namespace, makes real mounts and checks what the
//! programs counted. They need root and a kernel with BTF and syscall tracepoints; without
//! root they print why and pass without checking anything.

use std::{
    ffi::CString,
    fs,
    os::{fd::FromRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use mountscope_agent::{
    collect::{Collector, event::EventRecord, totals::Totals},
    probes::{Filters, HoldMethod, ProbeError, ProbeOptions, Probes, calibrate},
};
use mountscope_common::{
    HolderKind, LockMode, MountSyscall, drop_slot, sampler_slot, snapshot::TierKind,
};
use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, unshare},
};

/// Serialises the tests that mount or calibrate: their mounts contend on the one global
/// namespace_sem, and on a 2-CPU machine running them at once also starves each of the CPU
/// time that forced contention needs.
fn contention_guard() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root to load eBPF programs and mount");
    false
}

/// Returns the calibrated address of namespace_sem, found once for all tests.
fn lock_address() -> u64 {
    static ADDRESS: OnceLock<u64> = OnceLock::new();
    *ADDRESS.get_or_init(|| {
        calibrate::find_namespace_sem()
            .expect("calibration failed")
            .address
    })
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let path =
            std::env::temp_dir().join(format!("mountscope-probes-{name}-{}", std::process::id()));
        fs::create_dir_all(path.join("src")).unwrap();
        fs::create_dir_all(path.join("dst")).unwrap();
        fs::write(path.join("src/marker"), b"x").unwrap();
        Scratch(path)
    }

    fn src(&self) -> PathBuf {
        self.0.join("src")
    }

    fn dst(&self) -> PathBuf {
        self.0.join("dst")
    }

    /// Creates `count` mount targets, one per mounting thread.
    fn targets(&self, count: usize) -> Vec<PathBuf> {
        (0..count)
            .map(|i| {
                let d = self.0.join(format!("dst{i}"));
                fs::create_dir_all(&d).unwrap();
                d
            })
            .collect()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Moves the calling thread into a new private mount namespace and returns its inode number.
fn enter_private_namespace() -> u64 {
    unshare(CloneFlags::CLONE_NEWNS).expect("unshare(CLONE_NEWNS)");
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .expect("make / private");
    fs::metadata("/proc/thread-self/ns/mnt")
        .expect("stat /proc/thread-self/ns/mnt")
        .ino()
}

/// Runs `body` on a new thread inside its own mount namespace, with the default probes loaded
/// and filtered to that namespace. The namespace and its mounts end with the thread.
fn in_namespace_with_probes<T: Send + 'static>(
    body: impl FnOnce(&mut Collector, u64) -> T + Send + 'static,
) -> T {
    in_namespace_with(|_| {}, body)
}

/// Like `in_namespace_with_probes`, with the probe options changed by `tweak` first.
fn in_namespace_with<T: Send + 'static>(
    tweak: impl FnOnce(&mut ProbeOptions) + Send + 'static,
    body: impl FnOnce(&mut Collector, u64) -> T + Send + 'static,
) -> T {
    let address = lock_address();
    // One test at a time: each one's mounts contend with the others' on the global lock.
    let _serial = contention_guard();
    thread::spawn(move || {
        let mntns = enter_private_namespace();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut options = ProbeOptions {
                filters: Filters {
                    mntns_id: Some(mntns),
                    ..Filters::default()
                },
                hold_method: HoldMethod::Auto,
                lock_address: Some(address),
                wait_sites: false,
                syscall_records: true,
                inflight_slots: None,
                syscall_tracepoints: false,
                sample_period_ns: None,
            };
            tweak(&mut options);
            let probes = Probes::load(&options).expect("load the probes");
            let mut collector = Collector::new(probes).expect("create the collector");
            body(&mut collector, mntns)
        })
    })
    .join()
    .expect("test thread panicked")
}

fn calls(totals: &Totals, syscall: MountSyscall) -> u64 {
    totals.syscalls[syscall.index()].calls
}

fn errors(totals: &Totals, syscall: MountSyscall) -> u64 {
    totals.syscalls[syscall.index()].errors
}

fn drain_all(collector: &mut Collector) -> Vec<EventRecord> {
    let mut events = Vec::new();
    collector.drain(|e| {
        events.push(e);
        true
    });
    events
}

fn bind_and_unmount(src: &Path, dst: &Path, times: usize) {
    for _ in 0..times {
        mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND, None::<&str>).expect("bind mount");
        umount2(dst, MntFlags::empty()).expect("umount");
    }
}

#[test]
fn bind_mounts_counted_exactly() {
    if !is_root() {
        return;
    }
    let scratch = Scratch::new("count");
    let (src, dst) = (scratch.src(), scratch.dst());
    let totals = in_namespace_with_probes(move |collector, _| {
        bind_and_unmount(&src, &dst, 25);
        collector.totals_since_reset().unwrap()
    });
    assert_eq!(calls(&totals, MountSyscall::Mount), 25);
    assert_eq!(calls(&totals, MountSyscall::Umount2), 25);
    assert_eq!(errors(&totals, MountSyscall::Mount), 0);
}

#[test]
fn syscall_events_carry_namespace() {
    if !is_root() {
        return;
    }
    let scratch = Scratch::new("events");
    let (src, dst) = (scratch.src(), scratch.dst());
    let (events, mntns) = in_namespace_with_probes(move |collector, mntns| {
        bind_and_unmount(&src, &dst, 3);
        (drain_all(collector), mntns)
    });
    let mounts: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "syscall" && e.syscall == Some(MountSyscall::Mount))
        .collect();
    assert_eq!(mounts.len(), 3, "{events:?}");
    assert!(mounts.iter().all(|e| e.mntns_id == mntns), "{mounts:?}");
    assert!(
        mounts.iter().all(|e| e.pid == std::process::id()),
        "{mounts:?}"
    );
    assert!(mounts.iter().all(|e| e.duration_ns > 0), "{mounts:?}");
}

/// Bind-mounts `src` onto the missing directory `missing`, which fails with ENOENT.
fn bind_mount_missing(src: &Path, missing: &Path) {
    let result = mount(
        Some(src),
        missing,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    );
    assert_eq!(result, Err(nix::errno::Errno::ENOENT));
}

fn syscall_records(events: &[EventRecord]) -> usize {
    events.iter().filter(|e| e.kind == "syscall").count()
}

#[test]
fn counters_exact_without_syscall_records() {
    if !is_root() {
        return;
    }
    let scratch = Scratch::new("norecords");
    let (src, dst) = (scratch.src(), scratch.dst());
    let (totals, events) = in_namespace_with(
        |o| o.syscall_records = false,
        move |collector, _| {
            bind_and_unmount(&src, &dst, 10);
            (
                collector.totals_since_reset().unwrap(),
                drain_all(collector),
            )
        },
    );
    assert_eq!(calls(&totals, MountSyscall::Mount), 10);
    assert_eq!(calls(&totals, MountSyscall::Umount2), 10);
    assert_eq!(syscall_records(&events), 0, "{events:?}");
}

#[test]
fn syscall_records_follow_the_switch() {
    if !is_root() {
        return;
    }
    let scratch = Scratch::new("switch");
    let (src, dst) = (scratch.src(), scratch.dst());
    let (before, after, off_again) = in_namespace_with(
        |o| o.syscall_records = false,
        move |collector, _| {
            bind_and_unmount(&src, &dst, 2);
            let before = syscall_records(&drain_all(collector));
            collector.set_syscall_records(true).unwrap();
            bind_and_unmount(&src, &dst, 3);
            let after = syscall_records(&drain_all(collector));
            collector.set_syscall_records(false).unwrap();
            bind_and_unmount(&src, &dst, 4);
            (before, after, syscall_records(&drain_all(collector)))
        },
    );
    assert_eq!(before, 0);
    // Three mounts and three umounts.
    assert_eq!(after, 6);
    assert_eq!(off_again, 0);
}

/// With a single in-flight slot, every thread but one inside a mount syscall keeps its entry
/// in the overflow hash map. The counts must come out exact all the same.
#[test]
fn threads_sharing_one_slot_counted_exactly() {
    if !is_root() {
        return;
    }
    const THREADS: usize = 4;
    const PAIRS: usize = 150;
    let scratch = Scratch::new("oneslot");
    let src = scratch.src();
    let dsts = scratch.targets(THREADS);

    let totals = in_namespace_with(
        |o| o.inflight_slots = Some(1),
        move |collector, _| {
            let threads: Vec<_> = dsts
                .into_iter()
                .map(|dst| {
                    let src = src.clone();
                    thread::spawn(move || bind_and_unmount(&src, &dst, PAIRS))
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            collector.totals_since_reset().unwrap()
        },
    );

    let expected = (THREADS * PAIRS) as u64;
    assert_eq!(calls(&totals, MountSyscall::Mount), expected);
    assert_eq!(calls(&totals, MountSyscall::Umount2), expected);
    assert_eq!(totals.drops[drop_slot::UNPAIRED as usize], 0);
    assert_eq!(totals.drops[drop_slot::INFLIGHT as usize], 0);
}

/// The hold estimate's sampler interrupts a mount loop while it holds namespace_sem for write,
/// and finds the holder inside mount or umount2.
#[test]
fn sampler_catches_write_holds() {
    if !is_root() {
        return;
    }
    let scratch = Scratch::new("sampler");
    let (src, dst) = (scratch.src(), scratch.dst());
    let totals = in_namespace_with(
        |o| {
            o.hold_method = HoldMethod::Sample;
            o.sample_period_ns = Some(1_000_000);
        },
        move |collector, _| {
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                bind_and_unmount(&src, &dst, 50);
            }
            collector.totals_since_reset().unwrap()
        },
    );
    let sampler = |slot: u32| totals.sampler[slot as usize];
    let in_syscall = |s: MountSyscall| sampler(sampler_slot::BY_SYSCALL + s.index() as u32);
    // One sample per millisecond on each CPU for 2 s, so the mounting CPU alone gives 2000.
    assert!(
        sampler(sampler_slot::TOTAL) >= 1000,
        "samples {}",
        sampler(sampler_slot::TOTAL)
    );
    assert!(
        sampler(sampler_slot::WRITE_HELD) > 0,
        "no write-held sample"
    );
    assert!(
        sampler(sampler_slot::HELD_BY_CURRENT) > 0,
        "no sample interrupted the holder"
    );
    assert!(
        in_syscall(MountSyscall::Mount) + in_syscall(MountSyscall::Umount2) > 0,
        "no held sample attributed to mount or umount2"
    );
}

/// `--hold-method none` keeps the contention tracepoints and measures no hold time.
#[test]
fn hold_method_none_measures_no_hold() {
    if !is_root() {
        return;
    }
    let scratch = Scratch::new("hold-none");
    let (src, dst) = (scratch.src(), scratch.dst());
    let snapshot = in_namespace_with(
        |o| o.hold_method = HoldMethod::None,
        move |collector, _| {
            bind_and_unmount(&src, &dst, 50);
            collector.snapshot(None).unwrap()
        },
    );
    assert_eq!(snapshot.tier.kind, TierKind::ContentionOnly);
    assert_eq!(snapshot.hold_estimate, None);
    assert!(snapshot.lock_holds.is_empty(), "{:?}", snapshot.lock_holds);
}

#[test]
fn missing_directory_records_enoent() {
    if !is_root() {
        return;
    }
    let scratch = Scratch::new("enoent");
    let src = scratch.src();
    let missing = scratch.0.join("does-not-exist");
    let (totals, events) = in_namespace_with_probes(move |collector, _| {
        bind_mount_missing(&src, &missing);
        (
            collector.totals_since_reset().unwrap(),
            drain_all(collector),
        )
    });
    assert_eq!(calls(&totals, MountSyscall::Mount), 1);
    assert_eq!(errors(&totals, MountSyscall::Mount), 1);
    let failed = events
        .iter()
        .find(|e| e.syscall == Some(MountSyscall::Mount))
        .expect("a mount event");
    assert_eq!(failed.errno.as_deref(), Some("ENOENT"));
    assert_eq!(failed.ret, Some(-(libc::ENOENT as i64)));
}

#[test]
fn failures_counted_by_errno() {
    if !is_root() {
        return;
    }
    let scratch = Scratch::new("errno");
    let src = scratch.src();
    let missing = scratch.0.join("does-not-exist");
    let totals = in_namespace_with_probes(move |collector, _| {
        for _ in 0..2 {
            bind_mount_missing(&src, &missing);
        }
        // A directory that is not a mount point cannot be unmounted.
        let result = umount2(&src, MntFlags::empty());
        assert_eq!(result, Err(nix::errno::Errno::EINVAL));
        collector.totals_since_reset().unwrap()
    });
    let count = |syscall: MountSyscall, errno: i32| {
        let key = mountscope_common::errno_key(syscall.index() as u32, errno as u32);
        totals.errnos.get(&key).copied().unwrap_or(0)
    };
    assert_eq!(count(MountSyscall::Mount, libc::ENOENT), 2);
    assert_eq!(count(MountSyscall::Umount2, libc::EINVAL), 1);
    assert_eq!(totals.errnos.len(), 2, "{:?}", totals.errnos);
}

/// `struct mount_attr` from include/uapi/linux/mount.h.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// open_tree(OPEN_TREE_CLONE) + mount_setattr(MOUNT_ATTR_RDONLY) + move_mount, the sequence
/// runtimes use for idmapped layers (with MOUNT_ATTR_IDMAP instead of RDONLY).
fn detached_mount_sequence(src: &Path, dst: &Path) {
    let src = CString::new(src.as_os_str().as_encoded_bytes()).unwrap();
    let dst = CString::new(dst.as_os_str().as_encoded_bytes()).unwrap();
    let empty = CString::new("").unwrap();
    // SAFETY: the arguments are valid NUL-terminated strings and a properly sized struct; the
    // returned fd is owned by `tree` and closed on drop.
    unsafe {
        let fd = libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            src.as_ptr(),
            (libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC) as libc::c_uint,
        );
        assert!(fd >= 0, "open_tree: {}", std::io::Error::last_os_error());
        let tree = std::os::fd::OwnedFd::from_raw_fd(fd as i32);
        let attr = MountAttr {
            attr_set: libc::MOUNT_ATTR_RDONLY,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        let ret = libc::syscall(
            libc::SYS_mount_setattr,
            std::os::fd::AsRawFd::as_raw_fd(&tree),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const MountAttr,
            size_of::<MountAttr>(),
        );
        assert_eq!(ret, 0, "mount_setattr: {}", std::io::Error::last_os_error());
        let ret = libc::syscall(
            libc::SYS_move_mount,
            std::os::fd::AsRawFd::as_raw_fd(&tree),
            empty.as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH as libc::c_uint,
        );
        assert_eq!(ret, 0, "move_mount: {}", std::io::Error::last_os_error());
    }
}

#[test]
fn new_mount_api_sequence_counted() {
    if !is_root() {
        return;
    }
    let scratch = Scratch::new("newapi");
    let (src, dst) = (scratch.src(), scratch.dst());
    let totals = in_namespace_with_probes(move |collector, _| {
        for _ in 0..4 {
            detached_mount_sequence(&src, &dst);
            umount2(&dst, MntFlags::empty()).expect("umount");
        }
        collector.totals_since_reset().unwrap()
    });
    assert_eq!(calls(&totals, MountSyscall::OpenTree), 4);
    assert_eq!(calls(&totals, MountSyscall::MountSetattr), 4);
    assert_eq!(calls(&totals, MountSyscall::MoveMount), 4);
    assert_eq!(calls(&totals, MountSyscall::Umount2), 4);
    assert_eq!(calls(&totals, MountSyscall::Mount), 0);
}

#[test]
fn discovery_finds_one_stable_address() {
    if !is_root() {
        return;
    }
    let _serial = contention_guard();
    let first = calibrate::find_namespace_sem().expect("first calibration");
    let second = calibrate::find_namespace_sem().expect("second calibration");
    assert_eq!(first.address, second.address);
    assert!(
        first.other_candidates.is_empty(),
        "{:x?}",
        first.other_candidates
    );
    assert!(
        first.address >= 0xffff_ffff_8000_0000,
        "{:#x}",
        first.address
    );
}

#[test]
fn discovery_ignores_other_mounters() {
    if !is_root() {
        return;
    }
    let _serial = contention_guard();
    // Another thread of this process mounts in a loop in its own namespace while calibration
    // runs; it is not a calibration thread, so its contention must not change the result.
    let scratch = Scratch::new("noise");
    let (src, dst) = (scratch.src(), scratch.dst());
    let stop = Arc::new(AtomicBool::new(false));
    let noise_stop = Arc::clone(&stop);
    let noise = thread::spawn(move || {
        enter_private_namespace();
        while !noise_stop.load(Ordering::Relaxed) {
            bind_and_unmount(&src, &dst, 1);
        }
    });
    let calibration = calibrate::find_namespace_sem();
    stop.store(true, Ordering::Relaxed);
    noise.join().unwrap();
    assert_eq!(calibration.expect("calibration").address, lock_address());
}

#[test]
fn contention_names_the_holder() {
    if !is_root() {
        return;
    }
    let scratch = Scratch::new("contend");
    let src = scratch.src();
    let dsts: Vec<PathBuf> = (0..2)
        .map(|i| {
            let d = scratch.0.join(format!("dst{i}"));
            fs::create_dir_all(&d).unwrap();
            d
        })
        .collect();
    let (totals, events, mounters) = in_namespace_with_probes(move |collector, _| {
        // The threads start in this thread's namespace, so the filter matches them all.
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        for dst in dsts {
            let (src, stop, tid_tx) = (src.clone(), Arc::clone(&stop), tid_tx.clone());
            threads.push(thread::spawn(move || {
                tid_tx.send(nix::unistd::gettid().as_raw() as u32).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    bind_and_unmount(&src, &dst, 1);
                }
            }));
        }
        let reader_stop = Arc::clone(&stop);
        threads.push(thread::spawn(move || {
            while !reader_stop.load(Ordering::Relaxed) {
                let _ = fs::read("/proc/self/mountinfo");
            }
        }));
        let started = Instant::now();
        let mut events = Vec::new();
        while started.elapsed() < Duration::from_millis(1500) {
            thread::sleep(Duration::from_millis(100));
            collector.drain(|e| {
                events.push(e);
                true
            });
        }
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        collector.drain(|e| {
            events.push(e);
            true
        });
        let mounters: Vec<u32> = tid_rx.try_iter().collect();
        (collector.totals_since_reset().unwrap(), events, mounters)
    });

    let waits: u64 = totals.waits.iter().map(|w| w.count).sum();
    assert!(waits > 0, "no namespace_sem wait seen");
    assert!(
        totals.waits[LockMode::Write.index()].count > 0,
        "no write wait seen"
    );
    // Other tests of this binary mount at the same time, so their threads can hold the lock
    // too; look for a wait held by one of this test's mounting threads.
    let named = events.iter().find(|e| {
        e.kind == "lock_wait"
            && e.holder.as_ref().is_some_and(|h| {
                h.kind == HolderKind::Writer && h.tid.is_some_and(|t| mounters.contains(&t))
            })
    });
    let named = named.expect("a wait whose holder is one of this test's mounting threads");
    let holder = named.holder.as_ref().unwrap();
    assert!(
        matches!(
            holder.syscall,
            Some(MountSyscall::Mount | MountSyscall::Umount2)
        ),
        "{holder:?}"
    );
    assert!(
        !holder.comm.as_deref().unwrap_or("").is_empty(),
        "{holder:?}"
    );
}

/// Runs `loops` bind mount + umount loops in threads of this test's namespace for `period`,
/// plus a mountinfo reader when `reader` is set, and returns the snapshot of that time.
fn snapshot_of_loops(
    name: &str,
    loops: usize,
    reader: bool,
    period: Duration,
) -> mountscope_common::snapshot::Snapshot {
    snapshot_of_loops_with(true, name, loops, reader, period)
}

/// Like `snapshot_of_loops`, with wait sites recorded only when `wait_sites` is set.
fn snapshot_of_loops_with(
    wait_sites: bool,
    name: &str,
    loops: usize,
    reader: bool,
    period: Duration,
) -> mountscope_common::snapshot::Snapshot {
    let scratch = Scratch::new(name);
    let src = scratch.src();
    let dsts = scratch.targets(loops);
    in_namespace_with(
        move |o| o.wait_sites = wait_sites,
        move |collector, _| {
            let stop = Arc::new(AtomicBool::new(false));
            let mut threads = Vec::new();
            for dst in dsts {
                let (src, stop) = (src.clone(), Arc::clone(&stop));
                threads.push(thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        bind_and_unmount(&src, &dst, 1);
                    }
                }));
            }
            if reader {
                let stop = Arc::clone(&stop);
                threads.push(thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let _ = fs::read("/proc/self/mountinfo");
                    }
                }));
            }
            thread::sleep(period);
            stop.store(true, Ordering::Relaxed);
            for t in threads {
                t.join().unwrap();
            }
            collector.drain(|_| true);
            collector.snapshot(None).unwrap()
        },
    )
}

fn top_site_of(
    snapshot: &mountscope_common::snapshot::Snapshot,
    syscall: MountSyscall,
) -> Option<&mountscope_common::snapshot::WaitSite> {
    snapshot.wait_sites.iter().find(|s| s.syscall == syscall)
}

#[test]
fn concurrent_umounts_wait_on_rcu() {
    if !is_root() {
        return;
    }
    let snapshot = snapshot_of_loops("rcu2", 2, false, Duration::from_millis(1500));
    let top = top_site_of(&snapshot, MountSyscall::Umount2).expect("a wait site of umount2");
    assert!(
        top.name.starts_with("RCU expedited grace period"),
        "{:#?}",
        snapshot.wait_sites
    );
    assert!(top.share > 0.0, "{top:?}");
    assert!(
        top.stack
            .iter()
            .any(|f| f.starts_with("synchronize_rcu_expedited")),
        "{:?}",
        top.stack
    );
}

#[test]
fn single_loop_blocks_without_contention() {
    if !is_root() {
        return;
    }
    let snapshot = snapshot_of_loops("rcu1", 1, false, Duration::from_millis(1000));
    let rcu_blocked = snapshot.wait_sites.iter().find(|s| {
        s.syscall == MountSyscall::Umount2
            && s.kind == mountscope_common::WaitKind::Blocked
            && s.name == "RCU expedited grace period"
    });
    assert!(rcu_blocked.is_some(), "{:#?}", snapshot.wait_sites);

    // namespace_sem is global, so a mount elsewhere on the host (or a reader of any
    // mountinfo) can still make one of this loop's calls wait now and then. With no second
    // mounter in the test, such waits must stay under 1% of the loop's calls.
    let calls = snapshot
        .syscall(MountSyscall::Mount)
        .map_or(0, |s| s.calls_total);
    let waits: u64 = snapshot
        .wait_sites
        .iter()
        .filter(|s| s.name == "namespace_sem")
        .map(|s| s.count)
        .sum();
    assert!(calls > 100, "only {calls} mount calls in one second");
    assert!(
        waits * 100 <= calls,
        "{waits} namespace_sem waits in {calls} mounts: {:#?}",
        snapshot.wait_sites
    );
}

#[test]
fn mountinfo_reader_contention_is_named() {
    if !is_root() {
        return;
    }
    let snapshot = snapshot_of_loops("named", 2, true, Duration::from_millis(1500));
    let named = snapshot
        .wait_sites
        .iter()
        .find(|s| s.name == "namespace_sem");
    assert!(named.is_some(), "{:#?}", snapshot.wait_sites);
    let bare = snapshot
        .wait_sites
        .iter()
        .find(|s| s.name.contains("0xffff"));
    assert!(bare.is_none(), "{bare:?}");
}

#[test]
fn refused_hold_method_is_an_error() {
    if !is_root() {
        return;
    }
    let _serial = contention_guard();
    let options = ProbeOptions {
        hold_method: HoldMethod::Fentry,
        lock_address: Some(lock_address()),
        ..ProbeOptions::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    match Probes::load(&options) {
        Ok(probes) if probes.tier.kind == TierKind::ExactFentry => {
            eprintln!("skipped: this kernel allows fentry");
        }
        Ok(probes) => panic!("fentry was refused but loading went on: {:?}", probes.tier),
        Err(e) => assert!(
            matches!(e, ProbeError::HoldMethodUnavailable { .. }),
            "unexpected error: {e}"
        ),
    }
}

#[test]
fn wait_sites_are_off_by_default() {
    if !is_root() {
        return;
    }
    let snapshot = snapshot_of_loops_with(false, "off", 2, false, Duration::from_millis(500));
    assert!(!snapshot.wait_sites_recorded);
}

#[test]
fn wait_sites_off_leave_the_list_empty() {
    if !is_root() {
        return;
    }
    let snapshot = snapshot_of_loops_with(false, "off-empty", 2, false, Duration::from_millis(500));
    assert!(snapshot.wait_sites.is_empty(), "{:#?}", snapshot.wait_sites);
}

#[test]
fn breakdown_shares_add_up() {
    if !is_root() {
        return;
    }
    let snapshot = snapshot_of_loops("shares", 2, false, Duration::from_millis(1000));
    assert!(!snapshot.breakdown.is_empty(), "no breakdown");
    for b in &snapshot.breakdown {
        let sum = b.on_cpu_share + b.lock_wait_share + b.blocked_share + b.preempted_share;
        assert!((sum - 1.0).abs() < 0.01, "{b:?} adds up to {sum}");
    }
}
