//! Prometheus metrics (families fixed by DESIGN.md). No per-object labels, so cardinality
//! stays flat however many bindings exist.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use secretsync_api::BackendKind;
use secretsync_backends::cache::{BackendCall, CacheObserver};

use crate::changes::{EventOrigin, EventResult};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerResult {
    controller: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabel {
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendOpResult {
    backend: &'static str,
    operation: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendOp {
    backend: &'static str,
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    backend: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WatchLabel {
    watch: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    source: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadyLabel {
    ready: &'static str,
}

fn duration_histogram() -> Histogram {
    // 5ms .. ~82s: reconciles and backend calls both fit.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// All metric families of the operator.
pub struct Metrics {
    registry: Registry,
    reconcile_total: Family<ControllerResult, Counter>,
    reconcile_duration: Family<ControllerLabel, Histogram, fn() -> Histogram>,
    backend_requests: Family<BackendOpResult, Counter>,
    backend_duration: Family<BackendOp, Histogram, fn() -> Histogram>,
    cache_hits: Family<BackendLabel, Counter>,
    cache_misses: Family<BackendLabel, Counter>,
    rotations: Counter,
    rollout_restarts: Family<KindLabel, Counter>,
    bindings: Family<ReadyLabel, Gauge>,
    watch_retries: Family<WatchLabel, Counter>,
    restarts_queued: Gauge,
    events: Family<EventLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every family under the `secretsync_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("secretsync");
        let m = Metrics {
            registry: Registry::default(),
            reconcile_total: Family::default(),
            reconcile_duration: Family::new_with_constructor(duration_histogram),
            backend_requests: Family::default(),
            backend_duration: Family::new_with_constructor(duration_histogram),
            cache_hits: Family::default(),
            cache_misses: Family::default(),
            rotations: Counter::default(),
            rollout_restarts: Family::default(),
            bindings: Family::default(),
            watch_retries: Family::default(),
            restarts_queued: Gauge::default(),
            events: Family::default(),
        };
        // Counters get their `_total` suffix from the encoder.
        macro_rules! register {
            ($($field:ident: $name:literal, $help:literal;)*) => {
                $(registry.register($name, $help, m.$field.clone());)*
            };
        }
        register! {
            reconcile_total: "reconcile", "Reconciles by controller and result";
            reconcile_duration: "reconcile_duration_seconds", "Reconcile duration by controller";
            backend_requests: "backend_requests", "Backend requests by backend, operation and result";
            backend_duration: "backend_request_duration_seconds",
                "Backend request duration by backend and operation";
            cache_hits: "cache_hits", "Reads served by the shared cache";
            cache_misses: "cache_misses", "Reads that needed a backend request";
            rotations: "rotations", "Synced data changes after the first sync";
            rollout_restarts: "rollout_restarts", "Workload restarts after rotations by kind";
            bindings: "bindings", "SecretBindings by Ready status";
            restarts_queued: "rollout_restarts_queued",
                "Workload restarts waiting for the --max-restarts-per-minute budget";
            events: "events",
                "Change events (webhook calls, queue messages) by origin and result";
            watch_retries: "watch_retries",
                "Failed attempts of a watch (list or watch) by watched kind; they are retried within seconds";
        }
        // Pre-create the Ready series so dashboards see zeros instead of nothing.
        for ready in ["true", "false", "unknown"] {
            m.bindings.get_or_create(&ReadyLabel { ready }).set(0);
        }
        Metrics { registry, ..m }
    }

    /// Counts one change event.
    pub fn event(&self, origin: EventOrigin, result: EventResult) {
        self.events
            .get_or_create(&EventLabels {
                source: origin.as_str(),
                result: result.as_str(),
            })
            .inc();
    }

    /// Records one reconcile.
    pub fn reconcile(&self, controller: &'static str, result: &'static str, elapsed: Duration) {
        self.reconcile_total
            .get_or_create(&ControllerResult { controller, result })
            .inc();
        self.reconcile_duration
            .get_or_create(&ControllerLabel { controller })
            .observe(elapsed.as_secs_f64());
    }

    /// Records a rotation.
    pub fn rotation(&self) {
        self.rotations.inc();
    }

    /// Records a workload restart (used by the rollout reconciler).
    pub fn rollout_restart(&self, kind: &str) {
        self.rollout_restarts
            .get_or_create(&KindLabel {
                kind: kind.to_string(),
            })
            .inc();
    }

    /// Sets how many restarts wait for the restart budget.
    pub fn set_restarts_queued(&self, n: usize) {
        self.restarts_queued
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Records a failed watch attempt.
    pub fn watch_retry(&self, watch: &'static str) {
        self.watch_retries
            .get_or_create(&WatchLabel { watch })
            .inc();
    }

    /// Sets the binding counts by Ready status.
    pub fn set_bindings(&self, ready: usize, not_ready: usize, unknown: usize) {
        for (label, n) in [("true", ready), ("false", not_ready), ("unknown", unknown)] {
            self.bindings
                .get_or_create(&ReadyLabel { ready: label })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// Adds `n` to `backend`'s counter of `family`.
fn count_for(family: &Family<BackendLabel, Counter>, backend: BackendKind, n: u64) {
    family
        .get_or_create(&BackendLabel {
            backend: backend.as_str(),
        })
        .inc_by(n);
}

impl CacheObserver for Metrics {
    fn backend_request(&self, call: &BackendCall) {
        self.backend_requests
            .get_or_create(&BackendOpResult {
                backend: call.backend.as_str(),
                operation: call.operation,
                result: call.result,
            })
            .inc();
        self.backend_duration
            .get_or_create(&BackendOp {
                backend: call.backend.as_str(),
                operation: call.operation,
            })
            .observe(call.elapsed.as_secs_f64());
    }

    fn cache_hits(&self, backend: BackendKind, n: u64) {
        count_for(&self.cache_hits, backend, n);
    }

    fn cache_misses(&self, backend: BackendKind, n: u64) {
        count_for(&self.cache_misses, backend, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_have_the_contracted_names() {
        let m = Metrics::new();
        m.reconcile("binding", "success", Duration::from_millis(3));
        m.backend_request(&BackendCall {
            backend: BackendKind::File,
            operation: "read",
            result: "success",
            elapsed: Duration::from_millis(1),
        });
        m.cache_hits(BackendKind::File, 2);
        m.cache_misses(BackendKind::File, 1);
        m.rotation();
        m.rollout_restart("Deployment");
        m.set_bindings(3, 1, 0);
        m.watch_retry("Deployment");
        m.event(EventOrigin::Webhook, EventResult::Unauthorized);
        let text = m.encode();
        for needle in [
            "secretsync_reconcile_total{controller=\"binding\",result=\"success\"} 1",
            "secretsync_reconcile_duration_seconds_count{controller=\"binding\"} 1",
            "secretsync_backend_requests_total{backend=\"file\",operation=\"read\",result=\"success\"} 1",
            "secretsync_backend_request_duration_seconds_count{backend=\"file\",operation=\"read\"} 1",
            "secretsync_cache_hits_total{backend=\"file\"} 2",
            "secretsync_cache_misses_total{backend=\"file\"} 1",
            "secretsync_rotations_total 1",
            "secretsync_rollout_restarts_total{kind=\"Deployment\"} 1",
            "secretsync_bindings{ready=\"true\"} 3",
            "secretsync_bindings{ready=\"false\"} 1",
            "secretsync_watch_retries_total{watch=\"Deployment\"} 1",
            "secretsync_events_total{source=\"webhook\",result=\"unauthorized\"} 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
