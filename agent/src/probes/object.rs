//! The eBPF object built from `agent-ebpf` by the build script and embedded in the binary.

/// The object's bytes; empty when the agent was built with `AYA_BUILD_SKIP=1`.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mountscope-ebpf"));

/// Whether the binary carries the eBPF programs.
pub fn is_embedded() -> bool {
    !EBPF_OBJECT.is_empty()
}
