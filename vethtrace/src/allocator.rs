//! The memory a long trace should not keep from its start.
//!
//! The binary allocates with mimalloc (feature `mimalloc`, on by default; see src/main.rs): a
//! live trace allocates and frees every packet's hops, and mimalloc keeps freed pages for
//! reuse where glibc's malloc returned them to the kernel and faulted them in again (decode +
//! correlate: 15–20% more events a second, `cargo xtask bench` figure 5). What it keeps after
//! the start (BTF parses, namespace surveys, attach threads) stays resident, though: with 400
//! hooks 76 MiB, 27 MiB once this hands it back (glibc: 19 MiB; figure 7).

/// Returns the memory freed so far to the kernel. Call once a trace is ready: the start's
/// garbage goes, the steady state then recycles what it frees.
pub fn release_startup_memory() {
    #[cfg(feature = "mimalloc")]
    // SAFETY: mi_collect has no preconditions; it only frees what is no longer in use.
    unsafe {
        libmimalloc_sys::mi_collect(true)
    };
}
