//! The cargo-fuzz targets in `fuzz/` (the filter language and the event decoder): built with
//! nightly, then each run for a fixed time from its committed seed corpus. `test` runs them
//! briefly, `bench` and `fuzz` longer; a crash (a panic or a failed assertion in a target) fails
//! the task with libFuzzer's report and the artifact to reproduce it with.
//!
//! The build is cargo-fuzz's `--dev` profile without a sanitizer (`-s none`): the targets are
//! safe Rust over bounds-checked reads, and a fresh clone builds them in under 4 CPU-minutes
//! instead of 11 for the default release build with AddressSanitizer, at a few thousand runs
//! per second instead of tens of thousands. `cargo +nightly fuzz run TARGET` (release, ASan) is
//! there for long runs by hand.

use std::{process::Command, time::Instant};

use anyhow::{bail, Context, Result};

use crate::cmd;

/// The targets, as named in fuzz/Cargo.toml.
pub const TARGETS: &[&str] = &["filter", "decode"];

/// Builds the targets, then runs each for `seconds` from `fuzz/corpus/TARGET`. New inputs
/// libFuzzer finds go to `fuzz/target/corpus/TARGET` (ignored by git), so the committed seeds
/// stay as they are and later runs start from everything found so far.
pub fn run(seconds: u32) -> Result<()> {
    let started = Instant::now();
    cmd::run(&mut fuzz_cargo(&["build", "--dev", "-s", "none"]))?;
    cmd::say(&format!(
        "fuzz: targets built in {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    let mut crashed = Vec::new();
    for target in TARGETS {
        let found = format!("target/corpus/{target}");
        std::fs::create_dir_all(cmd::root().join("fuzz").join(&found))
            .with_context(|| format!("creating fuzz/{found}"))?;
        let seeds = format!("corpus/{target}");
        let max_time = format!("-max_total_time={seconds}");
        let mut c = fuzz_cargo(&[
            "run",
            "--dev",
            "-s",
            "none",
            target,
            &found,
            &seeds,
            "--",
            &max_time,
            "-print_final_stats=1",
        ]);
        cmd::say(&format!("$ {}", cmd::show(&c)));
        let out = c
            .output()
            .with_context(|| format!("could not start `{}`", cmd::show(&c)))?;
        // libFuzzer reports on stderr; its progress lines are not worth printing when all is well.
        let log = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            cmd::say(&format!(
                "fuzz {target}: {} in {seconds} s, no crash",
                executions(&log).map_or_else(|| "? runs".into(), |n| format!("{n} runs"))
            ));
        } else {
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("{}", lines[lines.len().saturating_sub(60)..].join("\n"));
            crashed.push(*target);
        }
    }
    if !crashed.is_empty() {
        bail!(
            "fuzz target(s) {} crashed: the input is in fuzz/artifacts/TARGET/ (reproduce with \
             `cargo +nightly fuzz run --dev -s none TARGET artifacts/TARGET/FILE` in fuzz/)",
            crashed.join(", ")
        );
    }
    Ok(())
}

/// `cargo +nightly fuzz ARGS` in fuzz/, with the fuzz crate's own target directory.
fn fuzz_cargo(args: &[&str]) -> Command {
    let mut c = Command::new("cargo");
    c.arg("+nightly")
        .arg("fuzz")
        .args(args)
        .current_dir(cmd::root().join("fuzz"));
    // The variables cargo set for this xtask would otherwise leak the stable toolchain and the
    // workspace's target directory into the fuzz build.
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTDOC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
    ] {
        c.env_remove(var);
    }
    c
}

/// The number of inputs run, from libFuzzer's final statistics.
fn executions(log: &str) -> Option<u64> {
    log.lines()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|n| n.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_execution_count() {
        let log = "#1024 pulse cov: 10\nDone 5000 runs in 2 second(s)\n\
                   stat::number_of_executed_units: 5000\nstat::average_exec_per_sec:     2500\n";
        assert_eq!(executions(log), Some(5000));
        assert_eq!(executions("==1==ERROR: AddressSanitizer"), None);
    }
}
