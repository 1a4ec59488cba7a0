//! `cargo xtask`: the project's own build and setup steps. Each subcommand is a small function
//! returning Result; every external command it runs is printed first.
//!
//! - `setup`: installs what a fresh machine lacks (and nothing else), saying each step.
//! - `build-ebpf`: builds the kernel side with nightly into target/bpf/vethtrace-ebpf.o.
//! - `demo`: setup, build-ebpf, then `vethtrace demo`.
//! - `test`: setup, build-ebpf, fmt check, clippy -D warnings, every test tier, then each fuzz
//!   target for a few seconds.
//! - `run -- ARGS`: setup, build-ebpf, then `vethtrace ARGS`.
//! - `fuzz [SECONDS]`: setup, then each fuzz target for SECONDS (60).
//! - `bench`: setup, build-ebpf, release build, each fuzz target for a minute, then the
//!   benchmarks (writes BENCHMARKS.md).

mod bench;
mod build_ebpf;
mod cmd;
mod fuzz;
mod setup;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "vethtrace's build, setup, demo and test tasks"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing: Debian packages, nightly's rust-src, bpf-linker 0.13 (LLVM 22),
    /// cargo-fuzz 0.13.
    Setup,
    /// Build the eBPF programs (nightly, -Z build-std=core, release, BTF) into target/bpf/.
    BuildEbpf,
    /// Setup, build, and run `vethtrace demo` (needs root).
    Demo,
    /// Setup, build, fmt --check, clippy -D warnings, then every test tier (privileged tests
    /// fail instead of skipping), then each fuzz target for 10 s.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter); the fuzz targets then
        /// do not run.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Setup, then run each fuzz target (fuzz/: the filter language, the event decoder) for
    /// SECONDS; fails on a crash.
    Fuzz {
        #[arg(default_value_t = 60)]
        seconds: u32,
    },
    /// Setup, build, and run vethtrace with the given arguments.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Setup, build (release), each fuzz target for 60 s, then the benchmarks: prints the
    /// figures and writes BENCHMARKS.md (needs root). Figure numbers (e.g. `3 7`) run only those
    /// benchmarks (no fuzzing) and leave BENCHMARKS.md alone.
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::run(),
        Task::BuildEbpf => build_ebpf::run(),
        Task::Demo => demo(),
        Task::Test { args } => test(&args),
        Task::Run { args } => run(&args),
        Task::Fuzz { seconds } => setup::run().and_then(|()| fuzz::run(seconds)),
        Task::Bench { args } => bench::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn build_all() -> anyhow::Result<()> {
    setup::run()?;
    build_ebpf::run()?;
    cmd::cargo(&["build", "--package", "vethtrace"])?;
    Ok(())
}

fn demo() -> anyhow::Result<()> {
    build_all()?;
    cmd::run_binary(&["demo"])
}

fn run(args: &[String]) -> anyhow::Result<()> {
    build_all()?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cmd::run_binary(&args)
}

fn test(extra: &[String]) -> anyhow::Result<()> {
    setup::run()?;
    build_ebpf::run()?;
    cmd::cargo(&["fmt", "--all", "--", "--check"])?;
    // The eBPF and fuzz crates are outside the workspace: check them with the same (stable)
    // rustfmt.
    let mut rustfmt = std::process::Command::new("rustfmt");
    rustfmt
        .args(["--edition", "2021", "--check", "vethtrace-ebpf/src/main.rs"])
        .args(
            fuzz::TARGETS
                .iter()
                .map(|t| format!("fuzz/fuzz_targets/{t}.rs")),
        )
        .current_dir(cmd::root());
    cmd::run(&mut rustfmt)?;
    cmd::cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // The black-box tests run the real binary.
    cmd::cargo(&["build", "--package", "vethtrace"])?;
    let mut args = vec!["test", "--workspace", "--no-fail-fast"];
    if !extra.is_empty() {
        args.push("--");
        args.extend(extra.iter().map(String::as_str));
    }
    // Privileged tests fail instead of skipping when run through here.
    std::env::set_var("VETHTRACE_REQUIRE_PRIVILEGED", "1");
    cmd::cargo(&args)?;
    if !extra.is_empty() {
        cmd::say("fuzz: skipped (cargo test was given arguments)");
        return Ok(());
    }
    fuzz::run(FUZZ_TEST_SECONDS)
}

/// Seconds each fuzz target runs in `cargo xtask test`: enough to replay the seed corpus and
/// find shallow crashes, a small part of the command's time.
const FUZZ_TEST_SECONDS: u32 = 10;
