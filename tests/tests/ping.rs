//! `vethtrace ping` as a black box on the labs: exact request/reply hop sequences, verdicts,
//! findings, exit codes, and one-line errors for bad input. Every trace is confined to the
//! lab's namespaces with --netns.

use std::process::{Command, Output};

use serde_json::Value;
use vethtrace::lab::{Fault, Lab, LabKind};

fn ping(lab: &Lab, from: &str, dest: &str, extra: &[&str]) -> (Option<i32>, Vec<Value>) {
    let mut cmd = Command::new(vethtrace_tests::binary());
    cmd.args(["ping", dest, "--json", "-W", "1", "-i", "0.2"]);
    cmd.args(["--from", lab.netns(from).expect("role")]);
    for (_, ns) in lab.roles() {
        cmd.args(["--netns", ns]);
    }
    cmd.args(extra);
    let out = cmd.output().expect("vethtrace ping runs");
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        out.stderr.is_empty() || out.status.code() != Some(2),
        "error: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), lines)
}

/// `netns ifname dir` of the hops of probe `seq`, leg `leg`, with lab roles for namespaces.
fn leg(lab: &Lab, lines: &[Value], seq: u64, leg: &str) -> Vec<String> {
    let role = |ns: &str| {
        lab.roles()
            .into_iter()
            .find(|(_, n)| *n == ns)
            .map_or(ns.to_string(), |(r, _)| r.to_string())
    };
    lines
        .iter()
        .filter(|l| l["type"] == "hop" && l["seq"] == seq && l["leg"] == leg)
        .map(|l| {
            format!(
                "{} {} {}",
                role(l["netns"].as_str().unwrap_or("?")),
                l["ifname"].as_str().unwrap_or("?"),
                l["dir"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

fn result(lines: &[Value], seq: u64) -> &Value {
    lines
        .iter()
        .find(|l| l["type"] == "result" && l["seq"] == seq)
        .unwrap_or_else(|| panic!("no result for seq {seq}: {lines:#?}"))
}

fn codes(r: &Value) -> Vec<String> {
    r["findings"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(|x| x["code"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn summary(lines: &[Value]) -> &Value {
    let s = lines.last().expect("lines");
    assert_eq!(s["type"], "summary");
    s
}

fn host_veth(lab: &Lab, node: &str, pod: &str) -> String {
    let t = vethtrace::topology::discover(&vethtrace::topology::DiscoverOptions {
        netns: vec![lab.netns(pod).expect("pod").to_string()],
        with_peers: true,
        ..Default::default()
    })
    .expect("topology");
    let pod_ns = t.find_netns(lab.netns(pod).expect("pod")).expect("pod ns");
    let eth0 = pod_ns.interface_named("eth0").expect("eth0");
    let peer = eth0.peer.as_ref().expect("veth peer");
    assert_eq!(peer.netns, lab.netns(node).expect("node"));
    peer.name.clone().expect("peer name")
}

#[test]
fn bridge_lab_replied_paths_both_ways() {
    if !vethtrace_tests::privileged("bridge_lab_replied_paths_both_ways") {
        return;
    }
    let lab = Lab::create(LabKind::Bridge).expect("lab");
    let (code, lines) = ping(&lab, "ns01", "192.168.88.12", &["-c", "2"]);
    assert_eq!(code, Some(0));
    for seq in [1, 2] {
        assert_eq!(
            leg(&lab, &lines, seq, "request"),
            [
                "ns01 veth01 egress",
                "node br-veth01 ingress",
                "node br-veth02 egress",
                "ns02 veth02 ingress"
            ]
        );
        assert_eq!(
            leg(&lab, &lines, seq, "reply"),
            [
                "ns02 veth02 egress",
                "node br-veth02 ingress",
                "node br-veth01 egress",
                "ns01 veth01 ingress"
            ]
        );
        let r = result(&lines, seq);
        assert_eq!(r["status"], "replied");
        assert!(r["rtt_us"].as_f64().is_some_and(|us| us > 0.0));
        assert_eq!(r["drop"], Value::Null);
    }
    let first = lines.iter().find(|l| l["type"] == "hop").expect("hop");
    assert_eq!(
        (first["t_us"].as_f64(), first["dt_us"].as_f64()),
        (Some(0.0), Some(0.0))
    );
    let s = summary(&lines);
    assert_eq!(
        (
            s["transmitted"].as_u64(),
            s["received"].as_u64(),
            s["lost"].as_u64()
        ),
        (Some(2), Some(2), Some(0))
    );
    assert!(s["rtt_us"]["min"].as_f64() <= s["rtt_us"]["max"].as_f64());
}

#[test]
fn forward_drop_is_pinned_attributed_and_explained_without_changing_anything() {
    if !vethtrace_tests::privileged(
        "forward_drop_is_pinned_attributed_and_explained_without_changing_anything",
    ) {
        return;
    }
    let mut lab = Lab::create(LabKind::Bridge).expect("lab");
    lab.enable(Fault::ForwardDrop).expect("fault");
    let ruleset = |lab: &Lab| {
        let out = lab.exec("node", &["iptables-save"]).expect("iptables-save");
        // Without the comment lines (a timestamp) and the packet counters (our probe moves them).
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(" [").next().unwrap_or(l).to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let before = ruleset(&lab);
    let (code, lines) = ping(&lab, "ns01", "192.168.88.12", &["-c", "1"]);
    assert_eq!(code, Some(1), "a dropped probe exits 1");
    assert_eq!(
        leg(&lab, &lines, 1, "request"),
        ["ns01 veth01 egress", "node br-veth01 ingress"]
    );
    let r = result(&lines, 1);
    assert_eq!(r["status"], "dropped");
    assert_eq!(r["drop"]["reason"], "NETFILTER_DROP");
    assert_eq!(r["drop"]["netns"], lab.netns("node").expect("node"));
    assert_eq!(r["drop"]["after"]["ifname"], "br-veth01");
    assert_eq!(r["drop"]["after"]["dir"], "ingress");
    assert_eq!(r["drop"]["netfilter"]["hook"], "FORWARD");
    assert_eq!(r["drop"]["netfilter"]["table"], "filter");
    assert_eq!(r["drop"]["netfilter"]["verdict"], "policy DROP");
    assert_eq!(codes(r)[0], "forward-drop");
    let f = &r["findings"][0];
    assert!(
        f["message"].as_str().is_some_and(|m| m.contains("br01")),
        "{f}"
    );
    assert!(
        f["fix"]
            .as_str()
            .is_some_and(|m| m.contains("-i br01 -o br01 -j ACCEPT")),
        "{f}"
    );
    assert_eq!(
        ruleset(&lab),
        before,
        "vethtrace must not change the ruleset"
    );
}

#[test]
fn missing_masquerade_towards_the_wan() {
    if !vethtrace_tests::privileged("missing_masquerade_towards_the_wan") {
        return;
    }
    let mut lab = Lab::create(LabKind::Bridge).expect("lab");
    lab.enable(Fault::Uplink { masquerade: false })
        .expect("fault");
    let wan = lab.addr("wan").expect("wan").to_string();
    let (code, lines) = ping(&lab, "ns01", &wan, &["-c", "1"]);
    assert_eq!(code, Some(1));
    let req = leg(&lab, &lines, 1, "request");
    assert_eq!(req.first().map(String::as_str), Some("ns01 veth01 egress"));
    assert!(req.contains(&"node eth1 egress".to_string()), "{req:?}");
    assert!(req.contains(&"wan eth0 ingress".to_string()), "{req:?}");
    let r = result(&lines, 1);
    assert_ne!(r["status"], "replied");
    assert!(codes(r).contains(&"missing-masquerade".to_string()), "{r}");
    // With the rule in place the same probe is answered.
    lab.enable(Fault::Uplink { masquerade: true })
        .expect("masquerade");
    let (code, lines) = ping(&lab, "ns01", &wan, &["-c", "1"]);
    assert_eq!(code, Some(0));
    assert_eq!(result(&lines, 1)["status"], "replied");
}

#[test]
fn peer_link_down() {
    if !vethtrace_tests::privileged("peer_link_down") {
        return;
    }
    let mut lab = Lab::create(LabKind::Bridge).expect("lab");
    lab.enable(Fault::LinkDown {
        role: "ns02".into(),
        ifname: "veth02".into(),
    })
    .expect("fault");
    let (code, lines) = ping(&lab, "ns01", "192.168.88.12", &["-c", "1"]);
    assert_eq!(code, Some(1));
    let r = result(&lines, 1);
    assert_ne!(r["status"], "replied");
    assert!(codes(r).contains(&"peer-down".to_string()), "{r}");
    let f = r["findings"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["code"] == "peer-down"))
        .expect("peer-down");
    assert!(
        f["message"].as_str().is_some_and(|m| m.contains("veth02")),
        "{f}"
    );
}

#[test]
fn no_route_from_the_wan_side() {
    if !vethtrace_tests::privileged("no_route_from_the_wan_side") {
        return;
    }
    let mut lab = Lab::create(LabKind::Bridge).expect("lab");
    lab.enable(Fault::Uplink { masquerade: false })
        .expect("uplink");
    // The wan namespace has no route back to the pods' subnet.
    let (code, lines) = ping(&lab, "wan", "192.168.88.11", &["-c", "1"]);
    assert_eq!(code, Some(1));
    let r = result(&lines, 1);
    assert_eq!(r["status"], "lost");
    assert!(codes(r).contains(&"no-route".to_string()), "{r}");
    assert!(
        leg(&lab, &lines, 1, "request").is_empty(),
        "nothing left the namespace"
    );
}

#[test]
fn mtu_of_the_vxlan_device() {
    if !vethtrace_tests::privileged("mtu_of_the_vxlan_device") {
        return;
    }
    let lab = Lab::create(LabKind::Flannel).expect("lab");
    // A pod whose MTU was left at 1500 behind flannel's 1450-byte vxlan device.
    let veth = host_veth(&lab, "node1", "busybox");
    lab.exec("busybox", &["ip", "link", "set", "eth0", "mtu", "1500"])
        .expect("mtu");
    lab.exec("node1", &["ip", "link", "set", &veth, "mtu", "1500"])
        .expect("mtu");
    let (code, lines) = ping(&lab, "busybox", "10.222.2.3", &["-c", "1", "-s", "1472"]);
    assert_eq!(code, Some(1));
    let r = result(&lines, 1);
    assert_ne!(r["status"], "replied");
    let f = r["findings"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["code"] == "mtu"))
        .unwrap_or_else(|| panic!("no mtu finding: {r}"));
    assert!(
        f["message"]
            .as_str()
            .is_some_and(|m| m.contains("flannel.1") && m.contains("1450")),
        "{f}"
    );
    // The right size goes through.
    let (code, _) = ping(&lab, "busybox", "10.222.2.3", &["-c", "1", "-s", "1422"]);
    assert_eq!(code, Some(0));
}

#[test]
fn flannel_cross_node_path() {
    if !vethtrace_tests::privileged("flannel_cross_node_path") {
        return;
    }
    let lab = Lab::create(LabKind::Flannel).expect("lab");
    let (code, lines) = ping(&lab, "busybox", "10.222.2.3", &["-c", "1"]);
    assert_eq!(code, Some(0));
    let (v1, v2) = (
        host_veth(&lab, "node1", "busybox"),
        host_veth(&lab, "node2", "nginx"),
    );
    assert_eq!(
        leg(&lab, &lines, 1, "request"),
        [
            "busybox eth0 egress".to_string(),
            format!("node1 {v1} ingress"),
            "node1 cni0 ingress".into(),
            "node1 flannel.1 egress".into(),
            "node1 eth0 egress".into(),
            "node2 eth0 ingress".into(),
            "node2 flannel.1 ingress".into(),
            "node2 cni0 egress".into(),
            format!("node2 {v2} egress"),
            "nginx eth0 ingress".into(),
        ]
    );
    assert_eq!(leg(&lab, &lines, 1, "reply").len(), 10);
    assert_eq!(result(&lines, 1)["status"], "replied");
}

#[test]
fn routed_gke_style_path() {
    if !vethtrace_tests::privileged("routed_gke_style_path") {
        return;
    }
    let lab = Lab::create(LabKind::Routed).expect("lab");
    let (code, lines) = ping(&lab, "pod1", "10.188.2.3", &["-c", "1"]);
    assert_eq!(code, Some(0));
    let (v1, v2) = (
        host_veth(&lab, "node", "pod1"),
        host_veth(&lab, "node", "pod2"),
    );
    assert_eq!(
        leg(&lab, &lines, 1, "request"),
        [
            "pod1 eth0 egress".to_string(),
            format!("node {v1} ingress"),
            format!("node {v2} egress"),
            "pod2 eth0 ingress".into(),
        ]
    );
    assert_eq!(result(&lines, 1)["status"], "replied");
}

fn run(args: &[&str]) -> Output {
    Command::new(vethtrace_tests::binary())
        .args(args)
        .output()
        .expect("vethtrace runs")
}

fn one_line_exit_2(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty(), "no probe output");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

#[test]
fn bad_input_is_one_line_and_sends_nothing() {
    let err = one_line_exit_2(&run(&["ping", "no-such-host.invalid"]));
    assert!(err.contains("no-such-host.invalid"), "{err}");
    let err = one_line_exit_2(&run(&["ping", "10.0.0.1", "-c", "0"]));
    assert!(err.contains("-c 0"), "{err}");
    let err = one_line_exit_2(&run(&["ping", "10.0.0.1", "-i", "-1"]));
    assert!(err.contains("-i"), "{err}");
    one_line_exit_2(&run(&["ping"]));
}

#[test]
fn unknown_source_namespace_names_what_exists() {
    if !vethtrace_tests::privileged("unknown_source_namespace_names_what_exists") {
        return;
    }
    let lab = Lab::create(LabKind::Pair).expect("lab");
    let a = lab.netns("a").expect("a");
    let err = one_line_exit_2(&run(&[
        "ping",
        "10.0.0.2",
        "--from",
        "no-such-pod",
        "--netns",
        a,
    ]));
    assert!(err.contains("no-such-pod"), "{err}");
}

#[test]
fn not_root_is_one_line_and_exit_2() {
    if !vethtrace_tests::privileged("not_root_is_one_line_and_exit_2") {
        return;
    }
    let out = vethtrace_tests::as_nobody(&["ping", "127.0.0.1", "-c", "1"]);
    let err = one_line_exit_2(&out);
    assert!(err.contains("CAP_"), "names the capability: {err}");
}
