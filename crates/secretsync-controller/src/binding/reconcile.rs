//! The binding reconciler's I/O, as a sequence of steps: finalizer, source, target
//! Secret, backend read, write, events, status. Each step either continues or stops the
//! sync with a [`Stop`]; the decisions inside the steps live in [`super::plan`].

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Resource, ResourceExt};
use secretsync_api::{
    ANNOTATION_FORCE_SYNC, ClusterSecretSource, ConditionReason, FIELD_MANAGER, SecretBinding,
    SecretBindingStatus, SourceKind, parse_duration,
};
use secretsync_backends::resolve::{OwnSecret, SecretData, read_inputs};
use secretsync_backends::template::TemplatedMetadata;
use secretsync_backends::template_from::{TemplateSet, config_map_names};
use secretsync_backends::{BackendError, ReadOptions, SourceCache};
use tokio::time::Instant;

use super::plan::{
    DataDue, Outcome, ReadMemo, TargetCheck, apply_object, check_target, conforms, data_due,
    desired_secret, force_sync_requested, inputs_unchanged, is_rotation, keys_message,
    next_refresh, rerender_max_age,
};
use super::state::{BindingState, Verified};
use super::{finalizer, status};
use crate::changes::Finish;
use crate::context::Ctx;
use crate::events::reasons as event_reasons;
use crate::outcome::{ReconcileResult as R, Reconciled, Requeue};
use crate::runtime::ObjKey;
use crate::runtime::backoff::{backoff, random_unit};
use crate::source::{AnySource, SourceEntry};

/// Why a sync stopped before the end.
#[derive(Debug)]
pub enum Stop {
    /// Reported in status as `Ready=False` with this reason; the Secret is untouched.
    Failed(ConditionReason, String),
    /// Reading the backend failed; the failed keys are retried from `retry_at` on (per
    /// key, in the source's cache), so the binding comes back then instead of on its own
    /// backoff.
    Read(BackendError, Option<Instant>),
    /// The API server failed: nothing more can be written now.
    Api(kube::Error),
}

impl From<kube::Error> for Stop {
    fn from(e: kube::Error) -> Self {
        Stop::Api(e)
    }
}

/// How far apart the bindings waiting on one failed key come back after its retry time.
const KEY_RETRY_SPREAD: Duration = Duration::from_secs(1);

/// Reconciles one binding.
pub async fn reconcile(ctx: &Ctx, key: &ObjKey) -> Reconciled {
    let Some(binding) = ctx.bindings.get(key) else {
        ctx.forget(key);
        return Reconciled::done(R::Deleted);
    };
    let mut state = ctx.binding_state(key);
    if binding.metadata.deletion_timestamp.is_some() {
        return match finalizer::finalize(ctx, &binding).await {
            Ok(()) => Reconciled::done(R::Deleted),
            Err(e) => {
                ctx.api_failure("cleanup on deletion failed", &key.to_string(), &e);
                api_retry(ctx, key, state)
            }
        };
    }
    let mut ticket = None;
    let result = sync(ctx, key, &binding, &mut state, &mut ticket).await;
    // A failure before the read took the request still answers it: a binding that
    // cannot use values settles it, a transient failure asks for the event again.
    let ticket = ticket.or_else(|| {
        result
            .is_err()
            .then(|| ctx.take_read_request(key))
            .flatten()
    });
    if let Some(n) = ticket {
        ctx.reads.finish(key, n, finish_of(&result));
    }
    match result {
        Ok(done) => {
            ctx.set_binding_state(key, state);
            done
        }
        Err(Stop::Failed(reason, message)) => {
            fail(ctx, key, &binding, state, reason, message, None).await
        }
        Err(Stop::Read(e, retry_at)) => {
            fail(ctx, key, &binding, state, e.reason, e.message, retry_at).await
        }
        Err(Stop::Api(e)) => {
            ctx.api_failure("reconcile failed", &key.to_string(), &e);
            if let Some(m) = state.memo.as_mut() {
                m.failed = true;
            }
            api_retry(ctx, key, state)
        }
    }
}

/// How a read a change event asked for ended.
fn finish_of(result: &Result<Reconciled, Stop>) -> Finish {
    match result {
        Ok(_) => Finish::Synced,
        Err(Stop::Read(e, _)) if e.reason.is_transient() => Finish::Retry,
        // A source still building or unreachable, or a Secret write that failed: the
        // value has not arrived, and it will once they recover.
        Err(Stop::Failed(ConditionReason::SourceNotReady | ConditionReason::WriteFailed, _)) => {
            Finish::Retry
        }
        Err(Stop::Api(_)) => Finish::Retry,
        Err(Stop::Read(..) | Stop::Failed(..)) => Finish::Settled,
    }
}

/// An API failure: back off (sooner if the API server comes back), status untouched (it
/// may not be writable either).
fn api_retry(ctx: &Ctx, key: &ObjKey, mut state: BindingState) -> Reconciled {
    state.failures += 1;
    let delay = backoff(state.failures - 1, random_unit());
    ctx.set_binding_state(key, state);
    Reconciled::api_error(delay)
}

/// The target Secret as far as this reconcile knows it.
struct Target {
    name: String,
    /// What it is known to hold without reading it (see [`Verified`]).
    verified: Option<Arc<Verified>>,
    /// The Secret as just read, when it had to be read (`None` also when absent).
    secret: Option<Secret>,
}

/// What the binding wants the Secret to hold: data hashing to `hash` under `keys`, and the
/// labels and annotations its template rendered.
struct Wanted<'a> {
    hash: &'a str,
    keys: &'a [String],
    metadata: &'a TemplatedMetadata,
}

impl Target {
    /// Whether the Secret holds what the binding wants.
    fn holds(&self, ctx: &Ctx, b: &SecretBinding, w: &Wanted<'_>) -> bool {
        match (&self.verified, &self.secret) {
            (Some(v), _) => v.holds(w.hash, w.metadata),
            (None, Some(s)) => conforms(
                s,
                &desired_secret(b, w.hash, w.metadata),
                &ctx.hmac,
                w.hash,
                w.keys,
            ),
            (None, None) => false,
        }
    }

    /// What may be remembered after finding the Secret holding what is wanted.
    fn verified(
        &self,
        b: &SecretBinding,
        w: &Wanted<'_>,
        current: Option<Arc<Verified>>,
    ) -> Option<Arc<Verified>> {
        match self.verified {
            Some(_) => current,
            None => Verified::at(
                self.secret.as_ref().and_then(|s| s.resource_version()),
                b.metadata.generation,
                w.hash,
                w.metadata,
            ),
        }
    }
}

async fn sync(
    ctx: &Ctx,
    key: &ObjKey,
    b: &SecretBinding,
    state: &mut BindingState,
    ticket: &mut Option<u64>,
) -> Result<Reconciled, Stop> {
    let started = Instant::now();
    finalizer::ensure(ctx, b).await?;
    let force_value = b.annotations().get(ANNOTATION_FORCE_SYNC).cloned();
    let force = force_sync_requested(state.force_seen.as_deref(), force_value.as_deref());
    let refresh = parse_duration(&b.spec.refresh_interval).map_err(|e| {
        Stop::Failed(
            ConditionReason::InvalidConfig,
            format!("spec.refreshInterval: {e}"),
        )
    })?;
    let (entry, cache) = source_of(ctx, b).await?;
    let templates = templates_of(ctx, key, b).await?;
    let target = look_at_target(ctx, b, state, force).await?;
    let prev_status = state
        .status
        .clone()
        .or_else(|| b.status.clone().map(Arc::new));
    let now = Instant::now();
    // An input changed (a kubernetes source's Secret, a change event): read now, through
    // the cache, which has already forgotten the changed key.
    *ticket = ctx.take_read_request(key);
    let inputs_changed = ticket.is_some();
    let due = data_due(
        state.memo.as_ref(),
        b.metadata.generation,
        entry.epoch,
        templates.digest(),
        force || inputs_changed,
        now,
    );
    match due {
        DataDue::Nothing => {
            if still_intact(ctx, b, state, &target, prev_status.as_deref(), false).await? {
                return Ok(Reconciled {
                    result: R::Unchanged,
                    requeue: until(state.memo.as_ref().and_then(|m| m.next_refresh)),
                });
            }
            tracing::info!(binding = %key, secret = %target.name, "Secret drifted or missing; restoring");
        }
        DataDue::Rerender => {
            tracing::info!(binding = %key, secret = %target.name, "templates changed; rendering again from cached values");
        }
        DataDue::Read => {}
    }
    // A re-render takes the values the last read used (still cached) and keeps the
    // refresh schedule: a ConfigMap edit is no reason to read the backend.
    let rerender = due == DataDue::Rerender;
    let opts = ReadOptions {
        bypass: force,
        max_age: if rerender {
            rerender_max_age(refresh)
        } else {
            refresh
        },
    };
    let ns = b.namespace().unwrap_or_default();
    let own = OwnSecret {
        namespace: &ns,
        name: &target.name,
    };
    let inputs = match read_inputs(&b.spec, &cache, opts, Some(own)).await {
        Ok(i) => i,
        Err(e) => {
            state.force_seen = force_value;
            return Err(Stop::Read(e, None));
        }
    };
    // The values read are the ones the last build used: the data would come out the
    // same, so only the Secret is checked (most refreshes end here).
    let same_inputs = !force
        && inputs_unchanged(
            state.memo.as_ref(),
            b.metadata.generation,
            entry.epoch,
            templates.digest(),
            inputs.stamp(),
        );
    if same_inputs && still_intact(ctx, b, state, &target, prev_status.as_deref(), true).await? {
        let next = next_refresh(
            refresh,
            cache.policy().refresh_follows_fetch(),
            inputs.oldest_read.map(Instant::from_std),
            now,
            random_unit(),
        );
        if let Some(m) = state.memo.as_mut() {
            m.next_refresh = next;
        }
        state.failures = 0;
        state.force_seen = force_value;
        return Ok(Reconciled {
            result: R::Unchanged,
            requeue: until(next),
        });
    }
    let resolved = inputs.build(&b.spec, &templates);
    let data = match resolved.data {
        Ok(d) => d,
        Err(e) => {
            state.force_seen = force_value;
            return Err(Stop::Read(e, resolved.retry_at.map(Instant::from_std)));
        }
    };
    let hash = ctx.hmac.data_hash(&data);
    let keys: Vec<String> = data.keys().cloned().collect();
    let wanted = Wanted {
        hash: &hash,
        keys: &keys,
        metadata: &resolved.metadata,
    };
    let written = write_secret(ctx, key, b, state, &target, data, &wanted).await?;
    let rotated = is_rotation(
        prev_status.as_deref().and_then(|s| s.data_hash.as_deref()),
        &hash,
    );
    announce(ctx, key, b, &target.name, &keys, rotated, written).await;
    let outcome = Outcome::Synced {
        keys,
        hash,
        missing: resolved.missing_keys,
        read: !rerender,
    };
    status::write(ctx, b, state, &outcome, force).await?;
    let next = match (rerender, state.memo.as_ref()) {
        (true, Some(m)) => m.next_refresh,
        _ => next_refresh(
            refresh,
            cache.policy().refresh_follows_fetch(),
            resolved.oldest_read.map(Instant::from_std),
            now,
            random_unit(),
        ),
    };
    state.memo = Some(ReadMemo {
        generation: b.metadata.generation,
        source_epoch: entry.epoch,
        next_refresh: next,
        failed: false,
        templates: templates.digest(),
        inputs: inputs.stamp().cloned(),
    });
    state.metadata = Arc::new(resolved.metadata);
    state.failures = 0;
    state.force_seen = force_value;
    tracing::debug!(binding = %key, elapsed_ms = started.elapsed().as_millis() as u64, written, rotated, "synced");
    let result = if written { R::Written } else { R::Unchanged };
    Ok(Reconciled {
        result,
        requeue: until(next),
    })
}

/// The requeue of a binding whose next refresh is due at `next` (`None`: never, for
/// `refreshInterval: 0`).
fn until(next: Option<Instant>) -> Requeue {
    next.map_or(Requeue::Never, |at| {
        Requeue::After(at.saturating_duration_since(Instant::now()))
    })
}

/// The binding's source, built.
async fn source_of(
    ctx: &Ctx,
    b: &SecretBinding,
) -> Result<(Arc<SourceEntry>, Arc<SourceCache>), Stop> {
    let ns = b.namespace().unwrap_or_default();
    let name = &b.spec.source_ref.name;
    let kind = b.spec.source_ref.kind;
    let entry = match kind {
        SourceKind::SecretSource => {
            let Some(source) = ctx.sources.get(&ObjKey::new(ns.clone(), name.clone())) else {
                return Err(Stop::Failed(
                    ConditionReason::SourceNotFound,
                    format!("SecretSource {name:?} not found in namespace {ns:?}"),
                ));
            };
            ctx.registry.get(AnySource::Namespaced(&source)).await
        }
        SourceKind::ClusterSecretSource => {
            let source = admitted_cluster_source(ctx, &ns, name)?;
            ctx.registry.get(AnySource::Cluster(&source)).await
        }
    };
    match &entry.cache {
        Ok(c) => {
            let cache = c.clone();
            Ok((entry, cache))
        }
        Err(e) => Err(Stop::Failed(
            ConditionReason::SourceNotReady,
            format!("{} {name:?} is not ready: {e}", kind.as_str()),
        )),
    }
}

/// The binding's templates, with its `templateFrom` ConfigMaps loaded (held from now on, so
/// an edit wakes the binding). A ConfigMap or key that does not exist stops the sync
/// (`TemplateNotFound`) and leaves the Secret as it is.
async fn templates_of(ctx: &Ctx, key: &ObjKey, b: &SecretBinding) -> Result<TemplateSet, Stop> {
    let ns = b.namespace().unwrap_or_default();
    let names = config_map_names(&b.spec);
    ctx.templates.track(key, &ns, &names);
    let mut found = std::collections::BTreeMap::new();
    for name in names {
        let data = match ctx.templates.get(&ns, &name).await {
            Ok(d) => d,
            // A chart without the `configmaps get` rule: say so in the status.
            Err(kube::Error::Api(ae)) if ae.code == 403 => {
                return Err(Stop::Failed(
                    ConditionReason::AccessDenied,
                    format!(
                        "the operator may not read ConfigMap {name:?} in namespace {ns:?} (spec.target.template.templateFrom; RBAC: configmaps get)"
                    ),
                ));
            }
            Err(e) => return Err(Stop::Api(e)),
        };
        found.insert(name, data);
    }
    TemplateSet::load(b.spec.target.template.as_ref(), &ns, |n| {
        found.get(n).and_then(|d| d.as_deref())
    })
    .map_err(|e| Stop::Failed(e.reason, e.message))
}

/// The ClusterSecretSource `name`, if it exists and admits namespace `ns` by the
/// namespace's labels now; nothing is read otherwise.
fn admitted_cluster_source(
    ctx: &Ctx,
    ns: &str,
    name: &str,
) -> Result<Arc<ClusterSecretSource>, Stop> {
    if !ctx.serves_cluster_kinds() {
        return Err(Stop::Failed(
            ConditionReason::SourceNotAllowed,
            format!(
                "ClusterSecretSource {name:?} cannot be used: the operator watches only some namespaces (--namespace); cluster sources need an install for all namespaces"
            ),
        ));
    }
    let Some(source) = ctx.cluster_sources.get(&ObjKey::new("", name)) else {
        return Err(Stop::Failed(
            ConditionReason::SourceNotFound,
            format!("ClusterSecretSource {name:?} not found"),
        ));
    };
    if !source.spec.admits(ns, &ctx.namespace_labels(ns)) {
        return Err(Stop::Failed(
            ConditionReason::SourceNotAllowed,
            format!(
                "ClusterSecretSource {name:?} does not admit namespace {ns:?} (its spec.namespaceSelector and spec.namespaces)"
            ),
        ));
    }
    Ok(source)
}

/// Finds out what the target Secret holds: from memory while the watch shows it as last
/// written or checked (at scale the GET is a third of a refresh's API work), else by
/// reading it and checking the creation policy.
async fn look_at_target(
    ctx: &Ctx,
    b: &SecretBinding,
    state: &BindingState,
    force: bool,
) -> Result<Target, Stop> {
    let ns = b.namespace().unwrap_or_default();
    let name = b.target_name();
    let watched_rv = ctx.managed.resource_version(&ns, &name);
    let verified = Verified::still_valid(
        state.verified.as_ref(),
        b.metadata.generation,
        watched_rv.as_deref(),
        force,
    );
    if verified.is_some() {
        return Ok(Target {
            name,
            verified,
            secret: None,
        });
    }
    let secret = ctx.secrets(&ns).get_opt(&name).await?;
    let check = check_target(
        b.spec.target.creation_policy,
        secret.as_ref(),
        &name,
        &b.name_any(),
        &b.uid().unwrap_or_default(),
    );
    match check {
        TargetCheck::Ok => Ok(Target {
            name,
            verified: None,
            secret,
        }),
        TargetCheck::Conflict(m) => Err(Stop::Failed(ConditionReason::TargetConflict, m)),
        TargetCheck::NotFound(m) => Err(Stop::Failed(ConditionReason::TargetNotFound, m)),
    }
}

/// Whether the Secret still holds the last synced data; if so, the status says so (`read`:
/// the values were just read and found unchanged, which counts as a sync). Otherwise it
/// drifted and must be restored.
async fn still_intact(
    ctx: &Ctx,
    b: &SecretBinding,
    state: &mut BindingState,
    target: &Target,
    prev_status: Option<&SecretBindingStatus>,
    read: bool,
) -> Result<bool, Stop> {
    let (keys, hash, missing) = prev_status
        .map(|s| {
            (
                s.synced_keys.clone(),
                s.data_hash.clone(),
                s.missing_keys.clone(),
            )
        })
        .unwrap_or_default();
    // The metadata of the last build: the inputs are the same as then.
    let metadata = state.metadata.clone();
    let Some(hash) = hash else {
        return Ok(false);
    };
    let wanted = Wanted {
        hash: &hash,
        keys: &keys,
        metadata: &metadata,
    };
    if !target.holds(ctx, b, &wanted) {
        return Ok(false);
    }
    state.verified = target.verified(b, &wanted, state.verified.take());
    let outcome = Outcome::Synced {
        keys,
        hash,
        missing,
        read,
    };
    status::write(ctx, b, state, &outcome, false).await?;
    Ok(true)
}

/// Applies the Secret unless it already holds what is wanted; returns whether it wrote.
async fn write_secret(
    ctx: &Ctx,
    key: &ObjKey,
    b: &SecretBinding,
    state: &mut BindingState,
    target: &Target,
    data: SecretData,
    w: &Wanted<'_>,
) -> Result<bool, Stop> {
    if target.holds(ctx, b, w) {
        state.verified = target.verified(b, w, state.verified.take());
        return Ok(false);
    }
    let body = apply_object(&desired_secret(b, w.hash, w.metadata), &data);
    drop(data);
    // Until the apply succeeds nothing about the Secret is known for sure (and the watch
    // event of a write whose answer was lost must count as drift).
    state.verified = None;
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let api = ctx.secrets(&b.namespace().unwrap_or_default());
    match api.patch(&target.name, &pp, &Patch::Apply(&body)).await {
        Ok(applied) => {
            state.verified = Verified::at(
                applied.resource_version(),
                b.metadata.generation,
                w.hash,
                w.metadata,
            );
            tracing::info!(binding = %key, secret = %target.name, keys = w.keys.len(), "applied Secret");
            Ok(true)
        }
        // The API server is unavailable (or shedding load): retried like any API failure,
        // and sooner once the watches see it back.
        Err(kube::Error::Api(ae)) if matches!(ae.code, 429 | 503 | 504) => {
            Err(Stop::Api(kube::Error::Api(ae)))
        }
        // Anything else it refused is reported. Only code and reason: the API server's
        // message is kept out of status.
        Err(kube::Error::Api(ae)) => Err(Stop::Failed(
            ConditionReason::WriteFailed,
            format!(
                "writing Secret {:?} failed: {} {}",
                target.name, ae.code, ae.reason
            ),
        )),
        // `verified` stays cleared: the write may have happened.
        Err(e) => Err(Stop::Api(e)),
    }
}

/// `Rotated` when the data changed, `Synced` when the Secret was written for another
/// reason (first sync, drift repair, spec change).
async fn announce(
    ctx: &Ctx,
    key: &ObjKey,
    b: &SecretBinding,
    target: &str,
    keys: &[String],
    rotated: bool,
    written: bool,
) {
    let listed = format!("{}: {}", keys_message(keys.len()), keys.join(", "));
    let (reason, note) = if rotated {
        ctx.metrics.rotation();
        (
            event_reasons::ROTATED,
            format!("Secret {target:?} rotated ({listed})"),
        )
    } else if written {
        (
            event_reasons::SYNCED,
            format!("Secret {target:?} written ({listed})"),
        )
    } else {
        return;
    };
    ctx.events
        .publish(key, &b.object_ref(&()), false, reason, note)
        .await;
}

/// A failed sync: the Secret is untouched, status says why, retry with backoff: the
/// binding's own, or when keys failed to read, the keys' (`retry_at`) plus up to a second,
/// so the bindings sharing a key come back together and the first reads it for all.
async fn fail(
    ctx: &Ctx,
    key: &ObjKey,
    b: &SecretBinding,
    mut state: BindingState,
    reason: ConditionReason,
    message: String,
    retry_at: Option<Instant>,
) -> Reconciled {
    tracing::warn!(binding = %key, reason = reason.as_str(), message = %message, "sync failed");
    ctx.events
        .publish(
            key,
            &b.object_ref(&()),
            true,
            event_reasons::SYNC_FAILED,
            format!("{reason}: {message}"),
        )
        .await;
    state.failures += 1;
    let memo = state.memo.get_or_insert(ReadMemo {
        generation: b.metadata.generation,
        source_epoch: 0,
        next_refresh: None,
        failed: true,
        templates: 0,
        inputs: None,
    });
    memo.failed = true;
    let delay: Duration = match retry_at {
        Some(at) => {
            at.saturating_duration_since(Instant::now()) + KEY_RETRY_SPREAD.mul_f64(random_unit())
        }
        None => backoff(state.failures - 1, random_unit()),
    };
    let outcome = Outcome::Failed { reason, message };
    let written = status::write(ctx, b, &mut state, &outcome, false).await;
    ctx.set_binding_state(key, state);
    match written {
        Ok(()) => Reconciled::after(R::Error, delay),
        Err(e) => {
            ctx.api_failure("writing SecretBinding status failed", &key.to_string(), &e);
            Reconciled::api_error(delay)
        }
    }
}
