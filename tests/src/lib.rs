//! Shared helpers for vethtrace's integration tests.
//!
//! Privileged tests call [`privileged`] first: outside CI it skips (with a printed reason) when
//! the process lacks root or the eBPF object; under CI or `cargo xtask test`
//! (VETHTRACE_REQUIRE_PRIVILEGED=1) it fails instead, so a green run always ran them.

use std::path::PathBuf;

pub mod labtrace;
pub mod rawbpf;
pub mod tc_ingress;

/// Whether privileged tests must run (CI or `cargo xtask test`).
pub fn required() -> bool {
    std::env::var_os("CI").is_some() || std::env::var_os("VETHTRACE_REQUIRE_PRIVILEGED").is_some()
}

/// For tests that build namespaces but load no eBPF (labs, topology, diagnosis, watcher):
/// true when running as root; otherwise skips with a printed reason, or panics when skipping
/// is not allowed.
pub fn root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        !required(),
        "{test}: needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) to create and enter network namespaces"
    );
    eprintln!("skipped {test}: not root");
    false
}

/// Returns true when the test may go on; false (after printing why) when it should skip.
/// Panics when skipping is not allowed.
pub fn privileged(test: &str) -> bool {
    let mut why = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        why.push("not root");
    }
    if vethtrace::ebpf_object::bytes().is_err() {
        why.push("built without the eBPF object (run `cargo xtask build-ebpf`)");
    }
    if why.is_empty() {
        return true;
    }
    let why = why.join(", ");
    assert!(!required(), "{test}: privileged test cannot run: {why}");
    eprintln!("skipped {test}: {why}");
    false
}

/// The vethtrace binary built for these tests.
pub fn binary() -> PathBuf {
    // tests/ is a workspace member: the binary sits in the shared target directory.
    let mut p = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    p.pop();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| p.join("target"));
    target.join("debug/vethtrace")
}

/// `ifname mode name` of every tc, TCX and XDP program attached in the lab's namespaces.
pub fn programs_in(lab: &vethtrace::lab::Lab) -> Vec<String> {
    let names: Vec<String> = lab.roles().iter().map(|(_, ns)| ns.to_string()).collect();
    programs_in_netns(&names)
}

/// `ifname mode name` of every tc, TCX and XDP program attached in the namespaces named
/// (ip-netns names), for namespaces a test made outside a [`vethtrace::lab::Lab`].
pub fn programs_in_netns(names: &[String]) -> Vec<String> {
    if names.is_empty() {
        return Vec::new();
    }
    let t = vethtrace::topology::discover(&vethtrace::topology::DiscoverOptions {
        netns: names.to_vec(),
        programs: true,
        ..Default::default()
    })
    .expect("topology");
    t.namespaces
        .iter()
        .flat_map(|ns| {
            ns.interfaces.iter().flat_map(|i| {
                i.programs
                    .iter()
                    .map(move |p| format!("{} {} {}", i.name, p.mode, p.name))
            })
        })
        .collect()
}

/// Runs the vethtrace binary as `nobody` with no capabilities (setpriv, from util-linux).
pub fn as_nobody(args: &[&str]) -> std::process::Output {
    std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(binary())
        .args(args)
        .output()
        .expect("setpriv runs")
}
