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

/// Every figure of the run, in the order measured, then the side-by-side tables.
#[derive(Default)]
pub struct Report {
    rows: Vec<Row>,
    /// Markdown of the tables added with [`Report::table`].
    tables: Vec<String>,
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
            out.push_str(&format!(
                "| {} | {} | {} |\n",
                cell(&r.metric),
                cell(&r.value),
                cell(&r.target)
            ));
        }
        for t in &self.tables {
            out.push_str(t);
        }
        out
    }

    /// Prints a table with its own columns and keeps it for the end of `results.md`.
    pub fn table(&mut self, title: &str, header: &[&str], rows: &[Vec<String>]) {
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        let mut t = format!("\n### {title}\n\n");
        let header: Vec<String> = header.iter().map(|h| (*h).to_string()).collect();
        t.push_str(&line(&header));
        t.push_str(&format!("|{}\n", "---|".repeat(header.len())));
        for r in rows {
            t.push_str(&line(r));
        }
        print!("{t}");
        self.tables.push(t);
    }
}

/// Text as one markdown table cell: `|` escaped, lines joined with `; ` (an error's
/// message may carry the end of a log).
fn cell(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
        .replace('|', "\\|")
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

/// Whether a `verb resource` key of a [`count_diff`] is a write (create, update, patch,
/// delete).
fn is_write(k: &str) -> bool {
    ["create ", "update ", "patch ", "delete "]
        .iter()
        .any(|v| k.starts_with(v))
}

/// The writes (create, update, patch, delete) of a [`count_diff`].
pub fn writes(c: &BTreeMap<String, u64>) -> u64 {
    c.iter().filter(|(k, _)| is_write(k)).map(|(_, v)| v).sum()
}

/// The writes of a [`count_diff`] by what they write.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WriteSplit {
    /// Status subresources (`lastSyncTime`, conditions).
    pub status: u64,
    /// Secrets (created, applied, updated, deleted).
    pub secrets: u64,
    /// Events, of either API group.
    pub events: u64,
    /// Everything else: Leases, finalizer patches, workload restarts.
    pub other: u64,
}

impl WriteSplit {
    pub fn of(c: &BTreeMap<String, u64>) -> WriteSplit {
        let mut w = WriteSplit::default();
        for (k, n) in c.iter().filter(|(k, _)| is_write(k)) {
            let resource = k.split_once(' ').map_or("", |(_, r)| r);
            if resource.ends_with("/status") {
                w.status += n;
            } else if resource == "secrets" {
                w.secrets += n;
            } else if resource == "events" {
                w.events += n;
            } else {
                w.other += n;
            }
        }
        w
    }

    pub fn total(&self) -> u64 {
        self.status + self.secrets + self.events + self.other
    }

    /// `status / Secret / Events / other` as printed.
    pub fn slashed(&self) -> String {
        format!(
            "{} / {} / {} / {}",
            self.status, self.secrets, self.events, self.other
        )
    }

    /// Each figure divided by `by` (per cycle), as printed.
    pub fn slashed_per(&self, by: f64) -> String {
        let f = |n: u64| format!("{:.0}", n as f64 / by);
        format!(
            "{} / {} / {} / {}",
            f(self.status),
            f(self.secrets),
            f(self.events),
            f(self.other)
        )
    }
}

/// Event writes after minus before in the fake's per-group counts: `(events.k8s.io
/// creates, events.k8s.io patches and updates, core v1 writes)`.
pub fn event_writes(
    before: &BTreeMap<(String, String, String), u64>,
    after: &BTreeMap<(String, String, String), u64>,
) -> (u64, u64, u64) {
    let mut out = (0, 0, 0);
    for ((verb, group, resource), n) in after {
        if resource != "events" {
            continue;
        }
        let key = (verb.clone(), group.clone(), resource.clone());
        let d = n - before.get(&key).copied().unwrap_or(0);
        match (group.as_str(), verb.as_str()) {
            ("events.k8s.io", "create") => out.0 += d,
            ("events.k8s.io", "patch" | "update") => out.1 += d,
            ("", "create" | "patch" | "update") => out.2 += d,
            _ => {}
        }
    }
    out
}

/// A [`count_diff`] as `verb resource N` items, largest first.
pub fn by_count(c: &BTreeMap<String, u64>) -> String {
    let mut v: Vec<(&String, &u64)> = c.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One `verb resource` of a [`count_diff`].
pub fn get(c: &BTreeMap<String, u64>, k: &str) -> u64 {
    c.get(k).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(items: &[(&str, u64)]) -> BTreeMap<String, u64> {
        items.iter().map(|(k, n)| ((*k).to_string(), *n)).collect()
    }

    #[test]
    fn writes_split_by_what_they_write() {
        let c = counts(&[
            ("patch secretbindings/status", 10),
            ("patch secretsources/status", 2),
            ("patch secrets", 7),
            ("create secrets", 1),
            ("create events", 4),
            ("patch events", 2),
            ("update leases", 3),
            ("patch secretbindings", 5),
            ("get secrets", 100),
            ("list events", 9),
            ("watch secretbindings", 1),
        ]);
        let w = WriteSplit::of(&c);
        assert_eq!(
            w,
            WriteSplit {
                status: 12,
                secrets: 8,
                events: 6,
                other: 8
            }
        );
        assert_eq!(w.total(), writes(&c));
        assert_eq!(w.slashed_per(2.0), "6 / 4 / 3 / 4");
        assert_eq!(
            by_count(&counts(&[("get a", 1), ("patch b", 5), ("get c", 5)])),
            "get c 5, patch b 5, get a 1"
        );
    }

    #[test]
    fn cells_stay_on_one_line() {
        assert_eq!(cell("a | b\n\n  c\n"), "a \\| b; c");
        let mut r = Report::default();
        r.row("s", "m", "exited: 2\nerror: x", "");
        assert!(r.markdown().contains("| m | exited: 2; error: x |  |"));
    }

    #[test]
    fn event_writes_by_group() {
        let k = |v: &str, g: &str, r: &str| (v.to_string(), g.to_string(), r.to_string());
        let before = BTreeMap::from([(k("create", "events.k8s.io", "events"), 2)]);
        let after = BTreeMap::from([
            (k("create", "events.k8s.io", "events"), 5),
            (k("patch", "events.k8s.io", "events"), 4),
            (k("create", "", "events"), 1),
            (k("list", "events.k8s.io", "events"), 3),
            (k("create", "", "secrets"), 9),
        ]);
        assert_eq!(event_writes(&before, &after), (3, 4, 1));
    }
}
