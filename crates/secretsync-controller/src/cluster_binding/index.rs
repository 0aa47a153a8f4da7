//! The watches the cluster kinds need besides their sources': ClusterSecretBindings, and
//! Namespaces (metadata only: labels decide admission and selection).

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use kube::core::{DeserializeGuard, PartialObjectMeta};
use secretsync_api::ClusterSecretBinding;

use crate::context::Ctx;
use crate::runtime::{Index, ObjKey, Phase, Priority, key_of};

/// Queues every ClusterSecretBinding (a namespace appeared, went or was relabelled).
pub fn enqueue_all(ctx: &Ctx) {
    for (k, _) in ctx.cluster_bindings.filter(|_, _| true) {
        ctx.cluster_binding_queue.add(k, Priority::Normal);
    }
}

/// The ClusterSecretBinding watch's index: a new generation (or deletion) queues it.
pub struct ClusterBindingIndex(pub Arc<Ctx>);

impl Index<DeserializeGuard<ClusterSecretBinding>> for ClusterBindingIndex {
    fn apply(&self, g: DeserializeGuard<ClusterSecretBinding>, _phase: Phase) {
        let ctx = &self.0;
        let key = key_of(&g);
        match g.0 {
            Ok(csb) => {
                let csb = crate::without_managed_fields(csb);
                let generation = csb.metadata.generation;
                let deleting = csb.metadata.deletion_timestamp.is_some();
                let changed = ctx
                    .cluster_bindings
                    .upsert(key.clone(), csb)
                    .is_none_or(|old| {
                        old.metadata.generation != generation
                            || old.metadata.deletion_timestamp.is_some() != deleting
                    });
                if changed {
                    ctx.cluster_binding_queue.add(key, Priority::Urgent);
                }
            }
            Err(invalid) => {
                tracing::warn!(cluster_binding = %key, error = %invalid.error, "ignoring malformed ClusterSecretBinding");
            }
        }
    }

    fn delete(&self, g: DeserializeGuard<ClusterSecretBinding>) {
        let key = key_of(&g);
        self.0.cluster_bindings.remove(&key);
        self.0.cluster_binding_queue.add(key, Priority::Urgent);
    }

    fn relisted(&self, scope: Option<&str>, seen: &HashSet<ObjKey>, _phase: Phase) {
        for gone in self.0.cluster_bindings.prune(scope, seen) {
            self.0.cluster_binding_queue.add(gone, Priority::Urgent);
        }
    }
}

/// The Namespace watch's index: keeps each namespace's labels; a change re-checks the
/// admission of the bindings there that use cluster sources, and every
/// ClusterSecretBinding's selection.
pub struct NamespaceIndex(pub Arc<Ctx>);

impl Index<PartialObjectMeta<Namespace>> for NamespaceIndex {
    fn apply(&self, meta: PartialObjectMeta<Namespace>, phase: Phase) {
        let ctx = &self.0;
        let key = key_of(&meta);
        let labels = meta.metadata.labels.unwrap_or_default();
        let old = ctx.namespaces.upsert(key.clone(), labels.clone());
        if phase == Phase::FirstList || old.as_deref() == Some(&labels) {
            return;
        }
        for b in ctx.cluster_source_bindings_in(&key.name) {
            ctx.binding_queue.add(b, Priority::Urgent);
        }
        enqueue_all(ctx);
    }

    fn delete(&self, meta: PartialObjectMeta<Namespace>) {
        let ctx = &self.0;
        ctx.namespaces.remove(&key_of(&meta));
        enqueue_all(ctx);
    }

    fn relisted(&self, scope: Option<&str>, seen: &HashSet<ObjKey>, phase: Phase) {
        let ctx = &self.0;
        let gone = ctx.namespaces.prune(scope, seen);
        if phase != Phase::FirstList || !gone.is_empty() {
            enqueue_all(ctx);
        }
    }
}
