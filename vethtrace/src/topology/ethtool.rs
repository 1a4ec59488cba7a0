//! The fallback for a veth whose link dump lacks IFLA_LINK: the veth driver also reports its
//! peer's ifindex as the ethtool statistic `peer_ifindex` (what `ethtool -S veth0` prints).
//! Read with the SIOCETHTOOL ioctl: the statistic names (ETHTOOL_GSTRINGS), then the values
//! (ETHTOOL_GSTATS).
//!
//! Owns: those ioctls, on a socket of the calling thread's namespace, and finding the statistic
//! in the string table (pure, unit-tested).

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSTATS: u32 = 0x1d;
const ETH_SS_STATS: u32 = 1;
const ETH_GSTRING_LEN: usize = 32;
/// More statistics than any veth has; a driver reporting more is not asked.
const MAX_STATS: usize = 4096;

/// The `peer_ifindex` statistic of interface `name`; `None` when the driver has none.
pub fn peer_ifindex(name: &str) -> Option<u32> {
    let sock = socket().ok()?;
    let count = stat_count(&sock, name).ok()?;
    if count == 0 || count > MAX_STATS {
        return None;
    }
    // The kernel writes as many entries as the driver has *now*, whatever length we pass; room
    // for twice as many covers a queue-count change between the calls.
    let room = count * 2 + 16;
    // struct ethtool_gstrings { u32 cmd, string_set, len; u8 data[len * 32]; }
    let mut strings = vec![0u8; 12 + room * ETH_GSTRING_LEN];
    put_u32(&mut strings, 0, ETHTOOL_GSTRINGS);
    put_u32(&mut strings, 4, ETH_SS_STATS);
    put_u32(&mut strings, 8, count as u32);
    ioctl(&sock, name, &mut strings).ok()?;
    let written = u32::from_ne_bytes(strings[8..12].try_into().ok()?) as usize;
    let index = stat_index(
        strings.get(12..12 + written.min(room) * ETH_GSTRING_LEN)?,
        "peer_ifindex",
    )?;
    // struct ethtool_stats { u32 cmd, n_stats; u64 data[n_stats]; }
    let mut stats = vec![0u8; 8 + room * 8];
    put_u32(&mut stats, 0, ETHTOOL_GSTATS);
    put_u32(&mut stats, 4, count as u32);
    ioctl(&sock, name, &mut stats).ok()?;
    let at = 8 + index * 8;
    let value = u64::from_ne_bytes(stats.get(at..at + 8)?.try_into().ok()?);
    u32::try_from(value).ok().filter(|v| *v != 0)
}

/// Position of `wanted` in a table of NUL-padded 32-byte names.
pub fn stat_index(table: &[u8], wanted: &str) -> Option<usize> {
    table.chunks_exact(ETH_GSTRING_LEN).position(|c| {
        let end = c.iter().position(|b| *b == 0).unwrap_or(c.len());
        &c[..end] == wanted.as_bytes()
    })
}

/// How many statistics the driver reports (ETHTOOL_GSSET_INFO for ETH_SS_STATS).
fn stat_count(sock: &OwnedFd, name: &str) -> io::Result<usize> {
    // struct ethtool_sset_info { u32 cmd, reserved; u64 sset_mask; u32 data[1]; }
    let mut info = [0u8; 24];
    put_u32(&mut info, 0, ETHTOOL_GSSET_INFO);
    info[8..16].copy_from_slice(&(1u64 << ETH_SS_STATS).to_ne_bytes());
    ioctl(sock, name, &mut info)?;
    let mask = u64::from_ne_bytes(info[8..16].try_into().unwrap_or_default());
    if mask & (1 << ETH_SS_STATS) == 0 {
        return Ok(0);
    }
    Ok(u32::from_ne_bytes(info[16..20].try_into().unwrap_or_default()) as usize)
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is wrapped in an OwnedFd right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// SIOCETHTOOL on interface `name` with `data` as the ethtool command buffer.
fn ioctl(sock: &OwnedFd, name: &str, data: &mut [u8]) -> io::Result<()> {
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_data = data.as_mut_ptr().cast();
    // SAFETY: `req` names the interface (NUL-terminated, checked length) and points at `data`,
    // which is sized for the command it holds and outlives the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(names: &[&str]) -> Vec<u8> {
        let mut t = vec![0u8; names.len() * ETH_GSTRING_LEN];
        for (i, n) in names.iter().enumerate() {
            t[i * ETH_GSTRING_LEN..i * ETH_GSTRING_LEN + n.len()].copy_from_slice(n.as_bytes());
        }
        t
    }

    #[test]
    fn finds_peer_ifindex_in_the_string_table() {
        let t = table(&["peer_ifindex", "rx_queue_0_xdp_packets"]);
        assert_eq!(stat_index(&t, "peer_ifindex"), Some(0));
        let t = table(&["rx_queue_0_xdp_packets", "peer_ifindex"]);
        assert_eq!(stat_index(&t, "peer_ifindex"), Some(1));
        assert_eq!(
            stat_index(&table(&["peer_ifindex_x"]), "peer_ifindex"),
            None
        );
        assert_eq!(stat_index(&[], "peer_ifindex"), None);
    }

    #[test]
    fn unknown_interface_has_no_peer() {
        assert_eq!(peer_ifindex("vt-no-such-if"), None);
        assert_eq!(peer_ifindex("a-name-that-is-far-too-long"), None);
    }
}
