//! Embeds the eBPF object built by `cargo xtask build-ebpf`, when it exists. Without it the crate
//! still builds (so `cargo check`, clippy and the unprivileged tests need neither nightly nor
//! bpf-linker) and the binary says at run time how to build the object.
use std::path::PathBuf;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(vethtrace_ebpf_object)");
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let obj = manifest.join("../target/bpf/vethtrace-ebpf.o");
    println!("cargo::rerun-if-changed={}", obj.display());
    if obj.is_file() {
        println!("cargo::rustc-cfg=vethtrace_ebpf_object");
        println!("cargo::rustc-env=VETHTRACE_EBPF_OBJECT={}", obj.display());
    }
}
