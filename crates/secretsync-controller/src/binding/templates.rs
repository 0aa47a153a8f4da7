//! `target.template.templateFrom`: the ConfigMaps bindings load templates from.
//!
//! Only ConfigMaps some binding references are held ([`crate::runtime::held`]): each is
//! read with one GET and then served from memory while a metadata-only watch of its
//! namespace shows it unchanged. A namespace is watched only while a binding in it
//! references a ConfigMap, so unrelated ConfigMaps — in that namespace or any other — are
//! never cached, however many there are. [`Uses`] (pure) records which binding references
//! which ConfigMap: it decides when a ConfigMap starts and stops being held, and which
//! bindings a change wakes.
//!
//! A change does not ask for a backend read: the woken binding loads its templates again,
//! sees their digest differ from the one it last rendered, and renders again from the
//! values its source's cache holds (`plan::data_due`).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use secretsync_backends::template_from::ConfigMapData;
use tokio::sync::mpsc;

use crate::runtime::ObjKey;
use crate::runtime::held::{Change, Held, HeldKind};

impl HeldKind for ConfigMap {
    type Content = ConfigMapData;

    fn take_content(obj: &mut Self) -> ConfigMapData {
        obj.data.take().unwrap_or_default()
    }
}

/// Which bindings reference which ConfigMaps (both keyed by namespace and name).
#[derive(Debug, Default)]
pub struct Uses {
    by_binding: HashMap<ObjKey, BTreeSet<ObjKey>>,
    by_config_map: HashMap<ObjKey, BTreeSet<ObjKey>>,
}

/// What a change of [`Uses`] means for the held ConfigMaps.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UseChange {
    /// ConfigMaps that got their first user: start holding them.
    pub hold: Vec<ObjKey>,
    /// ConfigMaps that lost their last user: stop holding them.
    pub release: Vec<ObjKey>,
}

impl Uses {
    /// Records that `binding` references exactly `config_maps` now.
    pub fn set(&mut self, binding: &ObjKey, config_maps: BTreeSet<ObjKey>) -> UseChange {
        let before = match config_maps.is_empty() {
            true => self.by_binding.remove(binding).unwrap_or_default(),
            false => self
                .by_binding
                .insert(binding.clone(), config_maps.clone())
                .unwrap_or_default(),
        };
        let mut change = UseChange::default();
        for cm in before.difference(&config_maps) {
            if let Some(users) = self.by_config_map.get_mut(cm) {
                users.remove(binding);
                if users.is_empty() {
                    self.by_config_map.remove(cm);
                    change.release.push(cm.clone());
                }
            }
        }
        for cm in config_maps.difference(&before) {
            let users = self.by_config_map.entry(cm.clone()).or_default();
            if users.is_empty() {
                change.hold.push(cm.clone());
            }
            users.insert(binding.clone());
        }
        change
    }

    /// Forgets a deleted binding.
    pub fn forget(&mut self, binding: &ObjKey) -> UseChange {
        self.set(binding, BTreeSet::new())
    }

    /// The bindings referencing ConfigMap `config_map`, sorted.
    pub fn users(&self, config_map: &ObjKey) -> Vec<ObjKey> {
        self.by_config_map
            .get(config_map)
            .map(|u| u.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// How many ConfigMaps are referenced.
    pub fn config_maps(&self) -> usize {
        self.by_config_map.len()
    }
}

/// The templateFrom ConfigMaps of one term (see the module docs).
pub struct TemplateConfigMaps {
    held: Held<ConfigMap>,
    uses: Mutex<Uses>,
    changes: Mutex<Option<mpsc::UnboundedReceiver<Change>>>,
}

impl TemplateConfigMaps {
    /// ConfigMaps read through `client`.
    pub fn new(client: Client) -> Self {
        let (held, rx) = Held::new(client, "templateFrom");
        TemplateConfigMaps {
            held,
            uses: Mutex::default(),
            changes: Mutex::new(Some(rx)),
        }
    }

    fn uses(&self) -> MutexGuard<'_, Uses> {
        // Updated in single steps; a poisoned lock holds consistent maps.
        self.uses.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a change of the uses to the held ConfigMaps. Called with the uses locked, so
    /// a release never overtakes the hold of a binding that has just started using one.
    fn apply(&self, change: UseChange) {
        for cm in change.hold {
            self.held.hold(&cm.namespace, &cm.name);
        }
        for cm in change.release {
            self.held.release(&cm.namespace, &cm.name);
        }
    }

    /// Records that binding `binding` references ConfigMaps `names` of its namespace
    /// `namespace` (before reading them, so no change between the read and the record is
    /// missed).
    pub fn track(&self, binding: &ObjKey, namespace: &str, names: &BTreeSet<String>) {
        let wanted: BTreeSet<ObjKey> = names
            .iter()
            .map(|n| ObjKey::new(namespace, n.as_str()))
            .collect();
        let mut uses = self.uses();
        let change = uses.set(binding, wanted);
        self.apply(change);
    }

    /// Forgets a deleted binding; ConfigMaps nobody references any more are released.
    pub fn forget(&self, binding: &ObjKey) {
        let mut uses = self.uses();
        let change = uses.forget(binding);
        self.apply(change);
    }

    /// ConfigMap `namespace/name`'s data (`None`: it does not exist).
    pub async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<ConfigMapData>>, kube::Error> {
        self.held.get(namespace, name).await
    }

    /// The bindings a change of a held ConfigMap concerns.
    pub fn users(&self, change: &Change) -> Vec<ObjKey> {
        self.uses().users(&ObjKey::new(
            change.namespace.as_str(),
            change.name.as_str(),
        ))
    }

    /// Changes of held ConfigMaps (taken once, by the term).
    pub fn take_changes(&self) -> Option<mpsc::UnboundedReceiver<Change>> {
        self.changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// How many ConfigMaps are held.
    pub fn held_len(&self) -> usize {
        self.held.held_len()
    }

    /// Namespaces whose ConfigMaps are watched now.
    pub fn watched_namespaces(&self) -> Vec<String> {
        self.held.watched_namespaces()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(ns: &str, name: &str) -> ObjKey {
        ObjKey::new(ns, name)
    }

    fn set(keys: &[&ObjKey]) -> BTreeSet<ObjKey> {
        keys.iter().map(|k| (*k).clone()).collect()
    }

    #[test]
    fn a_config_map_is_held_from_its_first_user_to_its_last() {
        let mut u = Uses::default();
        let (a, b) = (k("shop", "a"), k("shop", "b"));
        let tpl = k("shop", "tpl");
        let c = u.set(&a, set(&[&tpl]));
        assert_eq!(c.hold, vec![tpl.clone()]);
        assert!(c.release.is_empty());
        // A second user changes nothing held.
        assert_eq!(u.set(&b, set(&[&tpl])), UseChange::default());
        assert_eq!(u.users(&tpl), vec![a.clone(), b.clone()]);
        // The same uses again: nothing.
        assert_eq!(u.set(&a, set(&[&tpl])), UseChange::default());
        assert_eq!(u.forget(&a), UseChange::default());
        assert_eq!(u.users(&tpl), vec![b.clone()]);
        let c = u.forget(&b);
        assert_eq!(c.release, vec![tpl.clone()]);
        assert!(u.users(&tpl).is_empty());
        assert_eq!(u.config_maps(), 0);
        assert!(
            u.by_binding.is_empty(),
            "nothing is kept for bindings without uses"
        );
    }

    #[test]
    fn switching_config_maps_releases_the_old_one() {
        let mut u = Uses::default();
        let a = k("shop", "a");
        u.set(&a, set(&[&k("shop", "v1")]));
        let c = u.set(&a, set(&[&k("shop", "v2")]));
        assert_eq!(c.hold, [k("shop", "v2")]);
        assert_eq!(c.release, [k("shop", "v1")]);
        // Dropping templateFrom altogether.
        let c = u.set(&a, BTreeSet::new());
        assert_eq!(c.release, [k("shop", "v2")]);
        assert_eq!(u.config_maps(), 0);
    }

    #[test]
    fn namespaces_keep_config_maps_apart() {
        let mut u = Uses::default();
        u.set(&k("shop", "a"), set(&[&k("shop", "tpl")]));
        u.set(&k("pay", "a"), set(&[&k("pay", "tpl")]));
        assert_eq!(u.users(&k("shop", "tpl")), [k("shop", "a")]);
        assert_eq!(u.users(&k("pay", "tpl")), [k("pay", "a")]);
        // A binding that never referenced anything: forgetting it is free.
        assert_eq!(u.forget(&k("shop", "other")), UseChange::default());
    }
}
