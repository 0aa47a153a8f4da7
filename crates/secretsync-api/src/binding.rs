//! `SecretBinding`: which remote keys go into which Kubernetes Secret.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Condition;
use crate::constants::DEFAULT_REFRESH_INTERVAL;

fn default_refresh_interval() -> String {
    DEFAULT_REFRESH_INTERVAL.to_string()
}

/// Maps keys of a SecretSource (same namespace) into one Kubernetes Secret and keeps it in
/// sync.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "secretsync.dev",
    version = "v1alpha1",
    kind = "SecretBinding",
    namespaced,
    shortname = "sbind",
    category = "secretsync",
    status = "SecretBindingStatus",
    doc = "SecretBinding maps keys of a SecretSource into one Kubernetes Secret, keeps it in sync, and can restart workloads when it rotates."
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "(has(self.data) && size(self.data) > 0) || (has(self.dataFrom) && size(self.dataFrom) > 0)"
).message("at least one of spec.data or spec.dataFrom must be set"))]
pub struct SecretBindingSpec {
    /// The source to read from: a SecretSource in the same namespace, or a
    /// ClusterSecretSource that admits this namespace.
    pub source_ref: SourceRef,
    /// How often the backend is read again. Kubernetes-style duration (`30s`, `5m`, `1h`);
    /// `0` syncs only when the binding, its source or the Secret changes. Default `1h`.
    /// Refreshes are jittered by ±10%.
    #[serde(default = "default_refresh_interval")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^(0|([0-9]+(ms|s|m|h))+)$')")
        .message("spec.refreshInterval must be a duration such as 30s, 5m, 1h30m or 0"))]
    pub refresh_interval: String,
    /// The Secret to write.
    #[serde(default)]
    pub target: TargetSpec,
    /// Single keys: each entry becomes one key of the Secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub data: Vec<DataItem>,
    /// Many keys at once: every field of a JSON value (`extract`) or every remote key
    /// matching a glob (`find`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub data_from: Vec<DataFromItem>,
    /// Whether rotations of this Secret may restart workloads that opted in.
    #[serde(default)]
    pub rollout: RolloutSpec,
}

/// Reference to a SecretSource in the binding's namespace, or to a ClusterSecretSource
/// that admits the binding's namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SourceRef {
    /// `SecretSource` (default) or `ClusterSecretSource`.
    #[serde(default)]
    pub kind: SourceKind,
    /// Name of the source.
    pub name: String,
}

/// Which kind of source a binding reads.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// A SecretSource in the binding's namespace.
    #[default]
    SecretSource,
    /// A cluster-scoped ClusterSecretSource; the binding's namespace must be admitted.
    ClusterSecretSource,
}

impl SourceKind {
    /// The kind's name.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::SecretSource => "SecretSource",
            SourceKind::ClusterSecretSource => "ClusterSecretSource",
        }
    }
}

fn default_secret_type() -> String {
    "Opaque".to_string()
}

/// The Kubernetes Secret a binding writes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TargetSpec {
    /// Secret name. Default: the binding's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Secret type. Default `Opaque`.
    #[serde(rename = "type", default = "default_secret_type")]
    pub type_: String,
    /// Extra labels on the Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::schema::string_map")]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations on the Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::schema::string_map")]
    pub annotations: BTreeMap<String, String>,
    /// `Owner` (default): create the Secret, owned by the binding (deleted with it); never
    /// take over a Secret someone else created. `Merge`: write this binding's keys into an
    /// existing Secret, leaving other keys alone, and remove them when the binding is
    /// deleted. `Orphan`: create the Secret without owner; it outlives the binding.
    #[serde(default)]
    pub creation_policy: CreationPolicy,
    /// Renders the Secret's keys (and, optionally, extra labels and annotations) from the
    /// resolved values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateSpec>,
}

impl Default for TargetSpec {
    fn default() -> Self {
        TargetSpec {
            name: None,
            type_: default_secret_type(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            creation_policy: CreationPolicy::default(),
            template: None,
        }
    }
}

/// How a binding owns its Secret.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CreationPolicy {
    /// Create and own the Secret (garbage-collected with the binding).
    #[default]
    Owner,
    /// Write keys into an existing Secret; other writers' keys stay.
    Merge,
    /// Create the Secret without an owner.
    Orphan,
}

/// Template rendering of the Secret's keys.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TemplateSpec {
    /// `Replace` (default): the Secret holds only the templated keys. `Merge`: the
    /// templated keys plus the resolved keys (templated keys win).
    #[serde(default)]
    pub merge_policy: MergePolicy,
    /// Secret key → minijinja template. Variables are the resolved keys, e.g.
    /// `postgres://{{ username }}:{{ password }}@db:5432/shop`. Besides minijinja's
    /// built-in filters there are `b64encode`, `b64decode`, `fromjson`, `tojson`, `sha256`,
    /// `trim`, `upper`, `lower` and `indent`. Values that are not UTF-8 can only be used
    /// through `b64encode` (or `sha256`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::schema::string_map")]
    pub data: BTreeMap<String, String>,
    /// Templates kept in ConfigMaps of the binding's namespace: each listed key of a
    /// ConfigMap is a template, with the same variables and functions as `data`, for the
    /// Secret key of the same name. A Secret key that `data` names too is rendered from
    /// `data`: the inline template wins, so a binding can override one template of a shared
    /// ConfigMap. Two `templateFrom` items naming one key are a `KeyCollision`. A
    /// ConfigMap or key that does not exist fails the binding with `TemplateNotFound` and
    /// leaves the Secret as it is. An edit of a ConfigMap re-renders the Secret within
    /// seconds from the values already read (without reading the backend again while they
    /// are cached). Whoever may edit the ConfigMap decides what the Secret holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub template_from: Vec<TemplateFrom>,
    /// Labels and annotations whose values are templates, with the same variables as
    /// `data`. They are added to the Secret's metadata (over `target.labels` and
    /// `target.annotations` of the same name). Metadata is readable by anyone who may list
    /// Secrets: render fingerprints or versions into it, not secret values.
    #[serde(default, skip_serializing_if = "TemplateMetadata::is_empty")]
    pub metadata: TemplateMetadata,
}

/// Where templates come from: a ConfigMap (the only kind so far).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TemplateFrom {
    /// A ConfigMap in the binding's namespace whose keys are templates.
    pub config_map: TemplateConfigMap,
}

/// ConfigMap keys used as templates.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TemplateConfigMap {
    /// Name of the ConfigMap, in the binding's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The keys of the ConfigMap's `data` to use, at least one. Each key's value is a
    /// template for the Secret key of the same name.
    #[schemars(length(min = 1, max = 100))]
    pub items: Vec<TemplateItem>,
}

/// One template in a ConfigMap.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TemplateItem {
    /// The ConfigMap key holding the template, and the Secret key it renders.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[-._a-zA-Z0-9]+$')")
        .message("spec.target.template.templateFrom[].configMap.items[].key must consist of alphanumerics, '-', '_' or '.'"))]
    pub key: String,
}

/// Templated metadata of the Secret.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    /// Label key → template of its value. The rendered value must be a valid label value
    /// (at most 63 characters of alphanumerics, `-`, `_` and `.`, starting and ending
    /// alphanumeric, or empty).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::schema::string_map")]
    pub labels: BTreeMap<String, String>,
    /// Annotation key → template of its value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::schema::string_map")]
    pub annotations: BTreeMap<String, String>,
}

impl TemplateMetadata {
    /// Whether no label or annotation is templated.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.annotations.is_empty()
    }
}

/// What a template does with the resolved keys.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MergePolicy {
    /// Only templated keys.
    #[default]
    Replace,
    /// Templated and resolved keys.
    Merge,
}

/// One Secret key from one remote key.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DataItem {
    /// Key in the Secret.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[-._a-zA-Z0-9]+$')")
        .message("spec.data[].secretKey must consist of alphanumerics, '-', '_' or '.'"))]
    pub secret_key: String,
    /// The remote value.
    pub remote_ref: RemoteRef,
    /// When true, a remote key (or property) that does not exist leaves this Secret key
    /// out instead of failing the binding; `status.missingKeys` lists it, and it is synced
    /// at the first refresh that finds it. Other errors still fail the binding.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
}

/// A remote key of the source.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct RemoteRef {
    /// Remote key, relative to the source's prefix, e.g. `database/creds`.
    pub key: String,
    /// Top-level field of a JSON value (or of a Vault secret's map) to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    /// Vault KV v2 version number, or AWS version stage (`AWSPREVIOUS`) or version id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// How the value is decoded before use (after `property` is picked; with `extract`,
    /// each field): `None` (default), `Base64`, `Base64URL`, or `Auto` (base64 or
    /// base64url when the value decodes cleanly, else the value as it is).
    #[serde(default, skip_serializing_if = "DecodingStrategy::is_none")]
    pub decoding_strategy: DecodingStrategy,
}

/// How a remote value is decoded before it goes into the Secret (or a template).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DecodingStrategy {
    /// The value as the backend returned it.
    #[default]
    None,
    /// Standard base64 (`+`, `/`; padding optional; line breaks ignored).
    Base64,
    /// URL-safe base64 (`-`, `_`; padding optional; line breaks ignored).
    #[serde(rename = "Base64URL")]
    Base64Url,
    /// Base64 or URL-safe base64 when the whole value decodes cleanly, else the value as
    /// it is. A plain value that happens to be valid base64 (`test`) is decoded too.
    Auto,
}

impl DecodingStrategy {
    /// Whether this is `None` (no decoding).
    pub fn is_none(&self) -> bool {
        *self == DecodingStrategy::None
    }

    /// The strategy's name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            DecodingStrategy::None => "None",
            DecodingStrategy::Base64 => "Base64",
            DecodingStrategy::Base64Url => "Base64URL",
            DecodingStrategy::Auto => "Auto",
        }
    }
}

/// Many keys at once; exactly one of `extract` or `find`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.extract) != has(self.find)")
    .message("each spec.dataFrom[] entry needs exactly one of extract or find"))]
pub struct DataFromItem {
    /// Every top-level field of this JSON value becomes a Secret key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract: Option<RemoteRef>,
    /// Every remote key matching the glob becomes a Secret key (named after the remote
    /// key, with characters outside `[-._a-zA-Z0-9]` turned into `_`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub find: Option<FindSpec>,
}

/// Glob search over the source's keys.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FindSpec {
    /// Glob (`*`, `?`, `[..]`) matched against whole remote keys (relative to the source's
    /// prefix); `*` does not cross `/`, `**` does.
    pub name: String,
    /// How each found value is decoded: `None` (default), `Base64`, `Base64URL` or `Auto`,
    /// as in `remoteRef.decodingStrategy`.
    #[serde(default, skip_serializing_if = "DecodingStrategy::is_none")]
    pub decoding_strategy: DecodingStrategy,
}

fn default_true() -> bool {
    true
}

/// Rollout settings.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// When true (default), a rotation of this Secret restarts Deployments, StatefulSets
    /// and DaemonSets that opted in with the `secretsync.dev/restart-on-rotation`
    /// annotation.
    #[serde(default = "default_true")]
    pub restart: bool,
}

impl Default for RolloutSpec {
    fn default() -> Self {
        RolloutSpec { restart: true }
    }
}

/// Observed state of a SecretBinding.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretBindingStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` is `True` with reason `Synced` when the Secret holds the backend's current
    /// data; otherwise `False` with the reason (e.g. `SecretNotFound`,
    /// `BackendUnavailable`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::schema::conditions")]
    pub conditions: Vec<Condition>,
    /// Last successful read of the backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::time")]
    pub last_sync_time: Option<Time>,
    /// Last time the synced data changed after the first sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::time")]
    pub last_rotation_time: Option<Time>,
    /// Hex HMAC-SHA256 of the synced data (keyed, so it reveals nothing about the values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_hash: Option<String>,
    /// Keys of the synced Secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub synced_keys: Vec<String>,
    /// Remote keys of `optional` `spec.data` entries that were not found at the last sync
    /// (`KEY`, or `KEY#PROPERTY` when only the property is missing), sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_keys: Vec<String>,
    /// Workloads restarted at the last rotation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restarted: Vec<RestartRecord>,
}

/// One workload restart.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestartRecord {
    /// `Deployment`, `StatefulSet` or `DaemonSet`.
    pub kind: String,
    /// Workload name (binding's namespace).
    pub name: String,
    /// When the restart patch was written.
    #[schemars(schema_with = "crate::schema::time")]
    pub at: Time,
}

impl SecretBinding {
    /// The target Secret name: `spec.target.name` or the binding's name.
    pub fn target_name(&self) -> String {
        self.spec
            .target
            .name
            .clone()
            .or_else(|| self.metadata.name.clone())
            .unwrap_or_default()
    }
}
