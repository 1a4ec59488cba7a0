//! The `vethtrace` command: parses the command line, runs it, maps the outcome to an exit code.
//! Everything else lives in the library (`vethtrace::…`).

use std::process::ExitCode;

use clap::Parser;
use vethtrace::cli::Cli;

/// mimalloc rather than the system allocator: a live trace allocates and frees every packet's
/// hops, and glibc's malloc/free and the page faults of its trimmed heap cost 15–20% of the
/// events a second of decode + correlate (`cargo xtask bench`, figure 5, which measures with
/// the same allocator). What the start leaves behind is handed back once a trace is ready
/// (`vethtrace::allocator`).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version are not errors.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        // Usage errors are one line and exit 2, like every other bad input.
        Err(e) => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or_default();
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("vethtrace: {first} (see `vethtrace --help`)");
            return ExitCode::from(2);
        }
    };
    vethtrace::run(cli)
}
