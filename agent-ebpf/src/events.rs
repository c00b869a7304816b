//! Writing per-event records into the ring buffer.

use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
use mountscope_common::{Event, drop_slot};

use crate::{
    hist,
    maps::{DROPS, EVENTS, SWITCHES},
};

/// Unread bytes in the ring buffer above which a submit wakes the reader. Below it, the agent
/// finds the records at its next timed drain (every 100 ms), which spares every traced
/// syscall the cost of a wakeup.
const WAKEUP_THRESHOLD: u64 = 1 << 20;

/// Reserves a zeroed record, or counts a ring-buffer drop and returns `None`.
#[inline(always)]
pub fn reserve() -> Option<aya_ebpf::maps::ring_buf::RingBufEntry<Event>> {
    match EVENTS.reserve::<Event>(0) {
        Some(entry) => Some(entry),
        None => {
            hist::count(&DROPS, drop_slot::RINGBUF);
            None
        }
    }
}

/// Submits a filled record.
#[inline(always)]
pub fn submit(entry: aya_ebpf::maps::ring_buf::RingBufEntry<Event>) {
    let flags = if EVENTS.query(BPF_RB_AVAIL_DATA as u64) > WAKEUP_THRESHOLD {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(flags as u64);
}

/// Returns whether a record of every syscall is requested. The agent turns this on only while
/// a consumer reads them (`record`, `watch --export`, or a client subscribed to events),
/// because writing a record is a large part of a traced call's cost and the counters and
/// histograms do not need it.
#[inline(always)]
pub fn syscall_records_on() -> bool {
    SWITCHES
        .get(mountscope_common::switch_slot::SYSCALL_RECORDS)
        .is_some_and(|on| *on != 0)
}
