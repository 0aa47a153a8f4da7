//! Cold start (every binding exists before the operator starts) and the memory reading
//! and trailing writes after it settles.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use secretsync_testkit::FakeApiServer;
use serde_json::{Value, json};

use super::Bench;
use crate::config::{Layout, READY_TIMEOUT, parse_dur};
use crate::probe::{self, ProcSample, percentile};
use crate::process::Operator;
use crate::report::{WriteSplit, by_count, count_diff, event_writes, mib, secs, total, writes};
use crate::world;

/// What a cold start measured.
struct ColdStart {
    /// Seconds from the operator's start to each binding's first Ready, sorted.
    lat: Vec<f64>,
    /// Bindings not Ready within [`READY_TIMEOUT`].
    missing: usize,
    /// API requests since the fake started.
    counts: BTreeMap<String, u64>,
    /// Event writes: events.k8s.io creates, events.k8s.io patches, core v1 writes.
    events: (u64, u64, u64),
    /// Backend requests and KV reads during the cold start.
    backend_requests: u64,
    kv_reads: u64,
    operator: ProcSample,
    metrics: String,
}

/// A cold start's figures for the side-by-side table.
#[derive(Debug, Clone)]
pub struct ColdSummary {
    pub bindings: usize,
    pub all_ready_s: f64,
    pub missing: usize,
    pub api_requests: u64,
    pub writes: WriteSplit,
    /// events.k8s.io creates, events.k8s.io patches, core v1 event writes.
    pub events: (u64, u64, u64),
    pub backend_requests: u64,
    pub kv_reads: u64,
    pub cpu_s: f64,
    pub hwm_mib: f64,
}

impl ColdSummary {
    /// API writes per binding that are not Events.
    pub fn writes_per_binding_besides_events(&self) -> f64 {
        (self.writes.total() - self.writes.events) as f64 / self.bindings.max(1) as f64
    }
}

impl Bench {
    /// Cold start: everything exists before the operator starts. `run` names it in the
    /// side-by-side table.
    pub async fn cold_start(
        &mut self,
        scenario: &str,
        run: &str,
        server: &FakeApiServer,
        layout: &Layout,
        op: &mut Operator,
    ) -> Result<Value> {
        let (req0, reads0) = self.audit.snapshot()?;
        let started = op.started;
        let pending: Vec<(String, String, Instant)> = (0..layout.namespaces)
            .flat_map(|i| {
                (0..layout.per_namespace)
                    .map(move |j| (world::ns_name(i), world::binding_name(j), started))
            })
            .collect();
        let (lat, missing) = Self::wait_ready(
            server,
            op,
            pending,
            Duration::from_millis(200),
            READY_TIMEOUT,
        )
        .await?;
        let counts = count_diff(&BTreeMap::new(), &server.counts());
        let events = event_writes(&BTreeMap::new(), &server.counts_by_group());
        let (req1, reads1) = self.audit.snapshot()?;
        let cpu = op.now(self.tck)?;
        let metrics = op.metrics().await;
        let m = ColdStart {
            lat,
            missing,
            counts,
            events,
            backend_requests: req1 - req0,
            kv_reads: reads1 - reads0,
            operator: cpu,
            metrics,
        };
        self.report_cold_start(scenario, layout, op, &m);
        self.cold_starts.push((run.to_string(), m.summary(layout)));
        Ok(m.json(layout, op))
    }

    fn report_cold_start(&mut self, scenario: &str, layout: &Layout, op: &Operator, m: &ColdStart) {
        let all_ready = m.all_ready();
        let split = WriteSplit::of(&m.counts);
        let r = &mut self.report;
        r.row(
            scenario,
            "bindings / namespaces / remote keys",
            layout.describe(&self.args.cache_ttl),
            "",
        );
        r.row(
            scenario,
            "operator flags (besides namespace and addresses)",
            op.flags_text(),
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
            "API requests by verb and resource",
            by_count(&m.counts),
            "",
        );
        r.row(
            scenario,
            "API writes: status / Secret / Events / other (Lease, finalizers, ...)",
            split.slashed(),
            "",
        );
        let summary = m.summary(layout);
        r.row(
            scenario,
            "API writes per binding besides Events",
            format!("{:.2}", summary.writes_per_binding_besides_events()),
            "≤ 2",
        );
        r.row(
            scenario,
            "Events written: events.k8s.io create / patch; core v1",
            format!("{} / {}; {}", m.events.0, m.events.1, m.events.2),
            &format!(
                "bounded (aggregated, rate-limited): far fewer than {} bindings",
                layout.bindings()
            ),
        );
        let pairs = layout.source_key_pairs();
        let read_target = if layout.cached {
            format!("KV reads ≈ {} distinct remote keys", layout.remote_keys())
        } else {
            format!(
                "KV reads ≤ {:.0} (1.1 × {pairs} (source, key) pairs); requests ≤ that + {} sources",
                1.1 * pairs as f64,
                layout.namespaces
            )
        };
        r.row(
            scenario,
            "backend requests (KV reads)",
            format!("{} ({})", m.backend_requests, m.kv_reads),
            &read_target,
        );
        r.row(
            scenario,
            "KV reads per (source, key) pair / per distinct remote key",
            format!(
                "{:.2} / {:.2} ({pairs} pairs, {} remote keys)",
                m.kv_reads as f64 / pairs as f64,
                m.kv_reads as f64 / layout.remote_keys() as f64,
                layout.remote_keys()
            ),
            "",
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

    /// Waits out the settle time, reads memory, and counts the API writes that trail the
    /// cold start (Events published late, first refreshes).
    pub async fn settle(
        &mut self,
        scenario: &str,
        server: &FakeApiServer,
        op: &Operator,
    ) -> Result<Value> {
        let settle = parse_dur(&self.args.settle)?;
        let from = op.started.elapsed().as_secs_f64();
        let c0 = server.counts();
        let g0 = server.counts_by_group();
        tokio::time::sleep(settle).await;
        let now = op.now(self.tck)?;
        let c = count_diff(&c0, &server.counts());
        let events = event_writes(&g0, &server.counts_by_group());
        let split = WriteSplit::of(&c);
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
        self.report.row(
            scenario,
            &format!(
                "API writes in those {}s: status / Secret / Events / other",
                settle.as_secs()
            ),
            split.slashed(),
            "",
        );
        Ok(json!({
            "settle_s": settle.as_secs_f64(),
            "rss_now_mib": mib(now.rss_kib),
            "rss_mean_mib": mean / 1024.0,
            "rss_max_mib": mib(max),
            "hwm_mib": mib(now.hwm_kib),
            "api_counts": c,
            "status_writes": split.status,
            "secret_writes": split.secrets,
            "event_writes": split.events,
            "other_writes": split.other,
            "events_k8s_io_creates": events.0,
            "events_k8s_io_patches": events.1,
            "core_event_writes": events.2,
        }))
    }
}

impl ColdStart {
    /// Seconds until the last binding was Ready.
    fn all_ready(&self) -> f64 {
        self.lat.last().copied().unwrap_or(0.0)
    }

    fn summary(&self, layout: &Layout) -> ColdSummary {
        ColdSummary {
            bindings: layout.bindings(),
            all_ready_s: self.all_ready(),
            missing: self.missing,
            api_requests: total(&self.counts),
            writes: WriteSplit::of(&self.counts),
            events: self.events,
            backend_requests: self.backend_requests,
            kv_reads: self.kv_reads,
            cpu_s: self.operator.cpu_s,
            hwm_mib: mib(self.operator.hwm_kib),
        }
    }

    fn json(&self, layout: &Layout, op: &Operator) -> Value {
        let all_ready = self.all_ready();
        let split = WriteSplit::of(&self.counts);
        let summary = self.summary(layout);
        json!({
            "layout": layout.json(),
            "operator_flags": op.flags,
            "all_ready_s": all_ready,
            "not_ready": self.missing,
            "latency_p50_s": percentile(&self.lat, 50.0),
            "latency_p99_s": percentile(&self.lat, 99.0),
            "latency_max_s": all_ready,
            "api_requests": total(&self.counts),
            "api_writes": writes(&self.counts),
            "api_counts": self.counts,
            "status_writes": split.status,
            "secret_writes": split.secrets,
            "event_writes": split.events,
            "other_writes": split.other,
            "writes_per_binding_besides_events": summary.writes_per_binding_besides_events(),
            "events_k8s_io_creates": self.events.0,
            "events_k8s_io_patches": self.events.1,
            "core_event_writes": self.events.2,
            "backend_requests": self.backend_requests,
            "backend_kv_reads": self.kv_reads,
            "distinct_remote_keys": layout.remote_keys(),
            "distinct_source_key_pairs": layout.source_key_pairs(),
            "operator_metric_backend_requests": probe::metric_sum(&self.metrics, "secretsync_backend_requests_total"),
            "operator_cpu_s": self.operator.cpu_s,
            "operator_hwm_mib": mib(self.operator.hwm_kib),
            "operator_rss_mib": mib(self.operator.rss_kib),
        })
    }
}
