//! What the rollout reconciler remembers: the opted-in workloads (metadata only: opt-in
//! mode, generation, recorded revision, pending debounce), its queue, and the locks that
//! serialize this process's writes of a binding's `status.restarted`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use super::plan::{OptIn, Pending, WorkloadKind, may_depend_on, opt_in};
use crate::runtime::{ObjKey, Priority, Queue};

/// A workload: kind, namespace, name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadKey {
    /// Kind.
    pub kind: WorkloadKind,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for WorkloadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// What this process remembers about an opted-in workload.
#[derive(Debug, Clone)]
pub struct Tracked {
    /// How it opted in.
    pub mode: OptIn,
    /// `metadata.generation` as last seen.
    pub generation: Option<i64>,
    /// Its `secretsync.dev/secret-revision` annotation as last seen.
    pub revision: Option<String>,
    /// Auto mode: Secrets the pod template referenced at this generation.
    pub refs: Option<(Option<i64>, BTreeSet<String>)>,
    /// A restart waiting for the debounce window.
    pub pending: Option<Pending>,
    /// Dependencies last seen matching the recorded revision.
    pub seen: Option<BTreeMap<String, String>>,
    /// Revision a `RolloutSkipped` event was already published for.
    pub skipped: Option<String>,
    /// Consecutive failed reconciles.
    pub failures: u32,
}

impl Tracked {
    fn new(mode: OptIn) -> Self {
        Tracked {
            mode,
            generation: None,
            revision: None,
            refs: None,
            pending: None,
            seen: None,
            skipped: None,
            failures: 0,
        }
    }
}

/// See [`RolloutState::status_writer`].
pub type StatusWriter = Arc<tokio::sync::Mutex<()>>;

/// Rollout state of one leadership term.
#[derive(Default)]
pub struct RolloutState {
    /// Workloads to look at.
    pub queue: Arc<Queue<WorkloadKey>>,
    /// Labelled Secrets and ConfigMaps: their data HMACs.
    pub triggers: super::triggers::Triggers,
    /// The cluster-wide restart budget.
    pub budget: Mutex<super::budget::Budget<WorkloadKey>>,
    /// Opted-in workloads only.
    workloads: Mutex<HashMap<WorkloadKey, Tracked>>,
    /// One lock per binding whose `status.restarted` is being written: restarts of many
    /// workloads for one rotation would otherwise race each other's read-modify-write
    /// and could exhaust the conflict retries (seen against a slower API server).
    status_writers: Mutex<HashMap<ObjKey, StatusWriter>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section is a few map operations; a poisoned lock holds usable data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RolloutState {
    /// A state with a budget of `max_restarts_per_minute` (0 = unlimited).
    pub fn new(max_restarts_per_minute: usize) -> Self {
        RolloutState {
            budget: Mutex::new(super::budget::Budget::new(max_restarts_per_minute)),
            ..Default::default()
        }
    }

    /// Asks the budget for a restart of `key` now.
    pub fn ask_budget(&self, key: &WorkloadKey) -> super::budget::Grant {
        lock(&self.budget).ask(key, std::time::Instant::now())
    }

    /// A workload no longer waits for the budget; returns how many still do.
    pub fn leave_budget(&self, key: &WorkloadKey) -> usize {
        let mut b = lock(&self.budget);
        b.forget(key);
        b.waiting()
    }

    /// Workloads waiting for the budget.
    pub fn budget_waiting(&self) -> usize {
        lock(&self.budget).waiting()
    }

    /// Queues the tracked workloads of `ns` that may depend on trigger `secret` (a Secret
    /// name, or `configmap/NAME`).
    pub fn wake_for_secret(&self, ns: &str, secret: &str) {
        let keys: Vec<WorkloadKey> = lock(&self.workloads)
            .iter()
            .filter(|(k, t)| {
                k.namespace == ns && may_depend_on(&t.mode, t.refs.as_ref().map(|(_, r)| r), secret)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.queue.add(k, Priority::Normal);
        }
    }

    /// Queues every opted-in workload of a namespace (e.g. a binding's `rollout.restart`
    /// changed).
    pub fn wake_namespace(&self, ns: &str) {
        let keys: Vec<WorkloadKey> = lock(&self.workloads)
            .keys()
            .filter(|k| k.namespace == ns)
            .cloned()
            .collect();
        for k in keys {
            self.queue.add(k, Priority::Normal);
        }
    }

    /// A workload's metadata was seen: tracks it if it opted in (queueing it when
    /// something relevant changed), forgets it otherwise.
    pub fn workload_applied(
        &self,
        key: WorkloadKey,
        annotations: &BTreeMap<String, String>,
        generation: Option<i64>,
    ) {
        let Some(mode) = opt_in(Some(annotations)) else {
            self.workload_deleted(&key);
            return;
        };
        let revision = annotations
            .get(secretsync_api::ANNOTATION_SECRET_REVISION)
            .cloned();
        let wake = {
            let mut workloads = lock(&self.workloads);
            match workloads.get_mut(&key) {
                Some(t) => {
                    let relevant =
                        t.mode != mode || t.generation != generation || t.revision != revision;
                    t.mode = mode;
                    t.generation = generation;
                    t.revision = revision;
                    relevant
                }
                None => {
                    let mut t = Tracked::new(mode);
                    t.generation = generation;
                    t.revision = revision;
                    workloads.insert(key.clone(), t);
                    true
                }
            }
        };
        if wake {
            self.queue.add(key, Priority::Normal);
        }
    }

    /// Forgets a workload.
    pub fn workload_deleted(&self, key: &WorkloadKey) {
        if lock(&self.workloads).remove(key).is_some() {
            self.queue.forget(key);
        }
        lock(&self.budget).forget(key);
    }

    /// After a relist of one kind: forgets the workloads of `scope` it did not return.
    pub fn prune_workloads(&self, kind: WorkloadKind, scope: Option<&str>, seen: &HashSet<ObjKey>) {
        let gone: Vec<WorkloadKey> = lock(&self.workloads)
            .keys()
            .filter(|k| {
                k.kind == kind
                    && scope.is_none_or(|s| s == k.namespace)
                    && !seen.contains(&ObjKey::new(k.namespace.clone(), k.name.clone()))
            })
            .cloned()
            .collect();
        for k in gone {
            self.workload_deleted(&k);
        }
    }

    /// A copy of what is remembered about a workload.
    pub fn tracked(&self, key: &WorkloadKey) -> Option<Tracked> {
        lock(&self.workloads).get(key).cloned()
    }

    /// Changes what is remembered about a tracked workload.
    pub fn update(&self, key: &WorkloadKey, f: impl FnOnce(&mut Tracked)) {
        if let Some(t) = lock(&self.workloads).get_mut(key) {
            f(t);
        }
    }

    /// Number of tracked (opted-in) workloads.
    pub fn tracked_len(&self) -> usize {
        lock(&self.workloads).len()
    }

    /// The lock serializing this process's writes of one binding's `status.restarted`
    /// (dropped from the map once nobody holds it).
    pub fn status_writer(&self, binding: &ObjKey) -> StatusWriter {
        let mut writers = lock(&self.status_writers);
        writers.retain(|_, w| Arc::strong_count(w) > 1);
        writers.entry(binding.clone()).or_default().clone()
    }
}
