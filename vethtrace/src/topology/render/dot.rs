//! `vethtrace topo --dot`: Graphviz with one cluster per namespace, one node per interface
//! (loopbacks left out), a bold edge per veth pair (drawn once), dashed edges from bridge ports
//! to their bridge, a dotted edge from each vxlan device to its underlay, and a bold dotted one
//! to each remote vxlan device its FDB sends to.
//!
//! Owns: that graph (pure, unit-tested; the root tests also run it through `dot -Tsvg`).

use std::{
    collections::BTreeSet,
    io::{self, Write},
};

use crate::topology::model::{Interface, Namespace, PeerRef, Topology};

/// Writes the topology as an undirected Graphviz graph.
pub fn render(topo: &Topology, out: &mut impl Write) -> io::Result<()> {
    writeln!(out, "graph topology {{")?;
    writeln!(
        out,
        "  graph [rankdir=LR, fontname=\"monospace\", compound=true];"
    )?;
    writeln!(
        out,
        "  node [shape=box, style=rounded, fontname=\"monospace\", fontsize=10];"
    )?;
    writeln!(out, "  edge [fontname=\"monospace\", fontsize=9];")?;
    for (k, ns) in topo.namespaces.iter().enumerate() {
        writeln!(out, "  subgraph cluster_{k} {{")?;
        let mut label = ns.name.clone();
        if let Some(o) = ns.owner_summary() {
            label.push_str(&format!("\n{o}"));
        }
        writeln!(out, "    label={};", quote(&label))?;
        for i in shown(ns) {
            writeln!(
                out,
                "    {} [label={}];",
                node(ns.inode, i.ifindex),
                quote(&node_label(i))
            )?;
        }
        writeln!(out, "  }}")?;
    }
    let mut drawn = BTreeSet::new();
    let mut outside = BTreeSet::new();
    for ns in &topo.namespaces {
        for i in shown(ns) {
            let me = node(ns.inode, i.ifindex);
            if let Some(p) = &i.peer {
                let other = target(topo, p, &mut outside, out)?;
                let key = if me < other {
                    (me.clone(), other.clone())
                } else {
                    (other.clone(), me.clone())
                };
                if drawn.insert(key) {
                    writeln!(out, "  {me} -- {other} [penwidth=2, label=\"veth\"];")?;
                }
            }
            if let Some(m) = i.master.as_deref().and_then(|m| ns.interface_named(m)) {
                writeln!(
                    out,
                    "  {me} -- {} [style=dashed, label=\"port\"];",
                    node(ns.inode, m.ifindex)
                )?;
            }
            if let Some(l) = &i.lower {
                let other = target(topo, l, &mut outside, out)?;
                writeln!(out, "  {me} -- {other} [style=dashed, label=\"lower\"];")?;
            }
            if let Some(v) = &i.vxlan {
                for other in remote_vteps(topo, ns, i) {
                    let key = if me < other {
                        (me.clone(), other.clone())
                    } else {
                        (other.clone(), me.clone())
                    };
                    if drawn.insert(key) {
                        writeln!(
                            out,
                            "  {me} -- {other} [style=dotted, penwidth=2, label={}];",
                            quote(&format!("vxlan vni {}", v.vni))
                        )?;
                    }
                }
                let label = quote(&format!("vni {} :{}", v.vni, v.port));
                if let Some(u) = v.underlay.as_deref().and_then(|u| ns.interface_named(u)) {
                    writeln!(
                        out,
                        "  {me} -- {} [style=dotted, label={label}];",
                        node(ns.inode, u.ifindex)
                    )?;
                }
            }
        }
    }
    writeln!(out, "}}")
}

/// Vxlan devices (node ids) this one's FDB sends to: same VNI, local address = entry's dst.
fn remote_vteps(topo: &Topology, ns: &Namespace, vx: &Interface) -> Vec<String> {
    let Some(v) = &vx.vxlan else {
        return Vec::new();
    };
    let dsts: BTreeSet<&str> = ns
        .fdb
        .iter()
        .filter(|e| e.ifindex == vx.ifindex)
        .filter_map(|e| e.dst.as_deref())
        .collect();
    topo.namespaces
        .iter()
        .flat_map(|n| n.interfaces.iter().map(move |i| (n, i)))
        .filter(|(n, i)| {
            !(n.inode == ns.inode && i.ifindex == vx.ifindex)
                && i.vxlan.as_ref().is_some_and(|o| {
                    o.vni == v.vni && o.local.as_deref().is_some_and(|l| dsts.contains(l))
                })
        })
        .map(|(n, i)| node(n.inode, i.ifindex))
        .collect()
}

/// Interfaces drawn: all but loopbacks.
fn shown(ns: &Namespace) -> impl Iterator<Item = &Interface> {
    ns.interfaces.iter().filter(|i| i.kind != "loopback")
}

/// The node id of a peer; a peer in a namespace that is not drawn gets a dashed node of its own.
fn target(
    topo: &Topology,
    p: &PeerRef,
    outside: &mut BTreeSet<String>,
    out: &mut impl Write,
) -> io::Result<String> {
    if let Some((ns, i)) = topo.resolve(p) {
        if i.kind != "loopback" {
            return Ok(node(ns.inode, i.ifindex));
        }
    }
    let id = match p.inode {
        Some(ino) => node(ino, p.ifindex),
        None => format!("\"{}_{}\"", escape(&p.netns), p.ifindex),
    };
    if outside.insert(id.clone()) {
        let name = p.name.clone().unwrap_or_else(|| format!("if{}", p.ifindex));
        writeln!(
            out,
            "  {id} [style=dashed, label={}];",
            quote(&format!("{} {name}", p.netns))
        )?;
    }
    Ok(id)
}

fn node(inode: u64, ifindex: u32) -> String {
    format!("\"i{inode}_{ifindex}\"")
}

fn node_label(i: &Interface) -> String {
    let mut l = format!("{}\n{} {}", i.name, i.kind, i.state);
    for a in i.addrs.iter().filter(|a| !a.starts_with("fe80:")) {
        l.push_str(&format!("\n{a}"));
    }
    if let Some(v) = &i.vxlan {
        l.push_str(&format!("\nvni {} port {}", v.vni, v.port));
        if let Some(local) = &v.local {
            l.push_str(&format!("\nlocal {local}"));
        }
    }
    for p in &i.programs {
        l.push_str(&format!("\n{} {}", p.mode, p.name));
    }
    l
}

/// A DOT double-quoted string; newlines become `\n` line breaks.
fn quote(s: &str) -> String {
    format!("\"{}\"", escape(s))
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::model::tests::sample;

    fn rendered(t: &Topology) -> String {
        let mut v = Vec::new();
        render(t, &mut v).expect("render");
        String::from_utf8(v).expect("utf8")
    }

    #[test]
    fn clusters_veth_edges_ports_and_underlay() {
        let s = rendered(&sample());
        assert!(s.starts_with("graph topology {"));
        assert_eq!(s.matches("subgraph cluster_").count(), 3);
        assert!(s.contains("label=\"host\\npid 1 systemd\";"), "{s}");
        // Each veth pair once, though both ends reference each other.
        assert_eq!(s.matches("[penwidth=2, label=\"veth\"]").count(), 2, "{s}");
        assert!(
            s.contains("\"i4026531840_8\" -- \"i4026532300_3\" [penwidth=2"),
            "{s}"
        );
        assert!(
            s.contains("\"i4026531840_8\" -- \"i4026531840_4\" [style=dashed, label=\"port\"]"),
            "{s}"
        );
        assert!(
            s.contains(
                "\"i4026531840_5\" -- \"i4026531840_2\" [style=dotted, label=\"vni 1 :8472\"]"
            ),
            "{s}"
        );
        assert!(!s.contains("_1\" [label=\"lo"), "{s}");
        assert!(s.trim_end().ends_with('}'));
    }

    #[test]
    fn vxlan_devices_are_joined_through_their_fdb() {
        let mut t = sample();
        let mut other = t.namespaces[2].clone();
        other.name = "node2".into();
        other.inode = 4026532999;
        let mut vx = t.namespaces[0].interfaces[3].clone();
        if let Some(v) = vx.vxlan.as_mut() {
            v.local = Some("172.30.0.2".into());
        }
        other.interfaces.push(vx);
        t.namespaces.push(other);
        t.namespaces[0].fdb.push(crate::topology::model::FdbEntry {
            mac: "02:00:00:00:00:02".into(),
            port: "flannel.1".into(),
            ifindex: 5,
            dst: Some("172.30.0.2".into()),
            is_self: true,
            ..Default::default()
        });
        let s = rendered(&t);
        assert!(
            s.contains("\"i4026531840_5\" -- \"i4026532999_5\" [style=dotted, penwidth=2, label=\"vxlan vni 1\"]"),
            "{s}"
        );
    }

    #[test]
    fn peers_outside_the_drawing_get_their_own_node_and_quotes_are_escaped() {
        let mut t = sample();
        t.namespaces.truncate(1);
        t.namespaces[0].name = "we\"ird".into();
        let s = rendered(&t);
        assert!(s.contains("label=\"we\\\"ird\\npid 1 systemd\""), "{s}");
        assert!(
            s.contains("\"i4026532300_3\" [style=dashed, label=\"busybox eth0\"];"),
            "{s}"
        );
    }
}
