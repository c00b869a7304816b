//! Calibration: records every lock contention of the calibrating process, so the agent can
//! find `namespace_sem` as the one address contended for write by its mounting threads and
//! for read by its mountinfo reader.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use mountscope_common::CalibKey;

use crate::{globals, maps::CALIB, task};

#[tracepoint(category = "lock", name = "contention_begin")]
pub fn calibrate_contention(ctx: TracePointContext) -> u32 {
    let (tgid, tid) = task::current_ids();
    if tgid != globals::calib_tgid() {
        return 0;
    }
    // SAFETY: `lock_addr` is a pointer at offset 8 and `flags` a u32 at offset 16.
    let (lock_addr, flags) = unsafe {
        (
            ctx.read_at::<u64>(8).unwrap_or(0),
            ctx.read_at::<u32>(16).unwrap_or(0),
        )
    };
    let key = CalibKey {
        lock_addr,
        tid,
        flags,
    };
    match CALIB.get_ptr_mut(key) {
        // SAFETY: the pointer comes from the map; a lost increment between CPUs only lowers
        // a count that is used as a threshold.
        Some(count) => unsafe { *count += 1 },
        None => {
            let _ = CALIB.insert(key, 1, 0);
        }
    }
    0
}
