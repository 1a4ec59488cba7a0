//! Errors the user sees. Every failure is one line (`{:#}` of an anyhow chain) and exit code 2;
//! [`UsageError`] marks the ones caused by bad input rather than by the system.

use std::fmt;

/// Bad input: a flag, an argument, a name that does not exist. The message says what was wrong
/// and how to fix it.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Shorthand: `bail_usage!("no lab named {name}")`.
#[macro_export]
macro_rules! bail_usage {
    ($($arg:tt)*) => {
        return Err(anyhow::Error::new($crate::error::UsageError(format!($($arg)*))))
    };
}

/// The error chain as the one line the user sees (`{:#}`). A cause that spans several lines
/// (a verifier log inside aya's load error) keeps its first line and its last meaningful one
/// (a verifier log ends with the refused instruction's complaint, then statistics: time,
/// stack depth, instructions processed).
pub fn one_line(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect();
    let first = lines.first().copied().unwrap_or_default();
    let last = lines[1.min(lines.len())..].iter().rev().find(|l| {
        let l = l.trim_start();
        !["processed ", "verification time", "stack depth"]
            .iter()
            .any(|stat| l.starts_with(stat))
    });
    match last {
        Some(last) => format!("{first} … {}", last.trim_start()),
        None => first.to_string(),
    }
}

/// Whether the error chain ends in a closed stdout (`vethtrace trace | head`).
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multi_line_cause_is_cut_to_its_first_line() {
        let e = anyhow::anyhow!(
            "Verifier output: 0: R1=ctx\n1: (61) r2 = *(u32 *)(r1 +0)\nR1 invalid mem access 'scalar'\nverification time 12 usec\nstack depth 0+0\nprocessed 2 insns (limit 1000000) max_states_per_insn 0 total_states 0\n"
        )
        .context("the kernel rejected vethtrace_tc_ingress");
        assert_eq!(
            one_line(&e),
            "the kernel rejected vethtrace_tc_ingress: Verifier output: 0: R1=ctx … R1 invalid mem access 'scalar'"
        );
        let e = anyhow::anyhow!("no such namespace").context("--netns x");
        assert_eq!(one_line(&e), "--netns x: no such namespace");
    }
}
