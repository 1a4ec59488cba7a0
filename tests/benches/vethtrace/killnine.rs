//! Figure 8: 100 cycles of starting the release `vethtrace trace` on the bridge lab, waiting
//! until it is attached, and killing it with SIGKILL (no destructor runs); then counting the
//! programs, TCX links and clsact filters still attached to the lab's interfaces.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use vethtrace::{
    lab::Lab,
    topology::{self, DiscoverOptions},
};

use crate::{
    report::{Budget, Sample, Section, Unit},
    scale::wait_ready,
    traffic::ChildGuard,
};

const CYCLES: usize = 100;

pub fn run(lab: &Lab, sec: &mut Section, bin: &Path) -> Result<()> {
    let ready = std::env::temp_dir().join(format!("vethtrace-bench-{}-kill", std::process::id()));
    let mut cycle_s = Vec::new();
    let mut attached_first = 0;
    for i in 0..CYCLES {
        let _ = std::fs::remove_file(&ready);
        let mut cmd = Command::new(bin);
        cmd.arg("trace");
        for (_, ns) in lab.roles() {
            cmd.args(["--netns", ns]);
        }
        cmd.arg("--ready-file")
            .arg(&ready)
            .arg("icmp")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let start = Instant::now();
        let mut trace = ChildGuard(Some(cmd.spawn().context("start vethtrace trace")?));
        wait_ready(&mut trace, &ready, Duration::from_secs(30))
            .with_context(|| format!("cycle {}", i + 1))?;
        if i == 0 {
            // The cycles mean something only if the trace really attached.
            attached_first = programs_in(lab)?.len();
            if attached_first == 0 {
                bail!("the trace reported ready but nothing is attached to the lab");
            }
        }
        let child = trace
            .0
            .as_mut()
            .ok_or_else(|| anyhow!("no trace process"))?;
        child.kill().context("kill -9")?; // SIGKILL
        child.wait()?;
        cycle_s.push(start.elapsed().as_secs_f64());
    }
    let _ = std::fs::remove_file(&ready);
    let left = programs_in(lab)?;
    sec.figure(
        format!("left attached after {CYCLES} × kill -9"),
        Unit::Count,
        Budget::AtMost(0.0),
        Sample::new(vec![left.len() as f64]),
    );
    sec.figure(
        "one cycle: start, attach, kill -9, reap",
        Unit::Secs,
        Budget::Info,
        Sample::new(cycle_s),
    );
    sec.note(format!(
        "each trace attached {attached_first} programs to the lab's {} namespaces (counted in cycle 1); counted afterwards with topology::discover(programs: true) on the lab's namespaces: TCX programs and clsact bpf filters{}",
        lab.roles().len(),
        if left.is_empty() {
            String::new()
        } else {
            format!(" — left: {}", left.join(", "))
        }
    ));
    Ok(())
}

/// `ns ifname mode name` of every tc/TCX program on the lab's interfaces.
fn programs_in(lab: &Lab) -> Result<Vec<String>> {
    let t = topology::discover(&DiscoverOptions {
        netns: lab.roles().iter().map(|(_, ns)| ns.to_string()).collect(),
        programs: true,
        ..Default::default()
    })?;
    Ok(t.namespaces
        .iter()
        .flat_map(|ns| {
            ns.interfaces.iter().flat_map(move |i| {
                i.programs
                    .iter()
                    .map(move |p| format!("{} {} {} {}", ns.name, i.name, p.mode, p.name))
            })
        })
        .collect())
}
