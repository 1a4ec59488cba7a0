//! Each interface's ifindex, name and kind from one unparsed rtnetlink link dump.
//!
//! Why not `links`: attaching surveys every traced namespace at start (which interfaces, and
//! which are upper devices, see `upper`), and parsing every attribute of a link dump with
//! netlink-packet-route on top of if_nameindex more than doubled it: entering a namespace and
//! listing its interfaces took 63–67 µs with if_nameindex, 142–172 µs with that parse added,
//! and 79–81 µs reading three fields off one raw dump instead (release build, best of 9 × 300
//! rounds over the bridge lab's 3 namespaces, two runs).
//!
//! Owns: walking `struct ifinfomsg` and its attributes (pure, bounds-checked, unit-tested on
//! bytes netlink-packet-route emits). Does not own the socket.

use anyhow::{Context, Result};
use netlink_packet_route::{
    link::{LinkAttribute, LinkExtentMask, LinkMessage},
    RouteNetlinkMessage,
};

use super::netlink::Rtnl;

/// `IFLA_IFNAME`, `IFLA_LINKINFO` and, nested in it, `IFLA_INFO_KIND` (linux/if_link.h).
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
/// `NLA_TYPE_MASK`: an attribute type without its nested and byte-order flags.
const NLA_TYPE_MASK: u16 = 0x3fff;
/// `sizeof(struct ifinfomsg)`.
const IFINFOMSG_LEN: usize = 16;

/// One interface: its ifindex, name and `IFLA_INFO_KIND` (none for loopback and physical
/// devices).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkKind {
    pub ifindex: u32,
    pub name: String,
    pub kind: Option<String>,
}

/// Every interface of the calling thread's namespace, by ifindex, from one link dump without
/// statistics.
pub fn read_current() -> Result<Vec<LinkKind>> {
    let mut req = LinkMessage::default();
    req.attributes
        .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    let payloads = Rtnl::open()?
        .dump_raw(RouteNetlinkMessage::GetLink(req))
        .context("dump links (RTM_GETLINK)")?;
    let mut out: Vec<LinkKind> = payloads.iter().filter_map(|p| link_kind(p)).collect();
    out.sort_by_key(|l| l.ifindex);
    Ok(out)
}

/// The interface an RTM_NEWLINK payload (`struct ifinfomsg`, then attributes) describes;
/// `None` when it is too short or has no name.
pub fn link_kind(payload: &[u8]) -> Option<LinkKind> {
    let ifindex = i32::from_ne_bytes(payload.get(4..8)?.try_into().ok()?);
    let mut name = None;
    let mut kind = None;
    for (ty, value) in attributes(payload.get(IFINFOMSG_LEN..)?) {
        match ty {
            IFLA_IFNAME => name = Some(c_string(value)),
            IFLA_LINKINFO => {
                kind = attributes(value)
                    .find(|(t, _)| *t == IFLA_INFO_KIND)
                    .map(|(_, v)| c_string(v));
            }
            _ => {}
        }
    }
    Some(LinkKind {
        ifindex: u32::try_from(ifindex).ok()?,
        name: name?,
        kind,
    })
}

/// (type, value) of each netlink attribute in `buf`, stopping at the first malformed one.
fn attributes(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16::from_ne_bytes(buf.get(0..2)?.try_into().ok()?));
        let ty = u16::from_ne_bytes(buf.get(2..4)?.try_into().ok()?) & NLA_TYPE_MASK;
        // A length below the attribute header makes this range empty-backwards: None.
        let value = buf.get(4..len)?;
        buf = buf.get((len + 3) & !3..).unwrap_or_default();
        Some((ty, value))
    })
}

/// A NUL-terminated (or not) string attribute.
fn c_string(value: &[u8]) -> String {
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::Emitable;
    use netlink_packet_route::link::{InfoKind, LinkInfo};

    use super::*;

    fn emit(index: u32, attributes: Vec<LinkAttribute>) -> Vec<u8> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes = attributes;
        let mut buf = vec![0; m.buffer_len()];
        m.emit(&mut buf);
        buf
    }

    #[test]
    fn name_and_kind_among_other_attributes() {
        let bytes = emit(
            7,
            vec![
                LinkAttribute::Mtu(1500),
                LinkAttribute::IfName("mv0".into()),
                LinkAttribute::Address(vec![2, 0, 0, 0, 0, 1]),
                LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::MacVlan)]),
                LinkAttribute::Link(3),
            ],
        );
        assert_eq!(
            link_kind(&bytes),
            Some(LinkKind {
                ifindex: 7,
                name: "mv0".into(),
                kind: Some("macvlan".into()),
            })
        );
        // Loopback and physical devices have no IFLA_LINKINFO.
        let lo = emit(1, vec![LinkAttribute::IfName("lo".into())]);
        assert_eq!(link_kind(&lo).and_then(|l| l.kind), None);
        // Kinds netlink-packet-route has no name for come through as the kernel wrote them.
        let other = emit(
            9,
            vec![
                LinkAttribute::IfName("x".into()),
                LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Other("ipvtap".into()))]),
            ],
        );
        assert_eq!(
            link_kind(&other).and_then(|l| l.kind).as_deref(),
            Some("ipvtap")
        );
    }

    #[test]
    fn short_or_malformed_payloads_never_panic() {
        let bytes = emit(
            4,
            vec![
                LinkAttribute::IfName("bond0".into()),
                LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bond)]),
            ],
        );
        for cut in 0..bytes.len() {
            let got = link_kind(&bytes[..cut]);
            // Whatever is returned was read from the bytes.
            if let Some(l) = got {
                assert_eq!(l.ifindex, 4);
                assert!("bond0".starts_with(&l.name));
            }
        }
        assert_eq!(
            link_kind(&bytes).and_then(|l| l.kind).as_deref(),
            Some("bond")
        );
        // An attribute claiming less than its own header, or more than there is, ends the walk.
        let mut bad = bytes.clone();
        bad[IFINFOMSG_LEN..IFINFOMSG_LEN + 2].copy_from_slice(&2u16.to_ne_bytes());
        assert_eq!(link_kind(&bad), None);
        bad[IFINFOMSG_LEN..IFINFOMSG_LEN + 2].copy_from_slice(&u16::MAX.to_ne_bytes());
        assert_eq!(link_kind(&bad), None);
        // A negative ifindex is no interface.
        let mut neg = bytes;
        neg[4..8].copy_from_slice(&(-1i32).to_ne_bytes());
        assert_eq!(link_kind(&neg), None);
    }
}
