//! Kernel addresses → function names (`/proc/kallsyms`), for the location of a drop.
//!
//! Only drop locations need names, and a trace may see none, so [`Kallsyms::load`] reads
//! nothing: the table is built on the first [`Kallsyms::symbolize`]. It is compact (one sorted
//! `u64` per text symbol and a `u32` offset into one `String` of names: about 4.5 MiB for
//! this kernel's ~120 000 text symbols, where a `BTreeMap<u64, String>` with a heap string per
//! symbol took over twice that), and the file is read line by line rather than as one 5 MiB
//! string. Addresses read as 0
//! without CAP_SYSLOG; those lines are skipped, so every address then shows in hex.

use std::{
    io::{BufRead, BufReader},
    sync::OnceLock,
};

const PROC_KALLSYMS: &str = "/proc/kallsyms";

/// How far past a symbol's start an address is still shown as inside it: kernel functions
/// are far shorter, so anything beyond is more likely unmapped space than a 1 MiB function.
const MAX_OFFSET: u64 = 0x10_0000;

#[derive(Default)]
pub struct Kallsyms {
    /// Read `/proc/kallsyms` into `table` on first use.
    from_proc: bool,
    table: OnceLock<Table>,
}

/// Text symbols sorted by start address; symbol `i`'s name starts at `names[begins[i]]` and
/// runs to the next `\n`.
#[derive(Default)]
struct Table {
    starts: Vec<u64>,
    begins: Vec<u32>,
    names: String,
}

impl Kallsyms {
    /// The running kernel's symbols, read from `/proc/kallsyms` when first needed (an
    /// unreadable file leaves every address in hex).
    pub fn load() -> Self {
        Self {
            from_proc: true,
            table: OnceLock::new(),
        }
    }

    /// Symbols from the text of a kallsyms file (tests, and fixtures).
    pub fn parse(text: &str) -> Self {
        let table = OnceLock::new();
        let _ = table.set(Table::from_lines(text.lines()));
        Self {
            from_proc: false,
            table,
        }
    }

    /// `function+0xoff`, or the address in hex when unknown.
    pub fn symbolize(&self, addr: u64) -> String {
        let table = self.table.get_or_init(|| {
            if self.from_proc {
                Table::read_proc()
            } else {
                Table::default()
            }
        });
        match table.lookup(addr) {
            Some((name, off)) => format!("{name}+{off:#x}"),
            None => format!("{addr:#x}"),
        }
    }

    /// Whether the table has been built (it is on the first [`Kallsyms::symbolize`]).
    pub fn is_loaded(&self) -> bool {
        self.table.get().is_some()
    }

    /// Bytes held by the table (0 before it is built).
    pub fn heap_bytes(&self) -> usize {
        self.table.get().map_or(0, Table::heap_bytes)
    }
}

impl Table {
    fn read_proc() -> Table {
        let Ok(file) = std::fs::File::open(PROC_KALLSYMS) else {
            return Table::default();
        };
        let lines = BufReader::new(file).lines().map_while(Result::ok);
        let table = Table::from_lines(lines);
        // Building it grew and dropped vectors about twice the table's size: measured, RSS
        // rose by 12.5 MiB at the first drop without this, by the table's 4.3 MiB with it.
        crate::loader::return_freed_heap();
        table
    }

    fn from_lines<S: AsRef<str>>(lines: impl Iterator<Item = S>) -> Table {
        let mut syms: Vec<(u64, u32)> = Vec::new();
        let mut names = String::new();
        for line in lines {
            let line = line.as_ref();
            let mut it = line.split_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            if !matches!(kind, "t" | "T") {
                continue;
            }
            // Without CAP_SYSLOG every address reads 0 and nothing can be symbolized.
            let Ok(a @ 1..) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            // Offsets are u32 to keep the table small; names past 4 GiB are left out.
            let Ok(begin) = u32::try_from(names.len()) else {
                break;
            };
            syms.push((a, begin));
            names.push_str(name);
            names.push('\n');
        }
        // /proc/kallsyms lists vmlinux in address order, then the modules. The sort is stable
        // and lookups take the last of equal starts: the name listed last wins, as it did in
        // the map this replaces (aliases at one address name the same code).
        syms.sort_by_key(|&(a, _)| a);
        names.shrink_to_fit();
        Table {
            starts: syms.iter().map(|&(a, _)| a).collect(),
            begins: syms.iter().map(|&(_, b)| b).collect(),
            names,
        }
    }

    /// The symbol `addr` lies in and the offset into it.
    fn lookup(&self, addr: u64) -> Option<(&str, u64)> {
        // Index of the last start ≤ addr.
        let i = self.starts.partition_point(|&s| s <= addr).checked_sub(1)?;
        let off = addr - self.starts[i];
        if off >= MAX_OFFSET {
            return None;
        }
        let rest = self.names.get(*self.begins.get(i)? as usize..)?;
        Some((rest.split('\n').next()?, off))
    }

    fn heap_bytes(&self) -> usize {
        self.starts.capacity() * 8 + self.begins.capacity() * 4 + self.names.capacity()
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
        assert_eq!(k.symbolize(0xffffffff81a003ff), "nf_hook_slow+0x3ff");
        assert_eq!(k.symbolize(0x10), "0x10");
    }

    #[test]
    fn modules_listed_after_vmlinux_are_sorted_in() {
        let k = Kallsyms::parse(
            "ffffffff81000000 T _stext\n\
             ffffffff82000000 T _etext_fn\n\
             ffffffffc0001000 t vx_rcv\t[vxlan]\n\
             ffffffff81500000 D some_data\n\
             ffffffffa0000000 t mod_low\t[low]\n",
        );
        assert_eq!(k.symbolize(0xffffffffa0000020), "mod_low+0x20");
        assert_eq!(k.symbolize(0xffffffffc0001004), "vx_rcv+0x4");
        assert_eq!(k.symbolize(0xffffffff82000001), "_etext_fn+0x1");
        // Data symbols are not functions: an address there is 5 MiB past _stext, too far.
        assert_eq!(k.symbolize(0xffffffff81000010), "_stext+0x10");
        assert_eq!(k.symbolize(0xffffffff81500000), "0xffffffff81500000");
    }

    #[test]
    fn of_aliases_at_one_address_the_last_listed_names_it() {
        let k = Kallsyms::parse("ffffffff81000000 T alias_a\nffffffff81000000 T alias_b\n");
        assert_eq!(k.symbolize(0xffffffff81000004), "alias_b+0x4");
    }

    #[test]
    fn far_past_the_last_symbol_and_unreadable_addresses_stay_hex() {
        let k = Kallsyms::parse(
            "ffffffff81000000 T _stext\n0000000000000000 T hidden\nnot a line\nzz T bad\n",
        );
        assert_eq!(
            k.symbolize(0xffffffff81000000 + MAX_OFFSET),
            "0xffffffff81100000"
        );
        assert_eq!(k.symbolize(0xffffffff81000008), "_stext+0x8");
        let hidden = Kallsyms::parse("0000000000000000 T a\n0000000000000000 T b\n");
        assert_eq!(hidden.symbolize(0x0), "0x0");
        assert_eq!(hidden.heap_bytes(), 0);
    }

    #[test]
    fn nothing_is_read_before_a_drop_needs_a_name() {
        let k = Kallsyms::load();
        assert!(!k.is_loaded());
        assert_eq!(k.heap_bytes(), 0);
        let empty = Kallsyms::default();
        assert_eq!(empty.symbolize(0xffffffff81000000), "0xffffffff81000000");
        assert!(empty.is_loaded());
        assert_eq!(empty.heap_bytes(), 0);
    }

    #[test]
    fn this_kernels_table_is_compact() {
        let k = Kallsyms::load();
        let _ = k.symbolize(0);
        assert!(k.is_loaded());
        let bytes = k.heap_bytes();
        // Without CAP_SYSLOG (or /proc) the table is empty; as root it holds every text
        // symbol in well under 8 MiB.
        eprintln!("kallsyms table: {bytes} bytes");
        assert!(bytes < 8 << 20, "{bytes} bytes");
    }
}
