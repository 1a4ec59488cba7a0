//! Decoding: a raw kernel [`Event`] becomes an [`Observation`] with names: the namespace's
//! display name (from its netns cookie) and the interface's name (from namespace + ifindex,
//! since ifindexes collide across namespaces); a netfilter verdict ([`NetfilterEvent`]) gets
//! its family, hook and verdict named. Pure: names come in through [`Names`].

use std::{mem::MaybeUninit, sync::LazyLock};

use vethtrace_common::{flag, hook, kind, nf, Event, Flow, NetfilterEvent};

use crate::{btf::DropReasons, kallsyms::Kallsyms};

pub use crate::name::Name;

/// Maps keyed by netns cookies and ifindexes: foldhash instead of SipHash, since the keys
/// come from our own kernel programs (no flooding risk worth SipHash's cost per event).
type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Namespace and interface names, keyed the way events identify them.
///
/// Names are interned ([`Name::interned`]): the topology's names are few, and every event then
/// shares them without touching a reference count. Each interface's entry also holds its
/// namespace's name, so that decoding a hop costs one lookup.
#[derive(Debug, Clone, Default)]
pub struct Names {
    netns: FastMap<u64, Name>,
    ifaces: FastMap<(u64, u32), Place>,
}

/// An interface's name and its namespace's.
#[derive(Debug, Clone)]
struct Place {
    netns: Name,
    ifname: Name,
}

impl Names {
    /// Records a namespace's display name under its netns cookie.
    pub fn add_netns(&mut self, cookie: u64, name: impl Into<String>) {
        let name = Name::interned(&name.into());
        for (_, p) in self.ifaces.iter_mut().filter(|((c, _), _)| *c == cookie) {
            p.netns = name.clone();
        }
        self.netns.insert(cookie, name);
    }

    pub fn add_interface(&mut self, cookie: u64, ifindex: u32, name: impl Into<String>) {
        let place = Place {
            netns: self.netns_name(cookie),
            ifname: Name::interned(&name.into()),
        };
        self.ifaces.insert((cookie, ifindex), place);
    }

    /// The namespace's name, or `netns:<cookie>` for one we never saw.
    pub fn netns(&self, cookie: u64) -> String {
        self.netns_name(cookie).to_string()
    }

    /// [`Names::netns`], shared rather than copied.
    pub fn netns_name(&self, cookie: u64) -> Name {
        self.netns
            .get(&cookie)
            .cloned()
            .unwrap_or_else(|| Name::from(format!("netns:{cookie}")))
    }

    pub fn interface(&self, cookie: u64, ifindex: u32) -> Option<&str> {
        self.interface_name(cookie, ifindex).map(Name::as_str)
    }

    /// [`Names::interface`], shared rather than copied.
    pub fn interface_name(&self, cookie: u64, ifindex: u32) -> Option<&Name> {
        self.ifaces.get(&(cookie, ifindex)).map(|p| &p.ifname)
    }

    /// The names of a hop's namespace and device: `netns:<cookie>` and `if<ifindex>` for
    /// those we never saw.
    #[inline]
    fn place(&self, cookie: u64, ifindex: u32) -> (Name, Name) {
        match self.ifaces.get(&(cookie, ifindex)) {
            Some(p) => (p.netns.clone(), p.ifname.clone()),
            None => (self.netns_name(cookie), Name::from(format!("if{ifindex}"))),
        }
    }
}

/// Direction at a tc hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dir {
    Ingress,
    Egress,
}

impl std::fmt::Display for Dir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dir::Ingress => "ingress",
            Dir::Egress => "egress",
        })
    }
}

/// What happened at an observation point. Its names are [`Name`]s (one word each) and the
/// rare netfilter verdict is boxed, so that an observation stays small (128 bytes): the
/// correlator holds every hop of the last tens of milliseconds, and its speed is
/// bounded by how many bytes that is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// Seen by the tc hook of an interface.
    Hook(Dir),
    /// Freed by the kernel with a drop reason, at `location` (symbolized).
    Drop { reason: Name, location: Name },
    /// Freed with a drop reason that does not mean the packet was lost (see [`benign_drop`]).
    Freed {
        reason: Name,
        location: Name,
        why: Benign,
    },
    /// The verdict of a netfilter base chain on the packet (fentry/fexit nft_do_chain). Not a hop
    /// and not a drop: it joins its packet's path (and precedes the NETFILTER_DROP drop when
    /// the verdict is `DROP`).
    Netfilter(Box<NfVerdict>),
}

/// Where and what a netfilter base chain decided ([`What::Netfilter`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfVerdict {
    /// nft's family name: `ip`, `ip6`, `inet`, `bridge`, `arp`, `netdev`.
    pub family: Name,
    /// The hook, by the family's names: `FORWARD`, `INPUT`, …
    pub hook: Name,
    pub table: Name,
    pub chain: Name,
    /// `DROP`, `ACCEPT`, `STOLEN`, `QUEUE`, `REPEAT`, `STOP`.
    pub verdict: Name,
}

impl NfVerdict {
    /// `filter FORWARD (ip FORWARD hook)`: the chain and where it hooks.
    pub fn chain_text(&self) -> String {
        format!(
            "{} {} ({} {} hook)",
            self.table, self.chain, self.family, self.hook
        )
    }

    /// Every field with its name, in the order NDJSON writes them.
    pub fn fields(&self) -> [(&'static str, &Name); 5] {
        [
            ("family", &self.family),
            ("hook", &self.hook),
            ("table", &self.table),
            ("chain", &self.chain),
            ("verdict", &self.verdict),
        ]
    }
}

impl What {
    /// A netfilter verdict (tests and fixtures build them field by field).
    pub fn netfilter(
        family: impl Into<Name>,
        hook: impl Into<Name>,
        table: impl Into<Name>,
        chain: impl Into<Name>,
        verdict: impl Into<Name>,
    ) -> What {
        What::Netfilter(Box::new(NfVerdict {
            family: family.into(),
            hook: hook.into(),
            table: table.into(),
            chain: chain.into(),
            verdict: verdict.into(),
        }))
    }

    /// A netfilter verdict that dropped the packet.
    pub fn is_nf_drop(&self) -> bool {
        matches!(self, What::Netfilter(v) if v.verdict == "DROP")
    }
}

/// Why a free with a drop reason did not lose the packet ([`benign_drop`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Benign {
    /// An ICMP echo reply that a raw socket got as a clone: the original found no ICMP
    /// datagram socket.
    RawSocketCopy,
}

impl Benign {
    pub fn as_str(self) -> &'static str {
        match self {
            Benign::RawSocketCopy => {
                "no ICMP datagram socket wanted it; raw sockets (ping as root) got a copy"
            }
        }
    }
}

impl std::fmt::Display for Benign {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A fixed table's names, interned once: naming a verdict then copies a pointer.
struct Table<const N: usize>(LazyLock<[Name; N]>);

impl<const N: usize> Table<N> {
    const fn new(f: fn() -> [Name; N]) -> Self {
        Table(LazyLock::new(f))
    }

    fn get(&self, i: usize) -> Option<Name> {
        self.0.get(i).cloned()
    }
}

fn interned<const N: usize>(names: [&str; N]) -> [Name; N] {
    names.map(Name::interned)
}

/// nft's name of an `NFPROTO_*` family.
pub fn nf_family_name(pf: u8) -> Name {
    static FAMILIES: Table<6> =
        Table::new(|| interned(["inet", "ip", "arp", "netdev", "bridge", "ip6"]));
    let i = match pf {
        nf::proto::INET => 0,
        nf::proto::IPV4 => 1,
        nf::proto::ARP => 2,
        nf::proto::NETDEV => 3,
        nf::proto::BRIDGE => 4,
        nf::proto::IPV6 => 5,
        _ => usize::MAX,
    };
    FAMILIES
        .get(i)
        .unwrap_or_else(|| Name::from(format!("family {pf}")))
}

/// The name of hook `hook` of family `pf`, as iptables/ebtables/arptables spell the built-in
/// chains (`enum nf_inet_hooks`, `nf_br_hooks`, `NF_ARP_*`, `nf_dev_hooks`).
pub fn nf_hook_name(pf: u8, hook: u8) -> Name {
    static INET: Table<6> = Table::new(|| {
        interned([
            "PREROUTING",
            "INPUT",
            "FORWARD",
            "OUTPUT",
            "POSTROUTING",
            "INGRESS",
        ])
    });
    static BRIDGE: Table<6> = Table::new(|| {
        interned([
            "PREROUTING",
            "INPUT",
            "FORWARD",
            "OUTPUT",
            "POSTROUTING",
            "BROUTING",
        ])
    });
    static ARP: Table<3> = Table::new(|| interned(["INPUT", "OUTPUT", "FORWARD"]));
    static NETDEV: Table<2> = Table::new(|| interned(["INGRESS", "EGRESS"]));
    let i = hook as usize;
    let name = match pf {
        nf::proto::INET | nf::proto::IPV4 | nf::proto::IPV6 => INET.get(i),
        nf::proto::BRIDGE => BRIDGE.get(i),
        nf::proto::ARP => ARP.get(i),
        nf::proto::NETDEV => NETDEV.get(i),
        _ => None,
    };
    name.unwrap_or_else(|| Name::from(format!("hook {hook}")))
}

/// The name of a netfilter verdict: `DROP` for every drop ([`nf::dropped`]: also the
/// `NF_STOLEN` with an errno nftables returns after freeing a dropped packet), else the low
/// byte's name.
pub fn nf_verdict_name(verdict: u32) -> Name {
    static VERDICTS: Table<6> =
        Table::new(|| interned(["DROP", "ACCEPT", "STOLEN", "QUEUE", "REPEAT", "STOP"]));
    let v = verdict & nf::VERDICT_MASK;
    let i = if nf::dropped(verdict) {
        0
    } else {
        match v {
            nf::DROP => 0,
            nf::ACCEPT => 1,
            nf::STOLEN => 2,
            nf::QUEUE => 3,
            nf::REPEAT => 4,
            nf::STOP => 5,
            _ => usize::MAX,
        }
    };
    VERDICTS
        .get(i)
        .unwrap_or_else(|| Name::from(format!("verdict {v}")))
}

/// One decoded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub ts_ns: u64,
    pub netns: Name,
    pub ifindex: u32,
    pub ifname: Option<Name>,
    pub what: What,
    pub len: u32,
    pub mark: u32,
    pub outer: Flow,
    /// The inner flow of a VXLAN frame, the snapshot, the truncated flag: see the accessors
    /// ([`Observation::inner`], [`Observation::snapshot`], [`Observation::truncated`]).
    pub extras: Extras,
}

/// What few observations carry, behind one pointer that is null for most: the packet inside a
/// VXLAN frame, the packet's first bytes (`-w FILE.pcapng`), whether parsing stopped early.
/// Inline they made an observation 192 bytes instead of 128, and decoding + correlating is
/// bounded by the bytes written and read back (`cargo xtask bench`, figure 5).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Extras(Option<Box<ExtraFields>>);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ExtraFields {
    inner: Option<Flow>,
    truncated: bool,
    snapshot: Vec<u8>,
    snapshot_l3: bool,
}

impl Extras {
    /// The extras, boxed only when one of them is set (so that equal extras compare equal).
    #[inline]
    pub fn new(inner: Option<Flow>, truncated: bool, snapshot: Vec<u8>, snapshot_l3: bool) -> Self {
        // Most observations: nothing to box, decided without building the fields.
        if inner.is_none() && !truncated && snapshot.is_empty() && !snapshot_l3 {
            return Extras(None);
        }
        let fields = ExtraFields {
            inner,
            truncated,
            snapshot,
            snapshot_l3,
        };
        Extras((fields != ExtraFields::default()).then(|| Box::new(fields)))
    }

    fn fields(&self) -> Option<&ExtraFields> {
        self.0.as_deref()
    }

    /// Changes them with `f`, keeping the box only if one is still set.
    fn update(&mut self, f: impl FnOnce(&mut ExtraFields)) {
        let mut fields = self.0.take().map(|b| *b).unwrap_or_default();
        f(&mut fields);
        *self = Extras::new(
            fields.inner,
            fields.truncated,
            fields.snapshot,
            fields.snapshot_l3,
        );
    }
}

/// As the fields would print inline.
impl std::fmt::Debug for Extras {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let none = ExtraFields::default();
        let e = self.fields().unwrap_or(&none);
        f.debug_struct("Extras")
            .field("inner", &e.inner)
            .field("truncated", &e.truncated)
            .field("snapshot", &e.snapshot)
            .field("snapshot_l3", &e.snapshot_l3)
            .finish()
    }
}

impl Observation {
    /// The packet's identity: the inner flow for encapsulated frames.
    pub fn flow(&self) -> &Flow {
        self.inner().unwrap_or(&self.outer)
    }

    /// The encapsulated packet when the frame was VXLAN.
    pub fn inner(&self) -> Option<&Flow> {
        self.extras.fields().and_then(|e| e.inner.as_ref())
    }

    pub fn set_inner(&mut self, inner: Option<Flow>) {
        self.extras.update(|e| e.inner = inner);
    }

    /// Parsing stopped early because the frame ended inside a header.
    pub fn truncated(&self) -> bool {
        self.extras.fields().is_some_and(|e| e.truncated)
    }

    pub fn set_truncated(&mut self, truncated: bool) {
        self.extras.update(|e| e.truncated = truncated);
    }

    /// The packet's first bytes when snapshots are on (empty otherwise).
    pub fn snapshot(&self) -> &[u8] {
        self.extras.fields().map_or(&[], |e| &e.snapshot)
    }

    /// The snapshot starts at the network header (drops), not at the Ethernet header.
    pub fn snapshot_l3(&self) -> bool {
        self.extras.fields().is_some_and(|e| e.snapshot_l3)
    }

    pub fn set_snapshot(&mut self, snapshot: Vec<u8>, l3: bool) {
        self.extras.update(|e| {
            e.snapshot = snapshot;
            e.snapshot_l3 = l3;
        });
    }

    /// A real drop (not a benign free).
    pub fn is_drop(&self) -> bool {
        matches!(self.what, What::Drop { .. })
    }

    /// Seen by a tc hook (not a drop, free or netfilter verdict).
    pub fn is_hook(&self) -> bool {
        matches!(self.what, What::Hook(_))
    }

    /// A netfilter verdict.
    pub fn is_netfilter(&self) -> bool {
        matches!(self.what, What::Netfilter(_))
    }
}

/// Context needed to name what an event points at.
pub struct Decoder<'a> {
    pub names: &'a Names,
    pub reasons: &'a DropReasons,
    pub kallsyms: &'a Kallsyms,
}

impl Decoder<'_> {
    /// Decodes a record (the event and any snapshot that follows it).
    ///
    /// `ev` is the record's header as [`Event::decode`] returned it, which for a netfilter
    /// verdict checked that the whole [`NetfilterEvent`] is there.
    pub fn decode_record(&self, ev: &Event, record: &[u8]) -> Observation {
        if ev.kind == kind::NETFILTER {
            if let Ok(nf) = NetfilterEvent::decode(record) {
                return self.decode_netfilter(&nf);
            }
        }
        self.observation(
            ev,
            Self::snapshot(ev, record),
            ev.flags & flag::SNAP_L3 != 0,
        )
    }

    /// [`Decoder::decode_record`] written into `out` (the correlator's room for the hop), so
    /// that the observation is built where it stays instead of built and then copied.
    pub fn decode_record_into<'o>(
        &self,
        ev: &Event,
        record: &[u8],
        out: &'o mut MaybeUninit<Observation>,
    ) -> &'o mut Observation {
        if ev.kind == kind::NETFILTER {
            if let Ok(nf) = NetfilterEvent::decode(record) {
                return out.write(self.decode_netfilter(&nf));
            }
        }
        out.write(self.observation(
            ev,
            Self::snapshot(ev, record),
            ev.flags & flag::SNAP_L3 != 0,
        ))
    }

    /// The packet's first bytes that follow the record; most records carry none (only
    /// `-w FILE.pcapng` asks for them).
    fn snapshot(ev: &Event, record: &[u8]) -> Vec<u8> {
        if ev.snap_len == 0 {
            Vec::new()
        } else {
            ev.snapshot(record).to_vec()
        }
    }

    /// A netfilter verdict, with its packet's namespace, device and flows.
    pub fn decode_netfilter(&self, nf: &NetfilterEvent) -> Observation {
        let what = What::Netfilter(Box::new(NfVerdict {
            family: nf_family_name(nf.family),
            hook: nf_hook_name(nf.family, nf.hook),
            table: Name::from(nf.table_name()),
            chain: Name::from(nf.chain_name()),
            verdict: nf_verdict_name(nf.verdict),
        }));
        self.observation_of(&nf.event, what, Vec::new(), false)
    }

    pub fn decode(&self, ev: &Event) -> Observation {
        self.observation(ev, Vec::new(), false)
    }

    /// The observation built in place (decoding runs per event): always inlined, so that the
    /// struct is written straight into the caller's destination.
    #[inline(always)]
    fn observation(&self, ev: &Event, snapshot: Vec<u8>, snapshot_l3: bool) -> Observation {
        self.observation_of(ev, self.what(ev), snapshot, snapshot_l3)
    }

    /// What the event says happened; a netfilter verdict's names are in the rest of its record
    /// ([`Decoder::decode_netfilter`]), so from the header alone they are empty.
    #[inline(always)]
    fn what(&self, ev: &Event) -> What {
        match ev.hook {
            hook::TC_INGRESS => What::Hook(Dir::Ingress),
            hook::TC_EGRESS => What::Hook(Dir::Egress),
            hook::NFT_DO_CHAIN => What::netfilter(
                Name::default(),
                Name::default(),
                Name::default(),
                Name::default(),
                Name::default(),
            ),
            _ => {
                let reason = self.reasons.name(ev.drop_reason);
                let location = self.kallsyms.symbolize(ev.location);
                let flow = if ev.flags & flag::ENCAP != 0 {
                    &ev.inner
                } else {
                    &ev.outer
                };
                let why = benign_drop(&reason, &location, flow);
                let (reason, location) = (Name::from(reason), Name::from(location));
                match why {
                    Some(why) => What::Freed {
                        reason,
                        location,
                        why,
                    },
                    None => What::Drop { reason, location },
                }
            }
        }
    }

    /// [`Decoder::observation`] with `what` given.
    #[inline(always)]
    fn observation_of(
        &self,
        ev: &Event,
        what: What,
        snapshot: Vec<u8>,
        snapshot_l3: bool,
    ) -> Observation {
        let (netns, ifname) = if ev.flags & flag::NO_DEVICE != 0 {
            (self.names.netns_name(ev.netns_cookie), None)
        } else {
            let (netns, ifname) = self.names.place(ev.netns_cookie, ev.ifindex);
            (netns, Some(ifname))
        };
        Observation {
            ts_ns: ev.ts_ns,
            netns,
            ifindex: ev.ifindex,
            ifname,
            what,
            len: ev.len,
            mark: ev.mark,
            outer: ev.outer,
            extras: Extras::new(
                (ev.flags & flag::ENCAP != 0).then_some(ev.inner),
                ev.flags & flag::TRUNCATED != 0,
                snapshot,
                snapshot_l3,
            ),
        }
    }
}

/// Drop reasons that do not mean the packet was lost. An ICMP echo reply arriving for a raw
/// socket (iputils `ping` as root) is delivered to that socket as a clone; the original then
/// finds no ICMP datagram ("ping") socket in `ping_rcv` and is freed with NO_SOCKET.
pub fn benign_drop(reason: &str, location: &str, f: &Flow) -> Option<Benign> {
    let echo_reply = matches!((f.l4, f.icmp_type), (1, 0) | (58, 129));
    (reason == "NO_SOCKET" && location.starts_with("ping_rcv") && echo_reply)
        .then_some(Benign::RawSocketCopy)
}

/// Protocol name of a flow, tcpdump style.
pub fn proto_name(f: &Flow) -> &'static str {
    match (f.ethertype, f.l4) {
        (0x0806, _) => "ARP",
        (0x0800, 1) => "ICMP",
        (0x86dd, 58) => "ICMP6",
        (0x0800 | 0x86dd, 6) => "TCP",
        (0x0800 | 0x86dd, 17) => "UDP",
        (0x0800, _) => "IPv4",
        (0x86dd, _) => "IPv6",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vethtrace_common::{kind, WIRE_VERSION};

    fn names() -> Names {
        let mut n = Names::default();
        n.add_netns(11, "ns01");
        n.add_netns(22, "node");
        n.add_interface(11, 2, "veth01");
        n.add_interface(22, 2, "br01");
        n
    }

    #[test]
    fn same_ifindex_in_two_namespaces_gets_two_names() {
        let names = names();
        let reasons = DropReasons::default();
        let ks = Kallsyms::default();
        let d = Decoder {
            names: &names,
            reasons: &reasons,
            kallsyms: &ks,
        };
        let mut ev = Event {
            version: WIRE_VERSION,
            kind: kind::PACKET,
            hook: hook::TC_EGRESS,
            ifindex: 2,
            netns_cookie: 11,
            ..Default::default()
        };
        let a = d.decode(&ev);
        ev.netns_cookie = 22;
        ev.hook = hook::TC_INGRESS;
        let b = d.decode(&ev);
        assert_eq!(
            (a.netns.as_str(), a.ifname.as_deref()),
            ("ns01", Some("veth01"))
        );
        assert_eq!(
            (b.netns.as_str(), b.ifname.as_deref()),
            ("node", Some("br01"))
        );
        assert_eq!(a.what, What::Hook(Dir::Egress));
        assert_eq!(b.what, What::Hook(Dir::Ingress));
    }

    #[test]
    fn drops_are_named_from_btf_and_kallsyms() {
        let names = names();
        let reasons = DropReasons::from_pairs([(12, "NETFILTER_DROP")]);
        let ks = Kallsyms::parse("ffffffff81a00000 T nf_hook_slow\n");
        let d = Decoder {
            names: &names,
            reasons: &reasons,
            kallsyms: &ks,
        };
        let ev = Event {
            version: WIRE_VERSION,
            kind: kind::DROP,
            hook: hook::KFREE_SKB,
            drop_reason: 12,
            location: 0xffffffff81a00042,
            netns_cookie: 22,
            ifindex: 2,
            ..Default::default()
        };
        let o = d.decode(&ev);
        assert_eq!(
            o.what,
            What::Drop {
                reason: "NETFILTER_DROP".into(),
                location: "nf_hook_slow+0x42".into()
            }
        );
        assert_eq!(o.ifname.as_deref(), Some("br01"));
        assert!(o.is_drop());
    }

    #[test]
    fn ping_socket_lookup_after_a_raw_delivery_is_not_a_drop() {
        let names = names();
        let reasons = DropReasons::from_pairs([(3, "NO_SOCKET")]);
        let ks = Kallsyms::parse("ffffffff81b00000 t ping_rcv\n");
        let d = Decoder {
            names: &names,
            reasons: &reasons,
            kallsyms: &ks,
        };
        let mut ev = Event {
            version: WIRE_VERSION,
            kind: kind::DROP,
            hook: hook::KFREE_SKB,
            drop_reason: 3,
            location: 0xffffffff81b000b3,
            netns_cookie: 11,
            ifindex: 2,
            ..Default::default()
        };
        ev.outer.ethertype = 0x0800;
        ev.outer.l4 = 1;
        ev.outer.icmp_type = 0;
        let o = d.decode(&ev);
        assert!(matches!(o.what, What::Freed { .. }));
        assert!(!o.is_drop());
        // An echo request freed the same way is a real drop.
        ev.outer.icmp_type = 8;
        assert!(d.decode(&ev).is_drop());
    }

    #[test]
    fn netfilter_verdicts_are_named_and_are_neither_hops_nor_drops() {
        let names = names();
        let reasons = DropReasons::default();
        let ks = Kallsyms::default();
        let d = Decoder {
            names: &names,
            reasons: &reasons,
            kallsyms: &ks,
        };
        let mut nf = NetfilterEvent {
            event: Event {
                version: WIRE_VERSION,
                kind: kind::NETFILTER,
                hook: hook::NFT_DO_CHAIN,
                netns_cookie: 22,
                ifindex: 2,
                len: 84,
                ..Default::default()
            },
            family: nf::proto::IPV4,
            hook: 2,
            verdict: nf::DROP,
            ..Default::default()
        };
        nf.event.outer.ethertype = 0x0800;
        nf.event.outer.l4 = 1;
        nf.set_names("filter", "FORWARD");
        // Through the record path, as the tracer decodes the ring buffer.
        let bytes = nf.as_bytes();
        let ev = Event::decode(bytes).expect("header");
        let o = d.decode_record(&ev, bytes);
        assert_eq!(
            o.what,
            What::netfilter("ip", "FORWARD", "filter", "FORWARD", "DROP")
        );
        assert_eq!(
            (o.netns.as_str(), o.ifname.as_deref(), o.len),
            ("node", Some("br01"), 84)
        );
        assert!(o.is_netfilter() && !o.is_hook() && !o.is_drop());
        // It joins its packet: same flow as the hops.
        assert_eq!(o.flow().l4, 1);
        // What nftables returns on Linux >= 6.8 after freeing a dropped packet is a drop; an
        // accept in the bridge family's BROUTING hook is named so.
        nf.verdict = (1 << 16) | nf::STOLEN;
        assert!(d.decode_netfilter(&nf).what.is_nf_drop());
        nf.family = nf::proto::BRIDGE;
        nf.hook = 5;
        nf.verdict = nf::ACCEPT;
        let What::Netfilter(v) = d.decode_netfilter(&nf).what else {
            panic!("netfilter")
        };
        let NfVerdict {
            family,
            hook,
            verdict,
            ..
        } = *v;
        assert_eq!(
            (family.as_str(), hook.as_str(), verdict.as_str()),
            ("bridge", "BROUTING", "ACCEPT")
        );
    }

    #[test]
    fn netfilter_names_per_family() {
        assert_eq!(nf_hook_name(nf::proto::IPV4, 0), "PREROUTING");
        assert_eq!(nf_hook_name(nf::proto::IPV6, 1), "INPUT");
        assert_eq!(nf_hook_name(nf::proto::INET, 4), "POSTROUTING");
        assert_eq!(nf_hook_name(nf::proto::ARP, 1), "OUTPUT");
        assert_eq!(nf_hook_name(nf::proto::NETDEV, 0), "INGRESS");
        assert_eq!(nf_hook_name(nf::proto::IPV4, 9), "hook 9");
        assert_eq!(nf_hook_name(42, 0), "hook 0");
        assert_eq!(nf_family_name(nf::proto::IPV6), "ip6");
        assert_eq!(nf_family_name(42), "family 42");
        assert_eq!(nf_verdict_name(nf::QUEUE), "QUEUE");
        assert_eq!(nf_verdict_name(0x4000_0003), "QUEUE");
        assert_eq!(nf_verdict_name(9), "verdict 9");
        assert_eq!(nf_verdict_name(nf::STOLEN), "STOLEN");
        assert_eq!(nf_verdict_name(nf::STOLEN | (1 << 16)), "DROP");
        assert_eq!(nf_verdict_name(nf::DROP | (1 << 16)), "DROP");
    }

    #[test]
    fn unknown_namespace_and_interface_fall_back_to_numbers() {
        let names = Names::default();
        let reasons = DropReasons::default();
        let ks = Kallsyms::default();
        let d = Decoder {
            names: &names,
            reasons: &reasons,
            kallsyms: &ks,
        };
        let ev = Event {
            version: WIRE_VERSION,
            kind: kind::PACKET,
            hook: hook::TC_EGRESS,
            ifindex: 9,
            netns_cookie: 5,
            flags: flag::ENCAP,
            ..Default::default()
        };
        let o = d.decode(&ev);
        assert_eq!(o.netns, "netns:5");
        assert_eq!(o.ifname.as_deref(), Some("if9"));
        assert!(o.inner().is_some());
    }

    #[test]
    fn an_interface_named_before_its_namespace_gets_the_namespace_name_later() {
        let mut names = Names::default();
        names.add_interface(7, 3, "eth0");
        let reasons = DropReasons::default();
        let ks = Kallsyms::default();
        let ev = Event {
            version: WIRE_VERSION,
            kind: kind::PACKET,
            hook: hook::TC_INGRESS,
            ifindex: 3,
            netns_cookie: 7,
            ..Default::default()
        };
        let decode = |names: &Names| {
            let d = Decoder {
                names,
                reasons: &reasons,
                kallsyms: &ks,
            };
            let o = d.decode(&ev);
            (o.netns.to_string(), o.ifname.map(String::from))
        };
        assert_eq!(decode(&names), ("netns:7".into(), Some("eth0".into())));
        names.add_netns(7, "pod-a");
        assert_eq!(decode(&names), ("pod-a".into(), Some("eth0".into())));
        names.add_netns(7, "pod-b");
        assert_eq!(decode(&names), ("pod-b".into(), Some("eth0".into())));
        assert_eq!(names.interface(7, 3), Some("eth0"));
        assert_eq!(names.interface(8, 3), None);
    }

    /// The correlator holds every hop of the last tens of milliseconds: each byte here is
    /// tens of kilobytes there, and its speed follows (issue 6, figure 5). Two cache lines.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn an_observation_stays_small() {
        assert_eq!(std::mem::size_of::<Observation>(), 128);
        assert_eq!(std::mem::size_of::<What>(), 24);
    }

    #[test]
    fn extras_are_boxed_only_when_set_and_compare_by_value() {
        let f = Flow {
            l4: 17,
            ..Default::default()
        };
        let mut o = Decoder {
            names: &names(),
            reasons: &DropReasons::default(),
            kallsyms: &Kallsyms::default(),
        }
        .decode(&Event::default());
        assert_eq!(o.extras, Extras::default());
        assert!(o.extras.fields().is_none(), "nothing set, nothing boxed");
        o.set_inner(Some(f));
        o.set_truncated(true);
        o.set_snapshot(vec![1, 2], true);
        assert_eq!(
            (o.inner(), o.truncated(), o.snapshot(), o.snapshot_l3()),
            (Some(&f), true, &[1u8, 2][..], true)
        );
        assert_eq!(o.flow(), &f);
        assert_eq!(o.extras, Extras::new(Some(f), true, vec![1, 2], true));
        // Unset one by one: back to no box at all, equal to extras never set.
        o.set_inner(None);
        o.set_truncated(false);
        o.set_snapshot(Vec::new(), false);
        assert!(o.extras.fields().is_none());
        assert_eq!(o.extras, Extras::default());
        assert_eq!(
            format!("{:?}", Extras::default()),
            "Extras { inner: None, truncated: false, snapshot: [], snapshot_l3: false }"
        );
    }
}
