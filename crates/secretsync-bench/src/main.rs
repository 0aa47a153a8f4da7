//! `secretsync-bench`: runs the real `secretsync run` binary (a separate process, so its
//! CPU and memory are measured alone) against the in-process fake API server and a real
//! OpenBao dev server, and reports the scenarios of the benchmark issue as a table and as
//! JSON. `make bench` runs it at full scale; `--scale 0.1` is a quick run.
//!
//! Measurements: operator CPU and memory from `/proc/<pid>/stat` and `/proc/<pid>/status`,
//! API requests from the fake's request counters, backend requests from OpenBao's file
//! audit device, restarts from the Deployments themselves and the operator's metrics.

mod probe;
mod world;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use futures::StreamExt;
use kube::Api;
use kube::api::{Patch, PatchParams};
use secretsync_api::{ANNOTATION_RESTARTED_AT, ANNOTATION_SECRET_REVISION, SecretBinding};
use secretsync_testkit::bao::BaoAdmin;
use secretsync_testkit::harness::{BAO_BIN_ENV, BaoServer, ChildProcess, find_binary, free_port};
use secretsync_testkit::{FakeApiServer, Options};
use serde_json::{Value, json};

use crate::probe::{AuditCounter, ProcSample, percentile};

/// Benchmarks of the secretsync operator (see BENCHMARKS.md).
#[derive(Parser, Debug, Clone)]
#[command(name = "secretsync-bench")]
struct Args {
    /// Scale of every object count: 1.0 = 100 namespaces, 10,000 bindings, 50,000
    /// unrelated Secrets; 0.1 = a quick run. Rotation always uses 100 bindings and 50
    /// Deployments.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Length of the steady-state window.
    #[arg(long, default_value = "5m")]
    steady: String,
    /// Settling time after a cold start before memory is read.
    #[arg(long, default_value = "30s")]
    settle: String,
    /// The operator binary.
    #[arg(long, default_value = "target/release/secretsync")]
    operator: PathBuf,
    /// Where results.json and results.md go.
    #[arg(long, default_value = "target/bench")]
    out_dir: PathBuf,
    /// `--restart-debounce` of the operator.
    #[arg(long, default_value = "1s")]
    restart_debounce: String,
    /// `--concurrency` of the operator.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// `spec.cache.ttl` of every SecretSource.
    #[arg(long, default_value = "60s")]
    cache_ttl: String,
    /// Runs to do (comma-separated): idle, cold-small, main, unrelated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "idle,cold-small,main,unrelated"
    )]
    runs: Vec<String>,
}

const REFRESH: &str = "60s";
const READY_TIMEOUT: Duration = Duration::from_secs(900);
const ROTATION_BINDINGS: usize = 100;
const ROTATION_DEPLOYMENTS: usize = 50;
const NEW_BINDINGS: usize = 100;

/// A measured figure for the table.
struct Row {
    scenario: String,
    metric: String,
    value: String,
    target: String,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
}

impl Report {
    fn row(&mut self, scenario: &str, metric: &str, value: impl Into<String>, target: &str) {
        let value = value.into();
        println!("  {metric}: {value}");
        self.rows.push(Row {
            scenario: scenario.into(),
            metric: metric.into(),
            value,
            target: target.into(),
        });
    }

    fn markdown(&self) -> String {
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

/// Object counts at a scale.
#[derive(Debug, Clone, Copy)]
struct Layout {
    namespaces: usize,
    per_namespace: usize,
    unrelated_secrets: usize,
    unrelated_deployments: usize,
}

impl Layout {
    fn bindings(&self) -> usize {
        self.namespaces * self.per_namespace
    }
    fn remote_keys(&self) -> usize {
        self.namespaces * world::KEYS_PER_NAMESPACE
    }
    fn json(&self) -> Value {
        json!({
            "namespaces": self.namespaces,
            "bindings_per_namespace": self.per_namespace,
            "bindings": self.bindings(),
            "secret_keys_per_binding": world::KEYS_PER_NAMESPACE * world::PROPERTIES.len(),
            "remote_keys_per_binding": world::KEYS_PER_NAMESPACE,
            "distinct_remote_keys": self.remote_keys(),
            "sources": self.namespaces,
            "unrelated_secrets": self.unrelated_secrets,
            "unrelated_deployments": self.unrelated_deployments,
        })
    }
}

/// Shared state of the whole benchmark.
struct Bench {
    args: Args,
    tck: f64,
    bao: BaoServer,
    /// Admin client of `bao` (root token).
    bao_admin: BaoAdmin,
    audit: AuditCounter,
    dir: tempfile::TempDir,
    report: Report,
    results: serde_json::Map<String, Value>,
}

/// The operator process plus a background sampler of its /proc figures.
struct Operator {
    process: ChildProcess,
    started: Instant,
    metrics_addr: String,
    samples: Arc<Mutex<Vec<(f64, ProcSample)>>>,
    sampler: tokio::task::JoinHandle<()>,
}

impl Operator {
    fn pid(&self) -> u32 {
        self.process.id()
    }

    fn now(&self, tck: f64) -> Result<ProcSample> {
        probe::sample(self.pid(), tck)
    }

    async fn metrics(&self) -> String {
        probe::metrics(&self.metrics_addr).await
    }

    /// CPU seconds used in each whole minute between `from` and `to` seconds after start.
    fn cpu_per_minute(&self, from: f64, to: f64) -> Vec<f64> {
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
    fn rss_between(&self, from: f64, to: f64) -> (u64, f64) {
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

    fn stop(mut self) -> String {
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

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn secs(d: f64) -> String {
    format!("{d:.2} s")
}

fn parse_dur(s: &str) -> Result<Duration> {
    secretsync_api::parse_duration(s).map_err(|e| anyhow::anyhow!("{s}: {e}"))
}

/// Request counts per `verb resource`, after minus before.
fn count_diff(
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

fn total(c: &BTreeMap<String, u64>) -> u64 {
    c.values().sum()
}

fn writes(c: &BTreeMap<String, u64>) -> u64 {
    c.iter()
        .filter(|(k, _)| {
            ["create ", "update ", "patch ", "delete "]
                .iter()
                .any(|v| k.starts_with(v))
        })
        .map(|(_, v)| v)
        .sum()
}

fn get(c: &BTreeMap<String, u64>, k: &str) -> u64 {
    c.get(k).copied().unwrap_or(0)
}

impl Bench {
    async fn fake(&self) -> Result<FakeApiServer> {
        let server = FakeApiServer::start_with(Options {
            // Generous watch history: relists caused by the fake's small default would be
            // an artefact of the fake, not of the operator.
            history_limit: 200_000,
            ..Options::default()
        })
        .await?;
        server.install_secretsync_crds()?;
        Ok(server)
    }

    /// Sources and bindings of `layout`, plus the rotation Deployments when asked.
    fn populate(
        &self,
        server: &FakeApiServer,
        layout: &Layout,
        rotation: bool,
        unrelated: bool,
    ) -> Result<()> {
        let t = Instant::now();
        for i in 0..layout.namespaces {
            let ns = world::ns_name(i);
            for o in world::source_objects(&ns, &self.bao.address, &self.args.cache_ttl) {
                world::put(server, &o)?;
            }
            for j in 0..layout.per_namespace {
                world::put(server, &world::binding(i, &world::binding_name(j), REFRESH))?;
            }
        }
        if rotation {
            let ns = world::ns_name(0);
            for d in 0..ROTATION_DEPLOYMENTS {
                let secrets: Vec<String> = (0..ROTATION_BINDINGS / ROTATION_DEPLOYMENTS)
                    .map(|k| {
                        world::binding_name(d * (ROTATION_BINDINGS / ROTATION_DEPLOYMENTS) + k)
                    })
                    .collect();
                world::put(
                    server,
                    &world::deployment(&ns, &format!("app-{d:02}"), &secrets, true),
                )?;
            }
        }
        if unrelated {
            for n in 0..layout.unrelated_secrets {
                let ns = world::ns_name(n % layout.namespaces);
                world::put(server, &world::unrelated_secret(&ns, n))?;
            }
            for n in 0..layout.unrelated_deployments {
                let ns = world::ns_name(n % layout.namespaces);
                world::put(
                    server,
                    &world::deployment(&ns, &format!("other-{n:05}"), &[], false),
                )?;
            }
        }
        println!(
            "  created {} bindings{}{} in {:.1} s (in-process)",
            layout.bindings(),
            if rotation {
                " + 50 opted-in Deployments"
            } else {
                ""
            },
            if unrelated {
                format!(
                    " + {} unrelated Secrets + {} unrelated Deployments",
                    layout.unrelated_secrets, layout.unrelated_deployments
                )
            } else {
                String::new()
            },
            t.elapsed().as_secs_f64()
        );
        Ok(())
    }

    fn spawn_operator(&self, server: &FakeApiServer, name: &str) -> Result<Operator> {
        let kubeconfig = self.dir.path().join(format!("{name}.kubeconfig"));
        server.write_kubeconfig(&kubeconfig)?;
        let metrics_addr = format!("127.0.0.1:{}", free_port()?);
        let health_addr = format!("127.0.0.1:{}", free_port()?);
        let mut cmd = Command::new(&self.args.operator);
        cmd.args([
            "run",
            "--operator-namespace",
            "secretsync-system",
            "--metrics-addr",
            &metrics_addr,
            "--health-addr",
            &health_addr,
            "--restart-debounce",
            &self.args.restart_debounce,
            "--concurrency",
            &self.args.concurrency.to_string(),
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("RUST_LOG");
        let process = ChildProcess::spawn(cmd)?;
        let started = Instant::now();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let pid = process.id();
        let tck = self.tck;
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
            metrics_addr,
            samples,
            sampler,
        })
    }

    /// Polls the fake until every binding in `pending` is Ready; returns seconds from each
    /// binding's start instant to first seen Ready, and how many never became Ready.
    async fn wait_ready(
        server: &FakeApiServer,
        mut pending: Vec<(String, String, Instant)>,
        poll: Duration,
        timeout: Duration,
    ) -> (Vec<f64>, usize) {
        let deadline = Instant::now() + timeout;
        let mut lat = Vec::with_capacity(pending.len());
        while !pending.is_empty() && Instant::now() < deadline {
            let mut still = Vec::with_capacity(pending.len());
            for (n, (ns, name, since)) in pending.into_iter().enumerate() {
                let ready = server
                    .inspect("secretsync.dev", "secretbindings", Some(&ns), &name, |o| {
                        world::is_ready(o)
                    })
                    .unwrap_or(false);
                if ready {
                    lat.push(since.elapsed().as_secs_f64());
                } else {
                    still.push((ns, name, since));
                }
                if n % 256 == 255 {
                    tokio::task::yield_now().await;
                }
            }
            pending = still;
            if !pending.is_empty() {
                tokio::time::sleep(poll).await;
            }
        }
        lat.sort_by(f64::total_cmp);
        (lat, pending.len())
    }

    /// Cold start: everything exists before the operator starts.
    async fn cold_start(
        &mut self,
        scenario: &str,
        server: &FakeApiServer,
        layout: &Layout,
        op: &Operator,
    ) -> Result<Value> {
        let (req0, reads0) = self.audit.snapshot()?;
        let pending: Vec<(String, String, Instant)> = (0..layout.namespaces)
            .flat_map(|i| {
                (0..layout.per_namespace)
                    .map(move |j| (world::ns_name(i), world::binding_name(j), op.started))
            })
            .collect();
        let (lat, missing) =
            Self::wait_ready(server, pending, Duration::from_millis(200), READY_TIMEOUT).await;
        let all_ready = lat.last().copied().unwrap_or(0.0);
        let counts = count_diff(&BTreeMap::new(), &server.counts());
        let (req1, reads1) = self.audit.snapshot()?;
        let cpu = op.now(self.tck)?;
        let metrics = op.metrics().await;
        let r = &mut self.report;
        r.row(
            scenario,
            "bindings / namespaces / remote keys",
            format!(
                "{} / {} / {} (one SecretSource per namespace, cache ttl {}, refresh {REFRESH})",
                layout.bindings(),
                layout.namespaces,
                layout.remote_keys(),
                self.args.cache_ttl
            ),
            "",
        );
        let target = if layout.bindings() >= 10_000 {
            "< 60 s"
        } else {
            ""
        };
        r.row(
            scenario,
            "time until all Ready (from operator start)",
            if missing == 0 {
                secs(all_ready)
            } else {
                format!(
                    "{missing} not Ready after {}",
                    secs(READY_TIMEOUT.as_secs_f64())
                )
            },
            target,
        );
        r.row(
            scenario,
            "per-binding time to Ready p50 / p99",
            format!(
                "{} / {}",
                secs(percentile(&lat, 50.0)),
                secs(percentile(&lat, 99.0))
            ),
            "",
        );
        r.row(
            scenario,
            "API requests (writes)",
            format!("{} ({})", total(&counts), writes(&counts)),
            "",
        );
        r.row(
            scenario,
            "backend requests (KV reads)",
            format!("{} ({})", req1 - req0, reads1 - reads0),
            &format!("KV reads ≈ {} distinct remote keys", layout.remote_keys()),
        );
        r.row(
            scenario,
            "operator CPU during cold start",
            secs(cpu.cpu_s),
            "",
        );
        r.row(
            scenario,
            "operator peak RSS (VmHWM)",
            format!("{:.1} MiB", mib(cpu.hwm_kib)),
            "",
        );
        Ok(json!({
            "layout": layout.json(),
            "all_ready_s": all_ready,
            "not_ready": missing,
            "latency_p50_s": percentile(&lat, 50.0),
            "latency_p99_s": percentile(&lat, 99.0),
            "latency_max_s": all_ready,
            "api_requests": total(&counts),
            "api_writes": writes(&counts),
            "api_counts": counts,
            "backend_requests": req1 - req0,
            "backend_kv_reads": reads1 - reads0,
            "operator_metric_backend_requests": probe::metric_sum(&metrics, "secretsync_backend_requests_total"),
            "operator_cpu_s": cpu.cpu_s,
            "operator_hwm_mib": mib(cpu.hwm_kib),
            "operator_rss_mib": mib(cpu.rss_kib),
        }))
    }

    /// Waits out the settle time and reads memory.
    async fn settle(&mut self, scenario: &str, op: &Operator) -> Result<Value> {
        let settle = parse_dur(&self.args.settle)?;
        let from = op.started.elapsed().as_secs_f64();
        tokio::time::sleep(settle).await;
        let now = op.now(self.tck)?;
        let (max, mean) = op.rss_between(from, op.started.elapsed().as_secs_f64());
        self.report.row(
            scenario,
            &format!(
                "RSS {}s after all Ready (mean / max in that window; VmHWM)",
                settle.as_secs()
            ),
            format!(
                "{:.1} / {:.1} MiB; {:.1} MiB",
                mean / 1024.0,
                mib(max),
                mib(now.hwm_kib)
            ),
            "",
        );
        Ok(json!({
            "settle_s": settle.as_secs_f64(),
            "rss_now_mib": mib(now.rss_kib),
            "rss_mean_mib": mean / 1024.0,
            "rss_max_mib": mib(max),
            "hwm_mib": mib(now.hwm_kib),
        }))
    }

    async fn steady(
        &mut self,
        server: &FakeApiServer,
        layout: &Layout,
        op: &Operator,
    ) -> Result<Value> {
        let scenario = "3. Steady state";
        let d = parse_dur(&self.args.steady)?;
        let cycles = d.as_secs_f64() / parse_dur(REFRESH)?.as_secs_f64();
        println!(
            "  steady window {} s ({cycles:.1} refresh cycles), load {}",
            d.as_secs(),
            probe::load_average()
        );
        let c0 = server.counts();
        let (req0, reads0) = self.audit.snapshot()?;
        let p0 = op.now(self.tck)?;
        let m0 = op.metrics().await;
        let t0 = op.started.elapsed().as_secs_f64();
        tokio::time::sleep(d).await;
        let t1 = op.started.elapsed().as_secs_f64();
        let c = count_diff(&c0, &server.counts());
        let (req1, reads1) = self.audit.snapshot()?;
        let p1 = op.now(self.tck)?;
        let m1 = op.metrics().await;
        let (rss_max, rss_mean) = op.rss_between(t0, t1);
        let per_minute = op.cpu_per_minute(t0, t1);
        let cpu = p1.cpu_s - p0.cpu_s;
        let cpu_per_min = cpu / (d.as_secs_f64() / 60.0);
        let reads_per_cycle = (reads1 - reads0) as f64 / cycles;
        let req_per_cycle = (req1 - req0) as f64 / cycles;
        let status_patches = get(&c, "patch secretbindings/status") as f64 / cycles;
        let secret_writes = (get(&c, "patch secrets")
            + get(&c, "create secrets")
            + get(&c, "update secrets")) as f64
            / cycles;
        let other_writes = writes(&c) as f64 / cycles - status_patches - secret_writes;
        let hits = probe::metric_sum(&m1, "secretsync_cache_hits_total")
            - probe::metric_sum(&m0, "secretsync_cache_hits_total");
        let r = &mut self.report;
        r.row(
            scenario,
            "parameters",
            format!(
                "{} bindings, refreshInterval {REFRESH}, cache ttl {}, window {} s = {cycles:.1} cycles",
                layout.bindings(),
                self.args.cache_ttl,
                d.as_secs()
            ),
            "",
        );
        r.row(
            scenario,
            "operator CPU",
            format!(
                "{cpu_per_min:.2} s/min = {:.1}% of one core",
                cpu_per_min / 60.0 * 100.0
            ),
            "< 5% of one core (3 s/min)",
        );
        r.row(
            scenario,
            "operator CPU in each minute of the window",
            per_minute
                .iter()
                .map(|c| format!("{c:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
                + " s",
            "",
        );
        r.row(
            scenario,
            "RSS steady (mean in window) / peak (max in window; VmHWM since start)",
            format!(
                "{:.1} / {:.1} MiB; {:.1} MiB",
                rss_mean / 1024.0,
                mib(rss_max),
                mib(p1.hwm_kib)
            ),
            "< 150 MiB",
        );
        r.row(
            scenario,
            "backend KV reads per cycle (all requests)",
            format!("{reads_per_cycle:.0} ({req_per_cycle:.0})"),
            &format!("≤ {} distinct remote keys", layout.remote_keys()),
        );
        r.row(
            scenario,
            "cache hits per cycle (operator metric)",
            format!("{:.0}", hits / cycles),
            "",
        );
        r.row(
            scenario,
            "API writes per cycle: status patches (lastSyncTime)",
            format!("{status_patches:.0}"),
            "reported (≈ bindings)",
        );
        r.row(
            scenario,
            "API writes per cycle: Secret writes",
            format!("{secret_writes:.0}"),
            "0",
        );
        r.row(
            scenario,
            "API writes per cycle: other (events, leases, ...)",
            format!("{other_writes:.0}"),
            "",
        );
        r.row(
            scenario,
            "API reads per cycle",
            format!("{:.0}", (total(&c) - writes(&c)) as f64 / cycles),
            "",
        );
        Ok(json!({
            "window_s": d.as_secs_f64(),
            "cycles": cycles,
            "cpu_s": cpu,
            "cpu_s_per_min": cpu_per_min,
            "cpu_percent_of_one_core": cpu_per_min / 60.0 * 100.0,
            "cpu_s_each_minute": per_minute,
            "rss_mean_mib": rss_mean / 1024.0,
            "rss_max_mib": mib(rss_max),
            "hwm_mib": mib(p1.hwm_kib),
            "backend_kv_reads_per_cycle": reads_per_cycle,
            "backend_requests_per_cycle": req_per_cycle,
            "distinct_remote_keys": layout.remote_keys(),
            "cache_hits_per_cycle": hits / cycles,
            "status_patches_per_cycle": status_patches,
            "secret_writes_per_cycle": secret_writes,
            "other_writes_per_cycle": other_writes,
            "api_counts": c,
            "load_average_after": probe::load_average(),
        }))
    }

    async fn new_bindings(&mut self, server: &FakeApiServer, layout: &Layout) -> Result<Value> {
        let scenario = "2. New bindings under load";
        let mut pending = Vec::new();
        for k in 0..NEW_BINDINGS {
            let i = k % layout.namespaces;
            let name = format!("new-{k:03}");
            let created = Instant::now();
            world::put(server, &world::binding(i, &name, REFRESH))?;
            pending.push((world::ns_name(i), name, created));
        }
        let (lat, missing) = Self::wait_ready(
            server,
            pending,
            Duration::from_millis(20),
            Duration::from_secs(120),
        )
        .await;
        let r = &mut self.report;
        r.row(
            scenario,
            "parameters",
            format!(
                "{NEW_BINDINGS} new bindings created in a burst while {} bindings refresh every {REFRESH}",
                layout.bindings()
            ),
            "",
        );
        r.row(
            scenario,
            "time to Ready p50 / p99 / max",
            format!(
                "{} / {} / {}{}",
                secs(percentile(&lat, 50.0)),
                secs(percentile(&lat, 99.0)),
                secs(lat.last().copied().unwrap_or(0.0)),
                if missing > 0 {
                    format!(" ({missing} not Ready after 120 s)")
                } else {
                    String::new()
                }
            ),
            "p99 < 2 s",
        );
        Ok(json!({
            "count": NEW_BINDINGS,
            "not_ready": missing,
            "p50_s": percentile(&lat, 50.0),
            "p99_s": percentile(&lat, 99.0),
            "max_s": lat.last().copied().unwrap_or(0.0),
        }))
    }

    fn deployments_with(server: &FakeApiServer, template: bool, annotation: &str) -> usize {
        let ns = world::ns_name(0);
        (0..ROTATION_DEPLOYMENTS)
            .filter(|d| {
                server
                    .inspect(
                        "apps",
                        "deployments",
                        Some(&ns),
                        &format!("app-{d:02}"),
                        |o| {
                            let meta = if template {
                                &o["spec"]["template"]["metadata"]
                            } else {
                                &o["metadata"]
                            };
                            meta["annotations"].get(annotation).is_some()
                        },
                    )
                    .unwrap_or(false)
            })
            .count()
    }

    async fn rotation(&mut self, server: &FakeApiServer, op: &Operator) -> Result<Value> {
        let scenario = "4. Rotation to restart";
        let debounce = parse_dur(&self.args.restart_debounce)?;
        self.report.row(
            scenario,
            "parameters",
            format!(
                "remote key {} read by {ROTATION_BINDINGS} bindings of {}; {ROTATION_DEPLOYMENTS} opted-in Deployments (env secretKeyRef to 2 of those Secrets each); --restart-debounce {}",
                world::remote_key(0, 0),
                world::ns_name(0),
                self.args.restart_debounce
            ),
            "",
        );
        // The operator records a revision on each workload it sees first (no restart).
        let recorded = secretsync_testkit::harness::wait_for(Duration::from_secs(60), || async {
            Self::deployments_with(server, false, ANNOTATION_SECRET_REVISION)
                == ROTATION_DEPLOYMENTS
        })
        .await;
        if recorded.is_err() {
            let n = Self::deployments_with(server, false, ANNOTATION_SECRET_REVISION);
            self.report.row(
                scenario,
                "time to all Deployments patched",
                format!(
                    "not measurable: only {n}/{ROTATION_DEPLOYMENTS} Deployments got a recorded revision"
                ),
                "< 2 s",
            );
            return Ok(json!({"measurable": false, "recorded": n}));
        }
        let client = server.client().await?;
        let api: Api<SecretBinding> = Api::namespaced(client, &world::ns_name(0));
        let c0 = server.counts();
        let m0 = op.metrics().await;
        let before = Self::deployments_with(server, true, ANNOTATION_RESTARTED_AT);
        let t0 = Instant::now();
        world::bao_put(
            &self.bao_admin,
            &world::remote_key(0, 0),
            &world::remote_value(0, 2),
        )
        .await?;
        let t_write = t0.elapsed().as_secs_f64();
        let stamp = format!("bench-{}", jiff::Timestamp::now().as_millisecond());
        let patch = world::force_sync_patch(&stamp);
        let results: Vec<Result<SecretBinding, kube::Error>> =
            futures::stream::iter((0..ROTATION_BINDINGS).map(|j| {
                let api = api.clone();
                let patch = patch.clone();
                async move {
                    api.patch(
                        &world::binding_name(j),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                }
            }))
            .buffer_unordered(16)
            .collect()
            .await;
        if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
            bail!("force-sync patch failed: {e}");
        }
        let t_forced = t0.elapsed().as_secs_f64();
        let all = secretsync_testkit::harness::wait_for(Duration::from_secs(60), || async {
            Self::deployments_with(server, true, ANNOTATION_RESTARTED_AT) - before
                >= ROTATION_DEPLOYMENTS
        })
        .await;
        let t_all = t0.elapsed().as_secs_f64();
        // Leave time for any second restart to show up.
        tokio::time::sleep(debounce * 3 + Duration::from_secs(5)).await;
        let restarted = Self::deployments_with(server, true, ANNOTATION_RESTARTED_AT) - before;
        let c = count_diff(&c0, &server.counts());
        let m1 = op.metrics().await;
        let restarts_metric = probe::metric_sum(&m1, "secretsync_rollout_restarts_total")
            - probe::metric_sum(&m0, "secretsync_rollout_restarts_total");
        let deployment_patches = get(&c, "patch deployments");
        let r = &mut self.report;
        if all.is_err() {
            r.row(
                scenario,
                "time to all Deployments patched",
                format!("only {restarted}/{ROTATION_DEPLOYMENTS} restarted within 60 s"),
                "< 2 s",
            );
        } else {
            r.row(
                scenario,
                "time to all Deployments patched, from the backend write (from the last force-sync patch)",
                format!("{} ({})", secs(t_all), secs(t_all - t_forced)),
                "< 2 s",
            );
        }
        r.row(
            scenario,
            "backend write / 100 force-sync annotations done at",
            format!("{} / {}", secs(t_write), secs(t_forced)),
            "",
        );
        r.row(
            scenario,
            "restarts: Deployments restarted / restart metric / Deployment patches",
            format!("{restarted} / {restarts_metric:.0} / {deployment_patches}"),
            "exactly 50",
        );
        Ok(json!({
            "measurable": true,
            "t_backend_write_s": t_write,
            "t_force_sync_done_s": t_forced,
            "t_all_patched_s": t_all,
            "all_patched": all.is_ok(),
            "deployments_restarted": restarted,
            "restarts_metric": restarts_metric,
            "deployment_patches": deployment_patches,
            "restart_debounce": self.args.restart_debounce,
            "api_counts": c,
        }))
    }
}

async fn run_idle(b: &mut Bench) -> Result<()> {
    println!("\n== idle operator");
    let server = b.fake().await?;
    let op = b.spawn_operator(&server, "idle")?;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let p = op.now(b.tck)?;
    b.report.row(
        "0. Binary and idle operator",
        "idle operator RSS / peak RSS (15 s, no objects)",
        format!("{:.1} / {:.1} MiB", mib(p.rss_kib), mib(p.hwm_kib)),
        "",
    );
    b.results.insert(
        "idle".into(),
        json!({"rss_mib": mib(p.rss_kib), "hwm_mib": mib(p.hwm_kib), "cpu_s": p.cpu_s}),
    );
    op.stop();
    Ok(())
}

async fn run_cold_small(b: &mut Bench, layout: Layout) -> Result<()> {
    println!("\n== cold start, {} bindings", layout.bindings());
    let server = b.fake().await?;
    b.populate(&server, &layout, false, false)?;
    let op = b.spawn_operator(&server, "cold-small")?;
    let v = b
        .cold_start("1a. Cold start (small)", &server, &layout, &op)
        .await?;
    b.results.insert("cold_small".into(), v);
    op.stop();
    Ok(())
}

async fn run_main(b: &mut Bench, layout: Layout) -> Result<()> {
    println!(
        "\n== cold start, {} bindings, then steady state, new bindings, rotation",
        layout.bindings()
    );
    let server = b.fake().await?;
    b.populate(&server, &layout, true, false)?;
    let op = b.spawn_operator(&server, "main")?;
    let cold = b
        .cold_start("1b. Cold start (large)", &server, &layout, &op)
        .await?;
    b.results.insert("cold_large".into(), cold);
    let settled = b.settle("1b. Cold start (large)", &op).await?;
    b.results
        .insert("settled_without_unrelated".into(), settled);
    let steady = b.steady(&server, &layout, &op).await?;
    b.results.insert("steady".into(), steady);
    let new = b.new_bindings(&server, &layout).await?;
    b.results.insert("new_bindings".into(), new);
    let rot = b.rotation(&server, &op).await?;
    b.results.insert("rotation".into(), rot);
    let log = op.stop();
    std::fs::write(b.args.out_dir.join("operator-main.log"), log)?;
    Ok(())
}

async fn run_unrelated(b: &mut Bench, layout: Layout) -> Result<()> {
    println!(
        "\n== {} bindings plus {} unrelated Secrets and {} unrelated Deployments",
        layout.bindings(),
        layout.unrelated_secrets,
        layout.unrelated_deployments
    );
    let scenario = "5. Memory vs unrelated objects";
    let server = b.fake().await?;
    b.populate(&server, &layout, true, true)?;
    let op = b.spawn_operator(&server, "unrelated")?;
    let cold = b.cold_start(scenario, &server, &layout, &op).await?;
    let settled = b.settle(scenario, &op).await?;
    if let Some(base) = b.results.get("settled_without_unrelated") {
        let with = settled["rss_mean_mib"].as_f64().unwrap_or(0.0);
        let without = base["rss_mean_mib"].as_f64().unwrap_or(0.0);
        let hwm_with = settled["hwm_mib"].as_f64().unwrap_or(0.0);
        let hwm_without = base["hwm_mib"].as_f64().unwrap_or(0.0);
        b.report.row(
            scenario,
            "RSS without / with unrelated objects (growth); VmHWM without / with",
            format!(
                "{without:.1} / {with:.1} MiB ({:+.1} MiB); {hwm_without:.1} / {hwm_with:.1} MiB",
                with - without
            ),
            "growth < 10 MiB",
        );
    }
    b.results.insert(
        "unrelated".into(),
        json!({"cold": cold, "settled": settled, "layout": layout.json()}),
    );
    op.stop();
    Ok(())
}

async fn start_bao(dir: &Path) -> Result<(BaoServer, PathBuf)> {
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

fn main() -> Result<()> {
    let mut args = Args::parse();
    if !args.operator.is_file() {
        bail!(
            "operator binary {} not found: cargo build --release -p secretsync",
            args.operator.display()
        );
    }
    args.operator = args.operator.canonicalize()?;
    if find_binary(BAO_BIN_ENV, "bao").is_none() {
        let venv = PathBuf::from(".venv/bin/bao");
        if venv.is_file() {
            // SAFETY: no other thread exists yet (the runtime is built below).
            unsafe { std::env::set_var(BAO_BIN_ENV, venv.canonicalize()?) };
        }
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench(args))
}

async fn bench(args: Args) -> Result<()> {
    std::fs::create_dir_all(&args.out_dir)?;
    let started = Instant::now();
    let s = args.scale;
    let scaled = |n: f64| ((n * s).round() as usize).max(1);
    let large = Layout {
        namespaces: scaled(100.0),
        per_namespace: 100,
        unrelated_secrets: scaled(50_000.0),
        unrelated_deployments: scaled(5_000.0),
    };
    let small = Layout {
        per_namespace: 10,
        ..large
    };
    let machine = probe::machine();
    println!("secretsync-bench: scale {s}, machine {machine}");
    let dir = tempfile::tempdir()?;
    let (bao, audit_path) = start_bao(dir.path()).await?;
    let bao_admin = bao.admin();
    let t = Instant::now();
    let puts: Vec<Result<()>> = futures::stream::iter(
        (0..large.namespaces).flat_map(|i| (0..world::KEYS_PER_NAMESPACE).map(move |r| (i, r))),
    )
    .map(|(i, r)| {
        let bao = &bao_admin;
        async move {
            world::bao_put(
                bao,
                &world::remote_key(i, r),
                &world::remote_value(i * world::KEYS_PER_NAMESPACE + r, 1),
            )
            .await
        }
    })
    .buffer_unordered(16)
    .collect()
    .await;
    puts.into_iter().collect::<Result<Vec<()>>>()?;
    println!(
        "  wrote {} remote keys to OpenBao in {:.1} s",
        large.remote_keys(),
        t.elapsed().as_secs_f64()
    );
    let size = std::fs::metadata(&args.operator)?.len();
    let mut b = Bench {
        tck: probe::clk_tck(),
        audit: AuditCounter::new(&audit_path),
        bao_admin,
        bao,
        dir,
        report: Report::default(),
        results: serde_json::Map::new(),
        args: args.clone(),
    };
    b.report.row(
        "0. Binary and idle operator",
        "release binary size",
        format!("{:.1} MiB", mib(size / 1024)),
        "",
    );
    b.results.insert("binary_size_bytes".into(), json!(size));
    for run in &args.runs {
        match run.as_str() {
            "idle" => run_idle(&mut b).await?,
            "cold-small" => run_cold_small(&mut b, small).await?,
            "main" => run_main(&mut b, large).await?,
            "unrelated" => run_unrelated(&mut b, large).await?,
            other => bail!("unknown run {other:?}"),
        }
    }
    let md = b.report.markdown();
    println!("\n# secretsync benchmark (scale {s})\n{md}");
    let out = json!({
        "scale": s,
        "machine": machine,
        "load_average_at_end": probe::load_average(),
        "duration_s": started.elapsed().as_secs_f64(),
        "args": format!("{args:?}"),
        "results": b.results,
    });
    let json_path = args.out_dir.join("results.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&out)?)?;
    std::fs::write(args.out_dir.join("results.md"), md)?;
    println!(
        "wrote {} and results.md ({:.0} s in all; OpenBao pid {})",
        json_path.display(),
        started.elapsed().as_secs_f64(),
        b.bao.process.id()
    );
    Ok(())
}
