//! The SecretSource reconciler: build (or rebuild) the backend when the source or its
//! credential Secrets changed, validate it against the backend, report `Ready`, and wake
//! the source's bindings when its readiness or build changed.
//!
//! - [`credentials`]: lookups through the API server for the backends;
//! - [`registry`]: the built backends and their shared caches;
//! - [`plan`]: the status, pure.

pub mod credentials;
pub mod plan;
pub mod registry;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::core::DeserializeGuard;
use kube::{Api, Resource, ResourceExt};
use secretsync_api::SecretSource;

use crate::binding::plan::never_synced;
use crate::context::Ctx;
use crate::outcome::{ReconcileResult as R, Reconciled, Requeue};
use crate::runtime::backoff::{backoff, random_unit};
use crate::runtime::{Index, ObjKey, Phase, Priority, key_of};
pub use plan::source_status;
pub use registry::{SourceEntry, SourceRegistry};

/// How often a healthy source re-checks its credential Secrets.
pub const RECHECK: Duration = Duration::from_secs(60);

/// Queues the bindings using source `src` (never-synced ones urgently).
pub fn enqueue_bindings_of(ctx: &Ctx, src: &ObjKey) {
    for (k, b) in ctx.bindings_of_source(&src.namespace, &src.name) {
        let prio = if never_synced(&b) {
            Priority::Urgent
        } else {
            Priority::Normal
        };
        ctx.binding_queue.add(k, prio);
    }
}

/// Reconciles one source.
pub async fn reconcile(ctx: &Ctx, key: &ObjKey) -> Reconciled {
    let Some(src) = ctx.sources.get(key) else {
        if ctx.registry.remove(key) {
            enqueue_bindings_of(ctx, key);
        }
        return Reconciled::done(R::Deleted);
    };
    let before = ctx.registry.get_existing_readiness(key).await;
    let (entry, rebuilt) = ctx.registry.refresh(&src).await;
    if let Ok(cache) = &entry.cache
        && !matches!(entry.readiness(), Some(Ok(())))
    {
        let res = cache.validate().await;
        entry.set_validation(res);
    }
    let readiness = entry.readiness();
    let ok = matches!(readiness, Some(Ok(())));
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let checked = match &readiness {
        Some(Err(e)) => Err(e),
        _ => Ok(()),
    };
    let status = source_status(
        src.status.as_ref(),
        src.metadata.generation,
        entry.kind,
        checked,
        &now,
    );
    let written = if src.status.as_ref() != Some(&status) {
        write_status(ctx, key, &status).await
    } else {
        Ok(())
    };
    if rebuilt || before != Some(ok) {
        enqueue_bindings_of(ctx, key);
    }
    let delay = if ok {
        ctx.registry.reset_failures(key);
        RECHECK
    } else {
        let n = ctx.registry.bump_failures(key);
        backoff(n.saturating_sub(1), random_unit())
    };
    match written {
        Err(e) => {
            ctx.api_failure("writing SecretSource status failed", &key.to_string(), &e);
            Reconciled::api_error(delay)
        }
        Ok(()) => Reconciled {
            result: if ok { R::Success } else { R::Error },
            requeue: Requeue::After(delay),
        },
    }
}

async fn write_status(
    ctx: &Ctx,
    key: &ObjKey,
    status: &secretsync_api::SecretSourceStatus,
) -> Result<(), kube::Error> {
    let api: Api<SecretSource> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let body = serde_json::json!({
        "apiVersion": SecretSource::api_version(&()),
        "kind": SecretSource::kind(&()),
        "status": status,
    });
    let pp = kube::api::PatchParams::apply(secretsync_api::FIELD_MANAGER).force();
    api.patch_status(&key.name, &pp, &kube::api::Patch::Apply(&body))
        .await
        .map(|_| ())
}

/// Feeds the source store from the SecretSource watch; a new or changed spec (or a
/// malformed object, which is dropped) queues the source urgently.
pub struct SourceIndex(pub Arc<Ctx>);

impl Index<DeserializeGuard<SecretSource>> for SourceIndex {
    fn apply(&self, g: DeserializeGuard<SecretSource>, _phase: Phase) {
        let ctx = &self.0;
        let key = key_of(&g);
        match g.0 {
            Ok(src) => {
                let src = crate::without_managed_fields(src);
                let uid = src.uid();
                let generation = src.metadata.generation;
                let changed = ctx
                    .sources
                    .upsert(key.clone(), src)
                    .is_none_or(|old| old.uid() != uid || old.metadata.generation != generation);
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

    fn delete(&self, g: DeserializeGuard<SecretSource>) {
        let key = key_of(&g);
        self.0.sources.remove(&key);
        self.0.source_queue.add(key, Priority::Urgent);
    }

    fn relisted(&self, scope: Option<&str>, seen: &HashSet<ObjKey>, _phase: Phase) {
        for gone in self.0.sources.prune(scope, seen) {
            self.0.source_queue.add(gone, Priority::Urgent);
        }
    }
}
