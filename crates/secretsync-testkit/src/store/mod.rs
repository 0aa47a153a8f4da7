//! In-memory object store: the objects, the resource-version counter and the per-resource
//! event history for watches. The write semantics live in the submodules: normalising and
//! validating an object ([`prepare`]), create/update/patch and the commit of a change
//! ([`write`]), server-side apply ([`apply`]), delete with finalizers, namespace emptying and
//! garbage collection ([`delete`]), and the TokenRequest/TokenReview endpoints ([`tokens`]).

mod apply;
mod delete;
mod prepare;
mod tokens;
mod write;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use crate::rbac::User;
use crate::resources::{self, ResourceDef};
use crate::status::ApiError;
use crate::util::meta_mut;

pub use tokens::DEFAULT_AUDIENCE;
pub(crate) use tokens::IssuedToken;
pub(crate) use write::PatchType;

/// A change, as delivered to watches.
#[derive(Debug)]
pub(crate) struct Event {
    pub rv: u64,
    pub key: String,
    pub ty: &'static str,
    pub obj: Value,
    pub old: Option<Value>,
}

pub(crate) type ObjKey = (String, String);

/// The object (or its status subresource) a PUT, PATCH or apply writes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriteTarget<'a> {
    pub def: &'a ResourceDef,
    pub version: &'a str,
    pub ns: Option<&'a str>,
    pub name: &'a str,
    /// Of the status subresource.
    pub status: bool,
}

impl<'a> WriteTarget<'a> {
    /// The fields as a tuple: (resource, version, namespace, name, status).
    pub fn parts(self) -> (&'a ResourceDef, &'a str, Option<&'a str>, &'a str, bool) {
        (self.def, self.version, self.ns, self.name, self.status)
    }
}

/// Options of a write.
#[derive(Debug, Clone, Default)]
pub(crate) struct WriteOpts {
    pub manager: String,
    pub dry_run: bool,
    pub force: bool,
    /// `fieldValidation=Strict`: unknown fields of custom resources are an error.
    pub strict: bool,
    /// Who writes, for admission policies; `None` for the server's own writes (its
    /// bootstrap objects, implicitly created namespaces), which no policy sees.
    pub user: Option<User>,
}

/// Options of a delete.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeleteOpts {
    pub orphan: bool,
    pub dry_run: bool,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

pub(crate) struct Inner {
    pub rv: u64,
    pub registry: Vec<Arc<ResourceDef>>,
    pub objects: HashMap<String, BTreeMap<ObjKey, Value>>,
    pub history: HashMap<String, VecDeque<Arc<Event>>>,
    /// Watches from a resource version below this (per resource) get `410 Gone`.
    pub compacted: HashMap<String, u64>,
    /// Watches from a resource version below this (any resource) get `410 Gone`.
    pub expired_below: u64,
    pub history_limit: usize,
    pub tokens: HashMap<String, IssuedToken>,
    pub tx: broadcast::Sender<Arc<Event>>,
}

pub(super) fn ns_key(ns: Option<&str>, name: &str) -> ObjKey {
    (ns.unwrap_or_default().to_owned(), name.to_owned())
}

impl Inner {
    pub fn new(history_limit: usize) -> Self {
        let (tx, _) = broadcast::channel(8192);
        let mut s = Self {
            rv: 1,
            registry: resources::builtins().into_iter().map(Arc::new).collect(),
            objects: HashMap::new(),
            history: HashMap::new(),
            compacted: HashMap::new(),
            expired_below: 0,
            history_limit: history_limit.max(1),
            tokens: HashMap::new(),
            tx,
        };
        let system = WriteOpts {
            manager: "fake-apiserver".into(),
            ..Default::default()
        };
        for ns in ["default", "kube-system", "kube-public"] {
            if let Some(def) = s.find("", "v1", "namespaces") {
                let _ = s.create(&def, "v1", None, json!({"metadata": {"name": ns}}), &system);
            }
        }
        s
    }

    /// Stores cluster-scoped objects as the server itself (the default policy of a new
    /// cluster, say); objects of unknown kinds are skipped.
    pub fn seed(&mut self, objects: Vec<Value>) {
        let system = WriteOpts {
            manager: "fake-apiserver".into(),
            ..Default::default()
        };
        for obj in objects {
            let av = obj
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
            let (group, version) = av.split_once('/').unwrap_or(("", av));
            let def = self
                .registry
                .iter()
                .find(|d| {
                    d.group == group && d.kind == kind && d.versions.iter().any(|v| v == version)
                })
                .cloned();
            if let Some(def) = def {
                let version = version.to_owned();
                let _ = self.create(&def, &version, None, obj, &system);
            }
        }
    }

    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceDef>> {
        self.registry
            .iter()
            .find(|d| {
                d.group == group && d.plural == plural && d.versions.iter().any(|v| v == version)
            })
            .cloned()
    }

    pub(super) fn find_by_key(&self, key: &str) -> Option<Arc<ResourceDef>> {
        self.registry
            .iter()
            .find(|d| d.storage_key() == key)
            .cloned()
    }

    pub fn get(&self, def: &ResourceDef, ns: Option<&str>, name: &str) -> Option<&Value> {
        self.objects.get(&def.storage_key())?.get(&ns_key(ns, name))
    }

    /// A copy of the stored object, or its `404`.
    fn existing(&self, def: &ResourceDef, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        self.get(def, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&def.group, &def.plural, name))
    }

    pub(super) fn emit(&mut self, key: &str, ty: &'static str, obj: Value, old: Option<Value>) {
        let ev = Arc::new(Event {
            rv: self.rv,
            key: key.to_owned(),
            ty,
            obj,
            old,
        });
        let h = self.history.entry(key.to_owned()).or_default();
        h.push_back(ev.clone());
        while h.len() > self.history_limit {
            if let Some(dropped) = h.pop_front() {
                self.compacted.insert(key.to_owned(), dropped.rv);
            }
        }
        // no receivers is fine
        let _ = self.tx.send(ev);
    }

    /// Make every resource version issued so far too old for a watch (forces `410 Gone`).
    pub fn expire_all(&mut self) {
        self.rv += 1;
        self.expired_below = self.rv;
        self.history.clear();
    }

    pub fn set_history_limit(&mut self, n: usize) {
        self.history_limit = n.max(1);
        let keys: Vec<String> = self.history.keys().cloned().collect();
        for key in keys {
            if let Some(h) = self.history.get_mut(&key) {
                while h.len() > self.history_limit {
                    if let Some(dropped) = h.pop_front() {
                        self.compacted.insert(key.clone(), dropped.rv);
                    }
                }
            }
        }
    }

    /// Lowest resource version a watch of `key` may start from.
    pub fn oldest_watchable(&self, key: &str) -> u64 {
        self.compacted
            .get(key)
            .copied()
            .unwrap_or(0)
            .max(self.expired_below)
    }

    pub(super) fn set_rv(&mut self, obj: &mut Value) {
        self.rv += 1;
        meta_mut(obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
    }

    /// All objects of a resource (optionally in one namespace), sorted by namespace/name.
    pub fn list(&self, def: &ResourceDef, ns: Option<&str>) -> Vec<&Value> {
        self.objects
            .get(&def.storage_key())
            .map(|m| {
                m.iter()
                    .filter(|((n, _), _)| ns.is_none_or(|ns| ns == n))
                    .map(|(_, v)| v)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Metadata-only view of an object.
pub(crate) fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| Value::Object(Map::new())),
    })
}
