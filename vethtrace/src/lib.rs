//! vethtrace: where did my packet go?
//!
//! The library behind the `vethtrace` command. Data flows one way:
//! kernel event ([`events`]) → [`decode`] (names from [`topology`]) → [`correlate`] into hops →
//! [`diagnose`] → [`render`]. Loading and attaching the eBPF programs ([`loader`], [`attach`])
//! and entering namespaces ([`netns`]) are the edges; [`lab`] builds namespaced topologies for
//! the demo, the tests and the benchmarks. Each subcommand lives in [`commands`].

pub mod allocator;
pub mod attach;
pub mod btf;
pub mod cli;
pub mod commands;
pub mod correlate;
pub mod decode;
pub mod diagnose;
pub mod ebpf_object;
pub mod error;
pub mod events;
pub mod filter;
pub mod interrupt;
pub mod kallsyms;
pub mod kfunc;
pub mod lab;
pub mod latency;
pub mod loader;
pub mod name;
pub mod netconf;
pub mod netns;
pub mod privileges;
pub mod probe;
pub mod render;
pub mod topology;
pub mod tracer;
pub mod upper;
pub mod watch;

use std::process::ExitCode;

pub use error::UsageError;

/// Runs a parsed command line and maps the outcome to the process exit code: the command's own
/// code on success, 2 with one line on stderr on any error, 0 quietly when stdout was closed.
pub fn run(cli: cli::Cli) -> ExitCode {
    match commands::dispatch(cli) {
        Ok(code) => code,
        Err(e) if error::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vethtrace: {}", error::one_line(&e));
            ExitCode::from(2)
        }
    }
}
