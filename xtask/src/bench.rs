//! `cargo xtask bench`: setup, the eBPF build, the release `vethtrace` (the bench measures the
//! CLI with it), then `cargo bench -p vethtrace-tests --bench vethtrace`, which prints the
//! figures with their budgets and writes BENCHMARKS.md at the root. A missed budget is printed,
//! not fatal; the task fails only when something could not run.

use anyhow::Result;

use crate::{build_ebpf, cmd, setup};

pub fn run(args: &[String]) -> Result<()> {
    setup::run()?;
    build_ebpf::run()?;
    cmd::cargo(&["build", "--release", "--package", "vethtrace"])?;
    // Privileged figures fail instead of being skipped when run through here.
    std::env::set_var("VETHTRACE_REQUIRE_PRIVILEGED", "1");
    let mut cargo = vec![
        "bench",
        "--package",
        "vethtrace-tests",
        "--bench",
        "vethtrace",
    ];
    if !args.is_empty() {
        cargo.push("--");
        cargo.extend(args.iter().map(String::as_str));
    }
    cmd::cargo(&cargo)
}
