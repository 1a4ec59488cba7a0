//! An empty tc program (`r0 = TC_ACT_UNSPEC; exit`: "next", the packet goes on unchanged),
//! loaded with raw bpf(2) and attached with TCX links: the floor of the figures that attach
//! vethtrace's programs. On this small VM a program call alone (with the kernel's return-thunk
//! mitigations) costs a visible share of what vethtrace costs, so each such figure is shown
//! next to the same measurement with this program in vethtrace's place. The floor is context
//! for a figure; it is never subtracted from one.
//!
//! Used by figures 1 and 2 (on every hook the traced mode uses), 3 (on one hook, with run-time
//! statistics) and 4 (BPF_PROG_TEST_RUN, nothing attached).

use std::os::fd::OwnedFd;

use anyhow::{bail, Context, Result};
use vethtrace::{lab::Lab, netns};
use vethtrace_tests::rawbpf;

/// What the program returns (TC_ACT_UNSPEC; TCX reads it as "next").
pub const TC_ACT_UNSPEC: i32 = -1;
/// BPF_TCX_EGRESS (rawbpf names only the ingress one).
const ATTACH_TCX_EGRESS: u32 = 47;

/// A tc hook direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    fn attach_type(self) -> u32 {
        match self {
            Direction::Ingress => rawbpf::ATTACH_TCX_INGRESS,
            Direction::Egress => ATTACH_TCX_EGRESS,
        }
    }
}

/// The empty program, loaded once; it stays loaded while this lives, and attached where a
/// returned [`Links`] lives.
pub struct EmptyProgram {
    name: String,
    prog: OwnedFd,
}

/// TCX links of an [`EmptyProgram`]; closing them (drop) detaches, from any namespace.
pub struct Links(Vec<OwnedFd>);

impl Links {
    /// (interface, direction) hooks attached.
    pub fn hooks(&self) -> usize {
        self.0.len()
    }
}

impl EmptyProgram {
    /// Loads the program as `vt<tag><pid>` (cut to the kernel's 15 bytes), unique per bench
    /// process and use so its statistics can be found by name.
    pub fn load(tag: &str) -> Result<EmptyProgram> {
        let mut name = format!("vt{tag}{}", std::process::id());
        name.truncate(15);
        let prog = rawbpf::load(rawbpf::PROG_TYPE_SCHED_CLS, 0, TC_ACT_UNSPEC, &name)
            .context("load an empty tc program")?;
        Ok(EmptyProgram { name, prog })
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.prog
    }

    /// Attaches to `ifname` of the lab's `role` in one direction.
    pub fn attach(&self, lab: &Lab, role: &str, ifname: &str, dir: Direction) -> Result<Links> {
        let link = netns::run_in(&netns::named(lab.netns(role)?), || {
            let ifindex = nix::net::if_::if_nametoindex(ifname)?;
            Ok(rawbpf::link(&self.prog, ifindex, dir.attach_type())?)
        })
        .with_context(|| format!("attach an empty tc program to {role} {ifname}"))?;
        Ok(Links(vec![link]))
    }

    /// Attaches to the hooks a tracing session with the default selection uses: both
    /// directions of every interface but `lo` in every namespace of the lab.
    pub fn attach_like_trace(&self, lab: &Lab) -> Result<Links> {
        let mut links = Vec::new();
        for (role, ns) in lab.roles() {
            // Links made before an error are pushed too, so they are closed with `links`.
            netns::run_in(&netns::named(ns), || {
                let all = nix::net::if_::if_nameindex().context("list interfaces")?;
                for iface in all.iter().filter(|i| i.name().to_bytes() != b"lo") {
                    for dir in [Direction::Ingress, Direction::Egress] {
                        links.push(
                            rawbpf::link(&self.prog, iface.index(), dir.attach_type())
                                .with_context(|| {
                                    format!(
                                        "TCX-attach an empty tc program to {role} {} {dir:?}",
                                        iface.name().to_string_lossy()
                                    )
                                })?,
                        );
                    }
                }
                Ok(())
            })?;
        }
        Ok(Links(links))
    }

    /// ("floor", accumulated run time ns, run count), as `Session::run_stats` gives them; only
    /// counted while BPF_ENABLE_STATS is held.
    pub fn stats(&self) -> Result<(&'static str, u64, u64)> {
        for info in aya::programs::loaded_programs() {
            let info = info?;
            if info.name_as_str() == Some(self.name.as_str()) {
                return Ok(("floor", info.run_time().as_nanos() as u64, info.run_count()));
            }
        }
        bail!("the empty program {} is not loaded", self.name)
    }
}
