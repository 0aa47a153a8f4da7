//! One leadership term: watchers feed the stores and queues, dispatchers run reconciles
//! under the concurrency limit.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant as StdInstant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use secretsync_api::{
    ANNOTATION_BINDING, ANNOTATION_FORCE_SYNC, LABEL_MANAGED, SecretBinding, SecretSource,
};
use secretsync_backends::env::EnvPolicy;
use secretsync_backends::hash::HmacKey;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::backoff::{backoff, random_unit};
use crate::binding::{self, Requeue};
use crate::context::Ctx;
use crate::http::Health;
use crate::metrics::Metrics;
use crate::queue::{Priority, Queue};
use crate::source::{SourceRegistry, key_of, source_status};
use crate::store::ObjKey;
use crate::sync::never_synced;
use crate::{Config, SHUTDOWN_GRACE};

/// How often a healthy source re-checks its credential Secrets.
const SOURCE_RECHECK: std::time::Duration = std::time::Duration::from_secs(60);

/// Inputs of a leadership term.
#[derive(Clone)]
pub struct Term {
    /// API client.
    pub client: Client,
    /// Settings.
    pub config: Arc<Config>,
    /// HMAC key.
    pub hmac: HmacKey,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Readiness.
    pub health: Arc<Health>,
    /// Env backend policy.
    pub env_allow: EnvPolicy,
}

fn api<K>(client: &Client, scope: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// What about a binding matters for reconciling: status-only changes (our own writes)
/// are ignored so a status patch never triggers another reconcile.
#[derive(Debug, PartialEq, Eq)]
pub struct Fingerprint {
    uid: Option<String>,
    generation: Option<i64>,
    force_sync: Option<String>,
    deleting: bool,
    finalizers: Vec<String>,
}

/// The fingerprint of a binding.
pub fn fingerprint(b: &SecretBinding) -> Fingerprint {
    Fingerprint {
        uid: b.uid(),
        generation: b.metadata.generation,
        force_sync: b.annotations().get(ANNOTATION_FORCE_SYNC).cloned(),
        deleting: b.metadata.deletion_timestamp.is_some(),
        finalizers: b.finalizers().to_vec(),
    }
}

/// Whether (and how urgently) a binding event needs a reconcile.
pub fn binding_event_priority(
    old: Option<&SecretBinding>,
    new: &SecretBinding,
) -> Option<Priority> {
    let new_fp = fingerprint(new);
    if let Some(o) = old {
        let old_fp = fingerprint(o);
        if old_fp == new_fp {
            return None;
        }
        if old_fp.force_sync != new_fp.force_sync {
            return Some(Priority::Urgent);
        }
    }
    if new_fp.deleting || never_synced(new) {
        Some(Priority::Urgent)
    } else {
        Some(Priority::Normal)
    }
}

impl Term {
    /// Runs until `stop` turns true (then drains in-flight reconciles) or the task is
    /// aborted (leadership lost).
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let registry = SourceRegistry::new(
            self.client.clone(),
            self.env_allow.clone(),
            self.config.file_root.clone(),
            self.metrics.clone(),
        );
        let ctx = Arc::new(Ctx::new(
            self.client.clone(),
            self.config.clone(),
            self.hmac.clone(),
            self.metrics.clone(),
            registry,
        ));
        let scopes: Vec<Option<String>> = if self.config.namespaces.is_empty() {
            vec![None]
        } else {
            self.config.namespaces.iter().cloned().map(Some).collect()
        };
        let synced = Arc::new(AtomicUsize::new(0));
        let rollout_synced = Arc::new(AtomicUsize::new(0));
        let mut watchers = JoinSet::new();
        for scope in &scopes {
            watchers.spawn(watch_sources(ctx.clone(), scope.clone(), synced.clone()));
            watchers.spawn(watch_bindings(ctx.clone(), scope.clone(), synced.clone()));
            watchers.spawn(watch_secrets(ctx.clone(), scope.clone(), synced.clone()));
            crate::rollout::spawn_watchers(&mut watchers, &ctx, scope, &rollout_synced);
        }
        let streams = scopes.len() * 3;
        // Reconciling before the stores are complete would report SourceNotFound for
        // sources not listed yet.
        loop {
            if synced.load(Ordering::Acquire) >= streams {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
                _ = stop.changed() => {
                    if *stop.borrow() { return; }
                }
            }
        }
        tracing::info!(
            sources = ctx.sources.len(),
            bindings = ctx.bindings.len(),
            "watch caches synced; reconciling"
        );
        ctx.refresh_gauge();
        self.health.set_ready(true);

        let mut dispatchers = JoinSet::new();
        let c = ctx.clone();
        dispatchers.spawn(dispatch(
            ctx.clone(),
            "binding",
            self.config.concurrency,
            |c: &Ctx| &c.binding_queue,
            move |key| {
                let c = c.clone();
                async move { reconcile_binding(&c, key).await }
            },
        ));
        let c = ctx.clone();
        dispatchers.spawn(dispatch(
            ctx.clone(),
            "source",
            self.config.concurrency.clamp(1, 4),
            |c: &Ctx| &c.source_queue,
            move |key| {
                let c = c.clone();
                async move { reconcile_source(&c, key).await }
            },
        ));

        // Rollout decisions need the complete managed-Secret index, binding store (both
        // synced above) and workload lists: a partial view would compute a different
        // revision and restart spuriously. Syncing Secrets never waits for workloads.
        let c = ctx.clone();
        let rollout_streams = scopes.len() * crate::rollout::WATCHERS_PER_SCOPE;
        let concurrency = self.config.concurrency.clamp(1, 4);
        let mut stop_rollout = stop.clone();
        dispatchers.spawn(async move {
            while rollout_synced.load(Ordering::Acquire) < rollout_streams {
                if *stop_rollout.borrow() {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
                    changed = stop_rollout.changed() => {
                        if changed.is_err() { return; }
                    }
                }
            }
            tracing::info!(
                workloads = c.rollout.tracked_len(),
                "workload watches synced; rollout reconciler running"
            );
            let handler_ctx = c.clone();
            dispatch(
                c,
                "rollout",
                concurrency,
                |c: &Ctx| &c.rollout.queue,
                move |key| {
                    let c = handler_ctx.clone();
                    async move { reconcile_workload(&c, key).await }
                },
            )
            .await
        });

        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                break;
            }
        }
        ctx.binding_queue.shutdown();
        ctx.source_queue.shutdown();
        ctx.rollout.queue.shutdown();
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while dispatchers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("in-flight reconciles did not finish within the grace period");
        }
        watchers.abort_all();
    }
}

/// Pops keys while a worker slot is free and runs `handler` on them. Popping only with a
/// free slot is what lets an urgent key overtake waiting refreshes. On queue shutdown it
/// waits for in-flight handlers.
async fn dispatch<K, F, Fut>(
    ctx: Arc<Ctx>,
    controller: &'static str,
    concurrency: usize,
    queue: fn(&Ctx) -> &Queue<K>,
    handler: F,
) where
    K: Clone + Eq + std::hash::Hash + Ord + Send + 'static,
    F: Fn(K) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let sem = Arc::new(Semaphore::new(concurrency));
    let mut running = JoinSet::new();
    loop {
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        let Some(key) = queue(&ctx).next().await else {
            break;
        };
        let fut = handler(key.clone());
        let c = ctx.clone();
        running.spawn(async move {
            fut.await;
            queue(&c).done(&key);
            drop(permit);
        });
        while running.try_join_next().is_some() {}
    }
    tracing::debug!(controller, in_flight = running.len(), "draining");
    while running.join_next().await.is_some() {}
}

async fn reconcile_binding(ctx: &Ctx, key: ObjKey) {
    let start = StdInstant::now();
    let (requeue, result) = binding::reconcile(ctx, &key).await;
    ctx.metrics.reconcile("binding", result, start.elapsed());
    if let Requeue::After(d) = requeue {
        ctx.binding_queue.add_after(key, d, Priority::Normal);
    }
}

async fn reconcile_workload(ctx: &Ctx, key: crate::rollout::WorkloadKey) {
    let start = StdInstant::now();
    let (requeue, result) = crate::rollout::reconcile(ctx, &key).await;
    ctx.metrics.reconcile("rollout", result, start.elapsed());
    if let Some(d) = requeue {
        ctx.rollout.queue.add_after(key, d, Priority::Normal);
    }
}

fn enqueue_bindings_of(ctx: &Ctx, src: &ObjKey) {
    for (k, b) in ctx.bindings_of_source(&src.namespace, &src.name) {
        let prio = if never_synced(&b) {
            Priority::Urgent
        } else {
            Priority::Normal
        };
        ctx.binding_queue.add(k, prio);
    }
}

/// Source reconcile: (re)build when needed, validate, write status, wake its bindings.
async fn reconcile_source(ctx: &Ctx, key: ObjKey) {
    let start = StdInstant::now();
    let Some(src) = ctx.sources.get(&key) else {
        if ctx.registry.remove(&key) {
            enqueue_bindings_of(ctx, &key);
        }
        ctx.metrics.reconcile("source", "deleted", start.elapsed());
        return;
    };
    let before = ctx.registry.get_existing_readiness(&key).await;
    let (entry, rebuilt) = ctx.registry.refresh(&src).await;
    if let Ok(cache) = &entry.cache {
        let needs_validation = !matches!(entry.readiness(), Some(Ok(())));
        if needs_validation {
            let res = cache.validate().await;
            *entry.validation.lock().unwrap_or_else(|p| p.into_inner()) = Some(res);
        }
    }
    let readiness = entry.readiness();
    let ok = matches!(readiness, Some(Ok(())));
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let status = match &readiness {
        Some(Err(e)) => source_status(
            src.status.as_ref(),
            src.metadata.generation,
            entry.kind,
            Err(e),
            &now,
        ),
        _ => source_status(
            src.status.as_ref(),
            src.metadata.generation,
            entry.kind,
            Ok(()),
            &now,
        ),
    };
    let mut result = if ok { "success" } else { "error" };
    if src.status.as_ref() != Some(&status) {
        let api: Api<SecretSource> = Api::namespaced(ctx.client.clone(), &key.namespace);
        let body = serde_json::json!({
            "apiVersion": SecretSource::api_version(&()),
            "kind": SecretSource::kind(&()),
            "status": status,
        });
        let pp = kube::api::PatchParams::apply(secretsync_api::FIELD_MANAGER).force();
        if let Err(e) = api
            .patch_status(&key.name, &pp, &kube::api::Patch::Apply(&body))
            .await
        {
            tracing::warn!(source = %key, error = %e, "writing SecretSource status failed");
            result = "error";
        }
    }
    let after_ok = ok;
    if rebuilt || before != Some(after_ok) {
        enqueue_bindings_of(ctx, &key);
    }
    let delay = if ok {
        SOURCE_RECHECK
    } else {
        let n = ctx.registry.bump_failures(&key);
        backoff(n.saturating_sub(1), random_unit())
    };
    if ok {
        ctx.registry.reset_failures(&key);
    }
    ctx.metrics.reconcile("source", result, start.elapsed());
    ctx.source_queue.add_after(key, delay, Priority::Normal);
}

/// Drops `managedFields` before an object is cached: nothing reads them from the stores,
/// and at 10,000 bindings they were a quarter of the operator's heap (BENCHMARKS.md).
fn without_managed_fields<K: Resource>(mut obj: K) -> K {
    obj.meta_mut().managed_fields = None;
    obj
}

/// Tracks one stream's relists so objects gone during a watch gap are removed.
struct Relist {
    seen: Option<HashSet<ObjKey>>,
    first_done: bool,
}

impl Relist {
    fn new() -> Self {
        Relist {
            seen: None,
            first_done: false,
        }
    }
}

async fn watch_sources(ctx: Arc<Ctx>, scope: Option<String>, synced: Arc<AtomicUsize>) {
    let api: Api<DeserializeGuard<SecretSource>> = api(&ctx.client, scope.as_deref());
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut relist = Relist::new();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Init) => relist.seen = Some(HashSet::new()),
            Ok(Event::InitApply(g)) | Ok(Event::Apply(g)) => {
                let key = key_of(&g);
                if let Some(seen) = relist.seen.as_mut() {
                    seen.insert(key.clone());
                }
                match g.0 {
                    Ok(src) => {
                        let src = without_managed_fields(src);
                        let changed =
                            ctx.sources
                                .upsert(key.clone(), src.clone())
                                .is_none_or(|old| {
                                    old.uid() != src.uid()
                                        || old.metadata.generation != src.metadata.generation
                                });
                        if changed {
                            ctx.source_queue.add(key, Priority::Urgent);
                        }
                    }
                    Err(invalid) => {
                        tracing::warn!(source = %key, error = %invalid.error, "ignoring malformed SecretSource");
                        if ctx.sources.remove(&key).is_some() {
                            ctx.source_queue.add(key, Priority::Urgent);
                        }
                    }
                }
            }
            Ok(Event::InitDone) => {
                let seen = relist.seen.take().unwrap_or_default();
                for gone in ctx.sources.prune(scope.as_deref(), &seen) {
                    ctx.source_queue.add(gone, Priority::Urgent);
                }
                if !relist.first_done {
                    relist.first_done = true;
                    synced.fetch_add(1, Ordering::Release);
                }
            }
            Ok(Event::Delete(g)) => {
                let key = key_of(&g);
                ctx.sources.remove(&key);
                ctx.source_queue.add(key, Priority::Urgent);
            }
            Err(e) => tracing::warn!(error = %e, "SecretSource watch error"),
        }
    }
}

async fn watch_bindings(ctx: Arc<Ctx>, scope: Option<String>, synced: Arc<AtomicUsize>) {
    let api: Api<DeserializeGuard<SecretBinding>> = api(&ctx.client, scope.as_deref());
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut relist = Relist::new();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Init) => relist.seen = Some(HashSet::new()),
            Ok(Event::InitApply(g)) | Ok(Event::Apply(g)) => {
                let key = key_of(&g);
                if let Some(seen) = relist.seen.as_mut() {
                    seen.insert(key.clone());
                }
                match g.0 {
                    Ok(b) => {
                        let b = without_managed_fields(b);
                        let old = ctx.bindings.upsert(key.clone(), b.clone());
                        if old
                            .as_deref()
                            .is_some_and(|o| o.spec.rollout.restart != b.spec.rollout.restart)
                        {
                            ctx.rollout.wake_namespace(&key.namespace);
                        }
                        if let Some(prio) = binding_event_priority(old.as_deref(), &b) {
                            ctx.binding_queue.add(key, prio);
                        }
                    }
                    Err(invalid) => {
                        tracing::warn!(binding = %key, error = %invalid.error, "ignoring malformed SecretBinding");
                        ctx.bindings.remove(&key);
                    }
                }
            }
            Ok(Event::InitDone) => {
                let seen = relist.seen.take().unwrap_or_default();
                for gone in ctx.bindings.prune(scope.as_deref(), &seen) {
                    ctx.binding_queue.add(gone, Priority::Urgent);
                }
                if !relist.first_done {
                    relist.first_done = true;
                    synced.fetch_add(1, Ordering::Release);
                }
            }
            Ok(Event::Delete(g)) => {
                let key = key_of(&g);
                ctx.bindings.remove(&key);
                ctx.binding_queue.add(key, Priority::Urgent);
            }
            Err(e) => tracing::warn!(error = %e, "SecretBinding watch error"),
        }
    }
}

/// The binding a managed Secret belongs to.
fn binding_of(meta: &PartialObjectMeta<Secret>) -> Option<ObjKey> {
    let name = meta.annotations().get(ANNOTATION_BINDING)?;
    Some(ObjKey::new(
        meta.namespace().unwrap_or_default(),
        name.clone(),
    ))
}

/// Bindings of the Secrets in `present` that a relist did not `see` (deleted while the
/// watch was down); they are dropped from `present`.
pub fn vanished(present: &mut HashMap<ObjKey, ObjKey>, seen: &HashSet<ObjKey>) -> Vec<ObjKey> {
    let gone: Vec<ObjKey> = present
        .keys()
        .filter(|k| !seen.contains(*k))
        .cloned()
        .collect();
    gone.iter().filter_map(|k| present.remove(k)).collect()
}

/// Managed Secrets, metadata only (never caching their bytes). A resourceVersion other
/// than the one the binding last wrote or checked is drift: the binding is reconciled,
/// which GETs the Secret and compares the HMAC of its data.
async fn watch_secrets(ctx: Arc<Ctx>, scope: Option<String>, synced: Arc<AtomicUsize>) {
    // Api<PartialObjectMeta<_>> makes kube send metadata-only list/watch requests.
    let api: Api<PartialObjectMeta<Secret>> = api(&ctx.client, scope.as_deref());
    let cfg = watcher::Config::default().labels(&format!("{LABEL_MANAGED}=true"));
    let mut stream = watcher::watcher(api, cfg).default_backoff().boxed();
    let mut first_done = false;
    // The same metadata feeds the rollout reconciler's managed-Secret index.
    let mut relisted: Option<HashSet<ObjKey>> = None;
    // Managed Secret → its binding, so a Secret deleted during a watch gap (absent from the
    // relist, and no Delete event ever comes) still gets its binding to restore it.
    let mut present: HashMap<ObjKey, ObjKey> = HashMap::new();
    while let Some(ev) = stream.next().await {
        match &ev {
            Ok(Event::Init) => relisted = Some(HashSet::new()),
            Ok(Event::InitApply(meta)) | Ok(Event::Apply(meta)) => {
                if let Some(seen) = relisted.as_mut() {
                    seen.insert(key_of(meta));
                }
                ctx.rollout.secret_applied(meta);
            }
            Ok(Event::Delete(meta)) => ctx.rollout.secret_deleted(meta),
            Ok(Event::InitDone) => {
                let seen = relisted.take().unwrap_or_default();
                ctx.rollout.prune_secrets(scope.as_deref(), &seen);
                for k in vanished(&mut present, &seen) {
                    ctx.binding_queue.add(k, Priority::Urgent);
                }
            }
            Err(_) => {}
        }
        match ev {
            Ok(Event::Init) => {}
            Ok(Event::InitApply(meta)) => {
                // The first list is covered by the startup reconcile of every binding;
                // a relist after a watch gap may hide edits, so check those bindings.
                if let Some(k) = binding_of(&meta) {
                    present.insert(key_of(&meta), k.clone());
                    if first_done {
                        ctx.binding_queue.add(k, Priority::Normal);
                    }
                }
            }
            Ok(Event::Apply(meta)) => {
                if let Some(k) = binding_of(&meta) {
                    present.insert(key_of(&meta), k.clone());
                    if meta.resource_version() != ctx.verified_secret_rv(&k) {
                        ctx.binding_queue.add(k, Priority::Urgent);
                    }
                }
            }
            Ok(Event::Delete(meta)) => {
                present.remove(&key_of(&meta));
                if let Some(k) = binding_of(&meta) {
                    ctx.binding_queue.add(k, Priority::Urgent);
                }
            }
            Ok(Event::InitDone) => {
                if !first_done {
                    first_done = true;
                    synced.fetch_add(1, Ordering::Release);
                }
            }
            Err(e) => tracing::warn!(error = %e, "managed Secret watch error"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secretsync_api::SecretBindingSpec;

    #[test]
    fn secrets_missing_from_a_relist_requeue_their_bindings() {
        let k = |n: &str| ObjKey::new("ns", n);
        let mut present: HashMap<ObjKey, ObjKey> =
            [(k("s1"), k("b1")), (k("s2"), k("b2")), (k("s3"), k("b3"))]
                .into_iter()
                .collect();
        let seen: HashSet<ObjKey> = [k("s1"), k("s3")].into_iter().collect();
        assert_eq!(vanished(&mut present, &seen), vec![k("b2")]);
        assert_eq!(present.len(), 2);
        assert!(vanished(&mut present, &seen).is_empty(), "reported once");
    }

    #[test]
    fn cached_objects_carry_no_managed_fields() {
        let mut b = SecretBinding::new("b", SecretBindingSpec::default());
        b.metadata.managed_fields = Some(vec![Default::default()]);
        b.metadata.generation = Some(3);
        let slim = without_managed_fields(b.clone());
        assert_eq!(slim.metadata.managed_fields, None);
        assert_eq!(fingerprint(&slim), fingerprint(&b));
    }

    #[test]
    fn status_only_changes_do_not_requeue() {
        let mut b = SecretBinding::new("b", SecretBindingSpec::default());
        b.metadata.generation = Some(1);
        assert_eq!(binding_event_priority(None, &b), Some(Priority::Urgent));
        let mut with_status = b.clone();
        with_status.status = Some(Default::default());
        assert_eq!(binding_event_priority(Some(&b), &with_status), None);
        let mut forced = b.clone();
        forced
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(ANNOTATION_FORCE_SYNC.into(), "1".into());
        assert_eq!(
            binding_event_priority(Some(&b), &forced),
            Some(Priority::Urgent)
        );
        let mut newer = b.clone();
        newer.metadata.generation = Some(2);
        assert_eq!(
            binding_event_priority(Some(&b), &newer),
            Some(Priority::Urgent)
        );
    }

    #[test]
    fn synced_bindings_resync_at_normal_priority() {
        use crate::sync::{Outcome, next_status};
        let mut b = SecretBinding::new("b", SecretBindingSpec::default());
        b.metadata.generation = Some(1);
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        );
        b.status = Some(next_status(
            None,
            Some(1),
            &Outcome::Synced {
                keys: vec![],
                hash: "h".into(),
                read: true,
            },
            &now,
        ));
        assert_eq!(binding_event_priority(None, &b), Some(Priority::Normal));
    }
}
