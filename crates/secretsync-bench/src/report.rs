//! The report: rows printed as they are measured and collected for `results.md`, the
//! units they are printed in, and request-count arithmetic.

use std::collections::BTreeMap;

/// A measured figure for the table.
struct Row {
    scenario: String,
    metric: String,
    value: String,
    target: String,
}

/// Every figure of the run, in the order measured.
#[derive(Default)]
pub struct Report {
    rows: Vec<Row>,
}

impl Report {
    /// Prints a figure and keeps it for the markdown table.
    pub fn row(&mut self, scenario: &str, metric: &str, value: impl Into<String>, target: &str) {
        let value = value.into();
        println!("  {metric}: {value}");
        self.rows.push(Row {
            scenario: scenario.into(),
            metric: metric.into(),
            value,
            target: target.into(),
        });
    }

    /// One table per scenario, as in BENCHMARKS.md.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let mut last = String::new();
        for r in &self.rows {
            if r.scenario != last {
                out.push_str(&format!(
                    "\n### {}\n\n| metric | measured | target |\n|---|---|---|\n",
                    r.scenario
                ));
                last = r.scenario.clone();
            }
            out.push_str(&format!("| {} | {} | {} |\n", r.metric, r.value, r.target));
        }
        out
    }
}

/// KiB as MiB.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Seconds as printed in the report.
pub fn secs(d: f64) -> String {
    format!("{d:.2} s")
}

/// Request counts per `verb resource`, after minus before.
pub fn count_diff(
    before: &BTreeMap<(String, String), u64>,
    after: &BTreeMap<(String, String), u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0);
            (d > 0).then(|| (format!("{} {}", k.0, k.1), d))
        })
        .collect()
}

/// All requests of a [`count_diff`].
pub fn total(c: &BTreeMap<String, u64>) -> u64 {
    c.values().sum()
}

/// The writes (create, update, patch, delete) of a [`count_diff`].
pub fn writes(c: &BTreeMap<String, u64>) -> u64 {
    c.iter()
        .filter(|(k, _)| {
            ["create ", "update ", "patch ", "delete "]
                .iter()
                .any(|v| k.starts_with(v))
        })
        .map(|(_, v)| v)
        .sum()
}

/// One `verb resource` of a [`count_diff`].
pub fn get(c: &BTreeMap<String, u64>, k: &str) -> u64 {
    c.get(k).copied().unwrap_or(0)
}
