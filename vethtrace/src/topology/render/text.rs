//! `vethtrace topo` as a tree: one block per namespace with its owner, then each interface with
//! kind, state, MTU, addresses, bridge membership, veth peer, vxlan parameters, attached
//! programs and notable FDB entries, then the default route.
//!
//! Owns: that layout (pure, unit-tested on a hand-built topology).

use std::io::{self, Write};

use crate::topology::model::{Interface, Namespace, Topology};

/// FDB entries shown per device before "… more".
const FDB_SHOWN: usize = 8;

/// Writes the whole topology.
pub fn render(topo: &Topology, out: &mut impl Write) -> io::Result<()> {
    for (k, ns) in topo.namespaces.iter().enumerate() {
        if k > 0 {
            writeln!(out)?;
        }
        namespace(ns, out)?;
    }
    Ok(())
}

fn namespace(ns: &Namespace, out: &mut impl Write) -> io::Result<()> {
    let mut head = vec![format!("netns {}", ns.inode)];
    if let Some(c) = ns.cookie {
        head.push(format!("cookie {c}"));
    }
    if let Some(o) = ns.owner_summary() {
        head.push(o);
    }
    writeln!(out, "{} ({})", ns.name, head.join(", "))?;
    let width = ns
        .interfaces
        .iter()
        .map(|i| i.name.len())
        .max()
        .unwrap_or(0);
    let route = ns.default_route.as_ref().map(|r| {
        let mut s = "default".to_string();
        if let Some(g) = &r.gateway {
            s.push_str(&format!(" via {g}"));
        }
        if let Some(d) = &r.dev {
            s.push_str(&format!(" dev {d}"));
        }
        s
    });
    let n = ns.interfaces.len();
    for (k, i) in ns.interfaces.iter().enumerate() {
        let last = k + 1 == n && route.is_none();
        let (branch, cont) = if last {
            ("└─", "   ")
        } else {
            ("├─", "│  ")
        };
        writeln!(out, "{branch} {}", interface_line(ns, i, width))?;
        for d in details(ns, i) {
            writeln!(out, "{cont}    {d}")?;
        }
    }
    if let Some(r) = route {
        writeln!(out, "└─ {r}")?;
    }
    Ok(())
}

/// `8: vethf0808a3e  veth up mtu 1500  bridge cni0  ⇄ busybox eth0 (ifindex 3)`.
fn interface_line(ns: &Namespace, i: &Interface, width: usize) -> String {
    let mut s = format!(
        "{:>3}: {:<width$}  {:<8} {:<7} mtu {:<5}",
        i.ifindex,
        i.name,
        i.kind,
        state(i),
        i.mtu
    );
    if !i.addrs.is_empty() {
        s.push_str(&format!("  {}", i.addrs.join(" ")));
    }
    if let Some(m) = &i.master {
        s.push_str(&format!("  {} {m}", master_word(ns, m)));
    }
    if let Some(p) = &i.peer {
        s.push_str(&format!(
            "  ⇄ {} {}",
            p.netns,
            peer_name(p.name.as_deref(), p.ifindex)
        ));
        s.push_str(&format!(" (ifindex {})", p.ifindex));
    }
    if let Some(l) = &i.lower {
        s.push_str(&format!(
            "  on {} {}",
            l.netns,
            peer_name(l.name.as_deref(), l.ifindex)
        ));
        // Which macvlans (ipvlans) reach each other depends on it.
        if let Some(m) = &i.mode {
            s.push_str(&format!(" mode {m}"));
        }
    }
    if let Some(v) = &i.vxlan {
        s.push_str(&format!("  vni {}", v.vni));
        if let Some(l) = &v.local {
            s.push_str(&format!(" local {l}"));
        }
        if let Some(g) = &v.group {
            s.push_str(&format!(" remote {g}"));
        }
        s.push_str(&format!(" port {}", v.port));
        if let Some(u) = &v.underlay {
            s.push_str(&format!(" underlay {u}"));
        } else if let Some(u) = v.underlay_ifindex {
            s.push_str(&format!(" underlay ifindex {u}"));
        }
    }
    s.trim_end().to_string()
}

fn state(i: &Interface) -> String {
    if !i.admin_up && i.state != "down" {
        format!("{}/off", i.state)
    } else {
        i.state.clone()
    }
}

fn peer_name(name: Option<&str>, ifindex: u32) -> String {
    name.map(str::to_string)
        .unwrap_or_else(|| format!("if{ifindex}"))
}

/// `bridge` when the master is a bridge, else `master`.
pub fn master_word(ns: &Namespace, master: &str) -> &'static str {
    if ns
        .interface_named(master)
        .is_some_and(|m| m.kind == "bridge")
    {
        "bridge"
    } else {
        "master"
    }
}

/// Indented lines under an interface: bridge ports, programs, notable FDB entries.
fn details(ns: &Namespace, i: &Interface) -> Vec<String> {
    let mut out = Vec::new();
    if i.kind == "bridge" {
        let ports: Vec<&str> = ns
            .bridge_ports(&i.name)
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        out.push(if ports.is_empty() {
            "ports: none".to_string()
        } else {
            format!("ports: {}", ports.join(", "))
        });
    }
    for p in &i.programs {
        let mut s = format!("{:<12} id {} {}", p.mode, p.id, p.name);
        if let Some(d) = &p.detail {
            s.push_str(&format!(" ({d})"));
        }
        out.push(s.trim_end().to_string());
    }
    if i.programs.is_empty() {
        if let Some(x) = &i.xdp {
            out.push(
                format!("{:<12} id {} {}", x.mode, x.id, x.name)
                    .trim_end()
                    .to_string(),
            );
        }
    }
    // Learned MACs of a bridge and remote VTEPs of a vxlan device; a bridge's own permanent
    // entries are noise here (they are in --json).
    let notable: Vec<_> = ns
        .fdb
        .iter()
        .filter(|e| {
            (e.master.as_deref() == Some(i.name.as_str()) && i.kind == "bridge" && !e.local)
                || (e.ifindex == i.ifindex && e.dst.is_some())
        })
        .collect();
    for e in notable.iter().take(FDB_SHOWN) {
        let mut s = format!("fdb {}", e.mac);
        if let Some(d) = &e.dst {
            s.push_str(&format!(" dst {d}"));
        } else {
            s.push_str(&format!(" on {}", e.port));
        }
        if let Some(v) = e.vlan {
            s.push_str(&format!(" vlan {v}"));
        }
        if let Some(a) = e.age_secs {
            s.push_str(&format!(" ({a:.1}s)"));
        }
        out.push(s);
    }
    if notable.len() > FDB_SHOWN {
        out.push(format!(
            "fdb … {} more (--json lists all)",
            notable.len() - FDB_SHOWN
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::model::{tests::sample, AttachedProgram, PeerRef};

    fn rendered(t: &Topology) -> String {
        let mut v = Vec::new();
        render(t, &mut v).expect("render");
        String::from_utf8(v).expect("utf8")
    }

    #[test]
    fn tree_shows_peers_bridges_and_vxlan() {
        let s = rendered(&sample());
        assert!(
            s.starts_with("host (netns 4026531840, cookie 1, pid 1 systemd)\n"),
            "{s}"
        );
        assert!(
            s.contains(
                "vethf0808a3e  veth     up      mtu 1500   bridge cni0  ⇄ busybox eth0 (ifindex 3)"
            ),
            "{s}"
        );
        assert!(s.contains("ports: vethf0808a3e, veth12345678"), "{s}");
        assert!(
            s.contains("vni 1 local 172.30.0.1 port 8472 underlay eth0"),
            "{s}"
        );
        assert!(
            s.contains("fdb aa:bb:cc:00:00:08 on vethf0808a3e (1.5s)"),
            "{s}"
        );
        assert!(s.contains("└─ default via 172.30.0.254 dev eth0"), "{s}");
        assert!(
            s.contains("busybox (netns 4026532300, cookie 7, pid 4242 sleep)"),
            "{s}"
        );
        assert!(s.contains("⇄ host vethf0808a3e (ifindex 8)"), "{s}");
        // The last interface of a namespace without a default route closes the tree.
        assert!(
            s.trim_end()
                .lines()
                .last()
                .is_some_and(|l| l.starts_with("└─")),
            "{s}"
        );
    }

    #[test]
    fn a_stacked_device_shows_its_parent_and_mode() {
        let mut t = sample();
        let mut mv = t.namespaces[0].interfaces[1].clone();
        mv.name = "mv0".into();
        mv.kind = "macvlan".into();
        mv.ifindex = 42;
        mv.peer = None;
        mv.lower = Some(PeerRef {
            netns: "host".into(),
            inode: None,
            ifindex: 2,
            name: Some("eth0".into()),
            master: None,
        });
        mv.mode = Some("bridge".into());
        t.namespaces[0].interfaces.push(mv);
        let s = rendered(&t);
        let line = s.lines().find(|l| l.contains("mv0")).expect("mv0 listed");
        assert!(line.ends_with("  on host eth0 mode bridge"), "{line}");
    }

    #[test]
    fn programs_are_listed_under_their_interface() {
        let mut t = sample();
        t.namespaces[0].interfaces[4].programs = vec![
            AttachedProgram {
                id: 42,
                name: "vt_in".into(),
                mode: "tcx ingress".into(),
                detail: None,
            },
            AttachedProgram {
                id: 43,
                name: "cls".into(),
                mode: "tc egress".into(),
                detail: Some("prio 1 handle 0x1".into()),
            },
        ];
        let s = rendered(&t);
        assert!(s.contains("│      tcx ingress  id 42 vt_in\n"), "{s}");
        assert!(
            s.contains("tc egress    id 43 cls (prio 1 handle 0x1)"),
            "{s}"
        );
    }
}
