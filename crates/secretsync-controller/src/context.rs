//! Shared state of one leadership term: the stores the watches fill, the queues the
//! dispatchers drain, built sources, the managed-Secret index and what each reconciler
//! remembers. Reconcilers take `&Ctx`; nothing here does I/O.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use secretsync_api::{
    ClusterSecretBinding, ClusterSecretSource, SecretBinding, SecretSource, SourceKind,
};
use secretsync_backends::hash::HmacKey;

use crate::Config;
use crate::binding::templates::TemplateConfigMaps;
use crate::binding::{BindingState, BindingStates};
use crate::changes::ReadRequests;
use crate::events::Events;
use crate::managed::ManagedSecrets;
use crate::metrics::Metrics;
use crate::rollout::RolloutState;
use crate::runtime::{ApiHealth, ObjKey, Queue, Store};
use crate::source::registry::SourceRegistry;

/// A namespace's labels: all the operator keeps of a namespace.
pub type NamespaceLabels = std::collections::BTreeMap<String, String>;

/// Everything reconcilers share.
pub struct Ctx {
    /// API client.
    pub client: Client,
    /// Operator configuration.
    pub config: Arc<Config>,
    /// HMAC key for data hashes.
    pub hmac: HmacKey,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Event publisher.
    pub events: Events,
    /// API reachability as the watches see it.
    pub health: Arc<ApiHealth>,
    /// Watched SecretSources.
    pub sources: Store<SecretSource>,
    /// Watched SecretBindings.
    pub bindings: Store<SecretBinding>,
    /// Watched ClusterSecretSources (all-namespaces installs only; keys have an empty
    /// namespace).
    pub cluster_sources: Store<ClusterSecretSource>,
    /// Watched ClusterSecretBindings (all-namespaces installs only).
    pub cluster_bindings: Store<ClusterSecretBinding>,
    /// Namespace labels (metadata-only watch; all-namespaces installs only), keyed by
    /// namespace name with an empty namespace.
    pub namespaces: Store<NamespaceLabels>,
    /// Built backends.
    pub registry: SourceRegistry,
    /// Binding work.
    pub binding_queue: Arc<Queue<ObjKey>>,
    /// Source work (SecretSources; ClusterSecretSources with an empty namespace).
    pub source_queue: Arc<Queue<ObjKey>>,
    /// ClusterSecretBinding work.
    pub cluster_binding_queue: Arc<Queue<ObjKey>>,
    /// Managed Secrets (metadata) as the Secret watch shows them.
    pub managed: ManagedSecrets,
    /// The rollout reconciler's workloads and queue.
    pub rollout: RolloutState,
    /// The ConfigMaps bindings load templates from (`templateFrom`), held while referenced.
    pub templates: TemplateConfigMaps,
    states: BindingStates,
    /// Bindings whose inputs changed (a kubernetes source's Secret, a change event): their
    /// next reconcile reads, whatever their refresh schedule says.
    pub reads: ReadRequests,
}

impl Ctx {
    /// A fresh context.
    pub fn new(
        client: Client,
        config: Arc<Config>,
        hmac: HmacKey,
        metrics: Arc<Metrics>,
        registry: SourceRegistry,
    ) -> Self {
        let budget = config.max_restarts_per_minute;
        Ctx {
            events: Events::new(client.clone(), &config.identity),
            templates: TemplateConfigMaps::new(client.clone()),
            client,
            config,
            hmac,
            metrics,
            health: Arc::default(),
            sources: Store::default(),
            bindings: Store::default(),
            cluster_sources: Store::default(),
            cluster_bindings: Store::default(),
            namespaces: Store::default(),
            registry,
            binding_queue: Arc::default(),
            source_queue: Arc::default(),
            cluster_binding_queue: Arc::default(),
            managed: ManagedSecrets::default(),
            rollout: RolloutState::new(budget),
            states: BindingStates::default(),
            reads: ReadRequests::default(),
        }
    }

    /// Asks the next reconcile of binding `key` to read its inputs again.
    pub fn request_read(&self, key: &ObjKey) {
        self.reads.request(key);
    }

    /// The read request for `key` since the last call, if any (taking it).
    pub fn take_read_request(&self, key: &ObjKey) -> Option<u64> {
        self.reads.take(key)
    }

    /// Sources (of either kind) with an `aws.events` change queue.
    pub fn event_source_keys(&self) -> Vec<ObjKey> {
        let has = |spec: &secretsync_api::SecretSourceSpec| {
            spec.aws.as_ref().is_some_and(|a| a.events.is_some())
        };
        let mut keys: Vec<ObjKey> = self
            .sources
            .filter(|_, s| has(&s.spec))
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        keys.extend(
            self.cluster_sources
                .filter(|_, s| has(&s.spec.backend))
                .into_iter()
                .map(|(k, _)| k),
        );
        keys
    }

    /// Secrets of a namespace.
    pub fn secrets(&self, ns: &str) -> Api<Secret> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// A copy of a binding's memory.
    pub fn binding_state(&self, key: &ObjKey) -> BindingState {
        self.states.get(key)
    }

    /// Stores a binding's memory and refreshes the `bindings{ready}` gauge.
    pub fn set_binding_state(&self, key: &ObjKey, state: BindingState) {
        let counts = self.states.set(key, state);
        self.update_gauge(counts);
    }

    /// Forgets a deleted binding.
    pub fn forget(&self, key: &ObjKey) {
        let counts = self.states.remove(key);
        self.update_gauge(counts);
        self.events.forget(key);
        self.binding_queue.forget(key);
        self.reads.forget(key);
        self.templates.forget(key);
    }

    /// resourceVersion of a binding's Secret as this process last wrote or checked it.
    pub fn verified_secret_rv(&self, key: &ObjKey) -> Option<String> {
        self.states.verified_secret_rv(key)
    }

    fn update_gauge(&self, (ready, not_ready): (usize, usize)) {
        let unknown = self.bindings.len().saturating_sub(ready + not_ready);
        self.metrics.set_bindings(ready, not_ready, unknown);
    }

    /// Refreshes the gauge (e.g. after bindings were added to the store).
    pub fn refresh_gauge(&self) {
        self.update_gauge(self.states.counts());
    }

    /// The bindings that use source `src`: a SecretSource's in its namespace, or a
    /// ClusterSecretSource's (empty namespace in `src`) in any namespace.
    pub fn bindings_of_source(&self, src: &ObjKey) -> Vec<(ObjKey, Arc<SecretBinding>)> {
        let cluster = src.namespace.is_empty();
        self.bindings.filter(|k, b| {
            let r = &b.spec.source_ref;
            r.name == src.name
                && match r.kind {
                    SourceKind::SecretSource => !cluster && k.namespace == src.namespace,
                    SourceKind::ClusterSecretSource => cluster,
                }
        })
    }

    /// The bindings in `namespace` that use any ClusterSecretSource: their admission
    /// depends on the namespace's labels.
    pub fn cluster_source_bindings_in(&self, namespace: &str) -> Vec<ObjKey> {
        self.bindings
            .filter(|k, b| {
                k.namespace == namespace
                    && b.spec.source_ref.kind == SourceKind::ClusterSecretSource
            })
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    /// The labels of namespace `name` (empty when it is not known).
    pub fn namespace_labels(&self, name: &str) -> Arc<NamespaceLabels> {
        self.namespaces
            .get(&ObjKey::new("", name))
            .unwrap_or_default()
    }

    /// Whether the cluster kinds are served: only when every namespace is watched.
    pub fn serves_cluster_kinds(&self) -> bool {
        self.config.namespaces.is_empty()
    }

    /// Logs an API failure of a reconcile: a warning, unless the watches already reported
    /// the API server unreachable (then every call fails, and one line says so).
    pub fn api_failure(&self, what: &str, object: &str, error: &kube::Error) {
        if self.health.is_down() {
            tracing::debug!(object, error = %error, "{what} (API server unreachable)");
        } else {
            tracing::warn!(object, error = %error, "{what}");
        }
    }
}
