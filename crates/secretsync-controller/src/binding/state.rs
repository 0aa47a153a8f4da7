//! What this process remembers about each binding between reconciles, and the running
//! Ready counts behind the `secretsync_bindings{ready}` gauge.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use secretsync_api::SecretBindingStatus;
use secretsync_backends::template::TemplatedMetadata;

use super::plan::ReadMemo;
use crate::runtime::ObjKey;

/// What this process remembers about a binding between reconciles. Each reconcile starts
/// from a copy, so the parts that rarely change are shared (`Arc`), not copied.
#[derive(Debug, Default, Clone)]
pub struct BindingState {
    /// Last backend read.
    pub memo: Option<ReadMemo>,
    /// The labels and annotations the template rendered at the last read: what the Secret
    /// must carry until the next read (set together with `memo`).
    pub metadata: Arc<TemplatedMetadata>,
    /// Last force-sync annotation value acted on.
    pub force_seen: Option<String>,
    /// Consecutive failures (backoff exponent).
    pub failures: u32,
    /// The status we last wrote (fresher than the watch cache right after a write).
    pub status: Option<Arc<SecretBindingStatus>>,
    /// Ready as last computed.
    pub ready: Option<bool>,
    /// The Secret as this process last wrote or checked it; a watch event showing that
    /// resourceVersion is our own write (or one already checked), not drift.
    pub verified: Option<Arc<Verified>>,
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
    /// The templated labels and annotations it carries (they can change with the values
    /// while the data hash stays).
    pub metadata: TemplatedMetadata,
}

impl Verified {
    /// What a Secret at `secret_rv` is known to hold, if the API server gave a version.
    pub fn at(
        secret_rv: Option<String>,
        generation: Option<i64>,
        hash: &str,
        metadata: &TemplatedMetadata,
    ) -> Option<Arc<Self>> {
        secret_rv.map(|secret_rv| {
            Arc::new(Verified {
                secret_rv,
                generation,
                hash: hash.to_string(),
                metadata: metadata.clone(),
            })
        })
    }

    /// The record, if the Secret is still as verified: same binding generation, the watch
    /// shows the same resourceVersion, and no forced sync asks for a full check.
    pub fn still_valid(
        this: Option<&Arc<Verified>>,
        generation: Option<i64>,
        watched_rv: Option<&str>,
        force: bool,
    ) -> Option<Arc<Verified>> {
        let v = this?;
        (!force && v.generation == generation && watched_rv == Some(v.secret_rv.as_str()))
            .then(|| v.clone())
    }

    /// Whether the Secret as verified holds data `hash` with `metadata`.
    pub fn holds(&self, hash: &str, metadata: &TemplatedMetadata) -> bool {
        self.hash == hash && self.metadata == *metadata
    }
}

/// Every binding's memory, plus a running count of Ready true/false so the gauge never
/// needs a scan over every binding.
#[derive(Default)]
pub struct BindingStates {
    inner: Mutex<States>,
}

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
}

impl BindingStates {
    fn lock(&self) -> std::sync::MutexGuard<'_, States> {
        // Entries are replaced whole; a poisoned lock holds consistent data.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of a binding's memory (empty if none).
    pub fn get(&self, key: &ObjKey) -> BindingState {
        self.lock().map.get(key).cloned().unwrap_or_default()
    }

    /// Stores a binding's memory; returns the (ready, not ready) counts after it.
    pub fn set(&self, key: &ObjKey, state: BindingState) -> (usize, usize) {
        let mut s = self.lock();
        let new = state.ready;
        if let Some(old) = s.map.insert(key.clone(), state) {
            s.count(old.ready, -1);
        }
        s.count(new, 1);
        (s.ready, s.not_ready)
    }

    /// Forgets a binding; returns the (ready, not ready) counts after it.
    pub fn remove(&self, key: &ObjKey) -> (usize, usize) {
        let mut s = self.lock();
        if let Some(old) = s.map.remove(key) {
            s.count(old.ready, -1);
        }
        (s.ready, s.not_ready)
    }

    /// The (ready, not ready) counts.
    pub fn counts(&self) -> (usize, usize) {
        let s = self.lock();
        (s.ready, s.not_ready)
    }

    /// resourceVersion of a binding's Secret as this process last wrote or checked it.
    pub fn verified_secret_rv(&self, key: &ObjKey) -> Option<String> {
        self.lock()
            .map
            .get(key)
            .and_then(|s| s.verified.as_ref().map(|v| v.secret_rv.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v() -> Arc<Verified> {
        Arc::new(Verified {
            secret_rv: "41".into(),
            generation: Some(2),
            hash: "h1".into(),
            metadata: TemplatedMetadata::default(),
        })
    }

    #[test]
    fn verified_secret_is_trusted_only_while_nothing_moved() {
        let v = v();
        assert_eq!(
            Verified::still_valid(Some(&v), Some(2), Some("41"), false).as_ref(),
            Some(&v)
        );
        let none = TemplatedMetadata::default();
        assert!(v.holds("h1", &none) && !v.holds("h2", &none));
        // Same data, other rendered labels: not what the Secret carries.
        let relabelled = TemplatedMetadata {
            labels: [("version".to_string(), "2".to_string())].into(),
            ..Default::default()
        };
        assert!(!v.holds("h1", &relabelled));
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

    #[test]
    fn ready_counts_follow_replacements() {
        let states = BindingStates::default();
        let k = ObjKey::new("ns", "b");
        let ready = |r| BindingState {
            ready: r,
            ..Default::default()
        };
        assert_eq!(states.set(&k, ready(Some(false))), (0, 1));
        assert_eq!(states.set(&k, ready(Some(true))), (1, 0));
        assert_eq!(states.set(&ObjKey::new("ns", "c"), ready(None)), (1, 0));
        assert_eq!(states.remove(&k), (0, 0));
    }
}
