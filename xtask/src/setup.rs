//! `cargo xtask setup`: makes a fresh Debian machine able to build, demo, test and fuzz vethtrace.
//! Installs only what is missing, says each step, and costs a few process spawns when all is
//! present. Not root or not Debian: one message listing what to install by hand.

use std::{path::Path, process::Command};

use anyhow::{bail, Result};

use crate::cmd;

/// Debian packages: LLVM 22 for building bpf-linker (it matches nightly's LLVM), and the
/// networking tools the labs, tests and benchmarks run.
const PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
    "iproute2",
    "iptables",
    "nftables",
    "ethtool",
    "iputils-ping",
    "iperf3",
    "tshark",
    "graphviz",
];

const BPF_LINKER_VERSION: &str = "0.13.0";
/// Runs the fuzz targets in fuzz/ (`cargo xtask test` briefly, `cargo xtask bench` longer).
const CARGO_FUZZ_VERSION: &str = "0.13.2";

pub fn run() -> Result<()> {
    let missing_pkgs = missing_packages();
    let need_rust_src = !has_rust_src();
    let need_linker = !has_bpf_linker();
    let need_fuzz = !has_cargo_fuzz();
    if missing_pkgs.is_empty() && !need_rust_src && !need_linker && !need_fuzz {
        cmd::say("setup: everything is present");
        return Ok(());
    }
    let is_root = cmd::output(Command::new("id").arg("-u")).is_some_and(|s| s.trim() == "0");
    let is_debian =
        Path::new("/etc/debian_version").exists() && Path::new("/usr/bin/apt-get").exists();
    let can_install = is_root && is_debian;
    if !missing_pkgs.is_empty() && !can_install {
        bail!(
            "setup needs root on Debian to install packages; install by hand: {}{}{}{}",
            missing_pkgs.join(" "),
            if need_rust_src {
                "; `rustup component add rust-src --toolchain nightly`"
            } else {
                ""
            },
            if need_linker {
                "; `LLVM_PREFIX=/usr/lib/llvm-22 cargo install --locked bpf-linker@0.13.0 --no-default-features --features llvm-22`"
            } else {
                ""
            },
            if need_fuzz {
                "; `cargo install --locked cargo-fuzz@0.13.2`"
            } else {
                ""
            }
        );
    }
    if !missing_pkgs.is_empty() {
        cmd::say(&format!(
            "setup: installing Debian packages: {}",
            missing_pkgs.join(" ")
        ));
        cmd::run(Command::new("apt-get").arg("update").arg("-qq"))?;
        cmd::run(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&missing_pkgs),
        )?;
    }
    if need_rust_src {
        cmd::say("setup: adding rust-src to the nightly toolchain (for -Z build-std=core)");
        cmd::run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    if need_linker {
        cmd::say(&format!(
            "setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about 2 minutes, once)"
        ));
        cmd::run(
            Command::new("cargo")
                .env("LLVM_PREFIX", "/usr/lib/llvm-22")
                .env_remove("RUSTUP_TOOLCHAIN")
                .args([
                    "install",
                    "--locked",
                    &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                    "--no-default-features",
                    "--features",
                    "llvm-22",
                ]),
        )?;
    }
    if need_fuzz {
        cmd::say(&format!(
            "setup: building cargo-fuzz {CARGO_FUZZ_VERSION} (about 2 minutes, once)"
        ));
        cmd::run(Command::new("cargo").env_remove("RUSTUP_TOOLCHAIN").args([
            "install",
            "--locked",
            &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"),
        ]))?;
    }
    cmd::say("setup: done");
    Ok(())
}

fn missing_packages() -> Vec<&'static str> {
    // One dpkg-query for all of them; a package it does not know is missing.
    let out = cmd::output(
        Command::new("dpkg-query")
            .args(["-W", "-f", "${Package} ${db:Status-Status}\n"])
            .args(PACKAGES),
    )
    .or_else(|| {
        // dpkg-query exits 1 when any package is unknown but still prints the known ones.
        Command::new("dpkg-query")
            .args(["-W", "-f", "${Package} ${db:Status-Status}\n"])
            .args(PACKAGES)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    })
    .unwrap_or_default();
    PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !out.lines().any(|l| {
                let mut it = l.split_whitespace();
                it.next().is_some_and(|n| n.split(':').next() == Some(*p))
                    && it.next() == Some("installed")
            })
        })
        .collect()
}

fn has_rust_src() -> bool {
    cmd::output(
        Command::new("rustc")
            .args(["+nightly", "--print", "sysroot"])
            .env_remove("RUSTUP_TOOLCHAIN"),
    )
    .map(|s| {
        Path::new(s.trim())
            .join("lib/rustlib/src/rust/library/core")
            .is_dir()
    })
    .unwrap_or(false)
}

fn has_cargo_fuzz() -> bool {
    // `cargo-fuzz --version` prints `cargo-fuzz 0.13.2`.
    cmd::output(Command::new("cargo-fuzz").arg("--version"))
        .is_some_and(|v| v.split_whitespace().nth(1) == Some(CARGO_FUZZ_VERSION))
}

fn has_bpf_linker() -> bool {
    cmd::output(Command::new("bpf-linker").arg("--version"))
        .is_some_and(|v| v.contains(BPF_LINKER_VERSION))
}
