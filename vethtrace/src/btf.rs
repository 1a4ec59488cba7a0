//! What the running kernel's BTF tells us: the names of `enum skb_drop_reason` (never a
//! hard-coded table: values move between kernels), the offsets of the few `sk_buff`,
//! `net_device` and `net` fields the drop program reads, and those of the netfilter structures
//! the `nft_do_chain` program reads.

use std::collections::HashMap;

use anyhow::{anyhow, Context, Result};
use btf_rs::{Btf, Type};
use vethtrace_common::{KernelOffsets, NfOffsets};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The kernel's BTF, parsed once.
pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    pub fn load() -> Result<Self> {
        let btf = Btf::from_file(VMLINUX_BTF).with_context(|| {
            format!(
                "read {VMLINUX_BTF}: this kernel has no BTF (CONFIG_DEBUG_INFO_BTF=y is required)"
            )
        })?;
        Ok(Self { btf })
    }

    /// `enum skb_drop_reason` as value → name without the `SKB_DROP_REASON_` prefix
    /// (`NETFILTER_DROP`, `NO_SOCKET`, …); `SKB_CONSUMED` keeps its name.
    pub fn drop_reasons(&self) -> Result<DropReasons> {
        for t in self.btf.resolve_types_by_name("skb_drop_reason")? {
            if let Type::Enum(e) = t {
                let mut names = HashMap::new();
                for m in &e.members {
                    let name = self.btf.resolve_name(m)?;
                    let short = name
                        .strip_prefix("SKB_DROP_REASON_")
                        .unwrap_or(&name)
                        .to_string();
                    names.insert(m.val(), short);
                }
                return Ok(DropReasons { names });
            }
        }
        Err(anyhow!("the kernel's BTF has no enum skb_drop_reason"))
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

    /// Whether the BTF describes a function of that name (a name it does not know is an
    /// error in btf-rs: that is a no).
    pub fn has_function(&self, name: &str) -> bool {
        self.btf
            .resolve_types_by_name(name)
            .unwrap_or_default()
            .iter()
            .any(|t| matches!(t, Type::Func(_)))
    }

    /// The BTF id of the function `name` (a kfunc the programs call), if the kernel has one.
    pub fn function_id(&self, name: &str) -> Option<u32> {
        let ids = self.btf.resolve_ids_by_name(name).ok()?;
        ids.into_iter()
            .find(|&id| matches!(self.btf.resolve_type_by_id(id), Ok(Type::Func(_))))
    }

    /// Byte offset of `field` in `struct strukt`, looking through anonymous unions and structs.
    pub fn member_offset(&self, strukt: &str, field: &str) -> Result<u32> {
        for t in self.btf.resolve_types_by_name(strukt)? {
            if let Type::Struct(s) = t {
                if let Some(bits) = self.find_member(&s, field, 0)? {
                    return Ok(bits / 8);
                }
            }
        }
        Err(anyhow!(
            "the kernel's BTF has no field {field} in struct {strukt}"
        ))
    }

    fn find_member(&self, s: &btf_rs::Struct, field: &str, base: u32) -> Result<Option<u32>> {
        for m in &s.members {
            let name = self.btf.resolve_name(m)?;
            if name == field {
                return Ok(Some(base + m.bit_offset()));
            }
            if name.is_empty() {
                if let Type::Struct(inner) | Type::Union(inner) =
                    self.btf.resolve_chained_type(m)?
                {
                    if let Some(off) = self.find_member(&inner, field, base + m.bit_offset())? {
                        return Ok(Some(off));
                    }
                }
            }
        }
        Ok(None)
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
    use super::*;

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
}
