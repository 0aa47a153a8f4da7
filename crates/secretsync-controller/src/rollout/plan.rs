//! Pure decisions of the rollout reconciler: which Secrets a workload depends on, its
//! secret revision, and whether to record, restart, wait or skip.
//!
//! Exactly-once restarts rest on one rule: the revision a workload was last restarted for
//! is stored on the workload itself (`secretsync.dev/secret-revision`) and written in the
//! same patch as the restart, so an operator restart, leader change or resync recomputes
//! the same revision and finds nothing to do. The only in-memory state is the debounce
//! window ([`Pending`]) and the dependencies last seen matching the revision (which tell a
//! mere change of the dependency set from a rotation); losing either on an operator
//! restart delays a restart by one debounce window, it never duplicates one. The one
//! conservative case: a dependency added or removed while no operator was running is
//! treated as a rotation.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use secretsync_api::{
    ANNOTATION_RESTART_ON_ROTATION, ANNOTATION_RESTARTED_AT, ANNOTATION_SECRET_REVISION,
    RestartRecord,
};
use secretsync_backends::hash::HmacKey;

/// How a workload opted in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptIn {
    /// `"true"`: every managed Secret the pod template references.
    Auto,
    /// A comma-separated list of Secret names.
    Explicit(BTreeSet<String>),
}

/// Reads the opt-in annotation; `None` when absent, empty or `"false"`.
pub fn opt_in(annotations: Option<&BTreeMap<String, String>>) -> Option<OptIn> {
    let raw = annotations?.get(ANNOTATION_RESTART_ON_ROTATION)?.trim();
    match raw {
        "" | "false" => None,
        "true" => Some(OptIn::Auto),
        list => {
            let names: BTreeSet<String> = list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            (!names.is_empty()).then_some(OptIn::Explicit(names))
        }
    }
}

/// How a ConfigMap is named among a workload's triggers (and in the opt-in list): Secrets
/// by their name, ConfigMaps as `configmap/NAME`.
pub const CONFIGMAP_PREFIX: &str = "configmap/";

/// The trigger name of ConfigMap `name`.
pub fn configmap_trigger(name: &str) -> String {
    format!("{CONFIGMAP_PREFIX}{name}")
}

/// A reference of a pod spec to a Secret or a ConfigMap.
enum Ref<'a> {
    Secret(&'a str),
    ConfigMap(&'a str),
}

/// Calls `f` for every Secret and ConfigMap reference of a pod spec: env `secretKeyRef` /
/// `configMapKeyRef`, `envFrom`, `secret` / `configMap` volumes and projected volume
/// sources, across init, regular and ephemeral containers.
fn each_reference<'a>(spec: &'a PodSpec, mut f: impl FnMut(Ref<'a>)) {
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| (&c.env, &c.env_from))
        .chain(spec.containers.iter().map(|c| (&c.env, &c.env_from)))
        .chain(
            spec.ephemeral_containers
                .iter()
                .flatten()
                .map(|c| (&c.env, &c.env_from)),
        );
    for (env, env_from) in containers {
        for from in env.iter().flatten().filter_map(|e| e.value_from.as_ref()) {
            if let Some(r) = &from.secret_key_ref {
                f(Ref::Secret(&r.name));
            }
            if let Some(r) = &from.config_map_key_ref {
                f(Ref::ConfigMap(&r.name));
            }
        }
        for e in env_from.iter().flatten() {
            if let Some(r) = &e.secret_ref {
                f(Ref::Secret(&r.name));
            }
            if let Some(r) = &e.config_map_ref {
                f(Ref::ConfigMap(&r.name));
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(name) = v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) {
            f(Ref::Secret(name));
        }
        if let Some(c) = &v.config_map {
            f(Ref::ConfigMap(&c.name));
        }
        for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(s) = &src.secret {
                f(Ref::Secret(&s.name));
            }
            if let Some(c) = &src.config_map {
                f(Ref::ConfigMap(&c.name));
            }
        }
    }
}

/// Every Secret and ConfigMap a pod spec references, as trigger names (see
/// [`CONFIGMAP_PREFIX`]).
pub fn referenced_objects(spec: &PodSpec) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    each_reference(spec, |r| match r {
        Ref::Secret(n) if !n.is_empty() => {
            out.insert(n.to_string());
        }
        Ref::ConfigMap(n) if !n.is_empty() => {
            out.insert(configmap_trigger(n));
        }
        _ => {}
    });
    out
}

/// Every Secret name a pod spec references (see [`referenced_objects`]).
pub fn referenced_secrets(spec: &PodSpec) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    each_reference(spec, |r| {
        if let Ref::Secret(n) = r
            && !n.is_empty()
        {
            out.insert(n.to_string());
        }
    });
    out
}

/// The triggers a workload depends on: those it selects (opt-in mode) that can restart
/// it. `restartable` maps trigger names (managed Secrets whose binding allows restarts,
/// labelled Secrets, `configmap/NAME` for labelled ConfigMaps) to their data HMAC.
pub fn dependencies<'a>(
    opt: &OptIn,
    pod: Option<&PodSpec>,
    restartable: &'a BTreeMap<String, String>,
) -> BTreeMap<&'a str, &'a str> {
    let wanted: BTreeSet<String> = match opt {
        OptIn::Auto => pod.map(referenced_objects).unwrap_or_default(),
        OptIn::Explicit(names) => names.clone(),
    };
    restartable
        .iter()
        .filter(|(name, _)| wanted.contains(name.as_str()))
        .map(|(n, h)| (n.as_str(), h.as_str()))
        .collect()
}

/// The workload kinds that can opt in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadKind {
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// apps/v1 DaemonSet.
    DaemonSet,
    /// batch/v1 CronJob: a restart changes its job template, so the next Jobs start with
    /// the new values (running Jobs are left alone).
    CronJob,
    /// argoproj.io/v1alpha1 Rollout (Argo Rollouts): restarted through `spec.restartAt`.
    Rollout,
}

impl WorkloadKind {
    /// The kind name (`Deployment`, ...), also the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
            WorkloadKind::CronJob => "CronJob",
            WorkloadKind::Rollout => "Rollout",
        }
    }

    /// The `apiVersion` of the kind.
    pub fn api_version(self) -> &'static str {
        match self {
            WorkloadKind::CronJob => "batch/v1",
            WorkloadKind::Rollout => "argoproj.io/v1alpha1",
            _ => "apps/v1",
        }
    }

    /// JSON pointer of the pod template's `spec`.
    pub fn pod_spec_pointer(self) -> &'static str {
        match self {
            WorkloadKind::CronJob => "/spec/jobTemplate/spec/template/spec",
            _ => "/spec/template/spec",
        }
    }
}

impl std::fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a workload in `mode` with (possibly unknown) referenced Secrets `refs` may
/// depend on Secret `secret`: decides which workloads a Secret change wakes up.
pub fn may_depend_on(mode: &OptIn, refs: Option<&BTreeSet<String>>, secret: &str) -> bool {
    match mode {
        OptIn::Explicit(names) => names.contains(secret),
        OptIn::Auto => refs.is_none_or(|r| r.contains(secret)),
    }
}

/// A rotation waiting out the debounce (in memory only: losing it on an operator restart
/// delays the restart by one debounce, it never duplicates it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// When a differing revision was first seen.
    pub since: Instant,
    /// When the revision last changed while waiting.
    pub last_change: Instant,
    /// The revision last seen.
    pub revision: String,
}

/// A steady stream of rotations cannot postpone a restart beyond this many debounces.
pub const MAX_DEBOUNCE_FACTOR: u32 = 3;

/// What to do with one workload now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to write.
    Nothing,
    /// First sight, or only the set of dependencies changed (no dependency's data did):
    /// record the revision without restarting.
    Record {
        /// Revision to record.
        revision: String,
    },
    /// Restart (pod-template `restartedAt`) and record the revision in one patch.
    Restart {
        /// Revision to record.
        revision: String,
    },
    /// A rotation is pending; look again at this instant (debounce).
    WaitUntil(Instant),
    /// A Deployment is paused: warn, do not patch, look again when it changes.
    SkipPaused {
        /// The revision that would be recorded.
        revision: String,
    },
}

/// Inputs for one decision.
pub struct WorkloadState<'a> {
    /// The workload's annotations.
    pub annotations: Option<&'a BTreeMap<String, String>>,
    /// Whether the workload is a paused Deployment.
    pub paused: bool,
    /// A rotation already waiting out the debounce.
    pub pending: Option<&'a Pending>,
    /// The dependencies (Secret name → data hash) this process last saw matching the
    /// recorded revision; `None` when unknown (e.g. after an operator restart).
    pub seen: Option<&'a BTreeMap<String, String>>,
}

/// A decision plus the debounce state to keep for the workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// What to do.
    pub decision: Decision,
    /// Pending rotation to remember (`None` = clear).
    pub pending: Option<Pending>,
}

/// Whether going from `seen` to `deps` changed no Secret's data (only which Secrets count).
fn membership_only(seen: &BTreeMap<String, String>, deps: &BTreeMap<&str, &str>) -> bool {
    deps.iter()
        .all(|(name, hash)| seen.get(*name).is_none_or(|h| h == hash))
}

/// Decides what to do. `deps` are (Secret name, data hash) pairs the workload depends on.
///
/// - No dependencies: nothing (no write on workloads that use no managed Secret).
/// - Recorded revision equal: nothing. Absent: record (first sight, no restart).
/// - Differing, but this process saw every common Secret with the same hash: only the set
///   of dependencies changed (a new binding's first sync, `rollout.restart` toggled, a
///   reference added): record without restart.
/// - Otherwise a rotation: wait until `debounce` after the last revision change (at most
///   [`MAX_DEBOUNCE_FACTOR`] debounces after the first), then restart, or skip a paused
///   Deployment (keeping the pending rotation for when it is unpaused).
pub fn decide(
    key: &HmacKey,
    state: &WorkloadState<'_>,
    deps: &BTreeMap<&str, &str>,
    now: Instant,
    debounce: Duration,
) -> Plan {
    let nothing = Plan {
        decision: Decision::Nothing,
        pending: None,
    };
    if deps.is_empty() {
        return nothing;
    }
    let revision = key.revision(deps.iter().map(|(n, h)| (*n, *h)));
    let recorded = state
        .annotations
        .and_then(|a| a.get(ANNOTATION_SECRET_REVISION));
    match recorded {
        Some(r) if *r == revision => return nothing,
        None => {
            return Plan {
                decision: Decision::Record { revision },
                pending: None,
            };
        }
        Some(_) => {}
    }
    if state.seen.is_some_and(|seen| membership_only(seen, deps)) {
        return Plan {
            decision: Decision::Record { revision },
            pending: None,
        };
    }
    let pending = match state.pending {
        Some(p) if p.revision == revision => p.clone(),
        Some(p) => Pending {
            since: p.since,
            last_change: now,
            revision: revision.clone(),
        },
        None => Pending {
            since: now,
            last_change: now,
            revision: revision.clone(),
        },
    };
    let due = (pending.last_change + debounce).min(pending.since + debounce * MAX_DEBOUNCE_FACTOR);
    let decision = if now < due {
        Decision::WaitUntil(due)
    } else if state.paused {
        Decision::SkipPaused { revision }
    } else {
        Decision::Restart { revision }
    };
    Plan {
        decision,
        pending: Some(pending),
    }
}

/// The Secrets whose data changed since `seen` (all dependencies when unknown): named in
/// the `RolloutRestarted` event and whose bindings list the restart.
pub fn rotated<'a>(
    seen: Option<&BTreeMap<String, String>>,
    deps: &BTreeMap<&'a str, &'a str>,
) -> Vec<&'a str> {
    deps.iter()
        .filter(|(name, hash)| seen.is_none_or(|s| s.get(**name).is_none_or(|h| h != **hash)))
        .map(|(n, _)| *n)
        .collect()
}

/// The merge patch recording `revision` on a workload, conditional on `resource_version`
/// (the API server answers 409 if the workload changed since it was read).
pub fn record_patch(resource_version: &str, revision: &str) -> serde_json::Value {
    serde_json::json!({
        "metadata": {
            "resourceVersion": resource_version,
            "annotations": {ANNOTATION_SECRET_REVISION: revision},
        }
    })
}

/// The one restart patch: pod-template `restartedAt` plus the new revision, conditional
/// on `resource_version` so two operator processes can never both restart. A CronJob's
/// pod template sits in its job template.
pub fn restart_patch(
    kind: WorkloadKind,
    resource_version: &str,
    revision: &str,
    at_rfc3339: &str,
) -> serde_json::Value {
    let template = serde_json::json!({
        "metadata": {"annotations": {ANNOTATION_RESTARTED_AT: at_rfc3339}}
    });
    let spec = match kind {
        WorkloadKind::CronJob => {
            serde_json::json!({"jobTemplate": {"spec": {"template": template}}})
        }
        // Argo Rollouts restarts the pods older than `restartAt` itself, in its own steps.
        WorkloadKind::Rollout => serde_json::json!({"restartAt": at_rfc3339}),
        _ => serde_json::json!({"template": template}),
    };
    serde_json::json!({
        "metadata": {
            "resourceVersion": resource_version,
            "annotations": {ANNOTATION_SECRET_REVISION: revision},
        },
        "spec": spec,
    })
}

/// A binding's `status.restarted` after restarting `kind`/`name` at `at`: entries from
/// before the binding's last rotation are dropped (the list covers the last rotation),
/// an older entry for the same workload is replaced.
pub fn restarted_list(
    existing: &[RestartRecord],
    last_rotation: Option<&Time>,
    kind: &str,
    name: &str,
    at: &Time,
) -> Vec<RestartRecord> {
    let mut out: Vec<RestartRecord> = existing
        .iter()
        .filter(|r| last_rotation.is_none_or(|t| r.at.0 >= t.0))
        .filter(|r| !(r.kind == kind && r.name == name))
        .cloned()
        .collect();
    out.push(RestartRecord {
        kind: kind.to_string(),
        name: name.to_string(),
        at: at.clone(),
    });
    out
}

#[cfg(test)]
mod tests;
