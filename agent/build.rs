//! Builds the eBPF object from `agent-ebpf` with aya-build and places it in `OUT_DIR`.
//!
//! With `AYA_BUILD_SKIP=1` (for `cargo check` and clippy without the eBPF toolchain) no object
//! is built; an empty placeholder is written instead and loading the programs fails with a
//! message that says how to rebuild.

use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};

const EBPF_PACKAGE: &str = "mountscope-ebpf";
const EBPF_BIN: &str = "mountscope-ebpf";

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent", manifest_dir.display()))?
        .join("agent-ebpf");
    let common_dir = manifest_dir.join("common");
    println!("cargo:rerun-if-changed={}", common_dir.display());

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let object = out_dir.join(EBPF_BIN);
    if env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v == "1" || v == "true") {
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        fs::write(&object, b"").with_context(|| format!("failed to write {}", object.display()))?;
        return Ok(());
    }

    let ebpf_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("{} is not UTF-8", ebpf_dir.display()))?;
    let package = aya_build::Package {
        name: EBPF_PACKAGE,
        root_dir: ebpf_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default()).context(
        "failed to build the eBPF programs; run `cargo xtask setup` to install rust-src and \
         bpf-linker, or set AYA_BUILD_SKIP=1 to build without them",
    )
}
