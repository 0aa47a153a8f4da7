//! A small object cache fed by watchers, one watch stream per namespace (or one for all).
//! kube's reflector store replaces its whole content on each stream's `InitDone`, which
//! breaks when several namespace streams share one store; this one prunes per scope.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, RwLock};

/// Namespace/name of an object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjKey {
    /// A key.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// The key of any object (namespace empty for cluster-scoped ones).
pub fn key_of<K: kube::Resource>(obj: &K) -> ObjKey {
    ObjKey::new(
        obj.meta().namespace.clone().unwrap_or_default(),
        obj.meta().name.clone().unwrap_or_default(),
    )
}

impl fmt::Display for ObjKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            // Cluster-scoped.
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// Objects by key.
pub struct Store<K> {
    map: RwLock<HashMap<ObjKey, Arc<K>>>,
}

impl<K> Default for Store<K> {
    fn default() -> Self {
        Store {
            map: RwLock::new(HashMap::new()),
        }
    }
}

impl<K> Store<K> {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<ObjKey, Arc<K>>> {
        // Single map operations cannot leave it inconsistent; poisoning is harmless.
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<ObjKey, Arc<K>>> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The object, if known.
    pub fn get(&self, key: &ObjKey) -> Option<Arc<K>> {
        self.read().get(key).cloned()
    }

    /// Inserts or replaces; returns the previous object.
    pub fn upsert(&self, key: ObjKey, obj: K) -> Option<Arc<K>> {
        self.write().insert(key, Arc::new(obj))
    }

    /// Removes; returns the removed object.
    pub fn remove(&self, key: &ObjKey) -> Option<Arc<K>> {
        self.write().remove(key)
    }

    /// Removes objects in `scope` (a namespace, or all when `None`) that a relist did not
    /// return; returns their keys.
    pub fn prune(&self, scope: Option<&str>, seen: &HashSet<ObjKey>) -> Vec<ObjKey> {
        let mut map = self.write();
        let gone: Vec<ObjKey> = map
            .keys()
            .filter(|k| scope.is_none_or(|ns| k.namespace == ns) && !seen.contains(*k))
            .cloned()
            .collect();
        for k in &gone {
            map.remove(k);
        }
        gone
    }

    /// Objects matching `pred`.
    pub fn filter(&self, pred: impl Fn(&ObjKey, &K) -> bool) -> Vec<(ObjKey, Arc<K>)> {
        self.read()
            .iter()
            .filter(|(k, v)| pred(k, v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_is_per_scope() {
        let s: Store<u32> = Store::default();
        s.upsert(ObjKey::new("a", "x"), 1);
        s.upsert(ObjKey::new("a", "y"), 2);
        s.upsert(ObjKey::new("b", "x"), 3);
        let seen: HashSet<_> = [ObjKey::new("a", "x")].into();
        assert_eq!(s.prune(Some("a"), &seen), vec![ObjKey::new("a", "y")]);
        assert_eq!(s.len(), 2);
        assert_eq!(s.prune(None, &seen), vec![ObjKey::new("b", "x")]);
        assert_eq!(*s.get(&ObjKey::new("a", "x")).unwrap(), 1);
        assert_eq!(s.filter(|k, _| k.namespace == "a").len(), 1);
        assert_eq!(ObjKey::new("a", "x").to_string(), "a/x");
        assert_eq!(ObjKey::new("", "x").to_string(), "x");
    }
}
