//! Storage of each thread's traced syscall in progress, from enter to exit.
//!
//! Almost every entry lives in `INFLIGHT_SLOTS`, an array indexed by the low bits of the
//! thread id. The verifier inlines array lookups, so storing, finding and clearing an entry
//! costs a few instructions. A hash map would cost a hash, a bucket lock and a free-list
//! operation each time. A thread whose slot another thread owns goes to the `INFLIGHT` hash
//! map instead, and the slot counts it, so lookups try the hash map only while such a thread
//! exists.

use core::{
    intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xadd},
    ptr::{read_volatile, write_volatile},
};

use aya_ebpf::{macros::map, maps::Array};
use mountscope_common::{INFLIGHT_SLOTS as SLOT_COUNT, Inflight, drop_slot};

use crate::{
    globals, hist,
    maps::{DROPS, INFLIGHT},
};

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Slot {
    /// Thread that owns the slot, 0 when it is free. 64 bits wide because BPF has no
    /// 32-bit atomics on every CPU version.
    tid: u64,
    /// Threads with this slot's index whose entry is in the hash map because the slot was
    /// owned by another thread when they entered.
    overflow: u64,
    entry: Inflight,
}

#[map]
static INFLIGHT_SLOTS: Array<Slot> = Array::with_max_entries(SLOT_COUNT, 0);

#[inline(always)]
fn slot(tid: u32) -> Option<*mut Slot> {
    INFLIGHT_SLOTS.get_ptr_mut(tid & globals::inflight_slot_mask())
}

/// Stores the entry of `tid`, which has just entered a traced syscall. A full hash map is
/// counted in `DROPS`, and the call is then missing from every figure.
#[inline(always)]
pub fn begin(tid: u32, entry: Inflight) {
    let Some(slot) = slot(tid) else {
        return;
    };
    // SAFETY: the slot is map memory, and its tid field is only changed atomically.
    unsafe {
        let owner = &raw mut (*slot).tid;
        let tid64 = u64::from(tid);
        // Owning the slot already means the thread's last exit was missed, so reuse it.
        let claimed = read_volatile(owner) == tid64
            || atomic_cxchg::<u64, { AtomicOrdering::Acquire }, { AtomicOrdering::Relaxed }>(
                owner, 0, tid64,
            )
            .1;
        if claimed {
            (*slot).entry = entry;
            return;
        }
        if INFLIGHT.insert(tid, entry, 0).is_err() {
            hist::count(&DROPS, drop_slot::INFLIGHT);
            return;
        }
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*slot).overflow, 1);
    }
}

/// Returns the entry of `tid` if it is inside a traced syscall.
#[inline(always)]
pub fn find(tid: u32) -> Option<Inflight> {
    let slot = slot(tid)?;
    // SAFETY: the slot is map memory. Another CPU may change it meanwhile; a copy that mixes
    // two entries can only misattribute one sample or wait, never fault.
    unsafe {
        if (*slot).tid == u64::from(tid) {
            return Some((*slot).entry);
        }
        if (*slot).overflow == 0 {
            return None;
        }
        INFLIGHT.get_ptr(tid).map(|p| *p)
    }
}

/// Removes and returns the entry of `tid`, which is leaving its traced syscall.
#[inline(always)]
pub fn end(tid: u32) -> Option<Inflight> {
    let slot = slot(tid)?;
    // SAFETY: as in `begin`. Only the thread itself removes its entry.
    unsafe {
        if (*slot).tid == u64::from(tid) {
            let entry = (*slot).entry;
            write_volatile(&raw mut (*slot).tid, 0);
            return Some(entry);
        }
        if (*slot).overflow == 0 {
            return None;
        }
        let entry = INFLIGHT.get_ptr(tid).map(|p| *p)?;
        let _ = INFLIGHT.remove(tid);
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*slot).overflow, u64::MAX);
        Some(entry)
    }
}
