//! Steady state (the operator's cost per refresh cycle once every binding is Ready) and
//! new bindings created in a burst while it runs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use secretsync_testkit::FakeApiServer;
use serde_json::{Value, json};

use super::Bench;
use crate::config::{Layout, NEW_BINDINGS, REFRESH, parse_dur};
use crate::probe::{self, percentile};
use crate::process::Operator;
use crate::report::{WriteSplit, count_diff, mib, secs, total, writes};
use crate::world::{self, Keys};

/// Which targets a steady window is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SteadyKind {
    /// The main run: cached sources, the original bench's flags and targets.
    Main,
    /// No cache configured and the operator's defaults (the status heartbeat included).
    Defaults,
    /// No cache configured, `--status-heartbeat 0`: `lastSyncTime` on every refresh.
    Heartbeat0,
    /// Keys shared across namespaces, no cache configured, the operator's defaults.
    Shared,
    /// No cache configured, `--status-heartbeat 1h`.
    Heartbeat1h,
}

/// A steady window to measure: where it is reported and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Window<'a> {
    /// The report section.
    pub scenario: &'a str,
    /// The run's name in the side-by-side table.
    pub run: &'a str,
    pub kind: SteadyKind,
    pub length: Duration,
}

/// What the steady window measured, per refresh cycle where it says so.
struct Steady {
    window: Duration,
    /// Seconds after the operator's start at which the window began and ended.
    from_s: f64,
    to_s: f64,
    cycles: f64,
    /// API requests in the window.
    counts: BTreeMap<String, u64>,
    writes: WriteSplit,
    cpu_s: f64,
    cpu_per_min: f64,
    per_minute: Vec<f64>,
    rss_max_kib: u64,
    rss_mean_kib: f64,
    hwm_kib: u64,
    reads_per_cycle: f64,
    requests_per_cycle: f64,
    /// Cache hits in the window (operator metric).
    hits: f64,
}

/// A steady window's figures for the side-by-side table.
#[derive(Debug, Clone)]
pub struct SteadySummary {
    pub window_s: f64,
    pub cycles: f64,
    pub reads_per_cycle: f64,
    pub remote_keys: usize,
    pub pairs: usize,
    pub writes: WriteSplit,
    pub cpu_per_min: f64,
    pub rss_mean_mib: f64,
    pub rss_max_mib: f64,
}

impl Bench {
    /// Steady state: a window with nothing changing.
    pub async fn steady(
        &mut self,
        w: Window<'_>,
        server: &FakeApiServer,
        layout: &Layout,
        op: &Operator,
    ) -> Result<Value> {
        let d = w.length;
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
        let cpu = p1.cpu_s - p0.cpu_s;
        let s = Steady {
            window: d,
            from_s: t0,
            to_s: t1,
            cycles,
            writes: WriteSplit::of(&c),
            cpu_s: cpu,
            cpu_per_min: cpu / (d.as_secs_f64() / 60.0),
            per_minute: op.cpu_per_minute(t0, t1),
            rss_max_kib: rss_max,
            rss_mean_kib: rss_mean,
            hwm_kib: p1.hwm_kib,
            reads_per_cycle: (reads1 - reads0) as f64 / cycles,
            requests_per_cycle: (req1 - req0) as f64 / cycles,
            hits: probe::metric_sum(&m1, "secretsync_cache_hits_total")
                - probe::metric_sum(&m0, "secretsync_cache_hits_total"),
            counts: c,
        };
        self.report_steady(w.scenario, w.kind, layout, op, &s);
        self.steadies.push((
            w.run.to_string(),
            SteadySummary {
                window_s: d.as_secs_f64(),
                cycles,
                reads_per_cycle: s.reads_per_cycle,
                remote_keys: layout.remote_keys(),
                pairs: layout.source_key_pairs(),
                writes: s.writes,
                cpu_per_min: s.cpu_per_min,
                rss_mean_mib: s.rss_mean_kib / 1024.0,
                rss_max_mib: mib(s.rss_max_kib),
            },
        ));
        Ok(s.json(layout, op))
    }

    fn report_steady(
        &mut self,
        scenario: &str,
        kind: SteadyKind,
        layout: &Layout,
        op: &Operator,
        s: &Steady,
    ) {
        let cycles = s.cycles;
        let bindings = layout.bindings();
        let pairs = layout.source_key_pairs();
        let r = &mut self.report;
        r.row(
            scenario,
            "parameters",
            format!(
                "{bindings} bindings, refreshInterval {REFRESH}, {}, window {} s = {cycles:.1} cycles ({:.0}–{:.0} s after the operator started); operator flags: {}",
                if layout.cached {
                    format!("cache ttl {}", self.args.cache_ttl)
                } else {
                    "no spec.cache".to_string()
                },
                s.window.as_secs(),
                s.from_s,
                s.to_s,
                op.flags_text()
            ),
            "",
        );
        let cpu_target = match kind {
            SteadyKind::Main => "< 5% of one core (3 s/min)",
            SteadyKind::Defaults => "≤ 0.5 × the heartbeat0 run's",
            SteadyKind::Heartbeat0 => "reference for the defaults run",
            SteadyKind::Shared | SteadyKind::Heartbeat1h => "",
        };
        r.row(
            scenario,
            "operator CPU",
            format!(
                "{:.2} s/min = {:.1}% of one core",
                s.cpu_per_min,
                s.cpu_per_min / 60.0 * 100.0
            ),
            cpu_target,
        );
        r.row(
            scenario,
            "operator CPU in each minute of the window",
            s.per_minute
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
                s.rss_mean_kib / 1024.0,
                mib(s.rss_max_kib),
                mib(s.hwm_kib)
            ),
            match kind {
                SteadyKind::Main => "< 150 MiB",
                SteadyKind::Defaults => "< 100 MiB",
                SteadyKind::Heartbeat0 | SteadyKind::Shared | SteadyKind::Heartbeat1h => "",
            },
        );
        let reads_target = if layout.cached {
            format!("≤ {} distinct remote keys", layout.remote_keys())
        } else {
            format!(
                "≤ {:.0} (1.1 × {pairs} (source, key) pairs)",
                1.1 * pairs as f64
            )
        };
        r.row(
            scenario,
            "backend KV reads per cycle (all requests)",
            format!("{:.0} ({:.0})", s.reads_per_cycle, s.requests_per_cycle),
            &reads_target,
        );
        if layout.keys == Keys::Shared || !layout.cached {
            r.row(
                scenario,
                "KV reads per cycle per (source, key) pair / per distinct remote key",
                format!(
                    "{:.2} / {:.2} ({pairs} pairs, {} remote keys)",
                    s.reads_per_cycle / pairs as f64,
                    s.reads_per_cycle / layout.remote_keys() as f64,
                    layout.remote_keys()
                ),
                "",
            );
        }
        r.row(
            scenario,
            "cache hits per cycle (operator metric)",
            format!("{:.0}", s.hits / cycles),
            "",
        );
        let status_target = match kind {
            SteadyKind::Main | SteadyKind::Defaults | SteadyKind::Shared => {
                format!("≤ {} (bindings ÷ 10: the 10m heartbeat)", bindings / 10)
            }
            SteadyKind::Heartbeat0 => format!("≈ {bindings} (every refresh)"),
            SteadyKind::Heartbeat1h => {
                format!("≤ {} (bindings ÷ 60: the 1h heartbeat)", bindings / 60)
            }
        };
        r.row(
            scenario,
            "API writes per cycle: status patches (lastSyncTime)",
            format!("{:.0}", s.writes.status as f64 / cycles),
            &status_target,
        );
        r.row(
            scenario,
            "API writes per cycle: Secret writes",
            format!("{:.0}", s.writes.secrets as f64 / cycles),
            "0",
        );
        r.row(
            scenario,
            "API writes per cycle: Events",
            format!("{:.0}", s.writes.events as f64 / cycles),
            "",
        );
        r.row(
            scenario,
            "API writes per cycle: other (Lease, ...)",
            format!("{:.0}", s.writes.other as f64 / cycles),
            "",
        );
        r.row(
            scenario,
            "API reads per cycle",
            format!(
                "{:.0}",
                (total(&s.counts) - writes(&s.counts)) as f64 / cycles
            ),
            "",
        );
    }

    /// New bindings: a burst written into the store while the others keep refreshing.
    pub async fn new_bindings(
        &mut self,
        server: &FakeApiServer,
        layout: &Layout,
        op: &mut Operator,
    ) -> Result<Value> {
        let scenario = "2. New bindings under load";
        let mut pending = Vec::new();
        for k in 0..NEW_BINDINGS {
            let i = k % layout.namespaces;
            let name = format!("new-{k:03}");
            let created = Instant::now();
            world::put(
                server,
                &world::binding(layout.keys, i, &name, REFRESH, layout.cluster_source),
            )?;
            pending.push((world::ns_name(i), name, created));
        }
        let (lat, missing) = Self::wait_ready(
            server,
            op,
            pending,
            Duration::from_millis(20),
            Duration::from_secs(120),
        )
        .await?;
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
}

impl Steady {
    fn json(&self, layout: &Layout, op: &Operator) -> Value {
        let cycles = self.cycles;
        json!({
            "layout": layout.json(),
            "operator_flags": op.flags,
            "window_s": self.window.as_secs_f64(),
            "window_from_s_after_start": self.from_s,
            "window_to_s_after_start": self.to_s,
            "cycles": cycles,
            "cpu_s": self.cpu_s,
            "cpu_s_per_min": self.cpu_per_min,
            "cpu_percent_of_one_core": self.cpu_per_min / 60.0 * 100.0,
            "cpu_s_each_minute": self.per_minute,
            "rss_mean_mib": self.rss_mean_kib / 1024.0,
            "rss_max_mib": mib(self.rss_max_kib),
            "hwm_mib": mib(self.hwm_kib),
            "backend_kv_reads_per_cycle": self.reads_per_cycle,
            "backend_requests_per_cycle": self.requests_per_cycle,
            "distinct_remote_keys": layout.remote_keys(),
            "distinct_source_key_pairs": layout.source_key_pairs(),
            "cache_hits_per_cycle": self.hits / cycles,
            "status_patches_per_cycle": self.writes.status as f64 / cycles,
            "secret_writes_per_cycle": self.writes.secrets as f64 / cycles,
            "event_writes_per_cycle": self.writes.events as f64 / cycles,
            "other_writes_per_cycle": self.writes.other as f64 / cycles,
            "api_counts": self.counts,
            "load_average_after": probe::load_average(),
        })
    }
}
