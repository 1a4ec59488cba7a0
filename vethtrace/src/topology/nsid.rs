//! Which namespace an IFLA_LINK_NETNSID refers to. An nsid is a number one namespace gives
//! another; it means nothing outside the namespace that assigned it. So, from inside namespace
//! A, we ask the kernel (RTM_GETNSID with NETNSA_FD) what nsid each other namespace has in A,
//! until every nsid A's links mention is identified.
//!
//! With N namespaces that is up to N queries per namespace; asking the namespaces that answered
//! before first (a hub such as the node's namespace answers for every pod) keeps the usual cost
//! near one query per peer.
//!
//! Owns: the RTM_GETNSID query and the search order. Does not open the namespace files.

use std::{
    collections::{BTreeSet, HashMap},
    os::fd::RawFd,
};

use netlink_packet_route::{
    nsid::{NsidAttribute, NsidMessage},
    RouteNetlinkMessage,
};

use super::netlink::Rtnl;

/// The nsid the namespace behind `fd` has in the socket's namespace; `None` when it has none.
pub fn nsid_of(rtnl: &mut Rtnl, fd: RawFd) -> Option<i32> {
    let mut msg = NsidMessage::default();
    msg.attributes
        .push(NsidAttribute::Fd(u32::try_from(fd).ok()?));
    let replies = rtnl.request(RouteNetlinkMessage::GetNsId(msg)).ok()?;
    replies.iter().find_map(|r| match r {
        RouteNetlinkMessage::NewNsId(m) => m.attributes.iter().find_map(|a| match a {
            NsidAttribute::Id(id) if *id >= 0 => Some(*id),
            _ => None,
        }),
        _ => None,
    })
}

/// Maps every nsid in `needed` to a candidate, asking `query(candidate)` for the nsid of each
/// candidate in `order`, and moving the candidates that answered to the front of `order`.
pub fn resolve(
    needed: &BTreeSet<i32>,
    order: &mut Vec<usize>,
    mut query: impl FnMut(usize) -> Option<i32>,
) -> HashMap<i32, usize> {
    let mut found = HashMap::new();
    let mut hits = Vec::new();
    for (pos, &cand) in order.iter().enumerate() {
        if found.len() == needed.len() {
            break;
        }
        if let Some(id) = query(cand) {
            if needed.contains(&id) && !found.contains_key(&id) {
                found.insert(id, cand);
                hits.push(pos);
            }
        }
    }
    // Move-to-front, keeping the relative order of the hits.
    for (k, pos) in hits.into_iter().enumerate() {
        let c = order.remove(pos);
        order.insert(k, c);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_needed_nsid_and_learns_the_hub() {
        // Candidate 7 is the hub: it has nsid 0 in every namespace.
        let mut order: Vec<usize> = (0..10).collect();
        let needed: BTreeSet<i32> = [0].into();
        let mut asked = 0;
        let m = resolve(&needed, &mut order, |c| {
            asked += 1;
            (c == 7).then_some(0)
        });
        assert_eq!(m.get(&0), Some(&7));
        assert_eq!(asked, 8);
        assert_eq!(order[0], 7);
        let mut asked = 0;
        let m = resolve(&needed, &mut order, |c| {
            asked += 1;
            (c == 7).then_some(0)
        });
        assert_eq!((m.get(&0), asked), (Some(&7), 1));
    }

    #[test]
    fn several_nsids_and_missing_ones() {
        let mut order: Vec<usize> = (0..5).collect();
        let needed: BTreeSet<i32> = [1, 2, 9].into();
        let m = resolve(&needed, &mut order, |c| match c {
            3 => Some(1),
            1 => Some(2),
            4 => Some(5),
            _ => None,
        });
        assert_eq!(m.len(), 2);
        assert_eq!((m[&1], m[&2]), (3, 1));
        assert_eq!(&order[..2], &[1, 3]);
        assert!(resolve(&BTreeSet::new(), &mut order, |_| panic!("not asked")).is_empty());
    }
}
