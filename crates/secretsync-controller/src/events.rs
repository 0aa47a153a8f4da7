//! Kubernetes Events (events.k8s.io/v1) on bindings and workloads, bounded the way
//! client-go's event correlator bounds them, so neither a flapping backend nor a cold start
//! of 10,000 bindings floods the API server:
//!
//! - a spam filter per object ([`EventLimiter`]: 5 at once, then one a minute);
//! - aggregation of similar events ([`Correlator`]): per (namespace, type, reason), the
//!   first 10 in 10 minutes are published one by one; later ones are counted and published
//!   as one summary per group every 30 s ("combined from similar events");
//! - a budget across all objects (100 at once, then 2 a second); events over it are
//!   counted into the summaries too, never lost without a trace.
//!
//! Messages name Secrets and keys, never values.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
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

/// Similar events of one group: same namespace, type and reason.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Group {
    /// Namespace of the object.
    pub namespace: String,
    /// Warning (or Normal).
    pub warning: bool,
    /// Event reason.
    pub reason: String,
}

/// A summary of events folded into their group since the last flush.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary<R> {
    /// The group.
    pub group: Group,
    /// How many events were folded.
    pub count: u32,
    /// The latest of them: its object and note (the summary is published on it).
    pub latest: R,
}

/// Whether an event goes out on its own or is folded into its group's next summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Publish it.
    Publish,
    /// Count it into the summary.
    Fold,
}

#[derive(Debug)]
struct Similar<R> {
    window_start: Instant,
    published: u32,
    folded: u32,
    latest: Option<R>,
}

/// Aggregation of similar events (pure: time is an argument). `R` is whatever the caller
/// needs to publish a summary later (the latest event's object and note).
#[derive(Debug)]
pub struct Correlator<R> {
    window: Duration,
    max_similar: u32,
    global: EventLimiter,
    groups: HashMap<Group, Similar<R>>,
}

/// The key of the one bucket of the budget across all objects.
fn everyone() -> ObjKey {
    ObjKey::new("", "")
}

impl<R> Correlator<R> {
    /// Publishes up to `max_similar` events per group in each `window`, and at most
    /// `burst` then one per `refill` across all groups; the rest is folded.
    pub fn new(window: Duration, max_similar: u32, burst: u32, refill: Duration) -> Self {
        Correlator {
            window,
            max_similar,
            global: EventLimiter::new(burst, refill),
            groups: HashMap::new(),
        }
    }

    /// Decides one event; `latest` is kept when it is folded.
    pub fn admit(&mut self, group: Group, latest: R, now: Instant) -> Verdict {
        let g = match self.groups.entry(group) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => v.insert(Similar {
                window_start: now,
                published: 0,
                folded: 0,
                latest: None,
            }),
        };
        if now.saturating_duration_since(g.window_start) >= self.window {
            g.window_start = now;
            g.published = 0;
        }
        if g.published < self.max_similar && self.global.allow(&everyone(), now) {
            g.published += 1;
            Verdict::Publish
        } else {
            g.folded += 1;
            g.latest = Some(latest);
            Verdict::Fold
        }
    }

    /// The summaries due: one per group with folded events. Groups with nothing folded and
    /// an expired window are dropped.
    pub fn flush(&mut self, now: Instant) -> Vec<Summary<R>> {
        let mut out = Vec::new();
        for (group, g) in self.groups.iter_mut() {
            if let Some(latest) = g.latest.take() {
                out.push(Summary {
                    group: group.clone(),
                    count: std::mem::take(&mut g.folded),
                    latest,
                });
            }
        }
        let window = self.window;
        self.groups
            .retain(|_, g| now.saturating_duration_since(g.window_start) < window);
        out
    }
}

/// Similar events published one by one per group and window.
const MAX_SIMILAR: u32 = 10;
/// The aggregation window (client-go's is 10 minutes too).
const SIMILAR_WINDOW: Duration = Duration::from_secs(600);
/// How often summaries of folded events go out.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(30);

/// What a summary is published with: the latest folded event's object and content.
#[derive(Debug, Clone)]
pub struct Folded {
    key: ObjKey,
    reference: k8s_openapi::api::core::v1::ObjectReference,
    action: String,
    note: String,
}

/// The API server refuses an Event whose note is over 1 KiB.
const NOTE_LIMIT: usize = 1024;

/// `note` cut to [`NOTE_LIMIT`] bytes at a character boundary, marked with an ellipsis.
fn within_note_limit(mut note: String) -> String {
    if note.len() <= NOTE_LIMIT {
        return note;
    }
    let mut end = NOTE_LIMIT - '…'.len_utf8();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    note.truncate(end);
    note.push('…');
    note
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
    correlator: Mutex<Correlator<Folded>>,
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
    /// A restart waits for the `--max-restarts-per-minute` budget (Normal, on the workload).
    pub const ROLLOUT_DELAYED: &str = "RolloutDelayed";
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
            correlator: Mutex::new(Correlator::new(
                SIMILAR_WINDOW,
                MAX_SIMILAR,
                100,
                Duration::from_millis(500),
            )),
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
        let group = Group {
            namespace: key.namespace.clone(),
            warning,
            reason: reason.to_string(),
        };
        let folded = Folded {
            key: key.clone(),
            reference: reference.clone(),
            action: action.to_string(),
            note,
        };
        let verdict = self
            .correlator
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(group.clone(), folded.clone(), Instant::now());
        if verdict == Verdict::Fold {
            tracing::debug!(object = %key, reason, "event folded into its group's summary");
            return;
        }
        self.send(&group, folded).await;
    }

    /// Publishes the summaries of folded events every `every`, until the task is dropped.
    pub async fn summarise_every(&self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.summarise().await;
        }
    }

    /// Publishes one summary per group with events folded since the last call.
    pub async fn summarise(&self) {
        let due = self
            .correlator
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .flush(Instant::now());
        for s in due {
            let note = format!(
                "{} more {} events in namespace {:?} (combined from similar events); latest: {}",
                s.count, s.group.reason, s.group.namespace, s.latest.note
            );
            self.send(&s.group, Folded { note, ..s.latest }).await;
        }
    }

    /// Creates event `event` of `group` (its type and reason).
    async fn send(&self, group: &Group, event: Folded) {
        let Folded {
            key,
            reference,
            action,
            note,
        } = event;
        let reason = group.reason.as_str();
        let warning = group.warning;
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_string(),
            note: Some(within_note_limit(note)),
            action,
            secondary: None,
        };
        let published = if warning {
            self.recorder.publish(&ev, &reference).await
        } else {
            // A recorder with an empty cache: creates the event, remembers nothing.
            Recorder::new(self.client.clone(), self.reporter.clone())
                .publish(&ev, &reference)
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

    fn group(ns: &str, reason: &str) -> Group {
        Group {
            namespace: ns.into(),
            warning: false,
            reason: reason.into(),
        }
    }

    #[test]
    fn similar_events_fold_into_one_summary_per_group() {
        let mut c: Correlator<u32> =
            Correlator::new(Duration::from_secs(600), 10, 1000, Duration::from_secs(1));
        let t0 = Instant::now();
        let verdicts: Vec<Verdict> = (0..100)
            .map(|i| c.admit(group("a", "Synced"), i, t0))
            .collect();
        assert!(verdicts[..10].iter().all(|v| *v == Verdict::Publish));
        assert!(verdicts[10..].iter().all(|v| *v == Verdict::Fold));
        // Other namespaces and other reasons are other groups.
        assert_eq!(c.admit(group("b", "Synced"), 0, t0), Verdict::Publish);
        assert_eq!(c.admit(group("a", "Rotated"), 0, t0), Verdict::Publish);
        let mut due = c.flush(t0);
        assert_eq!(due.len(), 1);
        let s = due.remove(0);
        assert_eq!((s.group, s.count, s.latest), (group("a", "Synced"), 90, 99));
        // Nothing folded since: no summary.
        assert!(c.flush(t0 + Duration::from_secs(30)).is_empty());
        assert_eq!(
            c.admit(group("a", "Synced"), 7, t0 + Duration::from_secs(60)),
            Verdict::Fold
        );
        // A new window publishes again.
        assert_eq!(
            c.admit(group("a", "Synced"), 8, t0 + Duration::from_secs(600)),
            Verdict::Publish
        );
        let due = c.flush(t0 + Duration::from_secs(601));
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].count, due[0].latest), (1, 7));
    }

    #[test]
    fn the_budget_across_objects_bounds_a_cold_start() {
        // 10,000 bindings in 100 namespaces within 10 s: at most the burst plus the refill
        // go out one by one, and one summary per namespace per flush.
        let mut c: Correlator<u32> =
            Correlator::new(SIMILAR_WINDOW, MAX_SIMILAR, 100, Duration::from_millis(500));
        let t0 = Instant::now();
        let mut published = 0;
        for i in 0..10_000u32 {
            let at = t0 + Duration::from_millis(u64::from(i));
            if c.admit(group(&format!("ns-{}", i % 100), "Synced"), i, at) == Verdict::Publish {
                published += 1;
            }
        }
        assert!((100..=121).contains(&published), "{published}");
        let due = c.flush(t0 + Duration::from_secs(10));
        assert_eq!(due.len(), 100);
        assert_eq!(due.iter().map(|s| s.count).sum::<u32>() + published, 10_000);
    }

    #[test]
    fn long_notes_are_cut_at_a_character_boundary() {
        assert_eq!(within_note_limit("short".into()), "short");
        let long = "é".repeat(600);
        let cut = within_note_limit(long);
        assert!(cut.len() <= NOTE_LIMIT);
        assert!(cut.ends_with('…'));
    }
}
