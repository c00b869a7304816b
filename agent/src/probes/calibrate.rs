//! Finds the address of `namespace_sem` at run time, for kernels whose `/proc/kallsyms` does
//! not list data symbols.
//!
//! Two threads, each in its own private mount namespace, bind-mount and unmount in a loop,
//! which takes `namespace_sem` for write, while a third thread reads `/proc/self/mountinfo`,
//! which takes it for read. A `lock:contention_begin` program records the lock addresses this
//! process waits on. `namespace_sem` is the one address in the kernel image that the mounting
//! threads waited on for write and the reader waited on for read. Contention needs two CPUs
//! running at once, so on one CPU this finds nothing.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use aya::{EbpfLoader, maps::HashMap, programs::TracePoint};
use mountscope_common::{CalibKey, LCB_F_READ, LCB_F_WRITE};
use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, unshare},
};
use thiserror::Error;
use tracing::{debug, info};

use super::object::EBPF_OBJECT;

/// Kernel image addresses on x86_64 start here; heap objects such as an `mmap_lock` live in
/// the direct map below it, so this filters out other rwsems the threads waited on.
const KERNEL_IMAGE_START: u64 = 0xffff_ffff_8000_0000;

/// Maximum time the calibration runs before giving up.
const MAX_DURATION: Duration = Duration::from_secs(5);
/// Time between checks of the recorded contentions.
const ROUND: Duration = Duration::from_millis(50);
/// Contentions each side must show on one address before it is accepted.
const MIN_CONTENTIONS: u64 = 2;

#[derive(Debug, Error)]
pub enum CalibrationError {
    #[error("failed to load the calibration program: {0}")]
    Load(String),
    #[error("failed to prepare the calibration directory `{path}`: {source}")]
    Directory {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no lock was contended by both the mounting threads and the mountinfo reader within \
         {seconds} s; calibration needs at least 2 CPUs (this machine has {cpus})"
    )]
    NotFound { seconds: u64, cpus: usize },
    #[error("a calibration thread failed: {0}")]
    Thread(String),
}

/// Result of a calibration.
#[derive(Clone, Debug)]
pub struct Calibration {
    pub address: u64,
    /// Other candidates seen on both sides, most contended first; normally empty.
    pub other_candidates: Vec<u64>,
    pub duration: Duration,
}

/// Runs the calibration and returns the address of `namespace_sem`.
pub fn find_namespace_sem() -> Result<Calibration, CalibrationError> {
    let started = Instant::now();
    let tgid = std::process::id();
    let mut ebpf = EbpfLoader::new()
        .override_global("CALIB_TGID", &tgid, true)
        .load(EBPF_OBJECT)
        .map_err(|e| CalibrationError::Load(e.to_string()))?;
    let program: &mut TracePoint = ebpf
        .program_mut("calibrate_contention")
        .ok_or_else(|| CalibrationError::Load("program `calibrate_contention` missing".into()))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| CalibrationError::Load(e.to_string()))?;
    program
        .load()
        .map_err(|e| CalibrationError::Load(e.to_string()))?;
    program
        .attach("lock", "contention_begin")
        .map_err(|e| CalibrationError::Load(e.to_string()))?;

    let workdir = CalibrationDir::create()?;
    let stop = Arc::new(AtomicBool::new(false));
    let (tid_tx, tid_rx) = std::sync::mpsc::channel::<(Role, u32)>();

    let mut handles = Vec::new();
    for n in 0..2 {
        let stop = Arc::clone(&stop);
        let tid_tx = tid_tx.clone();
        let src = workdir.path.join("src");
        let dst = workdir.path.join(format!("dst{n}"));
        handles.push(thread::spawn(move || -> Result<(), String> {
            let _ = tid_tx.send((Role::Mounter, nix::unistd::gettid().as_raw() as u32));
            mount_loop(&src, &dst, &stop)
        }));
    }
    {
        let stop = Arc::clone(&stop);
        let tid_tx = tid_tx.clone();
        handles.push(thread::spawn(move || -> Result<(), String> {
            let _ = tid_tx.send((Role::Reader, nix::unistd::gettid().as_raw() as u32));
            while !stop.load(Ordering::Relaxed) {
                let _ = fs::read("/proc/self/mountinfo");
            }
            Ok(())
        }));
    }
    drop(tid_tx);

    let mut mounters = BTreeSet::new();
    let mut readers = BTreeSet::new();
    for (role, tid) in tid_rx.iter().take(3) {
        match role {
            Role::Mounter => mounters.insert(tid),
            Role::Reader => readers.insert(tid),
        };
    }

    let map: HashMap<_, CalibKey, u64> = HashMap::try_from(
        ebpf.map("CALIB")
            .ok_or_else(|| CalibrationError::Load("map `CALIB` missing".into()))?,
    )
    .map_err(|e| CalibrationError::Load(e.to_string()))?;

    let mut found = None;
    while started.elapsed() < MAX_DURATION {
        thread::sleep(ROUND);
        let candidates = candidates(&map, &mounters, &readers);
        if let Some(&(first, _)) = candidates.first() {
            found = Some(Calibration {
                address: first,
                other_candidates: candidates[1..].iter().map(|(a, _)| *a).collect(),
                duration: started.elapsed(),
            });
            break;
        }
    }

    stop.store(true, Ordering::Relaxed);
    for handle in handles {
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(CalibrationError::Thread(e)),
            Err(_) => return Err(CalibrationError::Thread("a thread panicked".into())),
        }
    }
    drop(ebpf);
    drop(workdir);

    match found {
        Some(calibration) => {
            info!(
                "found namespace_sem at {:#x} by calibration in {} ms",
                calibration.address,
                calibration.duration.as_millis()
            );
            if !calibration.other_candidates.is_empty() {
                debug!("other candidates: {:x?}", calibration.other_candidates);
            }
            Ok(calibration)
        }
        None => Err(CalibrationError::NotFound {
            seconds: MAX_DURATION.as_secs(),
            cpus: thread::available_parallelism().map_or(1, |n| n.get()),
        }),
    }
}

#[derive(Clone, Copy)]
enum Role {
    Mounter,
    Reader,
}

/// Addresses in the kernel image contended for write by a mounter and for read by the reader,
/// each at least `MIN_CONTENTIONS` times, most contended first.
fn candidates(
    map: &HashMap<&aya::maps::MapData, CalibKey, u64>,
    mounters: &BTreeSet<u32>,
    readers: &BTreeSet<u32>,
) -> Vec<(u64, u64)> {
    let mut writes: BTreeMap<u64, u64> = BTreeMap::new();
    let mut reads: BTreeMap<u64, u64> = BTreeMap::new();
    for (key, count) in map.iter().filter_map(Result::ok) {
        if key.lock_addr < KERNEL_IMAGE_START {
            continue;
        }
        if mounters.contains(&key.tid) && key.flags & LCB_F_WRITE != 0 {
            *writes.entry(key.lock_addr).or_default() += count;
        }
        if readers.contains(&key.tid) && key.flags & LCB_F_READ != 0 {
            *reads.entry(key.lock_addr).or_default() += count;
        }
    }
    pick(&writes, &reads)
}

fn pick(writes: &BTreeMap<u64, u64>, reads: &BTreeMap<u64, u64>) -> Vec<(u64, u64)> {
    let mut both: Vec<(u64, u64)> = writes
        .iter()
        .filter_map(|(addr, w)| {
            let r = reads.get(addr)?;
            (*w >= MIN_CONTENTIONS && *r >= MIN_CONTENTIONS).then_some((*addr, w + r))
        })
        .collect();
    both.sort_by_key(|&(_, count)| std::cmp::Reverse(count));
    both
}

/// Bind-mounts `src` on `dst` and unmounts it until `stop`, in a private mount namespace of
/// this thread, so nothing shows in the host's namespace and the thread's exit removes all.
fn mount_loop(src: &Path, dst: &Path, stop: &AtomicBool) -> Result<(), String> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare(CLONE_NEWNS) failed: {e}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making / private failed: {e}"))?;
    while !stop.load(Ordering::Relaxed) {
        mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(|e| format!("bind mount of {} failed: {e}", dst.display()))?;
        umount2(dst, MntFlags::empty())
            .map_err(|e| format!("umount of {} failed: {e}", dst.display()))?;
    }
    Ok(())
}

/// A scratch directory with a bind source and two targets, removed on drop.
struct CalibrationDir {
    path: PathBuf,
}

/// Prefix of the calibration directories under the temporary directory, followed by the pid.
const DIR_PREFIX: &str = "mountscope-calibrate-";

/// Removes calibration directories of processes that no longer run, which a process killed
/// with SIGKILL while calibrating leaves behind. Their mounts ended with the process, because
/// they were made in its private mount namespace.
fn remove_stale_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

impl CalibrationDir {
    fn create() -> Result<CalibrationDir, CalibrationError> {
        remove_stale_dirs();
        let path = std::env::temp_dir().join(format!("{DIR_PREFIX}{}", std::process::id()));
        let result = (|| {
            fs::create_dir_all(path.join("src"))?;
            fs::create_dir_all(path.join("dst0"))?;
            fs::create_dir_all(path.join("dst1"))
        })();
        result.map_err(|source| CalibrationError::Directory {
            path: path.display().to_string(),
            source,
        })?;
        Ok(CalibrationDir { path })
    }
}

impl Drop for CalibrationDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pid above Linux's largest pid_max (2^22), so no process has it.
    const DEAD_PID: u32 = 4_194_305;

    #[test]
    fn stale_dir_of_dead_process_removed() {
        let path = std::env::temp_dir().join(format!("{DIR_PREFIX}{DEAD_PID}"));
        fs::create_dir_all(path.join("dst0")).unwrap();
        remove_stale_dirs();
        assert!(!path.exists());
    }

    #[test]
    fn dir_of_live_process_kept() {
        // The parent of the test process runs for the whole test.
        let parent = nix::unistd::getppid().as_raw();
        let path = std::env::temp_dir().join(format!("{DIR_PREFIX}{parent}"));
        let created = !path.exists();
        fs::create_dir_all(&path).unwrap();
        remove_stale_dirs();
        let still_exists = path.exists();
        if created {
            let _ = fs::remove_dir_all(&path);
        }
        assert!(still_exists);
    }

    #[test]
    fn pick_needs_both_sides() {
        let writes = BTreeMap::from([(0xffff_ffff_8200_0000, 10), (0xffff_ffff_8300_0000, 9)]);
        let reads = BTreeMap::from([(0xffff_ffff_8200_0000, 4)]);
        assert_eq!(pick(&writes, &reads), vec![(0xffff_ffff_8200_0000, 14)]);
    }

    #[test]
    fn pick_ignores_rare_contention() {
        let writes = BTreeMap::from([(0xffff_ffff_8200_0000, 10)]);
        let reads = BTreeMap::from([(0xffff_ffff_8200_0000, 1)]);
        assert!(pick(&writes, &reads).is_empty());
    }

    #[test]
    fn pick_orders_by_count() {
        let writes = BTreeMap::from([(1, 5), (2, 50)]);
        let reads = BTreeMap::from([(1, 5), (2, 50)]);
        assert_eq!(pick(&writes, &reads)[0].0, 2);
    }
}
