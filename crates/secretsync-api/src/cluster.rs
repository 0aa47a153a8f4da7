//! The cluster-scoped kinds: `ClusterSecretSource` (one backend connection granted to
//! chosen namespaces) and `ClusterSecretBinding` (one SecretBinding stamped into many
//! namespaces).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::source::{AwsSource, CacheSpec, EnvSource, FileSource, SecretSourceSpec, VaultSource};
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
    printcolumn = r#"{"name":"Backend","type":"string","jsonPath":".status.backend"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    doc = "ClusterSecretSource is one connection to a secret backend for the whole cluster, usable by SecretBindings in the namespaces it admits."
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "[has(self.env), has(self.file), has(self.vault), has(self.aws)].filter(x, x).size() == 1"
).message("exactly one of spec.env, spec.file, spec.vault or spec.aws must be set"))]
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
pub struct ClusterSecretSourceSpec {
    /// Namespaces whose labels match may use this source. Evaluated against the
    /// namespace's labels at every sync: relabelling a namespace so it no longer matches
    /// stops its bindings (`SourceNotAllowed`), their Secrets keep the last data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Namespaces allowed by name, in addition to those the selector matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub namespaces: Vec<String>,
    /// Prepended to every remote key read through this source; bindings never see it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Read cache shared by every binding, in every namespace, that uses this source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSpec>,
    /// Read environment variables of the operator process (only those allowed by its
    /// `--env-allow` globs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<EnvSource>,
    /// Read files below the operator's `--file-root`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileSource>,
    /// Read a HashiCorp Vault or OpenBao KV engine (v1 or v2). Credential Secrets and
    /// service accounts name their namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<VaultSource>,
    /// Read AWS Secrets Manager or AWS Systems Manager Parameter Store (`service`). A
    /// credential Secret names its namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsSource>,
}

impl ClusterSecretSourceSpec {
    /// The backend part, as a SecretSource spec (what backends are built from).
    pub fn source_spec(&self) -> SecretSourceSpec {
        SecretSourceSpec {
            prefix: self.prefix.clone(),
            cache: self.cache.clone(),
            env: self.env.clone(),
            file: self.file.clone(),
            vault: self.vault.clone(),
            aws: self.aws.clone(),
        }
    }

    /// Whether a namespace named `name` with `labels` may use this source.
    pub fn admits(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        selects(
            self.namespace_selector.as_ref(),
            &self.namespaces,
            name,
            labels,
        )
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
    printcolumn = r#"{"name":"Source","type":"string","jsonPath":".spec.bindingSpec.sourceRef.name"}"#,
    printcolumn = r#"{"name":"Namespaces","type":"integer","jsonPath":".status.provisionedCount"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
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
    /// Namespaces whose labels match get the SecretBinding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Namespaces that get the SecretBinding by name, in addition to those the selector
    /// matches (a listed namespace that does not exist is reported in
    /// `status.failedNamespaces`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub namespaces: Vec<String>,
    /// The spec of every generated SecretBinding. Its `sourceRef` names a
    /// ClusterSecretSource.
    pub binding_spec: SecretBindingSpec,
}

impl ClusterSecretBindingSpec {
    /// Whether a namespace named `name` with `labels` gets the SecretBinding.
    pub fn selects(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        selects(
            self.namespace_selector.as_ref(),
            &self.namespaces,
            name,
            labels,
        )
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

/// Whether a namespace is picked by `selector` or by name in `names`.
fn selects(
    selector: Option<&LabelSelector>,
    names: &[String],
    name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    names.iter().any(|n| n == name) || selector.is_some_and(|s| crate::selector::matches(s, labels))
}
