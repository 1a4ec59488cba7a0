//! End-to-end tier: real labs (namespaces only), real pings, real kernel events. Asserts the
//! exact hop sequence of a probe in both directions, and where and why it dies.

use std::time::Duration;

use vethtrace::{
    attach::AttachMode,
    filter::Filter,
    lab::{Fault, Lab, LabKind},
    loader::LoadOptions,
    tracer::{Tracer, TracerOptions},
};
use vethtrace_tests::labtrace::{self, echo, hops, probe, BRIDGE_REPLY, BRIDGE_REQUEST};

fn trace_lab(lab: &Lab) -> Tracer {
    labtrace::tracer(lab, AttachMode::Auto)
}

#[test]
fn pair_lab_one_ping_both_directions() {
    if !vethtrace_tests::privileged("pair_lab_one_ping_both_directions") {
        return;
    }
    let lab = Lab::create(LabKind::Pair).expect("lab");
    let mut tracer = trace_lab(&lab);
    let (replied, paths) = probe(&lab, &mut tracer, "a", "b");
    assert!(replied);
    assert_eq!(hops(echo(&paths, 8)), ["a eth0 egress", "b eth0 ingress"]);
    assert_eq!(hops(echo(&paths, 0)), ["b eth0 egress", "a eth0 ingress"]);
    let c = tracer.counters().expect("counters");
    assert_eq!(c.lost, 0);
}

#[test]
fn bridge_lab_one_ping_both_directions() {
    if !vethtrace_tests::privileged("bridge_lab_one_ping_both_directions") {
        return;
    }
    let lab = Lab::create(LabKind::Bridge).expect("lab");
    let mut tracer = trace_lab(&lab);
    let (replied, paths) = probe(&lab, &mut tracer, "ns01", "ns02");
    assert!(replied);
    let req = echo(&paths, 8);
    assert_eq!(hops(req), BRIDGE_REQUEST);
    assert!(req.hops.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns));
    assert_eq!(hops(echo(&paths, 0)), BRIDGE_REPLY);
    assert!(
        paths.iter().all(|p| p.drop().is_none()),
        "no drops on a healthy path"
    );
}

#[test]
fn bridge_lab_forward_drop_is_pinned_with_its_reason() {
    if !vethtrace_tests::privileged("bridge_lab_forward_drop_is_pinned_with_its_reason") {
        return;
    }
    let mut lab = Lab::create(LabKind::Bridge).expect("lab");
    lab.enable(Fault::ForwardDrop).expect("fault");
    let mut tracer = trace_lab(&lab);
    let (replied, paths) = probe(&lab, &mut tracer, "ns01", "ns02");
    assert!(!replied);
    assert_eq!(
        hops(echo(&paths, 8)),
        [
            "ns01 veth01 egress",
            "node br-veth01 ingress",
            "drop node NETFILTER_DROP"
        ]
    );
    assert!(paths.iter().all(|p| p.flow().icmp_type != 0), "no reply");
    let findings = vethtrace::diagnose::explain(echo(&paths, 8));
    assert_eq!(findings[0].code, "netfilter-drop");
    assert!(findings[0].message.contains("in node"));
}

#[test]
fn concurrent_traces_see_only_their_own_lab() {
    if !vethtrace_tests::privileged("concurrent_traces_see_only_their_own_lab") {
        return;
    }
    let mine = Lab::create(LabKind::Pair).expect("lab");
    let other = Lab::create(LabKind::Pair).expect("lab");
    let mut tracer = trace_lab(&mine);
    // Same addresses, another lab: none of it may show up here, packets or drops.
    assert!(other
        .ping("a", other.addr("b").expect("addr"), 2)
        .expect("ping"));
    let obs = tracer.collect_until_quiet(Duration::from_millis(300), Duration::from_secs(2));
    assert!(obs.is_empty(), "saw another lab's packets: {obs:#?}");
}

#[test]
fn flannel_lab_cross_node_path_keeps_the_inner_packet() {
    if !vethtrace_tests::privileged("flannel_lab_cross_node_path_keeps_the_inner_packet") {
        return;
    }
    let lab = Lab::create(LabKind::Flannel).expect("lab");
    let mut tracer = trace_lab(&lab);
    let (replied, paths) = probe(&lab, &mut tracer, "busybox", "nginx");
    assert!(replied);
    let req = echo(&paths, 8);
    let hv = |pod: &str| host_veth(&lab, pod);
    assert_eq!(
        hops(req),
        [
            "busybox eth0 egress".to_string(),
            format!("node1 {} ingress", hv("busybox")),
            // Routed out of the bridge: the frame goes up through cni0 itself.
            "node1 cni0 ingress".into(),
            "node1 flannel.1 egress".into(),
            "node1 eth0 egress".into(),
            "node2 eth0 ingress".into(),
            "node2 flannel.1 ingress".into(),
            "node2 cni0 egress".into(),
            format!("node2 {} egress", hv("nginx")),
            "nginx eth0 ingress".into(),
        ]
    );
    // On the underlay the packet is VXLAN between the nodes, with the pods' packet inside.
    for h in labtrace::flannel_underlay(req) {
        assert_eq!(h.outer.src_ip(), Some("172.30.0.1".parse().expect("ip")));
    }
    assert_eq!(hops(echo(&paths, 0)).len(), 10);
}

/// The host-side veth of a pod: the peer of its eth0, found the way a user would (`ip -o link`
/// in the node shows `vethXXXX@if2`), independent of the topology code under test elsewhere.
fn host_veth(lab: &Lab, pod: &str) -> String {
    let node = if ["busybox", "busybox2"].contains(&pod) {
        "node1"
    } else {
        "node2"
    };
    let stdout = |role: &str, argv: &[&str]| {
        String::from_utf8_lossy(&lab.exec(role, argv).expect("ip link").stdout).into_owned()
    };
    // `2: eth0@if7: …`: the peer's ifindex in the node.
    let peer_index: u32 = stdout(pod, &["ip", "-o", "link", "show", "eth0"])
        .split(':')
        .nth(1)
        .and_then(|n| n.trim().split('@').nth(1))
        .and_then(|s| s.trim_start_matches("if").parse().ok())
        .expect("eth0@ifN");
    stdout(node, &["ip", "-o", "link", "show", "master", "cni0"])
        .lines()
        .find_map(|l| {
            let mut parts = l.split(':');
            let idx: u32 = parts.next()?.trim().parse().ok()?;
            let name = parts.next()?.trim().split('@').next()?.to_string();
            (idx == peer_index).then_some(name)
        })
        .expect("host veth on cni0")
}

#[test]
fn tiny_ring_flood_counts_every_event_as_delivered_or_lost() {
    if !vethtrace_tests::privileged("tiny_ring_flood_counts_every_event_as_delivered_or_lost") {
        return;
    }
    let lab = Lab::create(LabKind::Pair).expect("lab");
    let targets = labtrace::targets(&lab);
    let mut tracer = Tracer::start(&TracerOptions {
        load: LoadOptions {
            filter: Filter::new(&["icmp".to_string()]).expect("filter").insns,
            drops: false,
            netns_filter: true,
            snapshots: false,
            // One page: about 23 records.
            ring_bytes: Some(4096),
            device_tracepoints: false,
            tc_ingress: false,
        },
        targets,
        ..Default::default()
    })
    .expect("tracer");
    // A bounded flood: 300 echo requests as fast as replies come back.
    const SENT: u64 = 300;
    let out = lab
        .exec(
            "a",
            &[
                "ping",
                "-q",
                "-n",
                "-c",
                &SENT.to_string(),
                "-i",
                "0",
                "-W",
                "1",
                "10.0.0.2",
            ],
        )
        .expect("ping flood");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("{SENT} packets transmitted, {SENT} received")),
        "{text}"
    );
    let delivered = tracer
        .collect_until_quiet(Duration::from_millis(300), Duration::from_secs(5))
        .len() as u64;
    let c = tracer.counters().expect("counters");
    // Each request and each reply crosses two hooks (a eth0 egress, b eth0 ingress, and back).
    let expected = SENT * 2 * 2;
    assert_eq!(
        delivered, c.emitted,
        "every emitted event reached user space"
    );
    assert_eq!(
        c.emitted + c.lost,
        expected,
        "emitted {} + lost {}",
        c.emitted,
        c.lost
    );
    assert!(c.lost > 0, "a one-page ring should overflow under a flood");
}

/// `vethtrace ping` to an address on a macvlan draws the macvlan as stacked on its lower
/// device (`⇒ macvlan ⇒`), not as a hop the IP stack routed, in both directions.
#[test]
fn ping_draws_a_macvlan_as_stacked_on_its_lower_device() {
    if !vethtrace_tests::privileged("ping_draws_a_macvlan_as_stacked_on_its_lower_device") {
        return;
    }
    let lab = Lab::create(LabKind::Pair).expect("lab");
    labtrace::macvlan_on_pair(&lab);
    let (a, b) = (lab.netns("a").expect("a"), lab.netns("b").expect("b"));
    let dest = lab.addr("b").expect("b").to_string();
    let out = std::process::Command::new(vethtrace_tests::binary())
        .args(["ping", &dest, "-c", "1", "-W", "2", "--from", a])
        .args(["--netns", a, "--netns", b])
        .env("NO_COLOR", "1")
        .output()
        .expect("vethtrace ping runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for path in [
        format!("request  {a} eth0 → {b} eth0 ⇒ macvlan ⇒ {b} mv0 "),
        format!("reply    {b} mv0 ⇒ macvlan ⇒ {b} eth0 → {a} eth0 "),
    ] {
        assert!(stdout.contains(&path), "no `{path}` in:\n{stdout}");
    }
}

/// `vethtrace ping --json` from a namespace to (or from) the macvlan it is the parent of: no
/// reply either way, diagnosed as `macvlan-parent`, and its fix, run as printed, makes both
/// directions answer, for a bridge-mode macvlan and for a VEPA one (`ip link`'s default),
/// whose fix first makes it bridge mode.
#[test]
fn a_macvlans_parent_is_diagnosed_and_the_fix_works() {
    if !vethtrace_tests::privileged("a_macvlans_parent_is_diagnosed_and_the_fix_works") {
        return;
    }
    for mode in ["bridge", "vepa"] {
        macvlan_parent_case(mode);
    }
}

fn macvlan_parent_case(mode: &str) {
    let lab = Lab::create(LabKind::Pair).expect("lab");
    labtrace::macvlan_container(&lab, mode);
    let (a, b) = (lab.netns("a").expect("a"), lab.netns("b").expect("b"));
    let (a_addr, b_addr) = (
        lab.addr("a").expect("a").to_string(),
        lab.addr("b").expect("b").to_string(),
    );
    let ping = |from: &str, dest: &str| {
        let out = std::process::Command::new(vethtrace_tests::binary())
            .args(["ping", dest, "-c", "1", "-W", "1", "--json", "--from", from])
            .args(["--netns", a, "--netns", b])
            .output()
            .expect("vethtrace ping runs");
        let result: serde_json::Value = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["type"] == "result")
            .unwrap_or_else(|| panic!("no result: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), result)
    };
    let mut fix = String::new();
    for (from, dest) in [(a, &b_addr), (b, &a_addr)] {
        let (code, result) = ping(from, dest);
        assert_eq!(code, Some(1), "{mode}: {result}");
        assert_eq!(result["status"], "lost", "{mode}: {result}");
        let first = &result["findings"][0];
        assert_eq!(first["code"], "macvlan-parent", "{result}");
        assert_eq!(
            first["message"].as_str().map(|m| m.starts_with(&format!(
                "{b} mv1 is a macvlan on {a} eth0, its parent device"
            ))),
            Some(true),
            "{result}"
        );
        fix = first["fix"].as_str().expect("fix").to_string();
    }
    // The fix's command, between backticks, touches only the lab's namespaces.
    let cmd = fix.split('`').nth(1).expect("a command in the fix");
    for step in cmd.split(" && ") {
        assert!(
            step.starts_with(&format!("ip -n {a} ")) || step.starts_with(&format!("ip -n {b} ")),
            "{mode}: {cmd}"
        );
    }
    assert_eq!(
        cmd.contains(&format!("ip -n {b} link set mv1 type macvlan mode bridge")),
        mode != "bridge",
        "{mode}: {cmd}"
    );
    let st = std::process::Command::new("sh")
        .args(["-c", cmd])
        .status()
        .expect("sh runs");
    assert!(st.success(), "{cmd}");
    for (from, dest) in [(a, &b_addr), (b, &a_addr)] {
        let (code, result) = ping(from, dest);
        assert_eq!(code, Some(0), "{mode}: {result}");
        assert_eq!(result["status"], "replied", "{mode}: {result}");
    }
}
