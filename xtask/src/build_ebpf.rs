//! `cargo xtask build-ebpf`: builds vethtrace-ebpf for bpfel-unknown-none with the nightly
//! toolchain (`-Z build-std=core`, release, BTF: see vethtrace-ebpf/.cargo/config.toml) and
//! copies the object to target/bpf/vethtrace-ebpf.o, where vethtrace's build.rs embeds it.
//! The copy happens only when the bytes changed, so an unchanged object does not rebuild vethtrace.

use anyhow::{Context, Result};

use crate::cmd;

pub const OBJECT: &str = "target/bpf/vethtrace-ebpf.o";

pub fn run() -> Result<()> {
    cmd::cargo_in("vethtrace-ebpf", &["+nightly", "build", "--release"])?;
    let root = cmd::root();
    let built = root.join("vethtrace-ebpf/target/bpfel-unknown-none/release/vethtrace-ebpf");
    let bytes = std::fs::read(&built)
        .with_context(|| format!("read the built object {}", built.display()))?;
    let dest = root.join(OBJECT);
    if std::fs::read(&dest).ok().as_deref() != Some(&bytes[..]) {
        std::fs::create_dir_all(root.join("target/bpf"))?;
        std::fs::write(&dest, &bytes).with_context(|| format!("write {}", dest.display()))?;
        cmd::say(&format!(
            "eBPF object updated: {OBJECT} ({} bytes)",
            bytes.len()
        ));
    }
    Ok(())
}
