//! The netfilter layer (fentry/fexit nft_do_chain) end to end, on the bridge lab (namespaces
//! only, removed by the lab's Drop). Where the kernel lets the layer attach: the chain's
//! verdict joins its packet before the NETFILTER_DROP drop, and `vethtrace ping --json`
//! attributes the drop from it, also for an nftables table iptables cannot show. Where it
//! cannot (no nf_tables in BTF, or trampolines refused: the kernel this project is developed
//! on answers EPERM to any fentry/fexit load), the capability line says why and tracing,
//! drops and counter-based attribution go on unchanged. `VETHTRACE_NETFILTER=off` skips the
//! layer on any kernel.

use std::{process::Command, time::Duration};

use serde_json::Value;
use vethtrace::{
    btf::KernelBtf,
    correlate::{correlate, PacketPath},
    decode::{Observation, What},
    lab::{Fault, Lab, LabKind},
    loader::{self, LoadOptions, NetfilterLayer, NETFILTER_ENV},
    render,
    tracer::Tracer,
};

/// Whether the layer attaches on this kernel, as the loader finds out (the test process
/// runs without `VETHTRACE_NETFILTER`). Either way the tests below check what must hold.
fn layer_available() -> bool {
    // The namespace filter on and no namespace registered: nothing is recorded meanwhile.
    let loaded = loader::load(&LoadOptions {
        drops: true,
        netns_filter: true,
        ..LoadOptions::default()
    })
    .expect("programs load");
    match &loaded.netfilter_layer {
        NetfilterLayer::NftDoChain(_) => true,
        NetfilterLayer::Unavailable(why) => {
            eprintln!("netfilter layer unavailable on this kernel: {why}");
            // Unavailable only for a reason: the BTF says why, or loading said why.
            assert!(!why.is_empty());
            false
        }
        NetfilterLayer::Off => panic!("{NETFILTER_ENV} must not be set for these tests"),
    }
}

/// The BTF side of the layer works wherever nf_tables is built in: offsets found.
fn btf_has_nf_tables() -> bool {
    KernelBtf::load().is_ok_and(|b| b.has_function("nft_do_chain") && b.nf_offsets().is_ok())
}

fn trace_lab(lab: &Lab) -> Tracer {
    vethtrace_tests::labtrace::tracer(lab, vethtrace::attach::AttachMode::Auto)
}

fn echo_request(paths: &[PacketPath]) -> &PacketPath {
    let m: Vec<&PacketPath> = paths.iter().filter(|p| p.flow().icmp_type == 8).collect();
    assert_eq!(m.len(), 1, "one echo request: {paths:#?}");
    m[0]
}

#[test]
fn forward_drop_shows_the_chains_verdict_before_the_drop() {
    if !vethtrace_tests::privileged("forward_drop_shows_the_chains_verdict_before_the_drop") {
        return;
    }
    let available = layer_available();
    let mut lab = Lab::create(LabKind::Bridge).expect("lab");
    lab.enable(Fault::ForwardDrop).expect("fault");
    let mut tracer = trace_lab(&lab);
    let caps = tracer.capabilities();
    assert!(
        caps.contains(", drops via tp_btf skb:kfree_skb, netfilter "),
        "one capability line with both layers: {caps}"
    );
    assert_eq!(
        available,
        matches!(tracer.netfilter_layer(), NetfilterLayer::NftDoChain(_)),
        "{caps}"
    );
    assert!(!lab
        .ping("ns01", lab.addr("ns02").expect("addr"), 1)
        .expect("ping"));
    let obs = tracer.collect_until_quiet(Duration::from_millis(300), Duration::from_secs(3));
    let paths = correlate(obs);
    let p = echo_request(&paths);
    // Tracing is the same with or without the layer: the hops, then the drop.
    let at = |f: &dyn Fn(&Observation) -> bool| p.hops.iter().position(f);
    let ingress = at(&|h| h.is_hook() && h.netns == "node").expect("ingress in node");
    let drop = at(&|h| h.is_drop()).expect("dropped");
    assert!(matches!(&p.hops[drop].what, What::Drop { reason, .. } if reason == "NETFILTER_DROP"));
    assert_eq!(p.hops[drop].netns, "node");
    let verdicts: Vec<&Observation> = p.hops.iter().filter(|h| h.is_netfilter()).collect();
    if !available {
        assert!(caps.ends_with(")"), "{caps}");
        assert!(caps.contains("netfilter layer unavailable ("), "{caps}");
        assert!(verdicts.is_empty(), "{p:#?}");
        return;
    }
    assert!(
        caps.ends_with(
            ", drops via tp_btf skb:kfree_skb, netfilter verdicts via fentry/fexit nft_do_chain"
        ),
        "{caps}"
    );
    assert_eq!(
        verdicts.len(),
        1,
        "one DROP verdict (accepts are off): {p:#?}"
    );
    let v = verdicts[0];
    assert_eq!(
        v.what,
        What::netfilter("ip", "FORWARD", "filter", "FORWARD", "DROP")
    );
    assert_eq!(v.netns, "node");
    assert!(!v.is_hook() && !v.is_drop());
    // In order: after the ingress on the bridge port, before the drop it explains.
    let verdict = at(&|h| h.is_netfilter()).expect("verdict");
    assert!(ingress < verdict && verdict < drop, "{p:#?}");
    // Rendered: a text line and an NDJSON `netfilter` object.
    let mut text = Vec::new();
    render::text::packet(&mut text, p, "").expect("text");
    let text = String::from_utf8(text).expect("utf8");
    assert!(
        text.contains("· netfilter in node: filter FORWARD (ip FORWARD hook) → DROP"),
        "{text}"
    );
    let mut json = Vec::new();
    render::json::packet(&mut json, 1, p).expect("json");
    let lines: Vec<Value> = String::from_utf8(json)
        .expect("utf8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let n = lines
        .iter()
        .find(|l| l["type"] == "netfilter")
        .expect("a netfilter line");
    assert_eq!(
        (
            &n["family"],
            &n["hook"],
            &n["table"],
            &n["chain"],
            &n["verdict"]
        ),
        (
            &Value::from("ip"),
            &Value::from("FORWARD"),
            &Value::from("filter"),
            &Value::from("FORWARD"),
            &Value::from("DROP")
        )
    );
    // Only the lab's namespaces: the namespace filter applies to verdicts too.
    assert!(paths
        .iter()
        .flat_map(|p| &p.hops)
        .all(|h| ["ns01", "ns02", "node"].contains(&h.netns.as_str())));
}

/// `vethtrace ping --json` from ns01 to ns02 (the lab's namespaces only), with `env` set;
/// the exit code, the text or NDJSON lines.
fn ping(lab: &Lab, json: bool, env: Option<&str>) -> (Option<i32>, String) {
    let mut cmd = Command::new(vethtrace_tests::binary());
    cmd.args(["ping", "192.168.88.12", "-c", "1", "-W", "1"]);
    if json {
        cmd.arg("--json");
    }
    cmd.args(["--from", lab.netns("ns01").expect("role")]);
    for (_, ns) in lab.roles() {
        cmd.args(["--netns", ns]);
    }
    match env {
        Some(v) => cmd.env(NETFILTER_ENV, v),
        None => cmd.env_remove(NETFILTER_ENV),
    };
    let out = cmd.output().expect("vethtrace ping runs");
    assert_ne!(
        out.status.code(),
        Some(2),
        "error: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn result(stdout: &str) -> Value {
    stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("NDJSON"))
        .find(|l| l["type"] == "result")
        .unwrap_or_else(|| panic!("no result line: {stdout}"))
}

#[test]
fn ping_attributes_the_forward_drop_from_the_layer_and_degrades_without_it() {
    if !vethtrace_tests::privileged(
        "ping_attributes_the_forward_drop_from_the_layer_and_degrades_without_it",
    ) {
        return;
    }
    let available = layer_available();
    let mut lab = Lab::create(LabKind::Bridge).expect("lab");
    lab.enable(Fault::ForwardDrop).expect("fault");
    let (code, text) = ping(&lab, false, None);
    assert_eq!(code, Some(1), "{text}");
    let header = text.lines().next().unwrap_or_default();
    assert!(
        header.contains(if available {
            ", drops via tp_btf skb:kfree_skb, netfilter verdicts via fentry/fexit nft_do_chain"
        } else {
            ", drops via tp_btf skb:kfree_skb, netfilter layer unavailable ("
        }),
        "{header}"
    );
    let (code, out) = ping(&lab, true, None);
    assert_eq!(code, Some(1));
    let r = result(&out);
    assert_eq!(r["status"], "dropped");
    assert_eq!(r["drop"]["reason"], "NETFILTER_DROP");
    let nf = &r["drop"]["netfilter"];
    assert_eq!(nf["hook"], "FORWARD", "{r}");
    assert_eq!(nf["table"], "filter");
    assert_eq!(nf["chain"], "FORWARD");
    assert!(
        nf["verdict"].as_str().is_some_and(|v| v.contains("DROP")),
        "{r}"
    );
    assert_eq!(r["findings"][0]["code"], "forward-drop", "{r}");
    let evidence = r["findings"][0]["evidence"].as_str().unwrap_or_default();
    assert_eq!(
        evidence.contains("nft_do_chain returned DROP for filter FORWARD (ip FORWARD hook)"),
        available,
        "{evidence}"
    );

    // The layer skipped: the capability line says so, the probe is still traced, dropped
    // and attributed (from the counters).
    let (code, text) = ping(&lab, false, Some("off"));
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.lines()
            .next()
            .is_some_and(|h| h.ends_with(", drops via tp_btf skb:kfree_skb, netfilter layer off")),
        "{text}"
    );
    assert!(text.contains("✗ NETFILTER_DROP in"), "{text}");
    let (_, out) = ping(&lab, true, Some("off"));
    let r = result(&out);
    assert_eq!(r["drop"]["reason"], "NETFILTER_DROP");
    assert_eq!(r["drop"]["netfilter"]["table"], "filter");
    assert_eq!(r["drop"]["netfilter"]["verdict"], "policy DROP");
    assert!(r["findings"][0]["evidence"]
        .as_str()
        .is_some_and(|e| !e.contains("nft_do_chain returned")));
}

#[test]
fn an_nftables_table_iptables_cannot_show_is_named_by_the_layer() {
    if !vethtrace_tests::privileged("an_nftables_table_iptables_cannot_show_is_named_by_the_layer")
    {
        return;
    }
    let available = layer_available();
    let mut lab = Lab::create(LabKind::Bridge).expect("lab");
    // br_netfilter on, the iptables FORWARD policy back to ACCEPT, and an nftables table of
    // its own dropping echo requests at the forward hook: all inside the lab's node.
    lab.enable(Fault::ForwardDrop).expect("fault");
    for argv in [
        &["iptables", "-P", "FORWARD", "ACCEPT"][..],
        &["nft", "add", "table", "inet", "vtfw"],
        &[
            "nft",
            "add chain inet vtfw vtchain { type filter hook forward priority 0; policy accept; }",
        ],
        &[
            "nft",
            "add",
            "rule",
            "inet",
            "vtfw",
            "vtchain",
            "icmp",
            "type",
            "echo-request",
            "drop",
        ],
    ] {
        let out = lab.exec("node", argv).expect("runs");
        assert!(
            out.status.success(),
            "{argv:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (code, out) = ping(&lab, true, None);
    assert_eq!(code, Some(1), "{out}");
    let r = result(&out);
    assert_eq!(r["drop"]["reason"], "NETFILTER_DROP", "{r}");
    assert_eq!(r["findings"][0]["code"], "netfilter-drop", "{r}");
    if !available {
        // Without the layer the counters cannot tell: the reason stands alone.
        assert_eq!(r["drop"]["netfilter"], Value::Null, "{r}");
        return;
    }
    let nf = &r["drop"]["netfilter"];
    assert_eq!(
        (&nf["hook"], &nf["table"], &nf["chain"], &nf["verdict"]),
        (
            &Value::from("FORWARD"),
            &Value::from("vtfw"),
            &Value::from("vtchain"),
            &Value::from("DROP")
        ),
        "{r}"
    );
    assert_eq!(nf["rule"], Value::Null);
    assert!(r["findings"][0]["fix"]
        .as_str()
        .is_some_and(|f| f.contains("nft -a list ruleset")));
    // Without the layer the counters cannot tell: the reason stands alone.
    let (_, out) = ping(&lab, true, Some("off"));
    let r = result(&out);
    assert_eq!(r["drop"]["reason"], "NETFILTER_DROP", "{r}");
    assert_eq!(r["drop"]["netfilter"], Value::Null, "{r}");
}

#[test]
fn the_layers_btf_side_is_found_where_nf_tables_is_built_in() {
    // Unprivileged: only reads /sys/kernel/btf/vmlinux.
    let Ok(btf) = KernelBtf::load() else {
        eprintln!("skipped: no kernel BTF");
        return;
    };
    if !btf.has_function("nft_do_chain") {
        let why = btf
            .nf_offsets()
            .expect_err("no nf_tables: an error saying so");
        eprintln!("nf_tables not in vmlinux: {why:#}");
        return;
    }
    assert!(btf_has_nf_tables());
    let n = btf.nf_offsets().expect("offsets");
    assert_eq!(n.valid, 1);
}
