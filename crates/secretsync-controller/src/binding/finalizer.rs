//! The `secretsync.dev/cleanup` finalizer of `Merge` bindings: added before their first
//! write, so a deletion can always remove their keys; removed from other bindings.

use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use secretsync_api::{CreationPolicy, FIELD_MANAGER, FINALIZER_CLEANUP, SecretBinding};

use super::plan::{cleanup_object, owned_by};
use crate::context::Ctx;
use crate::runtime::key_of;

fn has_finalizer(b: &SecretBinding) -> bool {
    b.finalizers().iter().any(|f| f == FINALIZER_CLEANUP)
}

fn without_ours(b: &SecretBinding) -> Vec<String> {
    b.finalizers()
        .iter()
        .filter(|f| *f != FINALIZER_CLEANUP)
        .cloned()
        .collect()
}

/// Sets the finalizer list, guarded by resourceVersion so a concurrent change is not lost.
async fn set_finalizers(
    ctx: &Ctx,
    b: &SecretBinding,
    finalizers: Vec<String>,
) -> Result<(), kube::Error> {
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

/// Adds the finalizer to a `Merge` binding that lacks it, removes it from any other.
pub async fn ensure(ctx: &Ctx, b: &SecretBinding) -> Result<(), kube::Error> {
    let merge = b.spec.target.creation_policy == CreationPolicy::Merge;
    if merge && !has_finalizer(b) {
        let mut f = b.finalizers().to_vec();
        f.push(FINALIZER_CLEANUP.to_string());
        set_finalizers(ctx, b, f).await?;
    } else if !merge && has_finalizer(b) {
        set_finalizers(ctx, b, without_ours(b)).await?;
    }
    Ok(())
}

/// Deletion: a Merge binding removes its keys (apply with nothing for our manager), then
/// drops the finalizer. Owner Secrets go with garbage collection, Orphan ones stay.
pub async fn finalize(ctx: &Ctx, b: &SecretBinding) -> Result<(), kube::Error> {
    if has_finalizer(b) {
        if b.spec.target.creation_policy == CreationPolicy::Merge {
            let ns = b.namespace().unwrap_or_default();
            let target = b.target_name();
            let api = ctx.secrets(&ns);
            if let Some(secret) = api.get_opt(&target).await?
                && owned_by(&secret, &b.name_any(), &b.uid().unwrap_or_default())
            {
                let pp = PatchParams::apply(FIELD_MANAGER).force();
                api.patch(&target, &pp, &Patch::Apply(&cleanup_object(&target, &ns)))
                    .await?;
                tracing::info!(binding = %key_of(b), secret = %target, "removed this binding's keys from the Secret");
            }
        }
        set_finalizers(ctx, b, without_ours(b)).await?;
    }
    ctx.forget(&key_of(b));
    Ok(())
}
