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

/// Holders kept per map. An agent runs for days while processes come and go, so without a
/// bound the maps would grow with every process that ever held the lock.
const MAX_HOLDERS: usize = 1024;

/// Removes the entry that caused the least wait time when `map` is full and `key` is new.
/// The figures show only the top holders, which such an entry is not among.
fn make_room(map: &mut HashMap<String, Entry>, key: &str) {
    if map.len() < MAX_HOLDERS || map.contains_key(key) {
        return;
    }
    let smallest = map
        .iter()
        .min_by_key(|(_, entry)| entry.wait_ns)
        .map(|(k, _)| k.clone());
    if let Some(smallest) = smallest {
        map.remove(&smallest);
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
        make_room(&mut self.by_process, &process_key);
        let entry = self.by_process.entry(process_key).or_default();
        entry.pid = *pid;
        entry.comm.clone_from(comm);
        entry.add(record.duration_ns, *syscall);

        if let Some(cgroup) = cgroup_id {
            let key = format!("cgroup:{cgroup}");
            make_room(&mut self.by_cgroup, &key);
            let entry = self.by_cgroup.entry(key).or_default();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn full_map() -> HashMap<String, Entry> {
        (0..MAX_HOLDERS)
            .map(|i| {
                let entry = Entry {
                    wait_ns: i as u64 + 1,
                    ..Entry::default()
                };
                (format!("pid:{i}"), entry)
            })
            .collect()
    }

    #[test]
    fn full_map_evicts_smallest() {
        let mut map = full_map();
        make_room(&mut map, "pid:new");
        assert!(!map.contains_key("pid:0"));
    }

    #[test]
    fn full_map_stays_bounded() {
        let mut map = full_map();
        make_room(&mut map, "pid:new");
        assert_eq!(map.len(), MAX_HOLDERS - 1);
    }

    #[test]
    fn known_key_evicts_nothing() {
        let mut map = full_map();
        make_room(&mut map, "pid:5");
        assert_eq!(map.len(), MAX_HOLDERS);
    }
}
