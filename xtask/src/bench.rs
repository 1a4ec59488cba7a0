//! `cargo xtask bench`: setup, the eBPF build, the release `vethtrace` (the bench measures the
//! CLI with it), each fuzz target for a minute (the run counts are printed; a crash fails the
//! task), then `cargo bench -p vethtrace-tests --bench vethtrace`, which prints the figures with
//! their budgets and writes BENCHMARKS.md at the root. A missed budget is printed, not fatal;
//! the task fails only when something could not run or a fuzz target crashed.

use anyhow::Result;

use crate::{build_ebpf, cmd, fuzz, setup};

/// Seconds each fuzz target runs before the benchmarks.
const FUZZ_SECONDS: u32 = 60;

pub fn run(args: &[String]) -> Result<()> {
    setup::run()?;
    build_ebpf::run()?;
    cmd::cargo(&["build", "--release", "--package", "vethtrace"])?;
    // Only the full run fuzzes; `bench 3 7` is for looking at a few figures quickly.
    if args.is_empty() {
        fuzz::run(FUZZ_SECONDS)?;
    }
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
