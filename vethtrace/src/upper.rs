//! Upper devices: the devices the receive path hands a received frame on to after it arrived on
//! another one (`goto another_round` in `__netif_receive_skb_core`): a macvlan or macvtap and an
//! ipvlan or ipvtap (their lower device's rx_handler), a VLAN sub-device (the tag taken off),
//! a bond or team master (its ports' rx_handler). tc ingress runs on them, but
//! net:netif_receive_skb fired once, for the device the frame arrived on, and not again for
//! them. So with the device tracepoints their ingress is hooked with the tc ingress program
//! (TCX, clsact without it) and the `HOOKS` map records only their egress (net_dev_queue fires
//! for every `dev_queue_xmit`, theirs included): each direction is recorded exactly once. Both
//! at once would record a broadcast twice, since macvlan re-queues broadcasts with `netif_rx`
//! on the macvlan, which does fire the tracepoint for it.
//!
//! Owns the pure decisions: which kinds are upper devices, which interfaces of a namespace
//! need a tc ingress hook, the `HOOKS` directions of each, and how the capability line names
//! them. Does not own attaching (`attach`) or reading kinds (the survey's link dump).

use vethtrace_common::hook_dir;

/// `IFLA_INFO_KIND` of the devices a frame is handed on to after netif_receive_skb fired for
/// the device below them (bridges are not among them: a bridge passes a frame up with
/// `netif_receive_skb`, which fires the tracepoint again).
pub const KINDS: [&str; 7] = [
    "vlan", "macvlan", "macvtap", "ipvlan", "ipvtap", "bond", "team",
];

/// Whether a device of this kind receives frames handed on from another device.
pub fn is_upper(kind: &str) -> bool {
    KINDS.contains(&kind)
}

/// The ifindexes among `selected` (ifindex, name) whose ingress needs the tc program when the
/// device tracepoints trace them, given each interface's kind (`kind_of`; unknown: not upper).
pub fn needing_tc_ingress(
    selected: &[(u32, String)],
    kind_of: impl Fn(u32) -> Option<String>,
) -> Vec<u32> {
    selected
        .iter()
        .filter(|(ifindex, _)| kind_of(*ifindex).is_some_and(|k| is_upper(&k)))
        .map(|(ifindex, _)| *ifindex)
        .collect()
}

/// The `HOOKS` value of an interface: both directions, or only egress when its ingress is
/// hooked with the tc program.
pub fn hook_dirs(tc_ingress: bool) -> u8 {
    if tc_ingress {
        hook_dir::EGRESS
    } else {
        hook_dir::BOTH
    }
}

/// How many upper devices the capability line names before `…`.
const NAMED: usize = 4;

/// The capability line's note on the upper devices hooked with tc: `TCX ingress on 1 upper
/// device: b mv0` (`mechanism` is how they are hooked: `TCX`, `clsact` or both).
pub fn describe(mechanism: &str, devices: &[String]) -> String {
    let mut names = devices
        .iter()
        .take(NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if devices.len() > NAMED {
        names.push_str(", …");
    }
    let plural = if devices.len() == 1 { "" } else { "s" };
    format!(
        "{mechanism} ingress on {} upper device{plural}: {names}",
        devices.len()
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn only_devices_a_frame_is_handed_on_to_need_tc_ingress() {
        let kinds: HashMap<u32, &str> = [
            (2, "veth"),
            (3, "macvlan"),
            (4, "bridge"),
            (5, "vlan"),
            (6, "vxlan"),
            (7, "bond"),
            (8, "ipvtap"),
            (9, "team"),
            (10, "physical"),
            (11, "macvtap"),
            (12, "ipvlan"),
        ]
        .into();
        let selected: Vec<(u32, String)> = (2..=13).map(|i| (i, format!("if{i}"))).collect();
        // 13 has no known kind (vanished before the dump): hooked as usual.
        let need = needing_tc_ingress(&selected, |i| kinds.get(&i).map(|k| k.to_string()));
        assert_eq!(need, [3, 5, 7, 8, 9, 11, 12]);
        // Only what was selected is considered.
        let need = needing_tc_ingress(&selected[..2], |i| kinds.get(&i).map(|k| k.to_string()));
        assert_eq!(need, [3]);
        assert!(needing_tc_ingress(&[], |_| Some("macvlan".into())).is_empty());
        // A kind is matched whole.
        assert!(!is_upper("macvlan2") && !is_upper("") && !is_upper("vlan "));
    }

    #[test]
    fn an_upper_device_leaves_only_its_egress_to_the_tracepoints() {
        assert_eq!(hook_dirs(true), hook_dir::EGRESS);
        assert_eq!(hook_dirs(false), hook_dir::INGRESS | hook_dir::EGRESS);
        assert_eq!(hook_dirs(true) & hook_dir::INGRESS, 0);
    }

    #[test]
    fn the_capability_note_names_the_devices() {
        assert_eq!(
            describe("TCX", &["b mv0".into()]),
            "TCX ingress on 1 upper device: b mv0"
        );
        let many: Vec<String> = (0..6).map(|i| format!("pod{i} eth0")).collect();
        assert_eq!(
            describe("TCX+clsact", &many),
            "TCX+clsact ingress on 6 upper devices: pod0 eth0, pod1 eth0, pod2 eth0, pod3 eth0, …"
        );
        assert_eq!(
            describe("clsact", &many[..2]),
            "clsact ingress on 2 upper devices: pod0 eth0, pod1 eth0"
        );
    }
}
