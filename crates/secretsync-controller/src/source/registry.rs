//! The registry of built backends: one shared [`SourceCache`] per source, rebuilt only
//! when the source's generation or its credential Secrets change; builds of one source are
//! serialised, so a thousand bindings arriving together cause one Vault login.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use std::borrow::Cow;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use secretsync_api::{
    BackendKind, ClusterSecretSource, SecretSource, SecretSourceSpec, parse_duration,
};
use secretsync_backends::cache::CacheObserver;
use secretsync_backends::env::EnvPolicy;
use secretsync_backends::{BackendError, BuildContext, CachePolicy, SourceCache, build_backend};

use secretsync_backends::aws::events::{EventQueue, LONG_POLL};

use super::credentials::{ApiCredentials, credential_secrets};
use super::kubernetes::{KubeSecrets, SecretChange};
use crate::changes::sqs::{EventFeed, VISIBILITY};
use crate::runtime::{ObjKey, key_of};

/// A source of either kind, as the registry builds it.
#[derive(Clone, Copy)]
pub enum AnySource<'a> {
    /// A SecretSource: credentials in its own namespace.
    Namespaced(&'a SecretSource),
    /// A ClusterSecretSource: every reference names its namespace.
    Cluster(&'a ClusterSecretSource),
}

impl AnySource<'_> {
    /// Its key (namespace empty for a cluster source).
    pub fn key(&self) -> ObjKey {
        match self {
            AnySource::Namespaced(s) => key_of(*s),
            AnySource::Cluster(s) => key_of(*s),
        }
    }

    fn meta(&self) -> &kube::core::ObjectMeta {
        match self {
            AnySource::Namespaced(s) => &s.metadata,
            AnySource::Cluster(s) => &s.metadata,
        }
    }

    fn uid(&self) -> String {
        self.meta().uid.clone().unwrap_or_default()
    }

    fn generation(&self) -> Option<i64> {
        self.meta().generation
    }

    /// The backend part of the spec.
    pub fn spec(&self) -> Cow<'_, SecretSourceSpec> {
        match self {
            AnySource::Namespaced(s) => Cow::Borrowed(&s.spec),
            AnySource::Cluster(s) => Cow::Owned(s.spec.source_spec()),
        }
    }

    /// The namespace references resolve in when they name none (`None`: cluster source).
    fn own_namespace(&self) -> Option<&str> {
        match self {
            AnySource::Namespaced(s) => s.metadata.namespace.as_deref(),
            AnySource::Cluster(_) => None,
        }
    }
}

/// What a built backend depends on: rebuilt when any of it changes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fingerprint {
    /// Source UID (a re-created source is a new one).
    pub uid: String,
    /// Source generation.
    pub generation: Option<i64>,
    /// Digest of the backend part of the spec: a new generation that leaves it alone (a
    /// ClusterSecretSource's `namespaceSelector` edited) keeps the built backend.
    pub spec_digest: u64,
    /// Credential Secrets (namespace, name) and their resourceVersions (`None` = absent).
    pub credentials: Vec<((String, String), Option<String>)>,
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
    /// The change queue of an `aws` source with `events` (read by the leader).
    pub events: Option<Arc<EventFeed>>,
    /// Result of the last validation call (`None` = not validated yet).
    validation: Mutex<Option<Result<(), BackendError>>>,
}

impl Fingerprint {
    /// Whether a build from `self` serves `other` too (generations may differ).
    fn same_build(&self, other: &Fingerprint) -> bool {
        self.uid == other.uid
            && self.spec_digest == other.spec_digest
            && self.credentials == other.credentials
    }
}

/// A digest of a backend spec.
fn spec_digest(spec: &SecretSourceSpec) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    // The spec's JSON is its identity (serialising it cannot fail: plain data).
    serde_json::to_vec(spec).unwrap_or_default().hash(&mut h);
    h.finish()
}

impl SourceEntry {
    /// The same build (backend, cache, epoch, validation) under a new fingerprint.
    fn refingerprinted(&self, fingerprint: Fingerprint) -> Arc<SourceEntry> {
        let validation = self
            .validation
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Arc::new(SourceEntry {
            fingerprint,
            epoch: self.epoch,
            kind: self.kind,
            cache: self.cache.clone(),
            events: self.events.clone(),
            validation: Mutex::new(validation),
        })
    }

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
    kube_secrets: Arc<KubeSecrets>,
    secret_changes: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<SecretChange>>>,
    /// Woken by every build and removal (the change-queue consumers follow the builds).
    changed: tokio::sync::Notify,
}

impl SourceRegistry {
    /// A registry building with the operator's policies.
    pub fn new(
        client: Client,
        env_allow: EnvPolicy,
        file_root: PathBuf,
        observer: Arc<dyn CacheObserver>,
    ) -> Self {
        let (kube_secrets, changes) = KubeSecrets::new(client.clone());
        SourceRegistry {
            kube_secrets: Arc::new(kube_secrets),
            secret_changes: Mutex::new(Some(changes)),
            client,
            env_allow,
            file_root,
            observer,
            slots: Mutex::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            failures: Mutex::new(HashMap::new()),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// Completes after the next build or removal of any source (or at once if one
    /// happened since the last wait).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// Changes of Secrets kubernetes sources read (taken once, by the term).
    pub fn take_secret_changes(
        &self,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<SecretChange>> {
        self.secret_changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// The Secrets kubernetes sources read.
    pub fn kube_secrets(&self) -> &Arc<KubeSecrets> {
        &self.kube_secrets
    }

    /// The current build of a source, if any (waits for a build in progress).
    pub async fn current(&self, key: &ObjKey) -> Option<Arc<SourceEntry>> {
        self.existing_slot(key)?.lock().await.clone()
    }

    fn existing_slot(&self, key: &ObjKey) -> Option<Slot> {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    /// Whether the current build (if any) is ready; `None` when unknown.
    pub async fn get_existing_readiness(&self, key: &ObjKey) -> Option<bool> {
        let slot = self.existing_slot(key)?;
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
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        // Looked up first: every binding refresh comes here, and `entry` needs an owned key.
        if let Some(s) = slots.get(key) {
            return s.clone();
        }
        slots.entry(key.clone()).or_default().clone()
    }

    /// The built source for the binding path: reuses any build of the same generation
    /// (credential changes are the source reconciler's job), builds otherwise.
    pub async fn get(&self, src: AnySource<'_>) -> Arc<SourceEntry> {
        let slot = self.slot(&src.key());
        let mut guard = slot.lock().await;
        if let Some(e) = guard.as_ref()
            && e.fingerprint.uid == src.meta().uid.as_deref().unwrap_or_default()
            && e.fingerprint.generation == src.generation()
        {
            return e.clone();
        }
        let fp = self.fingerprint(src).await;
        let entry = match guard.as_ref() {
            Some(e) if e.cache.is_ok() && e.fingerprint.same_build(&fp) => e.refingerprinted(fp),
            _ => self.build(src, fp).await,
        };
        *guard = Some(entry.clone());
        entry
    }

    /// The source reconciler's view: rebuilds when the fingerprint (including credential
    /// Secret versions) changed or the last build failed. Returns whether it rebuilt.
    pub async fn refresh(&self, src: AnySource<'_>) -> (Arc<SourceEntry>, bool) {
        let slot = self.slot(&src.key());
        let mut guard = slot.lock().await;
        let fp = self.fingerprint(src).await;
        if let Some(e) = guard.as_ref()
            && e.fingerprint == fp
            && e.cache.is_ok()
        {
            return (e.clone(), false);
        }
        if let Some(e) = guard.as_ref()
            && e.cache.is_ok()
            && e.fingerprint.same_build(&fp)
        {
            let entry = e.refingerprinted(fp);
            *guard = Some(entry.clone());
            return (entry, false);
        }
        let entry = self.build(src, fp).await;
        *guard = Some(entry.clone());
        (entry, true)
    }

    /// Drops a deleted source; returns whether one was known.
    pub fn remove(&self, key: &ObjKey) -> bool {
        self.reset_failures(key);
        let known = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key)
            .is_some();
        if known {
            self.changed.notify_one();
        }
        known
    }

    async fn fingerprint(&self, src: AnySource<'_>) -> Fingerprint {
        let own = src.own_namespace().unwrap_or_default();
        let mut credentials = Vec::new();
        for (ns, name) in credential_secrets(&src.spec(), own) {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
            // Metadata only: the resourceVersion is all we need to notice a change.
            let rv = match api.get_metadata_opt(&name).await {
                Ok(m) => m.and_then(|m| m.metadata.resource_version),
                Err(e) => {
                    tracing::debug!(source = %src.key(), secret = %name, namespace = %ns, error = %e, "credential Secret lookup failed");
                    None
                }
            };
            credentials.push(((ns, name), rv));
        }
        Fingerprint {
            uid: src.uid(),
            generation: src.generation(),
            spec_digest: spec_digest(&src.spec()),
            credentials,
        }
    }

    async fn build(&self, src: AnySource<'_>, fingerprint: Fingerprint) -> Arc<SourceEntry> {
        let credentials = Arc::new(ApiCredentials::new(
            self.client.clone(),
            src.own_namespace(),
        ));
        let ctx = BuildContext {
            env_allow: self.env_allow.clone(),
            file_root: self.file_root.clone(),
            credentials: credentials.clone(),
            namespace: src.own_namespace().map(str::to_string),
            cluster_secrets: self.kube_secrets.clone(),
        };
        let spec = src.spec();
        let ttl = spec
            .cache
            .as_ref()
            .and_then(|c| c.ttl.as_deref())
            .map(parse_duration)
            .transpose();
        let cache = match ttl {
            Err(e) => Err(BackendError::invalid_config(format!("spec.cache.ttl: {e}"))),
            // No ttl: reads are reused per key within each binding's refresh interval
            // (one read per key per interval); an explicit ttl overrides that.
            Ok(ttl) => build_backend(&spec, &ctx).await.map(|b| {
                let policy = ttl.map_or(CachePolicy::PerKeyRefresh, CachePolicy::Ttl);
                Arc::new(SourceCache::with_policy(b, policy, self.observer.clone()))
            }),
        };
        // A change queue that cannot be set up fails the build: the source is not Ready
        // and says why, instead of silently polling only.
        let (cache, events) = match (cache, spec.aws.as_ref()) {
            (Ok(c), Some(aws)) if aws.events.is_some() => {
                match EventQueue::connect(aws, credentials.as_ref(), LONG_POLL, VISIBILITY).await {
                    Ok(q) => (
                        Ok(c),
                        Some(Arc::new(EventFeed {
                            queue: Arc::new(q),
                            service: aws.service,
                            prefix: spec.prefix().to_string(),
                        })),
                    ),
                    Err(e) => (Err(e), None),
                }
            }
            (c, _) => (c, None),
        };
        let epoch = self.epoch.fetch_add(1, Ordering::Relaxed) + 1;
        match &cache {
            Ok(_) => tracing::info!(source = %src.key(), epoch, "built backend"),
            Err(e) => {
                tracing::warn!(source = %src.key(), reason = %e.reason, error = %e.message, "building backend failed")
            }
        }
        self.changed.notify_one();
        Arc::new(SourceEntry {
            fingerprint,
            epoch,
            kind: spec.backend_kind(),
            cache,
            events,
            validation: Mutex::new(None),
        })
    }
}
