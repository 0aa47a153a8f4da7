//! The processes the bench runs: the operator under test (with a background sampler of
//! its CPU and memory) and the OpenBao dev server with a file audit device.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use secretsync_testkit::BaoServer;
use secretsync_testkit::harness::{ChildProcess, free_port};

use crate::probe::{self, ProcSample};

/// The operator process plus a background sampler of its /proc figures.
pub struct Operator {
    process: ChildProcess,
    pub started: Instant,
    /// The flags it got besides the operator namespace and the addresses.
    pub flags: Vec<String>,
    metrics_addr: String,
    samples: Arc<Mutex<Vec<(f64, ProcSample)>>>,
    sampler: tokio::task::JoinHandle<()>,
}

impl Operator {
    /// Starts `secretsync run` (binary `operator`) against the kubeconfig at `kubeconfig`
    /// with `flags` after the ones every run needs (operator namespace, metrics and health
    /// addresses), and samples it every 250 ms (`tck` = clock ticks per second). Neither
    /// `RUST_LOG` nor any `SECRETSYNC_*` variable of the bench's environment reaches it, so
    /// every flag not passed is the operator's default.
    pub fn spawn(
        operator: &Path,
        flags: &[String],
        kubeconfig: &Path,
        tck: f64,
    ) -> Result<Operator> {
        let metrics_addr = format!("127.0.0.1:{}", free_port()?);
        let health_addr = format!("127.0.0.1:{}", free_port()?);
        let mut cmd = Command::new(operator);
        cmd.args([
            "run",
            "--operator-namespace",
            "secretsync-system",
            "--metrics-addr",
            &metrics_addr,
            "--health-addr",
            &health_addr,
        ])
        .args(flags)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("RUST_LOG");
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("SECRETSYNC_") {
                cmd.env_remove(name);
            }
        }
        let process = ChildProcess::spawn(cmd)?;
        let started = Instant::now();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let pid = process.id();
        let s = samples.clone();
        let sampler = tokio::spawn(async move {
            loop {
                if let Ok(p) = probe::sample(pid, tck) {
                    s.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((started.elapsed().as_secs_f64(), p));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Ok(Operator {
            process,
            started,
            flags: flags.to_vec(),
            metrics_addr,
            samples,
            sampler,
        })
    }

    /// Its flags as printed: `none (the operator's defaults)` when there are none.
    pub fn flags_text(&self) -> String {
        if self.flags.is_empty() {
            "none (the operator's defaults)".into()
        } else {
            self.flags.join(" ")
        }
    }

    fn pid(&self) -> u32 {
        self.process.id()
    }

    /// `Some(how it ended and the end of its log)` once the operator has exited.
    pub fn exited(&mut self) -> Option<String> {
        let status = self.process.try_wait()?;
        let log = self.process.stderr();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Some(format!(
            "{status}; last lines of its log:\n{}",
            tail.join("\n")
        ))
    }

    /// A sample taken now.
    pub fn now(&self, tck: f64) -> Result<ProcSample> {
        probe::sample(self.pid(), tck)
    }

    /// The operator's `/metrics` text; empty when it does not answer.
    pub async fn metrics(&self) -> String {
        probe::metrics(&self.metrics_addr).await
    }

    /// CPU seconds used in each whole minute between `from` and `to` seconds after start.
    pub fn cpu_per_minute(&self, from: f64, to: f64) -> Vec<f64> {
        let s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let cpu_at = |t: f64| {
            s.iter()
                .find(|(at, _)| *at >= t)
                .or(s.last())
                .map_or(0.0, |(_, p)| p.cpu_s)
        };
        let mut out = Vec::new();
        let mut t = from;
        while t + 60.0 <= to + 0.5 {
            out.push(cpu_at(t + 60.0) - cpu_at(t));
            t += 60.0;
        }
        out
    }

    /// Max VmRSS sampled between `from` and `to` seconds after start, and the mean.
    pub fn rss_between(&self, from: f64, to: f64) -> (u64, f64) {
        let s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let window: Vec<u64> = s
            .iter()
            .filter(|(t, _)| *t >= from && *t <= to)
            .map(|(_, p)| p.rss_kib)
            .collect();
        let max = window.iter().copied().max().unwrap_or(0);
        let mean = if window.is_empty() {
            0.0
        } else {
            window.iter().sum::<u64>() as f64 / window.len() as f64
        };
        (max, mean)
    }

    /// VmRSS samples (KiB, sorted) taken between `from` and `to` seconds after start.
    pub fn rss_samples(&self, from: f64, to: f64) -> Vec<u64> {
        let s = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let mut window: Vec<u64> = s
            .iter()
            .filter(|(t, _)| *t >= from && *t <= to)
            .map(|(_, p)| p.rss_kib)
            .collect();
        window.sort_unstable();
        window
    }

    /// Stops the operator (SIGTERM, then kill after 25 s); its stderr, the log.
    pub fn stop(mut self) -> String {
        self.sampler.abort();
        // SIGTERM first so it releases its lease; the harness kills it on drop anyway.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(25);
        while self.process.is_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.process.kill();
        self.process.stderr()
    }
}

impl Drop for Operator {
    /// A run that fails half-way drops its operator: the sampler must not outlive it (the
    /// process itself is killed by [`ChildProcess`]'s own drop).
    fn drop(&mut self) {
        self.sampler.abort();
    }
}

/// Starts an OpenBao dev server with a file audit device in `dir`; the server and the
/// audit log's path.
pub async fn start_bao(dir: &Path) -> Result<(BaoServer, PathBuf)> {
    let audit = dir.join("bao-audit.log");
    let hcl = dir.join("bao.hcl");
    std::fs::write(
        &hcl,
        format!(
            "audit \"file\" \"file\" {{\n  options {{\n    file_path = {:?}\n  }}\n}}\n",
            audit.display().to_string()
        ),
    )?;
    let hcl_arg = format!("-config={}", hcl.display());
    let bao = BaoServer::start_with_args(&[&hcl_arg]).await.context(
        "starting OpenBao (run through scripts/test-servers.sh, or set SECRETSYNC_BAO_BIN)",
    )?;
    Ok((bao, audit))
}
