//! One leadership term: start the watches, wait for their first lists, run the
//! dispatchers until told to stop, then drain. Everything a term learns lives in its
//! [`Ctx`] and is dropped with it.

use std::sync::Arc;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::watcher;
use kube::{Api, Client, Resource};
use secretsync_api::{
    ClusterSecretBinding, ClusterSecretSource, LABEL_MANAGED, SecretBinding, SecretSource,
};
use secretsync_backends::env::EnvPolicy;
use secretsync_backends::hash::HmacKey;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::binding::index::{BindingIndex, ManagedSecretIndex};
use crate::cluster_binding::index::{ClusterBindingIndex, NamespaceIndex};
use crate::context::Ctx;
use crate::events::SUMMARY_EVERY;
use crate::http::Health;
use crate::metrics::Metrics;
use crate::rollout::index::WorkloadIndex;
use crate::rollout::plan::WorkloadKind;
use crate::rollout::triggers::{TriggerIndex, watch_selector};
use crate::runtime::{Dispatcher, Index, InitialLists, Watch, wait_true};
use crate::source::{SourceIndex, SourceRegistry};
use crate::{Config, SHUTDOWN_GRACE};

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
    /// Where event receivers that outlive terms (the webhook) find the leading one.
    pub leadership: Arc<crate::changes::Leadership>,
}

fn scoped<K>(client: &Client, scope: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Spawns one watch of namespaced `K` over `scope`, feeding `index`, counted in `lists`.
fn spawn_watch<K, I>(
    set: &mut JoinSet<()>,
    ctx: &Arc<Ctx>,
    name: &'static str,
    scope: &Option<String>,
    config: watcher::Config,
    index: I,
    lists: &InitialLists,
) where
    K: Resource<Scope = NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    I: Index<K> + 'static,
{
    let api = scoped::<K>(&ctx.client, scope.as_deref());
    spawn_api_watch(set, ctx, name, scope, api, config, index, lists);
}

/// Spawns one watch of `api`, feeding `index`, counted in `lists`.
#[allow(clippy::too_many_arguments)]
fn spawn_api_watch<K, I>(
    set: &mut JoinSet<()>,
    ctx: &Arc<Ctx>,
    name: &'static str,
    scope: &Option<String>,
    api: Api<K>,
    config: watcher::Config,
    index: I,
    lists: &InitialLists,
) where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    I: Index<K> + 'static,
{
    let watch = Watch {
        name,
        scope: scope.clone(),
        api,
        config,
    };
    set.spawn(crate::runtime::watch::run(
        watch,
        Arc::new(index),
        lists.register(),
        ctx.health.clone(),
        ctx.metrics.clone(),
    ));
}

/// The watches binding and source reconciles need complete before they start.
fn spawn_core_watches(
    set: &mut JoinSet<()>,
    ctx: &Arc<Ctx>,
    scope: &Option<String>,
    lists: &InitialLists,
) {
    let all = watcher::Config::default;
    spawn_watch::<DeserializeGuard<SecretSource>, _>(
        set,
        ctx,
        "SecretSource",
        scope,
        all(),
        SourceIndex::<SecretSource>::new(ctx.clone()),
        lists,
    );
    spawn_watch::<DeserializeGuard<SecretBinding>, _>(
        set,
        ctx,
        "SecretBinding",
        scope,
        all(),
        BindingIndex(ctx.clone()),
        lists,
    );
    // Metadata only, and only managed Secrets: no Secret bytes are ever cached.
    let managed = all().labels(&format!("{LABEL_MANAGED}=true"));
    spawn_watch::<PartialObjectMeta<Secret>, _>(
        set,
        ctx,
        "Secret",
        scope,
        managed,
        ManagedSecretIndex(ctx.clone()),
        lists,
    );
}

/// The watches of the cluster kinds (all-namespaces installs only): ClusterSecretSources,
/// ClusterSecretBindings and Namespaces (metadata only: their labels).
fn spawn_cluster_watches(set: &mut JoinSet<()>, ctx: &Arc<Ctx>, lists: &InitialLists) {
    let all = watcher::Config::default;
    let client = &ctx.client;
    spawn_api_watch(
        set,
        ctx,
        "ClusterSecretSource",
        &None,
        Api::<DeserializeGuard<ClusterSecretSource>>::all(client.clone()),
        all(),
        SourceIndex::<ClusterSecretSource>::new(ctx.clone()),
        lists,
    );
    spawn_api_watch(
        set,
        ctx,
        "ClusterSecretBinding",
        &None,
        Api::<DeserializeGuard<ClusterSecretBinding>>::all(client.clone()),
        all(),
        ClusterBindingIndex(ctx.clone()),
        lists,
    );
    spawn_api_watch(
        set,
        ctx,
        "Namespace",
        &None,
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        all(),
        NamespaceIndex(ctx.clone()),
        lists,
    );
}

/// The workload watches (metadata only) and the labelled-trigger watches the rollout
/// reconciler needs complete.
fn spawn_workload_watches(
    set: &mut JoinSet<()>,
    ctx: &Arc<Ctx>,
    scope: &Option<String>,
    lists: &InitialLists,
) {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
    use k8s_openapi::api::batch::v1::CronJob;
    use k8s_openapi::api::core::v1::ConfigMap;
    let all = watcher::Config::default;
    spawn_watch::<PartialObjectMeta<Deployment>, _>(
        set,
        ctx,
        "Deployment",
        scope,
        all(),
        WorkloadIndex::<Deployment>::new(ctx.clone(), WorkloadKind::Deployment),
        lists,
    );
    spawn_watch::<PartialObjectMeta<StatefulSet>, _>(
        set,
        ctx,
        "StatefulSet",
        scope,
        all(),
        WorkloadIndex::<StatefulSet>::new(ctx.clone(), WorkloadKind::StatefulSet),
        lists,
    );
    spawn_watch::<PartialObjectMeta<DaemonSet>, _>(
        set,
        ctx,
        "DaemonSet",
        scope,
        all(),
        WorkloadIndex::<DaemonSet>::new(ctx.clone(), WorkloadKind::DaemonSet),
        lists,
    );
    spawn_watch::<PartialObjectMeta<CronJob>, _>(
        set,
        ctx,
        "CronJob",
        scope,
        all(),
        WorkloadIndex::<CronJob>::new(ctx.clone(), WorkloadKind::CronJob),
        lists,
    );
    // Labelled triggers only, so unrelated Secrets and ConfigMaps are never seen; their
    // data is hashed and dropped (rollout/triggers.rs says why not metadata-only).
    let labelled = || all().labels(&watch_selector());
    spawn_watch::<Secret, _>(
        set,
        ctx,
        "Secret (watch label)",
        scope,
        labelled(),
        TriggerIndex::<Secret>::new(ctx.clone()),
        lists,
    );
    spawn_watch::<ConfigMap, _>(
        set,
        ctx,
        "ConfigMap (watch label)",
        scope,
        labelled(),
        TriggerIndex::<ConfigMap>::new(ctx.clone()),
        lists,
    );
}

/// The metadata-only watch of Argo Rollouts in `scope`.
fn spawn_rollout_watch(
    set: &mut JoinSet<()>,
    ctx: &Arc<Ctx>,
    scope: &Option<String>,
    lists: &InitialLists,
) {
    use crate::rollout::argo::Rollout;
    spawn_watch::<PartialObjectMeta<Rollout>, _>(
        set,
        ctx,
        "Rollout",
        scope,
        watcher::Config::default(),
        WorkloadIndex::<Rollout>::new(ctx.clone(), WorkloadKind::Rollout),
        lists,
    );
}

/// Keeps the Rollout watches running exactly while the API server serves Argo Rollouts,
/// looking every `argo::RECHECK` (a periodic check, not a wait for anything).
async fn supervise_argo(ctx: Arc<Ctx>, scopes: Vec<Option<String>>, mut running: JoinSet<()>) {
    let mut on = !running.is_empty();
    loop {
        tokio::time::sleep(crate::rollout::argo::RECHECK).await;
        let served = crate::rollout::argo::served(&ctx.client).await;
        if served && !on {
            tracing::info!("Argo Rollouts installed: watching Rollouts");
            let lists = InitialLists::default();
            for scope in &scopes {
                spawn_rollout_watch(&mut running, &ctx, scope, &lists);
            }
            on = true;
        } else if !served && on {
            tracing::info!("Argo Rollouts removed: no longer watching Rollouts");
            running.abort_all();
            ctx.rollout
                .prune_workloads(WorkloadKind::Rollout, None, &Default::default());
            on = false;
        }
    }
}

impl Term {
    fn context(&self) -> Arc<Ctx> {
        let registry = SourceRegistry::new(
            self.client.clone(),
            self.env_allow.clone(),
            self.config.file_root.clone(),
            self.metrics.clone(),
        );
        Arc::new(Ctx::new(
            self.client.clone(),
            self.config.clone(),
            self.hmac.clone(),
            self.metrics.clone(),
            registry,
        ))
    }

    /// Runs until `stop` turns true (then drains in-flight reconciles) or the task is
    /// aborted (leadership lost).
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let ctx = self.context();
        let scopes: Vec<Option<String>> = if self.config.namespaces.is_empty() {
            vec![None]
        } else {
            self.config.namespaces.iter().cloned().map(Some).collect()
        };
        let core_lists = InitialLists::default();
        let workload_lists = InitialLists::default();
        let mut watchers = JoinSet::new();
        for scope in &scopes {
            spawn_core_watches(&mut watchers, &ctx, scope, &core_lists);
            spawn_workload_watches(&mut watchers, &ctx, scope, &workload_lists);
        }
        if ctx.serves_cluster_kinds() {
            spawn_cluster_watches(&mut watchers, &ctx, &core_lists);
        }
        // Rollouts served now are part of the workload lists the rollout reconciler waits
        // for; ones installed later are picked up by the supervisor.
        let mut rollouts = JoinSet::new();
        if crate::rollout::argo::served(&ctx.client).await {
            tracing::info!("Argo Rollouts installed: watching Rollouts");
            for scope in &scopes {
                spawn_rollout_watch(&mut rollouts, &ctx, scope, &workload_lists);
            }
        }
        watchers.spawn(supervise_argo(ctx.clone(), scopes.clone(), rollouts));
        // Reconciling before the stores are complete would report SourceNotFound for
        // sources not listed yet.
        tokio::select! {
            _ = core_lists.wait() => {}
            _ = wait_true(&mut stop) => return,
        }
        tracing::info!(
            sources = ctx.sources.len(),
            bindings = ctx.bindings.len(),
            "watch caches synced; reconciling"
        );
        ctx.refresh_gauge();
        self.health.set_ready(true);
        // Withdrawn when this future ends or is dropped (leadership lost).
        let _published = self.leadership.publish(&ctx);
        if let Some(pod) = self.config.webhook.as_ref().and_then(|w| w.pod.clone()) {
            let client = ctx.client.clone();
            watchers.spawn(async move {
                crate::changes::webhook::mark_leader(&client, &pod, true).await;
            });
        }
        watchers.spawn(crate::changes::sqs::supervise(ctx.clone()));
        let c = ctx.clone();
        watchers.spawn(async move { c.events.summarise_every(SUMMARY_EVERY).await });
        if let Some(mut changes) = ctx.registry.take_secret_changes() {
            let c = ctx.clone();
            watchers.spawn(async move {
                while let Some(change) = changes.recv().await {
                    crate::source::kubernetes::route_change(&c, &change).await;
                }
            });
        }
        // An edited templateFrom ConfigMap wakes the bindings that reference it; they
        // render again from cached values (binding/templates.rs).
        if let Some(mut changes) = ctx.templates.take_changes() {
            let c = ctx.clone();
            watchers.spawn(async move {
                while let Some(change) = changes.recv().await {
                    let users = c.templates.users(&change);
                    tracing::debug!(namespace = %change.namespace, config_map = %change.name, bindings = users.len(), "templateFrom ConfigMap changed");
                    for b in users {
                        c.binding_queue.add(b, crate::runtime::Priority::Urgent);
                    }
                }
            });
        }

        let mut dispatchers = spawn_dispatchers(&ctx, &self.config, workload_lists, &stop);
        wait_true(&mut stop).await;
        ctx.binding_queue.shutdown();
        ctx.source_queue.shutdown();
        ctx.cluster_binding_queue.shutdown();
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

/// The binding, source and rollout dispatchers; the rollout one starts once the workload
/// lists are complete (or never, when the term stops first).
fn spawn_dispatchers(
    ctx: &Arc<Ctx>,
    config: &Config,
    workload_lists: InitialLists,
    stop: &watch::Receiver<bool>,
) -> JoinSet<()> {
    let mut dispatchers = JoinSet::new();
    let dispatcher = |controller, concurrency, queue| Dispatcher {
        controller,
        concurrency,
        queue,
        health: ctx.health.clone(),
        metrics: ctx.metrics.clone(),
    };
    let c = ctx.clone();
    dispatchers.spawn(
        dispatcher("binding", config.concurrency, ctx.binding_queue.clone()).run(move |key| {
            let c = c.clone();
            async move { crate::binding::reconcile(&c, &key).await }
        }),
    );
    let c = ctx.clone();
    dispatchers.spawn(
        dispatcher(
            "source",
            config.concurrency.clamp(1, 4),
            ctx.source_queue.clone(),
        )
        .run(move |key| {
            let c = c.clone();
            async move { crate::source::reconcile(&c, &key).await }
        }),
    );
    let c = ctx.clone();
    dispatchers.spawn(
        dispatcher(
            "cluster-binding",
            config.concurrency.clamp(1, 2),
            ctx.cluster_binding_queue.clone(),
        )
        .run(move |key| {
            let c = c.clone();
            async move { crate::cluster_binding::reconcile(&c, &key).await }
        }),
    );
    // Rollout decisions need the complete managed-Secret index, binding store (both
    // listed above) and workload lists: a partial view would compute a different
    // revision and restart spuriously. Syncing Secrets never waits for workloads.
    let c = ctx.clone();
    let rollout = Dispatcher {
        controller: "rollout",
        concurrency: config.concurrency.clamp(1, 4),
        queue: ctx.rollout.queue.clone(),
        health: ctx.health.clone(),
        metrics: ctx.metrics.clone(),
    };
    let mut stop_waiting = stop.clone();
    dispatchers.spawn(async move {
        tokio::select! {
            _ = workload_lists.wait() => {}
            _ = wait_true(&mut stop_waiting) => return,
        }
        tracing::info!(
            workloads = c.rollout.tracked_len(),
            "workload watches synced; rollout reconciler running"
        );
        rollout
            .run(move |key| {
                let c = c.clone();
                async move { crate::rollout::reconcile(&c, &key).await }
            })
            .await
    });

    dispatchers
}
