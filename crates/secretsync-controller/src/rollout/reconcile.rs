//! The rollout reconciler's I/O: fetch the workload, let [`super::plan::decide`] choose,
//! write what it chose (record a revision, restart, or report a paused Deployment) and
//! list restarts in the binding's status.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Api, ResourceExt};
use secretsync_api::{FIELD_MANAGER, SecretBinding};
use tokio::time::Instant;

use super::budget::Grant;
use super::plan::{
    Decision, OptIn, Plan, WorkloadKind, WorkloadState, decide, dependencies, opt_in, record_patch,
    referenced_objects, restart_patch, restarted_list, rotated,
};
use super::state::{Tracked, WorkloadKey};
use crate::context::Ctx;
use crate::events::reasons;
use crate::outcome::{ReconcileResult as R, Reconciled};
use crate::runtime::ObjKey;
use crate::runtime::backoff::{backoff, random_unit};

/// How soon a workload is looked at again after its conditional patch lost a race.
const CONFLICT_RETRY: Duration = Duration::from_millis(200);
/// Attempts at updating a binding's `status.restarted` against concurrent writers.
const STATUS_ATTEMPTS: usize = 5;

/// The API resource of a workload kind.
pub fn api_resource(kind: WorkloadKind) -> ApiResource {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
    use k8s_openapi::api::batch::v1::CronJob;
    match kind {
        WorkloadKind::Deployment => ApiResource::erase::<Deployment>(&()),
        WorkloadKind::StatefulSet => ApiResource::erase::<StatefulSet>(&()),
        WorkloadKind::DaemonSet => ApiResource::erase::<DaemonSet>(&()),
        WorkloadKind::CronJob => ApiResource::erase::<CronJob>(&()),
        WorkloadKind::Rollout => ApiResource::erase::<super::argo::Rollout>(&()),
    }
}

fn reference(key: &WorkloadKey, obj: &DynamicObject) -> ObjectReference {
    ObjectReference {
        api_version: Some(key.kind.api_version().to_string()),
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

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(ae) if ae.code == 409)
}

/// Looks at one workload.
pub async fn reconcile(ctx: &Ctx, key: &WorkloadKey) -> Reconciled {
    let rollout = &ctx.rollout;
    let Some(tracked) = rollout.tracked(key) else {
        return Reconciled::done(R::Untracked);
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
            ctx.api_failure("rollout reconcile failed", &key.to_string(), &e);
            Reconciled::api_error(backoff(failures.saturating_sub(1), random_unit()))
        }
    }
}

/// A fetched workload and what it depends on now.
struct Observed {
    obj: DynamicObject,
    annotations: BTreeMap<String, String>,
    mode: OptIn,
    paused: bool,
    /// Trigger name → data hash of the managed Secrets, labelled Secrets and labelled
    /// ConfigMaps (`configmap/NAME`) it depends on.
    deps: BTreeMap<String, String>,
    refs: Option<(Option<i64>, BTreeSet<String>)>,
}

/// The triggers of `ns` that may restart workloads: trigger name → data hash. Managed
/// Secrets whose binding allows restarts (a Secret whose binding is unknown, e.g. an
/// orphaned one, counts, as `rollout.restart` defaults to true; it cannot rotate without
/// its binding anyway), then labelled Secrets and ConfigMaps. A managed Secret that also
/// carries the watch label counts once, as managed: its binding's `rollout.restart` rules.
fn restartable(ctx: &Ctx, ns: &str) -> BTreeMap<String, String> {
    let managed = ctx.managed.hashes(ns, |binding| {
        binding.is_none_or(|b| {
            ctx.bindings
                .get(&ObjKey::new(ns, b))
                .is_none_or(|b| b.spec.rollout.restart)
        })
    });
    let mut out = ctx.rollout.triggers.hashes(ns);
    out.retain(|name, _| ctx.managed.resource_version(ns, name).is_none());
    out.extend(managed);
    out
}

/// Fetches the workload; `None` when it is gone or no longer opted in (then forgotten).
async fn observe(
    ctx: &Ctx,
    key: &WorkloadKey,
    api: &Api<DynamicObject>,
) -> Result<Option<Observed>, kube::Error> {
    let Some(obj) = api.get_opt(&key.name).await? else {
        ctx.rollout.workload_deleted(key);
        return Ok(None);
    };
    let annotations = obj.metadata.annotations.clone().unwrap_or_default();
    let Some(mode) = opt_in(Some(&annotations)) else {
        ctx.rollout.workload_deleted(key);
        return Ok(None);
    };
    let pod: Option<PodSpec> = obj
        .data
        .pointer(key.kind.pod_spec_pointer())
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    let paused = key.kind == WorkloadKind::Deployment
        && obj.data.pointer("/spec/paused").and_then(|v| v.as_bool()) == Some(true);
    let restartable = restartable(ctx, &key.namespace);
    let deps = dependencies(&mode, pod.as_ref(), &restartable)
        .iter()
        .map(|(n, h)| (n.to_string(), h.to_string()))
        .collect();
    let refs = (mode == OptIn::Auto).then(|| {
        (
            obj.metadata.generation,
            pod.as_ref().map(referenced_objects).unwrap_or_default(),
        )
    });
    Ok(Some(Observed {
        obj,
        annotations,
        mode,
        paused,
        deps,
        refs,
    }))
}

async fn reconcile_tracked(
    ctx: &Ctx,
    key: &WorkloadKey,
    tracked: Tracked,
) -> Result<Reconciled, kube::Error> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &key.namespace, &api_resource(key.kind));
    let Some(seen) = observe(ctx, key, &api).await? else {
        return Ok(Reconciled::done(R::Deleted));
    };
    let deps: BTreeMap<&str, &str> = seen
        .deps
        .iter()
        .map(|(n, h)| (n.as_str(), h.as_str()))
        .collect();
    let now = Instant::now();
    let plan: Plan = decide(
        &ctx.hmac,
        &WorkloadState {
            annotations: Some(&seen.annotations),
            paused: seen.paused,
            pending: tracked.pending.as_ref(),
            seen: tracked.seen.as_ref(),
        },
        &deps,
        now.into_std(),
        ctx.config.restart_debounce,
    );
    let pending = plan.pending.clone();
    ctx.rollout.update(key, |t| {
        t.mode = seen.mode.clone();
        t.refs = seen.refs.clone();
        t.pending = pending;
    });
    let rv = seen
        .obj
        .metadata
        .resource_version
        .clone()
        .unwrap_or_default();
    if !matches!(plan.decision, Decision::Restart { .. }) {
        let waiting = ctx.rollout.leave_budget(key);
        ctx.metrics.set_restarts_queued(waiting);
    }
    match plan.decision {
        Decision::Nothing => {
            ctx.rollout.update(key, |t| {
                t.seen = Some(seen.deps.clone());
                t.skipped = None;
            });
            Ok(Reconciled::done(R::Unchanged))
        }
        Decision::WaitUntil(at) => {
            let wait = at.saturating_duration_since(now.into_std());
            tracing::info!(workload = %key, wait_ms = wait.as_millis() as u64, "rotation pending; debouncing");
            Ok(Reconciled::after(R::Pending, wait))
        }
        Decision::Record { revision } => record(ctx, key, &api, &rv, revision, seen.deps).await,
        Decision::SkipPaused { revision } => {
            skip_paused(ctx, key, &tracked, &seen, revision).await;
            Ok(Reconciled::done(R::Paused))
        }
        Decision::Restart { revision } => match ctx.rollout.ask_budget(key) {
            Grant::Now => {
                ctx.metrics
                    .set_restarts_queued(ctx.rollout.budget_waiting());
                restart(ctx, key, &api, &tracked, &seen, &rv, revision).await
            }
            Grant::Wait { until, first } => {
                ctx.metrics
                    .set_restarts_queued(ctx.rollout.budget_waiting());
                let wait = until.saturating_duration_since(std::time::Instant::now());
                if first {
                    delayed(ctx, key, &seen, wait).await;
                }
                Ok(Reconciled::after(R::Pending, wait))
            }
        },
    }
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    }
}

/// First sight (or a dependency set change): record the revision, restart nothing.
async fn record(
    ctx: &Ctx,
    key: &WorkloadKey,
    api: &Api<DynamicObject>,
    rv: &str,
    revision: String,
    deps: BTreeMap<String, String>,
) -> Result<Reconciled, kube::Error> {
    let patch = record_patch(rv, &revision);
    match api
        .patch(&key.name, &patch_params(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            tracing::info!(workload = %key, secrets = deps.len(), "recorded secret revision (no restart)");
            ctx.rollout.update(key, |t| {
                t.seen = Some(deps);
                t.revision = Some(revision);
                t.skipped = None;
            });
            Ok(Reconciled::done(R::Recorded))
        }
        Err(e) if is_conflict(&e) => Ok(Reconciled::after(R::Conflict, CONFLICT_RETRY)),
        Err(e) => Err(e),
    }
}

/// A paused Deployment: one Warning event per revision, no write.
async fn skip_paused(
    ctx: &Ctx,
    key: &WorkloadKey,
    tracked: &Tracked,
    seen: &Observed,
    revision: String,
) {
    if tracked.skipped.as_deref() == Some(revision.as_str()) {
        return;
    }
    let deps: BTreeMap<&str, &str> = seen
        .deps
        .iter()
        .map(|(n, h)| (n.as_str(), h.as_str()))
        .collect();
    let names = rotated(tracked.seen.as_ref(), &deps).join(", ");
    tracing::warn!(workload = %key, secrets = %names, "Deployment is paused; restart deferred until it is resumed");
    ctx.events
        .publish_action(
            &event_key(key),
            &reference(key, &seen.obj),
            true,
            reasons::ROLLOUT_SKIPPED,
            "Restart",
            format!("Deployment is paused; restart for rotated Secrets {names} deferred until it is resumed"),
        )
        .await;
    ctx.rollout.update(key, |t| t.skipped = Some(revision));
}

/// A restart over the budget: one Normal event when it starts waiting.
async fn delayed(ctx: &Ctx, key: &WorkloadKey, seen: &Observed, wait: Duration) {
    tracing::info!(workload = %key, wait_ms = wait.as_millis() as u64, "restart waits for the --max-restarts-per-minute budget");
    ctx.events
        .publish_action(
            &event_key(key),
            &reference(key, &seen.obj),
            false,
            reasons::ROLLOUT_DELAYED,
            "Restart",
            format!(
                "Restart delayed by --max-restarts-per-minute {}: about {} s; it happens once, in its turn",
                ctx.config.max_restarts_per_minute,
                wait.as_secs().max(1)
            ),
        )
        .await;
}

/// The restart: one conditional patch, an event, and the restart listed in each rotated
/// Secret's binding.
async fn restart(
    ctx: &Ctx,
    key: &WorkloadKey,
    api: &Api<DynamicObject>,
    tracked: &Tracked,
    seen: &Observed,
    rv: &str,
    revision: String,
) -> Result<Reconciled, kube::Error> {
    let at = Time(Timestamp::now());
    let body = restart_patch(key.kind, rv, &revision, &at.0.to_string());
    match api
        .patch(&key.name, &patch_params(), &Patch::Merge(&body))
        .await
    {
        Ok(_) => {}
        Err(e) if is_conflict(&e) => return Ok(Reconciled::after(R::Conflict, CONFLICT_RETRY)),
        Err(e) => return Err(e),
    }
    let deps: BTreeMap<&str, &str> = seen
        .deps
        .iter()
        .map(|(n, h)| (n.as_str(), h.as_str()))
        .collect();
    let names: Vec<String> = rotated(tracked.seen.as_ref(), &deps)
        .into_iter()
        .map(str::to_string)
        .collect();
    tracing::info!(workload = %key, secrets = %names.join(", "), "restarted after rotation");
    ctx.rollout.update(key, |t| {
        t.seen = Some(seen.deps.clone());
        t.revision = Some(revision);
        t.pending = None;
        t.skipped = None;
    });
    ctx.metrics.rollout_restart(key.kind.as_str());
    ctx.events
        .publish_action(
            &event_key(key),
            &reference(key, &seen.obj),
            false,
            reasons::ROLLOUT_RESTARTED,
            "Restart",
            format!(
                "Restarted after a change of {} (Secrets by name, ConfigMaps as configmap/NAME)",
                names.join(", ")
            ),
        )
        .await;
    let bindings: BTreeSet<String> = names
        .iter()
        .filter_map(|s| ctx.managed.binding_of(&key.namespace, s))
        .collect();
    for b in bindings {
        if let Err(e) = record_restart(ctx, key, &b, &at).await {
            tracing::warn!(workload = %key, binding = %b, error = %e, "could not list the restart in the binding's status");
        }
    }
    Ok(Reconciled::done(R::Restarted))
}

/// Adds the restart to the binding's `status.restarted`: a merge patch of that one field
/// (the binding reconciler's server-side apply of the rest of the status never includes
/// it, so neither write removes the other's fields), conditional on resourceVersion and
/// retried; this process's writes of one binding are serialized.
async fn record_restart(
    ctx: &Ctx,
    key: &WorkloadKey,
    binding: &str,
    at: &Time,
) -> Result<(), kube::Error> {
    let api: Api<SecretBinding> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let writer = ctx
        .rollout
        .status_writer(&ObjKey::new(key.namespace.clone(), binding));
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
        match api
            .patch_status(binding, &patch_params(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if is_conflict(&e) && attempt < STATUS_ATTEMPTS => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
