//! The eBPF object embedded at build time (see build.rs). A build without it still works for
//! everything that does not load programs, and says how to build it when asked to.

/// The object's bytes, aligned as aya's ELF parser wants them.
#[cfg(vethtrace_ebpf_object)]
pub fn bytes() -> anyhow::Result<&'static [u8]> {
    #[repr(C, align(32))]
    struct Aligned<T: ?Sized>(T);
    static OBJECT: &Aligned<[u8]> = &Aligned(*include_bytes!(env!("VETHTRACE_EBPF_OBJECT")));
    Ok(&OBJECT.0)
}

#[cfg(not(vethtrace_ebpf_object))]
pub fn bytes() -> anyhow::Result<&'static [u8]> {
    anyhow::bail!(
        "this vethtrace was built without its eBPF object: run `cargo xtask build-ebpf` (or `cargo xtask setup` first on a new machine), then rebuild"
    )
}
