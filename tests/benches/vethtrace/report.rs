//! The bench's results: figures (median and spread of repeated trials) with their budgets,
//! grouped in sections, printed as a plain table and written as BENCHMARKS.md.
//!
//! A figure is judged on its median. A missed budget is MISS, never an error; a figure that
//! could not be measured says why.

use std::fmt::Write as _;

/// What a figure is measured in, for formatting.
#[derive(Debug, Clone, Copy)]
pub enum Unit {
    /// A dimensionless ratio (traced / untraced).
    Ratio,
    /// Something per second; the label says what ("pps", "events/s", "lines/s").
    Rate(&'static str),
    /// Bits per second.
    Bits,
    /// Nanoseconds (per program run).
    Ns,
    /// Seconds (a wall-clock duration).
    Secs,
    /// Mebibytes.
    MiB,
    /// Percent of one CPU.
    Percent,
    /// A plain count.
    Count,
}

impl Unit {
    pub fn format(self, v: f64) -> String {
        match self {
            Unit::Ratio => format!("{v:.3}"),
            Unit::Rate(what) => format!("{} {what}", si(v)),
            Unit::Bits => format!("{}bit/s", si(v)),
            Unit::Ns => format!("{v:.1} ns"),
            Unit::Secs if v < 0.9995 => format!("{:.0} ms", v * 1e3),
            Unit::Secs => format!("{v:.2} s"),
            Unit::MiB => format!("{v:.1} MiB"),
            Unit::Percent => format!("{v:.2} %"),
            Unit::Count => format!("{v:.0}"),
        }
    }
}

/// 1234567 → "1.23 M".
fn si(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.2} G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if a >= 1e3 {
        format!("{:.1} k", v / 1e3)
    } else {
        format!("{v:.0} ")
    }
}

/// Repeated measurements of one figure.
#[derive(Debug, Clone)]
pub struct Sample {
    pub values: Vec<f64>,
}

impl Sample {
    pub fn new(values: Vec<f64>) -> Sample {
        Sample { values }
    }

    pub fn median(&self) -> f64 {
        let mut v = self.values.clone();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    pub fn min(&self) -> f64 {
        self.values.iter().copied().fold(f64::INFINITY, f64::min)
    }

    pub fn max(&self) -> f64 {
        self.values
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
    }
}

/// What a figure is held to.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    AtLeast(f64),
    AtMost(f64),
    Below(f64),
    /// Recorded for later comparison, no budget.
    Baseline,
    /// Context for another figure, no budget.
    Info,
}

impl Budget {
    fn describe(self, unit: Unit) -> String {
        match self {
            Budget::AtLeast(b) => format!("≥ {}", unit.format(b)),
            Budget::AtMost(b) => format!("≤ {}", unit.format(b)),
            Budget::Below(b) => format!("< {}", unit.format(b)),
            Budget::Baseline => "baseline".into(),
            Budget::Info => "—".into(),
        }
    }

    fn verdict(self, v: f64) -> &'static str {
        let pass = match self {
            Budget::AtLeast(b) => v >= b,
            Budget::AtMost(b) => v <= b,
            Budget::Below(b) => v < b,
            Budget::Baseline | Budget::Info => return "",
        };
        if pass {
            "PASS"
        } else {
            "MISS"
        }
    }
}

#[derive(Debug, Clone)]
enum Value {
    Sample(Sample),
    /// Could not be measured here, and why.
    NotMeasured(String),
    /// The section failed with an error.
    Error(String),
}

#[derive(Debug, Clone)]
pub struct Row {
    figure: String,
    unit: Unit,
    budget: Budget,
    value: Value,
}

impl Row {
    fn cells(&self) -> [String; 6] {
        match &self.value {
            Value::Sample(s) => {
                let (median, spread) = if s.values.len() > 1 {
                    (
                        self.unit.format(s.median()),
                        format!(
                            "{} – {}",
                            self.unit.format(s.min()),
                            self.unit.format(s.max())
                        ),
                    )
                } else {
                    (self.unit.format(s.median()), "—".into())
                };
                [
                    self.figure.clone(),
                    median,
                    spread,
                    s.values.len().to_string(),
                    self.budget.describe(self.unit),
                    self.budget.verdict(s.median()).into(),
                ]
            }
            Value::NotMeasured(why) => [
                self.figure.clone(),
                format!("not measured: {why}"),
                String::new(),
                String::new(),
                self.budget.describe(self.unit),
                "N/A".into(),
            ],
            Value::Error(e) => [
                self.figure.clone(),
                format!("error: {e}"),
                String::new(),
                String::new(),
                self.budget.describe(self.unit),
                "ERROR".into(),
            ],
        }
    }

    pub fn is_miss(&self) -> bool {
        matches!(&self.value, Value::Sample(s) if self.budget.verdict(s.median()) == "MISS")
    }
}

#[derive(Debug, Clone)]
pub struct Section {
    pub title: String,
    rows: Vec<Row>,
    notes: Vec<String>,
    /// Extra lines written verbatim after the table (e.g. the baseline line).
    pub verbatim: Vec<String>,
    pub failed: bool,
}

impl Section {
    pub fn new(title: impl Into<String>) -> Section {
        Section {
            title: title.into(),
            rows: Vec::new(),
            notes: Vec::new(),
            verbatim: Vec::new(),
            failed: false,
        }
    }

    pub fn figure(&mut self, figure: impl Into<String>, unit: Unit, budget: Budget, s: Sample) {
        let row = Row {
            figure: figure.into(),
            unit,
            budget,
            value: Value::Sample(s),
        };
        eprintln!("bench:   {}", row.cells()[..3].join("  "));
        self.rows.push(row);
    }

    pub fn not_measured(
        &mut self,
        figure: impl Into<String>,
        unit: Unit,
        budget: Budget,
        why: impl Into<String>,
    ) {
        self.rows.push(Row {
            figure: figure.into(),
            unit,
            budget,
            value: Value::NotMeasured(why.into()),
        });
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// Records that the section stopped on an error (which fails the bench).
    pub fn error(&mut self, e: &anyhow::Error) {
        self.failed = true;
        self.rows.push(Row {
            figure: "(section stopped)".into(),
            unit: Unit::Count,
            budget: Budget::Info,
            value: Value::Error(format!("{e:#}")),
        });
    }

    /// Marks every budgeted figure of this section as not measured, with the reason.
    pub fn skip_all(&mut self, figures: &[(&'static str, Unit, Budget)], why: &str) {
        for (f, u, b) in figures {
            self.not_measured(*f, *u, *b, why);
        }
    }

    pub fn rows(&self) -> &[Row] {
        &self.rows
    }
}

const HEADER: [&str; 6] = [
    "figure",
    "median",
    "spread (min – max)",
    "n",
    "budget",
    "result",
];

/// The plain-text table for the terminal.
pub fn text_table(sections: &[Section]) -> String {
    let mut widths = HEADER.map(|h| h.chars().count());
    for row in sections.iter().flat_map(|s| &s.rows) {
        for (w, c) in widths.iter_mut().zip(row.cells()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| -> String {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            let pad = w.saturating_sub(c.chars().count());
            // Numbers right-aligned, words left-aligned.
            if (1..=3).contains(&i) {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(pad));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = String::new();
    let header: Vec<String> = HEADER.iter().map(|h| h.to_string()).collect();
    let _ = writeln!(out, "{}", line(&header));
    let total: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
    let _ = writeln!(out, "{}", "─".repeat(total));
    for s in sections {
        let _ = writeln!(out, "{}", s.title);
        for r in &s.rows {
            let _ = writeln!(out, "{}", line(&r.cells()));
        }
        for n in &s.notes {
            let _ = writeln!(out, "    · {n}");
        }
        for v in &s.verbatim {
            let _ = writeln!(out, "    {v}");
        }
    }
    out
}

/// The tables as Markdown, one per section, each followed by its notes.
pub fn markdown(sections: &[Section]) -> String {
    let mut out = String::new();
    for s in sections {
        let _ = writeln!(out, "## {}\n", s.title);
        let _ = writeln!(out, "| {} |", HEADER.join(" | "));
        let _ = writeln!(out, "|---|---:|---:|---:|---|---|");
        for r in &s.rows {
            let cells: Vec<String> = r.cells().iter().map(|c| c.replace('|', "\\|")).collect();
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
        if !s.notes.is_empty() {
            out.push('\n');
            for n in &s.notes {
                let _ = writeln!(out, "- {n}");
            }
        }
        for v in &s.verbatim {
            let _ = writeln!(out, "\n{v}");
        }
        out.push('\n');
    }
    out
}
