//! The resource types the fake serves: built-ins plus resources registered by CRDs.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// What a resource needs beyond plain CRUD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    /// Plain stored object.
    None,
    /// `tokenreviews`: create-only, answered from issued tokens, never stored.
    TokenReview,
    /// `customresourcedefinitions`: registers resources.
    Crd,
    /// `namespaces`: cluster scoped, implicit.
    Namespace,
    /// `serviceaccounts`: has the `token` subresource.
    ServiceAccount,
}

/// One served resource (all served versions share storage; no conversion).
#[derive(Debug, Clone)]
pub struct ResourceDef {
    /// API group, empty for core.
    pub group: String,
    /// Served versions, the first one is preferred/storage.
    pub versions: Vec<String>,
    /// Plural resource name.
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// Kind.
    pub kind: String,
    /// Short names (`sbind`).
    pub short_names: Vec<String>,
    /// Categories (`all`, `secretsync`).
    pub categories: Vec<String>,
    /// Namespaced or cluster scoped.
    pub namespaced: bool,
    /// Whether `/status` is a subresource (main writes ignore status).
    pub status_subresource: bool,
    /// Whether `metadata.generation` is maintained.
    pub has_generation: bool,
    /// Whether delete answers with the object rather than a `Status`.
    pub return_deleted_object: bool,
    /// Special behaviour.
    pub special: Special,
    /// Structural schema per version, for validation, defaulting, pruning (CRDs).
    pub schemas: BTreeMap<String, Value>,
    /// Schema carrying only list types (`x-kubernetes-list-type`) for built-ins.
    pub list_schema: Option<Value>,
    /// Printer columns of CRDs: (name, type, jsonPath).
    pub printer_columns: Vec<(String, String, String)>,
}

impl ResourceDef {
    /// `group/plural`: the storage key.
    pub fn storage_key(&self) -> String {
        format!("{}/{}", self.group, self.plural)
    }

    /// `apiVersion` for a version.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_owned()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// Whether this resource can be stored (tokenreviews can't).
    pub fn verbs(&self) -> Vec<&'static str> {
        match self.special {
            Special::TokenReview => vec!["create"],
            _ => vec![
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ],
        }
    }

    /// The schema used for SSA list semantics and strategic merge keys.
    pub fn structure_schema(&self, version: &str) -> Option<&Value> {
        self.schemas.get(version).or(self.list_schema.as_ref())
    }

    /// Whether this is a custom resource (registered by a CRD).
    pub fn is_custom(&self) -> bool {
        !self.schemas.is_empty()
    }
}

fn map_list(key: &[&str], items: Value) -> Value {
    json!({"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": key, "items": items})
}

fn container_schema() -> Value {
    json!({"type": "object", "properties": {
        "env": map_list(&["name"], json!({"type": "object"})),
        "ports": map_list(&["containerPort", "protocol"], json!({"type": "object"})),
        "volumeMounts": map_list(&["mountPath"], json!({"type": "object"})),
        "volumeDevices": map_list(&["devicePath"], json!({"type": "object"})),
    }})
}

fn pod_spec_schema() -> Value {
    json!({"type": "object", "properties": {
        "containers": map_list(&["name"], container_schema()),
        "initContainers": map_list(&["name"], container_schema()),
        "ephemeralContainers": map_list(&["name"], container_schema()),
        "volumes": map_list(&["name"], json!({"type": "object"})),
        "imagePullSecrets": map_list(&["name"], json!({"type": "object"})),
    }})
}

fn workload_schema() -> Value {
    json!({"type": "object", "properties": {
        "spec": {"type": "object", "properties": {
            "template": {"type": "object", "properties": {"spec": pod_spec_schema()}},
        }},
        "status": {"type": "object", "properties": {
            "conditions": map_list(&["type"], json!({"type": "object"})),
        }},
    }})
}

fn cronjob_schema() -> Value {
    json!({"type": "object", "properties": {
        "spec": {"type": "object", "properties": {
            "jobTemplate": {"type": "object", "properties": {
                "spec": {"type": "object", "properties": {
                    "template": {"type": "object", "properties": {"spec": pod_spec_schema()}},
                }},
            }},
        }},
    }})
}

/// Schema of `metadata`, shared by all kinds.
pub(crate) fn metadata_schema() -> Value {
    json!({"type": "object", "properties": {
        "ownerReferences": map_list(&["uid"], json!({"type": "object"})),
        "finalizers": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
        "managedFields": {"type": "array", "x-kubernetes-list-type": "atomic"},
    }})
}

/// List semantics of a ValidatingAdmissionPolicy (the rest of its lists are atomic).
fn policy_list_schema() -> Value {
    json!({"type": "object", "properties": {
        "spec": {"type": "object", "properties": {
            "matchConditions": map_list(&["name"], json!({"type": "object"})),
        }},
        "status": {"type": "object", "properties": {
            "conditions": map_list(&["type"], json!({"type": "object"})),
        }},
    }})
}

fn crd_list_schema() -> Value {
    json!({"type": "object", "properties": {
        "spec": {"type": "object", "properties": {
            "versions": map_list(&["name"], json!({"type": "object"})),
        }},
        "status": {"type": "object", "properties": {
            "conditions": map_list(&["type"], json!({"type": "object"})),
        }},
    }})
}

/// Namespaced or cluster scoped.
#[derive(Clone, Copy, PartialEq)]
enum Scope {
    Ns,
    Cluster,
}

/// One built-in resource, as a row of [`builtins`].
struct Builtin {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    short: &'static [&'static str],
    scope: Scope,
    status: bool,
    generation: bool,
    special: Special,
    list_schema: Option<fn() -> Value>,
}

impl Builtin {
    fn def(&self) -> ResourceDef {
        ResourceDef {
            group: self.group.into(),
            versions: vec![self.version.into()],
            plural: self.plural.into(),
            singular: self.kind.to_lowercase(),
            kind: self.kind.into(),
            short_names: self.short.iter().map(|s| s.to_string()).collect(),
            categories: if ["deployments", "statefulsets", "daemonsets", "cronjobs"]
                .contains(&self.plural)
            {
                vec!["all".into()]
            } else {
                vec![]
            },
            namespaced: self.scope == Scope::Ns,
            status_subresource: self.status,
            has_generation: self.generation,
            return_deleted_object: false,
            special: self.special,
            schemas: BTreeMap::new(),
            list_schema: self.list_schema.map(|f| f()),
            printer_columns: vec![],
        }
    }
}

/// The built-in resources.
pub(crate) fn builtins() -> Vec<ResourceDef> {
    use Scope::{Cluster, Ns};
    // One row per resource: a table reads better than formatted struct literals.
    #[rustfmt::skip]
    let table = [
        Builtin { group: "", version: "v1", plural: "secrets", kind: "Secret", short: &[], scope: Ns, status: false, generation: false, special: Special::None, list_schema: None },
        Builtin { group: "", version: "v1", plural: "pods", kind: "Pod", short: &["po"], scope: Ns, status: true, generation: false, special: Special::None, list_schema: None },
        Builtin { group: "", version: "v1", plural: "configmaps", kind: "ConfigMap", short: &["cm"], scope: Ns, status: false, generation: false, special: Special::None, list_schema: None },
        Builtin { group: "", version: "v1", plural: "serviceaccounts", kind: "ServiceAccount", short: &["sa"], scope: Ns, status: false, generation: false, special: Special::ServiceAccount, list_schema: None },
        Builtin { group: "", version: "v1", plural: "events", kind: "Event", short: &["ev"], scope: Ns, status: false, generation: false, special: Special::None, list_schema: None },
        Builtin { group: "", version: "v1", plural: "namespaces", kind: "Namespace", short: &["ns"], scope: Cluster, status: true, generation: false, special: Special::Namespace, list_schema: None },
        Builtin { group: "events.k8s.io", version: "v1", plural: "events", kind: "Event", short: &["ev"], scope: Ns, status: false, generation: false, special: Special::None, list_schema: None },
        Builtin { group: "apps", version: "v1", plural: "deployments", kind: "Deployment", short: &["deploy"], scope: Ns, status: true, generation: true, special: Special::None, list_schema: Some(workload_schema) },
        Builtin { group: "apps", version: "v1", plural: "statefulsets", kind: "StatefulSet", short: &["sts"], scope: Ns, status: true, generation: true, special: Special::None, list_schema: Some(workload_schema) },
        Builtin { group: "apps", version: "v1", plural: "daemonsets", kind: "DaemonSet", short: &["ds"], scope: Ns, status: true, generation: true, special: Special::None, list_schema: Some(workload_schema) },
        Builtin { group: "batch", version: "v1", plural: "cronjobs", kind: "CronJob", short: &["cj"], scope: Ns, status: true, generation: true, special: Special::None, list_schema: Some(cronjob_schema) },
        Builtin { group: "coordination.k8s.io", version: "v1", plural: "leases", kind: "Lease", short: &[], scope: Ns, status: false, generation: false, special: Special::None, list_schema: None },
        Builtin { group: "rbac.authorization.k8s.io", version: "v1", plural: "roles", kind: "Role", short: &[], scope: Ns, status: false, generation: false, special: Special::None, list_schema: None },
        Builtin { group: "rbac.authorization.k8s.io", version: "v1", plural: "rolebindings", kind: "RoleBinding", short: &[], scope: Ns, status: false, generation: false, special: Special::None, list_schema: None },
        Builtin { group: "rbac.authorization.k8s.io", version: "v1", plural: "clusterroles", kind: "ClusterRole", short: &[], scope: Cluster, status: false, generation: false, special: Special::None, list_schema: None },
        Builtin { group: "rbac.authorization.k8s.io", version: "v1", plural: "clusterrolebindings", kind: "ClusterRoleBinding", short: &[], scope: Cluster, status: false, generation: false, special: Special::None, list_schema: None },
        Builtin { group: "admissionregistration.k8s.io", version: "v1", plural: "validatingadmissionpolicies", kind: "ValidatingAdmissionPolicy", short: &[], scope: Cluster, status: true, generation: true, special: Special::None, list_schema: Some(policy_list_schema) },
        Builtin { group: "admissionregistration.k8s.io", version: "v1", plural: "validatingadmissionpolicybindings", kind: "ValidatingAdmissionPolicyBinding", short: &[], scope: Cluster, status: false, generation: true, special: Special::None, list_schema: None },
        Builtin { group: "authentication.k8s.io", version: "v1", plural: "tokenreviews", kind: "TokenReview", short: &[], scope: Cluster, status: false, generation: false, special: Special::TokenReview, list_schema: None },
        Builtin { group: "apiextensions.k8s.io", version: "v1", plural: "customresourcedefinitions", kind: "CustomResourceDefinition", short: &["crd", "crds"], scope: Cluster, status: true, generation: true, special: Special::Crd, list_schema: Some(crd_list_schema) },
    ];
    table.iter().map(Builtin::def).collect()
}

/// Parse a CRD object into the resource it defines.
pub(crate) fn from_crd(crd: &Value) -> Result<ResourceDef, String> {
    let spec = crd.get("spec").ok_or("spec: Required value")?;
    let group = spec
        .get("group")
        .and_then(Value::as_str)
        .ok_or("spec.group: Required value")?;
    let names = spec.get("names").ok_or("spec.names: Required value")?;
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let plural = s(names, "plural").ok_or("spec.names.plural: Required value")?;
    let kind = s(names, "kind").ok_or("spec.names.kind: Required value")?;
    let singular = s(names, "singular").unwrap_or_else(|| kind.to_lowercase());
    let strs = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let short_names = strs(names.get("shortNames"));
    let categories = strs(names.get("categories"));
    let scope = s(spec, "scope").unwrap_or_else(|| "Namespaced".into());
    let versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .ok_or("spec.versions: Required value")?;
    let mut served = Vec::new();
    let mut schemas = BTreeMap::new();
    let mut status_subresource = false;
    let mut printer_columns = Vec::new();
    // storage version first, then the others in order
    let mut ordered: Vec<&Value> = versions
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .collect();
    ordered.extend(
        versions
            .iter()
            .filter(|v| v.get("storage").and_then(Value::as_bool) != Some(true)),
    );
    for v in ordered {
        let name = s(v, "name").ok_or("spec.versions[].name: Required value")?;
        if v.get("served").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        if v.get("subresources")
            .and_then(|s| s.get("status"))
            .is_some()
        {
            status_subresource = true;
        }
        if let Some(schema) = v.get("schema").and_then(|s| s.get("openAPIV3Schema")) {
            schemas.insert(name.clone(), schema.clone());
        } else {
            schemas.insert(
                name.clone(),
                json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
            );
        }
        if printer_columns.is_empty()
            && let Some(cols) = v.get("additionalPrinterColumns").and_then(Value::as_array)
        {
            for c in cols {
                if let (Some(n), Some(p)) = (s(c, "name"), s(c, "jsonPath")) {
                    printer_columns.push((n, s(c, "type").unwrap_or_else(|| "string".into()), p));
                }
            }
        }
        served.push(name);
    }
    if served.is_empty() {
        return Err("spec.versions: must have at least one served version".into());
    }
    Ok(ResourceDef {
        group: group.to_owned(),
        versions: served,
        plural,
        singular,
        kind,
        short_names,
        categories,
        namespaced: scope != "Cluster",
        status_subresource,
        has_generation: true,
        return_deleted_object: true,
        special: Special::None,
        schemas,
        list_schema: None,
        printer_columns,
    })
}

/// A position in a (structural) schema, used to find list and map semantics.
#[derive(Clone, Copy)]
pub(crate) struct Cursor<'a> {
    pub node: Option<&'a Value>,
}

/// How a list merges.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ListType {
    Atomic,
    Set,
    Map(Vec<String>),
}

impl<'a> Cursor<'a> {
    pub fn new(node: Option<&'a Value>) -> Self {
        Self { node }
    }

    pub fn field(&self, name: &str) -> Cursor<'a> {
        let Some(n) = self.node else {
            return Cursor { node: None };
        };
        if let Some(p) = n.get("properties").and_then(|p| p.get(name)) {
            return Cursor { node: Some(p) };
        }
        match n.get("additionalProperties") {
            Some(ap) if ap.is_object() => Cursor { node: Some(ap) },
            _ => Cursor { node: None },
        }
    }

    pub fn items(&self) -> Cursor<'a> {
        Cursor {
            node: self.node.and_then(|n| n.get("items")),
        }
    }

    pub fn list_type(&self) -> ListType {
        let Some(n) = self.node else {
            return ListType::Atomic;
        };
        match n.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => ListType::Set,
            Some("map") => {
                let keys: Vec<String> = n
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|k| k.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                if keys.is_empty() {
                    ListType::Atomic
                } else {
                    ListType::Map(keys)
                }
            }
            _ => ListType::Atomic,
        }
    }

    pub fn atomic_map(&self) -> bool {
        self.node
            .and_then(|n| n.get("x-kubernetes-map-type"))
            .and_then(Value::as_str)
            == Some("atomic")
    }
}

/// The schema of a whole object of `def`: the structural schema with the shared metadata
/// schema plugged in. Unknown parts are `None` cursors (maps granular, lists atomic).
pub(crate) fn combined_schema(def: &ResourceDef, version: &str) -> Value {
    let mut root = def
        .structure_schema(version)
        .cloned()
        .unwrap_or_else(|| json!({"type": "object"}));
    if !root.is_object() {
        root = json!({"type": "object"});
    }
    if root.get("properties").is_none_or(|p| !p.is_object()) {
        root["properties"] = json!({});
    }
    root["properties"]["metadata"] = metadata_schema();
    root
}
