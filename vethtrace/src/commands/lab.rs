//! `vethtrace lab up|down|list`: namespaced topologies for people learning the tool. `up`
//! leaves the lab in place and says how to enter it; `down` removes every lab `up` made.

use std::{io::Write, process::ExitCode};

use anyhow::Result;

use crate::lab::{self, Lab, LabKind};

#[derive(Debug, clap::Subcommand)]
pub enum LabCommand {
    /// Create a lab (bridge, flannel, routed, pair) and leave it running.
    Up {
        /// Which lab: bridge, flannel, routed or pair.
        name: String,
    },
    /// Remove every lab created by `vethtrace lab up`.
    Down,
    /// List the labs `vethtrace lab up` created that are still present.
    List,
}

pub fn run(cmd: &LabCommand, out: &mut impl Write) -> Result<ExitCode> {
    crate::privileges::require_root("vethtrace lab")?;
    match cmd {
        LabCommand::Up { name } => {
            let kind: LabKind = name.parse()?;
            let lab = Lab::create_persistent(kind)?;
            writeln!(out, "{}", lab.describe())?;
            writeln!(out, "remove it with: vethtrace lab down")?;
            lab.keep();
        }
        LabCommand::Down => {
            let gone = lab::down_all()?;
            if gone.is_empty() {
                writeln!(out, "no lab namespaces to remove")?;
            } else {
                writeln!(out, "removed {} namespaces: {}", gone.len(), gone.join(" "))?;
            }
        }
        LabCommand::List => {
            for ns in lab::list_persistent() {
                writeln!(out, "{ns}")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
