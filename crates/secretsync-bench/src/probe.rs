//! Measurement probes: /proc for the operator process, the OpenBao audit log, the
//! operator's `/metrics`, percentiles, the machine description.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

/// CPU time and memory of one process, from `/proc/<pid>/stat` and `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    /// utime + stime, seconds.
    pub cpu_s: f64,
    /// VmRSS, KiB.
    pub rss_kib: u64,
    /// VmHWM (peak RSS), KiB.
    pub hwm_kib: u64,
}

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`, 100 if unknown).
pub fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|v| *v > 0.0)
        .unwrap_or(100.0)
}

/// One sample of process `pid`.
pub fn sample(pid: u32, tck: f64) -> Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name is in parentheses and may hold spaces: fields start after ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/pid/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': field 3 (state) is index 0, so utime (14) is 11 and stime (15) is 12.
    let utime: f64 = fields.get(11).context("utime")?.parse()?;
    let stime: f64 = fields.get(12).context("stime")?.parse()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(ProcSample {
        cpu_s: (utime + stime) / tck,
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
    })
}

/// Counts OpenBao audit-log entries (one JSON object per line) incrementally.
#[derive(Debug)]
pub struct AuditCounter {
    path: PathBuf,
    offset: u64,
    partial: String,
    /// Requests of any kind.
    pub requests: u64,
    /// KV reads (`operation: read` on `<mount>/data/...`).
    pub kv_reads: u64,
    /// KV reads by path.
    pub reads_by_path: std::collections::HashMap<String, u64>,
}

impl AuditCounter {
    /// A counter over `path`, starting at its beginning.
    pub fn new(path: &Path) -> Self {
        AuditCounter {
            path: path.to_path_buf(),
            offset: 0,
            partial: String::new(),
            requests: 0,
            kv_reads: 0,
            reads_by_path: Default::default(),
        }
    }

    /// Reads what was appended since the last call.
    pub fn poll(&mut self) -> Result<()> {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return Ok(());
        };
        f.seek(SeekFrom::Start(self.offset))?;
        let mut buf = String::new();
        let n = f.read_to_string(&mut buf)?;
        self.offset += n as u64;
        self.partial.push_str(&buf);
        let complete = match self.partial.rfind('\n') {
            Some(i) => i + 1,
            None => return Ok(()),
        };
        let lines: String = self.partial.drain(..complete).collect();
        for line in lines.lines() {
            let (req, read) = classify_audit_line(line);
            self.requests += u64::from(req);
            self.kv_reads += u64::from(read);
            if read && let Some(path) = audit_path(line) {
                *self.reads_by_path.entry(path).or_default() += 1;
            }
        }
        Ok(())
    }

    /// `(requests, kv_reads)` now.
    pub fn snapshot(&mut self) -> Result<(u64, u64)> {
        self.poll()?;
        Ok((self.requests, self.kv_reads))
    }
}

impl AuditCounter {
    /// KV reads of `path` (e.g. `secret/data/bench/k0001`) so far.
    pub fn reads_of(&mut self, path: &str) -> Result<u64> {
        self.poll()?;
        Ok(self.reads_by_path.get(path).copied().unwrap_or(0))
    }
}

/// The request path of one audit-log line.
fn audit_path(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    v["request"]["path"].as_str().map(str::to_owned)
}

/// `(is a request entry, is a KV v2 read)` for one audit-log line.
pub fn classify_audit_line(line: &str) -> (bool, bool) {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        return (false, false);
    };
    if v.get("type").and_then(|t| t.as_str()) != Some("request") {
        return (false, false);
    }
    let req = &v["request"];
    let path = req["path"].as_str().unwrap_or_default();
    let read = req["operation"].as_str() == Some("read") && path.contains("/data/");
    (true, read)
}

/// The Prometheus text at `http://ADDR/metrics`; empty when nothing answers.
pub async fn metrics(addr: &str) -> String {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .build();
    let Ok(client) = client else {
        return String::new();
    };
    match client.get(format!("http://{addr}/metrics")).send().await {
        Ok(resp) => resp.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Sum of every sample of a metric family in Prometheus text (`name` or `name{...}`).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Nearest-rank percentile of sorted `v` (`p` in 0..=100); 0 when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median of sorted `v` (the mean of the middle two of an even count); 0 when empty.
pub fn median(sorted: &[u64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2] as f64,
        n => (sorted[n / 2 - 1] + sorted[n / 2]) as f64 / 2.0,
    }
}

/// The machine: cores, memory, CPU model, load average.
pub fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|s| s.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    serde_json::json!({
        "cores": cores,
        "memory_gib": (mem_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "cpu_model": model,
        "load_average_at_start": load_average(),
    })
}

/// `/proc/loadavg`'s first three fields.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
        assert_eq!(percentile(&[3.0], 99.0), 3.0);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[5]), 5.0);
        assert_eq!(median(&[1, 2, 9]), 2.0);
        assert_eq!(median(&[1, 2, 4, 9]), 3.0);
    }

    #[test]
    fn audit_lines() {
        let read =
            r#"{"type":"request","request":{"operation":"read","path":"secret/data/bench/k1"}}"#;
        let resp =
            r#"{"type":"response","request":{"operation":"read","path":"secret/data/bench/k1"}}"#;
        let lookup =
            r#"{"type":"request","request":{"operation":"read","path":"auth/token/lookup-self"}}"#;
        assert_eq!(classify_audit_line(read), (true, true));
        assert_eq!(classify_audit_line(resp), (false, false));
        assert_eq!(classify_audit_line(lookup), (true, false));
        assert_eq!(classify_audit_line("garbage"), (false, false));
    }

    #[test]
    fn metric_sums() {
        let text = "# HELP x\nsecretsync_a_total{b=\"1\"} 2\nsecretsync_a_total{b=\"2\"} 3\nsecretsync_ab 7\n";
        assert_eq!(metric_sum(text, "secretsync_a_total"), 5.0);
        assert_eq!(metric_sum(text, "secretsync_ab"), 7.0);
    }

    #[test]
    fn own_process_sample() {
        let s = sample(std::process::id(), clk_tck()).unwrap();
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib);
    }
}
