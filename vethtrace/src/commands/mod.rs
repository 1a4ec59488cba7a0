//! One file per subcommand; `dispatch` routes a parsed command line to it.

pub mod demo;
pub mod lab;
pub mod peer;
pub mod ping;
pub mod topo;
pub mod trace;

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{Cli, Command};

pub fn dispatch(cli: Cli) -> Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cli.command {
        Command::Demo(args) => demo::run(&args, &mut out),
        Command::Lab(cmd) => lab::run(&cmd, &mut out),
        Command::Trace(args) => trace::run(&args, &mut out),
        Command::Topo(args) => topo::run(&args, &mut out),
        Command::Peer(args) => peer::run(&args, &mut out),
        Command::Ping(args) => ping::run(&args, &mut out),
    }
}
