//! Pure decisions of the binding reconciler: target ownership, the Secret to apply, whether
//! a Secret is intact, whether to read the backend, rotation, force-sync and the status.
//! Nothing here does I/O, so every rule is unit-tested.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};
use secretsync_api::{
    ANNOTATION_BINDING, ANNOTATION_DATA_HASH, CONDITION_READY, ConditionReason, CreationPolicy,
    FIELD_MANAGER, LABEL_MANAGED, SecretBinding, SecretBindingStatus,
};
use secretsync_backends::SecretValue;
use secretsync_backends::hash::HmacKey;
use secretsync_backends::resolve::{InputStamp, SecretData};
use secretsync_backends::template::TemplatedMetadata;
use tokio::time::Instant;

use crate::runtime::backoff::jittered;

/// Result of checking the target Secret against the creation policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetCheck {
    /// Go ahead.
    Ok,
    /// `Owner`/`Orphan`: an existing Secret this binding does not own.
    Conflict(String),
    /// `Merge`: the Secret does not exist.
    NotFound(String),
}

/// Whether `secret` was written by `binding` (controller ownerReference, or our managed
/// label plus a binding annotation naming it, as Orphan Secrets carry no owner).
pub fn owned_by(secret: &Secret, binding_name: &str, binding_uid: &str) -> bool {
    let by_ref = secret
        .owner_references()
        .iter()
        .any(|o| o.kind == "SecretBinding" && o.uid == binding_uid && o.controller == Some(true));
    let by_marks = secret.labels().get(LABEL_MANAGED).map(String::as_str) == Some("true")
        && secret
            .annotations()
            .get(ANNOTATION_BINDING)
            .map(String::as_str)
            == Some(binding_name);
    by_ref || by_marks
}

/// Applies the creation policy to the current target.
pub fn check_target(
    policy: CreationPolicy,
    secret: Option<&Secret>,
    secret_name: &str,
    binding_name: &str,
    binding_uid: &str,
) -> TargetCheck {
    match (policy, secret) {
        (CreationPolicy::Merge, None) => TargetCheck::NotFound(format!(
            "Secret {secret_name:?} does not exist; creationPolicy Merge only writes into an existing Secret"
        )),
        (CreationPolicy::Merge, Some(_)) => TargetCheck::Ok,
        (_, None) => TargetCheck::Ok,
        (_, Some(s)) if owned_by(s, binding_name, binding_uid) => TargetCheck::Ok,
        (_, Some(_)) => TargetCheck::Conflict(format!(
            "Secret {secret_name:?} exists and is not managed by this SecretBinding; refusing to overwrite it"
        )),
    }
}

/// The metadata a managed Secret must carry.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredSecret {
    /// Secret name.
    pub name: String,
    /// Namespace (the binding's).
    pub namespace: String,
    /// Target labels plus the managed label.
    pub labels: BTreeMap<String, String>,
    /// Target annotations plus binding and data-hash annotations.
    pub annotations: BTreeMap<String, String>,
    /// Secret type; `None` for Merge (the existing Secret's type is not ours).
    pub type_: Option<String>,
    /// Controller ownerReference for `Owner`.
    pub owner: Option<OwnerReference>,
}

/// What a binding's Secret must look like for data hash `hash` and the labels and
/// annotations its template rendered: `target.labels`/`annotations`, then the templated
/// ones over them, then ours over both (a binding cannot unmark its own Secret).
pub fn desired_secret(
    binding: &SecretBinding,
    hash: &str,
    templated: &TemplatedMetadata,
) -> DesiredSecret {
    let target = &binding.spec.target;
    let mut labels = target.labels.clone();
    labels.extend(templated.labels.clone());
    labels.insert(LABEL_MANAGED.to_string(), "true".to_string());
    let mut annotations = target.annotations.clone();
    annotations.extend(templated.annotations.clone());
    annotations.insert(ANNOTATION_BINDING.to_string(), binding.name_any());
    annotations.insert(ANNOTATION_DATA_HASH.to_string(), hash.to_string());
    let policy = target.creation_policy;
    DesiredSecret {
        name: binding.target_name(),
        namespace: binding.namespace().unwrap_or_default(),
        labels,
        annotations,
        type_: (policy != CreationPolicy::Merge).then(|| target.type_.clone()),
        owner: (policy == CreationPolicy::Owner)
            .then(|| binding.controller_owner_ref(&()))
            .flatten(),
    }
}

/// The server-side-apply body: `data` as bytes (never `stringData`, so keys we stop
/// applying are removed), only the fields we own.
pub fn apply_object(desired: &DesiredSecret, data: &SecretData) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(desired.name.clone()),
            namespace: Some(desired.namespace.clone()),
            labels: Some(desired.labels.clone()),
            annotations: Some(desired.annotations.clone()),
            owner_references: desired.owner.clone().map(|o| vec![o]),
            ..Default::default()
        },
        type_: desired.type_.clone(),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.clone(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// The apply body that gives up everything our field manager owns on a Merge target: the
/// API server then removes our keys, labels and annotations and leaves other writers'.
pub fn cleanup_object(name: &str, namespace: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Fields our manager owns through server-side apply, read from `managedFields`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OwnedFields {
    /// Data keys.
    pub data: BTreeSet<String>,
    /// Label keys.
    pub labels: BTreeSet<String>,
    /// Annotation keys.
    pub annotations: BTreeSet<String>,
}

fn field_keys(v: Option<&serde_json::Value>) -> BTreeSet<String> {
    v.and_then(|v| v.as_object())
        .map(|o| {
            o.keys()
                .filter_map(|k| k.strip_prefix("f:").map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Our `Apply` entry in `managedFields`, if the server keeps one.
pub fn owned_fields(secret: &Secret) -> Option<OwnedFields> {
    let entry = secret.managed_fields().iter().find(|m| {
        m.manager.as_deref() == Some(FIELD_MANAGER) && m.operation.as_deref() == Some("Apply")
    })?;
    let fields = &entry.fields_v1.as_ref()?.0;
    let meta = fields.get("f:metadata");
    Some(OwnedFields {
        data: field_keys(fields.get("f:data")),
        labels: field_keys(meta.and_then(|m| m.get("f:labels"))),
        annotations: field_keys(meta.and_then(|m| m.get("f:annotations"))),
    })
}

/// HMAC of the Secret's values for `keys`; `None` when one of them is missing.
pub fn secret_data_hash(hmac: &HmacKey, secret: &Secret, keys: &[String]) -> Option<String> {
    let data = secret.data.as_ref();
    let mut subset = SecretData::new();
    for k in keys {
        let v = data?.get(k)?;
        subset.insert(k.clone(), SecretValue::new(v.0.clone()));
    }
    Some(hmac.data_hash(&subset))
}

/// Whether `secret` already is what we would apply for `desired` with data `keys` hashing
/// to `hash`: then nothing is written. Checks the values (by HMAC), our labels,
/// annotations, type and ownerReference, and — where the server records field ownership —
/// that we own exactly these keys (so removed keys or labels still trigger a write).
pub fn conforms(
    secret: &Secret,
    desired: &DesiredSecret,
    hmac: &HmacKey,
    hash: &str,
    keys: &[String],
) -> bool {
    let labels = secret.labels();
    let annotations = secret.annotations();
    let meta_ok = desired.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
        && desired
            .annotations
            .iter()
            .all(|(k, v)| annotations.get(k) == Some(v));
    let type_ok = desired
        .type_
        .as_ref()
        .is_none_or(|t| secret.type_.as_deref().unwrap_or("Opaque") == t.as_str());
    let owner_ok = desired.owner.as_ref().is_none_or(|o| {
        secret
            .owner_references()
            .iter()
            .any(|r| r.uid == o.uid && r.controller == Some(true))
    });
    if !(meta_ok && type_ok && owner_ok) {
        return false;
    }
    if secret_data_hash(hmac, secret, keys).as_deref() != Some(hash) {
        return false;
    }
    match owned_fields(secret) {
        Some(owned) => {
            owned.data == keys.iter().cloned().collect()
                && owned.labels == desired.labels.keys().cloned().collect()
                && owned.annotations == desired.annotations.keys().cloned().collect()
        }
        None => true,
    }
}

/// The first sync is never a rotation: only a change from a previous non-empty hash is.
pub fn is_rotation(previous: Option<&str>, new: &str) -> bool {
    previous.is_some_and(|p| !p.is_empty() && p != new)
}

/// A force-sync annotation value not seen before asks for a cache-bypassing read.
pub fn force_sync_requested(last_seen: Option<&str>, current: Option<&str>) -> bool {
    current.is_some() && current != last_seen
}

/// What this process remembers about a binding's last backend read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadMemo {
    /// Binding generation read for.
    pub generation: Option<i64>,
    /// Source cache epoch read through.
    pub source_epoch: u64,
    /// When the next periodic read is due (`None` = never: refreshInterval 0).
    pub next_refresh: Option<Instant>,
    /// The last attempt failed (retry reads the backend again).
    pub failed: bool,
    /// Digest of the templates rendered (`TemplateSet::digest`): an edit of a
    /// `templateFrom` ConfigMap changes it.
    pub templates: u64,
    /// The inputs the last build used (`None`: not identifiable, always build again).
    pub inputs: Option<InputStamp>,
}

/// Whether a read found exactly the inputs of the last successful build under the same
/// generation, source and templates: the build would give the same data and metadata, so
/// it can be skipped (the Secret is still checked against them).
pub fn inputs_unchanged(
    memo: Option<&ReadMemo>,
    generation: Option<i64>,
    source_epoch: u64,
    templates: u64,
    read: Option<&InputStamp>,
) -> bool {
    match (memo, read) {
        (Some(m), Some(r)) => {
            !m.failed
                && m.generation == generation
                && m.source_epoch == source_epoch
                && m.templates == templates
                && m.inputs.as_ref() == Some(r)
        }
        _ => false,
    }
}

/// Whether this reconcile must read the backend. A Secret event or a resync with nothing
/// due only checks the Secret against the last synced hash.
pub fn read_due(
    memo: Option<&ReadMemo>,
    generation: Option<i64>,
    source_epoch: u64,
    force: bool,
    now: Instant,
) -> bool {
    let Some(m) = memo else { return true };
    force
        || m.failed
        || m.generation != generation
        || m.source_epoch != source_epoch
        || m.next_refresh.is_some_and(|at| at <= now)
}

/// What a reconcile does about the Secret's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDue {
    /// Nothing: check that the Secret still holds the last synced data.
    Nothing,
    /// Only the templates changed (a `templateFrom` ConfigMap was edited): render again
    /// from the values the source's cache holds, and keep the refresh schedule.
    Rerender,
    /// Read (through the cache) and render.
    Read,
}

/// [`read_due`], and otherwise whether the templates (digest `templates`) differ from the
/// ones last rendered.
pub fn data_due(
    memo: Option<&ReadMemo>,
    generation: Option<i64>,
    source_epoch: u64,
    templates: u64,
    force: bool,
    now: Instant,
) -> DataDue {
    if read_due(memo, generation, source_epoch, force, now) {
        return DataDue::Read;
    }
    match memo {
        Some(m) if m.templates != templates => DataDue::Rerender,
        _ => DataDue::Nothing,
    }
}

/// The oldest value a re-render accepts from the cache, for a binding refreshing every
/// `refresh`. A re-render happens only before the binding's next refresh, which is due at
/// most `refresh` × 1.1 after the fetch of the oldest value it used ([`next_refresh`]), so
/// that value (or a newer one) is still accepted and nothing is read from the backend. With
/// `refreshInterval: 0` no value is kept between syncs, and a re-render reads.
pub fn rerender_max_age(refresh: Duration) -> Duration {
    if refresh.is_zero() {
        return Duration::ZERO;
    }
    refresh.mul_f64(1.1) + Duration::from_secs(1)
}

/// The outcome of one reconcile, for the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The Secret holds the data.
    Synced {
        /// Keys of the data.
        keys: Vec<String>,
        /// HMAC of the data.
        hash: String,
        /// Remote keys of optional entries that were not found, sorted.
        missing: Vec<String>,
        /// The backend was read in this reconcile (sets `lastSyncTime`).
        read: bool,
    },
    /// Something failed; the Secret was not touched.
    Failed {
        /// Condition reason.
        reason: ConditionReason,
        /// Message naming keys, never values.
        message: String,
    },
}

/// `"1 key"`, `"4 keys"`.
pub fn keys_message(n: usize) -> String {
    if n == 1 {
        "1 key".to_string()
    } else {
        format!("{n} keys")
    }
}

/// A Ready condition, keeping `lastTransitionTime` when the status value did not change.
pub fn ready_condition(
    previous: &[Condition],
    reason: ConditionReason,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if reason.is_ready() { "True" } else { "False" };
    let prev = previous.iter().find(|c| c.type_ == CONDITION_READY);
    let last_transition_time = match prev {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => now.clone(),
    };
    Condition {
        type_: CONDITION_READY.to_string(),
        status: status.to_string(),
        reason: reason.as_str().to_string(),
        message: message.to_string(),
        observed_generation: generation,
        last_transition_time,
    }
}

/// `previous` with its Ready condition replaced by [`ready_condition`]'s.
pub fn with_ready(
    previous: &[Condition],
    reason: ConditionReason,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    let ready = ready_condition(previous, reason, message, generation, now);
    previous
        .iter()
        .filter(|c| c.type_ != CONDITION_READY)
        .cloned()
        .chain(std::iter::once(ready))
        .collect()
}

/// The next status. On failure the last good `dataHash`/`syncedKeys`/`missingKeys` stay (the Secret still
/// holds that data). `restarted` belongs to the rollout reconciler and is carried over.
pub fn next_status(
    previous: Option<&SecretBindingStatus>,
    generation: Option<i64>,
    outcome: &Outcome,
    now: &Time,
) -> SecretBindingStatus {
    let prev = previous.cloned().unwrap_or_default();
    let mut conditions: Vec<Condition> = prev
        .conditions
        .iter()
        .filter(|c| c.type_ != CONDITION_READY)
        .cloned()
        .collect();
    let mut next = SecretBindingStatus {
        observed_generation: generation,
        conditions: Vec::new(),
        last_sync_time: prev.last_sync_time.clone(),
        last_rotation_time: prev.last_rotation_time.clone(),
        data_hash: prev.data_hash.clone(),
        synced_keys: prev.synced_keys.clone(),
        missing_keys: prev.missing_keys.clone(),
        restarted: prev.restarted.clone(),
    };
    match outcome {
        Outcome::Synced {
            keys,
            hash,
            missing,
            read,
        } => {
            conditions.push(ready_condition(
                &prev.conditions,
                ConditionReason::Synced,
                &keys_message(keys.len()),
                generation,
                now,
            ));
            if *read {
                next.last_sync_time = Some(now.clone());
            }
            if is_rotation(prev.data_hash.as_deref(), hash) {
                next.last_rotation_time = Some(now.clone());
            }
            next.data_hash = Some(hash.clone());
            next.synced_keys = keys.clone();
            next.missing_keys = missing.clone();
        }
        Outcome::Failed { reason, message } => {
            conditions.push(ready_condition(
                &prev.conditions,
                *reason,
                message,
                generation,
                now,
            ));
        }
    }
    next.conditions = conditions;
    next
}

/// `next` with `lastSyncTime` held back when it is the only change and the binding's
/// heartbeat is not due ([`heartbeat_due`]): a refresh that finds nothing new writes no
/// status until then. A zero heartbeat writes it on every refresh.
pub fn hold_heartbeat(
    previous: Option<&SecretBindingStatus>,
    next: SecretBindingStatus,
    now: &Time,
    heartbeat: Duration,
    uid: &str,
) -> SecretBindingStatus {
    let Some(prev) = previous else { return next };
    let (Some(last), Some(_)) = (&prev.last_sync_time, &next.last_sync_time) else {
        return next;
    };
    if heartbeat_due(last, now, heartbeat, uid) {
        return next;
    }
    let mut held = next.clone();
    held.last_sync_time = prev.last_sync_time.clone();
    if &held == prev { held } else { next }
}

/// Whether writing `outcome` would leave `prev` as it is: what comparing
/// `hold_heartbeat(next_status(..))` with `prev` decides, without building the next status
/// (most refreshes find nothing to write). `false` whenever in doubt.
pub fn status_settled(
    prev: &SecretBindingStatus,
    generation: Option<i64>,
    outcome: &Outcome,
    now: &Time,
    heartbeat: Duration,
    uid: &str,
) -> bool {
    let Outcome::Synced {
        keys,
        hash,
        missing,
        read,
    } = outcome
    else {
        return false;
    };
    // next_status keeps the other conditions in order and puts the one Ready last.
    let ready_last = prev.conditions.last().is_some_and(|c| {
        c.type_ == CONDITION_READY
            && c.status == "True"
            && c.reason == ConditionReason::Synced.as_str()
            && c.observed_generation == generation
            && c.message == keys_message(keys.len())
    });
    let one_ready = prev
        .conditions
        .iter()
        .filter(|c| c.type_ == CONDITION_READY)
        .count()
        == 1;
    let sync_time_held = !read
        || prev
            .last_sync_time
            .as_ref()
            .is_some_and(|last| !heartbeat_due(last, now, heartbeat, uid));
    ready_last
        && one_ready
        && sync_time_held
        && prev.observed_generation == generation
        && prev.data_hash.as_deref() == Some(hash.as_str())
        && prev.synced_keys == *keys
        && prev.missing_keys == *missing
}

/// How much longer than `--status-heartbeat` a binding's heartbeat period is: like the
/// refresh jitter, it keeps the average write rate of many bindings under
/// `bindings ÷ heartbeat` rather than on it.
const HEARTBEAT_STRETCH: f64 = 1.1;

/// Whether a `lastSyncTime` last written at `last` is due again at `now`. Each binding has
/// heartbeat slots of `heartbeat × 1.1` at a phase of its own (from its UID), and is due
/// once its slot changed since `last`: bindings synced together (a cold start) then spread
/// their rewrites over a whole period instead of all rewriting in the same refresh cycle,
/// and one binding rewrites once per period.
pub fn heartbeat_due(last: &Time, now: &Time, heartbeat: Duration, uid: &str) -> bool {
    if heartbeat.is_zero() {
        return true;
    }
    let period = (heartbeat.as_secs_f64() * HEARTBEAT_STRETCH * 1000.0).max(1.0) as i64;
    let phase = (phase_of(uid) * period as f64) as i64;
    let slot = |t: &Time| (t.0.as_millisecond() + phase).div_euclid(period);
    slot(now) > slot(last)
}

/// A stable draw from `[0, 1)` for an object (its UID).
fn phase_of(uid: &str) -> f64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    uid.hash(&mut h);
    secretsync_backends::retry::unit_of(h.finish())
}

/// When the next periodic read is due, or `None` for `refreshInterval: 0`. When the
/// cache's refresh follows the fetch (no `spec.cache`), it is counted from when the oldest
/// value used was fetched, scaled by `[1.0, 1.1)`: bindings sharing a key then come due
/// together, and the first of them reads it for all; no data gets older than the interval
/// plus that jitter. Otherwise it is counted from now, scaled by `[0.9, 1.1)`.
pub fn next_refresh(
    refresh: Duration,
    follows_fetch: bool,
    oldest_read: Option<Instant>,
    now: Instant,
    r: f64,
) -> Option<Instant> {
    if refresh.is_zero() {
        return None;
    }
    Some(match oldest_read.filter(|_| follows_fetch) {
        Some(fetched) => (fetched + refresh.mul_f64(1.0 + 0.1 * r.clamp(0.0, 1.0))).max(now),
        None => now + jittered(refresh, r),
    })
}

/// The Ready status of a binding's status, for the `bindings{ready}` gauge.
pub fn ready_of(status: Option<&SecretBindingStatus>) -> Option<bool> {
    status?
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_READY)
        .map(|c| c.status == "True")
}

/// A binding that never synced for its current generation goes to the urgent lane.
pub fn never_synced(binding: &SecretBinding) -> bool {
    let Some(st) = binding.status.as_ref() else {
        return true;
    };
    st.data_hash.is_none()
        || st.observed_generation != binding.metadata.generation
        || ready_of(Some(st)) != Some(true)
}

#[cfg(test)]
mod tests;
