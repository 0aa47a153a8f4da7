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
use crate::report::{count_diff, get, mib, secs, total, writes};
use crate::world;

/// What the steady window measured, per refresh cycle where it says so.
struct Steady {
    window: Duration,
    cycles: f64,
    /// API requests in the window.
    counts: BTreeMap<String, u64>,
    cpu_s: f64,
    cpu_per_min: f64,
    per_minute: Vec<f64>,
    rss_max_kib: u64,
    rss_mean_kib: f64,
    hwm_kib: u64,
    reads_per_cycle: f64,
    requests_per_cycle: f64,
    status_patches: f64,
    secret_writes: f64,
    other_writes: f64,
    /// Cache hits in the window (operator metric).
    hits: f64,
}

impl Bench {
    /// Steady state: a window of `--steady` with nothing changing.
    pub async fn steady(
        &mut self,
        server: &FakeApiServer,
        layout: &Layout,
        op: &Operator,
    ) -> Result<Value> {
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
        let cpu = p1.cpu_s - p0.cpu_s;
        let status_patches = get(&c, "patch secretbindings/status") as f64 / cycles;
        let secret_writes = (get(&c, "patch secrets")
            + get(&c, "create secrets")
            + get(&c, "update secrets")) as f64
            / cycles;
        let s = Steady {
            window: d,
            cycles,
            cpu_s: cpu,
            cpu_per_min: cpu / (d.as_secs_f64() / 60.0),
            per_minute: op.cpu_per_minute(t0, t1),
            rss_max_kib: rss_max,
            rss_mean_kib: rss_mean,
            hwm_kib: p1.hwm_kib,
            reads_per_cycle: (reads1 - reads0) as f64 / cycles,
            requests_per_cycle: (req1 - req0) as f64 / cycles,
            status_patches,
            secret_writes,
            other_writes: writes(&c) as f64 / cycles - status_patches - secret_writes,
            hits: probe::metric_sum(&m1, "secretsync_cache_hits_total")
                - probe::metric_sum(&m0, "secretsync_cache_hits_total"),
            counts: c,
        };
        self.report_steady(layout, &s);
        Ok(s.json(layout))
    }

    fn report_steady(&mut self, layout: &Layout, s: &Steady) {
        let scenario = "3. Steady state";
        let cycles = s.cycles;
        let r = &mut self.report;
        r.row(
            scenario,
            "parameters",
            format!(
                "{} bindings, refreshInterval {REFRESH}, cache ttl {}, window {} s = {cycles:.1} cycles",
                layout.bindings(),
                self.args.cache_ttl,
                s.window.as_secs()
            ),
            "",
        );
        r.row(
            scenario,
            "operator CPU",
            format!(
                "{:.2} s/min = {:.1}% of one core",
                s.cpu_per_min,
                s.cpu_per_min / 60.0 * 100.0
            ),
            "< 5% of one core (3 s/min)",
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
            "< 150 MiB",
        );
        r.row(
            scenario,
            "backend KV reads per cycle (all requests)",
            format!("{:.0} ({:.0})", s.reads_per_cycle, s.requests_per_cycle),
            &format!("≤ {} distinct remote keys", layout.remote_keys()),
        );
        r.row(
            scenario,
            "cache hits per cycle (operator metric)",
            format!("{:.0}", s.hits / cycles),
            "",
        );
        r.row(
            scenario,
            "API writes per cycle: status patches (lastSyncTime)",
            format!("{:.0}", s.status_patches),
            "reported (≈ bindings)",
        );
        r.row(
            scenario,
            "API writes per cycle: Secret writes",
            format!("{:.0}", s.secret_writes),
            "0",
        );
        r.row(
            scenario,
            "API writes per cycle: other (events, leases, ...)",
            format!("{:.0}", s.other_writes),
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
    pub async fn new_bindings(&mut self, server: &FakeApiServer, layout: &Layout) -> Result<Value> {
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
}

impl Steady {
    fn json(&self, layout: &Layout) -> Value {
        let cycles = self.cycles;
        json!({
            "window_s": self.window.as_secs_f64(),
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
            "cache_hits_per_cycle": self.hits / cycles,
            "status_patches_per_cycle": self.status_patches,
            "secret_writes_per_cycle": self.secret_writes,
            "other_writes_per_cycle": self.other_writes,
            "api_counts": self.counts,
            "load_average_after": probe::load_average(),
        })
    }
}
