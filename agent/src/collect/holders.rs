//! Who held `namespace_sem` while others waited, summed from lock-wait records.

use std::collections::HashMap;

use mountscope_common::{MountSyscall, snapshot::HolderFigures};

use super::event::{EventRecord, Holder};
use mountscope_common::HolderKind;

#[derive(Default)]
struct Entry {
    comm: Option<String>,
    pid: Option<u32>,
    cgroup_id: Option<u64>,
    waits: u64,
    wait_ns: u64,
    by_syscall: HashMap<MountSyscall, u64>,
}

impl Entry {
    fn add(&mut self, wait_ns: u64, syscall: Option<MountSyscall>) {
        self.waits += 1;
        self.wait_ns += wait_ns;
        if let Some(s) = syscall {
            *self.by_syscall.entry(s).or_default() += 1;
        }
    }

    fn figures(&self, key: String) -> HolderFigures {
        let syscall = self
            .by_syscall
            .iter()
            .max_by_key(|(s, n)| (**n, std::cmp::Reverse(**s)))
            .map(|(s, _)| *s);
        HolderFigures {
            key,
            pid: self.pid,
            comm: self.comm.clone(),
            cgroup_id: self.cgroup_id,
            syscall,
            waits: self.waits,
            wait_ns: self.wait_ns,
        }
    }
}

/// Waits caused, by holding process and by holding cgroup, since the last reset.
#[derive(Default)]
pub struct Holders {
    by_process: HashMap<String, Entry>,
    by_cgroup: HashMap<String, Entry>,
}

impl Holders {
    pub fn add(&mut self, record: &EventRecord) {
        let Some(Holder {
            kind,
            pid,
            comm,
            syscall,
            cgroup_id,
            ..
        }) = &record.holder
        else {
            return;
        };
        let process_key = match kind {
            HolderKind::Writer => format!("pid:{}", pid.unwrap_or(0)),
            HolderKind::Readers => "readers".to_string(),
            HolderKind::Unknown => "unknown".to_string(),
        };
        let entry = self.by_process.entry(process_key).or_default();
        entry.pid = *pid;
        entry.comm.clone_from(comm);
        entry.add(record.duration_ns, *syscall);

        if let Some(cgroup) = cgroup_id {
            let entry = self
                .by_cgroup
                .entry(format!("cgroup:{cgroup}"))
                .or_default();
            entry.cgroup_id = Some(*cgroup);
            entry.add(record.duration_ns, *syscall);
        }
    }

    fn top(map: &HashMap<String, Entry>, n: usize) -> Vec<HolderFigures> {
        let mut all: Vec<HolderFigures> = map.iter().map(|(k, e)| e.figures(k.clone())).collect();
        all.sort_by(|a, b| b.wait_ns.cmp(&a.wait_ns).then_with(|| a.key.cmp(&b.key)));
        all.truncate(n);
        all
    }

    pub fn top_processes(&self, n: usize) -> Vec<HolderFigures> {
        Self::top(&self.by_process, n)
    }

    pub fn top_cgroups(&self, n: usize) -> Vec<HolderFigures> {
        Self::top(&self.by_cgroup, n)
    }

    pub fn clear(&mut self) {
        self.by_process.clear();
        self.by_cgroup.clear();
    }
}
