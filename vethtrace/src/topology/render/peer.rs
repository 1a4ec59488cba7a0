//! `vethtrace peer`: the two ends of a veth pair on one line, e.g.
//! `host vethf0808a3e (ifindex 8, bridge cni0) ⇄ busybox eth0 (ifindex 3) — netns busybox, pid 4242 sleep`,
//! and its JSON form `{"interface":{…},"peer":{…}}`.
//!
//! Owns: the line and the JSON shape (pure, unit-tested). Finding the interface is the command's.

use serde::Serialize;

use super::text::master_word;
use crate::topology::model::{Interface, Namespace, PeerRef, Topology};

/// One end of a pair, as `peer --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct End {
    pub netns: String,
    pub inode: Option<u64>,
    pub ifindex: u32,
    pub name: Option<String>,
    pub master: Option<String>,
}

/// `peer --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerJson {
    pub interface: End,
    pub peer: End,
}

impl PeerJson {
    pub fn new(ns: &Namespace, i: &Interface, p: &PeerRef) -> Self {
        Self {
            interface: End {
                netns: ns.name.clone(),
                inode: Some(ns.inode),
                ifindex: i.ifindex,
                name: Some(i.name.clone()),
                master: i.master.clone(),
            },
            peer: End {
                netns: p.netns.clone(),
                inode: p.inode,
                ifindex: p.ifindex,
                name: p.name.clone(),
                master: p.master.clone(),
            },
        }
    }
}

/// The one-line description of `i` (in `ns`) and its peer `p`.
pub fn line(topo: &Topology, ns: &Namespace, i: &Interface, p: &PeerRef) -> String {
    let far = topo.resolve(p);
    let near = end(
        ns.name.as_str(),
        &i.name,
        i.ifindex,
        i.master.as_deref(),
        Some(ns),
    );
    let far_text = end(
        &p.netns,
        p.name.as_deref().unwrap_or("?"),
        p.ifindex,
        p.master.as_deref(),
        far.map(|(n, _)| n),
    );
    let mut s = format!("{near} ⇄ {far_text}");
    // Say who owns the container side: not the host, and between two other namespaces the one
    // with fewer interfaces (a pod has lo and eth0; its node has many), else the far end.
    let owner_side = match far {
        Some((fns, _)) if ns.name == "host" && fns.name != "host" => Some(fns),
        Some((fns, _)) if fns.name != "host" => {
            if ns.interfaces.len() < fns.interfaces.len() {
                Some(ns)
            } else {
                Some(fns)
            }
        }
        _ if ns.name != "host" => Some(ns),
        _ => None,
    };
    if let Some(o) = owner_side {
        match o.owner_summary() {
            Some(sum) => s.push_str(&format!(" — netns {}, {sum}", o.name)),
            None => s.push_str(&format!(" — netns {}", o.name)),
        }
    }
    if far.is_none() {
        s.push_str(" (peer namespace not found)");
    }
    s
}

fn end(
    netns: &str,
    name: &str,
    ifindex: u32,
    master: Option<&str>,
    ns: Option<&Namespace>,
) -> String {
    match master {
        Some(m) => {
            let word = ns.map_or("master", |n| master_word(n, m));
            format!("{netns} {name} (ifindex {ifindex}, {word} {m})")
        }
        None => format!("{netns} {name} (ifindex {ifindex})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::model::tests::sample;

    #[test]
    fn from_the_host_end() {
        let t = sample();
        let ns = &t.namespaces[0];
        let i = ns.interface(8).expect("veth");
        let p = i.peer.as_ref().expect("peer");
        assert_eq!(
            line(&t, ns, i, p),
            "host vethf0808a3e (ifindex 8, bridge cni0) ⇄ busybox eth0 (ifindex 3) — netns busybox, pid 4242 sleep"
        );
    }

    #[test]
    fn from_the_container_end() {
        let t = sample();
        let ns = &t.namespaces[1];
        let i = ns.interface(3).expect("eth0");
        let p = i.peer.as_ref().expect("peer");
        assert_eq!(
            line(&t, ns, i, p),
            "busybox eth0 (ifindex 3) ⇄ host vethf0808a3e (ifindex 8, bridge cni0) — netns busybox, pid 4242 sleep"
        );
    }

    #[test]
    fn between_two_namespaces_the_pod_side_is_described() {
        let mut t = sample();
        t.namespaces[0].name = "node1".into();
        let ns = &t.namespaces[0];
        let i = ns.interface(8).expect("veth");
        let p = i.peer.as_ref().expect("peer");
        assert!(line(&t, ns, i, p).ends_with("— netns busybox, pid 4242 sleep"));
        let ns = &t.namespaces[1];
        let i = ns.interface(3).expect("eth0");
        let mut p = i.peer.clone().expect("peer");
        p.netns = "node1".into();
        assert!(line(&t, ns, i, &p).ends_with("— netns busybox, pid 4242 sleep"));
    }

    #[test]
    fn json_shape() {
        let t = sample();
        let ns = &t.namespaces[0];
        let i = ns.interface(8).expect("veth");
        let j = PeerJson::new(ns, i, i.peer.as_ref().expect("peer"));
        let v = serde_json::to_value(&j).expect("json");
        assert_eq!(v["interface"]["netns"], "host");
        assert_eq!(v["interface"]["master"], "cni0");
        assert_eq!(v["peer"]["netns"], "busybox");
        assert_eq!(v["peer"]["inode"], 4026532300u64);
        assert_eq!(v["peer"]["ifindex"], 3);
        assert_eq!(v["peer"]["name"], "eth0");
        assert!(v["peer"]["master"].is_null());
    }

    #[test]
    fn unresolved_peer_says_so() {
        let t = sample();
        let ns = &t.namespaces[0];
        let i = ns.interface(8).expect("veth");
        let p = PeerRef {
            netns: "nsid:4".into(),
            inode: None,
            ifindex: 3,
            name: None,
            master: None,
        };
        assert_eq!(
            line(&t, ns, i, &p),
            "host vethf0808a3e (ifindex 8, bridge cni0) ⇄ nsid:4 ? (ifindex 3) (peer namespace not found)"
        );
    }
}
