//! Decoding: a raw kernel [`Event`] becomes an [`Observation`] with names: the namespace's
//! display name (from its netns cookie) and the interface's name (from namespace + ifindex,
//! since ifindexes collide across namespaces). Pure: names come in through [`Names`].

use std::{collections::HashMap, net::IpAddr};

use vethtrace_common::{flag, hook, Event, Flow};

use crate::{btf::DropReasons, kallsyms::Kallsyms};

/// Namespace and interface names, keyed the way events identify them.
#[derive(Debug, Clone, Default)]
pub struct Names {
    netns: HashMap<u64, String>,
    ifaces: HashMap<(u64, u32), String>,
}

impl Names {
    /// Records a namespace's display name under its netns cookie.
    pub fn add_netns(&mut self, cookie: u64, name: impl Into<String>) {
        self.netns.insert(cookie, name.into());
    }

    pub fn add_interface(&mut self, cookie: u64, ifindex: u32, name: impl Into<String>) {
        self.ifaces.insert((cookie, ifindex), name.into());
    }

    /// The namespace's name, or `netns:<cookie>` for one we never saw.
    pub fn netns(&self, cookie: u64) -> String {
        self.netns
            .get(&cookie)
            .cloned()
            .unwrap_or_else(|| format!("netns:{cookie}"))
    }

    pub fn interface(&self, cookie: u64, ifindex: u32) -> Option<&str> {
        self.ifaces.get(&(cookie, ifindex)).map(String::as_str)
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

/// What happened at an observation point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// Seen by the tc hook of an interface.
    Hook(Dir),
    /// Freed by the kernel with a drop reason, at `location` (symbolized).
    Drop { reason: String, location: String },
    /// Freed with a drop reason that does not mean the packet was lost (see [`benign_drop`]).
    Freed {
        reason: String,
        location: String,
        why: &'static str,
    },
}

/// One decoded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub ts_ns: u64,
    pub netns_cookie: u64,
    pub netns: String,
    pub ifindex: u32,
    pub ifname: Option<String>,
    pub what: What,
    pub len: u32,
    pub mark: u32,
    pub outer: Flow,
    /// The encapsulated packet when the frame was VXLAN.
    pub inner: Option<Flow>,
    pub truncated: bool,
    /// The packet's first bytes when snapshots are on (empty otherwise).
    pub snapshot: Vec<u8>,
    /// The snapshot starts at the network header (drops), not at the Ethernet header.
    pub snapshot_l3: bool,
}

impl Observation {
    /// The packet's identity: the inner flow for encapsulated frames.
    pub fn flow(&self) -> &Flow {
        self.inner.as_ref().unwrap_or(&self.outer)
    }

    /// A real drop (not a benign free).
    pub fn is_drop(&self) -> bool {
        matches!(self.what, What::Drop { .. })
    }

    /// Seen by a tc hook (not a drop or free).
    pub fn is_hook(&self) -> bool {
        matches!(self.what, What::Hook(_))
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
    pub fn decode_record(&self, ev: &Event, record: &[u8]) -> Observation {
        let mut o = self.decode(ev);
        o.snapshot = ev.snapshot(record).to_vec();
        o.snapshot_l3 = ev.flags & flag::SNAP_L3 != 0;
        o
    }

    pub fn decode(&self, ev: &Event) -> Observation {
        let what = match ev.hook {
            hook::TC_INGRESS => What::Hook(Dir::Ingress),
            hook::TC_EGRESS => What::Hook(Dir::Egress),
            _ => {
                let reason = self.reasons.name(ev.drop_reason);
                let location = self.kallsyms.symbolize(ev.location);
                let flow = if ev.flags & flag::ENCAP != 0 {
                    &ev.inner
                } else {
                    &ev.outer
                };
                match benign_drop(&reason, &location, flow) {
                    Some(why) => What::Freed {
                        reason,
                        location,
                        why,
                    },
                    None => What::Drop { reason, location },
                }
            }
        };
        let no_dev = ev.flags & flag::NO_DEVICE != 0;
        Observation {
            ts_ns: ev.ts_ns,
            netns_cookie: ev.netns_cookie,
            netns: self.names.netns(ev.netns_cookie),
            ifindex: ev.ifindex,
            ifname: if no_dev {
                None
            } else {
                self.names
                    .interface(ev.netns_cookie, ev.ifindex)
                    .map(str::to_string)
                    .or_else(|| Some(format!("if{}", ev.ifindex)))
            },
            what,
            len: ev.len,
            mark: ev.mark,
            outer: ev.outer,
            inner: (ev.flags & flag::ENCAP != 0).then_some(ev.inner),
            truncated: ev.flags & flag::TRUNCATED != 0,
            snapshot: Vec::new(),
            snapshot_l3: false,
        }
    }
}

/// Drop reasons that do not mean the packet was lost. An ICMP echo reply arriving for a raw
/// socket (iputils `ping` as root) is delivered to that socket as a clone; the original then
/// finds no ICMP datagram ("ping") socket in `ping_rcv` and is freed with NO_SOCKET.
pub fn benign_drop(reason: &str, location: &str, f: &Flow) -> Option<&'static str> {
    let echo_reply = matches!((f.l4, f.icmp_type), (1, 0) | (58, 129));
    (reason == "NO_SOCKET" && location.starts_with("ping_rcv") && echo_reply)
        .then_some("no ICMP datagram socket wanted it; raw sockets (ping as root) got a copy")
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

pub fn src(f: &Flow) -> Option<IpAddr> {
    f.src_ip()
}

pub fn dst(f: &Flow) -> Option<IpAddr> {
    f.dst_ip()
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
        assert!(o.inner.is_some());
    }
}
