//! Wait sites: the kernel's per-stack wait counters, symbolized from `/proc/kallsyms` and
//! grouped under names that kernel readers recognise.
//!
//! Function symbols are listed in `/proc/kallsyms` even without `CONFIG_KALLSYMS_ALL`, so
//! stacks can always be named. Data symbols such as lock addresses are not listed, so
//! `namespace_sem` is recognised by its discovered address.

use std::collections::{BTreeMap, HashMap};

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, StackTraceMap};
use mountscope_common::{
    Breakdown, HIST_BUCKETS, MountSyscall, SYSCALL_COUNT, WaitKind, WaitSiteKey, WaitSiteStats,
    snapshot::{SyscallBreakdown, WaitSite},
};

use super::hist;

/// Prefixes of functions inside the locking, scheduling and RCU-waiting machinery: the site
/// of a wait is the first frame, from the innermost, that matches none of these.
const MACHINERY_PREFIXES: &[&str] = &[
    "__schedule",
    "schedule",
    "preempt_schedule",
    "__cond_resched",
    "_raw_spin",
    "__raw_spin",
    "queued_spin",
    "native_queued",
    "do_raw_spin",
    "__pv_queued",
    "rwsem_",
    "__rwsem",
    "down_",
    "down",
    "up_",
    "__down",
    "mutex_",
    "__mutex",
    "osq_lock",
    "percpu_down",
    "percpu_rwsem",
    "__percpu",
    "rt_mutex",
    "__rt_mutex",
    "wait_for_completion",
    "__wait_for_common",
    "wait_for_common",
    "do_wait_for_common",
    "schedule_timeout",
    "__wait_rcu_gp",
    "wait_rcu_exp_gp",
    "exp_funnel_lock",
    "synchronize_rcu_expedited",
    "synchronize_rcu",
    "bpf_",
    "lock_",
    "trace_contention",
    "__traceiter",
    "perf_trace",
];

/// Functions whose presence anywhere in the stack names the site.
const NAMED_SITES: &[(&str, &str)] = &[
    ("synchronize_rcu_expedited", "RCU expedited grace period"),
    ("synchronize_rcu", "RCU grace period"),
    ("lock_mount", "mountpoint inode lock (lock_mount)"),
    ("do_lock_mount", "mountpoint inode lock (lock_mount)"),
    ("lock_mount_hash", "mount_lock"),
];

/// Symbolizes kernel addresses.
pub struct Symbols {
    by_address: BTreeMap<u64, String>,
}

impl Symbols {
    pub fn load() -> Symbols {
        Symbols {
            by_address: aya::util::kernel_symbols().unwrap_or_default(),
        }
    }

    /// `function+0xoffset`, or the hex address when no symbol precedes it.
    pub fn name(&self, ip: u64) -> String {
        match self.by_address.range(..=ip).next_back() {
            Some((start, name)) => format!("{name}+{:#x}", ip - start),
            None => format!("{ip:#x}"),
        }
    }
}

/// The function of a `function+0xoffset` frame, without compiler suffixes such as
/// `.part.0` or `.constprop.0`.
fn function(frame: &str) -> &str {
    let name = frame.split('+').next().unwrap_or(frame);
    name.split('.').next().unwrap_or(name)
}

fn is_machinery(function: &str) -> bool {
    MACHINERY_PREFIXES.iter().any(|p| function.starts_with(p))
}

/// Returns the name of a wait site from its kind, lock address and stack (innermost first).
pub fn site_name(kind: WaitKind, lock_addr: u64, ns_sem: Option<u64>, stack: &[String]) -> String {
    if kind == WaitKind::Lock && ns_sem.is_some_and(|a| a == lock_addr && a != 0) {
        return "namespace_sem".to_string();
    }
    if kind == WaitKind::Preempted {
        return "run queue (preempted)".to_string();
    }
    for (needle, name) in NAMED_SITES {
        if stack.iter().any(|f| function(f) == *needle) {
            // A contended lock on the way to the named wait, such as the mutex that queues
            // concurrent RCU expedited grace periods, gets its own name, apart from the wait.
            return match kind {
                WaitKind::Lock => format!("{name} (lock)"),
                _ => (*name).to_string(),
            };
        }
    }
    let first = stack
        .iter()
        .map(|f| function(f))
        .find(|f| !is_machinery(f))
        .unwrap_or("unknown");
    match kind {
        WaitKind::Lock => format!("lock in {first}"),
        _ => format!("blocked in {first}"),
    }
}

/// Sum of one site key's counters.
#[derive(Clone, Copy)]
struct Counts {
    count: u64,
    total_ns: u64,
    hist: [u64; HIST_BUCKETS],
}

impl Counts {
    fn minus(&self, base: Option<&Counts>) -> Counts {
        let Some(base) = base else {
            return *self;
        };
        let mut hist = self.hist;
        for (x, y) in hist.iter_mut().zip(&base.hist) {
            *x = x.saturating_sub(*y);
        }
        Counts {
            count: self.count.saturating_sub(base.count),
            total_ns: self.total_ns.saturating_sub(base.total_ns),
            hist,
        }
    }
}

/// The wait-site maps and the readings at the last reset.
pub struct SiteMaps {
    sites: BpfHashMap<MapData, WaitSiteKey, WaitSiteStats>,
    stacks: StackTraceMap<MapData>,
    breakdown: PerCpuArray<MapData, Breakdown>,
    base_sites: HashMap<WaitSiteKey, Counts>,
    base_breakdown: [Breakdown; SYSCALL_COUNT],
    symbols: Symbols,
}

impl SiteMaps {
    pub fn take(ebpf: &mut aya::Ebpf) -> anyhow::Result<SiteMaps> {
        let take = |ebpf: &mut aya::Ebpf, name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| anyhow::anyhow!("map `{name}` is missing from the eBPF object"))
        };
        let mut maps = SiteMaps {
            sites: BpfHashMap::try_from(take(ebpf, "WAIT_SITES")?)?,
            stacks: StackTraceMap::try_from(take(ebpf, "STACKS")?)?,
            breakdown: PerCpuArray::try_from(take(ebpf, "SYSCALL_BREAKDOWN")?)?,
            base_sites: HashMap::new(),
            base_breakdown: [Breakdown::default(); SYSCALL_COUNT],
            symbols: Symbols::load(),
        };
        maps.reset();
        Ok(maps)
    }

    fn read_sites(&self) -> HashMap<WaitSiteKey, Counts> {
        self.sites
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| {
                (
                    k,
                    Counts {
                        count: v.count,
                        total_ns: v.total_ns,
                        hist: v.hist,
                    },
                )
            })
            .collect()
    }

    fn read_breakdown(&self) -> [Breakdown; SYSCALL_COUNT] {
        let mut out = [Breakdown::default(); SYSCALL_COUNT];
        for (i, slot) in out.iter_mut().enumerate() {
            if let Ok(values) = self.breakdown.get(&(i as u32), 0) {
                for v in values.iter() {
                    slot.lock_wait_ns += v.lock_wait_ns;
                    slot.blocked_ns += v.blocked_ns;
                    slot.preempted_ns += v.preempted_ns;
                }
            }
        }
        out
    }

    pub fn reset(&mut self) {
        self.base_sites = self.read_sites();
        self.base_breakdown = self.read_breakdown();
    }

    fn stack(&self, stack_id: u32) -> Vec<String> {
        if stack_id == u32::MAX {
            return Vec::new();
        }
        match self.stacks.get(&stack_id, 0) {
            Ok(trace) => trace
                .frames()
                .iter()
                .map(|f| self.symbols.name(f.ip))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Top `limit` sites and the per-syscall breakdown since the last reset.
    /// `syscall_total_ns` is each syscall's total latency over the same time.
    pub fn figures(
        &self,
        ns_sem: Option<u64>,
        syscall_total_ns: &[u64; SYSCALL_COUNT],
        limit: usize,
    ) -> (Vec<WaitSite>, Vec<SyscallBreakdown>) {
        struct Group {
            kind: WaitKind,
            syscall: MountSyscall,
            counts: Counts,
            top_stack: (u64, u32),
        }
        let mut groups: HashMap<(String, MountSyscall, u32), Group> = HashMap::new();
        for (key, now) in self.read_sites() {
            let counts = now.minus(self.base_sites.get(&key));
            if counts.count == 0 {
                continue;
            }
            let (Some(kind), Some(syscall)) = (
                WaitKind::from_id(key.kind),
                MountSyscall::from_id(key.syscall),
            ) else {
                continue;
            };
            let stack = self.stack(key.stack_id);
            let name = site_name(kind, key.lock_addr, ns_sem, &stack);
            let group = groups.entry((name, syscall, key.kind)).or_insert(Group {
                kind,
                syscall,
                counts: Counts {
                    count: 0,
                    total_ns: 0,
                    hist: [0; HIST_BUCKETS],
                },
                top_stack: (0, key.stack_id),
            });
            group.counts.count += counts.count;
            group.counts.total_ns += counts.total_ns;
            for (x, y) in group.counts.hist.iter_mut().zip(&counts.hist) {
                *x += y;
            }
            if counts.count > group.top_stack.0 {
                group.top_stack = (counts.count, key.stack_id);
            }
        }

        let mut sites: Vec<WaitSite> = groups
            .into_iter()
            .map(|((name, _, _), g)| {
                let total = syscall_total_ns[g.syscall.index()];
                WaitSite {
                    name,
                    kind: g.kind,
                    syscall: g.syscall,
                    count: g.counts.count,
                    total_ns: g.counts.total_ns,
                    p99_ns: hist::quantile(&g.counts.hist, 0.99),
                    share: if total > 0 {
                        (g.counts.total_ns as f64 / total as f64).min(1.0)
                    } else {
                        0.0
                    },
                    stack: self.stack(g.top_stack.1),
                }
            })
            .collect();
        sites.sort_by(|a, b| {
            b.total_ns
                .cmp(&a.total_ns)
                .then_with(|| a.name.cmp(&b.name))
        });
        sites.truncate(limit);

        let now = self.read_breakdown();
        let breakdown = MountSyscall::ALL
            .iter()
            .filter_map(|&syscall| {
                let i = syscall.index();
                let total = syscall_total_ns[i];
                if total == 0 {
                    return None;
                }
                let share =
                    |now: u64, base: u64| (now.saturating_sub(base) as f64 / total as f64).min(1.0);
                let lock = share(now[i].lock_wait_ns, self.base_breakdown[i].lock_wait_ns);
                let blocked = share(now[i].blocked_ns, self.base_breakdown[i].blocked_ns);
                let preempted = share(now[i].preempted_ns, self.base_breakdown[i].preempted_ns);
                // Waits that started before a reset can end after it, so the parts can exceed
                // the total by a little. They are then scaled down to add up to one.
                let waited = lock + blocked + preempted;
                let scale = if waited > 1.0 { 1.0 / waited } else { 1.0 };
                Some(SyscallBreakdown {
                    syscall,
                    total_ns: total,
                    on_cpu_share: (1.0 - waited * scale).max(0.0),
                    lock_wait_share: lock * scale,
                    blocked_share: blocked * scale,
                    preempted_share: preempted * scale,
                })
            })
            .collect();
        (sites, breakdown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(frames: &[&str]) -> Vec<String> {
        frames.iter().map(|f| format!("{f}+0x10")).collect()
    }

    #[test]
    fn namespace_sem_by_address() {
        let name = site_name(
            WaitKind::Lock,
            0xffff_ffff_8200_0000,
            Some(0xffff_ffff_8200_0000),
            &[],
        );
        assert_eq!(name, "namespace_sem");
    }

    #[test]
    fn rcu_expedited_by_stack() {
        let s = stack(&[
            "__schedule",
            "schedule",
            "synchronize_rcu_expedited",
            "namespace_unlock",
        ]);
        assert_eq!(
            site_name(WaitKind::Blocked, 0, None, &s),
            "RCU expedited grace period"
        );
    }

    #[test]
    fn lock_on_the_way_to_rcu_is_marked() {
        let s = stack(&[
            "__mutex_lock.constprop.0",
            "exp_funnel_lock",
            "synchronize_rcu_expedited",
        ]);
        assert_eq!(
            site_name(WaitKind::Lock, 1, None, &s),
            "RCU expedited grace period (lock)"
        );
    }

    #[test]
    fn first_frame_outside_locking() {
        let s = stack(&["__mutex_lock", "mutex_lock", "do_new_mount", "path_mount"]);
        assert_eq!(
            site_name(WaitKind::Lock, 1, None, &s),
            "lock in do_new_mount"
        );
    }

    #[test]
    fn preempted_is_run_queue() {
        assert_eq!(
            site_name(WaitKind::Preempted, 0, None, &[]),
            "run queue (preempted)"
        );
    }
}
