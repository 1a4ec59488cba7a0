//! Runs the command-line tools the labs are built with (iproute2's `ip` and `bridge`, `iptables`,
//! `sysctl`, `ping`) and turns a failure into one line naming the exact command and its stderr,
//! e.g. "`ip -n vt-1-0-node link add br01 type bridge` failed: RTNETLINK answers: File exists".
//!
//! Owns: spawning those tools and listing `ip netns` names. Nothing here decides what to run;
//! the lab files do.

use std::io::ErrorKind;
use std::process::{Command, Output, Stdio};

use anyhow::{anyhow, Result};

/// Longest stderr excerpt kept in an error message.
const MAX_REASON: usize = 400;

/// The command as one shell-like line, for messages.
pub(crate) fn show(argv: &[&str]) -> String {
    argv.join(" ")
}

/// Runs `argv` to completion with stdin closed and a C locale (so output can be parsed).
/// Succeeds whatever the exit status; fails only when the program could not be started.
pub(crate) fn spawn(argv: &[&str]) -> Result<Output> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| anyhow!("internal error: empty command line"))?;
    Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            let hint = if e.kind() == ErrorKind::NotFound {
                format!(" (is `{program}` installed and on PATH?)")
            } else {
                String::new()
            };
            anyhow!("could not run `{}`: {e}{hint}", show(argv))
        })
}

/// Runs `argv` and fails unless it exits 0; the error names the command and quotes its stderr.
pub(crate) fn run(argv: &[&str]) -> Result<Output> {
    let out = spawn(argv)?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(anyhow!("`{}` failed: {}", show(argv), reason(&out)))
    }
}

/// Why a finished command failed, on one line: its stderr, else its stdout, else its exit status.
pub(crate) fn reason(out: &Output) -> String {
    let text = one_line(&out.stderr);
    let text = if text.is_empty() {
        one_line(&out.stdout)
    } else {
        text
    };
    if text.is_empty() {
        format!("{} with no output", out.status)
    } else {
        text
    }
}

/// Joins the non-empty lines of `bytes` with "; " and truncates the result.
fn one_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut line = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    if line.len() > MAX_REASON {
        let mut cut = MAX_REASON;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push('…');
    }
    line
}

/// Names of all named network namespaces (`ip netns list`), in the order `ip` prints them.
pub(crate) fn list_netns() -> Result<Vec<String>> {
    let out = run(&["ip", "netns", "list"])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// `ip netns del NAME`.
pub(crate) fn del_netns(name: &str) -> Result<()> {
    run(&["ip", "netns", "del", name]).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_names_command_and_stderr() {
        let err = run(&[
            "sh",
            "-c",
            "echo 'RTNETLINK answers: File exists' >&2; exit 2",
        ])
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
        assert_eq!(
            err,
            "`sh -c echo 'RTNETLINK answers: File exists' >&2; exit 2` failed: RTNETLINK answers: File exists"
        );
    }

    #[test]
    fn missing_program_is_one_line() {
        let err = run(&["/nonexistent/vethtrace-no-such-program", "x"])
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(
            err.starts_with("could not run `/nonexistent/vethtrace-no-such-program x`"),
            "{err}"
        );
        assert!(err.contains("installed"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }
}
