//! Main-table routes of one namespace from an RTM_GETROUTE dump, and its default route.
//!
//! Owns: the translation from route messages to [`Route`] (pure, unit-tested).

use netlink_packet_route::{
    route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType},
    AddressFamily,
};

use super::model::Route;

/// A main-table unicast route (IPv6 link-local and multicast left out); `None` for others.
pub fn route_of(msg: &RouteMessage) -> Option<Route> {
    let h = &msg.header;
    let mut table = u32::from(h.table);
    let mut dst = None;
    let mut gateway = None;
    let mut oif = None;
    for a in &msg.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(d) => dst = address(d),
            RouteAttribute::Gateway(g) => gateway = address(g),
            RouteAttribute::Oif(o) => oif = Some(*o),
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) || h.kind != RouteType::Unicast {
        return None;
    }
    let dst = match dst {
        None if h.destination_prefix_length == 0 => "default".to_string(),
        None => return None,
        Some(d) => {
            if h.address_family == AddressFamily::Inet6
                && (d.starts_with("fe80:") || d.starts_with("ff"))
            {
                return None;
            }
            format!("{d}/{}", h.destination_prefix_length)
        }
    };
    Some(Route {
        dst,
        gateway,
        dev: None,
        oif,
    })
}

fn address(a: &RouteAddress) -> Option<String> {
    match a {
        RouteAddress::Inet(ip) => Some(ip.to_string()),
        RouteAddress::Inet6(ip) => Some(ip.to_string()),
        _ => None,
    }
}

/// IPv4 routes first; device names filled from `name_of`; the default route picked out.
pub fn assemble(
    mut routes: Vec<(bool, Route)>,
    name_of: impl Fn(u32) -> Option<String>,
) -> (Vec<Route>, Option<Route>) {
    routes.sort_by_key(|(v4, _)| !*v4);
    let routes: Vec<Route> = routes
        .into_iter()
        .map(|(_, mut r)| {
            r.dev = r.oif.and_then(&name_of);
            r
        })
        .collect();
    let default = routes.iter().find(|r| r.dst == "default").cloned();
    (routes, default)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn msg(prefix: u8, dst: Option<Ipv4Addr>, gw: Option<Ipv4Addr>, table: u8) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.destination_prefix_length = prefix;
        m.header.table = table;
        m.header.kind = RouteType::Unicast;
        if let Some(d) = dst {
            m.attributes
                .push(RouteAttribute::Destination(RouteAddress::Inet(d)));
        }
        if let Some(g) = gw {
            m.attributes
                .push(RouteAttribute::Gateway(RouteAddress::Inet(g)));
        }
        m.attributes.push(RouteAttribute::Oif(2));
        m
    }

    #[test]
    fn default_and_connected_routes() {
        let d = route_of(&msg(0, None, Some(Ipv4Addr::new(10, 0, 0, 1)), 254)).expect("default");
        assert_eq!(d.dst, "default");
        assert_eq!(d.gateway.as_deref(), Some("10.0.0.1"));
        let c =
            route_of(&msg(32, Some(Ipv4Addr::new(10, 188, 2, 2)), None, 254)).expect("host route");
        assert_eq!(c.dst, "10.188.2.2/32");
        assert!(route_of(&msg(0, None, None, 255)).is_none());
        let (all, def) = assemble(vec![(true, c), (true, d)], |i| {
            (i == 2).then(|| "eth0".to_string())
        });
        assert_eq!(all.len(), 2);
        assert_eq!(def.and_then(|r| r.dev).as_deref(), Some("eth0"));
    }
}
