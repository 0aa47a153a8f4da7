//! Writing a binding's status: server-side apply of the status subresource, only when it
//! changed (a `lastSyncTime` alone only once per heartbeat period, see
//! [`super::plan::heartbeat_due`]). `restarted` belongs to the rollout reconciler and is
//! never part of this apply.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Resource, ResourceExt};
use secretsync_api::{FIELD_MANAGER, SecretBinding};

use super::plan::{Outcome, hold_heartbeat, next_status, ready_of, status_settled};
use super::state::BindingState;
use crate::context::Ctx;

/// Writes the status for `outcome` if it differs from the last one written (or seen). A
/// `forced` sync (force-sync annotation) records its read even within the heartbeat: the
/// user asked for it and looks for it.
pub async fn write(
    ctx: &Ctx,
    b: &SecretBinding,
    state: &mut BindingState,
    outcome: &Outcome,
    forced: bool,
) -> Result<(), kube::Error> {
    let now = Time(Timestamp::now());
    let heartbeat = if forced {
        Duration::ZERO
    } else {
        ctx.config.status_heartbeat
    };
    let uid = b.uid().unwrap_or_default();
    // `restarted` plays no part in this decision (it is carried over unchanged below).
    if let Some(p) = state.status.as_deref().or(b.status.as_ref())
        && status_settled(p, b.metadata.generation, outcome, &now, heartbeat, &uid)
    {
        state.ready = ready_of(Some(p));
        return Ok(());
    }
    let mut prev = state.status.as_deref().or(b.status.as_ref()).cloned();
    // `restarted` is the rollout reconciler's: always take the latest from the cluster.
    if let (Some(p), Some(cur)) = (prev.as_mut(), b.status.as_ref()) {
        p.restarted = cur.restarted.clone();
    }
    let next = hold_heartbeat(
        prev.as_ref(),
        next_status(prev.as_ref(), b.metadata.generation, outcome, &now),
        &now,
        heartbeat,
        &uid,
    );
    state.ready = ready_of(Some(&next));
    if prev.as_ref() == Some(&next) {
        return Ok(());
    }
    // A field this manager's apply does not own is left alone by it, so leaving
    // `restarted` out keeps the rollout reconciler's merge patches.
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
    state.status = Some(Arc::new(next));
    Ok(())
}
