//! The managed-Secret index: for every Secret the operator manages, its binding, data hash
//! and resourceVersion, as the metadata-only Secret watch shows them. Bindings use it to
//! skip re-reading an unchanged Secret; the rollout reconciler to learn what a workload's
//! Secrets hold. No Secret data is ever held here.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use secretsync_api::{ANNOTATION_BINDING, ANNOTATION_DATA_HASH};

use crate::runtime::ObjKey;

/// A managed Secret as the watch shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedSecret {
    /// The binding that writes it (`secretsync.dev/binding`).
    pub binding: Option<String>,
    /// HMAC of its data (`secretsync.dev/data-hash`).
    pub hash: Option<String>,
    /// Latest resourceVersion seen.
    pub resource_version: Option<String>,
}

impl ManagedSecret {
    /// Reads the index entry off a Secret's metadata.
    pub fn of(meta: &PartialObjectMeta<Secret>) -> Self {
        ManagedSecret {
            binding: meta.annotations().get(ANNOTATION_BINDING).cloned(),
            hash: meta.annotations().get(ANNOTATION_DATA_HASH).cloned(),
            resource_version: meta.resource_version(),
        }
    }

    /// Whether workloads depending on the Secret could care about the difference.
    pub fn same_for_rollout(&self, other: &ManagedSecret) -> bool {
        self.binding == other.binding && self.hash == other.hash
    }

    /// The key of the binding writing it, in namespace `ns`.
    pub fn binding_key(&self, ns: &str) -> Option<ObjKey> {
        self.binding.as_ref().map(|b| ObjKey::new(ns, b.clone()))
    }
}

/// Managed Secrets by namespace, then name.
#[derive(Default)]
pub struct ManagedSecrets {
    map: Mutex<HashMap<String, BTreeMap<String, ManagedSecret>>>,
}

impl ManagedSecrets {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, BTreeMap<String, ManagedSecret>>> {
        // Every critical section is a few map operations; a poisoned lock holds usable data.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a Secret; returns whether workloads could care (new, or binding/hash moved).
    pub fn upsert(&self, key: &ObjKey, entry: ManagedSecret) -> bool {
        let mut map = self.lock();
        let by_name = map.entry(key.namespace.clone()).or_default();
        !by_name
            .insert(key.name.clone(), entry.clone())
            .is_some_and(|old| old.same_for_rollout(&entry))
    }

    /// Forgets a Secret; returns what was known about it.
    pub fn remove(&self, key: &ObjKey) -> Option<ManagedSecret> {
        let mut map = self.lock();
        let by_name = map.get_mut(&key.namespace)?;
        let removed = by_name.remove(&key.name);
        if by_name.is_empty() {
            map.remove(&key.namespace);
        }
        removed
    }

    /// After a relist: forgets the Secrets of `scope` the list did not return (deleted
    /// while the watch was down) and returns them.
    pub fn prune(
        &self,
        scope: Option<&str>,
        seen: &HashSet<ObjKey>,
    ) -> Vec<(ObjKey, ManagedSecret)> {
        let gone: Vec<ObjKey> = {
            let map = self.lock();
            map.iter()
                .filter(|(ns, _)| scope.is_none_or(|s| s == ns.as_str()))
                .flat_map(|(ns, by_name)| {
                    by_name.keys().map(|n| ObjKey::new(ns.clone(), n.clone()))
                })
                .filter(|k| !seen.contains(k))
                .collect()
        };
        gone.into_iter()
            .filter_map(|k| self.remove(&k).map(|s| (k, s)))
            .collect()
    }

    /// The resourceVersion of a managed Secret as the watch last showed it.
    pub fn resource_version(&self, ns: &str, name: &str) -> Option<String> {
        self.lock().get(ns)?.get(name)?.resource_version.clone()
    }

    /// The binding writing a managed Secret.
    pub fn binding_of(&self, ns: &str, name: &str) -> Option<String> {
        self.lock().get(ns)?.get(name)?.binding.clone()
    }

    /// Managed Secrets of `ns` with a data hash whose binding passes `allowed`: name →
    /// data hash.
    pub fn hashes(
        &self,
        ns: &str,
        allowed: impl Fn(Option<&str>) -> bool,
    ) -> BTreeMap<String, String> {
        let map = self.lock();
        let Some(by_name) = map.get(ns) else {
            return BTreeMap::new();
        };
        by_name
            .iter()
            .filter_map(|(name, s)| {
                let hash = s.hash.clone()?;
                allowed(s.binding.as_deref()).then(|| (name.clone(), hash))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(binding: &str, hash: &str, rv: &str) -> ManagedSecret {
        ManagedSecret {
            binding: Some(binding.into()),
            hash: Some(hash.into()),
            resource_version: Some(rv.into()),
        }
    }

    #[test]
    fn index_reports_what_matters_to_workloads() {
        let idx = ManagedSecrets::default();
        let k = ObjKey::new("ns", "db");
        assert!(idx.upsert(&k, entry("b", "h1", "1")), "new");
        assert!(
            !idx.upsert(&k, entry("b", "h1", "2")),
            "only the resourceVersion moved"
        );
        assert_eq!(idx.resource_version("ns", "db").as_deref(), Some("2"));
        assert!(idx.upsert(&k, entry("b", "h2", "3")), "rotated");
        assert_eq!(idx.binding_of("ns", "db").as_deref(), Some("b"));
        assert_eq!(
            idx.hashes("ns", |_| true).get("db").map(String::as_str),
            Some("h2")
        );
        assert!(idx.hashes("ns", |b| b != Some("b")).is_empty());
    }

    #[test]
    fn secrets_missing_from_a_relist_are_returned_once() {
        let idx = ManagedSecrets::default();
        for n in ["s1", "s2", "s3"] {
            idx.upsert(&ObjKey::new("ns", n), entry(&format!("b-{n}"), "h", "1"));
        }
        idx.upsert(&ObjKey::new("other", "s9"), entry("b9", "h", "1"));
        let seen: HashSet<ObjKey> = [ObjKey::new("ns", "s1"), ObjKey::new("ns", "s3")].into();
        let gone = idx.prune(Some("ns"), &seen);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].1.binding_key("ns"), Some(ObjKey::new("ns", "b-s2")));
        assert!(idx.prune(Some("ns"), &seen).is_empty(), "reported once");
        assert!(
            idx.resource_version("other", "s9").is_some(),
            "other scopes untouched"
        );
    }
}
