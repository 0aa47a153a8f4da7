//! Kubernetes Events (events.k8s.io/v1) on bindings and workloads, rate-limited per object so a flapping
//! backend cannot flood the API server. Messages name Secrets and keys, never values.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::time::Instant;

use crate::runtime::ObjKey;

/// Token bucket per object: `burst` events at once, then one per `refill`.
#[derive(Debug)]
pub struct EventLimiter {
    burst: f64,
    refill: Duration,
    buckets: HashMap<ObjKey, (f64, Instant)>,
}

impl EventLimiter {
    /// A limiter allowing `burst` events then one per `refill` per object.
    pub fn new(burst: u32, refill: Duration) -> Self {
        EventLimiter {
            burst: f64::from(burst),
            refill,
            buckets: HashMap::new(),
        }
    }

    /// Takes a token for `key` if one is available.
    pub fn allow(&mut self, key: &ObjKey, now: Instant) -> bool {
        let (tokens, at) = self.buckets.entry(key.clone()).or_insert((self.burst, now));
        let gained = now.saturating_duration_since(*at).as_secs_f64() / self.refill.as_secs_f64();
        *tokens = (*tokens + gained).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Drops the bucket of a deleted object.
    pub fn forget(&mut self, key: &ObjKey) {
        self.buckets.remove(key);
    }
}

/// Publishes events through kube's `Recorder`. Warnings go through one shared recorder,
/// which folds repeats (a binding failing at every backoff step) into series; its cache
/// keeps every event it published for six minutes. Normal events (`Synced`, `Rotated`,
/// `RolloutRestarted`) are one-offs per change, so they skip that cache: at 10,000
/// bindings a cold start's `Synced` events kept about 3 KiB per binding in it
/// (BENCHMARKS.md).
pub struct Events {
    recorder: Recorder,
    client: Client,
    reporter: Reporter,
    limiter: Mutex<EventLimiter>,
}

/// Event reasons on bindings.
pub mod reasons {
    /// The Secret was written.
    pub const SYNCED: &str = "Synced";
    /// The synced data changed.
    pub const ROTATED: &str = "Rotated";
    /// A sync failed.
    pub const SYNC_FAILED: &str = "SyncFailed";
    /// A workload was restarted after a rotation (on the workload).
    pub const ROLLOUT_RESTARTED: &str = "RolloutRestarted";
    /// A restart was deferred, e.g. the Deployment is paused (Warning, on the workload).
    pub const ROLLOUT_SKIPPED: &str = "RolloutSkipped";
}

impl Events {
    /// A publisher reporting as `secretsync` / `instance`.
    pub fn new(client: Client, instance: &str) -> Self {
        let reporter = Reporter {
            controller: "secretsync".to_string(),
            instance: Some(instance.to_string()),
        };
        Events {
            recorder: Recorder::new(client.clone(), reporter.clone()),
            client,
            reporter,
            // 5 at once, then one a minute: a binding failing every backoff step gets a
            // handful of events, not hundreds.
            limiter: Mutex::new(EventLimiter::new(5, Duration::from_secs(60))),
        }
    }

    /// Publishes unless the object's budget is spent. Failures are logged, never fatal.
    pub async fn publish(
        &self,
        key: &ObjKey,
        reference: &k8s_openapi::api::core::v1::ObjectReference,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        self.publish_action(key, reference, warning, reason, "Sync", note)
            .await
    }

    /// [`Events::publish`] with an explicit `action` (e.g. `Restart` on workloads).
    pub async fn publish_action(
        &self,
        key: &ObjKey,
        reference: &k8s_openapi::api::core::v1::ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let allowed = self
            .limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .allow(key, Instant::now());
        if !allowed {
            tracing::debug!(object = %key, reason, "event suppressed by rate limit");
            return;
        }
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        let published = if warning {
            self.recorder.publish(&ev, reference).await
        } else {
            // A recorder with an empty cache: creates the event, remembers nothing.
            Recorder::new(self.client.clone(), self.reporter.clone())
                .publish(&ev, reference)
                .await
        };
        if let Err(e) = published {
            tracing::warn!(object = %key, reason, error = %e, "could not publish event");
        }
    }

    /// Forgets a deleted object's budget.
    pub fn forget(&self, key: &ObjKey) {
        self.limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .forget(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_limits_per_object() {
        let mut l = EventLimiter::new(3, Duration::from_secs(60));
        let a = ObjKey::new("ns", "a");
        let b = ObjKey::new("ns", "b");
        let t0 = Instant::now();
        assert!(l.allow(&a, t0));
        assert!(l.allow(&a, t0));
        assert!(l.allow(&a, t0));
        assert!(!l.allow(&a, t0));
        assert!(l.allow(&b, t0), "other objects have their own budget");
        assert!(!l.allow(&a, t0 + Duration::from_secs(30)));
        assert!(l.allow(&a, t0 + Duration::from_secs(61)));
        assert!(!l.allow(&a, t0 + Duration::from_secs(62)));
        l.forget(&a);
        assert!(l.allow(&a, t0 + Duration::from_secs(62)));
    }
}
