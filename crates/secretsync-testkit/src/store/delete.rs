//! Deletion: preconditions, finalizers (a delete only marks the object until they are
//! gone), the removal itself with CRD unregistration, emptying a deleted namespace, and
//! the garbage collector (background cascading deletion through `ownerReferences`,
//! orphaning, and objects whose owners never existed).

use std::collections::HashSet;

use serde_json::{Value, json};

use super::{DeleteOpts, Inner, ns_key};
use crate::resources::{self, ResourceDef, Special};
use crate::status::{ApiError, success_status};
use crate::util::{finalizers, meta_mut, meta_str, now_rfc3339};

impl Inner {
    /// DELETE. Returns the response body.
    pub fn delete(
        &mut self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<Value, ApiError> {
        let old = self.existing(def, ns, name)?;
        if let Some(uid) = &opts.uid
            && Some(uid.as_str()) != meta_str(&old, "uid")
        {
            return Err(ApiError::conflict(
                &def.group,
                &def.plural,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&old, "uid").unwrap_or_default()
                ),
            ));
        }
        if let Some(rv) = &opts.resource_version
            && Some(rv.as_str()) != meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::stale(&def.group, &def.plural, name));
        }
        if opts.dry_run {
            return Ok(old);
        }
        if !finalizers(&old).is_empty() {
            if old
                .get("metadata")
                .and_then(|m| m.get("deletionTimestamp"))
                .is_some()
            {
                return Ok(old);
            }
            let mut new = old.clone();
            {
                let m = meta_mut(&mut new);
                m.insert("deletionTimestamp".into(), json!(now_rfc3339()));
                m.insert("deletionGracePeriodSeconds".into(), json!(0));
            }
            if def.has_generation {
                let g = new["metadata"]["generation"].as_i64().unwrap_or(0);
                new["metadata"]["generation"] = json!(g + 1);
            }
            return Ok(self.store_modified(def, ns, name, new, old));
        }
        let gone = self
            .remove(def, ns, name, opts.orphan)
            .unwrap_or(Value::Null);
        if def.return_deleted_object {
            Ok(gone)
        } else {
            Ok(success_status(
                &def.group,
                &def.plural,
                name,
                meta_str(&gone, "uid").unwrap_or_default(),
            ))
        }
    }

    /// Remove an object now: DELETED event, CRD unregistration, garbage collection.
    pub(super) fn remove(
        &mut self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        orphan: bool,
    ) -> Option<Value> {
        let key = def.storage_key();
        let mut obj = self.objects.get_mut(&key)?.remove(&ns_key(ns, name))?;
        self.set_rv(&mut obj);
        self.emit(&key, "DELETED", obj.clone(), None);
        if def.special == Special::Crd
            && let Ok(rd) = resources::from_crd(&obj)
        {
            let ckey = rd.storage_key();
            self.registry.retain(|d| d.storage_key() != ckey);
            let all: Vec<Value> = self
                .objects
                .remove(&ckey)
                .map(|m| m.into_values().collect())
                .unwrap_or_default();
            for mut o in all {
                self.set_rv(&mut o);
                self.emit(&ckey, "DELETED", o, None);
            }
        }
        if def.special == Special::Namespace {
            self.empty_namespace(name);
        }
        if let Some(uid) = meta_str(&obj, "uid").map(str::to_owned) {
            self.collect_garbage(&uid, orphan);
        }
        Some(obj)
    }

    /// Delete everything in a removed namespace (finalizers are honoured).
    fn empty_namespace(&mut self, ns: &str) {
        let mut victims = Vec::new();
        for (key, objs) in &self.objects {
            for (n, name) in objs.keys() {
                if n == ns {
                    victims.push((key.clone(), name.clone()));
                }
            }
        }
        for (key, name) in victims {
            if let Some(def) = self.find_by_key(&key) {
                let _ = self.delete(&def, Some(ns), &name, &DeleteOpts::default());
            }
        }
    }

    /// Like the garbage collector: an object whose owners all do not exist (no object with
    /// that uid in the dependent's namespace or cluster scope) is deleted.
    pub(super) fn collect_if_dangling(&mut self, def: &ResourceDef, ns: Option<&str>, name: &str) {
        let Some(obj) = self.get(def, ns, name) else {
            return;
        };
        let owners: Vec<String> = owner_uids(obj).map(str::to_owned).collect();
        if owners.is_empty()
            || obj
                .get("metadata")
                .and_then(|m| m.get("deletionTimestamp"))
                .is_some()
        {
            return;
        }
        let dep_ns = ns.unwrap_or_default();
        let any_alive = self.objects.values().any(|objs| {
            objs.iter().any(|((ons, _), o)| {
                (ons.is_empty() || ons == dep_ns)
                    && meta_str(o, "uid").is_some_and(|u| owners.iter().any(|w| w == u))
            })
        });
        if !any_alive {
            let _ = self.delete(def, ns, name, &DeleteOpts::default());
        }
    }

    /// Background cascading deletion of the dependents of a removed owner.
    fn collect_garbage(&mut self, owner_uid: &str, orphan: bool) {
        let mut dependents = Vec::new();
        let mut alive: HashSet<String> = HashSet::new();
        for (key, objs) in &self.objects {
            for (k, o) in objs {
                if let Some(u) = meta_str(o, "uid") {
                    alive.insert(u.to_owned());
                }
                if owner_uids(o).any(|u| u == owner_uid) {
                    dependents.push((key.clone(), k.clone()));
                }
            }
        }
        for (key, (ns, name)) in dependents {
            let Some(def) = self.find_by_key(&key) else {
                continue;
            };
            let nsopt = (!ns.is_empty()).then_some(ns.as_str());
            let Some(obj) = self.get(&def, nsopt, &name).cloned() else {
                continue;
            };
            let refs: Vec<Value> = obj["metadata"]["ownerReferences"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let others: Vec<Value> = refs
                .into_iter()
                .filter(|r| r.get("uid").and_then(Value::as_str) != Some(owner_uid))
                .collect();
            let other_alive = others.iter().any(|r| {
                r.get("uid")
                    .and_then(Value::as_str)
                    .is_some_and(|u| alive.contains(u))
            });
            if orphan || other_alive {
                let mut new = obj.clone();
                if others.is_empty() {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove("ownerReferences");
                    }
                } else {
                    new["metadata"]["ownerReferences"] = Value::Array(others);
                }
                self.store(&key, (ns.clone(), name.clone()), new, "MODIFIED", Some(obj));
            } else {
                let _ = self.delete(&def, nsopt, &name, &DeleteOpts::default());
            }
        }
    }
}

/// The uids in an object's `ownerReferences`.
fn owner_uids(obj: &Value) -> impl Iterator<Item = &str> {
    obj.get("metadata")
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("uid").and_then(Value::as_str))
}
