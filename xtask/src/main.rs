//! `cargo xtask`: the project's own build and setup steps. Each subcommand is a small function
//! returning Result; every external command it runs is printed first.
//!
//! - `setup`: installs what a fresh machine lacks (and nothing else), saying each step.
//! - `build-ebpf`: builds the kernel side with nightly into target/bpf/vethtrace-ebpf.o.
//! - `demo`: setup, build-ebpf, then `vethtrace demo`.
//! - `test`: setup, build-ebpf, fmt check, clippy -D warnings, every test tier.
//! - `run -- ARGS`: setup, build-ebpf, then `vethtrace ARGS`.
//! - `bench`: setup, build-ebpf, release build, then the benchmarks (writes BENCHMARKS.md).

mod bench;
mod build_ebpf;
mod cmd;
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
    /// Install what is missing: Debian packages, nightly's rust-src, bpf-linker 0.13 (LLVM 22).
    Setup,
    /// Build the eBPF programs (nightly, -Z build-std=core, release, BTF) into target/bpf/.
    BuildEbpf,
    /// Setup, build, and run `vethtrace demo` (needs root).
    Demo,
    /// Setup, build, fmt --check, clippy -D warnings, then every test tier (privileged tests
    /// fail instead of skipping).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Setup, build, and run vethtrace with the given arguments.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Setup, build (release), then the benchmarks: prints the figures and writes BENCHMARKS.md
    /// (needs root). Figure numbers (e.g. `3 7`) run only those and leave BENCHMARKS.md alone.
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
    // The eBPF crate is outside the workspace: check it with the same (stable) rustfmt.
    cmd::run(
        std::process::Command::new("rustfmt")
            .args(["--edition", "2021", "--check", "vethtrace-ebpf/src/main.rs"])
            .current_dir(cmd::root()),
    )?;
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
    cmd::cargo(&args)
}
