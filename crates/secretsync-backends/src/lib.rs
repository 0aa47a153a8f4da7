//! Secret backends (env, file, Vault/OpenBao KV, AWS Secrets Manager and Parameter Store,
//! Kubernetes Secrets),
//! the shared read cache with request coalescing, key mapping, and binding resolution.
//!
//! Keys passed to a [`Backend`] are relative to the source's `prefix`; each backend applies
//! the prefix its own way (the env backend, for example, does not upper-case it).

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use secretsync_api::{BackendKind, SecretSourceSpec};

pub mod aws;
pub mod cache;
pub mod decode;
pub mod dotenv;
pub mod env;
mod error;
pub mod file;
pub mod hash;
pub mod keys;
pub mod kubernetes;
pub mod resolve;
pub mod retry;
pub mod template;
pub mod template_from;
mod value;
pub mod vault;

pub use cache::{CachePolicy, CacheStats, Failed, Read, ReadOptions, SourceCache};
pub use error::{BackendError, Reason};
pub use value::SecretValue;

/// Reads of one batch in flight at once (default [`Backend::read_batch`]).
pub const BATCH_READS_AT_ONCE: usize = 2;

/// One read: a key relative to the source prefix and an optional version
/// (Vault KV v2 version number; AWS Secrets Manager version stage or version id; Parameter
/// Store version number or label).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReadRequest {
    /// Remote key relative to the prefix.
    pub key: String,
    /// Version pin.
    pub version: Option<String>,
}

impl ReadRequest {
    /// A read of the current version of `key`.
    pub fn latest(key: impl Into<String>) -> Self {
        ReadRequest {
            key: key.into(),
            version: None,
        }
    }

    /// `InvalidConfig` when the request pins a version on a backend that has none.
    pub fn unversioned(&self, backend: BackendKind) -> Result<(), BackendError> {
        match self.version {
            None => Ok(()),
            Some(_) => Err(BackendError::invalid_config(format!(
                "remote key {:?}: the {} backend has no versions",
                self.key,
                backend.as_str()
            ))),
        }
    }
}

/// The keys of a store without a native listing: each of `names` that starts with
/// `prefix`, with the prefix cut off, leaving out the prefix itself; sorted.
pub(crate) fn keys_after_prefix(
    prefix: &str,
    names: impl IntoIterator<Item = String>,
) -> Vec<String> {
    let mut keys: Vec<String> = names
        .into_iter()
        .filter_map(|n| n.strip_prefix(prefix).map(str::to_string))
        .filter(|k| !k.is_empty())
        .collect();
    keys.sort();
    keys
}

/// A connection to one secret store, built once per source generation and shared.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Which backend this is (metrics label, status).
    fn kind(&self) -> BackendKind;

    /// Reads one value. Vault returns the JSON of the secret's field map; AWS returns
    /// `SecretString` bytes or the raw `SecretBinary`.
    async fn read(&self, req: &ReadRequest) -> Result<SecretValue, BackendError>;

    /// Reads several values; backends with a batch API override this to use one request.
    /// The result has one entry per request, in order.
    async fn read_batch(&self, reqs: &[ReadRequest]) -> Vec<Result<SecretValue, BackendError>> {
        // At most two reads of a batch at a time: each concurrent read is a connection the
        // client keeps pooled, and a source whose every batch opened one per key held
        // hundreds of idle connections at 10,000 bindings.
        let mut out = Vec::with_capacity(reqs.len());
        for chunk in reqs.chunks(BATCH_READS_AT_ONCE) {
            out.extend(futures::future::join_all(chunk.iter().map(|r| self.read(r))).await);
        }
        out
    }

    /// Lists keys (relative to the prefix) that start with `under`, a literal key prefix
    /// (may be empty). Backends may return more keys than asked; callers filter.
    async fn list(&self, under: &str) -> Result<Vec<String>, BackendError>;

    /// One cheap call proving the configuration and credentials work.
    async fn validate(&self) -> Result<(), BackendError>;

    /// The remote key (relative to the prefix) through which this backend would read the
    /// Kubernetes Secret `namespace/secret`, if it reads Kubernetes Secrets at all: a
    /// binding must never read the Secret it writes.
    fn secret_key(&self, _namespace: &str, _secret: &str) -> Option<String> {
        None
    }
}

/// One key of a credential Secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredentialRef<'a> {
    /// The Secret's namespace when the reference names one (a ClusterSecretSource's);
    /// `None` means the source's own namespace.
    pub namespace: Option<&'a str>,
    /// The Secret's name.
    pub name: &'a str,
    /// The key in its data.
    pub key: &'a str,
}

impl<'a> From<&'a secretsync_api::SecretKeySelector> for CredentialRef<'a> {
    fn from(s: &'a secretsync_api::SecretKeySelector) -> Self {
        CredentialRef {
            namespace: s.namespace.as_deref(),
            name: &s.name,
            key: &s.key,
        }
    }
}

/// Where backends get credentials that live in the cluster (Secrets, service-account
/// tokens). `render` answers from manifests, the controller from the API server.
#[async_trait]
pub trait Credentials: Send + Sync {
    /// The value the reference `at` points to.
    async fn secret_value(&self, at: CredentialRef<'_>) -> Result<SecretValue, BackendError>;

    /// A Vault token from the environment (`VAULT_TOKEN`), used by `render` when a token
    /// auth Secret is not supplied. The controller never falls back.
    async fn vault_token_fallback(&self) -> Option<SecretValue> {
        None
    }

    /// A token for `service_account` (the operator's own when `None`) in `namespace` (the
    /// source's own when `None`), for Vault Kubernetes auth. Providers without a cluster
    /// (`render`) keep this default.
    async fn service_account_token(
        &self,
        _namespace: Option<&str>,
        _service_account: Option<&str>,
        _audiences: &[String],
    ) -> Result<SecretValue, BackendError> {
        Err(BackendError::invalid_config(
            "Vault Kubernetes auth needs a cluster; without one no service account token can be requested",
        ))
    }
}

/// Credentials provider that has none: every lookup is `InvalidConfig`.
pub struct NoCredentials;

#[async_trait]
impl Credentials for NoCredentials {
    async fn secret_value(&self, at: CredentialRef<'_>) -> Result<SecretValue, BackendError> {
        Err(BackendError::invalid_config(format!(
            "Secret {:?} (key {:?}) is not available",
            at.name, at.key
        )))
    }
}

/// Operator-wide policy and credential access used to build backends.
#[derive(Clone)]
pub struct BuildContext {
    /// Globs of environment variable names the env backend may read.
    pub env_allow: env::EnvPolicy,
    /// Root folder the file backend is confined to.
    pub file_root: PathBuf,
    /// Credential lookups for the source's namespace.
    pub credentials: Arc<dyn Credentials>,
    /// The SecretSource's namespace (`None` for a ClusterSecretSource).
    pub namespace: Option<String>,
    /// Where the kubernetes backend reads Secrets.
    pub cluster_secrets: Arc<dyn kubernetes::ClusterSecrets>,
}

/// Builds the backend a source spec describes. Vault logs in here, so a client and its
/// token are made once per source generation, never per read.
pub async fn build_backend(
    spec: &SecretSourceSpec,
    ctx: &BuildContext,
) -> Result<Arc<dyn Backend>, BackendError> {
    let prefix = spec.prefix().to_string();
    if spec.backend_kind().is_none() {
        return Err(BackendError::invalid_config(
            "exactly one of spec.env, spec.file, spec.vault, spec.aws or spec.kubernetes must be set",
        ));
    }
    if let Some(_env) = &spec.env {
        return Ok(Arc::new(env::EnvBackend::new(
            prefix,
            ctx.env_allow.clone(),
        )));
    }
    if let Some(file) = &spec.file {
        return Ok(Arc::new(file::FileBackend::new(
            prefix,
            file,
            &ctx.file_root,
        )?));
    }
    if let Some(vault) = &spec.vault {
        return Ok(Arc::new(
            vault::VaultBackend::connect_shared(prefix, vault, ctx.credentials.clone()).await?,
        ));
    }
    if let Some(aws) = &spec.aws {
        return aws::connect(prefix, aws, ctx.credentials.as_ref()).await;
    }
    if let Some(k8s) = &spec.kubernetes {
        let namespace = kubernetes::source_namespace(k8s, ctx.namespace.as_deref())?;
        return Ok(Arc::new(kubernetes::KubernetesBackend::new(
            namespace,
            prefix,
            ctx.cluster_secrets.clone(),
        )));
    }
    Err(BackendError::invalid_config("no backend configured"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Counts how many reads are in flight at once.
    #[derive(Default)]
    struct Overlap {
        now: AtomicUsize,
        most: AtomicUsize,
    }

    #[async_trait]
    impl Backend for Overlap {
        fn kind(&self) -> BackendKind {
            BackendKind::Env
        }
        async fn read(&self, req: &ReadRequest) -> Result<SecretValue, BackendError> {
            let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            self.now.fetch_sub(1, Ordering::SeqCst);
            Ok(SecretValue::from(req.key.as_str()))
        }
        async fn list(&self, _: &str) -> Result<Vec<String>, BackendError> {
            Ok(vec![])
        }
        async fn validate(&self) -> Result<(), BackendError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn the_default_batch_reads_two_keys_at_a_time_in_order() {
        let b = Overlap::default();
        let reqs: Vec<ReadRequest> = (0..5)
            .map(|i| ReadRequest::latest(format!("k{i}")))
            .collect();
        let out = b.read_batch(&reqs).await;
        let keys: Vec<_> = out
            .iter()
            .map(|r| r.as_ref().unwrap().as_str().unwrap().to_string())
            .collect();
        assert_eq!(keys, ["k0", "k1", "k2", "k3", "k4"]);
        assert_eq!(b.most.load(Ordering::SeqCst), BATCH_READS_AT_ONCE);
    }
}
