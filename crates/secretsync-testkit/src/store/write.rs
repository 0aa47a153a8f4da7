//! Create, update (PUT), patch (merge, JSON, strategic merge) and the commit every change
//! of an existing object goes through: preserved metadata, validation, generation, managed
//! fields, admission policies, no-op detection and the end of a finalizer-blocked deletion.

use serde_json::{Map, Value, json};

use super::{Inner, ObjKey, WriteOpts, WriteTarget, ns_key};
use crate::admission::Operation;
use crate::managed::{self, Scope};
use crate::resources::{self, ResourceDef, Special};
use crate::status::ApiError;
use crate::util::{finalizers, meta_mut, meta_str, new_uid, now_rfc3339, spec_part};

impl Inner {
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

    pub(super) fn create_inner(
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
        new_metadata(meta_mut(&mut obj), ns, prepared)?;
        self.generate_name(def, ns, &mut obj);
        initial_status(def, &mut obj);
        self.prepare(def, version, &mut obj, opts.strict)?;
        let name = meta_str(&obj, "name").unwrap_or_default().to_owned();
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
        let at = WriteTarget {
            def,
            version,
            ns,
            name: &name,
            status: false,
        };
        // admission runs before the store finds a conflict, as on a real server
        self.admit(at, Operation::Create, &obj, None, opts)?;
        if self.get(def, ns, &name).is_some() {
            return Err(ApiError::already_exists(&def.group, &def.plural, &name));
        }
        if opts.dry_run {
            return Ok(obj);
        }
        if let Some(ns) = ns {
            self.ensure_namespace(ns);
        }
        let obj = self.store(&def.storage_key(), ns_key(ns, &name), obj, "ADDED", None);
        if def.special == Special::Crd {
            self.register_crd(&obj);
        }
        self.collect_if_dangling(def, ns, &name);
        Ok(obj)
    }

    /// `metadata.generateName`: a free name with a random suffix when no name is given.
    fn generate_name(&self, def: &ResourceDef, ns: Option<&str>, obj: &mut Value) {
        if meta_str(obj, "name").is_some_and(|n| !n.is_empty()) {
            return;
        }
        let Some(g) = meta_str(obj, "generateName").filter(|g| !g.is_empty()) else {
            return;
        };
        let g = g.to_owned();
        let mut name = format!("{g}{}", crate::util::name_suffix());
        while self.get(def, ns, &name).is_some() {
            name = format!("{g}{}", crate::util::name_suffix());
        }
        meta_mut(obj).insert("name".into(), json!(name));
    }

    /// Stores `obj` under `at` with a new resource version and tells the watches.
    pub(super) fn store(
        &mut self,
        key: &str,
        at: ObjKey,
        mut obj: Value,
        ty: &'static str,
        old: Option<Value>,
    ) -> Value {
        self.set_rv(&mut obj);
        self.objects
            .entry(key.to_owned())
            .or_default()
            .insert(at, obj.clone());
        self.emit(key, ty, obj.clone(), old);
        obj
    }

    /// Stores `new`, the changed version of `old`, as object `name` of `def`.
    pub(super) fn store_modified(
        &mut self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        new: Value,
        old: Value,
    ) -> Value {
        self.store(
            &def.storage_key(),
            ns_key(ns, name),
            new,
            "MODIFIED",
            Some(old),
        )
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
    pub fn update(
        &mut self,
        at: WriteTarget<'_>,
        body: Value,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        let (def, version, ns, name, status) = at.parts();
        let old = self.existing(def, ns, name)?;
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
    pub fn patch(
        &mut self,
        at: WriteTarget<'_>,
        patch_type: PatchType,
        body: &Value,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        let (def, version, ns, name, status) = at.parts();
        let old = self.existing(def, ns, name)?;
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

    /// Validate and store an update; handles no-ops, generation, managed fields and the
    /// end of a finalizer-blocked deletion.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn commit(
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
        keep_metadata(&old, meta_mut(&mut new), ns, name);
        if record {
            // managedFields of the stored object are the base of the update
            let mf = old.get("metadata").and_then(|m| m.get("managedFields"));
            set_or_remove(meta_mut(&mut new), "managedFields", mf);
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
        // before the no-op check: a real server admits an update that changes nothing too
        let at = WriteTarget {
            def,
            version,
            ns,
            name,
            status: scope == Scope::Status,
        };
        self.admit(at, Operation::Update, &new, Some(&old), opts)?;
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
        let new = self.store_modified(def, ns, name, new, old);
        if def.special == Special::Crd {
            self.register_crd(&new);
        }
        self.collect_if_dangling(def, ns, name);
        Ok(new)
    }
}

/// The metadata of a new object: the request's namespace (a different one in the body is
/// a `400`), no server-owned fields, a creation timestamp. `prepared` keeps managedFields
/// (computed by an apply that creates).
fn new_metadata(
    m: &mut Map<String, Value>,
    ns: Option<&str>,
    prepared: bool,
) -> Result<(), ApiError> {
    if let (Some(ns), Some(b)) = (ns, m.get("namespace").and_then(Value::as_str))
        && !b.is_empty()
        && b != ns
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    set_namespace(m, ns);
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
    Ok(())
}

/// The status a new object starts with: none where status is a subresource, the
/// conditions of a CRD, `Active` for a namespace.
fn initial_status(def: &ResourceDef, obj: &mut Value) {
    if def.status_subresource
        && def.special != Special::Namespace
        && let Some(m) = obj.as_object_mut()
    {
        m.remove("status");
    }
    match def.special {
        Special::Crd => Inner::crd_status(obj),
        Special::Namespace => obj["status"] = json!({"phase": "Active"}),
        _ => {}
    }
}

/// The metadata an update cannot change, taken from the stored object `old`.
fn keep_metadata(old: &Value, m: &mut Map<String, Value>, ns: Option<&str>, name: &str) {
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
        set_or_remove(m, f, om.get(f));
    }
    set_namespace(m, ns);
    m.insert("name".into(), json!(name));
}

/// `metadata.namespace` = the request's namespace (none for cluster-scoped objects).
pub(super) fn set_namespace(m: &mut Map<String, Value>, ns: Option<&str>) {
    match ns {
        Some(ns) => {
            m.insert("namespace".into(), json!(ns));
        }
        None => {
            m.remove("namespace");
        }
    }
}

fn set_or_remove(m: &mut Map<String, Value>, key: &str, value: Option<&Value>) {
    match value {
        Some(v) => {
            m.insert(key.into(), v.clone());
        }
        None => {
            m.remove(key);
        }
    }
}

/// Patch content types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchType {
    Merge,
    Strategic,
    Json,
}

pub(super) fn check_kind(def: &ResourceDef, version: &str, body: &Value) -> Result<(), ApiError> {
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

pub(super) fn scope_of(def: &ResourceDef, status: bool) -> Scope {
    if status {
        Scope::Status
    } else {
        Scope::Main {
            strip_status: def.status_subresource,
        }
    }
}

/// Keep only what a write to this endpoint may change.
pub(super) fn merge_scope(
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
