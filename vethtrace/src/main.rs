//! The `vethtrace` command: parses the command line, runs it, maps the outcome to an exit code.
//! Everything else lives in the library (`vethtrace::…`).

use std::process::ExitCode;

use clap::Parser;
use vethtrace::cli::Cli;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors; usage errors exit 2 like every other bad input.
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    vethtrace::run(cli)
}
