//! The `vethtrace` command: parses the command line, runs it, maps the outcome to an exit code.
//! Everything else lives in the library (`vethtrace::…`).

use std::process::ExitCode;

use clap::Parser;
use vethtrace::cli::Cli;

/// mimalloc rather than the system allocator: a live trace allocates and frees every packet's
/// hops (`correlate`), and glibc's malloc/free and the page faults of its trimmed heap were a
/// tenth of what decoding and correlating an event cost (`cargo xtask bench`, figure 5; the
/// bench uses the same allocator).
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
