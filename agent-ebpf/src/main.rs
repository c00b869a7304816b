//! mountscope's kernel programs: mount-family syscall latency, `namespace_sem` waits, holders
//! and hold times, and the calibration that finds `namespace_sem`'s address.
//!
//! Every program aggregates into per-CPU maps first, so the figures stay exact when per-event
//! records are dropped because the ring buffer is full.
#![no_std]
#![no_main]
// `core::intrinsics::atomic_xadd` for counters shared between CPUs; the crate builds only
// with the nightly toolchain.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod calibrate;
mod doctor;
mod events;
mod exact;
mod globals;
mod hist;
mod inflight;
mod lock;
mod maps;
mod sampler;
mod syscalls;
mod task;
mod waits;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program that could reach a panic, so this never runs.
    unsafe { core::hint::unreachable_unchecked() }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
