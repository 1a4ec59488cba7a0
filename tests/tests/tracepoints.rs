//! The device tracepoints (`--attach-mode tracepoints`, and `auto` for traces that start with
//! many hooks): tp_btf net:netif_receive_skb and net:net_dev_queue for the whole machine, with
//! the traced interfaces as keys of the HOOKS map. They must give the very hops, fields and
//! drops the tc hooks give, only for the interfaces registered, and follow hot attach/forget.

use std::time::Duration;

use vethtrace::{
    attach::{AttachMode, Mechanism, Selection, AUTO_TCX_MAX_HOOKS},
    correlate::{correlate, PacketPath},
    decode::What,
    lab::{Fault, Lab, LabKind},
    netns,
};
use vethtrace_tests::labtrace::{self, echo, echoes, hops, probe, BRIDGE_REPLY, BRIDGE_REQUEST};

/// What a hop recorded of the packet, beyond where: length, mark, the parsed flows.
fn fields(p: &PacketPath) -> Vec<String> {
    p.hops
        .iter()
        .filter(|h| matches!(h.what, What::Hook(_)))
        .map(|h| format!("{} {} {:?} {:?}", h.len, h.mark, h.outer, h.inner()))
        .collect()
}

#[test]
fn bridge_lab_hops_and_fields_match_the_tc_hooks() {
    if !vethtrace_tests::privileged("bridge_lab_hops_and_fields_match_the_tc_hooks") {
        return;
    }
    let lab = Lab::create(LabKind::Bridge).expect("lab");
    let mut seen = Vec::new();
    for mode in [AttachMode::Tcx, AttachMode::Tracepoints] {
        let mut tracer = labtrace::tracer(&lab, mode);
        let expect = match mode {
            AttachMode::Tracepoints => Mechanism::Tracepoints,
            _ => Mechanism::Tcx,
        };
        assert_eq!(tracer.attachments().mechanisms(), [expect]);
        // 5 interfaces (veth01, veth02, br01, br-veth01, br-veth02), both directions.
        assert_eq!(tracer.attachments().hooks(), 10);
        let (replied, paths) = probe(&lab, &mut tracer, "ns01", "ns02");
        assert!(replied, "{mode:?}");
        let (req, rep) = (echo(&paths, 8), echo(&paths, 0));
        assert_eq!(hops(req), BRIDGE_REQUEST, "{mode:?}");
        assert_eq!(hops(rep), BRIDGE_REPLY, "{mode:?}");
        assert!(req.hops.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns));
        // An echo request of ping's default 56 bytes: 98-byte frames at every hop.
        assert!(req.hops.iter().all(|h| h.len == 98), "{:?}", fields(req));
        assert_eq!(tracer.counters().expect("counters").lost, 0);
        seen.push((fields(req), fields(rep)));
    }
    // IP ids, ICMP ids and sequence numbers differ between the two pings: compare the rest.
    let strip = |v: &[String]| -> Vec<String> {
        v.iter()
            .map(|s| {
                s.split(", ")
                    .filter(|f| {
                        !f.starts_with("ip_id")
                            && !f.starts_with("icmp_id")
                            && !f.starts_with("icmp_seq")
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .collect()
    };
    assert_eq!(strip(&seen[0].0), strip(&seen[1].0));
    assert_eq!(strip(&seen[0].1), strip(&seen[1].1));
}

#[test]
fn flannel_lab_vxlan_hops_through_the_tracepoints() {
    if !vethtrace_tests::privileged("flannel_lab_vxlan_hops_through_the_tracepoints") {
        return;
    }
    let lab = Lab::create(LabKind::Flannel).expect("lab");
    let mut tracer = labtrace::tracer(&lab, AttachMode::Tracepoints);
    let (replied, paths) = probe(&lab, &mut tracer, "busybox", "nginx");
    assert!(replied);
    let req = echo(&paths, 8);
    let seq = hops(req);
    // The host veths' names are random; the rest of the path is fixed.
    assert_eq!(seq.len(), 10, "{seq:#?}");
    assert_eq!(seq[0], "busybox eth0 egress");
    assert!(seq[1].starts_with("node1 veth") && seq[1].ends_with(" ingress"));
    assert_eq!(
        seq[2..8],
        [
            "node1 cni0 ingress",
            "node1 flannel.1 egress",
            "node1 eth0 egress",
            "node2 eth0 ingress",
            "node2 flannel.1 ingress",
            "node2 cni0 egress",
        ]
    );
    assert!(seq[8].starts_with("node2 veth") && seq[8].ends_with(" egress"));
    assert_eq!(seq[9], "nginx eth0 ingress");
    for h in labtrace::flannel_underlay(req) {
        // 98-byte inner frame + 50 bytes of VXLAN over IPv4 + Ethernet.
        assert_eq!(h.len, 148);
    }
    assert_eq!(hops(echo(&paths, 0)).len(), 10);
}

#[test]
fn forward_drop_is_pinned_after_the_tracepoint_ingress_hop() {
    if !vethtrace_tests::privileged("forward_drop_is_pinned_after_the_tracepoint_ingress_hop") {
        return;
    }
    let mut lab = Lab::create(LabKind::Bridge).expect("lab");
    lab.enable(Fault::ForwardDrop).expect("fault");
    let mut tracer = labtrace::tracer(&lab, AttachMode::Tracepoints);
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
}

#[test]
fn only_registered_interfaces_are_recorded_and_forgetting_one_stops_it() {
    if !vethtrace_tests::privileged(
        "only_registered_interfaces_are_recorded_and_forgetting_one_stops_it",
    ) {
        return;
    }
    let lab = Lab::create(LabKind::Bridge).expect("lab");
    // Another lab pinging at the same time: its devices fire the same tracepoints.
    let other = Lab::create(LabKind::Bridge).expect("lab");
    let mut tracer = labtrace::tracer(&lab, AttachMode::Tracepoints);
    assert!(other
        .ping("ns01", other.addr("ns02").expect("addr"), 2)
        .expect("ping"));
    let obs = tracer.collect_until_quiet(Duration::from_millis(300), Duration::from_secs(2));
    assert!(obs.is_empty(), "saw another lab's packets: {obs:#?}");

    let node = tracer
        .attachments()
        .namespaces
        .iter()
        .find(|n| n.path == netns::named(lab.netns("node").expect("node")))
        .expect("node namespace attached")
        .clone();
    let (ifindex, _) = node
        .interfaces
        .iter()
        .find(|(_, name)| name == "br-veth02")
        .expect("br-veth02 hooked")
        .clone();
    tracer.forget_interface(node.inode, ifindex);
    assert_eq!(tracer.attachments().hooks(), 8);
    let (replied, paths) = probe(&lab, &mut tracer, "ns01", "ns02");
    assert!(replied);
    assert_eq!(
        hops(echo(&paths, 8)),
        [
            "ns01 veth01 egress",
            "node br-veth01 ingress",
            "ns02 veth02 ingress"
        ]
    );
}

/// `auto` keeps TCX for a small trace and switches to the device tracepoints past
/// AUTO_TCX_MAX_HOOKS (veth pairs added inside the lab's node namespace push it over).
#[test]
fn auto_chooses_tracepoints_only_for_many_hooks() {
    if !vethtrace_tests::privileged("auto_chooses_tracepoints_only_for_many_hooks") {
        return;
    }
    let lab = Lab::create(LabKind::Bridge).expect("lab");
    {
        let tracer = labtrace::tracer(&lab, AttachMode::Auto);
        assert_eq!(tracer.attachments().mechanisms(), [Mechanism::Tcx]);
        assert!(
            tracer.capabilities().contains("(TCX)"),
            "{}",
            tracer.capabilities()
        );
    }
    // 10 hooks so far; each pair (both ends in the node) adds 4.
    let pairs = (AUTO_TCX_MAX_HOOKS - 10) / 4 + 1;
    for i in 0..pairs {
        let (a, b) = (format!("vtxa{i}"), format!("vtxb{i}"));
        let argv = ["ip", "link", "add", &a, "type", "veth", "peer", "name", &b];
        let out = lab.exec("node", &argv).expect("ip link add");
        assert!(out.status.success(), "{out:?}");
    }
    let mut tracer = labtrace::tracer(&lab, AttachMode::Auto);
    assert_eq!(tracer.attachments().mechanisms(), [Mechanism::Tracepoints]);
    assert_eq!(tracer.attachments().hooks(), 10 + 4 * pairs);
    assert!(
        tracer.capabilities().contains("device tracepoints"),
        "{}",
        tracer.capabilities()
    );
    let (replied, paths) = probe(&lab, &mut tracer, "ns01", "ns02");
    assert!(replied);
    assert_eq!(hops(echo(&paths, 8)), BRIDGE_REQUEST);
    // Nothing was attached to any interface: no TCX program, no clsact filter in the lab.
    assert_eq!(vethtrace_tests::programs_in(&lab), Vec::<String>::new());
}

#[test]
fn hot_attach_registers_a_new_namespace() {
    if !vethtrace_tests::privileged("hot_attach_registers_a_new_namespace") {
        return;
    }
    let lab = Lab::create(LabKind::Bridge).expect("lab");
    let mut tracer = labtrace::tracer(&lab, AttachMode::Tracepoints);
    let pair = Lab::create(LabKind::Pair).expect("lab");
    let a = netns::named(pair.netns("a").expect("a"));
    let hooked = tracer
        .attach_more(&a, "a", &vethtrace::attach::Selection::default())
        .expect("attach more");
    assert_eq!(
        hooked.iter().map(|(_, n)| n.as_str()).collect::<Vec<_>>(),
        ["eth0"]
    );
    assert_eq!(tracer.attachments().hooks(), 12);
    let (replied, paths) = probe(&pair, &mut tracer, "a", "b");
    assert!(replied);
    // b is not traced: only a's two hooks.
    assert_eq!(hops(echo(&paths, 8)), ["a eth0 egress"]);
    assert_eq!(hops(echo(&paths, 0)), ["a eth0 ingress"]);
    tracer.forget_netns(vethtrace::netns::inode(&a).expect("inode"));
    assert_eq!(tracer.attachments().hooks(), 10);
    assert!(pair
        .ping("a", pair.addr("b").expect("addr"), 1)
        .expect("ping"));
    let obs = tracer.collect_until_quiet(Duration::from_millis(300), Duration::from_secs(2));
    assert!(
        obs.is_empty(),
        "a forgotten namespace still recorded: {obs:#?}"
    );
}

/// TCP data over a veth carries its payload in paged fragments (only the headers are in the
/// skb's linear part). The tc programs copy snapshots with bpf_skb_load_bytes, which reads
/// the fragments; the device tracepoints copy from the linear part only, so their snapshots
/// may be shorter, but every byte they hold must be the frame's own: never tailroom or
/// `skb_shared_info` read past the linear end.
#[test]
fn tcp_snapshots_hold_only_the_frames_bytes_in_both_modes() {
    if !vethtrace_tests::privileged("tcp_snapshots_hold_only_the_frames_bytes_in_both_modes") {
        return;
    }
    use std::io::{Read, Write};
    const PAYLOAD: u8 = 0x41;
    let lab = Lab::create(LabKind::Bridge).expect("lab");
    let dst = lab.addr("ns02").expect("addr");
    for mode in [AttachMode::Tcx, AttachMode::Tracepoints] {
        let targets = labtrace::targets(&lab);
        let mut tracer = vethtrace::tracer::Tracer::start(&vethtrace::tracer::TracerOptions {
            load: vethtrace::loader::LoadOptions {
                filter: vethtrace::filter::Filter::new(&["tcp".to_string()])
                    .expect("filter")
                    .insns,
                snapshots: true,
                netns_filter: true,
                ..Default::default()
            },
            targets,
            mode,
            ..Default::default()
        })
        .expect("tracer starts");
        let listener = netns::run_in(&netns::named(lab.netns("ns02").expect("ns02")), || {
            Ok(std::net::TcpListener::bind((dst, 0))?)
        })
        .expect("listen in ns02");
        let port = listener.local_addr().expect("bound").port();
        let receiver = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let mut got = Vec::new();
            s.read_to_end(&mut got).expect("read");
            got.len()
        });
        let mut tx = netns::run_in(&netns::named(lab.netns("ns01").expect("ns01")), || {
            Ok(std::net::TcpStream::connect((dst, port))?)
        })
        .expect("connect from ns01");
        tx.write_all(&[PAYLOAD; 60_000]).expect("send");
        drop(tx);
        assert_eq!(receiver.join().expect("receiver"), 60_000);
        let obs = tracer.collect_until_quiet(Duration::from_millis(300), Duration::from_secs(3));
        let mut data_frames = 0;
        for o in obs.iter().filter(|o| o.is_hook()) {
            let snap = o.snapshot();
            assert!(!snap.is_empty(), "{mode:?}: a hop without snapshot: {o:#?}");
            assert!(snap.len() <= o.len as usize, "{mode:?}: {o:#?}");
            // Ethernet + IPv4 (IHL) + TCP (data offset): the bytes after them are payload.
            let ihl = usize::from(snap[14] & 0x0f) * 4;
            let Some(&doff) = snap.get(14 + ihl + 12) else {
                continue;
            };
            let headers = 14 + ihl + usize::from(doff >> 4) * 4;
            if o.len as usize <= headers {
                continue; // a bare ACK or handshake segment
            }
            data_frames += 1;
            assert!(
                snap.len() >= headers,
                "{mode:?}: the headers are in the snapshot"
            );
            assert!(
                snap[headers..].iter().all(|&b| b == PAYLOAD),
                "{mode:?}: bytes that are not the payload in {} {}: {:02x?}",
                o.netns,
                o.ifname.as_deref().unwrap_or("?"),
                &snap[headers..]
            );
        }
        assert!(data_frames > 0, "{mode:?}: no TCP data frame seen");
    }
}

/// The hops of an echo request a → b when b's address is on the macvlan `mv0` over its eth0
/// ([`labtrace::macvlan_on_pair`]), and of its reply.
const MACVLAN_REQUEST: [&str; 3] = ["a eth0 egress", "b eth0 ingress", "b mv0 ingress"];
const MACVLAN_REPLY: [&str; 3] = ["b mv0 egress", "b eth0 egress", "a eth0 ingress"];

/// What the lab's interfaces carry while the device tracepoints trace the macvlan lab: the tc
/// ingress program on mv0 (the kernel cuts program names at 15 bytes), nothing else.
const MV0_TC_INGRESS: &str = "mv0 tcx ingress vethtrace_tc_in";

/// Pings b `count` times from a and returns the hops of every echo request and reply seen.
fn macvlan_pings(
    lab: &Lab,
    tracer: &mut vethtrace::tracer::Tracer,
    count: u32,
) -> [Vec<Vec<String>>; 2] {
    assert!(lab
        .ping("a", lab.addr("b").expect("addr"), count)
        .expect("ping"));
    let obs = tracer.collect_until_quiet(Duration::from_millis(300), Duration::from_secs(3));
    let paths = correlate(obs);
    [8, 0].map(|t| echoes(&paths, t).into_iter().map(hops).collect())
}

/// netif_receive_skb fires once per received packet, for the device it arrived on: a frame
/// macvlan's rx_handler hands on to the macvlan (the receive path's `another_round`) gets no
/// tracepoint for it, though tc ingress runs there. So the macvlan's ingress is hooked with
/// the tc ingress program and only its egress is left to the tracepoints: every packet shows
/// `b mv0 ingress` exactly once, and the hops are the TCX mode's. A broadcast, which macvlan
/// re-queues on mv0 with netif_rx (so the tracepoint does fire for mv0 then), too.
#[test]
fn a_macvlans_ingress_is_recorded_once_per_packet_as_with_tcx() {
    if !vethtrace_tests::privileged("a_macvlans_ingress_is_recorded_once_per_packet_as_with_tcx") {
        return;
    }
    const PINGS: u32 = 3;
    let lab = Lab::create(LabKind::Pair).expect("lab");
    labtrace::macvlan_on_pair(&lab);
    lab.exec(
        "b",
        &["sysctl", "-qw", "net.ipv4.icmp_echo_ignore_broadcasts=0"],
    )
    .expect("answer broadcast pings");
    for mode in [AttachMode::Tcx, AttachMode::Tracepoints] {
        let mut tracer = labtrace::tracer(&lab, mode);
        let [requests, replies] = macvlan_pings(&lab, &mut tracer, PINGS);
        assert_eq!(
            requests,
            vec![MACVLAN_REQUEST.to_vec(); PINGS as usize],
            "{mode:?}"
        );
        assert_eq!(
            replies,
            vec![MACVLAN_REPLY.to_vec(); PINGS as usize],
            "{mode:?}"
        );
        assert_eq!(tracer.counters().expect("counters").lost, 0);

        // The broadcast reaches eth0 and, re-queued, mv0: once each in b. (What a records of
        // its own broadcast differs between the modes, whatever the devices: not asserted.)
        lab.exec("a", &["ping", "-b", "-c", "1", "-W", "1", "10.0.0.255"])
            .expect("broadcast ping");
        let obs = tracer.collect_until_quiet(Duration::from_millis(300), Duration::from_secs(3));
        let paths = correlate(obs);
        let request = echoes(&paths, 8);
        assert_eq!(request.len(), 1, "{mode:?}: {paths:#?}");
        let in_b: Vec<String> = hops(request[0])
            .into_iter()
            .filter(|h| h.starts_with("b "))
            .collect();
        assert_eq!(in_b, ["b eth0 ingress", "b mv0 ingress"], "{mode:?}");
        // a eth0, b eth0 and b mv0, both directions.
        assert_eq!(tracer.attachments().hooks(), 6, "{mode:?}");
        if mode == AttachMode::Tracepoints {
            assert_eq!(
                tracer.attachments().mechanisms(),
                [Mechanism::Tcx, Mechanism::Tracepoints]
            );
            let caps = tracer.capabilities();
            assert!(
                caps.starts_with(
                    "6 hooks on 3 interfaces in 2 namespaces (device tracepoints \
                     netif_receive_skb/net_dev_queue; TCX ingress on 1 upper device: b mv0), "
                ),
                "{caps}"
            );
            assert_eq!(vethtrace_tests::programs_in(&lab), [MV0_TC_INGRESS]);
        }
    }
    assert_eq!(vethtrace_tests::programs_in(&lab), Vec::<String>::new());
}

/// A namespace with a macvlan that appears while the device tracepoints trace (the trace
/// started without any upper device, so without the tc ingress program) gets the macvlan's
/// tc ingress hook then; forgetting the macvlan, or its namespace, detaches it at once and
/// stops its egress too; a macvlan appearing in a traced namespace is hooked the same way.
#[test]
fn a_hot_attached_macvlan_gets_tc_ingress_and_forgetting_it_detaches_it() {
    if !vethtrace_tests::privileged(
        "a_hot_attached_macvlan_gets_tc_ingress_and_forgetting_it_detaches_it",
    ) {
        return;
    }
    let first = Lab::create(LabKind::Pair).expect("lab");
    let mut tracer = labtrace::tracer(&first, AttachMode::Tracepoints);
    assert_eq!(tracer.attachments().mechanisms(), [Mechanism::Tracepoints]);
    let lab = Lab::create(LabKind::Pair).expect("lab");
    labtrace::macvlan_on_pair(&lab);
    let a = netns::named(lab.netns("a").expect("a"));
    let b = netns::named(lab.netns("b").expect("b"));
    let b_inode = netns::inode(&b).expect("inode");
    for (path, name) in [(&a, "a"), (&b, "b")] {
        tracer
            .attach_more(path, name, &Selection::default())
            .expect("attach more");
    }
    // The first lab's two interfaces, then a eth0, b eth0 and b mv0.
    assert_eq!(tracer.attachments().hooks(), 4 + 6);
    assert_eq!(vethtrace_tests::programs_in(&lab), [MV0_TC_INGRESS]);
    let caps = tracer.capabilities();
    assert!(
        caps.contains("(device tracepoints netif_receive_skb/net_dev_queue; TCX ingress on 1 upper device: b mv0)"),
        "{caps}"
    );
    let [requests, replies] = macvlan_pings(&lab, &mut tracer, 1);
    assert_eq!(requests, [MACVLAN_REQUEST]);
    assert_eq!(replies, [MACVLAN_REPLY]);

    // Forgotten while it still exists: its TCX link goes, and its HOOKS key.
    let (mv0, _) = tracer
        .attachments()
        .namespaces
        .iter()
        .find(|n| n.inode == b_inode)
        .and_then(|n| n.interfaces.iter().find(|(_, name)| name == "mv0"))
        .expect("mv0 hooked")
        .clone();
    tracer.forget_interface(b_inode, mv0);
    assert_eq!(tracer.attachments().hooks(), 4 + 4);
    assert_eq!(vethtrace_tests::programs_in(&lab), Vec::<String>::new());
    assert!(
        tracer
            .capabilities()
            .contains("(device tracepoints netif_receive_skb/net_dev_queue)"),
        "{}",
        tracer.capabilities()
    );
    let [requests, replies] = macvlan_pings(&lab, &mut tracer, 1);
    assert_eq!(requests, [["a eth0 egress", "b eth0 ingress"]]);
    assert_eq!(replies, [["b eth0 egress", "a eth0 ingress"]]);

    // Back as a new link of a traced namespace, then the whole namespace goes.
    let only_mv0 = Selection {
        ifnames: vec!["mv0".to_string()],
    };
    let hooked = tracer.attach_more(&b, "b", &only_mv0).expect("attach mv0");
    assert_eq!(hooked, [(mv0, "mv0".to_string())]);
    assert_eq!(vethtrace_tests::programs_in(&lab), [MV0_TC_INGRESS]);
    let [requests, _] = macvlan_pings(&lab, &mut tracer, 1);
    assert_eq!(requests, [MACVLAN_REQUEST]);
    tracer.forget_netns(b_inode);
    assert_eq!(tracer.attachments().hooks(), 4 + 2);
    assert_eq!(vethtrace_tests::programs_in(&lab), Vec::<String>::new());
    let [requests, replies] = macvlan_pings(&lab, &mut tracer, 1);
    assert_eq!(requests, [["a eth0 egress"]]);
    assert_eq!(replies, [["a eth0 ingress"]]);
}
