//! BPF programs attached to each interface of one namespace (`topo --programs`): TCX programs
//! (BPF_PROG_QUERY through aya), classic clsact `bpf` filters (RTM_GETTFILTER on the ingress and
//! egress hooks) and XDP (IFLA_XDP, read with the links). Runs on the thread that entered the
//! namespace, since ifindexes and names are per namespace.
//!
//! Owns: those queries and the translation of tc filter messages (pure, unit-tested). Program
//! names for ids come from one scan of loaded programs, done once per discovery.

use std::collections::HashMap;

use aya::programs::{loaded_programs, SchedClassifier, TcAttachType};
use netlink_packet_route::{
    tc::{TcAttribute, TcFilterBpfOption, TcHandle, TcMessage, TcOption},
    RouteNetlinkMessage,
};

use super::{model::AttachedProgram, netlink::Rtnl};

/// Names of all loaded programs by id; empty when they cannot be listed.
pub fn program_names() -> HashMap<u32, String> {
    loaded_programs()
        .flatten()
        .map(|p| (p.id(), p.name_as_str().unwrap_or_default().to_string()))
        .collect()
}

/// Every program attached to interface `ifindex` called `name`, TCX first, then tc, in
/// ingress-then-egress order.
pub fn programs_on(rtnl: &mut Rtnl, ifindex: u32, name: &str) -> Vec<AttachedProgram> {
    let mut out = Vec::new();
    for (attach, dir) in [
        (TcAttachType::Ingress, "ingress"),
        (TcAttachType::Egress, "egress"),
    ] {
        if let Ok((_, infos)) = SchedClassifier::query_tcx(name, attach) {
            out.extend(infos.iter().map(|p| AttachedProgram {
                id: p.id(),
                name: p.name_as_str().unwrap_or_default().to_string(),
                mode: format!("tcx {dir}"),
                detail: None,
            }));
        }
    }
    for (minor, dir) in [
        (TcHandle::MIN_INGRESS, "ingress"),
        (TcHandle::MIN_EGRESS, "egress"),
    ] {
        let mut req = TcMessage::default();
        req.header.index = ifindex as i32;
        req.header.parent = TcHandle {
            major: TcHandle::CLSACT.major,
            minor,
        };
        // ENOENT/EINVAL when there is no clsact qdisc: no filters.
        let Ok(replies) = rtnl.dump(RouteNetlinkMessage::GetTrafficFilter(req)) else {
            continue;
        };
        out.extend(replies.iter().filter_map(|r| match r {
            RouteNetlinkMessage::NewTrafficFilter(m) => bpf_filter_of(m, dir),
            _ => None,
        }));
    }
    out
}

/// A `bpf` tc filter message as an attached program; `None` for other filters and for the
/// filter-chain headers the kernel also dumps.
pub fn bpf_filter_of(m: &TcMessage, dir: &str) -> Option<AttachedProgram> {
    let is_bpf = m
        .attributes
        .iter()
        .any(|a| matches!(a, TcAttribute::Kind(k) if k == "bpf"));
    if !is_bpf {
        return None;
    }
    let mut id = None;
    let mut name = String::new();
    for a in &m.attributes {
        if let TcAttribute::Options(opts) = a {
            for o in opts {
                match o {
                    TcOption::Bpf(TcFilterBpfOption::ProgId(i)) => id = Some(*i),
                    TcOption::Bpf(TcFilterBpfOption::ProgName(n)) => name = n.clone(),
                    _ => {}
                }
            }
        }
    }
    let prio = m.header.info >> 16;
    let handle = u32::from(m.header.handle);
    Some(AttachedProgram {
        id: id?,
        name,
        mode: format!("tc {dir}"),
        detail: Some(format!("prio {prio} handle {handle:#x}")),
    })
}

/// Puts the kernel's program names on programs from `names`: XDP entries come without one, and a
/// tc filter's own name (iproute2 makes it `file.o:[section]`) moves into the detail.
pub fn name_programs(progs: &mut [AttachedProgram], names: &HashMap<u32, String>) {
    for p in progs {
        let Some(n) = names.get(&p.id).filter(|n| !n.is_empty() && **n != p.name) else {
            continue;
        };
        if p.name.is_empty() {
            p.name = n.clone();
        } else if p.mode.starts_with("tc ") {
            let filter = format!("filter {}", p.name);
            p.detail = Some(match p.detail.take() {
                Some(d) => format!("{d}, {filter}"),
                None => filter,
            });
            p.name = n.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpf_filter_with_id_name_prio_and_handle() {
        let mut m = TcMessage::default();
        m.header.info = (49152 << 16) | 0x0300;
        m.header.handle = TcHandle::from(1u32);
        m.attributes = vec![
            TcAttribute::Kind("bpf".into()),
            TcAttribute::Options(vec![
                TcOption::Bpf(TcFilterBpfOption::ProgName("cil_from_container".into())),
                TcOption::Bpf(TcFilterBpfOption::ProgId(39)),
            ]),
        ];
        let p = bpf_filter_of(&m, "ingress").expect("bpf filter");
        assert_eq!(p.id, 39);
        assert_eq!(p.name, "cil_from_container");
        assert_eq!(p.mode, "tc ingress");
        assert_eq!(p.detail.as_deref(), Some("prio 49152 handle 0x1"));
        m.attributes[0] = TcAttribute::Kind("u32".into());
        assert!(bpf_filter_of(&m, "ingress").is_none());
    }

    #[test]
    fn kernel_names_fill_xdp_and_replace_tc_filter_names() {
        let mut p = vec![
            AttachedProgram {
                id: 1,
                mode: "xdp drv".into(),
                ..Default::default()
            },
            AttachedProgram {
                id: 2,
                name: "mine".into(),
                mode: "tcx ingress".into(),
                ..Default::default()
            },
            AttachedProgram {
                id: 3,
                name: "prog.o:[tc]".into(),
                mode: "tc ingress".into(),
                detail: Some("prio 1 handle 0x1".into()),
            },
        ];
        let names: HashMap<u32, String> = [
            (1, "xdp_pass".to_string()),
            (2, "other".to_string()),
            (3, "vt_tc".to_string()),
        ]
        .into();
        name_programs(&mut p, &names);
        let got: Vec<&str> = p.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(got, vec!["xdp_pass", "mine", "vt_tc"]);
        assert_eq!(
            p[2].detail.as_deref(),
            Some("prio 1 handle 0x1, filter prog.o:[tc]")
        );
    }
}
