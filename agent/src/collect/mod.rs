//! Turns the kernel programs' maps and ring buffer into snapshots.
//!
//! The ring buffer is drained when the kernel wakes the reader (only when it is filling up)
//! and on a 100 ms timer otherwise; the aggregate maps are read once per snapshot.

pub mod event;
pub mod hist;
pub mod holders;
pub mod sites;
pub mod snapshot;
pub mod totals;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aya::maps::{MapData, RingBuf};
use mountscope_common::{
    Event, SYSCALL_COUNT,
    snapshot::{ExecutorStatus, Snapshot, TierKind},
};
use tokio::io::unix::AsyncFd;
use tracing::{debug, warn};

use self::{
    event::EventRecord,
    holders::Holders,
    sites::SiteMaps,
    totals::{AggregateMaps, Totals},
};
use crate::probes::Probes;

/// Time between timed drains of the ring buffer.
pub const DRAIN_PERIOD: Duration = Duration::from_millis(100);

/// Holders listed per snapshot.
const TOP_HOLDERS: usize = 10;
/// Wait sites listed per snapshot.
const TOP_SITES: usize = 12;

/// The loaded probes plus everything needed to publish snapshots.
pub struct Collector {
    probes: Probes,
    maps: AggregateMaps,
    sites: SiteMaps,
    ring: AsyncFd<RingBuf<MapData>>,
    /// Reading at start or at the last reset.
    base: Totals,
    /// Reading at the previous snapshot.
    prev: Totals,
    prev_at: Instant,
    started: Instant,
    holders: Holders,
    kernel: String,
    /// Records decoded but refused by the event sink (it was full), since start and since the
    /// previous snapshot.
    user_lost_total: u64,
    user_lost: u64,
    events_read: u64,
}

impl Collector {
    pub fn new(mut probes: Probes) -> anyhow::Result<Collector> {
        let maps = AggregateMaps::take(&mut probes.ebpf)?;
        let sites = SiteMaps::take(&mut probes.ebpf)?;
        let ring = probes
            .ebpf
            .take_map("EVENTS")
            .ok_or_else(|| anyhow::anyhow!("map `EVENTS` is missing from the eBPF object"))?;
        let ring = RingBuf::try_from(ring)?;
        // SAFETY: the ring buffer owns its map fd, which stays open and unchanged until the
        // `AsyncFd` that owns the ring buffer is dropped.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("failed to register the ring buffer with tokio: {e}"))?;
        let now = maps.read()?;
        Ok(Collector {
            probes,
            maps,
            sites,
            ring,
            base: now.clone(),
            prev: now,
            prev_at: Instant::now(),
            started: Instant::now(),
            holders: Holders::default(),
            kernel: kernel_release(),
            user_lost_total: 0,
            user_lost: 0,
            events_read: 0,
        })
    }

    pub fn probes(&self) -> &Probes {
        &self.probes
    }

    /// Turns the per-call syscall records on or off; see [`Probes::set_syscall_records`].
    pub fn set_syscall_records(&mut self, on: bool) -> anyhow::Result<()> {
        Ok(self.probes.set_syscall_records(on)?)
    }

    /// Waits until the kernel signals that the ring buffer is filling up.
    pub async fn ring_readable(&mut self) -> std::io::Result<()> {
        let mut guard = self.ring.readable_mut().await?;
        guard.clear_ready();
        Ok(())
    }

    /// Reads every record in the ring buffer, passes each to `sink` (which returns false when
    /// it could not take it, so the loss is counted) and returns how many were read.
    pub fn drain(&mut self, mut sink: impl FnMut(EventRecord) -> bool) -> usize {
        let mut read = 0;
        let ring = self.ring.get_mut();
        while let Some(item) = ring.next() {
            read += 1;
            if item.len() < size_of::<Event>() {
                continue;
            }
            // SAFETY: the kernel writes whole `Event` records; read_unaligned copies one out of
            // the ring buffer without assuming its alignment.
            let raw: Event = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) };
            drop(item);
            let Some(record) = EventRecord::decode(&raw) else {
                continue;
            };
            self.holders.add(&record);
            if !sink(record) {
                self.user_lost += 1;
                self.user_lost_total += 1;
            }
        }
        self.events_read += read as u64;
        if read > 0 {
            debug!("drained {read} records from the ring buffer");
        }
        read
    }

    /// Forgets everything counted so far; figures start again from zero.
    pub fn reset(&mut self) -> anyhow::Result<()> {
        let now = self.maps.read()?;
        self.base = now.clone();
        self.prev = now;
        self.prev_at = Instant::now();
        self.holders.clear();
        self.sites.reset();
        self.user_lost_total = 0;
        self.user_lost = 0;
        Ok(())
    }

    /// Returns the raw totals since the last reset, for tests and benchmarks.
    pub fn totals_since_reset(&self) -> anyhow::Result<Totals> {
        Ok(self.maps.read()?.since(&self.base))
    }

    /// Builds the snapshot of the interval since the previous one.
    pub fn snapshot(&mut self, executor: Option<ExecutorStatus>) -> anyhow::Result<Snapshot> {
        let now = self.maps.read()?;
        let now_at = Instant::now();
        let interval = now_at - self.prev_at;
        let delta = now.since(&self.prev);
        let tier = self.probes.tier.clone();

        let lock_holds = match tier.kind {
            TierKind::ExactFentry | TierKind::ExactKprobe => {
                snapshot::lock_figures(&self.base, &self.prev, &now, interval, true)
            }
            _ => Vec::new(),
        };
        let hold_estimate = (tier.kind == TierKind::ContentionEstimate && self.probes.hold_sampled)
            .then(|| snapshot::hold_estimate(&delta, interval, self.probes.sample_period_ns));
        let drops = snapshot::drops(&delta.drops, self.user_lost);
        let drops_total = snapshot::drops(&now.since(&self.base).drops, self.user_lost_total);
        if drops.total() > 0 {
            warn!(
                "lost {} events in the last interval ({} ring buffer, {} in-flight map full, \
                 {} pending-wait map full, {} unpaired, {} stack-map collisions, {} site map \
                 full)",
                drops.total(),
                drops.ringbuf,
                drops.inflight,
                drops.pending,
                drops.unpaired,
                drops.stacks,
                drops.sites
            );
        }

        let since_base = now.since(&self.base);
        let syscall_total_ns: [u64; SYSCALL_COUNT] =
            std::array::from_fn(|i| since_base.syscalls[i].total_ns);
        let ns_sem = self
            .probes
            .lock_address
            .as_ref()
            .and_then(|a| u64::from_str_radix(a.address.trim_start_matches("0x"), 16).ok());
        let wait_sites_recorded = self.probes.wait_sites;
        let (wait_sites, breakdown) = if wait_sites_recorded {
            self.sites.figures(ns_sem, &syscall_total_ns, TOP_SITES)
        } else {
            (Vec::new(), Vec::new())
        };

        let snapshot = Snapshot {
            time_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            interval_ms: interval.as_millis() as u64,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            kernel: self.kernel.clone(),
            syscall_probes: self.probes.syscall_probes,
            lock_address: self.probes.lock_address.clone(),
            syscalls: snapshot::syscall_figures(&self.base, &self.prev, &now, interval),
            lock_waits: if tier.kind == TierKind::SyscallsOnly {
                Vec::new()
            } else {
                snapshot::lock_figures(&self.base, &self.prev, &now, interval, false)
            },
            tier,
            lock_holds,
            hold_estimate,
            holders_by_process: self.holders.top_processes(TOP_HOLDERS),
            holders_by_cgroup: self.holders.top_cgroups(TOP_HOLDERS),
            drops,
            drops_total,
            wait_sites_recorded,
            wait_sites,
            breakdown,
            executor,
        };
        self.prev = now;
        self.prev_at = now_at;
        self.user_lost = 0;
        Ok(snapshot)
    }
}

/// `uname -r`.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".to_string())
}
