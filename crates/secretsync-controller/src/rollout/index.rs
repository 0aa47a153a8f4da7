//! Feeds the rollout state from the metadata-only workload watches: only opted-in
//! workloads are remembered, never their pod templates.

use std::collections::HashSet;
use std::marker::PhantomData;
use std::sync::Arc;

use kube::ResourceExt;
use kube::core::PartialObjectMeta;

use super::plan::WorkloadKind;
use super::state::WorkloadKey;
use crate::context::Ctx;
use crate::runtime::{Index, ObjKey, Phase};

/// The index of one workload kind.
pub struct WorkloadIndex<K> {
    ctx: Arc<Ctx>,
    kind: WorkloadKind,
    _kind: PhantomData<fn() -> K>,
}

impl<K> WorkloadIndex<K> {
    /// An index for workloads of `kind`.
    pub fn new(ctx: Arc<Ctx>, kind: WorkloadKind) -> Self {
        WorkloadIndex {
            ctx,
            kind,
            _kind: PhantomData,
        }
    }

    fn key(&self, m: &PartialObjectMeta<K>) -> WorkloadKey
    where
        K: kube::Resource<DynamicType = ()>,
    {
        WorkloadKey {
            kind: self.kind,
            namespace: m.namespace().unwrap_or_default(),
            name: m.name_any(),
        }
    }
}

impl<K> Index<PartialObjectMeta<K>> for WorkloadIndex<K>
where
    K: kube::Resource<DynamicType = ()> + Send + Sync,
{
    fn apply(&self, m: PartialObjectMeta<K>, _phase: Phase) {
        let key = self.key(&m);
        self.ctx
            .rollout
            .workload_applied(key, m.annotations(), m.metadata.generation);
    }

    fn delete(&self, m: PartialObjectMeta<K>) {
        self.ctx.rollout.workload_deleted(&self.key(&m));
    }

    fn relisted(&self, scope: Option<&str>, seen: &HashSet<ObjKey>, _phase: Phase) {
        self.ctx.rollout.prune_workloads(self.kind, scope, seen);
    }
}
