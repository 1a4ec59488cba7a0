//! Reading one namespace from inside it (on the worker thread that entered it): links,
//! addresses, routes, FDB, the nsids its links mention, its netns cookie and, when asked,
//! attached programs — a handful of netlink dumps on one socket.
//!
//! Owns: the sequence of requests for one namespace. Translation lives in `links`, `routes`,
//! `fdb`, `nsid` and `programs`.

use std::{
    collections::{BTreeSet, HashMap},
    os::fd::RawFd,
    path::Path,
};

use anyhow::{Context, Result};
use netlink_packet_route::{
    address::AddressMessage, link::LinkMessage, neighbour::NeighbourMessage, route::RouteMessage,
    AddressFamily, RouteNetlinkMessage,
};

use super::{
    ethtool, fdb, links,
    links::RawLink,
    model::{FdbEntry, Route},
    netlink::Rtnl,
    nsid, programs, routes,
};

/// Everything read in one namespace.
#[derive(Debug, Default)]
pub struct NsRead {
    pub cookie: Option<u64>,
    pub links: Vec<RawLink>,
    pub routes: Vec<Route>,
    pub default_route: Option<Route>,
    pub fdb: Vec<FdbEntry>,
    /// nsid → index of the namespace (in discovery's list) that it names here.
    pub nsids: HashMap<i32, usize>,
}

/// The namespace disappeared (or its pid was reused) between listing and reading it.
#[derive(Debug)]
pub struct Vanished;

impl std::fmt::Display for Vanished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("network namespace vanished while being read")
    }
}

impl std::error::Error for Vanished {}

/// What the reader needs besides the namespace itself.
pub struct ReadContext<'a> {
    /// Open descriptors of every known namespace, by index; `None` when it could not be opened.
    pub fds: &'a [Option<RawFd>],
    /// Order in which to ask for nsids (shared across namespaces; see `nsid`).
    pub order: &'a mut Vec<usize>,
    /// Program names by id, when attached programs are wanted.
    pub programs: Option<&'a HashMap<u32, String>>,
}

/// Reads the namespace the calling thread is in, which must be the one with `inode`.
pub fn read_current(inode: u64, ctx: &mut ReadContext<'_>) -> Result<NsRead> {
    if crate::netns::inode(Path::new("/proc/thread-self/ns/net")).ok() != Some(inode) {
        return Err(Vanished.into());
    }
    let mut rtnl = Rtnl::open()?;
    let mut out = NsRead {
        cookie: crate::netns::cookie_of_current().ok(),
        ..Default::default()
    };
    let link_msgs = rtnl
        .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
        .context("dump links (RTM_GETLINK)")?;
    out.links = link_msgs
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(links::link_of(l)),
            _ => None,
        })
        .collect();
    let addrs = rtnl
        .dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()))
        .context("dump addresses (RTM_GETADDR)")?
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewAddress(a) => links::addr_of(a),
            _ => None,
        })
        .collect();
    links::assemble(&mut out.links, addrs);
    // A veth whose dump lacks IFLA_LINK still reports its peer through ethtool statistics; the
    // namespace is then unknown and taken to be this one.
    for l in out
        .links
        .iter_mut()
        .filter(|l| l.has_peer() && l.link_ifindex.is_none())
    {
        l.link_ifindex = ethtool::peer_ifindex(&l.iface.name);
    }
    let name_of = |links: &[RawLink], idx: u32| {
        links
            .iter()
            .find(|l| l.iface.ifindex == idx)
            .map(|l| l.iface.name.clone())
    };

    let route_msgs = rtnl
        .dump(RouteNetlinkMessage::GetRoute(RouteMessage::default()))
        .context("dump routes (RTM_GETROUTE)")?;
    let raw_routes = route_msgs
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewRoute(r) => {
                routes::route_of(r).map(|x| (r.header.address_family == AddressFamily::Inet, x))
            }
            _ => None,
        })
        .collect();
    (out.routes, out.default_route) = routes::assemble(raw_routes, |i| name_of(&out.links, i));

    let has_fdb = out
        .links
        .iter()
        .any(|l| matches!(l.iface.kind.as_str(), "bridge" | "vxlan"));
    if has_fdb {
        let mut req = NeighbourMessage::default();
        req.header.family = AddressFamily::Bridge;
        // FDB is optional detail: a failure leaves it empty.
        let raw = rtnl
            .dump(RouteNetlinkMessage::GetNeighbour(req))
            .unwrap_or_default()
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) => fdb::fdb_of(n),
                _ => None,
            })
            .collect();
        out.fdb = fdb::assemble(raw, |i| name_of(&out.links, i));
    }

    // The link dump above makes the kernel assign nsids to every namespace a link points at,
    // so they can all be found now.
    let needed: BTreeSet<i32> = out.links.iter().filter_map(|l| l.link_netnsid).collect();
    out.nsids = nsid::resolve(&needed, ctx.order, |cand| {
        ctx.fds
            .get(cand)
            .copied()
            .flatten()
            .and_then(|fd| nsid::nsid_of(&mut rtnl, fd))
    });

    if let Some(names) = ctx.programs {
        for l in out.links.iter_mut() {
            let mut progs = programs::programs_on(&mut rtnl, l.iface.ifindex, &l.iface.name);
            progs.extend(l.iface.xdp.clone());
            programs::name_programs(&mut progs, names);
            if let Some(x) = l.iface.xdp.as_mut() {
                programs::name_programs(std::slice::from_mut(x), names);
            }
            l.iface.programs = progs;
        }
    }
    Ok(out)
}
