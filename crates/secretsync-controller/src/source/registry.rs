//! The registry of built backends: one shared [`SourceCache`] per source, rebuilt only
//! when the source's generation or its credential Secrets change; builds of one source are
//! serialised, so a thousand bindings arriving together cause one Vault login.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};
use secretsync_api::{BackendKind, SecretSource, parse_duration};
use secretsync_backends::cache::CacheObserver;
use secretsync_backends::env::EnvPolicy;
use secretsync_backends::{BackendError, BuildContext, CachePolicy, SourceCache, build_backend};

use super::credentials::{ApiCredentials, credential_secret_names};
use crate::runtime::{ObjKey, key_of};

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
    validation: Mutex<Option<Result<(), BackendError>>>,
}

impl SourceEntry {
    /// Records the result of a validation call.
    pub fn set_validation(&self, result: Result<(), BackendError>) {
        *self.validation.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
    }

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
            // No ttl: reads are reused per key within each binding's refresh interval
            // (one read per key per interval); an explicit ttl overrides that.
            Ok(ttl) => build_backend(&src.spec, &ctx).await.map(|b| {
                let policy = ttl.map_or(CachePolicy::PerKeyRefresh, CachePolicy::Ttl);
                Arc::new(SourceCache::with_policy(b, policy, self.observer.clone()))
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
