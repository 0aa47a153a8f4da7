//! Cold start (every binding exists before the operator starts) and the memory reading
//! after it settles.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use secretsync_testkit::FakeApiServer;
use serde_json::{Value, json};

use super::Bench;
use crate::config::{Layout, READY_TIMEOUT, REFRESH, parse_dur};
use crate::probe::{self, ProcSample, percentile};
use crate::process::Operator;
use crate::report::{count_diff, mib, secs, total, writes};
use crate::world;

/// What a cold start measured.
struct ColdStart {
    /// Seconds from the operator's start to each binding's first Ready, sorted.
    lat: Vec<f64>,
    /// Bindings not Ready within [`READY_TIMEOUT`].
    missing: usize,
    /// API requests since the fake started.
    counts: BTreeMap<String, u64>,
    /// Backend requests and KV reads during the cold start.
    backend_requests: u64,
    kv_reads: u64,
    operator: ProcSample,
    metrics: String,
}

impl Bench {
    /// Cold start: everything exists before the operator starts.
    pub async fn cold_start(
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
        let counts = count_diff(&BTreeMap::new(), &server.counts());
        let (req1, reads1) = self.audit.snapshot()?;
        let cpu = op.now(self.tck)?;
        let metrics = op.metrics().await;
        let m = ColdStart {
            lat,
            missing,
            counts,
            backend_requests: req1 - req0,
            kv_reads: reads1 - reads0,
            operator: cpu,
            metrics,
        };
        self.report_cold_start(scenario, layout, &m);
        Ok(m.json(layout))
    }

    fn report_cold_start(&mut self, scenario: &str, layout: &Layout, m: &ColdStart) {
        let all_ready = m.all_ready();
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
            if m.missing == 0 {
                secs(all_ready)
            } else {
                format!(
                    "{} not Ready after {}",
                    m.missing,
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
                secs(percentile(&m.lat, 50.0)),
                secs(percentile(&m.lat, 99.0))
            ),
            "",
        );
        r.row(
            scenario,
            "API requests (writes)",
            format!("{} ({})", total(&m.counts), writes(&m.counts)),
            "",
        );
        r.row(
            scenario,
            "backend requests (KV reads)",
            format!("{} ({})", m.backend_requests, m.kv_reads),
            &format!("KV reads ≈ {} distinct remote keys", layout.remote_keys()),
        );
        r.row(
            scenario,
            "operator CPU during cold start",
            secs(m.operator.cpu_s),
            "",
        );
        r.row(
            scenario,
            "operator peak RSS (VmHWM)",
            format!("{:.1} MiB", mib(m.operator.hwm_kib)),
            "",
        );
    }

    /// Waits out the settle time and reads memory.
    pub async fn settle(&mut self, scenario: &str, op: &Operator) -> Result<Value> {
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
}

impl ColdStart {
    /// Seconds until the last binding was Ready.
    fn all_ready(&self) -> f64 {
        self.lat.last().copied().unwrap_or(0.0)
    }

    fn json(&self, layout: &Layout) -> Value {
        let all_ready = self.all_ready();
        json!({
            "layout": layout.json(),
            "all_ready_s": all_ready,
            "not_ready": self.missing,
            "latency_p50_s": percentile(&self.lat, 50.0),
            "latency_p99_s": percentile(&self.lat, 99.0),
            "latency_max_s": all_ready,
            "api_requests": total(&self.counts),
            "api_writes": writes(&self.counts),
            "api_counts": self.counts,
            "backend_requests": self.backend_requests,
            "backend_kv_reads": self.kv_reads,
            "operator_metric_backend_requests": probe::metric_sum(&self.metrics, "secretsync_backend_requests_total"),
            "operator_cpu_s": self.operator.cpu_s,
            "operator_hwm_mib": mib(self.operator.hwm_kib),
            "operator_rss_mib": mib(self.operator.rss_kib),
        })
    }
}
