//! In-memory object store: objects, the resource-version counter, per-resource event
//! history for watches, and the write semantics (create/update/patch/apply/delete, GC).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use base64::Engine;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use crate::managed::{self, Scope};
use crate::resources::{self, ResourceDef, Special};
use crate::status::{ApiError, Cause, success_status};
use crate::util::{finalizers, meta_mut, meta_str, new_uid, now_rfc3339, spec_part};
use crate::validation;

/// A change, as delivered to watches.
#[derive(Debug)]
pub(crate) struct Event {
    pub rv: u64,
    pub key: String,
    pub ty: &'static str,
    pub obj: Value,
    pub old: Option<Value>,
}

/// A token issued through the TokenRequest endpoint.
#[derive(Debug, Clone)]
pub(crate) struct IssuedToken {
    pub namespace: String,
    pub name: String,
    pub sa_uid: String,
    pub audiences: Vec<String>,
    pub expires: i64,
}

pub(crate) type ObjKey = (String, String);

/// Options of a write.
#[derive(Debug, Clone, Default)]
pub(crate) struct WriteOpts {
    pub manager: String,
    pub dry_run: bool,
    pub force: bool,
    /// `fieldValidation=Strict`: unknown fields of custom resources are an error.
    pub strict: bool,
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

fn ns_key(ns: Option<&str>, name: &str) -> ObjKey {
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
        for obj in crate::rbac::bootstrap_policy() {
            let plural = match obj.get("kind").and_then(Value::as_str) {
                Some("ClusterRole") => "clusterroles",
                _ => "clusterrolebindings",
            };
            if let Some(def) = s.find("rbac.authorization.k8s.io", "v1", plural) {
                let _ = s.create(&def, "v1", None, obj, &system);
            }
        }
        for ns in ["default", "kube-system", "kube-public"] {
            if let Some(def) = s.find("", "v1", "namespaces") {
                let _ = s.create(
                    &def,
                    "v1",
                    None,
                    json!({"metadata": {"name": ns}}),
                    &WriteOpts {
                        manager: "fake-apiserver".into(),
                        ..Default::default()
                    },
                );
            }
        }
        s
    }

    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceDef>> {
        self.registry
            .iter()
            .find(|d| {
                d.group == group && d.plural == plural && d.versions.iter().any(|v| v == version)
            })
            .cloned()
    }

    fn find_by_key(&self, key: &str) -> Option<Arc<ResourceDef>> {
        self.registry
            .iter()
            .find(|d| d.storage_key() == key)
            .cloned()
    }

    pub fn get(&self, def: &ResourceDef, ns: Option<&str>, name: &str) -> Option<&Value> {
        self.objects.get(&def.storage_key())?.get(&ns_key(ns, name))
    }

    fn emit(&mut self, key: &str, ty: &'static str, obj: Value, old: Option<Value>) {
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

    fn schema(def: &ResourceDef, version: &str) -> Value {
        resources::combined_schema(def, version)
    }

    /// Normalise, default and validate an object before storing.
    fn prepare(
        &self,
        def: &ResourceDef,
        version: &str,
        obj: &mut Value,
        strict: bool,
    ) -> Result<(), ApiError> {
        let name = meta_str(obj, "name").unwrap_or_default().to_owned();
        if def.group.is_empty() && def.plural == "secrets" {
            if let Some(sd) = obj.as_object_mut().and_then(|m| m.remove("stringData"))
                && let Some(sd) = sd.as_object()
            {
                {
                    let data = obj
                        .as_object_mut()
                        .map(|m| m.entry("data").or_insert_with(|| json!({})));
                    if let Some(Value::Object(data)) = data {
                        for (k, v) in sd {
                            let s = v
                                .as_str()
                                .map(str::to_owned)
                                .unwrap_or_else(|| v.to_string());
                            data.insert(
                                k.clone(),
                                json!(base64::engine::general_purpose::STANDARD.encode(s)),
                            );
                        }
                    }
                }
            }
            if obj.get("type").is_none() {
                obj["type"] = json!("Opaque");
            }
        }
        if def.group == "apps"
            && (def.plural == "deployments" || def.plural == "statefulsets")
            && let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut)
        {
            // the one built-in default operators commonly read or patch
            spec.entry("replicas").or_insert(json!(1));
        }
        let mut causes: Vec<Cause> = validation::validate(def, obj);
        if def.is_custom()
            && let Some(schema) = def.schemas.get(version)
        {
            if strict {
                let unknown = validation::unknown_fields(schema, obj);
                if !unknown.is_empty() {
                    let list: Vec<String> = unknown
                        .iter()
                        .map(|f| format!("unknown field {f:?}"))
                        .collect();
                    return Err(ApiError::bad_request(format!(
                        "strict decoding error: {}",
                        list.join(", ")
                    )));
                }
            }
            validation::default_and_prune(schema, obj);
            causes.extend(validation::validate_schema(schema, obj));
        }
        if def.special == Special::Crd {
            match resources::from_crd(obj) {
                Ok(rd) => {
                    let want = format!("{}.{}", rd.plural, rd.group);
                    if name != want {
                        causes.push(Cause {
                            reason: "FieldValueInvalid".into(),
                            message: format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
                            field: "metadata.name".into(),
                        });
                    }
                }
                Err(e) => {
                    let (field, msg) = e.split_once(": ").unwrap_or(("spec", e.as_str()));
                    causes.push(Cause {
                        reason: "FieldValueRequired".into(),
                        message: msg.to_owned(),
                        field: field.to_owned(),
                    });
                }
            }
        }
        if causes.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(&def.group, &def.kind, &name, causes))
        }
    }

    fn crd_status(obj: &mut Value) {
        let Ok(rd) = resources::from_crd(obj) else {
            return;
        };
        let now = now_rfc3339();
        let names = obj["spec"]["names"].clone();
        obj["status"] = json!({
            "acceptedNames": names,
            "storedVersions": [rd.versions[0]],
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                 "message": "no conflicts found", "lastTransitionTime": now},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted", "lastTransitionTime": now},
            ],
        });
    }

    fn register_crd(&mut self, obj: &Value) {
        if let Ok(rd) = resources::from_crd(obj) {
            let key = rd.storage_key();
            self.registry.retain(|d| d.storage_key() != key);
            self.registry.push(Arc::new(rd));
        }
    }

    fn set_rv(&mut self, obj: &mut Value) {
        self.rv += 1;
        meta_mut(obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
    }

    /// Create. `prepared` = managedFields already computed (create-via-apply).
    pub fn create(
        &mut self,
        def: &ResourceDef,
        version: &str,
        ns: Option<&str>,
        body: Value,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        self.create_inner(def, version, ns, body, opts, false)
    }

    fn create_inner(
        &mut self,
        def: &ResourceDef,
        version: &str,
        ns: Option<&str>,
        mut obj: Value,
        opts: &WriteOpts,
        prepared: bool,
    ) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        check_kind(def, version, &obj)?;
        obj["apiVersion"] = json!(def.api_version(version));
        obj["kind"] = json!(def.kind);
        {
            let m = meta_mut(&mut obj);
            match (ns, m.get("namespace").and_then(Value::as_str)) {
                (Some(ns), Some(b)) if !b.is_empty() && b != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                (Some(ns), _) => {
                    m.insert("namespace".into(), json!(ns));
                }
                (None, _) => {
                    m.remove("namespace");
                }
            }
            for f in [
                "uid",
                "resourceVersion",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "selfLink",
            ] {
                m.remove(f);
            }
            if !prepared {
                m.remove("managedFields");
            }
            m.insert("creationTimestamp".into(), json!(now_rfc3339()));
        }
        let name_given = meta_str(&obj, "name").is_some_and(|n| !n.is_empty());
        let generate = meta_str(&obj, "generateName").map(str::to_owned);
        if !name_given {
            match &generate {
                Some(g) if !g.is_empty() => {
                    let mut name = format!("{g}{}", crate::util::name_suffix());
                    while self.get(def, ns, &name).is_some() {
                        name = format!("{g}{}", crate::util::name_suffix());
                    }
                    meta_mut(&mut obj).insert("name".into(), json!(name));
                }
                _ => {}
            }
        }
        if def.status_subresource
            && def.special != Special::Namespace
            && let Some(m) = obj.as_object_mut()
        {
            m.remove("status");
        }
        match def.special {
            Special::Crd => Self::crd_status(&mut obj),
            Special::Namespace => obj["status"] = json!({"phase": "Active"}),
            _ => {}
        }
        self.prepare(def, version, &mut obj, opts.strict)?;
        let name = meta_str(&obj, "name").unwrap_or_default().to_owned();
        if self.get(def, ns, &name).is_some() {
            return Err(ApiError::already_exists(&def.group, &def.plural, &name));
        }
        if let Some(ns) = ns
            && !opts.dry_run
        {
            self.ensure_namespace(ns);
        }
        {
            let m = meta_mut(&mut obj);
            m.insert("uid".into(), json!(new_uid()));
            if def.has_generation {
                m.insert("generation".into(), json!(1));
            }
        }
        if !prepared {
            let schema = Self::schema(def, version);
            managed::record_update(
                None,
                &mut obj,
                &schema,
                &opts.manager,
                Scope::Main {
                    strip_status: def.status_subresource,
                },
                &def.api_version(version),
            );
        }
        if opts.dry_run {
            return Ok(obj);
        }
        self.set_rv(&mut obj);
        let key = def.storage_key();
        self.objects
            .entry(key.clone())
            .or_default()
            .insert(ns_key(ns, &name), obj.clone());
        self.emit(&key, "ADDED", obj.clone(), None);
        if def.special == Special::Crd {
            self.register_crd(&obj);
        }
        self.collect_if_dangling(def, ns, &name);
        Ok(obj)
    }

    /// Namespaces are implicit: the first object written into one creates it.
    fn ensure_namespace(&mut self, ns: &str) {
        let Some(def) = self.find("", "v1", "namespaces") else {
            return;
        };
        if self.get(&def, None, ns).is_none() {
            let opts = WriteOpts {
                manager: "fake-apiserver".into(),
                ..Default::default()
            };
            let _ = self.create(&def, "v1", None, json!({"metadata": {"name": ns}}), &opts);
        }
    }

    /// PUT.
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        def: &ResourceDef,
        version: &str,
        ns: Option<&str>,
        name: &str,
        body: Value,
        status: bool,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        let old = self
            .get(def, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&def.group, &def.plural, name))?;
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        check_kind(def, version, &body)?;
        let body_name = meta_str(&body, "name").unwrap_or_default();
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        if let Some(rv) = meta_str(&body, "resourceVersion").filter(|r| !r.is_empty())
            && Some(rv) != meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::stale(&def.group, &def.plural, name));
        }
        let new = merge_scope(def, version, &old, body, status);
        let scope = scope_of(def, status);
        self.commit(def, version, ns, name, old, new, scope, opts, true)
    }

    /// PATCH with a non-apply patch type.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        def: &ResourceDef,
        version: &str,
        ns: Option<&str>,
        name: &str,
        patch_type: PatchType,
        body: &Value,
        status: bool,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        let old = self
            .get(def, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&def.group, &def.plural, name))?;
        let mut target = old.clone();
        match patch_type {
            PatchType::Merge => crate::patch::merge_patch(&mut target, body),
            PatchType::Json => crate::patch::json_patch(&mut target, body)
                .map_err(|e| ApiError::new(422, "Invalid", e))?,
            PatchType::Strategic => {
                if def.is_custom() {
                    return Err(ApiError::unsupported_media_type(
                        "application/strategic-merge-patch+json",
                    ));
                }
                let schema = Self::schema(def, version);
                crate::patch::strategic_merge(
                    &mut target,
                    body,
                    resources::Cursor::new(Some(&schema)),
                );
            }
        }
        if meta_str(&target, "resourceVersion") != meta_str(&old, "resourceVersion") {
            return Err(ApiError::stale(&def.group, &def.plural, name));
        }
        if meta_str(&target, "name") != Some(name) {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        let new = merge_scope(def, version, &old, target, status);
        let scope = scope_of(def, status);
        self.commit(def, version, ns, name, old, new, scope, opts, true)
    }

    /// Server-side apply.
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &mut self,
        def: &ResourceDef,
        version: &str,
        ns: Option<&str>,
        name: &str,
        body: Value,
        status: bool,
        opts: &WriteOpts,
    ) -> Result<(Value, bool), ApiError> {
        if opts.manager.is_empty() {
            return Err(ApiError::bad_request(
                "PATCH, application/apply-patch+yaml requires fieldManager to be set",
            ));
        }
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be an object",
            ));
        }
        if body
            .get("apiVersion")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
            || body
                .get("kind")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        {
            return Err(ApiError::bad_request(
                "invalid object type: apiVersion and kind must be set in an apply configuration",
            ));
        }
        check_kind(def, version, &body)?;
        let mut body = body;
        let body_name = meta_str(&body, "name").unwrap_or_default().to_owned();
        if body_name.is_empty() {
            // an apply configuration without a name applies to the object on the URL
            meta_mut(&mut body).insert("name".into(), json!(name));
        } else if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let scope = scope_of(def, status);
        let mut applied = managed::scoped_config(&body, scope);
        if let Some(meta) = applied.get_mut("metadata").and_then(Value::as_object_mut) {
            match ns {
                Some(ns) => {
                    meta.insert("namespace".into(), json!(ns));
                }
                None => {
                    meta.remove("namespace");
                }
            }
        }
        let schema = Self::schema(def, version);
        let av = def.api_version(version);
        let conflict = |c: Vec<managed::Conflict>| {
            let causes: Vec<Cause> = c
                .iter()
                .map(|c| Cause {
                    reason: "FieldManagerConflict".into(),
                    message: format!("conflict with {:?} using {av}", c.manager),
                    field: c.path.clone(),
                })
                .collect();
            let detail: Vec<String> = c
                .iter()
                .map(|c| format!("conflict with {:?} using {av}: {}", c.manager, c.path))
                .collect();
            let n = c.len();
            let mut e = ApiError::conflict(&def.group, &def.plural, name, "");
            e.message = format!(
                "Apply failed with {n} conflict{}: {}",
                if n == 1 { "" } else { "s" },
                detail.join("\n")
            );
            e.details.causes = causes;
            e
        };
        match self.get(def, ns, name).cloned() {
            Some(old) => {
                let merged = managed::apply(
                    &old,
                    &applied,
                    &schema,
                    &opts.manager,
                    opts.force,
                    scope,
                    &av,
                )
                .map_err(conflict)?;
                let new = merge_scope(def, version, &old, merged, status);
                let out = self.commit(def, version, ns, name, old, new, scope, opts, false)?;
                Ok((out, false))
            }
            None => {
                if status {
                    return Err(ApiError::not_found(&def.group, &def.plural, name));
                }
                let mut base =
                    json!({"apiVersion": av, "kind": def.kind, "metadata": {"name": name}});
                if let Some(ns) = ns {
                    base["metadata"]["namespace"] = json!(ns);
                }
                let merged = managed::apply(
                    &base,
                    &applied,
                    &schema,
                    &opts.manager,
                    opts.force,
                    scope,
                    &av,
                )
                .map_err(conflict)?;
                let out = self.create_inner(def, version, ns, merged, opts, true)?;
                Ok((out, true))
            }
        }
    }

    /// Validate and store an update; handles no-ops, generation, managed fields and the
    /// end of a finalizer-blocked deletion.
    #[allow(clippy::too_many_arguments)]
    fn commit(
        &mut self,
        def: &ResourceDef,
        version: &str,
        ns: Option<&str>,
        name: &str,
        old: Value,
        mut new: Value,
        scope: Scope,
        opts: &WriteOpts,
        record: bool,
    ) -> Result<Value, ApiError> {
        new["apiVersion"] = json!(def.api_version(version));
        new["kind"] = json!(def.kind);
        {
            let m = meta_mut(&mut new);
            let om = old
                .get("metadata")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            for f in [
                "uid",
                "creationTimestamp",
                "generation",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "resourceVersion",
            ] {
                match om.get(f) {
                    Some(v) => {
                        m.insert(f.into(), v.clone());
                    }
                    None => {
                        m.remove(f);
                    }
                }
            }
            match ns {
                Some(ns) => {
                    m.insert("namespace".into(), json!(ns));
                }
                None => {
                    m.remove("namespace");
                }
            }
            m.insert("name".into(), json!(name));
        }
        if record {
            // managedFields of the stored object are the base of the update
            match old.get("metadata").and_then(|m| m.get("managedFields")) {
                Some(mf) => {
                    meta_mut(&mut new).insert("managedFields".into(), mf.clone());
                }
                None => {
                    meta_mut(&mut new).remove("managedFields");
                }
            }
        }
        if def.special == Special::Crd {
            Self::crd_status(&mut new);
        }
        self.prepare(def, version, &mut new, opts.strict)?;
        if def.has_generation && spec_part(&old) != spec_part(&new) {
            let g = old
                .get("metadata")
                .and_then(|m| m.get("generation"))
                .and_then(Value::as_i64)
                .unwrap_or(0);
            meta_mut(&mut new).insert("generation".into(), json!(g + 1));
        }
        if record {
            let schema = Self::schema(def, version);
            managed::record_update(
                Some(&old),
                &mut new,
                &schema,
                &opts.manager,
                scope,
                &def.api_version(version),
            );
        }
        if strip_times(&old) == strip_times(&new) {
            return Ok(old);
        }
        if opts.dry_run {
            return Ok(new);
        }
        let deleting = new
            .get("metadata")
            .and_then(|m| m.get("deletionTimestamp"))
            .is_some();
        if deleting && finalizers(&new).is_empty() {
            self.objects
                .entry(def.storage_key())
                .or_default()
                .insert(ns_key(ns, name), new);
            return Ok(self.remove(def, ns, name, false).unwrap_or(Value::Null));
        }
        self.set_rv(&mut new);
        let key = def.storage_key();
        self.objects
            .entry(key.clone())
            .or_default()
            .insert(ns_key(ns, name), new.clone());
        self.emit(&key, "MODIFIED", new.clone(), Some(old));
        if def.special == Special::Crd {
            self.register_crd(&new);
        }
        self.collect_if_dangling(def, ns, name);
        Ok(new)
    }

    /// DELETE. Returns the response body.
    pub fn delete(
        &mut self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<Value, ApiError> {
        let old = self
            .get(def, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&def.group, &def.plural, name))?;
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
            self.set_rv(&mut new);
            let key = def.storage_key();
            self.objects
                .entry(key.clone())
                .or_default()
                .insert(ns_key(ns, name), new.clone());
            self.emit(&key, "MODIFIED", new.clone(), Some(old));
            return Ok(new);
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
    fn remove(
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
    fn collect_if_dangling(&mut self, def: &ResourceDef, ns: Option<&str>, name: &str) {
        let Some(obj) = self.get(def, ns, name) else {
            return;
        };
        let owners: Vec<String> = obj
            .get("metadata")
            .and_then(|m| m.get("ownerReferences"))
            .and_then(Value::as_array)
            .map(|refs| {
                refs.iter()
                    .filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
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
                let owned = o
                    .get("metadata")
                    .and_then(|m| m.get("ownerReferences"))
                    .and_then(Value::as_array)
                    .is_some_and(|refs| {
                        refs.iter()
                            .any(|r| r.get("uid").and_then(Value::as_str) == Some(owner_uid))
                    });
                if owned {
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
                self.set_rv(&mut new);
                self.objects
                    .entry(key.clone())
                    .or_default()
                    .insert((ns.clone(), name.clone()), new.clone());
                self.emit(&key, "MODIFIED", new, Some(obj));
            } else {
                let _ = self.delete(&def, nsopt, &name, &DeleteOpts::default());
            }
        }
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

    /// TokenRequest for a service account.
    pub fn token_request(&mut self, ns: &str, name: &str, body: &Value) -> Result<Value, ApiError> {
        let def = self
            .find("", "v1", "serviceaccounts")
            .ok_or_else(|| ApiError::internal("serviceaccounts not registered"))?;
        let sa = self
            .get(&def, Some(ns), name)
            .ok_or_else(|| ApiError::not_found("", "serviceaccounts", name))?;
        let sa_uid = meta_str(sa, "uid").unwrap_or_default().to_owned();
        let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
        let audiences: Vec<String> = spec
            .get("audiences")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .filter(|a: &Vec<String>| !a.is_empty())
            .unwrap_or_else(|| vec![DEFAULT_AUDIENCE.to_owned()]);
        let exp_secs = spec
            .get("expirationSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(3600);
        if exp_secs < 600 {
            return Err(ApiError::invalid(
                "authentication.k8s.io",
                "TokenRequest",
                name,
                vec![Cause {
                    reason: "FieldValueInvalid".into(),
                    message: "may not specify a duration less than 10 minutes".into(),
                    field: "spec.expirationSeconds".into(),
                }],
            ));
        }
        let now = jiff::Timestamp::now();
        let exp = now.as_second() + exp_secs;
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let header = json!({"alg": "RS256", "kid": "secretsync-fake"});
        let payload = json!({
            "aud": audiences, "exp": exp, "iat": now.as_second(), "nbf": now.as_second(),
            "iss": "https://kubernetes.default.svc.cluster.local",
            "sub": format!("system:serviceaccount:{ns}:{name}"),
            "jti": new_uid(),
            "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": name, "uid": sa_uid}},
        });
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(crate::util::random_hex(64).as_bytes());
        let token = format!("{}.{}.{sig}", b64(&header), b64(&payload));
        self.tokens.insert(
            token.clone(),
            IssuedToken {
                namespace: ns.to_owned(),
                name: name.to_owned(),
                sa_uid,
                audiences: audiences.clone(),
                expires: exp,
            },
        );
        let exp_ts = jiff::Timestamp::from_second(exp).unwrap_or(now);
        Ok(json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": crate::util::format_ts(now)},
            "spec": {"audiences": audiences, "expirationSeconds": exp_secs, "boundObjectRef": spec.get("boundObjectRef").cloned().unwrap_or(Value::Null)},
            "status": {"token": token, "expirationTimestamp": crate::util::format_ts(exp_ts)},
        }))
    }

    /// A token issued by [`Inner::token_request`] that is still good, or why it is not (the
    /// TokenReview error text).
    fn check_token(&self, token: &str) -> Result<&IssuedToken, &'static str> {
        let t = self
            .tokens
            .get(token)
            .ok_or("[invalid bearer token, token lookup failed]")?;
        if t.expires < jiff::Timestamp::now().as_second() {
            return Err("[invalid bearer token, service account token has expired]");
        }
        let sa_alive = self
            .find("", "v1", "serviceaccounts")
            .and_then(|d| self.get(&d, Some(&t.namespace), &t.name))
            .is_some_and(|sa| meta_str(sa, "uid") == Some(t.sa_uid.as_str()));
        if !sa_alive {
            return Err("[invalid bearer token, service account token has been invalidated]");
        }
        Ok(t)
    }

    /// The issued token behind a bearer token, if it is still valid.
    pub fn valid_token(&self, token: &str) -> Option<&IssuedToken> {
        self.check_token(token).ok()
    }

    /// TokenReview of a token issued by [`Inner::token_request`].
    pub fn token_review(&self, body: &Value) -> Value {
        let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
        let token = spec
            .get("token")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let wanted: Vec<String> = spec
            .get("audiences")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let mut out = json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": spec,
        });
        let status = match self.check_token(token) {
            Err(error) => json!({"authenticated": false, "user": {}, "error": error}),
            Ok(t) => {
                let audiences: Vec<String> = if wanted.is_empty() {
                    t.audiences.clone()
                } else {
                    wanted
                        .iter()
                        .filter(|a| t.audiences.contains(a))
                        .cloned()
                        .collect()
                };
                if audiences.is_empty() {
                    json!({"authenticated": false, "user": {}, "error": "[invalid bearer token, token audiences is invalid for the target audiences]"})
                } else {
                    json!({
                        "authenticated": true,
                        "user": {
                            "username": format!("system:serviceaccount:{}:{}", t.namespace, t.name),
                            "uid": t.sa_uid,
                            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{}", t.namespace), "system:authenticated"],
                        },
                        "audiences": audiences,
                    })
                }
            }
        };
        out["status"] = status;
        out
    }
}

/// Default audience of issued tokens.
pub const DEFAULT_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// Patch content types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchType {
    Merge,
    Strategic,
    Json,
}

fn check_kind(def: &ResourceDef, version: &str, body: &Value) -> Result<(), ApiError> {
    if let Some(k) = body.get("kind").and_then(Value::as_str)
        && !k.is_empty()
        && k != def.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind of the object ({k}) does not match the kind of the resource ({})",
            def.kind
        )));
    }
    if let Some(av) = body.get("apiVersion").and_then(Value::as_str)
        && !av.is_empty()
        && av != def.api_version(version)
        && !def.versions.iter().any(|v| def.api_version(v) == av)
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            def.api_version(version)
        )));
    }
    Ok(())
}

fn scope_of(def: &ResourceDef, status: bool) -> Scope {
    if status {
        Scope::Status
    } else {
        Scope::Main {
            strip_status: def.status_subresource,
        }
    }
}

/// Keep only what a write to this endpoint may change.
fn merge_scope(
    def: &ResourceDef,
    _version: &str,
    old: &Value,
    mut body: Value,
    status: bool,
) -> Value {
    if status {
        let mut new = old.clone();
        if let Some(mf) = body.get("metadata").and_then(|m| m.get("managedFields")) {
            meta_mut(&mut new).insert("managedFields".into(), mf.clone());
        }
        match body.as_object_mut().and_then(|m| m.remove("status")) {
            Some(s) => new["status"] = s,
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        new
    } else {
        if def.status_subresource && def.special != Special::Crd {
            match old.get("status") {
                Some(s) => body["status"] = s.clone(),
                None => {
                    if let Some(m) = body.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        body
    }
}

/// The object without managedFields timestamps: equality means a no-op write.
fn strip_times(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(mf) = v
        .get_mut("metadata")
        .and_then(|m| m.get_mut("managedFields"))
        .and_then(Value::as_array_mut)
    {
        for e in mf {
            if let Some(m) = e.as_object_mut() {
                m.remove("time");
            }
        }
    }
    v
}

/// Metadata-only view of an object.
pub(crate) fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| Value::Object(Map::new())),
    })
}
