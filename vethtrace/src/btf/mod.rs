//! What the running kernel's BTF tells us: the names of `enum skb_drop_reason` (never a
//! hard-coded table: values move between kernels), the offsets of the few `sk_buff`,
//! `net_device` and `net` fields the drop program reads, and those of the netfilter structures
//! the `nft_do_chain` program reads. The BTF itself is read by [`reader`], written for these
//! questions (its header says why it is not a crate).

mod reader;

use std::collections::HashMap;

use anyhow::{anyhow, Context, Result};
use vethtrace_common::{KernelOffsets, NfOffsets};

use reader::{kind, Btf};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The kernel's BTF, read once.
pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    pub fn load() -> Result<Self> {
        let data = std::fs::read(VMLINUX_BTF).with_context(|| {
            format!(
                "read {VMLINUX_BTF}: this kernel has no BTF (CONFIG_DEBUG_INFO_BTF=y is required)"
            )
        })?;
        Self::from_bytes(data).with_context(|| format!("parse {VMLINUX_BTF}"))
    }

    fn from_bytes(data: Vec<u8>) -> Result<Self> {
        Ok(Self {
            btf: Btf::parse(data)?,
        })
    }

    /// `enum skb_drop_reason` as value → name without the `SKB_DROP_REASON_` prefix
    /// (`NETFILTER_DROP`, `NO_SOCKET`, …); `SKB_CONSUMED` keeps its name. Read from an ENUM or
    /// an ENUM64, whichever this kernel's BTF has.
    pub fn drop_reasons(&self) -> Result<DropReasons> {
        let btf = &self.btf;
        let Some(e) = btf
            .types_named("skb_drop_reason")
            .find(|t| matches!(t.kind, kind::ENUM | kind::ENUM64))
        else {
            return Err(anyhow!("the kernel's BTF has no enum skb_drop_reason"));
        };
        let mut names = HashMap::new();
        for m in btf.enumerators(&e) {
            let m = m?;
            // The tracepoint's reason is 32 bits: a value beyond them can never be reported.
            let Ok(value) = u32::try_from(m.value) else {
                continue;
            };
            let name = btf.name(m.name_off)?;
            let short = name.strip_prefix("SKB_DROP_REASON_").unwrap_or(name);
            names.insert(value, short.to_string());
        }
        Ok(DropReasons { names })
    }

    /// Byte offsets for [`KernelOffsets`], `valid` set when all were found.
    pub fn offsets(&self) -> Result<KernelOffsets> {
        let skb = |f| self.member_offset("sk_buff", f);
        let mut o = KernelOffsets {
            skb_len: skb("len")?,
            skb_dev: skb("dev")?,
            skb_head: skb("head")?,
            skb_data: skb("data")?,
            skb_mark: skb("mark")?,
            skb_network_header: skb("network_header")?,
            skb_protocol: skb("protocol")?,
            dev_ifindex: self.member_offset("net_device", "ifindex")?,
            // possible_net_t holds one `struct net *net` at offset 0.
            dev_nd_net: self.member_offset("net_device", "nd_net")?,
            net_cookie: self.member_offset("net", "net_cookie")?,
            valid: 0,
            skb_mac_header: skb("mac_header")?,
            skb_data_len: skb("data_len")?,
            _pad: 0,
        };
        o.valid = 1;
        Ok(o)
    }

    /// Byte offsets for [`NfOffsets`], `valid` set when all were found; an error saying why
    /// the netfilter layer cannot work here otherwise (no nf_tables in the kernel's BTF).
    pub fn nf_offsets(&self) -> Result<NfOffsets> {
        if !self.has_function("nft_do_chain") {
            return Err(anyhow!(
                "{}",
                if std::path::Path::new("/sys/kernel/btf/nf_tables").exists() {
                    "nft_do_chain is in the nf_tables module, and fexit is attached to vmlinux functions only"
                } else {
                    "the kernel's BTF has no nft_do_chain (nf_tables not built in)"
                }
            ));
        }
        let state = |f| self.member_offset("nf_hook_state", f);
        let mut o = NfOffsets {
            pkt_skb: self.member_offset("nft_pktinfo", "skb")?,
            pkt_state: self.member_offset("nft_pktinfo", "state")?,
            state_hook: state("hook")?,
            state_pf: state("pf")?,
            state_in: state("in")?,
            state_out: state("out")?,
            state_net: state("net")?,
            chain_table: self.member_offset("nft_chain", "table")?,
            chain_name: self.member_offset("nft_chain", "name")?,
            table_name: self.member_offset("nft_table", "name")?,
            valid: 0,
            _pad: 0,
        };
        o.valid = 1;
        Ok(o)
    }

    /// Whether the BTF describes a function of that name.
    pub fn has_function(&self, name: &str) -> bool {
        self.function_id(name).is_some()
    }

    /// The BTF id of the function `name` (a kfunc the programs call), if the kernel has one.
    pub fn function_id(&self, name: &str) -> Option<u32> {
        self.btf
            .types_named(name)
            .find(|t| t.kind == kind::FUNC)
            .map(|t| t.id)
    }

    /// Byte offset of `field` in `struct strukt`, looking through anonymous unions and structs.
    /// A bitfield is an error: it shares its bytes with its neighbours, so the byte holding its
    /// first bit is no offset a program could read the field at, and answering it would have the
    /// program read a neighbour's bits as this field's.
    pub fn member_offset(&self, strukt: &str, field: &str) -> Result<u32> {
        for s in self.btf.types_named(strukt) {
            if s.kind != kind::STRUCT {
                continue;
            }
            if let Some(m) = self.btf.member_at(&s, field)? {
                if m.bitfield {
                    return Err(anyhow!(
                        "the kernel's BTF has field {field} in struct {strukt} as a bitfield (from bit {}), which has no byte offset to read",
                        m.bit_offset
                    ));
                }
                return Ok(m.bit_offset / 8);
            }
        }
        Err(anyhow!(
            "the kernel's BTF has no field {field} in struct {strukt}"
        ))
    }
}

/// Names of the kernel's drop reasons.
#[derive(Debug, Clone, Default)]
pub struct DropReasons {
    names: HashMap<u32, String>,
}

impl DropReasons {
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (u32, &'a str)>) -> Self {
        Self {
            names: pairs.into_iter().map(|(v, n)| (v, n.to_string())).collect(),
        }
    }

    /// The reason's name, or `reason <N>` for a value this kernel's BTF does not list.
    pub fn name(&self, value: u32) -> String {
        self.names
            .get(&value)
            .cloned()
            .unwrap_or_else(|| format!("reason {value}"))
    }

    pub fn value(&self, name: &str) -> Option<u32> {
        self.names.iter().find(|(_, n)| *n == name).map(|(v, _)| *v)
    }
}

#[cfg(test)]
mod tests {
    use super::{reader::blob::Blob, *};

    #[test]
    fn unknown_reason_is_shown_by_number() {
        let r = DropReasons::from_pairs([(12, "NETFILTER_DROP")]);
        assert_eq!(r.name(12), "NETFILTER_DROP");
        assert_eq!(r.name(99), "reason 99");
        assert_eq!(r.value("NETFILTER_DROP"), Some(12));
    }

    #[test]
    fn reads_this_kernels_btf_when_present() {
        if !std::path::Path::new(VMLINUX_BTF).exists() {
            eprintln!("skipped: no {VMLINUX_BTF}");
            return;
        }
        let btf = KernelBtf::load().expect("BTF parses");
        let reasons = btf.drop_reasons().expect("enum skb_drop_reason");
        assert!(reasons.value("NETFILTER_DROP").is_some());
        assert!(reasons.value("NOT_SPECIFIED").is_some());
        let o = btf.offsets().expect("offsets");
        assert_eq!(o.valid, 1);
        assert_ne!(o.skb_dev, o.skb_len);
        // nf_tables may be a module elsewhere; where nft_do_chain is in vmlinux, every
        // netfilter offset must be found.
        if btf.has_function("nft_do_chain") {
            let n = btf.nf_offsets().expect("netfilter offsets");
            assert_eq!(n.valid, 1);
            // hook and pf are adjacent u8s at the start of nf_hook_state.
            assert_eq!(n.state_pf, n.state_hook + 1);
            assert_ne!(n.pkt_skb, n.pkt_state);
        } else {
            assert!(btf.nf_offsets().is_err());
        }
    }

    /// A kernel-like blob: `enum skb_drop_reason` as `kind` (ENUM or ENUM64), a struct
    /// `sk_buff` with `dev` in an anonymous union, and the kfunc.
    fn kernel_like(kind: u32) -> KernelBtf {
        let mut b = Blob::new();
        let int = b.ty("int", kind::INT, false, 0, 4, &[32]);
        let names = [
            "SKB_CONSUMED",
            "SKB_DROP_REASON_NOT_SPECIFIED",
            "SKB_DROP_REASON_NETFILTER_DROP",
            "SKB_DROP_REASON_MAX",
        ];
        let mut extra = Vec::new();
        for (value, name) in [0u32, 2, 12, 90].into_iter().zip(names) {
            extra.push(b.s(name));
            extra.push(value);
            if kind == kind::ENUM64 {
                extra.push(0);
            }
        }
        if kind == kind::ENUM64 {
            // A value beyond 32 bits, which no tracepoint can report, is left out.
            extra.extend([b.s("SKB_DROP_REASON_HUGE"), 0, 1]);
        }
        let vlen = (extra.len() / if kind == kind::ENUM64 { 3 } else { 2 }) as u32;
        // A forward declaration of the same name is not the enum.
        b.ty("skb_drop_reason", kind::FWD, true, 0, 0, &[]);
        b.ty("skb_drop_reason", kind, false, vlen, 4, &extra);
        let u = b.composite("", kind::UNION, false, &[("dev", int, 0), ("x", int, 0)]);
        b.composite(
            "sk_buff",
            kind::STRUCT,
            false,
            &[("next", int, 0), ("", u, 128)],
        );
        let proto = b.ty("", kind::FUNC_PROTO, false, 0, int, &[]);
        b.ty("bpf_cast_to_kern_ctx", kind::FUNC, false, 1, proto, &[]);
        KernelBtf::from_bytes(b.bytes()).expect("parses")
    }

    #[test]
    fn answers_from_an_enum_or_an_enum64() {
        for kind in [kind::ENUM, kind::ENUM64] {
            let btf = kernel_like(kind);
            let r = btf.drop_reasons().expect("drop reasons");
            assert_eq!(r.names.len(), 4, "kind {kind}");
            assert_eq!(r.name(0), "SKB_CONSUMED");
            assert_eq!(r.name(2), "NOT_SPECIFIED");
            assert_eq!(r.value("NETFILTER_DROP"), Some(12));
            assert_eq!(r.value("HUGE"), None);
            assert_eq!(btf.member_offset("sk_buff", "dev").expect("dev"), 16);
            assert_eq!(btf.member_offset("sk_buff", "next").expect("next"), 0);
            let e = btf.member_offset("sk_buff", "len").expect_err("no len");
            assert_eq!(
                e.to_string(),
                "the kernel's BTF has no field len in struct sk_buff"
            );
            assert!(btf.member_offset("nope", "len").is_err());
            assert!(btf.has_function("bpf_cast_to_kern_ctx"));
            assert!(!btf.has_function("sk_buff"));
            assert!(btf.function_id("bpf_cast_to_kern_ctx").is_some());
            assert!(btf.offsets().is_err());
            let e = btf.nf_offsets().expect_err("no nf_tables");
            assert!(e.to_string().contains("nft_do_chain"), "{e}");
        }
    }

    #[test]
    fn no_drop_reasons_is_an_error() {
        let mut b = Blob::new();
        b.ty("skb_drop_reason", kind::FWD, true, 0, 0, &[]);
        let btf = KernelBtf::from_bytes(b.bytes()).expect("parses");
        let e = btf.drop_reasons().expect_err("no enum");
        assert_eq!(
            e.to_string(),
            "the kernel's BTF has no enum skb_drop_reason"
        );
        let e = KernelBtf::from_bytes(b"garbage".to_vec())
            .err()
            .expect("garbage");
        assert_eq!(e.to_string(), "bad BTF header: wrong magic");
    }

    /// A struct with kind_flag and bitfields, one without kind_flag and a member off a byte
    /// boundary, and the plain members around them.
    #[test]
    fn bitfields_are_refused_by_name() {
        let mut b = Blob::new();
        let int = b.ty("int", kind::INT, false, 0, 4, &[32]);
        let u8t = b.ty("u8", kind::INT, false, 0, 1, &[8]);
        b.composite(
            "sk_buff",
            kind::STRUCT,
            true,
            &[
                ("len", int, 0),
                ("cloned", u8t, 1 << 24 | 32),
                ("pkt_type", u8t, 3 << 24 | 33),
                ("mark", int, 64),
            ],
        );
        b.composite(
            "net_device",
            kind::STRUCT,
            false,
            &[("flags", u8t, 0), ("odd", u8t, 12), ("ifindex", int, 32)],
        );
        let btf = KernelBtf::from_bytes(b.bytes()).expect("parses");
        assert_eq!(btf.member_offset("sk_buff", "len").expect("len"), 0);
        assert_eq!(btf.member_offset("sk_buff", "mark").expect("mark"), 8);
        assert_eq!(btf.member_offset("net_device", "flags").expect("flags"), 0);
        assert_eq!(
            btf.member_offset("net_device", "ifindex").expect("ifindex"),
            4
        );
        for (strukt, field, bit) in [
            ("sk_buff", "cloned", 32),
            ("sk_buff", "pkt_type", 33),
            ("net_device", "odd", 12),
        ] {
            let e = btf
                .member_offset(strukt, field)
                .expect_err("a bitfield has no byte offset");
            assert_eq!(e.to_string(), refusal(strukt, field, bit));
        }
        // One refused field fails the whole set: the program would read the wrong bits.
        let e = btf.offsets().expect_err("no dev, no head");
        assert_eq!(
            e.to_string(),
            "the kernel's BTF has no field dev in struct sk_buff"
        );
    }

    /// The error [`KernelBtf::member_offset`] gives for a bitfield starting at `bit`.
    fn refusal(strukt: &str, field: &str, bit: u32) -> String {
        format!(
            "the kernel's BTF has field {field} in struct {strukt} as a bitfield (from bit {bit}), which has no byte offset to read"
        )
    }

    /// The answers of btf-rs, the crate this reader replaced, for the cross-check.
    mod oracle {
        use anyhow::{anyhow, Result};
        use btf_rs::{Btf, Type};

        /// A member as btf-rs finds it.
        pub struct Found {
            pub bit_offset: u32,
            /// A width under kind_flag, or an offset off a byte boundary. btf-rs keeps an int
            /// type's bits and BTF_INT_OFFSET private, so the older encoding (a narrow int type
            /// at a byte boundary, in a struct without kind_flag) is not seen here; pahole
            /// writes kind_flag for every bitfield, so a kernel with such members would show as
            /// a disagreement naming them.
            pub bitfield: bool,
        }

        pub fn member_at(btf: &Btf, strukt: &str, field: &str) -> Result<Found> {
            for t in btf.resolve_types_by_name(strukt)? {
                if let Type::Struct(s) = t {
                    if let Some(found) = find_member(btf, &s, field, 0)? {
                        return Ok(found);
                    }
                }
            }
            Err(anyhow!("no field {field} in struct {strukt}"))
        }

        /// A byte offset, for a member that must not be a bitfield.
        pub fn member_offset(btf: &Btf, strukt: &str, field: &str) -> Result<u32> {
            let found = member_at(btf, strukt, field)?;
            if found.bitfield {
                return Err(anyhow!("{strukt}.{field} is a bitfield"));
            }
            Ok(found.bit_offset / 8)
        }

        fn find_member(
            btf: &Btf,
            s: &btf_rs::Struct,
            field: &str,
            base: u32,
        ) -> Result<Option<Found>> {
            for m in &s.members {
                let name = btf.resolve_name(m)?;
                if name == field {
                    let bit_offset = base + m.bit_offset();
                    return Ok(Some(Found {
                        bit_offset,
                        bitfield: m.bitfield_size().is_some_and(|w| w != 0)
                            || !bit_offset.is_multiple_of(8),
                    }));
                }
                if name.is_empty() {
                    if let Type::Struct(inner) | Type::Union(inner) = btf.resolve_chained_type(m)? {
                        if let Some(off) = find_member(btf, &inner, field, base + m.bit_offset())? {
                            return Ok(Some(off));
                        }
                    }
                }
            }
            Ok(None)
        }

        pub fn function_id(btf: &Btf, name: &str) -> Option<u32> {
            let ids = btf.resolve_ids_by_name(name).ok()?;
            ids.into_iter()
                .find(|&id| matches!(btf.resolve_type_by_id(id), Ok(Type::Func(_))))
        }

        /// Value → full name, from whichever of ENUM and ENUM64 the kernel has.
        pub fn drop_reasons(btf: &Btf) -> Result<Vec<(u32, String)>> {
            for t in btf.resolve_types_by_name("skb_drop_reason")? {
                match t {
                    Type::Enum(e) => {
                        return e
                            .members
                            .iter()
                            .map(|m| Ok((m.val(), btf.resolve_name(m)?)))
                            .collect();
                    }
                    Type::Enum64(e) => {
                        return e
                            .members
                            .iter()
                            .filter_map(|m| Some((u32::try_from(m.val()).ok()?, m)))
                            .map(|(v, m)| Ok((v, btf.resolve_name(m)?)))
                            .collect();
                    }
                    _ => {}
                }
            }
            Err(anyhow!("no enum skb_drop_reason"))
        }
    }

    #[test]
    fn agrees_with_btf_rs_on_this_kernels_btf() {
        if !std::path::Path::new(VMLINUX_BTF).exists() {
            eprintln!("skipped: no {VMLINUX_BTF}");
            return;
        }
        let ours = KernelBtf::load().expect("BTF parses");
        let theirs = btf_rs::Btf::from_file(VMLINUX_BTF).expect("btf-rs parses");
        // Every field we ask for is a whole one: btf-rs must find it and not as a bitfield.
        let off = |s, f| oracle::member_offset(&theirs, s, f).expect("btf-rs finds the field");

        let skb = |f| off("sk_buff", f);
        let expected = KernelOffsets {
            skb_len: skb("len"),
            skb_dev: skb("dev"),
            skb_head: skb("head"),
            skb_data: skb("data"),
            skb_mark: skb("mark"),
            skb_network_header: skb("network_header"),
            skb_protocol: skb("protocol"),
            dev_ifindex: off("net_device", "ifindex"),
            dev_nd_net: off("net_device", "nd_net"),
            net_cookie: off("net", "net_cookie"),
            valid: 1,
            skb_mac_header: skb("mac_header"),
            skb_data_len: skb("data_len"),
            _pad: 0,
        };
        assert_eq!(ours.offsets().expect("offsets"), expected);

        let has_nft = oracle::function_id(&theirs, "nft_do_chain").is_some();
        assert_eq!(ours.has_function("nft_do_chain"), has_nft);
        if has_nft {
            let state = |f| off("nf_hook_state", f);
            let expected = NfOffsets {
                pkt_skb: off("nft_pktinfo", "skb"),
                pkt_state: off("nft_pktinfo", "state"),
                state_hook: state("hook"),
                state_pf: state("pf"),
                state_in: state("in"),
                state_out: state("out"),
                state_net: state("net"),
                chain_table: off("nft_chain", "table"),
                chain_name: off("nft_chain", "name"),
                table_name: off("nft_table", "name"),
                valid: 1,
                _pad: 0,
            };
            assert_eq!(ours.nf_offsets().expect("netfilter offsets"), expected);
        } else {
            assert!(ours.nf_offsets().is_err());
        }

        let expected = oracle::drop_reasons(&theirs).expect("btf-rs drop reasons");
        let reasons = ours.drop_reasons().expect("drop reasons");
        assert!(expected.len() > 10, "{} drop reasons", expected.len());
        assert_eq!(reasons.names.len(), expected.len());
        for (value, name) in &expected {
            let short = name.strip_prefix("SKB_DROP_REASON_").unwrap_or(name);
            assert_eq!(reasons.names.get(value).map(String::as_str), Some(short));
        }

        for f in [
            "bpf_cast_to_kern_ctx",
            "nft_do_chain",
            "kfree_skb_reason",
            "no_such_fn",
        ] {
            assert_eq!(ours.function_id(f), oracle::function_id(&theirs, f), "{f}");
            assert_eq!(ours.has_function(f), ours.function_id(f).is_some(), "{f}");
        }
        assert!(ours.function_id("bpf_cast_to_kern_ctx").is_some());
    }

    /// Every member of every named struct of this kernel, ours against btf-rs: the anonymous
    /// members, bitfields and duplicate names of a real BTF, beyond the few fields we read.
    /// Bitfields must be refused, naming them; every other member answered, as btf-rs does.
    #[test]
    fn every_struct_member_agrees_with_btf_rs() {
        if !std::path::Path::new(VMLINUX_BTF).exists() {
            eprintln!("skipped: no {VMLINUX_BTF}");
            return;
        }
        let ours = KernelBtf::load().expect("BTF parses");
        let theirs = btf_rs::Btf::from_file(VMLINUX_BTF).expect("btf-rs parses");
        let (mut structs, mut members, mut bitfields) = (0, 0, 0);
        let mut id = 1;
        while let Ok(t) = theirs.resolve_type_by_id(id) {
            id += 1;
            let btf_rs::Type::Struct(s) = t else { continue };
            let Ok(name) = theirs.resolve_name(&s) else {
                continue;
            };
            if name.is_empty() {
                continue;
            }
            structs += 1;
            for m in &s.members {
                let field = theirs.resolve_name(m).expect("member name");
                if field.is_empty() {
                    continue;
                }
                members += 1;
                let expected = oracle::member_at(&theirs, &name, &field).expect("btf-rs");
                let got = ours.member_offset(&name, &field).map_err(|e| e.to_string());
                if expected.bitfield {
                    bitfields += 1;
                    let refused = refusal(&name, &field, expected.bit_offset);
                    assert_eq!(got, Err(refused), "struct {name}.{field}");
                } else {
                    assert_eq!(got, Ok(expected.bit_offset / 8), "struct {name}.{field}");
                }
            }
        }
        eprintln!("{structs} structs, {members} members, {bitfields} bitfields refused");
        // sk_buff alone has dozens of bitfields (pkt_type, cloned, ...).
        assert!(
            structs > 1000 && members > 10_000 && bitfields > 100,
            "{structs} structs, {members} members, {bitfields} bitfields"
        );
    }
}
