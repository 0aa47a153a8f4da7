//! Shared state of one leadership term: stores, queues, built sources, per-binding memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::Client;
use secretsync_api::{SecretBinding, SecretBindingStatus, SecretSource};
use secretsync_backends::hash::HmacKey;

use crate::Config;
use crate::events::Events;
use crate::metrics::Metrics;
use crate::queue::Queue;
use crate::source::SourceRegistry;
use crate::store::{ObjKey, Store};
use crate::sync::ReadMemo;

/// What this process remembers about a binding between reconciles.
#[derive(Debug, Default, Clone)]
pub struct BindingState {
    /// Last backend read.
    pub memo: Option<ReadMemo>,
    /// Last force-sync annotation value acted on.
    pub force_seen: Option<String>,
    /// Consecutive failures (backoff exponent).
    pub failures: u32,
    /// The status we last wrote (fresher than the watch cache right after a write).
    pub status: Option<SecretBindingStatus>,
    /// Ready as last computed.
    pub ready: Option<bool>,
    /// The Secret as this process last wrote or checked it; a watch event showing that
    /// resourceVersion is our own write (or one already checked), not drift.
    pub verified: Option<Verified>,
}

/// A target Secret known to hold what a binding wants: while the Secret watch still shows
/// this resourceVersion and the binding's generation is the same, a refresh need not GET
/// the Secret again. Any other change to the Secret moves its resourceVersion, so the
/// watch (which also queues the binding) makes the next reconcile read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// resourceVersion of the Secret when it was written or checked.
    pub secret_rv: String,
    /// Binding generation it was checked against (policy, type, labels, owner).
    pub generation: Option<i64>,
    /// The data hash it carries.
    pub hash: String,
}

impl Verified {
    /// What a Secret at `secret_rv` is known to hold, if the API server gave a version.
    pub fn at(secret_rv: Option<String>, generation: Option<i64>, hash: &str) -> Option<Self> {
        secret_rv.map(|secret_rv| Verified {
            secret_rv,
            generation,
            hash: hash.to_string(),
        })
    }

    /// The data hash, if the Secret is still as verified: same binding generation, the
    /// watch shows the same resourceVersion, and no forced sync asks for a full check.
    pub fn still_valid(
        this: Option<&Verified>,
        generation: Option<i64>,
        watched_rv: Option<&str>,
        force: bool,
    ) -> Option<String> {
        let v = this?;
        (!force && v.generation == generation && watched_rv == Some(v.secret_rv.as_str()))
            .then(|| v.hash.clone())
    }
}

/// Everything reconcilers share.
pub struct Ctx {
    /// API client.
    pub client: Client,
    /// Operator configuration.
    pub config: Arc<Config>,
    /// HMAC key for data hashes.
    pub hmac: HmacKey,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Event publisher.
    pub events: Events,
    /// Watched SecretSources.
    pub sources: Store<SecretSource>,
    /// Watched SecretBindings.
    pub bindings: Store<SecretBinding>,
    /// Built backends.
    pub registry: SourceRegistry,
    /// Binding work.
    pub binding_queue: Queue<ObjKey>,
    /// Source work.
    pub source_queue: Queue<ObjKey>,
    /// Rollout reconciler state (managed-Secret index, opted-in workloads, its queue).
    pub rollout: crate::rollout::Rollout,
    states: Mutex<States>,
}

/// Binding memories plus a running count of Ready true/false, so the gauge never needs a
/// scan over every binding.
#[derive(Default)]
struct States {
    map: HashMap<ObjKey, BindingState>,
    ready: usize,
    not_ready: usize,
}

impl States {
    fn count(&mut self, ready: Option<bool>, delta: isize) {
        let slot = match ready {
            Some(true) => &mut self.ready,
            Some(false) => &mut self.not_ready,
            None => return,
        };
        *slot = slot.saturating_add_signed(delta);
    }

    fn insert(&mut self, key: ObjKey, state: BindingState) {
        let new = state.ready;
        if let Some(old) = self.map.insert(key, state) {
            self.count(old.ready, -1);
        }
        self.count(new, 1);
    }

    fn remove(&mut self, key: &ObjKey) {
        if let Some(old) = self.map.remove(key) {
            self.count(old.ready, -1);
        }
    }
}

impl Ctx {
    /// A fresh context.
    pub fn new(
        client: Client,
        config: Arc<Config>,
        hmac: HmacKey,
        metrics: Arc<Metrics>,
        registry: SourceRegistry,
    ) -> Self {
        Ctx {
            events: Events::new(client.clone(), &config.identity),
            client,
            config,
            hmac,
            metrics,
            sources: Store::default(),
            bindings: Store::default(),
            registry,
            binding_queue: Queue::default(),
            source_queue: Queue::default(),
            rollout: crate::rollout::Rollout::default(),
            states: Mutex::new(States::default()),
        }
    }

    fn lock_states(&self) -> std::sync::MutexGuard<'_, States> {
        // Entries are replaced whole; a poisoned lock holds consistent data.
        self.states.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of a binding's memory.
    pub fn state(&self, key: &ObjKey) -> BindingState {
        self.lock_states().map.get(key).cloned().unwrap_or_default()
    }

    /// Stores a binding's memory and refreshes the `bindings{ready}` gauge.
    pub fn set_state(&self, key: &ObjKey, state: BindingState) {
        let mut states = self.lock_states();
        states.insert(key.clone(), state);
        self.update_gauge(&states);
    }

    /// Forgets a deleted binding.
    pub fn forget(&self, key: &ObjKey) {
        let mut states = self.lock_states();
        states.remove(key);
        self.update_gauge(&states);
        drop(states);
        self.events.forget(key);
        self.binding_queue.forget(key);
    }

    /// resourceVersion of a binding's Secret as this process last wrote or checked it.
    pub fn verified_secret_rv(&self, key: &ObjKey) -> Option<String> {
        self.lock_states()
            .map
            .get(key)
            .and_then(|s| s.verified.as_ref().map(|v| v.secret_rv.clone()))
    }

    fn update_gauge(&self, states: &States) {
        let unknown = self
            .bindings
            .len()
            .saturating_sub(states.ready + states.not_ready);
        self.metrics
            .set_bindings(states.ready, states.not_ready, unknown);
    }

    /// Refreshes the gauge (e.g. after bindings were added to the store).
    pub fn refresh_gauge(&self) {
        let states = self.lock_states();
        self.update_gauge(&states);
    }

    /// Keys of the bindings in `namespace` that use source `name`.
    pub fn bindings_of_source(
        &self,
        namespace: &str,
        name: &str,
    ) -> Vec<(ObjKey, Arc<SecretBinding>)> {
        self.bindings
            .filter(|k, b| k.namespace == namespace && b.spec.source_ref.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::Verified;

    fn v() -> Verified {
        Verified {
            secret_rv: "41".into(),
            generation: Some(2),
            hash: "h1".into(),
        }
    }

    #[test]
    fn verified_secret_is_trusted_only_while_nothing_moved() {
        let v = v();
        assert_eq!(
            Verified::still_valid(Some(&v), Some(2), Some("41"), false).as_deref(),
            Some("h1")
        );
        // Never checked, or the watch has not seen the Secret (deleted, unlabelled, relisted).
        assert_eq!(
            Verified::still_valid(None, Some(2), Some("41"), false),
            None
        );
        assert_eq!(Verified::still_valid(Some(&v), Some(2), None, false), None);
        // Someone (or something) changed the Secret.
        assert_eq!(
            Verified::still_valid(Some(&v), Some(2), Some("57"), false),
            None
        );
        // The binding's spec changed: policy, type, labels or owner may now differ.
        assert_eq!(
            Verified::still_valid(Some(&v), Some(3), Some("41"), false),
            None
        );
        // A forced sync always looks at the Secret.
        assert_eq!(
            Verified::still_valid(Some(&v), Some(2), Some("41"), true),
            None
        );
    }
}
