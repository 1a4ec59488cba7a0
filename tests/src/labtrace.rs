//! Tracing a lab through the library, as the end-to-end tiers do: a tracer on every namespace
//! of a lab (ICMP, drops, the namespace filter), one ping, its correlated packets, and their
//! hops as `netns ifname dir` / `drop netns reason` / `freed netns reason` strings.

use std::time::Duration;

use vethtrace::{
    attach::AttachMode,
    correlate::{correlate, PacketPath},
    decode::{Observation, What},
    filter::Filter,
    lab::Lab,
    loader::LoadOptions,
    netns,
    tracer::{Target, Tracer, TracerOptions},
};

/// The hops of an echo request ns01 → ns02 across the bridge lab.
pub const BRIDGE_REQUEST: [&str; 4] = [
    "ns01 veth01 egress",
    "node br-veth01 ingress",
    "node br-veth02 egress",
    "ns02 veth02 ingress",
];

/// The hops of its reply.
pub const BRIDGE_REPLY: [&str; 4] = [
    "ns02 veth02 egress",
    "node br-veth02 ingress",
    "node br-veth01 egress",
    "ns01 veth01 ingress",
];

/// Every namespace of `lab` as a trace target, named by its role.
pub fn targets(lab: &Lab) -> Vec<Target> {
    lab.roles()
        .into_iter()
        .map(|(role, ns)| Target {
            path: netns::named(ns),
            name: role.to_string(),
        })
        .collect()
}

/// A tracer on every namespace of `lab`, named by role, recording ICMP and drops, hooked with
/// `mode`.
pub fn tracer(lab: &Lab, mode: AttachMode) -> Tracer {
    Tracer::start(&TracerOptions {
        load: LoadOptions {
            filter: Filter::new(&["icmp".to_string()]).expect("filter").insns,
            drops: true,
            netns_filter: true,
            ..Default::default()
        },
        targets: targets(lab),
        mode,
        ..Default::default()
    })
    .expect("tracer starts")
}

/// Pings once from role `from` to role `to`: whether it was answered, and every packet the
/// tracer saw meanwhile.
pub fn probe(lab: &Lab, tracer: &mut Tracer, from: &str, to: &str) -> (bool, Vec<PacketPath>) {
    let dst = lab.addr(to).expect("address");
    let replied = lab.ping(from, dst, 1).expect("ping runs");
    let obs = tracer.collect_until_quiet(Duration::from_millis(300), Duration::from_secs(3));
    (replied, correlate(obs))
}

/// Hooks, drops and frees of a packet (netfilter verdicts are left out).
pub fn hops(p: &PacketPath) -> Vec<String> {
    p.hops
        .iter()
        .filter_map(|h| match &h.what {
            What::Hook(dir) => Some(format!(
                "{} {} {dir}",
                h.netns,
                h.ifname.as_deref().unwrap_or("?")
            )),
            What::Drop { reason, .. } => Some(format!("drop {} {reason}", h.netns)),
            What::Freed { reason, .. } => Some(format!("freed {} {reason}", h.netns)),
            What::Netfilter(_) => None,
        })
        .collect()
}

/// The one packet of ICMP type `icmp_type` (8 request, 0 reply).
pub fn echo(paths: &[PacketPath], icmp_type: u8) -> &PacketPath {
    let matching: Vec<&PacketPath> = paths
        .iter()
        .filter(|p| p.flow().icmp_type == icmp_type)
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "exactly one ICMP type {icmp_type} packet in {paths:#?}"
    );
    matching[0]
}

/// The flannel lab's echo request on the nodes' eth0 (the underlay): exactly two hops, each a
/// VXLAN frame (UDP 8472) carrying the pods' echo request.
pub fn flannel_underlay(req: &PacketPath) -> Vec<&Observation> {
    let underlay: Vec<_> = req
        .hops
        .iter()
        .filter(|h| h.ifname.as_deref() == Some("eth0") && h.netns.starts_with("node"))
        .collect();
    assert_eq!(underlay.len(), 2);
    for h in &underlay {
        let inner = h.inner().expect("encapsulated");
        assert_eq!(inner.icmp_type, 8);
        assert_eq!((h.outer.l4, h.outer.dport), (17, 8472));
    }
    underlay
}

/// Turns role `b` of a `pair` lab into a host whose address sits on a macvlan: `mv0` (mode
/// bridge) on top of its `eth0`, which keeps no address of its own. A unicast frame for b's
/// address then arrives on eth0 and is handed to mv0 by macvlan's rx_handler (the receive
/// path's `another_round`), as a container's macvlan interface receives it. eth0 must not
/// answer ARP for mv0's address (`arp_ignore=1`, inside b only), or a would send to eth0's
/// MAC and the frames would never reach mv0.
pub fn macvlan_on_pair(lab: &Lab) {
    let addr = format!("{}/24", lab.addr("b").expect("b's address"));
    for argv in [
        &["sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1"][..],
        &["ip", "addr", "flush", "dev", "eth0"],
        &[
            "ip", "link", "add", "mv0", "link", "eth0", "type", "macvlan", "mode", "bridge",
        ],
        &["ip", "addr", "add", &addr, "dev", "mv0"],
        &["ip", "link", "set", "mv0", "up"],
    ] {
        lab.exec("b", argv).expect("configure the macvlan");
    }
}

/// The macvlan-container setup in the pair lab: b's address moves onto `mv1`, a macvlan on
/// a's eth0 moved into b (as the macvlan CNI does with the host's uplink), so a is the
/// parent's namespace ("the host"); b's own eth0 keeps no address and b answers ARP only for
/// the device an address is on. `mode`: the macvlan's (`ip link`'s default is vepa).
pub fn macvlan_container(lab: &Lab, mode: &str) {
    let (a, b) = (
        lab.netns("a").expect("a").to_string(),
        lab.netns("b").expect("b").to_string(),
    );
    let addr = format!("{}/24", lab.addr("b").expect("b's address"));
    for argv in [
        &["ip", "-n", &b, "addr", "flush", "dev", "eth0"][..],
        &[
            "ip",
            "netns",
            "exec",
            &b,
            "sysctl",
            "-qw",
            "net.ipv4.conf.all.arp_ignore=1",
        ],
        &[
            "ip", "-n", &a, "link", "add", "mv1", "link", "eth0", "type", "macvlan", "mode", mode,
        ],
        &["ip", "-n", &a, "link", "set", "mv1", "netns", &b],
        &["ip", "-n", &b, "addr", "add", &addr, "dev", "mv1"],
        &["ip", "-n", &b, "link", "set", "mv1", "up"],
    ] {
        let st = std::process::Command::new(argv[0])
            .args(&argv[1..])
            .status()
            .expect("ip runs");
        assert!(st.success(), "{argv:?} failed");
    }
}

/// Every packet of ICMP type `icmp_type` (8 request, 0 reply), in the order they were seen.
pub fn echoes(paths: &[PacketPath], icmp_type: u8) -> Vec<&PacketPath> {
    paths
        .iter()
        .filter(|p| p.flow().icmp_type == icmp_type)
        .collect()
}
