//! The results: one row per figure (min / median / max of the repetitions, a target,
//! whether the median meets it), printed as a Markdown table and written as JSON.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::error::{BenchResult, Context};

/// What a figure is compared against; the median decides.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Target {
    /// The median must be at most this.
    AtMost(f64),
    /// The median must be at least this.
    AtLeast(f64),
    /// No target: context for another row.
    None,
}

impl Target {
    /// Whether `median` meets the target (`None` when there is no target).
    pub fn met(&self, median: f64) -> Option<bool> {
        match *self {
            Target::AtMost(t) => Some(median <= t),
            Target::AtLeast(t) => Some(median >= t),
            Target::None => None,
        }
    }

    /// `≤ 30`, `≥ 1000000`, or `—`.
    pub fn describe(&self) -> String {
        match *self {
            Target::AtMost(t) => format!("≤ {}", fmt_num(t)),
            Target::AtLeast(t) => format!("≥ {}", fmt_num(t)),
            Target::None => "—".into(),
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The item number (1–9: issue 6; 10: `tether mcp-proxy`).
    pub item: u8,
    /// What was measured.
    pub what: String,
    /// Unit of min / median / max.
    pub unit: String,
    /// How many samples.
    pub samples: usize,
    /// Smallest sample.
    pub min: f64,
    /// Median sample.
    pub median: f64,
    /// Largest sample.
    pub max: f64,
    /// The target.
    pub target: Target,
    /// Whether the median meets the target.
    pub met: Option<bool>,
    /// A remark (why no sample, what the figure includes).
    pub note: String,
}

impl Row {
    /// A row from `samples` (sorted here); a row without samples says why in `note`.
    pub fn new(item: u8, what: &str, unit: &str, samples: &[f64], target: Target) -> Row {
        let mut s: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        s.sort_by(f64::total_cmp);
        let (min, median, max) = match s.len() {
            0 => (f64::NAN, f64::NAN, f64::NAN),
            n => {
                let mid = if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 };
                (s[0], mid, s[n - 1])
            }
        };
        let met = if s.is_empty() { None } else { target.met(median) };
        Row {
            item,
            what: what.into(),
            unit: unit.into(),
            samples: s.len(),
            min,
            median,
            max,
            target,
            met,
            note: String::new(),
        }
    }

    /// A row for something that was not measured, saying why.
    pub fn skipped(item: u8, what: &str, why: &str) -> Row {
        let mut r = Row::new(item, what, "", &[], Target::None);
        r.note = why.into();
        r
    }

    /// With a note.
    pub fn note(mut self, note: impl Into<String>) -> Row {
        self.note = note.into();
        self
    }
}

/// A number with a precision that suits its size.
pub fn fmt_num(x: f64) -> String {
    if x.is_nan() {
        return "—".into();
    }
    let a = x.abs();
    if a >= 100_000.0 {
        format!("{:.0}", x)
    } else if a >= 100.0 {
        format!("{:.1}", x)
    } else if a >= 1.0 {
        format!("{:.2}", x)
    } else {
        format!("{:.3}", x)
    }
}

/// The Markdown table of `rows`.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str("| # | what | unit | n | min | median | max | target | met |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        let what = if r.note.is_empty() { r.what.clone() } else { format!("{} ({})", r.what, r.note) };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.item,
            what,
            r.unit,
            r.samples,
            fmt_num(r.min),
            fmt_num(r.median),
            fmt_num(r.max),
            r.target.describe(),
            met
        );
    }
    out
}

/// The whole run, as written to the JSON file.
#[derive(Debug, Serialize)]
pub struct Report {
    /// When the run ended (UTC, RFC 3339-ish, from `date -u`).
    pub date: String,
    /// Online CPU cores.
    pub cores: usize,
    /// Processes on the machine at the start.
    pub processes: usize,
    /// Kernel and machine (`uname -srm`).
    pub machine: String,
    /// The figures.
    pub rows: Vec<Row>,
}

/// Write `report` as pretty JSON to `path`, creating its directory.
pub fn write_json(report: &Report, path: &Path) -> BenchResult<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).ctx(format!("cannot create {}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(report).ctx("cannot serialize the report")?;
    std::fs::write(path, json + "\n").ctx(format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_even_and_odd_counts() {
        let r = Row::new(1, "x", "ms", &[3.0, 1.0, 2.0], Target::AtMost(2.0));
        assert_eq!((r.min, r.median, r.max, r.met), (1.0, 2.0, 3.0, Some(true)));
        let r = Row::new(1, "x", "ms", &[4.0, 1.0, 2.0, 3.0], Target::AtLeast(3.0));
        assert_eq!((r.median, r.met), (2.5, Some(false)));
        let r = Row::new(1, "x", "ms", &[], Target::AtMost(1.0));
        assert_eq!((r.samples, r.met), (0, None));
    }
}
