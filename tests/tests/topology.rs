//! Topology discovery against real namespaces: every lab (bridge, flannel, routed, pair), owners
//! and names of namespaces held by processes, and 100 namespaces whose pods' eth0 all share one
//! ifindex. Each test builds its namespaces itself (labs, or the guard below) and removes them
//! on every exit path, panics included; nothing touches the root namespace.
//!
//! Root only: without root these tests skip with a reason, or fail under CI /
//! VETHTRACE_REQUIRE_PRIVILEGED=1.

use std::{
    collections::HashMap,
    io::Write,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use vethtrace::{
    commands::{
        peer::{self, PeerArgs},
        topo::{self, TopoArgs},
    },
    lab::{Lab, LabKind},
    topology::{discover, DiscoverOptions, Interface, Namespace, NsKey, Topology},
};

/// Discovers only the lab's namespaces.
fn lab_topology(lab: &Lab) -> Topology {
    let names = lab
        .roles()
        .iter()
        .map(|(_, ns)| (*ns).to_string())
        .collect();
    discover(&DiscoverOptions {
        netns: names,
        ..Default::default()
    })
    .expect("discover")
}

fn ns<'t>(t: &'t Topology, name: &str) -> &'t Namespace {
    t.namespaces
        .iter()
        .find(|n| n.name == name)
        .unwrap_or_else(|| panic!("namespace {name} not found in {:?}", t.names()))
}

fn iface<'t>(n: &'t Namespace, name: &str) -> &'t Interface {
    n.interface_named(name).unwrap_or_else(|| {
        panic!(
            "{name} not in {}: {:?}",
            n.name,
            n.interfaces.iter().map(|i| &i.name).collect::<Vec<_>>()
        )
    })
}

/// Asserts `a` (in namespace `an`) and `b` (in `bn`) are each other's peer.
fn assert_pair(t: &Topology, an: &str, a: &str, bn: &str, b: &str) {
    let (na, nb) = (ns(t, an), ns(t, bn));
    let (ia, ib) = (iface(na, a), iface(nb, b));
    let pa = ia
        .peer
        .as_ref()
        .unwrap_or_else(|| panic!("{an} {a} has no peer"));
    let pb = ib
        .peer
        .as_ref()
        .unwrap_or_else(|| panic!("{bn} {b} has no peer"));
    assert_eq!(
        (pa.netns.as_str(), pa.inode, pa.ifindex, pa.name.as_deref()),
        (bn, Some(nb.inode), ib.ifindex, Some(b))
    );
    assert_eq!(
        (pb.netns.as_str(), pb.inode, pb.ifindex, pb.name.as_deref()),
        (an, Some(na.inode), ia.ifindex, Some(a))
    );
    assert_eq!(pa.master, ib.master);
    assert_eq!(pb.master, ia.master);
}

fn peer_line(netns: &str, iface: &str) -> String {
    let mut out = Vec::new();
    let args = PeerArgs {
        iface: iface.into(),
        netns: Some(netns.into()),
        json: false,
    };
    peer::run(&args, &mut out).expect("peer");
    String::from_utf8(out).expect("utf8")
}

fn host_veth(n: &Namespace) -> Vec<&Interface> {
    n.interfaces
        .iter()
        .filter(|i| i.kind == "veth" && i.name.starts_with("veth"))
        .collect()
}

/// `dot -Tsvg` accepts the graph.
fn assert_dot_parses(t: &Topology) {
    let mut dot = Vec::new();
    topo::write(
        &TopoArgs {
            dot: true,
            ..Default::default()
        },
        t,
        &mut dot,
    )
    .expect("dot");
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run dot (graphviz)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&dot)
        .expect("write to dot");
    let out = child.wait_with_output().expect("dot");
    assert!(
        out.status.success(),
        "dot rejected the graph: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&dot)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("<svg"));
}

#[test]
fn bridge_lab_peers_masters_cookies_and_json() {
    if !vethtrace_tests::root("bridge_lab_peers_masters_cookies_and_json") {
        return;
    }
    let lab = Lab::create(LabKind::Bridge).expect("bridge lab");
    let (node, ns01, ns02) = (
        lab.netns("node").expect("node"),
        lab.netns("ns01").expect("ns01"),
        lab.netns("ns02").expect("ns02"),
    );
    let t = lab_topology(&lab);
    assert_eq!(t.namespaces.len(), 3);
    assert_pair(&t, ns01, "veth01", node, "br-veth01");
    assert_pair(&t, ns02, "veth02", node, "br-veth02");

    let n = ns(&t, node);
    let br = iface(n, "br01");
    assert_eq!(br.kind, "bridge");
    assert!(
        br.addrs.contains(&"192.168.88.1/24".to_string()),
        "{:?}",
        br.addrs
    );
    assert_eq!(iface(n, "br-veth01").master.as_deref(), Some("br01"));
    let ports: Vec<&str> = n
        .bridge_ports("br01")
        .iter()
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(ports, vec!["br-veth01", "br-veth02"]);
    // The bridge's own permanent FDB entries exist for each port.
    assert!(n
        .fdb
        .iter()
        .any(|e| e.master.as_deref() == Some("br01") && e.port == "br-veth01" && e.local));
    let v01 = iface(ns(&t, ns01), "veth01");
    assert_eq!(v01.kind, "veth");
    assert!(v01.addrs.contains(&"192.168.88.11/24".to_string()));
    assert!(v01.mac.as_deref().is_some_and(|m| m.len() == 17));
    assert_eq!(v01.state, "up");

    // Cookies: what the namespace itself reports, and lookups by cookie and inode.
    for name in [node, ns01, ns02] {
        let n = ns(&t, name);
        let path = vethtrace::netns::named(name);
        let cookie =
            vethtrace::netns::run_in(&path, vethtrace::netns::cookie_of_current).expect("cookie");
        assert_eq!(n.cookie, Some(cookie), "{name}");
        assert_eq!(t.by_cookie(cookie).map(|x| x.name.as_str()), Some(name));
        assert_eq!(t.find_netns(name).map(|x| x.inode), Some(n.inode));
    }
    let c01 = ns(&t, ns01).cookie.expect("cookie");
    assert_eq!(
        t.interface(NsKey::Cookie(c01), v01.ifindex)
            .map(|i| i.name.as_str()),
        Some("veth01")
    );
    assert_eq!(
        t.interface(NsKey::Inode(ns(&t, ns01).inode), v01.ifindex)
            .map(|i| i.name.as_str()),
        Some("veth01")
    );

    // peer, from both ends, by name and by ifindex.
    let line = peer_line(ns01, "veth01");
    let br_ifindex = iface(n, "br-veth01").ifindex;
    assert!(
        line.starts_with(&format!(
            "{ns01} veth01 (ifindex {}) ⇄ {node} br-veth01 (ifindex {br_ifindex}, bridge br01)",
            v01.ifindex
        )),
        "{line}"
    );
    let line = peer_line(node, "br-veth02");
    assert!(
        line.contains(&format!("⇄ {ns02} veth02 (ifindex")),
        "{line}"
    );
    let line = peer_line(node, &br_ifindex.to_string());
    assert!(line.contains(&format!("⇄ {ns01} veth01")), "{line}");

    // peer --json.
    let mut out = Vec::new();
    let args = PeerArgs {
        iface: "br-veth01".into(),
        netns: Some(node.into()),
        json: true,
    };
    peer::run(&args, &mut out).expect("peer --json");
    let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(v["interface"]["netns"], node);
    assert_eq!(v["interface"]["master"], "br01");
    assert_eq!(v["interface"]["name"], "br-veth01");
    assert_eq!(v["peer"]["netns"], ns01);
    assert_eq!(v["peer"]["name"], "veth01");
    assert_eq!(v["peer"]["ifindex"], v01.ifindex);
    assert_eq!(v["peer"]["inode"], ns(&t, ns01).inode);
    assert!(v["peer"]["master"].is_null());

    // topo --json, through the command with --netns.
    let mut out = Vec::new();
    let args = TopoArgs {
        netns: vec![ns01.into()],
        json: true,
        ..Default::default()
    };
    topo::run(&args, &mut out).expect("topo --json");
    let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
    let spaces = v["namespaces"].as_array().expect("namespaces");
    assert_eq!(spaces.len(), 1);
    let j = &spaces[0];
    assert_eq!(j["name"], ns01);
    assert!(j["inode"].is_u64() && j["pids"].is_array() && j.get("owner").is_some());
    let i = j["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .find(|i| i["name"] == "veth01")
        .expect("veth01");
    for k in [
        "ifindex", "name", "kind", "state", "mtu", "mac", "addrs", "master", "peer",
    ] {
        assert!(i.get(k).is_some(), "interface lacks {k}: {i}");
    }
    assert_eq!(i["peer"]["netns"], node);
    assert_eq!(i["peer"]["name"], "br-veth01");
    assert_eq!(i["peer"]["master"], "br01");

    // Errors: unknown namespace, unknown interface, ambiguous name.
    let mut sink = Vec::new();
    let e = topo::run(
        &TopoArgs {
            netns: vec!["vt-no-such-ns".into()],
            ..Default::default()
        },
        &mut sink,
    )
    .expect_err("unknown netns");
    assert!(
        e.to_string()
            .starts_with("no network namespace named vt-no-such-ns; known: host"),
        "{e}"
    );
    let e = peer::write(
        &PeerArgs {
            iface: "nope0".into(),
            ..Default::default()
        },
        &t,
        &mut sink,
    )
    .expect_err("unknown iface");
    assert_eq!(
        e.to_string(),
        "no interface named nope0 in any of 3 namespaces"
    );
    let e = peer::write(
        &PeerArgs {
            iface: "lo".into(),
            ..Default::default()
        },
        &t,
        &mut sink,
    )
    .expect_err("ambiguous");
    assert!(
        e.to_string()
            .starts_with("lo is in 3 namespaces; pick one: --netns"),
        "{e}"
    );

    assert_dot_parses(&t);
}

#[test]
fn flannel_lab_vxlan_underlay_and_pods() {
    if !vethtrace_tests::root("flannel_lab_vxlan_underlay_and_pods") {
        return;
    }
    let lab = Lab::create(LabKind::Flannel).expect("flannel lab");
    let name = |role: &str| lab.netns(role).expect("role").to_string();
    let t = lab_topology(&lab);
    let (n1, n2) = (name("node1"), name("node2"));

    // Underlay veth between the nodes.
    assert_pair(&t, &n1, "eth0", &n2, "eth0");
    for (node, local, remote) in [
        (&n1, "172.30.0.1", "172.30.0.2"),
        (&n2, "172.30.0.2", "172.30.0.1"),
    ] {
        let n = ns(&t, node);
        let vx = iface(n, "flannel.1");
        assert_eq!(vx.kind, "vxlan");
        assert_eq!(vx.mtu, 1450);
        let v = vx.vxlan.as_ref().expect("vxlan attributes");
        assert_eq!(v.vni, 1);
        assert_eq!(v.port, 8472);
        assert_eq!(v.local.as_deref(), Some(local));
        assert_eq!(v.underlay.as_deref(), Some("eth0"));
        assert_eq!(v.underlay_ifindex, Some(iface(n, "eth0").ifindex));
        assert_eq!(v.learning, Some(false));
        // flanneld-style FDB entry pointing at the other node.
        assert!(
            n.fdb
                .iter()
                .any(|e| e.port == "flannel.1" && e.dst.as_deref() == Some(remote)),
            "{node} fdb: {:?}",
            n.fdb
        );
        assert_eq!(iface(n, "cni0").kind, "bridge");
        assert_eq!(host_veth(n).len(), 2, "{node}");
    }

    // Every pod's eth0 pairs with a veth<8 hex> on its node's cni0, though all are called eth0.
    for (pod, node) in [
        ("busybox", &n1),
        ("busybox2", &n1),
        ("nginx", &n2),
        ("redis", &n2),
    ] {
        let pn = name(pod);
        let eth0 = iface(ns(&t, &pn), "eth0");
        let p = eth0.peer.as_ref().expect("pod peer");
        assert_eq!(p.netns.as_str(), node.as_str());
        let host_if = p.name.clone().expect("host veth name");
        assert!(
            host_if.starts_with("veth") && host_if.len() == 12,
            "{host_if}"
        );
        assert_eq!(p.master.as_deref(), Some("cni0"));
        assert_pair(&t, &pn, "eth0", node, &host_if);
        assert_eq!(
            ns(&t, &pn)
                .default_route
                .as_ref()
                .and_then(|r| r.gateway.clone()),
            Some(format!("10.222.{}.1", if node == &n1 { 1 } else { 2 }))
        );

        let line = peer_line(&pn, "eth0");
        assert!(line.ends_with(&format!("— netns {pn}\n")), "{line}");
        assert!(
            line.starts_with(&format!(
                "{pn} eth0 (ifindex {}) ⇄ {node} {host_if} (ifindex {}, bridge cni0)",
                eth0.ifindex, p.ifindex
            )),
            "{line}"
        );
        let back = peer_line(node, &host_if);
        assert!(
            back.contains(&format!(
                "bridge cni0) ⇄ {pn} eth0 (ifindex {})",
                eth0.ifindex
            )),
            "{back}"
        );
    }

    // eth0 exists in all six lab namespaces: ambiguous without --netns.
    let mut sink = Vec::new();
    let e = peer::write(
        &PeerArgs {
            iface: "eth0".into(),
            ..Default::default()
        },
        &t,
        &mut sink,
    )
    .expect_err("ambiguous");
    assert!(
        e.to_string()
            .starts_with("eth0 is in 6 namespaces; pick one:"),
        "{e}"
    );
    assert!(e.downcast_ref::<vethtrace::error::UsageError>().is_some());

    // Text tree and DOT.
    let mut text = Vec::new();
    topo::write(&TopoArgs::default(), &t, &mut text).expect("text");
    let text = String::from_utf8(text).expect("utf8");
    assert!(
        text.contains("vni 1 local 172.30.0.1 port 8472 underlay eth0"),
        "{text}"
    );
    assert!(
        text.contains("fdb ") && text.contains("dst 172.30.0.2"),
        "{text}"
    );
    let mut dot = Vec::new();
    topo::write(
        &TopoArgs {
            dot: true,
            ..Default::default()
        },
        &t,
        &mut dot,
    )
    .expect("dot");
    let dot = String::from_utf8(dot).expect("utf8");
    // The overlay: node1's flannel.1 joined to node2's through the FDB, drawn once.
    assert_eq!(dot.matches("label=\"vxlan vni 1\"").count(), 1, "{dot}");
    assert_dot_parses(&t);
}

#[test]
fn routed_lab_host_veths_routes_and_no_bridge() {
    if !vethtrace_tests::root("routed_lab_host_veths_routes_and_no_bridge") {
        return;
    }
    let lab = Lab::create(LabKind::Routed).expect("routed lab");
    let name = |role: &str| lab.netns(role).expect("role").to_string();
    let t = lab_topology(&lab);
    let node = name("node");
    let n = ns(&t, &node);
    assert!(n.interfaces.iter().all(|i| i.kind != "bridge"));
    for (pod, ip) in [("pod1", "10.188.2.2"), ("pod2", "10.188.2.3")] {
        let pn = name(pod);
        let eth0 = iface(ns(&t, &pn), "eth0");
        assert!(eth0.addrs.contains(&format!("{ip}/24")));
        let p = eth0.peer.as_ref().expect("peer");
        let host_if = p.name.clone().expect("name");
        assert_eq!(p.master, None);
        assert_pair(&t, &pn, "eth0", &node, &host_if);
        assert_eq!(iface(n, &host_if).addrs, vec!["10.188.2.1/32".to_string()]);
        let route = n
            .routes
            .iter()
            .find(|r| r.dst == format!("{ip}/32"))
            .expect("/32 route");
        assert_eq!(route.dev.as_deref(), Some(host_if.as_str()));
        let def = ns(&t, &pn).default_route.clone().expect("default route");
        assert_eq!(
            (def.gateway.as_deref(), def.dev.as_deref()),
            (Some("10.188.2.1"), Some("eth0"))
        );
        let line = peer_line(&node, &host_if);
        let expect = format!(
            "{node} {host_if} (ifindex {}) ⇄ {pn} eth0 (ifindex {})",
            p.ifindex, eth0.ifindex
        );
        assert!(line.starts_with(&expect), "{line}");
    }
    assert_dot_parses(&t);
}

#[test]
fn pair_lab_both_directions() {
    if !vethtrace_tests::root("pair_lab_both_directions") {
        return;
    }
    let lab = Lab::create(LabKind::Pair).expect("pair lab");
    let (a, b) = (lab.netns("a").expect("a"), lab.netns("b").expect("b"));
    let t = lab_topology(&lab);
    assert_pair(&t, a, "eth0", b, "eth0");
    assert!(iface(ns(&t, a), "eth0")
        .addrs
        .iter()
        .any(|x| x.starts_with("10.0.0.1/")));
    assert!(iface(ns(&t, b), "eth0")
        .addrs
        .iter()
        .any(|x| x.starts_with("10.0.0.2/")));
    let line = peer_line(a, "eth0");
    assert!(
        line.contains(&format!("{a} eth0 (ifindex"))
            && line.contains(&format!("⇄ {b} eth0 (ifindex")),
        "{line}"
    );
    let line = peer_line(b, "eth0");
    assert!(line.contains(&format!("⇄ {a} eth0")), "{line}");
    // The ethtool fallback agrees with IFLA_LINK.
    let (ia, ib) = (
        iface(ns(&t, a), "eth0").ifindex,
        iface(ns(&t, b), "eth0").ifindex,
    );
    let from_ethtool = vethtrace::netns::run_in(&vethtrace::netns::named(a), || {
        Ok(vethtrace::topology::ethtool::peer_ifindex("eth0"))
    })
    .expect("ethtool in a");
    assert_eq!(from_ethtool, Some(ib));
    let from_ethtool = vethtrace::netns::run_in(&vethtrace::netns::named(b), || {
        Ok(vethtrace::topology::ethtool::peer_ifindex("eth0"))
    })
    .expect("ethtool in b");
    assert_eq!(from_ethtool, Some(ia));
    assert_dot_parses(&t);
}

/// Network namespaces made by one test, deleted on drop (panics included), with the processes
/// started in them killed first.
struct Namespaces {
    names: Vec<String>,
    children: Vec<Child>,
}

impl Namespaces {
    fn new() -> Self {
        Self {
            names: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Runs `ip -batch -` with `lines`; names of `netns add` lines are recorded first, so they
    /// are removed even when the batch fails half-way.
    fn batch(&mut self, lines: &[String]) {
        for l in lines {
            if let Some(n) = l.strip_prefix("netns add ") {
                self.names.push(n.to_string());
            }
        }
        let mut child = Command::new("ip")
            .args(["-batch", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ip -batch");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(lines.join("\n").as_bytes())
            .expect("write batch");
        let out = child.wait_with_output().expect("ip -batch");
        assert!(
            out.status.success(),
            "ip -batch failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.names.is_empty() {
            return;
        }
        let lines: Vec<String> = self
            .names
            .iter()
            .map(|n| format!("netns del {n}"))
            .collect();
        if let Ok(mut child) = Command::new("ip")
            .args(["-force", "-batch", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
        {
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(lines.join("\n").as_bytes());
            }
            let _ = child.wait();
        }
    }
}

#[test]
fn hundred_namespaces_with_colliding_ifindexes() {
    if !vethtrace_tests::root("hundred_namespaces_with_colliding_ifindexes") {
        return;
    }
    const PODS: usize = 100;
    let prefix = format!("vttopo-{}-", std::process::id());
    let node = format!("{prefix}node");
    let pod = |i: usize| format!("{prefix}p{i}");
    let mut guard = Namespaces::new();
    let mut lines = vec![format!("netns add {node}")];
    lines.extend((0..PODS).map(|i| format!("netns add {}", pod(i))));
    // Both ends are created directly in their namespaces; nothing appears in the root one.
    lines.extend((0..PODS).map(|i| {
        format!(
            "link add h{i} netns {node} type veth peer name eth0 netns {}",
            pod(i)
        )
    }));
    guard.batch(&lines);

    let start = Instant::now();
    let t = discover(&DiscoverOptions::default()).expect("discover");
    let took = start.elapsed();
    eprintln!("discovered {} namespaces in {took:?}", t.namespaces.len());
    // The budget: 1 s for 100+ namespaces on this 2-core machine (about 60 ms in a debug build).
    assert!(took < Duration::from_secs(1), "discovery took {took:?}");

    let n = ns(&t, &node);
    let mut pod_ifindexes = HashMap::new();
    for i in 0..PODS {
        let pn = pod(i);
        let p = ns(&t, &pn);
        let eth0 = iface(p, "eth0");
        *pod_ifindexes.entry(eth0.ifindex).or_insert(0) += 1;
        let peer = eth0.peer.as_ref().expect("pod peer");
        assert_eq!(
            (peer.netns.as_str(), peer.inode, peer.name.as_deref()),
            (node.as_str(), Some(n.inode), Some(format!("h{i}").as_str()))
        );
        let h = iface(n, &format!("h{i}"));
        assert_eq!(peer.ifindex, h.ifindex);
        let back = h.peer.as_ref().expect("node peer");
        assert_eq!(
            (back.netns.as_str(), back.inode, back.ifindex),
            (pn.as_str(), Some(p.inode), eth0.ifindex)
        );
    }
    // The point of the test: the pods' eth0 ifindexes collide.
    assert!(
        pod_ifindexes.values().any(|&c| c > 1),
        "no ifindex collision: {pod_ifindexes:?}"
    );

    // Restricting to one pod still names its peer in the node.
    let one = discover(&DiscoverOptions {
        netns: vec![pod(42)],
        ..Default::default()
    })
    .expect("discover one");
    assert_eq!(one.namespaces.len(), 1);
    let peer = iface(&one.namespaces[0], "eth0")
        .peer
        .clone()
        .expect("peer");
    assert_eq!(
        (peer.netns, peer.name.as_deref()),
        (node.clone(), Some("h42"))
    );
}

#[test]
fn owners_and_names_of_process_held_namespaces() {
    if !vethtrace_tests::root("owners_and_names_of_process_held_namespaces") {
        return;
    }
    let prefix = format!("vttopo-{}-own-", std::process::id());
    let named = format!("{prefix}a");
    let mut guard = Namespaces::new();
    guard.batch(&[format!("netns add {named}")]);
    // A process in the named namespace, and one in a namespace of its own with no name.
    let in_named = Command::new("ip")
        .args(["netns", "exec", &named, "sleep", "60"])
        .spawn()
        .expect("sleep in named netns");
    guard.children.push(in_named);
    let unnamed = Command::new("unshare")
        .args(["--net", "sleep", "61"])
        .spawn()
        .expect("unshare --net");
    guard.children.push(unnamed);
    let (named_pid, unnamed_pid) = (guard.children[0].id(), guard.children[1].id());
    // Wait until both have exec'd sleep (the comm changes from ip/unshare to sleep).
    let deadline = Instant::now() + Duration::from_secs(5);
    let comm = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    while (comm(named_pid).trim() != "sleep" || comm(unnamed_pid).trim() != "sleep")
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }

    let t = discover(&DiscoverOptions::default()).expect("discover");
    let a = ns(&t, &named);
    assert!(a.pids.contains(&named_pid), "{:?}", a.pids);
    let o = a.owner.as_ref().expect("owner");
    assert_eq!((o.pid, o.comm.as_str()), (named_pid, "sleep"));
    assert_eq!(a.netns_name.as_deref(), Some(named.as_str()));

    let b = t
        .namespaces
        .iter()
        .find(|n| n.pids.contains(&unnamed_pid))
        .expect("namespace of the unshared process");
    assert_eq!(b.name, format!("pid:{unnamed_pid}(sleep)"));
    assert_eq!(
        t.find_netns(&unnamed_pid.to_string()).map(|n| n.inode),
        Some(b.inode)
    );
    assert_eq!(t.find_netns(&b.name).map(|n| n.inode), Some(b.inode));
    assert!(b
        .interfaces
        .iter()
        .any(|i| i.name == "lo" && i.kind == "loopback"));

    assert_eq!(t.namespaces[0].name, "host");
    assert!(t.namespaces.iter().filter(|n| n.name == "host").count() == 1);
}

#[test]
fn programs_attached_to_an_interface() {
    if !vethtrace_tests::root("programs_attached_to_an_interface") {
        return;
    }
    let lab = Lab::create(LabKind::Pair).expect("pair lab");
    let a = lab.netns("a").expect("a");
    // Attached from inside the namespace; detached when these descriptors close, before the lab
    // is removed (locals drop in reverse order).
    let attached = vethtrace::netns::run_in(&vethtrace::netns::named(a), || {
        let ifindex = nix::net::if_::if_nametoindex("eth0")?;
        let tcx = vethtrace_tests::rawbpf::load(
            vethtrace_tests::rawbpf::PROG_TYPE_SCHED_CLS,
            0,
            -1,
            "vt_topo_tcx",
        )?;
        let xdp = vethtrace_tests::rawbpf::load(
            vethtrace_tests::rawbpf::PROG_TYPE_XDP,
            vethtrace_tests::rawbpf::ATTACH_XDP,
            2,
            "vt_topo_xdp",
        )?;
        let tcx_link = vethtrace_tests::rawbpf::link(
            &tcx,
            ifindex,
            vethtrace_tests::rawbpf::ATTACH_TCX_INGRESS,
        )?;
        let xdp_link =
            vethtrace_tests::rawbpf::link(&xdp, ifindex, vethtrace_tests::rawbpf::ATTACH_XDP)?;
        Ok(vec![tcx_link, xdp_link, tcx, xdp])
    })
    .expect("load and attach test programs");

    let opts = DiscoverOptions {
        netns: vec![a.into()],
        programs: true,
        ..Default::default()
    };
    let t = discover(&opts).expect("discover --programs");
    let eth0 = iface(ns(&t, a), "eth0");
    let progs: Vec<(&str, &str)> = eth0
        .programs
        .iter()
        .map(|p| (p.mode.as_str(), p.name.as_str()))
        .collect();
    assert!(progs.contains(&("tcx ingress", "vt_topo_tcx")), "{progs:?}");
    assert!(
        progs
            .iter()
            .any(|(m, n)| m.starts_with("xdp ") && *n == "vt_topo_xdp"),
        "{progs:?}"
    );
    assert!(eth0.xdp.as_ref().is_some_and(|x| x.name == "vt_topo_xdp"));
    // The peer end has none.
    let b = lab.netns("b").expect("b");
    let tb = discover(&DiscoverOptions {
        netns: vec![b.into()],
        programs: true,
        ..Default::default()
    })
    .expect("discover b");
    assert!(iface(ns(&tb, b), "eth0").programs.is_empty());

    let mut text = Vec::new();
    topo::write(&TopoArgs::default(), &t, &mut text).expect("text");
    let text = String::from_utf8(text).expect("utf8");
    assert!(
        text.contains("tcx ingress  id ") && text.contains("vt_topo_tcx"),
        "{text}"
    );
    drop(attached);
}
