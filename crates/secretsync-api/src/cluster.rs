//! The cluster-scoped kinds: `ClusterSecretSource` (one backend connection granted to
//! chosen namespaces) and `ClusterSecretBinding` (one SecretBinding stamped into many
//! namespaces).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::source::SecretSourceSpec;
use crate::{Condition, SecretBindingSpec, SecretSourceStatus};

/// One backend connection for the whole cluster, usable by SecretBindings in the
/// namespaces it admits (`namespaceSelector` and/or `namespaces`). Its spec is a
/// SecretSource's spec, except that every reference to a Secret or ServiceAccount names its
/// namespace.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "secretsync.dev",
    version = "v1alpha1",
    kind = "ClusterSecretSource",
    shortname = "cssrc",
    category = "secretsync",
    status = "SecretSourceStatus",
    doc = "ClusterSecretSource is one connection to a secret backend for the whole cluster, usable by SecretBindings in the namespaces it admits."
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "has(self.namespaceSelector) || (has(self.namespaces) && size(self.namespaces) > 0)"
).message("at least one of spec.namespaceSelector or spec.namespaces must be set: they say which namespaces may use this source"))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.vault) || !has(self.vault.auth.token) || has(self.vault.auth.token.secretRef.namespace)"
).message("spec.vault.auth.token.secretRef.namespace is required in a ClusterSecretSource"))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.vault) || !has(self.vault.auth.appRole) || has(self.vault.auth.appRole.secretRef.namespace)"
).message("spec.vault.auth.appRole.secretRef.namespace is required in a ClusterSecretSource"))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.vault) || !has(self.vault.auth.kubernetes) || !has(self.vault.auth.kubernetes.serviceAccountName) || has(self.vault.auth.kubernetes.serviceAccountNamespace)"
).message("spec.vault.auth.kubernetes.serviceAccountNamespace is required with serviceAccountName in a ClusterSecretSource"))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.aws) || !has(self.aws.auth) || !has(self.aws.auth.secretRef) || has(self.aws.auth.secretRef.namespace)"
).message("spec.aws.auth.secretRef.namespace is required in a ClusterSecretSource"))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.kubernetes) || has(self.kubernetes.namespace)"
).message("spec.kubernetes.namespace is required in a ClusterSecretSource: it names where the Secrets are read"))]
pub struct ClusterSecretSourceSpec {
    /// The namespaces that may use this source. Evaluated against the namespace's labels
    /// at every sync: relabelling a namespace so it no longer matches stops its bindings
    /// (`SourceNotAllowed`), their Secrets keep the last data.
    #[serde(flatten)]
    pub admitted: NamespaceSelection,
    /// The backend and how it is read, as in a SecretSource; every reference to a
    /// namespaced object names its namespace.
    #[serde(flatten)]
    pub backend: SecretSourceSpec,
}

impl ClusterSecretSourceSpec {
    /// The backend part, as a SecretSource spec (what backends are built from).
    pub fn source_spec(&self) -> SecretSourceSpec {
        self.backend.clone()
    }

    /// Whether a namespace named `name` with `labels` may use this source.
    pub fn admits(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.admitted.picks(name, labels)
    }
}

/// One SecretBinding stamped into every namespace the ClusterSecretBinding selects: the
/// operator keeps a SecretBinding of the same name in each (owned by this object, label
/// `secretsync.dev/cluster-binding`), creates it when a namespace starts matching, deletes
/// it when it stops and reverts edits to it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "secretsync.dev",
    version = "v1alpha1",
    kind = "ClusterSecretBinding",
    shortname = "csbind",
    category = "secretsync",
    status = "ClusterSecretBindingStatus",
    doc = "ClusterSecretBinding keeps one SecretBinding, reading a ClusterSecretSource, in every namespace it selects."
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "has(self.namespaceSelector) || (has(self.namespaces) && size(self.namespaces) > 0)"
).message("at least one of spec.namespaceSelector or spec.namespaces must be set: they say which namespaces get the SecretBinding"))]
#[x_kube(validation = kube::core::Rule::new(
    "has(self.bindingSpec.sourceRef.kind) && self.bindingSpec.sourceRef.kind == 'ClusterSecretSource'"
).message("spec.bindingSpec.sourceRef.kind must be ClusterSecretSource: a SecretSource belongs to one namespace"))]
pub struct ClusterSecretBindingSpec {
    /// The namespaces that get the SecretBinding (a listed namespace that does not exist
    /// is reported in `status.failedNamespaces`).
    #[serde(flatten)]
    pub selected: NamespaceSelection,
    /// The spec of every generated SecretBinding. Its `sourceRef` names a
    /// ClusterSecretSource.
    pub binding_spec: SecretBindingSpec,
}

impl ClusterSecretBindingSpec {
    /// Whether a namespace named `name` with `labels` gets the SecretBinding.
    pub fn selects(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.selected.picks(name, labels)
    }
}

/// Observed state of a ClusterSecretBinding.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSecretBindingStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Namespaces holding the generated SecretBinding, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// How many namespaces hold it (the `Namespaces` column).
    #[serde(default)]
    pub provisioned_count: i64,
    /// Selected namespaces where the SecretBinding could not be written, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_namespaces: Vec<FailedNamespace>,
    /// `Ready` is `True` (reason `Provisioned`) when every selected namespace holds the
    /// SecretBinding, `False` (reason `ProvisionFailed`) otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::schema::conditions")]
    pub conditions: Vec<Condition>,
}

/// A namespace a ClusterSecretBinding could not provision.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FailedNamespace {
    /// The namespace.
    pub namespace: String,
    /// What went wrong (no secret values).
    pub message: String,
}

/// Which namespaces a cluster kind applies to: those whose labels match
/// `namespaceSelector`, and those named in `namespaces`. It carries no CEL rule of its
/// own: of several flattened structs only the first one's rules reach the parent schema,
/// so each kind states "at least one of the two" itself.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSelection {
    /// Namespaces whose labels match (an empty selector matches every namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Namespaces by name, in addition to those the selector matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub namespaces: Vec<String>,
}

impl NamespaceSelection {
    /// Whether the namespace named `name` with `labels` is picked, by name or by selector.
    pub fn picks(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.namespaces.iter().any(|n| n == name)
            || self
                .namespace_selector
                .as_ref()
                .is_some_and(|s| crate::selector::matches(s, labels))
    }
}
