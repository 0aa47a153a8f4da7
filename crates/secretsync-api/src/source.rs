//! `SecretSource`: one connection to a secret backend.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Condition;
use crate::constants::{
    DEFAULT_VAULT_APPROLE_MOUNT, DEFAULT_VAULT_KUBERNETES_MOUNT, DEFAULT_VAULT_MOUNT,
};

/// Where secret values come from. Exactly one of `env`, `file`, `vault`, `aws` or
/// `kubernetes` is set.
/// Bindings in the same namespace refer to a source by name.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "secretsync.dev",
    version = "v1alpha1",
    kind = "SecretSource",
    namespaced,
    shortname = "ssrc",
    category = "secretsync",
    status = "SecretSourceStatus",
    doc = "SecretSource is one connection to a secret backend (env, file, Vault/OpenBao, AWS Secrets Manager / Parameter Store, or Secrets of its own namespace).",
    // Not on the spec: a ClusterSecretSource flattens the spec into its own, and these
    // hold only for the namespaced kind.
    validation = kube::core::Rule::new(
        "!has(self.spec.vault) || !has(self.spec.vault.auth.token) || !has(self.spec.vault.auth.token.secretRef.namespace)"
    ).message("spec.vault.auth.token.secretRef.namespace is only for a ClusterSecretSource: a SecretSource reads Secrets in its own namespace"),
    validation = kube::core::Rule::new(
        "!has(self.spec.vault) || !has(self.spec.vault.auth.appRole) || !has(self.spec.vault.auth.appRole.secretRef.namespace)"
    ).message("spec.vault.auth.appRole.secretRef.namespace is only for a ClusterSecretSource: a SecretSource reads Secrets in its own namespace"),
    validation = kube::core::Rule::new(
        "!has(self.spec.vault) || !has(self.spec.vault.auth.kubernetes) || !has(self.spec.vault.auth.kubernetes.serviceAccountNamespace)"
    ).message("spec.vault.auth.kubernetes.serviceAccountNamespace is only for a ClusterSecretSource: a SecretSource uses service accounts of its own namespace"),
    validation = kube::core::Rule::new(
        "!has(self.spec.aws) || !has(self.spec.aws.auth) || !has(self.spec.aws.auth.secretRef) || !has(self.spec.aws.auth.secretRef.namespace)"
    ).message("spec.aws.auth.secretRef.namespace is only for a ClusterSecretSource: a SecretSource reads Secrets in its own namespace"),
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "[has(self.env), has(self.file), has(self.vault), has(self.aws), has(self.kubernetes)].filter(x, x).size() == 1"
).message("exactly one of spec.env, spec.file, spec.vault, spec.aws or spec.kubernetes must be set"))]
pub struct SecretSourceSpec {
    /// Prepended to every remote key read through this source; bindings never see it.
    /// For example `apps/shop/` turns key `database/url` into `apps/shop/database/url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Read cache shared by every binding that uses this source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSpec>,
    /// Read environment variables of the operator process (only those allowed by its
    /// `--env-allow` globs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<EnvSource>,
    /// Read files below the operator's `--file-root`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileSource>,
    /// Read a HashiCorp Vault or OpenBao KV engine (v1 or v2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<VaultSource>,
    /// Read AWS Secrets Manager or AWS Systems Manager Parameter Store (`service`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsSource>,
    /// Read Secrets through the Kubernetes API with the operator's credentials: of the
    /// source's own namespace in a SecretSource, of any named namespace in a
    /// ClusterSecretSource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesSource>,
}

/// Kubernetes Secrets backend. A remote key is a Secret's name; `property` picks one of
/// its data keys, and without it the value is the JSON object of all its keys (values as
/// UTF-8 strings). Changes of a Secret read this way reach the bindings at once, without
/// waiting for their refresh interval.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesSource {
    /// Namespace of the Secrets. In a SecretSource it must be the source's own namespace
    /// (omitted = the same); in a ClusterSecretSource it is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub namespace: Option<String>,
}

/// Read cache settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CacheSpec {
    /// A value read less than `ttl` ago is reused by every binding instead of asking the
    /// backend again. Kubernetes-style duration (`30s`, `5m`, `1h`); `0` disables caching
    /// (concurrent reads of one key are still coalesced into one request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^(0|([0-9]+(ms|s|m|h))+)$')")
        .message("spec.cache.ttl must be a duration such as 30s, 5m, 1h30m or 0"))]
    pub ttl: Option<String>,
}

/// Environment-variable backend. It has no settings: remote key `database/url` with prefix
/// `P` reads variable `P` + `DATABASE_URL`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct EnvSource {}

/// File backend.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FileSource {
    /// A folder (format `Dir`) or one file (other formats). Must lie inside the operator's
    /// `--file-root`.
    pub path: String,
    /// `Dir`: one file per key (keys may contain `/`). `Dotenv`, `Yaml`, `Json`: keys are
    /// the top-level entries of the one file at `path`. Default `Dir`.
    #[serde(default)]
    pub format: FileFormat,
}

/// Layout of the file backend's data.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FileFormat {
    /// One file per key under a folder.
    #[default]
    Dir,
    /// `KEY=VALUE` lines.
    Dotenv,
    /// A YAML mapping.
    Yaml,
    /// A JSON object.
    Json,
}

fn default_vault_mount() -> String {
    DEFAULT_VAULT_MOUNT.to_string()
}

fn default_kv_version() -> u8 {
    2
}

/// HashiCorp Vault or OpenBao KV backend.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VaultSource {
    /// Server address, e.g. `https://vault.example:8200`.
    #[schemars(length(max = 2048))]
    #[x_kube(validation = kube::core::Rule::new("self.startsWith('https://') || self.startsWith('http://')")
        .message("spec.vault.server must be an http:// or https:// URL"))]
    pub server: String,
    /// Vault Enterprise / OpenBao namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Mount path of the KV engine. Default `secret`.
    #[serde(default = "default_vault_mount")]
    pub mount: String,
    /// KV engine version, 1 or 2. Default 2.
    #[serde(default = "default_kv_version")]
    #[x_kube(validation = kube::core::Rule::new("self == 1 || self == 2")
        .message("spec.vault.kvVersion must be 1 or 2"))]
    pub kv_version: u8,
    /// PEM bundle of CA certificates trusted for the server. TLS is always verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// How the operator logs in. Exactly one method is set.
    pub auth: VaultAuth,
}

/// Vault login method; exactly one of `token`, `kubernetes` or `appRole`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "[has(self.token), has(self.kubernetes), has(self.appRole)].filter(x, x).size() == 1"
).message("exactly one of spec.vault.auth.token, spec.vault.auth.kubernetes or spec.vault.auth.appRole must be set"))]
pub struct VaultAuth {
    /// A Vault token stored in a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<VaultTokenAuth>,
    /// Kubernetes auth: the operator requests a token for a service account and logs in
    /// with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<VaultKubernetesAuth>,
    /// AppRole auth with a secret ID stored in a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_role: Option<VaultAppRoleAuth>,
}

/// Token auth.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VaultTokenAuth {
    /// Secret (same namespace) and key holding the token.
    pub secret_ref: SecretKeySelector,
}

fn default_kubernetes_mount() -> String {
    DEFAULT_VAULT_KUBERNETES_MOUNT.to_string()
}

fn default_approle_mount() -> String {
    DEFAULT_VAULT_APPROLE_MOUNT.to_string()
}

/// Kubernetes auth.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VaultKubernetesAuth {
    /// Vault role to log in as.
    pub role: String,
    /// Mount path of the Kubernetes auth method. Default `kubernetes`.
    #[serde(default = "default_kubernetes_mount")]
    pub mount_path: String,
    /// Service account (same namespace) whose token is presented to Vault. Default: the
    /// operator's own token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Namespace of `serviceAccountName`: required in a ClusterSecretSource, not allowed
    /// in a SecretSource (which uses its own namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_namespace: Option<String>,
    /// Audiences requested for the service account token. Default: the API server's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
}

/// AppRole auth.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VaultAppRoleAuth {
    /// Role ID (not secret).
    pub role_id: String,
    /// Secret (same namespace) and key holding the secret ID.
    pub secret_ref: SecretKeySelector,
    /// Mount path of the AppRole auth method. Default `approle`.
    #[serde(default = "default_approle_mount")]
    pub mount_path: String,
}

/// A key in a Secret: of the SecretSource's own namespace, or of `namespace` in a
/// ClusterSecretSource.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    /// Secret name.
    pub name: String,
    /// Namespace of the Secret: required in a ClusterSecretSource, not allowed in a
    /// SecretSource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Key inside the Secret's data.
    pub key: String,
}

/// AWS backend: Secrets Manager (default) or Systems Manager Parameter Store.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AwsSource {
    /// Which AWS service holds the values. `SecretsManager` (default): a remote key is a
    /// secret name and `version` a version stage (`AWSPREVIOUS`) or version id.
    /// `ParameterStore` (AWS Systems Manager): a remote key is a parameter name such as
    /// `/shop/db/password`; String, StringList and SecureString parameters are read
    /// (SecureString decrypted); `version` is a parameter version number (`3`) or label
    /// (`prod`); `find` lists with `GetParametersByPath`.
    #[serde(default)]
    pub service: AwsService,
    /// Region, e.g. `eu-west-1`.
    pub region: String,
    /// Endpoint override (emulators, VPC endpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Credentials. Absent: the default chain (IRSA, pod identity, environment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AwsAuth>,
    /// Change events: the operator (its leader) reads the service's change notices from an
    /// SQS queue and re-reads the keys they name at once, so `refreshInterval` becomes a
    /// safety net instead of the way rotations arrive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<AwsEvents>,
}

/// Where an `aws` source hears about changes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AwsEvents {
    /// URL of an SQS queue that an EventBridge rule feeds with Secrets Manager API calls
    /// (`PutSecretValue`, `UpdateSecret`, `RotateSecret`, `UpdateSecretVersionStage`,
    /// `DeleteSecret`, via CloudTrail) or `Parameter Store Change` events, e.g.
    /// `https://sqs.eu-west-1.amazonaws.com/123456789012/secretsync-changes`. It is read
    /// with the source's region, endpoint and credentials (which need
    /// `sqs:ReceiveMessage` and `sqs:DeleteMessage`). A message is deleted once every
    /// binding reading a key it names has synced it, or when no binding reads them;
    /// malformed messages are counted and deleted.
    pub sqs_queue_url: String,
}

/// The AWS service an `aws` source reads.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AwsService {
    /// AWS Secrets Manager.
    #[default]
    SecretsManager,
    /// AWS Systems Manager Parameter Store.
    ParameterStore,
}

impl AwsService {
    /// The service's name in messages.
    pub fn display_name(self) -> &'static str {
        match self {
            AwsService::SecretsManager => "AWS Secrets Manager",
            AwsService::ParameterStore => "AWS Systems Manager Parameter Store",
        }
    }
}

/// AWS credentials.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AwsAuth {
    /// Static access keys stored in a Secret. Absent: the default chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<AwsSecretRef>,
    /// Role assumed (STS AssumeRole) on top of the base credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
}

/// Secret holding static AWS access keys.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AwsSecretRef {
    /// Secret name (same namespace).
    pub name: String,
    /// Namespace of the Secret: required in a ClusterSecretSource, not allowed in a
    /// SecretSource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Key holding the access key ID.
    pub access_key_id_key: String,
    /// Key holding the secret access key.
    pub secret_access_key_key: String,
    /// Key holding a session token, for temporary credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token_key: Option<String>,
}

/// Observed state of a SecretSource.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretSourceStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Which backend the source uses: `env`, `file`, `vault`, `aws` or `kubernetes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// `Ready` is `True` (reason `Valid`) once the configuration and credentials were checked
    /// against the backend.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::schema::conditions")]
    pub conditions: Vec<Condition>,
}

/// The backend a source uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// Environment variables.
    Env,
    /// Files.
    File,
    /// Vault / OpenBao.
    Vault,
    /// AWS Secrets Manager or Parameter Store.
    Aws,
    /// Kubernetes Secrets.
    Kubernetes,
}

impl BackendKind {
    /// Lower-case name used in metrics labels and status.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Env => "env",
            BackendKind::File => "file",
            BackendKind::Vault => "vault",
            BackendKind::Aws => "aws",
            BackendKind::Kubernetes => "kubernetes",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl SecretSourceSpec {
    /// The single configured backend, or `None` when zero or several are set.
    pub fn backend_kind(&self) -> Option<BackendKind> {
        let set = [
            (self.env.is_some(), BackendKind::Env),
            (self.file.is_some(), BackendKind::File),
            (self.vault.is_some(), BackendKind::Vault),
            (self.aws.is_some(), BackendKind::Aws),
            (self.kubernetes.is_some(), BackendKind::Kubernetes),
        ];
        let mut kinds = set.iter().filter(|(on, _)| *on).map(|(_, k)| *k);
        match (kinds.next(), kinds.next()) {
            (Some(k), None) => Some(k),
            _ => None,
        }
    }

    /// The prefix, empty when unset.
    pub fn prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or("")
    }
}
