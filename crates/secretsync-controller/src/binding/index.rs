//! Feeds the binding store and queue from two watches: SecretBindings (spec changes,
//! force-sync, deletion) and managed Secrets, metadata only (drift: any resourceVersion
//! other than the one the binding last wrote or checked). The managed-Secret watch also
//! keeps [`crate::managed`] and wakes the workloads that may depend on a changed Secret.

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::core::{DeserializeGuard, PartialObjectMeta};
use secretsync_api::{ANNOTATION_FORCE_SYNC, SecretBinding};

use super::plan::never_synced;
use crate::context::Ctx;
use crate::managed::ManagedSecret;
use crate::runtime::{Index, ObjKey, Phase, Priority, key_of};

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

/// The SecretBinding watch's index.
pub struct BindingIndex(pub Arc<Ctx>);

impl Index<DeserializeGuard<SecretBinding>> for BindingIndex {
    fn apply(&self, g: DeserializeGuard<SecretBinding>, _phase: Phase) {
        let ctx = &self.0;
        let key = key_of(&g);
        let b = match g.0 {
            Ok(b) => crate::without_managed_fields(b),
            Err(invalid) => {
                tracing::warn!(binding = %key, error = %invalid.error, "ignoring malformed SecretBinding");
                ctx.bindings.remove(&key);
                return;
            }
        };
        let old = ctx.bindings.get(&key);
        let prio = binding_event_priority(old.as_deref(), &b);
        let restart_flag_changed = old
            .as_deref()
            .is_some_and(|o| o.spec.rollout.restart != b.spec.rollout.restart);
        ctx.bindings.upsert(key.clone(), b);
        if restart_flag_changed {
            ctx.rollout.wake_namespace(&key.namespace);
        }
        if let Some(prio) = prio {
            ctx.binding_queue.add(key, prio);
        }
    }

    fn delete(&self, g: DeserializeGuard<SecretBinding>) {
        let key = key_of(&g);
        self.0.bindings.remove(&key);
        self.0.binding_queue.add(key, Priority::Urgent);
    }

    fn relisted(&self, scope: Option<&str>, seen: &HashSet<ObjKey>, _phase: Phase) {
        for gone in self.0.bindings.prune(scope, seen) {
            self.0.binding_queue.add(gone, Priority::Urgent);
        }
    }
}

/// The managed-Secret watch's index (metadata only: Secret bytes are never cached).
pub struct ManagedSecretIndex(pub Arc<Ctx>);

impl Index<PartialObjectMeta<Secret>> for ManagedSecretIndex {
    fn apply(&self, meta: PartialObjectMeta<Secret>, phase: Phase) {
        let ctx = &self.0;
        let key = key_of(&meta);
        let entry = ManagedSecret::of(&meta);
        let binding = entry.binding_key(&key.namespace);
        if ctx.managed.upsert(&key, entry) {
            ctx.rollout.wake_for_secret(&key.namespace, &key.name);
        }
        let Some(binding) = binding else {
            return;
        };
        match phase {
            // The startup pass reconciles every binding anyway.
            Phase::FirstList => {}
            // A relist after a gap may hide edits: check those bindings.
            Phase::Relist => ctx.binding_queue.add(binding, Priority::Normal),
            Phase::Live => {
                if meta.resource_version() != ctx.verified_secret_rv(&binding) {
                    ctx.binding_queue.add(binding, Priority::Urgent);
                }
            }
        }
    }

    fn delete(&self, meta: PartialObjectMeta<Secret>) {
        let ctx = &self.0;
        let key = key_of(&meta);
        if ctx.managed.remove(&key).is_some() {
            ctx.rollout.wake_for_secret(&key.namespace, &key.name);
        }
        if let Some(binding) = ManagedSecret::of(&meta).binding_key(&key.namespace) {
            ctx.binding_queue.add(binding, Priority::Urgent);
        }
    }

    /// Secrets deleted while the watch was down never get a Delete event: their bindings
    /// restore them.
    fn relisted(&self, scope: Option<&str>, seen: &HashSet<ObjKey>, _phase: Phase) {
        let ctx = &self.0;
        for (key, gone) in ctx.managed.prune(scope, seen) {
            ctx.rollout.wake_for_secret(&key.namespace, &key.name);
            if let Some(binding) = gone.binding_key(&key.namespace) {
                ctx.binding_queue.add(binding, Priority::Urgent);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secretsync_api::SecretBindingSpec;

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
        use crate::binding::plan::{Outcome, next_status};
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

    #[test]
    fn cached_objects_carry_no_managed_fields() {
        let mut b = SecretBinding::new("b", SecretBindingSpec::default());
        b.metadata.managed_fields = Some(vec![Default::default()]);
        b.metadata.generation = Some(3);
        let slim = crate::without_managed_fields(b.clone());
        assert_eq!(slim.metadata.managed_fields, None);
        assert_eq!(fingerprint(&slim), fingerprint(&b));
    }
}
