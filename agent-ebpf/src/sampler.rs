//! cpu-clock sampler that estimates how long `namespace_sem` is held for write, for kernels
//! where neither fentry nor kprobes can time each hold.
//!
//! Each sample reads the rwsem's owner word: the share of samples that find it write-held
//! estimates the share of time it is held, and samples that interrupt the holder itself
//! attribute that time to the syscall the holder is in.

use aya_ebpf::{macros::perf_event, programs::PerfEventContext};
use mountscope_common::{RWSEM_OWNER_FLAGS_MASK, RWSEM_READER_OWNED, SYSCALL_COUNT, sampler_slot};

use crate::{globals, hist, inflight, maps::SAMPLER, task};

#[perf_event]
pub fn sample_hold(_ctx: PerfEventContext) -> u32 {
    let sem = globals::ns_sem_addr();
    if sem == 0 {
        return 0;
    }
    hist::count(&SAMPLER, sampler_slot::TOTAL);

    let owner = task::rwsem_owner(sem);
    if owner == 0 || owner & RWSEM_READER_OWNED != 0 {
        return 0;
    }
    hist::count(&SAMPLER, sampler_slot::WRITE_HELD);

    if owner & !RWSEM_OWNER_FLAGS_MASK != task::current_task() {
        return 0;
    }
    hist::count(&SAMPLER, sampler_slot::HELD_BY_CURRENT);

    let (_, tid) = task::current_ids();
    if let Some(inflight) = inflight::find(tid) {
        let syscall = inflight.syscall;
        if syscall >= 1 && syscall as usize <= SYSCALL_COUNT {
            hist::count(&SAMPLER, sampler_slot::BY_SYSCALL + syscall - 1);
        }
    }
    0
}
