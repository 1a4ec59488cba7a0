//! vethtrace's benchmarks: `cargo bench -p vethtrace-tests --bench vethtrace` (release,
//! `harness = false`), run by `cargo xtask bench` after setup, the eBPF build and
//! `cargo build --release -p vethtrace`. Prints a table and writes BENCHMARKS.md at the root.
//!
//! The machine is small and shared, so no figure is a bare timing compared with a constant
//! from elsewhere: each is a ratio or a rate measured in this run, from interleaved trials
//! (untraced and traced alternating, at least 5 pairs), given as median and spread (min – max).
//! A missed budget is printed as MISS and does not fail the bench; errors do (exit 1).
//!
//! Owns one file per figure group: `throughput` (1, 2), `progcost` (3, 4), `userspace` (5),
//! `lossless` (6, judged on `feeder`'s search), `scale` (7), `killnine` (8); `traffic` runs
//! bounded iperf3, `session` is a tracing session with reachable program fds, `emptyprog` is
//! the empty tc program that gives figures 1–4 their floor, `cpus` pins threads, `report`
//! formats, `machine` describes the host.
//!
//! The lab rule: topology comes only from `vethtrace::lab::Lab` or from namespaces `scale`
//! creates under a Drop guard, never touching the root namespace's links, routes, sysctls or
//! iptables; traffic flows only between lab namespaces, bounded in time and count. The bench
//! checks at the end that none of its namespaces is left.

/// The vethtrace binary's allocator (vethtrace/src/main.rs), so that figure 5 measures what
/// the tool does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cpus;
mod emptyprog;
mod feeder;
mod killnine;
mod lossless;
mod machine;
mod progcost;
mod report;
mod scale;
mod session;
mod throughput;
mod traffic;
mod userspace;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Instant,
};

use anyhow::Result;
use vethtrace::lab::{Lab, LabKind};

use report::{Budget, Sample, Section, Unit};

fn main() -> ExitCode {
    let started = Instant::now();
    let machine = machine::Machine::read();
    eprintln!("bench: {}", machine.line());
    let root = repo_root();
    let previous = progcost::read_previous(&root);
    let mut sections = Vec::new();

    let blocked = blocked();
    let cli = release_binary();
    let only = Only::from_args();

    if only.wants(5) {
        sections.push(section(
            "5. User space: decode, correlate, render (one core)",
            userspace::run,
        ));
    }
    match &blocked {
        Some(why) => sections.extend(
            skipped(why)
                .into_iter()
                .filter(|s| only.wants_title(&s.title)),
        ),
        None => privileged(
            &mut sections,
            &only,
            previous.as_deref(),
            cli.as_deref().map_err(String::as_str),
        ),
    }
    sections.sort_by(|a, b| a.title.cmp(&b.title));
    sections.push(hygiene());

    let elapsed = started.elapsed();
    let table = report::text_table(&sections);
    println!("\n{table}");
    let misses: Vec<String> = sections
        .iter()
        .flat_map(|s| {
            s.rows()
                .iter()
                .filter(|r| r.is_miss())
                .map(|_| s.title.clone())
        })
        .collect();
    let failed =
        sections.iter().any(|s| s.failed) || (blocked.is_some() && vethtrace_tests::required());
    println!(
        "bench took {}:{:02}; {} budget(s) missed{}",
        elapsed.as_secs() / 60,
        elapsed.as_secs() % 60,
        misses.len(),
        if failed { "; errors (see above)" } else { "" }
    );

    if only.all() {
        let md = markdown(&machine, elapsed.as_secs(), &sections, blocked.as_deref());
        let path = root.join("BENCHMARKS.md");
        match std::fs::write(&path, md) {
            Ok(()) => println!("wrote {}", path.display()),
            Err(e) => {
                eprintln!("bench: could not write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    } else {
        println!("only some figures were run: BENCHMARKS.md left as it was");
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Figure groups named on the command line (`cargo bench … -- 3 7`); all when none is.
/// cargo's own `--bench` flag is ignored.
struct Only(Vec<u32>);

impl Only {
    fn from_args() -> Only {
        Only(
            std::env::args()
                .skip(1)
                .filter(|a| !a.starts_with('-'))
                .filter_map(|a| a.parse().ok())
                .collect(),
        )
    }

    fn all(&self) -> bool {
        self.0.is_empty()
    }

    fn wants(&self, n: u32) -> bool {
        self.all() || self.0.contains(&n)
    }

    /// For a title "N. …".
    fn wants_title(&self, title: &str) -> bool {
        title
            .split('.')
            .next()
            .and_then(|n| n.parse().ok())
            .is_none_or(|n| self.wants(n))
    }
}

/// Runs one figure group; an error is recorded in its section (and fails the bench).
fn section(title: &str, f: impl FnOnce(&mut Section) -> Result<()>) -> Section {
    eprintln!("bench: {title}");
    let t = Instant::now();
    let mut s = Section::new(title);
    if let Err(e) = f(&mut s) {
        eprintln!("bench:   error: {e:#}");
        s.error(&e);
    }
    eprintln!("bench:   ({:.0} s)", t.elapsed().as_secs_f64());
    s
}

/// The figures that need root, the eBPF object and the lab.
fn privileged(
    sections: &mut Vec<Section>,
    only: &Only,
    previous: Option<&str>,
    cli: Result<&Path, &str>,
) {
    if only.wants(4) {
        sections.push(section(
            "4. BPF_PROG_TEST_RUN ns per run on fixed frames",
            |s| progcost::test_run(s, previous),
        ));
    }
    if [1, 2, 3, 6, 8].iter().any(|&n| only.wants(n)) {
        with_lab(sections, only, cli);
    }
    if only.wants(7) {
        sections.push(section(
            "7. 100 namespaces × 2 veths × 2 directions",
            |s| scale::run(s, cli),
        ));
    }
}

/// The figures measured on one bridge lab (removed when this returns).
fn with_lab(sections: &mut Vec<Section>, only: &Only, cli: Result<&Path, &str>) {
    let lab = match Lab::create(LabKind::Bridge) {
        Ok(lab) => lab,
        Err(e) => {
            let mut s = Section::new("1. (lab)");
            s.error(&e);
            sections.push(s);
            return;
        }
    };
    if only.wants(1) {
        sections.push(section(
            "1. iperf3 TCP across the bridge lab (ns01 → ns02)",
            |s| throughput::tcp(&lab, s),
        ));
    }
    if only.wants(2) {
        sections.push(section(
            "2. iperf3 UDP, 64-byte datagrams, packets/s",
            |s| throughput::udp(&lab, s),
        ));
    }
    if only.wants(3) {
        sections.push(section(
            "3. ns per program run (BPF_ENABLE_STATS), and the wakeup trap",
            |s| progcost::live(&lab, s),
        ));
    }
    if only.wants(6) {
        sections.push(section("6. Highest lossless event rate", |s| {
            lossless::run(&lab, s)
        }));
    }
    if only.wants(8) {
        sections.push(section(
            "8. 100 × kill -9 of vethtrace trace",
            |s| match cli {
                Ok(bin) => killnine::run(&lab, s, bin),
                Err(why) => {
                    s.not_measured(
                        "left attached after 100 × kill -9",
                        Unit::Count,
                        Budget::AtMost(0.0),
                        why,
                    );
                    Ok(())
                }
            },
        ));
    }
}

/// A figure as planned: name, unit, budget.
type Planned = (&'static str, Unit, Budget);

/// Every privileged section, not measured, with the reason.
fn skipped(why: &str) -> Vec<Section> {
    let groups: [(&str, &[Planned]); 7] = [
        (
            "1. iperf3 TCP across the bridge lab (ns01 → ns02)",
            &[
                ("traced / untraced", Unit::Ratio, Budget::AtLeast(0.98)),
                (
                    "filtered out / untraced",
                    Unit::Ratio,
                    Budget::AtLeast(0.99),
                ),
            ],
        ),
        (
            "2. iperf3 UDP, 64-byte datagrams, packets/s",
            &[
                ("traced / untraced", Unit::Ratio, Budget::AtLeast(0.90)),
                (
                    "filtered out / untraced",
                    Unit::Ratio,
                    Budget::AtLeast(0.97),
                ),
            ],
        ),
        (
            "3. ns per program run (BPF_ENABLE_STATS), and the wakeup trap",
            &[
                ("tc programs, emitting", Unit::Ns, Budget::AtMost(60.0)),
                ("tc programs, filtered out", Unit::Ns, Budget::AtMost(25.0)),
                ("wakeup trap ratio", Unit::Ratio, Budget::AtMost(1.2)),
            ],
        ),
        (
            "4. BPF_PROG_TEST_RUN ns per run on fixed frames",
            &[("IPv4 ICMP, TCP, VXLAN", Unit::Ns, Budget::Baseline)],
        ),
        (
            "6. Highest lossless event rate",
            &[("events/s", Unit::Rate("events/s"), Budget::AtLeast(1e6))],
        ),
        (
            "7. 100 namespaces × 2 veths × 2 directions",
            &[
                ("attach_all", Unit::Secs, Budget::AtMost(1.0)),
                ("topology::discover", Unit::Secs, Budget::AtMost(1.0)),
                ("RSS", Unit::MiB, Budget::AtMost(30.0)),
                ("idle CPU", Unit::Percent, Budget::Below(0.5)),
            ],
        ),
        (
            "8. 100 × kill -9 of vethtrace trace",
            &[("left attached", Unit::Count, Budget::AtMost(0.0))],
        ),
    ];
    groups
        .iter()
        .map(|(title, figures)| {
            let mut s = Section::new(*title);
            s.skip_all(figures, why);
            s
        })
        .collect()
}

/// Why the privileged figures cannot run here, if they cannot.
fn blocked() -> Option<String> {
    let mut why = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        why.push("not root".to_string());
    }
    if let Err(e) = vethtrace::ebpf_object::bytes() {
        why.push(format!("{e:#}"));
    }
    let iperf = std::process::Command::new("iperf3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !iperf {
        why.push("iperf3 is missing (`cargo xtask setup` installs it)".into());
    }
    (!why.is_empty()).then(|| why.join("; "))
}

/// The release `vethtrace` next to this bench (`<target>/release/vethtrace`), or why not.
fn release_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("no current exe: {e}"))?;
    // <target>/release/deps/vethtrace-<hash> → <target>/release/vethtrace
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("vethtrace"))
        .ok_or("cannot locate the target directory")?;
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "{} is missing: `cargo build --release -p vethtrace` (cargo xtask bench does)",
            bin.display()
        ))
    }
}

/// The workspace root (this crate is tests/).
fn repo_root() -> PathBuf {
    let mut p = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    p.pop();
    p
}

/// Namespaces of this process left in `ip netns list` (its prefixes are `vt-<pid>-`).
fn hygiene() -> Section {
    let mut s = Section::new("Lab rule");
    let prefix = format!("vt-{}-", std::process::id());
    match std::fs::read_dir("/run/netns") {
        Ok(dir) => {
            let left: Vec<String> = dir
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect();
            s.figure(
                "this run's namespaces left in `ip netns list`",
                Unit::Count,
                Budget::AtMost(0.0),
                Sample::new(vec![left.len() as f64]),
            );
            if !left.is_empty() {
                s.note(format!("left: {}", left.join(", ")));
            }
        }
        // No /run/netns: no named namespace exists at all.
        Err(_) => s.figure(
            "this run's namespaces left in `ip netns list`",
            Unit::Count,
            Budget::AtMost(0.0),
            Sample::new(vec![0.0]),
        ),
    }
    s
}

fn markdown(
    m: &machine::Machine,
    secs: u64,
    sections: &[Section],
    blocked: Option<&str>,
) -> String {
    let mut out = String::new();
    out.push_str("# vethtrace benchmarks\n\n");
    out.push_str(
        "Generated by `cargo xtask bench` (tests/benches/vethtrace); rerun it rather than editing this file.\n\n",
    );
    out.push_str(&format!(
        "- date: {}\n- machine: {}\n- the bench took {}:{:02} (min:s)\n",
        m.date,
        m.line(),
        secs / 60,
        secs % 60
    ));
    if let Some(why) = blocked {
        out.push_str(&format!("- privileged figures not measured: {why}\n"));
    }
    out.push_str(
        "\nThis machine is small and shared: every figure is a ratio or a rate measured within this run, \
         untraced and traced trials interleaved (the order alternating between rounds), reported as the median \
         and the spread (min – max) over n trials. Budgets are issue 6's; a figure is judged on its median, and \
         MISS marks a missed budget (it does not fail the bench). \"—\" rows give context for the figure above them.\n\n",
    );
    out.push_str(&report::markdown(sections));
    out
}
