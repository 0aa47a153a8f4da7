//! The SecretBinding reconciler: resolve through the shared cache, HMAC, server-side apply
//! the Secret only when it differs, write status only when it changes.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use secretsync_api::{
    ANNOTATION_FORCE_SYNC, CreationPolicy, FIELD_MANAGER, FINALIZER_CLEANUP, SecretBinding,
    SecretBindingStatus, parse_duration,
};
use tokio::time::Instant;

use crate::Error;
use crate::backoff::{backoff, jittered, random_unit};
use crate::context::{BindingState, Ctx, Verified};
use crate::events::reasons as event_reasons;
use crate::store::ObjKey;
use crate::sync::{
    Outcome, ReadMemo, TargetCheck, check_target, conforms, desired_secret, force_sync_requested,
    is_rotation, keys_message, next_status, read_due, ready_of, reasons,
};

/// When to look at a binding again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// Only on events.
    Never,
    /// After a delay (refresh or backoff).
    After(Duration),
}

/// Reconciles one binding; the label is the `result` of `reconcile_total`.
pub async fn reconcile(ctx: &Ctx, key: &ObjKey) -> (Requeue, &'static str) {
    let Some(binding) = ctx.bindings.get(key) else {
        ctx.forget(key);
        return (Requeue::Never, "deleted");
    };
    if binding.metadata.deletion_timestamp.is_some() {
        return match finalize(ctx, &binding).await {
            Ok(()) => (Requeue::Never, "deleted"),
            Err(e) => {
                tracing::warn!(binding = %key, error = %e, "cleanup on deletion failed");
                let mut st = ctx.state(key);
                st.failures += 1;
                let delay = backoff(st.failures - 1, random_unit());
                ctx.set_state(key, st);
                (Requeue::After(delay), "error")
            }
        };
    }
    match sync(ctx, key, &binding).await {
        Ok(r) => r,
        Err(e) => {
            // API failures (not backend ones): the status may not be writable either, so
            // just log and back off.
            tracing::warn!(binding = %key, error = %e, "reconcile failed");
            let mut st = ctx.state(key);
            st.failures += 1;
            if let Some(m) = st.memo.as_mut() {
                m.failed = true;
            }
            let delay = backoff(st.failures - 1, random_unit());
            ctx.set_state(key, st);
            (Requeue::After(delay), "error")
        }
    }
}

fn secrets_api(ctx: &Ctx, ns: &str) -> Api<Secret> {
    Api::namespaced(ctx.client.clone(), ns)
}

fn has_finalizer(b: &SecretBinding) -> bool {
    b.finalizers().iter().any(|f| f == FINALIZER_CLEANUP)
}

/// Sets the finalizer list, guarded by resourceVersion so a concurrent change is not lost.
async fn set_finalizers(
    ctx: &Ctx,
    b: &SecretBinding,
    finalizers: Vec<String>,
) -> Result<(), Error> {
    let api: Api<SecretBinding> =
        Api::namespaced(ctx.client.clone(), &b.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "metadata": {"finalizers": finalizers, "resourceVersion": b.resource_version()}
    });
    api.patch(
        &b.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// Deletion: a Merge binding removes its keys (apply with nothing for our manager), then
/// drops the finalizer. Owner Secrets go with garbage collection, Orphan ones stay.
async fn finalize(ctx: &Ctx, b: &SecretBinding) -> Result<(), Error> {
    let key = crate::source::key_of(b);
    if has_finalizer(b) {
        if b.spec.target.creation_policy == CreationPolicy::Merge {
            let ns = b.namespace().unwrap_or_default();
            let target = b.target_name();
            let api = secrets_api(ctx, &ns);
            if let Some(secret) = api.get_opt(&target).await?
                && crate::sync::owned_by(&secret, &b.name_any(), &b.uid().unwrap_or_default())
            {
                let pp = PatchParams::apply(FIELD_MANAGER).force();
                api.patch(
                    &target,
                    &pp,
                    &Patch::Apply(&crate::sync::cleanup_object(&target, &ns)),
                )
                .await?;
                tracing::info!(binding = %key, secret = %target, "removed this binding's keys from the Secret");
            }
        }
        let rest: Vec<String> = b
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER_CLEANUP)
            .cloned()
            .collect();
        set_finalizers(ctx, b, rest).await?;
    }
    ctx.forget(&key);
    Ok(())
}

async fn sync(
    ctx: &Ctx,
    key: &ObjKey,
    b: &SecretBinding,
) -> Result<(Requeue, &'static str), Error> {
    let started = Instant::now();
    let ns = b.namespace().unwrap_or_default();
    let policy = b.spec.target.creation_policy;
    // Merge bindings need the finalizer before their first write, so a deletion can always
    // clean up; other policies must not block deletion with it.
    if policy == CreationPolicy::Merge && !has_finalizer(b) {
        let mut f = b.finalizers().to_vec();
        f.push(FINALIZER_CLEANUP.to_string());
        set_finalizers(ctx, b, f).await?;
    } else if policy != CreationPolicy::Merge && has_finalizer(b) {
        let f = b
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER_CLEANUP)
            .cloned()
            .collect();
        set_finalizers(ctx, b, f).await?;
    }

    let mut state = ctx.state(key);
    let force_value = b.annotations().get(ANNOTATION_FORCE_SYNC).cloned();
    let force = force_sync_requested(state.force_seen.as_deref(), force_value.as_deref());
    let target = b.target_name();
    let generation = b.metadata.generation;

    let refresh = match parse_duration(&b.spec.refresh_interval) {
        Ok(d) => d,
        Err(e) => {
            let msg = format!("spec.refreshInterval: {e}");
            return fail(ctx, key, b, state, "InvalidConfig", msg).await;
        }
    };

    let source_key = ObjKey::new(ns.clone(), b.spec.source_ref.name.clone());
    let Some(source) = ctx.sources.get(&source_key) else {
        let msg = format!(
            "SecretSource {:?} not found in namespace {ns:?}",
            source_key.name
        );
        return fail(ctx, key, b, state, reasons::SOURCE_NOT_FOUND, msg).await;
    };
    let entry = ctx.registry.get(&source).await;
    let cache = match &entry.cache {
        Ok(c) => c.clone(),
        Err(e) => {
            let msg = format!("SecretSource {:?} is not ready: {e}", source_key.name);
            return fail(ctx, key, b, state, reasons::SOURCE_NOT_READY, msg).await;
        }
    };

    let api = secrets_api(ctx, &ns);
    // An unchanged Secret (per the watch) that this process already wrote or checked is
    // not fetched again: at scale the GET is a third of a refresh's API work.
    let watched_rv = ctx.rollout.secret_resource_version(&ns, &target);
    let verified_hash = Verified::still_valid(
        state.verified.as_ref(),
        generation,
        watched_rv.as_deref(),
        force,
    );
    let secret = match verified_hash {
        Some(_) => None,
        None => {
            let secret = api.get_opt(&target).await?;
            match check_target(
                policy,
                secret.as_ref(),
                &target,
                &b.name_any(),
                &b.uid().unwrap_or_default(),
            ) {
                TargetCheck::Ok => {}
                TargetCheck::Conflict(m) => {
                    return fail(ctx, key, b, state, reasons::TARGET_CONFLICT, m).await;
                }
                TargetCheck::NotFound(m) => {
                    return fail(ctx, key, b, state, reasons::TARGET_NOT_FOUND, m).await;
                }
            }
            secret
        }
    };
    // Whether the Secret holds what the binding wants for `hash`.
    let holds = |hash: &str, keys: &[String]| match (&verified_hash, &secret) {
        (Some(v), _) => v == hash,
        (None, Some(s)) => conforms(s, &desired_secret(b, hash), &ctx.hmac, hash, keys),
        (None, None) => false,
    };
    let verify = |hash: &str| {
        Verified::at(
            secret.as_ref().and_then(|s| s.resource_version()),
            generation,
            hash,
        )
    };

    let prev_status: Option<SecretBindingStatus> =
        state.status.clone().or_else(|| b.status.clone());
    let now = Instant::now();
    let mut read = read_due(state.memo.as_ref(), generation, entry.epoch, force, now);
    if !read {
        // Nothing due: only check the Secret against what we last synced.
        let (keys, hash) = prev_status
            .as_ref()
            .map(|s| (s.synced_keys.clone(), s.data_hash.clone()))
            .unwrap_or_default();
        if let Some(hash) = hash.filter(|h| holds(h, &keys)) {
            if verified_hash.is_none() {
                state.verified = verify(&hash);
            }
            let outcome = Outcome::Synced {
                keys,
                hash,
                read: false,
            };
            write_status(ctx, b, &mut state, &outcome).await?;
            let remaining = state
                .memo
                .as_ref()
                .and_then(|m| m.next_refresh)
                .map(|at| Requeue::After(at.saturating_duration_since(now)))
                .unwrap_or(Requeue::Never);
            ctx.set_state(key, state);
            return Ok((remaining, "unchanged"));
        }
        tracing::info!(binding = %key, secret = %target, "Secret drifted or missing; restoring");
        read = true;
    }
    debug_assert!(read);

    let data = match secretsync_backends::resolve::resolve(&b.spec, &cache, force).await {
        Ok(d) => d,
        Err(e) => {
            state.force_seen = force_value;
            return fail(ctx, key, b, state, e.reason.as_str(), e.message).await;
        }
    };
    let hash = ctx.hmac.data_hash(&data);
    let keys: Vec<String> = data.keys().cloned().collect();
    let mut written = false;
    if holds(&hash, &keys) {
        if verified_hash.is_none() {
            state.verified = verify(&hash);
        }
    } else {
        let desired = desired_secret(b, &hash);
        let body = crate::sync::apply_object(&desired, &data);
        drop(data);
        // Until the apply succeeds, nothing about the Secret is known for sure (and the
        // watch event of a write whose answer was lost must count as drift).
        state.verified = None;
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        match api.patch(&target, &pp, &Patch::Apply(&body)).await {
            Ok(applied) => {
                state.verified = Verified::at(applied.resource_version(), generation, &hash);
                written = true;
                tracing::info!(binding = %key, secret = %target, keys = keys.len(), "applied Secret");
            }
            Err(kube::Error::Api(ae)) => {
                // Only code and reason: the API server's message is not needed here and
                // is kept out of status on principle.
                let msg = format!(
                    "writing Secret {target:?} failed: {} {}",
                    ae.code, ae.reason
                );
                return fail(ctx, key, b, state, reasons::WRITE_FAILED, msg).await;
            }
            Err(e) => {
                // Keep `verified` cleared: the write may have happened.
                ctx.set_state(key, state);
                return Err(e.into());
            }
        }
    }

    let rotated = is_rotation(
        prev_status.as_ref().and_then(|s| s.data_hash.as_deref()),
        &hash,
    );
    let reference = b.object_ref(&());
    if rotated {
        ctx.metrics.rotation();
        let note = format!(
            "Secret {target:?} rotated ({}: {})",
            keys_message(keys.len()),
            keys.join(", ")
        );
        ctx.events
            .publish(key, &reference, false, event_reasons::ROTATED, note)
            .await;
    } else if written {
        let note = format!(
            "Secret {target:?} written ({}: {})",
            keys_message(keys.len()),
            keys.join(", ")
        );
        ctx.events
            .publish(key, &reference, false, event_reasons::SYNCED, note)
            .await;
    }

    let outcome = Outcome::Synced {
        keys,
        hash,
        read: true,
    };
    write_status(ctx, b, &mut state, &outcome).await?;
    let next = (!refresh.is_zero()).then(|| jittered(refresh, random_unit()));
    state.memo = Some(ReadMemo {
        generation,
        source_epoch: entry.epoch,
        next_refresh: next.map(|d| now + d),
        failed: false,
    });
    state.failures = 0;
    state.force_seen = force_value;
    ctx.set_state(key, state);
    tracing::debug!(binding = %key, elapsed_ms = started.elapsed().as_millis() as u64, written, rotated, "synced");
    let result = if written { "written" } else { "unchanged" };
    Ok((next.map_or(Requeue::Never, Requeue::After), result))
}

/// A failed sync: the Secret is untouched, status says why, retry with backoff.
async fn fail(
    ctx: &Ctx,
    key: &ObjKey,
    b: &SecretBinding,
    mut state: BindingState,
    reason: &str,
    message: String,
) -> Result<(Requeue, &'static str), Error> {
    tracing::warn!(binding = %key, reason, message = %message, "sync failed");
    let outcome = Outcome::Failed {
        reason: reason.to_string(),
        message: message.clone(),
    };
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
    match state.memo.as_mut() {
        Some(m) => m.failed = true,
        None => {
            state.memo = Some(ReadMemo {
                generation: b.metadata.generation,
                source_epoch: 0,
                next_refresh: None,
                failed: true,
            })
        }
    }
    let delay = backoff(state.failures - 1, random_unit());
    let res = write_status(ctx, b, &mut state, &outcome).await;
    ctx.set_state(key, state);
    res?;
    Ok((Requeue::After(delay), "error"))
}

/// Writes the status (server-side apply on the status subresource) if it changed.
async fn write_status(
    ctx: &Ctx,
    b: &SecretBinding,
    state: &mut BindingState,
    outcome: &Outcome,
) -> Result<(), Error> {
    let mut prev = state.status.clone().or_else(|| b.status.clone());
    // `restarted` is the rollout reconciler's: always take the latest from the cluster.
    if let (Some(p), Some(cur)) = (prev.as_mut(), b.status.as_ref()) {
        p.restarted = cur.restarted.clone();
    }
    let now = Time(Timestamp::now());
    let next = next_status(prev.as_ref(), b.metadata.generation, outcome, &now);
    state.ready = ready_of(Some(&next));
    if prev.as_ref() == Some(&next) {
        return Ok(());
    }
    // `restarted` is never part of this apply: the rollout reconciler merge-patches it, and
    // a field this manager's apply does not own is left alone by it.
    let mut applied = next.clone();
    applied.restarted.clear();
    let body = serde_json::json!({
        "apiVersion": SecretBinding::api_version(&()),
        "kind": SecretBinding::kind(&()),
        "status": applied,
    });
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    // The response (the whole binding) is not decoded: the binding watch delivers the
    // same object, and this write happens on every refresh.
    let url = SecretBinding::url_path(&(), b.namespace().as_deref());
    let req = kube::core::Request::new(url)
        .patch_subresource("status", &b.name_any(), &pp, &Patch::Apply(&body))
        .map_err(kube::Error::BuildRequest)?;
    ctx.client.request_text(req).await?;
    state.status = Some(next);
    Ok(())
}
