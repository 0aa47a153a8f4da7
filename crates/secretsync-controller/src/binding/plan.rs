//! Pure decisions of the binding reconciler: target ownership, the Secret to apply, whether
//! a Secret is intact, whether to read the backend, rotation, force-sync and the status.
//! Nothing here does I/O, so every rule is unit-tested.

use std::collections::{BTreeMap, BTreeSet};

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
use secretsync_backends::resolve::SecretData;
use tokio::time::Instant;

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

/// What a binding's Secret must look like for data hash `hash`.
pub fn desired_secret(binding: &SecretBinding, hash: &str) -> DesiredSecret {
    let target = &binding.spec.target;
    let mut labels = target.labels.clone();
    labels.insert(LABEL_MANAGED.to_string(), "true".to_string());
    let mut annotations = target.annotations.clone();
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

/// The outcome of one reconcile, for the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The Secret holds the data.
    Synced {
        /// Keys of the data.
        keys: Vec<String>,
        /// HMAC of the data.
        hash: String,
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

/// The next status. On failure the last good `dataHash`/`syncedKeys` stay (the Secret still
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
        restarted: prev.restarted.clone(),
    };
    match outcome {
        Outcome::Synced { keys, hash, read } => {
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
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
    use k8s_openapi::jiff::Timestamp;
    use secretsync_api::SecretBindingSpec;

    fn binding(policy: CreationPolicy) -> SecretBinding {
        let mut b = SecretBinding::new("shop-db", SecretBindingSpec::default());
        b.metadata.namespace = Some("shop".into());
        b.metadata.uid = Some("uid-1".into());
        b.metadata.generation = Some(2);
        b.spec.target.creation_policy = policy;
        b.spec.target.labels.insert("team".into(), "a".into());
        b
    }

    fn data(pairs: &[(&str, &str)]) -> SecretData {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), SecretValue::from(*v)))
            .collect()
    }

    fn key() -> HmacKey {
        HmacKey::new(vec![9; 32])
    }

    fn keys(d: &SecretData) -> Vec<String> {
        d.keys().cloned().collect()
    }

    #[test]
    fn apply_object_for_each_policy() {
        let d = data(&[("password", "pw"), ("user", "u")]);
        let b = binding(CreationPolicy::Owner);
        let s = apply_object(&desired_secret(&b, "h1"), &d);
        assert_eq!(s.metadata.name.as_deref(), Some("shop-db"));
        assert_eq!(s.labels()[LABEL_MANAGED], "true");
        assert_eq!(s.labels()["team"], "a");
        assert_eq!(s.annotations()[ANNOTATION_BINDING], "shop-db");
        assert_eq!(s.annotations()[ANNOTATION_DATA_HASH], "h1");
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
        let owner = &s.owner_references()[0];
        assert_eq!(
            (owner.uid.as_str(), owner.controller),
            ("uid-1", Some(true))
        );
        assert_eq!(s.data.as_ref().unwrap()["password"].0, b"pw");
        assert!(s.string_data.is_none());
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["kind"], "Secret");
        assert_eq!(json["data"]["password"], "cHc=");
        assert!(!json.to_string().contains("null"));

        let s = apply_object(&desired_secret(&binding(CreationPolicy::Orphan), "h"), &d);
        assert!(s.metadata.owner_references.is_none());
        let s = apply_object(&desired_secret(&binding(CreationPolicy::Merge), "h"), &d);
        assert!(s.metadata.owner_references.is_none());
        assert!(s.type_.is_none());

        let c = serde_json::to_value(cleanup_object("t", "ns")).unwrap();
        assert_eq!(
            c["metadata"],
            serde_json::json!({"name": "t", "namespace": "ns"})
        );
        assert!(c.get("data").is_none());
    }

    #[test]
    fn target_checks() {
        let b = binding(CreationPolicy::Owner);
        let ours = apply_object(&desired_secret(&b, "h"), &data(&[]));
        let foreign = Secret {
            metadata: ObjectMeta {
                name: Some("shop-db".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let other_binding = {
            let mut o = binding(CreationPolicy::Orphan);
            o.metadata.name = Some("other".into());
            apply_object(&desired_secret(&o, "h"), &data(&[]))
        };
        let chk = |p, s| check_target(p, s, "shop-db", "shop-db", "uid-1");
        assert_eq!(chk(CreationPolicy::Owner, None), TargetCheck::Ok);
        assert_eq!(chk(CreationPolicy::Owner, Some(&ours)), TargetCheck::Ok);
        assert!(matches!(
            chk(CreationPolicy::Owner, Some(&foreign)),
            TargetCheck::Conflict(_)
        ));
        assert!(matches!(
            chk(CreationPolicy::Orphan, Some(&other_binding)),
            TargetCheck::Conflict(_)
        ));
        assert!(matches!(
            chk(CreationPolicy::Merge, None),
            TargetCheck::NotFound(_)
        ));
        assert_eq!(chk(CreationPolicy::Merge, Some(&foreign)), TargetCheck::Ok);
        // An Orphan Secret written by this binding (no owner ref) is still ours.
        let orphan = apply_object(
            &desired_secret(&binding(CreationPolicy::Orphan), "h"),
            &data(&[]),
        );
        assert_eq!(chk(CreationPolicy::Owner, Some(&orphan)), TargetCheck::Ok);
    }

    #[test]
    fn conformance_detects_drift() {
        let hm = key();
        let b = binding(CreationPolicy::Owner);
        let d = data(&[("a", "1"), ("b", "2")]);
        let hash = hm.data_hash(&d);
        let desired = desired_secret(&b, &hash);
        let good = apply_object(&desired, &d);
        assert!(conforms(&good, &desired, &hm, &hash, &keys(&d)));

        let mut edited = good.clone();
        edited
            .data
            .as_mut()
            .unwrap()
            .insert("a".into(), ByteString(b"x".to_vec()));
        assert!(!conforms(&edited, &desired, &hm, &hash, &keys(&d)));

        let mut missing = good.clone();
        missing.data.as_mut().unwrap().remove("b");
        assert!(!conforms(&missing, &desired, &hm, &hash, &keys(&d)));

        let mut unlabeled = good.clone();
        unlabeled
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .remove(LABEL_MANAGED);
        assert!(!conforms(&unlabeled, &desired, &hm, &hash, &keys(&d)));

        let mut stale_annotation = good.clone();
        stale_annotation
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(ANNOTATION_DATA_HASH.into(), "old".into());
        assert!(!conforms(
            &stale_annotation,
            &desired,
            &hm,
            &hash,
            &keys(&d)
        ));

        let mut no_owner = good.clone();
        no_owner.metadata.owner_references = None;
        assert!(!conforms(&no_owner, &desired, &hm, &hash, &keys(&d)));

        // Foreign extra keys are fine; with managedFields, a key we still own but no
        // longer want triggers a write.
        let mut extra = good.clone();
        extra
            .data
            .as_mut()
            .unwrap()
            .insert("other".into(), ByteString(b"z".to_vec()));
        assert!(conforms(&extra, &desired, &hm, &hash, &keys(&d)));
        let mf = |data_keys: &[&str]| ManagedFieldsEntry {
            manager: Some(FIELD_MANAGER.into()),
            operation: Some("Apply".into()),
            fields_v1: Some(FieldsV1(serde_json::json!({
                "f:data": data_keys.iter().map(|k| (format!("f:{k}"), serde_json::json!({}))).collect::<serde_json::Map<_,_>>(),
                "f:metadata": {
                    "f:labels": {"f:team": {}, "f:secretsync.dev/managed": {}},
                    "f:annotations": {"f:secretsync.dev/binding": {}, "f:secretsync.dev/data-hash": {}},
                },
            }))),
            ..Default::default()
        };
        let mut tracked = extra.clone();
        tracked.metadata.managed_fields = Some(vec![mf(&["a", "b"])]);
        assert!(conforms(&tracked, &desired, &hm, &hash, &keys(&d)));
        tracked.metadata.managed_fields = Some(vec![mf(&["a", "b", "other"])]);
        assert!(!conforms(&tracked, &desired, &hm, &hash, &keys(&d)));
    }

    #[test]
    fn rotation_and_force_sync() {
        assert!(!is_rotation(None, "h"));
        assert!(!is_rotation(Some(""), "h"));
        assert!(!is_rotation(Some("h"), "h"));
        assert!(is_rotation(Some("g"), "h"));
        assert!(!force_sync_requested(None, None));
        assert!(force_sync_requested(None, Some("1")));
        assert!(!force_sync_requested(Some("1"), Some("1")));
        assert!(force_sync_requested(Some("1"), Some("2")));
        assert!(!force_sync_requested(Some("1"), None));
    }

    #[test]
    fn read_decisions() {
        let now = Instant::now();
        let memo = ReadMemo {
            generation: Some(2),
            source_epoch: 1,
            next_refresh: Some(now + std::time::Duration::from_secs(60)),
            failed: false,
        };
        assert!(read_due(None, Some(2), 1, false, now));
        assert!(!read_due(Some(&memo), Some(2), 1, false, now));
        assert!(read_due(Some(&memo), Some(3), 1, false, now));
        assert!(read_due(Some(&memo), Some(2), 2, false, now));
        assert!(read_due(Some(&memo), Some(2), 1, true, now));
        assert!(read_due(
            Some(&memo),
            Some(2),
            1,
            false,
            now + std::time::Duration::from_secs(61)
        ));
        let never = ReadMemo {
            next_refresh: None,
            ..memo.clone()
        };
        assert!(!read_due(
            Some(&never),
            Some(2),
            1,
            false,
            now + std::time::Duration::from_secs(1_000_000)
        ));
        let failed = ReadMemo {
            failed: true,
            ..memo
        };
        assert!(read_due(Some(&failed), Some(2), 1, false, now));
    }

    fn t(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn status_transitions() {
        let synced = |hash: &str, read| Outcome::Synced {
            keys: vec!["a".into(), "b".into()],
            hash: hash.into(),
            read,
        };
        let s1 = next_status(None, Some(1), &synced("h1", true), &t(100));
        let ready = &s1.conditions[0];
        assert_eq!(
            (
                ready.status.as_str(),
                ready.reason.as_str(),
                ready.message.as_str()
            ),
            ("True", "Synced", "2 keys")
        );
        assert_eq!(s1.last_sync_time, Some(t(100)));
        assert_eq!(s1.last_rotation_time, None, "first sync is no rotation");
        assert_eq!(s1.data_hash.as_deref(), Some("h1"));
        assert_eq!(s1.observed_generation, Some(1));

        // Same data, no read: identical status, so nothing is written.
        let s2 = next_status(Some(&s1), Some(1), &synced("h1", false), &t(200));
        assert_eq!(s2, s1);
        // Same data with a read: only lastSyncTime moves.
        let s3 = next_status(Some(&s1), Some(1), &synced("h1", true), &t(300));
        assert_eq!(s3.last_sync_time, Some(t(300)));
        assert_eq!(s3.conditions[0].last_transition_time, t(100));

        let s4 = next_status(Some(&s3), Some(1), &synced("h2", true), &t(400));
        assert_eq!(s4.last_rotation_time, Some(t(400)));

        let failed = Outcome::Failed {
            reason: ConditionReason::BackendUnavailable,
            message: "down".into(),
        };
        let s5 = next_status(Some(&s4), Some(1), &failed, &t(500));
        assert_eq!(s5.conditions[0].status, "False");
        assert_eq!(s5.conditions[0].reason, "BackendUnavailable");
        assert_eq!(s5.conditions[0].last_transition_time, t(500));
        assert_eq!(s5.data_hash.as_deref(), Some("h2"), "last good hash stays");
        assert_eq!(s5.last_sync_time, Some(t(400)));
        let s6 = next_status(Some(&s5), Some(1), &failed, &t(600));
        assert_eq!(s6, s5, "repeated failure writes nothing");
        assert_eq!(ready_of(Some(&s6)), Some(false));
        assert_eq!(keys_message(1), "1 key");
    }

    #[test]
    fn never_synced_goes_first() {
        let mut b = binding(CreationPolicy::Owner);
        assert!(never_synced(&b));
        let ok = Outcome::Synced {
            keys: vec![],
            hash: "h".into(),
            read: true,
        };
        b.status = Some(next_status(None, Some(2), &ok, &t(1)));
        assert!(!never_synced(&b));
        b.metadata.generation = Some(3);
        assert!(never_synced(&b));
    }

    #[test]
    fn secret_hash_of_subset() {
        let hm = key();
        let d = data(&[("a", "1")]);
        let s = apply_object(&desired_secret(&binding(CreationPolicy::Owner), "h"), &d);
        assert_eq!(
            secret_data_hash(&hm, &s, &["a".into()]),
            Some(hm.data_hash(&d))
        );
        assert_eq!(secret_data_hash(&hm, &s, &["zz".into()]), None);
    }
}
