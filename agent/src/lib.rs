//! mountscope's agent library: loads the eBPF programs, turns their maps and events into
//! snapshots, and builds overlay root filesystems to measure.

pub mod collect;
pub mod daemon;
pub mod doctor;
pub mod executor;
pub mod monitor;
pub mod probes;
