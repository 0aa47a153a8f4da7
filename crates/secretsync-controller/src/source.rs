//! SecretSources: credential lookups through the API server, the registry of built backends
//! (one shared [`SourceCache`] per source, rebuilt only when the source's generation or its
//! credential Secrets change), and the source status.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};
use secretsync_api::{
    BackendKind, SecretSource, SecretSourceSpec, SecretSourceStatus, parse_duration,
};
use secretsync_backends::cache::CacheObserver;
use secretsync_backends::env::EnvPolicy;
use secretsync_backends::{
    BackendError, BuildContext, Credentials, SecretValue, SourceCache, build_backend,
};

use crate::store::ObjKey;
use crate::sync::{ready_condition, reasons};

/// Where a pod's own service-account token is mounted.
const OWN_TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// Credential lookups for one namespace, answered by the API server.
pub struct ApiCredentials {
    client: Client,
    namespace: String,
}

impl ApiCredentials {
    /// Lookups in `namespace` (the source's; nothing crosses namespaces).
    pub fn new(client: Client, namespace: &str) -> Self {
        ApiCredentials {
            client,
            namespace: namespace.to_string(),
        }
    }
}

fn api_error(what: &str, e: kube::Error) -> BackendError {
    match e {
        kube::Error::Api(ae) if ae.code == 404 => {
            BackendError::invalid_config(format!("{what} not found"))
        }
        kube::Error::Api(ae) if ae.code == 403 || ae.code == 401 => BackendError::access_denied(
            format!("reading {what}: the operator is not allowed ({})", ae.code),
        ),
        kube::Error::Api(ae) => BackendError::unavailable(format!(
            "reading {what}: API server answered {} {}",
            ae.code, ae.reason
        )),
        _ => BackendError::unavailable(format!("reading {what}: API server unreachable")),
    }
}

#[async_trait]
impl Credentials for ApiCredentials {
    async fn secret_value(&self, name: &str, key: &str) -> Result<SecretValue, BackendError> {
        let what = format!("Secret {name:?} in namespace {:?}", self.namespace);
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let secret = api.get(name).await.map_err(|e| api_error(&what, e))?;
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| SecretValue::new(b.0.clone()))
            .ok_or_else(|| BackendError::invalid_config(format!("{what} has no key {key:?}")))
    }

    async fn service_account_token(
        &self,
        service_account: Option<&str>,
        audiences: &[String],
    ) -> Result<SecretValue, BackendError> {
        let Some(sa) = service_account else {
            // The operator's own projected token, as mounted by the kubelet.
            return tokio::fs::read(OWN_TOKEN_PATH)
                .await
                .map(SecretValue::new)
                .map_err(|_| BackendError::invalid_config("the operator's service account token is not mounted; set serviceAccountName"));
        };
        let what = format!("ServiceAccount {sa:?} in namespace {:?}", self.namespace);
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.namespace);
        let req = TokenRequest {
            spec: Some(TokenRequestSpec {
                // Empty = the API server's default audiences.
                audiences: (!audiences.is_empty()).then(|| audiences.to_vec()),
                expiration_seconds: Some(600),
                ..Default::default()
            }),
            ..Default::default()
        };
        let resp: TokenRequest = api
            .create_subresource("token", sa, &PostParams::default(), &req)
            .await
            .map_err(|e| api_error(&what, e))?;
        resp.status
            .and_then(|s| s.token)
            .map(SecretValue::from_string)
            .ok_or_else(|| {
                BackendError::unavailable(format!("TokenRequest for {what} returned no token"))
            })
    }
}

/// Names of the Secrets (source namespace) a source's credentials come from.
pub fn credential_secret_names(spec: &SecretSourceSpec) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(v) = &spec.vault {
        if let Some(t) = &v.auth.token {
            names.push(t.secret_ref.name.clone());
        }
        if let Some(a) = &v.auth.app_role {
            names.push(a.secret_ref.name.clone());
        }
    }
    if let Some(r) = spec
        .aws
        .as_ref()
        .and_then(|a| a.auth.as_ref())
        .and_then(|a| a.secret_ref.as_ref())
    {
        names.push(r.name.clone());
    }
    names.sort();
    names.dedup();
    names
}

/// What a built backend depends on: rebuilt when any of it changes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fingerprint {
    /// Source UID (a re-created source is a new one).
    pub uid: String,
    /// Source generation.
    pub generation: Option<i64>,
    /// Credential Secrets and their resourceVersions (`None` = absent).
    pub credentials: Vec<(String, Option<String>)>,
}

/// One built source.
pub struct SourceEntry {
    /// What it was built from.
    pub fingerprint: Fingerprint,
    /// Increases with every build, so bindings know to read again.
    pub epoch: u64,
    /// The backend kind, when the spec names exactly one.
    pub kind: Option<BackendKind>,
    /// The shared cache, or why it could not be built.
    pub cache: Result<Arc<SourceCache>, BackendError>,
    /// Result of the last validation call (`None` = not validated yet).
    pub validation: Mutex<Option<Result<(), BackendError>>>,
}

impl SourceEntry {
    /// Readiness as the status reports it.
    pub fn readiness(&self) -> Option<Result<(), BackendError>> {
        match &self.cache {
            Err(e) => Some(Err(e.clone())),
            Ok(_) => self
                .validation
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<Arc<SourceEntry>>>>;

/// Built sources by key; builds of one source are serialised, so a thousand bindings
/// arriving together cause one Vault login.
pub struct SourceRegistry {
    client: Client,
    env_allow: EnvPolicy,
    file_root: PathBuf,
    observer: Arc<dyn CacheObserver>,
    slots: Mutex<HashMap<ObjKey, Slot>>,
    epoch: AtomicU64,
    failures: Mutex<HashMap<ObjKey, u32>>,
}

impl SourceRegistry {
    /// A registry building with the operator's policies.
    pub fn new(
        client: Client,
        env_allow: EnvPolicy,
        file_root: PathBuf,
        observer: Arc<dyn CacheObserver>,
    ) -> Self {
        SourceRegistry {
            client,
            env_allow,
            file_root,
            observer,
            slots: Mutex::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the current build (if any) is ready; `None` when unknown.
    pub async fn get_existing_readiness(&self, key: &ObjKey) -> Option<bool> {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()?;
        let guard = slot.lock().await;
        guard.as_ref()?.readiness().map(|r| r.is_ok())
    }

    /// Counts a failed source reconcile; returns the consecutive count.
    pub fn bump_failures(&self, key: &ObjKey) -> u32 {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = f.entry(key.clone()).or_default();
        *n += 1;
        *n
    }

    /// Clears the failure count after success.
    pub fn reset_failures(&self, key: &ObjKey) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    fn slot(&self, key: &ObjKey) -> Slot {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_default()
            .clone()
    }

    /// The built source for the binding path: reuses any build of the same generation
    /// (credential changes are the source reconciler's job), builds otherwise.
    pub async fn get(&self, src: &SecretSource) -> Arc<SourceEntry> {
        let slot = self.slot(&key_of(src));
        let mut guard = slot.lock().await;
        if let Some(e) = guard.as_ref()
            && e.fingerprint.uid == src.uid().unwrap_or_default()
            && e.fingerprint.generation == src.metadata.generation
        {
            return e.clone();
        }
        let fp = self.fingerprint(src).await;
        let entry = self.build(src, fp).await;
        *guard = Some(entry.clone());
        entry
    }

    /// The source reconciler's view: rebuilds when the fingerprint (including credential
    /// Secret versions) changed or the last build failed. Returns whether it rebuilt.
    pub async fn refresh(&self, src: &SecretSource) -> (Arc<SourceEntry>, bool) {
        let slot = self.slot(&key_of(src));
        let mut guard = slot.lock().await;
        let fp = self.fingerprint(src).await;
        if let Some(e) = guard.as_ref()
            && e.fingerprint == fp
            && e.cache.is_ok()
        {
            return (e.clone(), false);
        }
        let entry = self.build(src, fp).await;
        *guard = Some(entry.clone());
        (entry, true)
    }

    /// Drops a deleted source; returns whether one was known.
    pub fn remove(&self, key: &ObjKey) -> bool {
        self.reset_failures(key);
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key)
            .is_some()
    }

    async fn fingerprint(&self, src: &SecretSource) -> Fingerprint {
        let ns = src.namespace().unwrap_or_default();
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
        let mut credentials = Vec::new();
        for name in credential_secret_names(&src.spec) {
            // Metadata only: the resourceVersion is all we need to notice a change.
            let rv = match api.get_metadata_opt(&name).await {
                Ok(m) => m.and_then(|m| m.metadata.resource_version),
                Err(e) => {
                    tracing::debug!(source = %key_of(src), secret = %name, error = %e, "credential Secret lookup failed");
                    None
                }
            };
            credentials.push((name, rv));
        }
        Fingerprint {
            uid: src.uid().unwrap_or_default(),
            generation: src.metadata.generation,
            credentials,
        }
    }

    async fn build(&self, src: &SecretSource, fingerprint: Fingerprint) -> Arc<SourceEntry> {
        let ns = src.namespace().unwrap_or_default();
        let ctx = BuildContext {
            env_allow: self.env_allow.clone(),
            file_root: self.file_root.clone(),
            credentials: Arc::new(ApiCredentials::new(self.client.clone(), &ns)),
        };
        let ttl = src
            .spec
            .cache
            .as_ref()
            .and_then(|c| c.ttl.as_deref())
            .map(parse_duration)
            .transpose();
        let cache = match ttl {
            Err(e) => Err(BackendError::invalid_config(format!("spec.cache.ttl: {e}"))),
            Ok(ttl) => build_backend(&src.spec, &ctx).await.map(|b| {
                Arc::new(SourceCache::new(
                    b,
                    ttl.unwrap_or(Duration::ZERO),
                    self.observer.clone(),
                ))
            }),
        };
        let epoch = self.epoch.fetch_add(1, Ordering::Relaxed) + 1;
        match &cache {
            Ok(_) => tracing::info!(source = %key_of(src), epoch, "built backend"),
            Err(e) => {
                tracing::warn!(source = %key_of(src), reason = %e.reason, error = %e.message, "building backend failed")
            }
        }
        Arc::new(SourceEntry {
            fingerprint,
            epoch,
            kind: src.spec.backend_kind(),
            cache,
            validation: Mutex::new(None),
        })
    }
}

/// Key of an object.
pub fn key_of<K: kube::Resource>(obj: &K) -> ObjKey {
    ObjKey::new(
        obj.meta().namespace.clone().unwrap_or_default(),
        obj.meta().name.clone().unwrap_or_default(),
    )
}

/// The source status for a readiness result.
pub fn source_status(
    previous: Option<&SecretSourceStatus>,
    generation: Option<i64>,
    kind: Option<BackendKind>,
    readiness: Result<(), &BackendError>,
    now: &Time,
) -> SecretSourceStatus {
    let prev_conditions = previous.map(|p| p.conditions.as_slice()).unwrap_or(&[]);
    let condition = match readiness {
        Ok(()) => ready_condition(
            prev_conditions,
            true,
            reasons::VALID,
            &format!(
                "{} backend configuration and credentials are valid",
                kind.map_or("the", |k| k.as_str())
            ),
            generation,
            now,
        ),
        Err(e) => ready_condition(
            prev_conditions,
            false,
            e.reason.as_str(),
            &e.message,
            generation,
            now,
        ),
    };
    let mut conditions: Vec<_> = prev_conditions
        .iter()
        .filter(|c| c.type_ != condition.type_)
        .cloned()
        .collect();
    conditions.push(condition);
    SecretSourceStatus {
        observed_generation: generation,
        backend: kind.map(|k| k.as_str().to_string()),
        conditions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;
    use secretsync_api::{
        AwsAuth, AwsSecretRef, AwsSource, SecretKeySelector, VaultAuth, VaultSource, VaultTokenAuth,
    };

    #[test]
    fn credential_secrets_of_a_spec() {
        let spec = SecretSourceSpec {
            vault: Some(VaultSource {
                auth: VaultAuth {
                    token: Some(VaultTokenAuth {
                        secret_ref: SecretKeySelector {
                            name: "vt".into(),
                            key: "token".into(),
                        },
                    }),
                    ..Default::default()
                },
                ..Default::default()
            }),
            aws: Some(AwsSource {
                auth: Some(AwsAuth {
                    secret_ref: Some(AwsSecretRef {
                        name: "aws".into(),
                        ..Default::default()
                    }),
                    role_arn: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            credential_secret_names(&spec),
            vec!["aws".to_string(), "vt".to_string()]
        );
        assert!(credential_secret_names(&SecretSourceSpec::default()).is_empty());
    }

    #[test]
    fn status_for_readiness() {
        let now = Time(Timestamp::from_second(10).unwrap());
        let ok = source_status(None, Some(3), Some(BackendKind::File), Ok(()), &now);
        assert_eq!(ok.observed_generation, Some(3));
        assert_eq!(ok.backend.as_deref(), Some("file"));
        assert_eq!(ok.conditions[0].reason, "Valid");
        assert_eq!(ok.conditions[0].status, "True");
        let later = Time(Timestamp::from_second(20).unwrap());
        assert_eq!(
            source_status(Some(&ok), Some(3), Some(BackendKind::File), Ok(()), &later),
            ok
        );
        let err = BackendError::access_denied("env variable not allowed");
        let bad = source_status(
            Some(&ok),
            Some(3),
            Some(BackendKind::Env),
            Err(&err),
            &later,
        );
        assert_eq!(bad.conditions.len(), 1);
        assert_eq!(bad.conditions[0].reason, "AccessDenied");
        assert_eq!(bad.conditions[0].last_transition_time, later);
    }
}
