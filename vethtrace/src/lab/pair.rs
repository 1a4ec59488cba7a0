//! The `pair` lab: the smallest topology.
//!
//! Owns: roles `a` and `b` joined by one veth pair, `eth0` in a (10.0.0.1/24) <-> `eth0` in b
//! (10.0.0.2/24).

use std::net::{IpAddr, Ipv4Addr};

use anyhow::Result;

use super::Lab;

pub(super) fn build(lab: &mut Lab) -> Result<()> {
    lab.add_ns("a")?;
    lab.add_ns("b")?;
    lab.veth(("a", "eth0"), ("b", "eth0"), None)?;
    lab.add_addr("a", "eth0", "10.0.0.1/24")?;
    lab.add_addr("b", "eth0", "10.0.0.2/24")?;
    lab.set_main_addr("a", IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
    lab.set_main_addr("b", IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)));
    Ok(())
}
