//! Interfaces of one namespace from its rtnetlink link and address dumps: kind, state, MTU, MAC,
//! addresses, master, XDP, vxlan parameters, and the raw cross-namespace references (IFLA_LINK,
//! IFLA_LINK_NETNSID) that `peers` later turns into names.
//!
//! Owns: the translation from netlink-packet-route messages to model values (pure, unit-tested
//! on hand-built messages). Does not own the socket or anything across namespaces.

use netlink_packet_route::{
    address::{AddressAttribute, AddressMessage},
    link::{
        InfoData, InfoIpVlan, InfoIpVtap, InfoKind, InfoMacVlan, InfoMacVtap, InfoVxlan,
        LinkAttribute, LinkFlags, LinkInfo, LinkLayerType, LinkMessage, LinkXdp, State,
        XdpAttached,
    },
    AddressFamily,
};

use super::model::{AttachedProgram, Interface, Vxlan};

/// One link as dumped, before names across the namespace are known.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawLink {
    pub iface: Interface,
    /// IFLA_MASTER.
    pub master_ifindex: Option<u32>,
    /// IFLA_LINK: the veth peer's or lower device's ifindex, in the namespace below.
    pub link_ifindex: Option<u32>,
    /// IFLA_LINK_NETNSID: where `link_ifindex` (and a vxlan underlay) lives, as an nsid of this
    /// namespace. `None` means this same namespace.
    pub link_netnsid: Option<i32>,
    /// IFLA_VXLAN_LINK: a vxlan device's underlay ifindex.
    pub vxlan_link: Option<u32>,
}

impl RawLink {
    /// Whether IFLA_LINK names a veth-style peer (as opposed to a lower device).
    pub fn has_peer(&self) -> bool {
        matches!(self.iface.kind.as_str(), "veth" | "netkit")
    }

    /// Whether IFLA_LINK names a lower device (vlan, macvlan, ipvlan and their tap variants).
    pub fn has_lower(&self) -> bool {
        self.iface.kind == "vlan" || self.iface.is_macvlan_like()
    }
}

/// Translates one RTM_NEWLINK message.
pub fn link_of(msg: &LinkMessage) -> RawLink {
    let mut raw = RawLink::default();
    let i = &mut raw.iface;
    i.ifindex = msg.header.index;
    i.admin_up = msg.header.flags.contains(LinkFlags::Up);
    i.state = "unknown".into();
    let mut kind: Option<String> = None;
    for a in &msg.attributes {
        match a {
            LinkAttribute::IfName(n) => i.name = n.clone(),
            LinkAttribute::Mtu(m) => i.mtu = *m,
            LinkAttribute::Address(mac) => i.mac = format_mac(mac),
            LinkAttribute::OperState(s) => i.state = state_name(s),
            LinkAttribute::Controller(m) => raw.master_ifindex = Some(*m),
            LinkAttribute::Link(l) => raw.link_ifindex = Some(*l),
            LinkAttribute::LinkNetNsId(n) => raw.link_netnsid = Some(*n),
            LinkAttribute::Xdp(x) => i.xdp = xdp_of(x),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(k) => kind = Some(kind_name(k)),
                        LinkInfo::Data(InfoData::Vxlan(v)) => {
                            let (vx, link) = vxlan_of(v);
                            i.vxlan = Some(vx);
                            raw.vxlan_link = link;
                        }
                        LinkInfo::Data(d) => i.mode = mode_of(d).or(i.mode.take()),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    i.kind = kind.unwrap_or_else(|| match msg.header.link_layer_type {
        LinkLayerType::Loopback => "loopback".into(),
        LinkLayerType::Ether => "physical".into(),
        other => format!("{other:?}").to_lowercase(),
    });
    // The kernel reports IFLA_LINK equal to the device's own index for devices without one.
    if raw.link_ifindex == Some(i.ifindex) && raw.link_netnsid.is_none() {
        raw.link_ifindex = None;
    }
    raw
}

/// A macvlan's or ipvlan's (or tap variant's) mode, as `ip link` spells it.
fn mode_of(d: &InfoData) -> Option<String> {
    match d {
        InfoData::MacVlan(v) => v.iter().find_map(|a| match a {
            InfoMacVlan::Mode(m) => Some(m.to_string()),
            _ => None,
        }),
        InfoData::MacVtap(v) => v.iter().find_map(|a| match a {
            InfoMacVtap::Mode(m) => Some(m.to_string()),
            _ => None,
        }),
        InfoData::IpVlan(v) => v.iter().find_map(|a| match a {
            InfoIpVlan::Mode(m) => Some(m.to_string()),
            _ => None,
        }),
        InfoData::IpVtap(v) => v.iter().find_map(|a| match a {
            InfoIpVtap::Mode(m) => Some(m.to_string()),
            _ => None,
        }),
        _ => None,
    }
}

fn kind_name(k: &InfoKind) -> String {
    k.to_string()
}

fn state_name(s: &State) -> String {
    match s {
        State::Up => "up".into(),
        State::Down => "down".into(),
        State::Unknown => "unknown".into(),
        State::LowerLayerDown => "lowerlayerdown".into(),
        State::NotPresent => "notpresent".into(),
        State::Testing => "testing".into(),
        State::Dormant => "dormant".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// `aa:bb:cc:dd:ee:ff` for a 6-byte hardware address; `None` for other lengths (tunnels).
pub fn format_mac(b: &[u8]) -> Option<String> {
    (b.len() == 6).then(|| {
        b.iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    })
}

fn vxlan_of(attrs: &[InfoVxlan]) -> (Vxlan, Option<u32>) {
    let mut v = Vxlan::default();
    let mut link = None;
    for a in attrs {
        match a {
            InfoVxlan::Id(id) => v.vni = *id,
            InfoVxlan::Local(ip) => v.local = Some(ip.to_string()),
            InfoVxlan::Local6(ip) => v.local = Some(ip.to_string()),
            InfoVxlan::Group(ip) if !ip.is_unspecified() => v.group = Some(ip.to_string()),
            InfoVxlan::Group6(ip) if !ip.is_unspecified() => v.group = Some(ip.to_string()),
            InfoVxlan::Port(p) => v.port = *p,
            InfoVxlan::Learning(l) => v.learning = Some(*l),
            InfoVxlan::Link(l) if *l != 0 => {
                link = Some(*l);
                v.underlay_ifindex = Some(*l);
            }
            _ => {}
        }
    }
    (v, link)
}

/// The XDP program of IFLA_XDP, if one is attached (names are filled in later).
fn xdp_of(attrs: &[LinkXdp]) -> Option<AttachedProgram> {
    let mut mode = None;
    let mut id = None;
    for a in attrs {
        match a {
            LinkXdp::Attached(XdpAttached::None) => return None,
            LinkXdp::Attached(XdpAttached::Driver) => mode = Some("xdp drv"),
            LinkXdp::Attached(XdpAttached::SocketBuffer) => mode = Some("xdp skb"),
            LinkXdp::Attached(XdpAttached::Hardware) => mode = Some("xdp hw"),
            LinkXdp::Attached(_) => mode = mode.or(Some("xdp")),
            LinkXdp::ProgId(p) => id = Some(*p),
            LinkXdp::DrvProgId(p) => {
                id = id.or(Some(*p));
                mode = Some("xdp drv");
            }
            LinkXdp::SkbProgId(p) => {
                id = id.or(Some(*p));
                mode = Some("xdp skb");
            }
            LinkXdp::HwProgId(p) => {
                id = id.or(Some(*p));
                mode = Some("xdp hw");
            }
            _ => {}
        }
    }
    Some(AttachedProgram {
        id: id?,
        name: String::new(),
        mode: mode.unwrap_or("xdp").into(),
        detail: None,
    })
}

/// One address from RTM_NEWADDR: (ifindex, family is IPv4, CIDR).
pub fn addr_of(msg: &AddressMessage) -> Option<(u32, bool, String)> {
    let mut local = None;
    let mut address = None;
    for a in &msg.attributes {
        match a {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    let ip = local.or(address)?;
    Some((
        msg.header.index,
        msg.header.family == AddressFamily::Inet,
        format!("{ip}/{}", msg.header.prefix_len),
    ))
}

/// Fills in what needs the whole namespace: addresses (IPv4 first), master names and
/// same-namespace vxlan underlays.
pub fn assemble(links: &mut [RawLink], addrs: Vec<(u32, bool, String)>) {
    let names: Vec<(u32, String)> = links
        .iter()
        .map(|l| (l.iface.ifindex, l.iface.name.clone()))
        .collect();
    let name_of = |idx: u32| {
        names
            .iter()
            .find(|(i, _)| *i == idx)
            .map(|(_, n)| n.clone())
    };
    let mut addrs = addrs;
    addrs.sort_by_key(|(_, v4, _)| !*v4);
    for l in links.iter_mut() {
        l.iface.master = l.master_ifindex.and_then(name_of);
        l.iface.addrs = addrs
            .iter()
            .filter(|(idx, _, _)| *idx == l.iface.ifindex)
            .map(|(_, _, a)| a.clone())
            .collect();
        if l.link_netnsid.is_none() {
            if let (Some(vx), Some(u)) = (l.iface.vxlan.as_mut(), l.vxlan_link) {
                vx.underlay = name_of(u);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use netlink_packet_route::link::{InfoVeth, IpVlanMode, LinkHeader, MacVlanMode};

    use super::*;

    fn link(index: u32, attrs: Vec<LinkAttribute>) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header = LinkHeader {
            index,
            link_layer_type: LinkLayerType::Ether,
            flags: LinkFlags::Up,
            ..Default::default()
        };
        m.attributes = attrs;
        m
    }

    #[test]
    fn veth_in_another_namespace() {
        let m = link(
            8,
            vec![
                LinkAttribute::IfName("vethf0808a3e".into()),
                LinkAttribute::Mtu(1450),
                LinkAttribute::Address(vec![0xaa, 0xbb, 0xcc, 0, 0, 1]),
                LinkAttribute::OperState(State::Up),
                LinkAttribute::Controller(4),
                LinkAttribute::Link(3),
                LinkAttribute::LinkNetNsId(2),
                LinkAttribute::LinkInfo(vec![
                    LinkInfo::Kind(InfoKind::Veth),
                    LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(LinkMessage::default()))),
                ]),
            ],
        );
        let r = link_of(&m);
        assert_eq!(r.iface.name, "vethf0808a3e");
        assert_eq!(r.iface.kind, "veth");
        assert_eq!(r.iface.state, "up");
        assert!(r.iface.admin_up);
        assert_eq!(r.iface.mtu, 1450);
        assert_eq!(r.iface.mac.as_deref(), Some("aa:bb:cc:00:00:01"));
        assert_eq!(
            (r.master_ifindex, r.link_ifindex, r.link_netnsid),
            (Some(4), Some(3), Some(2))
        );
        assert!(r.has_peer());
        assert!(!r.has_lower());
    }

    #[test]
    fn loopback_and_physical_without_linkinfo() {
        let mut lo = link(1, vec![LinkAttribute::IfName("lo".into())]);
        lo.header.link_layer_type = LinkLayerType::Loopback;
        assert_eq!(link_of(&lo).iface.kind, "loopback");
        assert_eq!(link_of(&lo).iface.state, "unknown");
        let eth = link(
            2,
            vec![LinkAttribute::IfName("eth0".into()), LinkAttribute::Link(2)],
        );
        let r = link_of(&eth);
        assert_eq!(r.iface.kind, "physical");
        assert_eq!(r.link_ifindex, None);
    }

    #[test]
    fn a_macvlans_and_an_ipvlans_mode_and_lower_device() {
        let mv = link(
            6,
            vec![
                LinkAttribute::IfName("mv0".into()),
                LinkAttribute::Link(2),
                LinkAttribute::LinkInfo(vec![
                    LinkInfo::Kind(InfoKind::MacVlan),
                    LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(
                        MacVlanMode::Vepa,
                    )])),
                ]),
            ],
        );
        let r = link_of(&mv);
        assert_eq!(
            (r.iface.kind.as_str(), r.iface.mode.as_deref()),
            ("macvlan", Some("vepa"))
        );
        assert!(r.has_lower() && r.iface.is_macvlan_like());
        let iv = link(
            7,
            vec![
                LinkAttribute::IfName("iv0".into()),
                LinkAttribute::LinkInfo(vec![
                    LinkInfo::Kind(InfoKind::IpVlan),
                    LinkInfo::Data(InfoData::IpVlan(vec![InfoIpVlan::Mode(IpVlanMode::L3S)])),
                ]),
            ],
        );
        assert_eq!(link_of(&iv).iface.mode.as_deref(), Some("l3s"));
        // Other kinds have no mode.
        let lo = link(1, vec![LinkAttribute::IfName("lo".into())]);
        assert_eq!(link_of(&lo).iface.mode, None);
    }

    #[test]
    fn vxlan_parameters_and_underlay() {
        let vx = link(
            5,
            vec![
                LinkAttribute::IfName("flannel.1".into()),
                LinkAttribute::LinkInfo(vec![
                    LinkInfo::Kind(InfoKind::Vxlan),
                    LinkInfo::Data(InfoData::Vxlan(vec![
                        InfoVxlan::Id(1),
                        InfoVxlan::Link(2),
                        InfoVxlan::Local(Ipv4Addr::new(172, 30, 0, 1)),
                        InfoVxlan::Port(8472),
                        InfoVxlan::Learning(false),
                    ])),
                ]),
            ],
        );
        let eth = link(2, vec![LinkAttribute::IfName("eth0".into())]);
        let mut links = vec![link_of(&eth), link_of(&vx)];
        assemble(&mut links, vec![]);
        let v = links[1].iface.vxlan.clone().expect("vxlan");
        assert_eq!(v.vni, 1);
        assert_eq!(v.port, 8472);
        assert_eq!(v.local.as_deref(), Some("172.30.0.1"));
        assert_eq!(v.underlay.as_deref(), Some("eth0"));
        assert_eq!(v.learning, Some(false));
    }

    #[test]
    fn masters_and_addresses() {
        let br = link(4, vec![LinkAttribute::IfName("br01".into())]);
        let port = link(
            5,
            vec![
                LinkAttribute::IfName("br-veth01".into()),
                LinkAttribute::Controller(4),
            ],
        );
        let mut links = vec![link_of(&br), link_of(&port)];
        let mut a = AddressMessage::default();
        a.header.family = AddressFamily::Inet;
        a.header.prefix_len = 24;
        a.header.index = 4;
        a.attributes = vec![
            AddressAttribute::Address(IpAddr::V4(Ipv4Addr::new(192, 168, 88, 1))),
            AddressAttribute::Local(IpAddr::V4(Ipv4Addr::new(192, 168, 88, 1))),
        ];
        let mut a6 = AddressMessage::default();
        a6.header.family = AddressFamily::Inet6;
        a6.header.prefix_len = 64;
        a6.header.index = 4;
        a6.attributes = vec![AddressAttribute::Address("fe80::1".parse().expect("ip"))];
        let addrs = [&a6, &a].iter().filter_map(|m| addr_of(m)).collect();
        assemble(&mut links, addrs);
        assert_eq!(links[0].iface.addrs, vec!["192.168.88.1/24", "fe80::1/64"]);
        assert_eq!(links[1].iface.master.as_deref(), Some("br01"));
        assert_eq!(links[0].iface.master, None);
    }

    #[test]
    fn xdp_attachment() {
        let x = xdp_of(&[
            LinkXdp::Attached(XdpAttached::SocketBuffer),
            LinkXdp::ProgId(42),
        ]);
        assert_eq!(x.map(|p| (p.id, p.mode)), Some((42, "xdp skb".to_string())));
        assert_eq!(xdp_of(&[LinkXdp::Attached(XdpAttached::None)]), None);
        assert_eq!(format_mac(&[1, 2, 3, 4]), None);
    }
}
