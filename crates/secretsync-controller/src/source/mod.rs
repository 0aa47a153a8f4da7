//! The source reconciler, for SecretSources and ClusterSecretSources alike: build (or
//! rebuild) the backend when the source or its credential Secrets changed, validate it
//! against the backend, report `Ready`, and wake the source's bindings when its readiness
//! or build changed.
//!
//! - [`credentials`]: lookups through the API server for the backends;
//! - [`kubernetes`]: the Secrets kubernetes sources read, and routing their changes;
//! - [`registry`]: the built backends and their shared caches;
//! - [`plan`]: the status, pure.

pub mod credentials;
pub mod kubernetes;
pub mod plan;
pub mod registry;

use std::collections::HashSet;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::core::DeserializeGuard;
use kube::{Api, Resource};
use secretsync_api::{ClusterSecretSource, SecretSource, SecretSourceStatus};

use crate::binding::plan::never_synced;
use crate::context::Ctx;
use crate::outcome::{ReconcileResult as R, Reconciled, Requeue};
use crate::runtime::backoff::{backoff, random_unit};
use crate::runtime::{Index, ObjKey, Phase, Priority, Store, key_of};
pub use plan::source_status;
pub use registry::{AnySource, SourceEntry, SourceRegistry};

/// How often a healthy source re-checks its credential Secrets.
pub const RECHECK: Duration = Duration::from_secs(60);

/// Queues the bindings using source `src` (never-synced ones urgently).
pub fn enqueue_bindings_of(ctx: &Ctx, src: &ObjKey) {
    for (k, b) in ctx.bindings_of_source(src) {
        let prio = if never_synced(&b) {
            Priority::Urgent
        } else {
            Priority::Normal
        };
        ctx.binding_queue.add(k, prio);
    }
}

/// A source of either kind as the store holds it.
enum Held {
    Namespaced(Arc<SecretSource>),
    Cluster(Arc<ClusterSecretSource>),
}

impl Held {
    fn find(ctx: &Ctx, key: &ObjKey) -> Option<Held> {
        if key.namespace.is_empty() {
            ctx.cluster_sources.get(key).map(Held::Cluster)
        } else {
            ctx.sources.get(key).map(Held::Namespaced)
        }
    }

    fn any(&self) -> AnySource<'_> {
        match self {
            Held::Namespaced(s) => AnySource::Namespaced(s),
            Held::Cluster(s) => AnySource::Cluster(s),
        }
    }

    fn status(&self) -> Option<&SecretSourceStatus> {
        match self {
            Held::Namespaced(s) => s.status.as_ref(),
            Held::Cluster(s) => s.status.as_ref(),
        }
    }

    fn generation(&self) -> Option<i64> {
        match self {
            Held::Namespaced(s) => s.metadata.generation,
            Held::Cluster(s) => s.metadata.generation,
        }
    }
}

/// Reconciles one source (a ClusterSecretSource when the key's namespace is empty).
pub async fn reconcile(ctx: &Ctx, key: &ObjKey) -> Reconciled {
    let Some(src) = Held::find(ctx, key) else {
        if ctx.registry.remove(key) {
            enqueue_bindings_of(ctx, key);
        }
        return Reconciled::done(R::Deleted);
    };
    let before = ctx.registry.get_existing_readiness(key).await;
    let (entry, rebuilt) = ctx.registry.refresh(src.any()).await;
    if let Ok(cache) = &entry.cache
        && !matches!(entry.readiness(), Some(Ok(())))
    {
        let res = cache.validate().await;
        entry.set_validation(res);
    }
    let readiness = entry.readiness();
    let ok = matches!(readiness, Some(Ok(())));
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let checked = match &readiness {
        Some(Err(e)) => Err(e),
        _ => Ok(()),
    };
    let status = source_status(src.status(), src.generation(), entry.kind, checked, &now);
    let written = if src.status() != Some(&status) {
        write_status(ctx, key, &status).await
    } else {
        Ok(())
    };
    if rebuilt || before != Some(ok) {
        enqueue_bindings_of(ctx, key);
    }
    let delay = if ok {
        ctx.registry.reset_failures(key);
        RECHECK
    } else {
        let n = ctx.registry.bump_failures(key);
        backoff(n.saturating_sub(1), random_unit())
    };
    match written {
        Err(e) => {
            ctx.api_failure("writing source status failed", &key.to_string(), &e);
            Reconciled::api_error(delay)
        }
        Ok(()) => Reconciled {
            result: if ok { R::Success } else { R::Error },
            requeue: Requeue::After(delay),
        },
    }
}

async fn write_status(
    ctx: &Ctx,
    key: &ObjKey,
    status: &SecretSourceStatus,
) -> Result<(), kube::Error> {
    if key.namespace.is_empty() {
        let api: Api<ClusterSecretSource> = Api::all(ctx.client.clone());
        apply_status(&api, &key.name, status).await
    } else {
        let api: Api<SecretSource> = Api::namespaced(ctx.client.clone(), &key.namespace);
        apply_status(&api, &key.name, status).await
    }
}

/// Server-side apply of `status` to object `name` of `api`'s kind.
pub(crate) async fn apply_status<K, S>(
    api: &Api<K>,
    name: &str,
    status: &S,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: serde::Serialize,
{
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let pp = kube::api::PatchParams::apply(secretsync_api::FIELD_MANAGER).force();
    api.patch_status(name, &pp, &kube::api::Patch::Apply(&body))
        .await
        .map(|_| ())
}

/// A source kind the [`SourceIndex`] can feed: where its objects are stored.
pub trait SourceKindStore:
    Resource<DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// The context's store of this kind.
    fn store(ctx: &Ctx) -> &Store<Self>;
}

impl SourceKindStore for SecretSource {
    fn store(ctx: &Ctx) -> &Store<Self> {
        &ctx.sources
    }
}

impl SourceKindStore for ClusterSecretSource {
    fn store(ctx: &Ctx) -> &Store<Self> {
        &ctx.cluster_sources
    }
}

/// Feeds a source store from the SecretSource (or ClusterSecretSource) watch; a new or
/// changed spec (or a malformed object, which is dropped) queues the source urgently.
pub struct SourceIndex<K>(pub Arc<Ctx>, PhantomData<K>);

impl<K> SourceIndex<K> {
    /// The index feeding `ctx`'s store of `K`.
    pub fn new(ctx: Arc<Ctx>) -> Self {
        SourceIndex(ctx, PhantomData)
    }
}

impl<K: SourceKindStore> Index<DeserializeGuard<K>> for SourceIndex<K> {
    fn apply(&self, g: DeserializeGuard<K>, phase: Phase) {
        let ctx = &self.0;
        let key = key_of(&g);
        match g.0 {
            Ok(src) => {
                let src = crate::without_managed_fields(src);
                let uid = src.meta().uid.clone();
                let generation = src.meta().generation;
                let changed = K::store(ctx)
                    .upsert(key.clone(), src)
                    .is_none_or(|old| old.meta().uid != uid || old.meta().generation != generation);
                if changed {
                    // A ClusterSecretSource's admission may have changed with its spec:
                    // its bindings check it again (a namespace's own source rebuilds and
                    // wakes them anyway).
                    if key.namespace.is_empty() && phase != Phase::FirstList {
                        enqueue_bindings_of(ctx, &key);
                    }
                    ctx.source_queue.add(key, Priority::Urgent);
                }
            }
            Err(invalid) => {
                tracing::warn!(source = %key, kind = %K::kind(&()), error = %invalid.error, "ignoring malformed source");
                if K::store(ctx).remove(&key).is_some() {
                    ctx.source_queue.add(key, Priority::Urgent);
                }
            }
        }
    }

    fn delete(&self, g: DeserializeGuard<K>) {
        let key = key_of(&g);
        K::store(&self.0).remove(&key);
        self.0.source_queue.add(key, Priority::Urgent);
    }

    fn relisted(&self, scope: Option<&str>, seen: &HashSet<ObjKey>, _phase: Phase) {
        for gone in K::store(&self.0).prune(scope, seen) {
            self.0.source_queue.add(gone, Priority::Urgent);
        }
    }
}
