//! The rollout reconciler: restarts opted-in Deployments, StatefulSets and DaemonSets when
//! managed Secrets they depend on rotate. Decisions live in [`crate::rollout_plan`]; this
//! module keeps the small in-memory indexes and does the I/O.
//!
//! Memory stays proportional to what is involved: the managed-Secret index holds name,
//! binding and data hash of managed Secrets only (fed by the existing metadata-only Secret
//! watch), workloads are watched metadata-only and only opted-in ones are remembered; the
//! full object (pod template, `spec.paused`) is fetched on demand when deciding.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{ObjectReference, PodSpec, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource, ResourceExt};
use secretsync_api::{ANNOTATION_BINDING, ANNOTATION_DATA_HASH, FIELD_MANAGER, SecretBinding};
use tokio::time::Instant;

use crate::backoff::{backoff, random_unit};
use crate::context::Ctx;
use crate::events::reasons;
use crate::queue::{Priority, Queue};
use crate::rollout_plan::{
    Decision, OptIn, Pending, WorkloadKind, WorkloadState, decide, dependencies, may_depend_on,
    opt_in, record_patch, referenced_secrets, restart_patch, restarted_list, rotated,
};
use crate::store::ObjKey;

/// How soon a workload is looked at again after its conditional patch lost a race.
const CONFLICT_RETRY: Duration = Duration::from_millis(200);
/// Attempts at updating a binding's `status.restarted` against concurrent writers.
const STATUS_ATTEMPTS: usize = 5;

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

/// A managed Secret as the metadata-only watch shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ManagedSecret {
    binding: Option<String>,
    hash: Option<String>,
    /// Latest resourceVersion seen; lets a binding skip re-reading an unchanged Secret.
    resource_version: Option<String>,
}

impl ManagedSecret {
    /// Whether workloads depending on the Secret could care about the change.
    fn same_for_rollout(&self, other: &ManagedSecret) -> bool {
        self.binding == other.binding && self.hash == other.hash
    }
}

/// What this process remembers about an opted-in workload.
#[derive(Debug, Clone)]
struct Tracked {
    mode: OptIn,
    generation: Option<i64>,
    revision: Option<String>,
    /// Auto mode: Secrets the pod template referenced at this generation.
    refs: Option<(Option<i64>, BTreeSet<String>)>,
    pending: Option<Pending>,
    /// Dependencies last seen matching the recorded revision.
    seen: Option<BTreeMap<String, String>>,
    /// Revision a `RolloutSkipped` event was already published for.
    skipped: Option<String>,
    failures: u32,
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

/// Rollout state of one leadership term.
#[derive(Default)]
pub struct Rollout {
    /// Workloads to look at.
    pub queue: Queue<WorkloadKey>,
    /// Managed Secrets by namespace, then name.
    secrets: Mutex<HashMap<String, BTreeMap<String, ManagedSecret>>>,
    /// Opted-in workloads only.
    workloads: Mutex<HashMap<WorkloadKey, Tracked>>,
    /// One lock per binding whose `status.restarted` is being written: restarts of many
    /// workloads for one rotation would otherwise race each other's read-modify-write
    /// and could exhaust the conflict retries (seen against a slower API server).
    status_writers: Mutex<HashMap<(String, String), StatusWriter>>,
}

/// See [`Rollout::status_writer`].
type StatusWriter = Arc<tokio::sync::Mutex<()>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section is a few map operations; a poisoned lock holds usable data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Rollout {
    /// The lock serializing this process's writes of one binding's `status.restarted`
    /// (dropped from the map once nobody holds it).
    fn status_writer(&self, namespace: &str, binding: &str) -> StatusWriter {
        let mut writers = lock(&self.status_writers);
        writers.retain(|_, w| Arc::strong_count(w) > 1);
        writers
            .entry((namespace.to_owned(), binding.to_owned()))
            .or_default()
            .clone()
    }

    /// Records a managed Secret's metadata; wakes the workloads that may depend on it when
    /// its data hash or binding changed.
    pub fn secret_applied(&self, meta: &PartialObjectMeta<Secret>) {
        let ns = meta.namespace().unwrap_or_default();
        let name = meta.name_any();
        let entry = ManagedSecret {
            binding: meta.annotations().get(ANNOTATION_BINDING).cloned(),
            hash: meta.annotations().get(ANNOTATION_DATA_HASH).cloned(),
            resource_version: meta.resource_version(),
        };
        let changed = {
            let mut secrets = lock(&self.secrets);
            let by_name = secrets.entry(ns.clone()).or_default();
            !by_name
                .insert(name.clone(), entry.clone())
                .is_some_and(|old| old.same_for_rollout(&entry))
        };
        if changed {
            self.wake_for_secret(&ns, &name);
        }
    }

    /// Forgets a deleted managed Secret and wakes the workloads that may depend on it.
    pub fn secret_deleted(&self, meta: &PartialObjectMeta<Secret>) {
        let ns = meta.namespace().unwrap_or_default();
        let name = meta.name_any();
        if self.remove_secret(&ns, &name) {
            self.wake_for_secret(&ns, &name);
        }
    }

    /// The resourceVersion of a managed Secret as the watch last showed it.
    pub fn secret_resource_version(&self, ns: &str, name: &str) -> Option<String> {
        lock(&self.secrets)
            .get(ns)
            .and_then(|by_name| by_name.get(name))
            .and_then(|s| s.resource_version.clone())
    }

    fn remove_secret(&self, ns: &str, name: &str) -> bool {
        let mut secrets = lock(&self.secrets);
        let Some(by_name) = secrets.get_mut(ns) else {
            return false;
        };
        let removed = by_name.remove(name).is_some();
        if by_name.is_empty() {
            secrets.remove(ns);
        }
        removed
    }

    /// After a relist: forgets managed Secrets in `scope` the list did not return.
    pub fn prune_secrets(&self, scope: Option<&str>, seen: &HashSet<ObjKey>) {
        let gone: Vec<ObjKey> = {
            let secrets = lock(&self.secrets);
            secrets
                .iter()
                .filter(|(ns, _)| scope.is_none_or(|s| s == ns.as_str()))
                .flat_map(|(ns, by_name)| {
                    by_name
                        .keys()
                        .map(|n| ObjKey::new(ns.clone(), n.clone()))
                        .filter(|k| !seen.contains(k))
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        for k in gone {
            if self.remove_secret(&k.namespace, &k.name) {
                self.wake_for_secret(&k.namespace, &k.name);
            }
        }
    }

    fn wake_for_secret(&self, ns: &str, secret: &str) {
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

    /// Wakes every opted-in workload of a namespace (e.g. a binding's `rollout.restart`
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

    /// A workload's metadata was seen: track it if it opted in (waking it when something
    /// relevant changed), forget it otherwise.
    fn workload_applied(
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

    fn workload_deleted(&self, key: &WorkloadKey) {
        if lock(&self.workloads).remove(key).is_some() {
            self.queue.forget(key);
        }
    }

    fn prune_workloads(&self, kind: WorkloadKind, scope: Option<&str>, seen: &HashSet<ObjKey>) {
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

    /// Managed Secrets of `ns` whose binding allows restarts: name → data hash. A Secret
    /// whose binding is unknown (e.g. an orphaned Secret) counts, as `rollout.restart`
    /// defaults to true; it cannot rotate without its binding anyway.
    fn restartable(&self, ctx: &Ctx, ns: &str) -> BTreeMap<String, String> {
        let secrets = lock(&self.secrets);
        let Some(by_name) = secrets.get(ns) else {
            return BTreeMap::new();
        };
        by_name
            .iter()
            .filter_map(|(name, s)| {
                let hash = s.hash.clone()?;
                let allowed = s.binding.as_ref().is_none_or(|b| {
                    ctx.bindings
                        .get(&ObjKey::new(ns, b.clone()))
                        .is_none_or(|b| b.spec.rollout.restart)
                });
                allowed.then(|| (name.clone(), hash))
            })
            .collect()
    }

    fn binding_of_secret(&self, ns: &str, secret: &str) -> Option<String> {
        lock(&self.secrets).get(ns)?.get(secret)?.binding.clone()
    }

    fn tracked(&self, key: &WorkloadKey) -> Option<Tracked> {
        lock(&self.workloads).get(key).cloned()
    }

    fn update(&self, key: &WorkloadKey, f: impl FnOnce(&mut Tracked)) {
        if let Some(t) = lock(&self.workloads).get_mut(key) {
            f(t);
        }
    }

    /// Number of tracked (opted-in) workloads.
    pub fn tracked_len(&self) -> usize {
        lock(&self.workloads).len()
    }
}

fn api_resource(kind: WorkloadKind) -> ApiResource {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
    match kind {
        WorkloadKind::Deployment => ApiResource::erase::<Deployment>(&()),
        WorkloadKind::StatefulSet => ApiResource::erase::<StatefulSet>(&()),
        WorkloadKind::DaemonSet => ApiResource::erase::<DaemonSet>(&()),
    }
}

fn reference(key: &WorkloadKey, obj: &DynamicObject) -> ObjectReference {
    ObjectReference {
        api_version: Some("apps/v1".to_string()),
        kind: Some(key.kind.as_str().to_string()),
        namespace: Some(key.namespace.clone()),
        name: Some(key.name.clone()),
        uid: obj.metadata.uid.clone(),
        ..Default::default()
    }
}

/// Rate-limiter key of a workload's events (distinct from bindings of the same name).
fn event_key(key: &WorkloadKey) -> ObjKey {
    ObjKey::new(key.namespace.clone(), format!("{}/{}", key.kind, key.name))
}

/// Looks at one workload; returns when to look again (`None` = on events only).
pub async fn reconcile(ctx: &Ctx, key: &WorkloadKey) -> (Option<Duration>, &'static str) {
    let rollout = &ctx.rollout;
    let Some(tracked) = rollout.tracked(key) else {
        return (None, "untracked");
    };
    match reconcile_tracked(ctx, key, tracked).await {
        Ok(r) => {
            rollout.update(key, |t| t.failures = 0);
            r
        }
        Err(e) => {
            let mut failures = 0;
            rollout.update(key, |t| {
                t.failures += 1;
                failures = t.failures;
            });
            tracing::warn!(workload = %key, error = %e, "rollout reconcile failed");
            (
                Some(backoff(failures.saturating_sub(1), random_unit())),
                "error",
            )
        }
    }
}

async fn reconcile_tracked(
    ctx: &Ctx,
    key: &WorkloadKey,
    tracked: Tracked,
) -> Result<(Option<Duration>, &'static str), kube::Error> {
    let rollout = &ctx.rollout;
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &key.namespace, &api_resource(key.kind));
    let Some(obj) = api.get_opt(&key.name).await? else {
        rollout.workload_deleted(key);
        return Ok((None, "deleted"));
    };
    let annotations = obj.metadata.annotations.clone().unwrap_or_default();
    let Some(mode) = opt_in(Some(&annotations)) else {
        rollout.workload_deleted(key);
        return Ok((None, "untracked"));
    };
    let pod: Option<PodSpec> = obj
        .data
        .pointer("/spec/template/spec")
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    let paused = key.kind == WorkloadKind::Deployment
        && obj.data.pointer("/spec/paused").and_then(|v| v.as_bool()) == Some(true);
    let restartable = rollout.restartable(ctx, &key.namespace);
    let deps = dependencies(&mode, pod.as_ref(), &restartable);
    let deps_owned: BTreeMap<String, String> = deps
        .iter()
        .map(|(n, h)| (n.to_string(), h.to_string()))
        .collect();
    let generation = obj.metadata.generation;
    let refs = (mode == OptIn::Auto).then(|| {
        (
            generation,
            pod.as_ref().map(referenced_secrets).unwrap_or_default(),
        )
    });

    let now = Instant::now();
    let plan = decide(
        &ctx.hmac,
        &WorkloadState {
            annotations: Some(&annotations),
            paused,
            pending: tracked.pending.as_ref(),
            seen: tracked.seen.as_ref(),
        },
        &deps,
        now.into_std(),
        ctx.config.restart_debounce,
    );
    let pending = plan.pending.clone();
    rollout.update(key, |t| {
        t.mode = mode.clone();
        t.refs = refs;
        t.pending = pending;
    });
    let rv = obj.metadata.resource_version.clone().unwrap_or_default();
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    };
    match plan.decision {
        Decision::Nothing => {
            rollout.update(key, |t| {
                t.seen = Some(deps_owned);
                t.skipped = None;
            });
            Ok((None, "unchanged"))
        }
        Decision::WaitUntil(at) => {
            let wait = at.saturating_duration_since(now.into_std());
            tracing::info!(workload = %key, wait_ms = wait.as_millis() as u64, "rotation pending; debouncing");
            Ok((Some(wait), "pending"))
        }
        Decision::Record { revision } => {
            match api
                .patch(&key.name, &pp, &Patch::Merge(&record_patch(&rv, &revision)))
                .await
            {
                Ok(_) => {
                    tracing::info!(workload = %key, secrets = deps.len(), "recorded secret revision (no restart)");
                    rollout.update(key, |t| {
                        t.seen = Some(deps_owned);
                        t.revision = Some(revision);
                        t.skipped = None;
                    });
                    Ok((None, "recorded"))
                }
                Err(e) if is_conflict(&e) => Ok((Some(CONFLICT_RETRY), "conflict")),
                Err(e) => Err(e),
            }
        }
        Decision::SkipPaused { revision } => {
            if tracked.skipped.as_deref() != Some(revision.as_str()) {
                let names = rotated(tracked.seen.as_ref(), &deps).join(", ");
                tracing::warn!(workload = %key, secrets = %names, "Deployment is paused; restart deferred until it is resumed");
                ctx.events
                    .publish_action(
                        &event_key(key),
                        &reference(key, &obj),
                        true,
                        reasons::ROLLOUT_SKIPPED,
                        "Restart",
                        format!(
                            "Deployment is paused; restart for rotated Secrets {names} deferred until it is resumed"
                        ),
                    )
                    .await;
                rollout.update(key, |t| t.skipped = Some(revision));
            }
            Ok((None, "paused"))
        }
        Decision::Restart { revision } => {
            let at = Time(Timestamp::now());
            let body = restart_patch(&rv, &revision, &at.0.to_string());
            match api.patch(&key.name, &pp, &Patch::Merge(&body)).await {
                Ok(_) => {}
                Err(e) if is_conflict(&e) => return Ok((Some(CONFLICT_RETRY), "conflict")),
                Err(e) => return Err(e),
            }
            let names: Vec<String> = rotated(tracked.seen.as_ref(), &deps)
                .into_iter()
                .map(str::to_string)
                .collect();
            tracing::info!(workload = %key, secrets = %names.join(", "), "restarted after rotation");
            rollout.update(key, |t| {
                t.seen = Some(deps_owned);
                t.revision = Some(revision);
                t.pending = None;
                t.skipped = None;
            });
            ctx.metrics.rollout_restart(key.kind.as_str());
            ctx.events
                .publish_action(
                    &event_key(key),
                    &reference(key, &obj),
                    false,
                    reasons::ROLLOUT_RESTARTED,
                    "Restart",
                    format!("Restarted after rotation of Secrets {}", names.join(", ")),
                )
                .await;
            let bindings: BTreeSet<String> = names
                .iter()
                .filter_map(|s| rollout.binding_of_secret(&key.namespace, s))
                .collect();
            for b in bindings {
                if let Err(e) = record_restart(ctx, key, &b, &at).await {
                    tracing::warn!(workload = %key, binding = %b, error = %e, "could not list the restart in the binding's status");
                }
            }
            Ok((None, "restarted"))
        }
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(ae) if ae.code == 409)
}

/// Adds the restart to the binding's `status.restarted`: a merge patch of that one field
/// (the binding reconciler's server-side apply of the rest of the status never includes
/// it, so neither write removes the other's fields), conditional on resourceVersion and
/// retried, so concurrent restarts by one binding are all listed.
async fn record_restart(
    ctx: &Ctx,
    key: &WorkloadKey,
    binding: &str,
    at: &Time,
) -> Result<(), kube::Error> {
    let api: Api<SecretBinding> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    };
    let writer = ctx.rollout.status_writer(&key.namespace, binding);
    let _serialized = writer.lock().await;
    for attempt in 1..=STATUS_ATTEMPTS {
        let Some(b) = api.get_opt(binding).await? else {
            return Ok(());
        };
        let status = b.status.clone().unwrap_or_default();
        let list = restarted_list(
            &status.restarted,
            status.last_rotation_time.as_ref(),
            key.kind.as_str(),
            &key.name,
            at,
        );
        let body = serde_json::json!({
            "metadata": {"resourceVersion": b.resource_version()},
            "status": {"restarted": list},
        });
        match api.patch_status(binding, &pp, &Patch::Merge(&body)).await {
            Ok(_) => return Ok(()),
            Err(e) if is_conflict(&e) && attempt < STATUS_ATTEMPTS => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Watches one workload kind metadata-only (no pod templates in memory), tracking the
/// opted-in ones.
pub async fn watch_workloads<K>(
    ctx: Arc<Ctx>,
    scope: Option<String>,
    kind: WorkloadKind,
    synced: Arc<AtomicUsize>,
) where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let api: Api<PartialObjectMeta<K>> = match scope.as_deref() {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut seen: Option<HashSet<ObjKey>> = None;
    let mut first_done = false;
    let key_of = |m: &PartialObjectMeta<K>| WorkloadKey {
        kind,
        namespace: m.namespace().unwrap_or_default(),
        name: m.name_any(),
    };
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Init) => seen = Some(HashSet::new()),
            Ok(Event::InitApply(m)) | Ok(Event::Apply(m)) => {
                let key = key_of(&m);
                if let Some(s) = seen.as_mut() {
                    s.insert(ObjKey::new(key.namespace.clone(), key.name.clone()));
                }
                ctx.rollout
                    .workload_applied(key, m.annotations(), m.metadata.generation);
            }
            Ok(Event::Delete(m)) => ctx.rollout.workload_deleted(&key_of(&m)),
            Ok(Event::InitDone) => {
                let s = seen.take().unwrap_or_default();
                ctx.rollout.prune_workloads(kind, scope.as_deref(), &s);
                if !first_done {
                    first_done = true;
                    synced.fetch_add(1, Ordering::Release);
                }
            }
            Err(e) => tracing::warn!(kind = %kind, error = %e, "workload watch error"),
        }
    }
}

/// Spawns the three workload watchers of one scope.
pub fn spawn_watchers(
    set: &mut tokio::task::JoinSet<()>,
    ctx: &Arc<Ctx>,
    scope: &Option<String>,
    synced: &Arc<AtomicUsize>,
) {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
    set.spawn(watch_workloads::<Deployment>(
        ctx.clone(),
        scope.clone(),
        WorkloadKind::Deployment,
        synced.clone(),
    ));
    set.spawn(watch_workloads::<StatefulSet>(
        ctx.clone(),
        scope.clone(),
        WorkloadKind::StatefulSet,
        synced.clone(),
    ));
    set.spawn(watch_workloads::<DaemonSet>(
        ctx.clone(),
        scope.clone(),
        WorkloadKind::DaemonSet,
        synced.clone(),
    ));
}

/// Watch streams [`spawn_watchers`] starts per scope.
pub const WATCHERS_PER_SCOPE: usize = 3;
