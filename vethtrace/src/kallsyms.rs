//! Kernel addresses → function names (`/proc/kallsyms`), for the location of a drop.
//! Read only when a drop needs naming; addresses read as 0 without CAP_SYSLOG.

use std::collections::BTreeMap;

#[derive(Default)]
pub struct Kallsyms {
    /// Start address → symbol name (text symbols only).
    syms: BTreeMap<u64, String>,
}

impl Kallsyms {
    pub fn load() -> Self {
        std::fs::read_to_string("/proc/kallsyms")
            .map(|s| Self::parse(&s))
            .unwrap_or_default()
    }

    pub fn parse(text: &str) -> Self {
        let mut syms = BTreeMap::new();
        for line in text.lines() {
            let mut it = line.split_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            if !matches!(kind, "t" | "T") {
                continue;
            }
            if let Ok(a) = u64::from_str_radix(addr, 16) {
                if a != 0 {
                    syms.insert(a, name.to_string());
                }
            }
        }
        Self { syms }
    }

    /// `function+0xoff`, or the address in hex when unknown.
    pub fn symbolize(&self, addr: u64) -> String {
        match self.syms.range(..=addr).next_back() {
            Some((start, name)) if addr - start < 0x10_0000 => {
                format!("{name}+{:#x}", addr - start)
            }
            _ => format!("{addr:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbolizes_inside_a_function() {
        let k = Kallsyms::parse(
            "ffffffff81000000 T _stext\nffffffff81a00000 t nf_hook_slow\nffffffff81a00400 T br_forward\n",
        );
        assert_eq!(k.symbolize(0xffffffff81a00010), "nf_hook_slow+0x10");
        assert_eq!(k.symbolize(0xffffffff81a00400), "br_forward+0x0");
        assert_eq!(k.symbolize(0x10), "0x10");
    }
}
