//! Patching the object's kfunc placeholder before loading (see `vethtrace_common::kfunc`):
//! aya 0.14 cannot relocate kfunc calls, so the tc programs carry `bpf_cast_to_kern_ctx` as
//! one placeholder instruction whose immediate becomes the kfunc's BTF id on this kernel, or
//! which becomes `r0 = 0` (probe-read fallback) when the kernel has no such kfunc.

use anyhow::{bail, Result};
use vethtrace_common::kfunc;

/// An object's bytes in 8-byte-aligned storage, as aya's ELF parser wants them.
pub struct Object {
    words: Vec<u64>,
    len: usize,
}

impl Object {
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialised bytes; u8 has no alignment needs.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `self` is borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), self.len) }
    }
}

/// What the placeholder became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patched {
    /// The kfunc call, with this BTF id: the tc programs read the skb's device directly.
    Kfunc(u32),
    /// `r0 = 0`: the tc programs read the device through bpf_probe_read_kernel.
    Fallback,
}

/// Copies `object` and rewrites every placeholder instruction in it: into a call of the kfunc
/// with BTF id `btf_id`, or into `r0 = 0` without one. Fails when the object has none (an
/// object built before the placeholder existed: rebuild it).
pub fn patch(object: &[u8], btf_id: Option<u32>) -> Result<(Object, Patched)> {
    let mut out = Object {
        words: vec![0; object.len().div_ceil(8)],
        len: object.len(),
    };
    out.bytes_mut().copy_from_slice(object);
    let (insn, patched) = match btf_id {
        Some(id) => {
            let mut insn = kfunc::PLACEHOLDER;
            insn[4..].copy_from_slice(&(id as i32).to_le_bytes());
            (insn, Patched::Kfunc(id))
        }
        None => (kfunc::FALLBACK, Patched::Fallback),
    };
    let bytes = out.bytes_mut();
    let mut found = 0;
    let mut at = 0;
    while let Some(i) = find(&bytes[at..], &kfunc::PLACEHOLDER) {
        let start = at + i;
        bytes[start..start + 8].copy_from_slice(&insn);
        found += 1;
        at = start + 8;
    }
    if found == 0 {
        bail!(
            "the eBPF object has no {} placeholder: rebuild it with `cargo xtask build-ebpf`",
            kfunc::NAME
        );
    }
    Ok((out, patched))
}

fn find(hay: &[u8], needle: &[u8; 8]) -> Option<usize> {
    hay.windows(8).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object() -> Vec<u8> {
        let mut v = vec![0xaa; 5];
        v.extend_from_slice(&kfunc::PLACEHOLDER);
        v.extend_from_slice(&[1, 2, 3]);
        v.extend_from_slice(&kfunc::PLACEHOLDER);
        v
    }

    #[test]
    fn writes_the_btf_id_into_every_placeholder() {
        let (o, p) = patch(&object(), Some(0x0001_2345)).expect("patched");
        assert_eq!(p, Patched::Kfunc(0x12345));
        let b = o.bytes();
        assert_eq!(b.len(), object().len());
        for start in [5, 16] {
            assert_eq!(&b[start..start + 4], &[0x85, 0x20, 0, 0]);
            assert_eq!(&b[start + 4..start + 8], &0x12345i32.to_le_bytes());
        }
        assert_eq!(&b[13..16], &[1, 2, 3]);
        assert_eq!(b.as_ptr() as usize % 8, 0);
    }

    #[test]
    fn falls_back_to_r0_zero() {
        let (o, p) = patch(&object(), None).expect("patched");
        assert_eq!(p, Patched::Fallback);
        assert_eq!(&o.bytes()[5..13], &kfunc::FALLBACK);
        assert_eq!(&o.bytes()[16..24], &kfunc::FALLBACK);
    }

    #[test]
    fn an_object_without_placeholder_is_an_error() {
        let e = patch(&[0u8; 64], Some(1))
            .err()
            .expect("an error")
            .to_string();
        assert!(e.contains("cargo xtask build-ebpf"), "{e}");
    }
}
