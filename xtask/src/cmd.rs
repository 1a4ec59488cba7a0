//! Running external commands: each is printed before it runs, and a failure names it.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub fn say(msg: &str) {
    eprintln!("xtask: {msg}");
}

/// Runs `cmd`, printing it first; fails with its name if it does not succeed.
pub fn run(cmd: &mut Command) -> Result<()> {
    say(&format!("$ {}", show(cmd)));
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{}`", show(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", show(cmd));
    }
    Ok(())
}

/// Runs `cmd` quietly and returns its stdout, or None if it could not run or failed.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// `cargo ARGS` in the workspace root, with the workspace's toolchain.
pub fn cargo(args: &[&str]) -> Result<()> {
    run(Command::new("cargo").args(args).current_dir(root()))
}

/// `cargo ARGS` in a directory of the workspace, with the toolchain that directory pins (the
/// variables cargo set for this xtask would otherwise leak the stable toolchain into it).
pub fn cargo_in(dir: &str, args: &[&str]) -> Result<()> {
    let mut cmd = Command::new("cargo");
    cmd.args(args).current_dir(root().join(dir));
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTDOC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
    ] {
        cmd.env_remove(var);
    }
    run(&mut cmd)
}

/// Runs the debug vethtrace binary with `args`.
pub fn run_binary(args: &[&str]) -> Result<()> {
    run(Command::new(root().join("target/debug/vethtrace")).args(args))
}
