//! Restart triggers beyond managed Secrets: Secrets and ConfigMaps labelled
//! `secretsync.dev/watch: "true"`. Only labelled objects are watched, so unrelated Secrets
//! and ConfigMaps cost nothing. Of each, only an HMAC of its data is kept; the data itself
//! is dropped as soon as it is hashed.
//!
//! The watch carries the objects' data rather than metadata only: the hashes must be
//! complete when the watch's first list is, because the rollout reconciler starts then
//! and a workload whose revision was computed without one of its triggers would look
//! rotated after every operator restart. A GET per object after each list could not
//! promise that.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt;
use secretsync_backends::SecretValue;
use secretsync_backends::hash::HmacKey;

use super::plan::configmap_trigger;
use crate::context::Ctx;
use crate::runtime::{Index, ObjKey, Phase};

/// Label that makes a Secret or ConfigMap a restart trigger.
pub const LABEL_WATCH: &str = "secretsync.dev/watch";

/// The label selector of the trigger watches.
pub fn watch_selector() -> String {
    format!("{LABEL_WATCH}=true")
}

/// One trigger as remembered: where its hash came from and the hash.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Trigger {
    resource_version: Option<String>,
    hash: String,
}

/// Hashes of the labelled Secrets and ConfigMaps, by namespace and trigger name (a
/// Secret's name, `configmap/NAME` for a ConfigMap).
#[derive(Default)]
pub struct Triggers {
    by_key: Mutex<HashMap<ObjKey, Trigger>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Triggers {
    /// Stores a trigger's hash; returns whether it is new or changed.
    fn upsert(&self, key: ObjKey, resource_version: Option<String>, hash: String) -> bool {
        let t = Trigger {
            resource_version,
            hash,
        };
        let mut map = lock(&self.by_key);
        match map.get(&key) {
            Some(old) if old.hash == t.hash => {
                map.insert(key, t);
                false
            }
            _ => {
                map.insert(key, t);
                true
            }
        }
    }

    fn resource_version(&self, key: &ObjKey) -> Option<String> {
        lock(&self.by_key)
            .get(key)
            .and_then(|t| t.resource_version.clone())
    }

    fn remove(&self, key: &ObjKey) -> bool {
        lock(&self.by_key).remove(key).is_some()
    }

    /// Trigger name → hash for namespace `ns`.
    pub fn hashes(&self, ns: &str) -> BTreeMap<String, String> {
        lock(&self.by_key)
            .iter()
            .filter(|(k, _)| k.namespace == ns)
            .map(|(k, t)| (k.name.clone(), t.hash.clone()))
            .collect()
    }

    /// Forgets the triggers of `scope` whose names `is_kind` accepts and a relist did not
    /// return; returns them.
    fn prune(
        &self,
        scope: Option<&str>,
        seen: &HashSet<ObjKey>,
        is_kind: impl Fn(&str) -> bool,
    ) -> Vec<ObjKey> {
        let mut map = lock(&self.by_key);
        let gone: Vec<ObjKey> = map
            .keys()
            .filter(|k| {
                is_kind(&k.name) && scope.is_none_or(|s| s == k.namespace) && !seen.contains(k)
            })
            .cloned()
            .collect();
        for k in &gone {
            map.remove(k);
        }
        gone
    }

    /// Number of triggers known.
    pub fn len(&self) -> usize {
        lock(&self.by_key).len()
    }

    /// Whether none is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The HMAC of a ConfigMap's `data` and `binaryData` (their keys never overlap).
pub fn configmap_hash(key: &HmacKey, cm: &ConfigMap) -> String {
    let mut data: BTreeMap<String, SecretValue> = BTreeMap::new();
    for (k, v) in cm.data.iter().flatten() {
        data.insert(k.clone(), SecretValue::from(v.as_str()));
    }
    for (k, v) in cm.binary_data.iter().flatten() {
        data.insert(k.clone(), SecretValue::new(v.0.clone()));
    }
    key.data_hash(&data)
}

/// The HMAC of a Secret's `data`.
pub fn secret_hash(key: &HmacKey, secret: &Secret) -> String {
    let data: BTreeMap<String, SecretValue> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), SecretValue::new(v.0.clone())))
        .collect();
    key.data_hash(&data)
}

/// What a trigger kind needs: its trigger name and hash.
pub trait TriggerKind: kube::Resource<DynamicType = ()> + Send + Sync {
    /// The trigger name of an object named `name`.
    fn trigger_name(name: &str) -> String;
    /// Whether a trigger name is of this kind.
    fn is_kind(trigger: &str) -> bool;
    /// The HMAC of the object's data.
    fn hash(&self, key: &HmacKey) -> String;
}

impl TriggerKind for Secret {
    fn trigger_name(name: &str) -> String {
        name.to_string()
    }
    fn is_kind(trigger: &str) -> bool {
        !trigger.starts_with(super::plan::CONFIGMAP_PREFIX)
    }
    fn hash(&self, key: &HmacKey) -> String {
        secret_hash(key, self)
    }
}

impl TriggerKind for ConfigMap {
    fn trigger_name(name: &str) -> String {
        configmap_trigger(name)
    }
    fn is_kind(trigger: &str) -> bool {
        trigger.starts_with(super::plan::CONFIGMAP_PREFIX)
    }
    fn hash(&self, key: &HmacKey) -> String {
        configmap_hash(key, self)
    }
}

/// The watch index of labelled objects of one kind.
pub struct TriggerIndex<K> {
    ctx: Arc<Ctx>,
    _kind: std::marker::PhantomData<fn() -> K>,
}

impl<K> TriggerIndex<K> {
    /// An index feeding `ctx.rollout.triggers`.
    pub fn new(ctx: Arc<Ctx>) -> Self {
        TriggerIndex {
            ctx,
            _kind: std::marker::PhantomData,
        }
    }
}

impl<K: TriggerKind> Index<K> for TriggerIndex<K> {
    fn apply(&self, obj: K, _phase: Phase) {
        let key = ObjKey::new(
            obj.namespace().unwrap_or_default(),
            K::trigger_name(&obj.name_any()),
        );
        let rv = obj.resource_version();
        // A relist repeats unchanged objects: hash only what changed.
        if rv.is_some() && self.ctx.rollout.triggers.resource_version(&key) == rv {
            return;
        }
        let hash = obj.hash(&self.ctx.hmac);
        drop(obj);
        if self.ctx.rollout.triggers.upsert(key.clone(), rv, hash) {
            self.ctx.rollout.wake_for_secret(&key.namespace, &key.name);
        }
    }

    fn delete(&self, obj: K) {
        let key = ObjKey::new(
            obj.namespace().unwrap_or_default(),
            K::trigger_name(&obj.name_any()),
        );
        if self.ctx.rollout.triggers.remove(&key) {
            self.ctx.rollout.wake_for_secret(&key.namespace, &key.name);
        }
    }

    fn relisted(&self, scope: Option<&str>, seen: &HashSet<ObjKey>, _phase: Phase) {
        // `seen` holds object names; triggers are keyed by trigger name.
        let seen: HashSet<ObjKey> = seen
            .iter()
            .map(|k| ObjKey::new(k.namespace.clone(), K::trigger_name(&k.name)))
            .collect();
        for key in self.ctx.rollout.triggers.prune(scope, &seen, K::is_kind) {
            self.ctx.rollout.wake_for_secret(&key.namespace, &key.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_map_hashes_cover_text_and_binary_data() {
        let key = HmacKey::new(vec![1; 32]);
        let cm = |data: serde_json::Value| -> ConfigMap { serde_json::from_value(data).unwrap() };
        let a = configmap_hash(&key, &cm(serde_json::json!({"data": {"k": "v"}})));
        let b = configmap_hash(&key, &cm(serde_json::json!({"data": {"k": "w"}})));
        let c = configmap_hash(
            &key,
            &cm(serde_json::json!({"data": {"k": "v"}, "binaryData": {"b": "AAE="}})),
        );
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            a,
            configmap_hash(&key, &cm(serde_json::json!({"data": {"k": "v"}})))
        );
        assert_eq!(a.len(), 64, "hex HMAC-SHA256");
    }

    #[test]
    fn triggers_report_changes_of_hash_only() {
        let t = Triggers::default();
        let k = ObjKey::new("shop", "configmap/app");
        assert!(t.upsert(k.clone(), Some("1".into()), "h1".into()));
        assert!(
            !t.upsert(k.clone(), Some("2".into()), "h1".into()),
            "same data"
        );
        assert!(t.upsert(k.clone(), Some("3".into()), "h2".into()));
        assert_eq!(t.resource_version(&k).as_deref(), Some("3"));
        t.upsert(ObjKey::new("shop", "tls"), None, "h3".into());
        let h = t.hashes("shop");
        assert_eq!(h.len(), 2);
        let gone = t.prune(Some("shop"), &HashSet::new(), ConfigMap::is_kind);
        assert_eq!(gone, [k]);
        assert_eq!(t.hashes("shop").keys().collect::<Vec<_>>(), ["tls"]);
    }
}
