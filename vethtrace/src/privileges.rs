//! Up-front privilege checks, so a missing capability is one clear line before anything is
//! loaded or attached, instead of an EPERM from deep inside the loader.

use anyhow::Result;

const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The effective capability set of this process.
pub fn effective() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| parse_cap_eff(&s))
        .unwrap_or(0)
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// What loading and attaching everywhere needs. CAP_SYS_ADMIN covers CAP_BPF and CAP_PERFMON.
pub fn missing_for_tracing(caps: u64) -> Vec<&'static str> {
    let has = |c: u32| caps & (1u64 << c) != 0;
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF (load eBPF programs)");
    }
    if !has(CAP_PERFMON) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_PERFMON (read kernel memory for drop reasons)");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN (attach tc programs)");
    }
    if !has(CAP_SYS_ADMIN) {
        missing.push("CAP_SYS_ADMIN (enter other network namespaces)");
    }
    missing
}

/// What sending probes and tracing them needs (`ping`, `demo`): tracing, plus CAP_NET_RAW for
/// the raw ICMP socket, checked before anything is loaded so a missing one is named up front
/// with the others instead of surfacing from the socket call.
pub fn missing_for_probing(caps: u64) -> Vec<&'static str> {
    let mut missing = missing_for_tracing(caps);
    if caps & (1u64 << CAP_NET_RAW) == 0 {
        missing.push("CAP_NET_RAW (send ICMP probes)");
    }
    missing
}

/// What reading other namespaces' links, FDBs and attached programs needs.
pub fn missing_for_topology(caps: u64) -> Vec<&'static str> {
    let has = |c: u32| caps & (1u64 << c) != 0;
    let mut missing = Vec::new();
    if !has(CAP_SYS_ADMIN) {
        missing.push("CAP_SYS_ADMIN (enter other network namespaces)");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN (read links, FDBs and tc programs of every namespace)");
    }
    missing
}

fn check(missing: Vec<&'static str>, what: &str) -> Result<()> {
    if missing.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "{what} needs {}: run as root (sudo vethtrace …) or grant the capabilities",
        missing.join(", ")
    )
}

/// Fails with one line naming every missing capability.
pub fn require_tracing() -> Result<()> {
    check(missing_for_tracing(effective()), "tracing")
}

/// Fails with one line naming every capability `ping` and `demo` miss.
pub fn require_probing() -> Result<()> {
    check(missing_for_probing(effective()), "probing")
}

pub fn require_topology() -> Result<()> {
    check(
        missing_for_topology(effective()),
        "reading other namespaces",
    )
}

/// Fails unless running as root (the lab commands run `ip`, `iptables` and `sysctl`).
pub fn require_root(what: &str) -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        anyhow::bail!("{what} must run as root: it creates network namespaces (try sudo)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status() {
        let s = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(s), Some(0x1ff_ffff_ffff));
        assert!(missing_for_tracing(0x1ff_ffff_ffff).is_empty());
    }

    #[test]
    fn names_each_missing_capability() {
        let m = missing_for_tracing(0);
        assert_eq!(m.len(), 4);
        assert!(m[0].starts_with("CAP_BPF"));
        // CAP_SYS_ADMIN alone stands in for CAP_BPF and CAP_PERFMON, but not CAP_NET_ADMIN.
        let m = missing_for_tracing(1 << CAP_SYS_ADMIN);
        assert_eq!(m, vec!["CAP_NET_ADMIN (attach tc programs)"]);
    }

    #[test]
    fn probing_also_needs_raw_sockets() {
        let all = 0x1ff_ffff_ffffu64;
        assert!(missing_for_probing(all).is_empty());
        assert_eq!(
            missing_for_probing(all & !(1 << CAP_NET_RAW)),
            vec!["CAP_NET_RAW (send ICMP probes)"]
        );
        assert_eq!(missing_for_probing(0).len(), 5);
    }

    #[test]
    fn the_message_is_one_line_naming_each_missing_capability() {
        let e = check(missing_for_tracing(1 << CAP_BPF), "tracing").expect_err("missing");
        let text = format!("{e:#}");
        assert!(!text.contains('\n'), "{text}");
        for cap in ["CAP_PERFMON", "CAP_NET_ADMIN", "CAP_SYS_ADMIN"] {
            assert!(text.contains(cap), "{text}");
        }
        assert!(!text.contains("CAP_BPF"), "{text}");
        assert!(check(Vec::new(), "tracing").is_ok());
    }
}
