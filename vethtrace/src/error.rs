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

/// Whether the error chain ends in a closed stdout (`vethtrace trace | head`).
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
