//! Programs that exist only so `mountscope doctor` can check what the kernel allows.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::{hist, maps::DROPS};

/// BTF-typed tracepoint on `lock:contention_begin` (tp_btf, Linux 5.5+). It does nothing;
/// loading and attaching it is the check.
#[btf_tracepoint(function = "contention_begin")]
pub fn doctor_tp_btf(_ctx: BtfTracePointContext) -> u32 {
    // Touch a map so the program is not empty after optimisation; the slot index is out of
    // range, so nothing is counted.
    hist::count(&DROPS, u32::MAX);
    0
}
