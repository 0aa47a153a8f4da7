//! Unit tests of the pure decisions.
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

fn no_meta() -> TemplatedMetadata {
    TemplatedMetadata::default()
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
    let s = apply_object(&desired_secret(&b, "h1", &no_meta()), &d);
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

    let s = apply_object(
        &desired_secret(&binding(CreationPolicy::Orphan), "h", &no_meta()),
        &d,
    );
    assert!(s.metadata.owner_references.is_none());
    let s = apply_object(
        &desired_secret(&binding(CreationPolicy::Merge), "h", &no_meta()),
        &d,
    );
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
fn templated_metadata_joins_the_static_and_ours_win() {
    let mut b = binding(CreationPolicy::Owner);
    b.spec
        .target
        .annotations
        .insert("note".into(), "static".into());
    let templated = TemplatedMetadata {
        labels: [
            ("team".to_string(), "b".to_string()),
            ("version".to_string(), "v2".to_string()),
            (LABEL_MANAGED.to_string(), "false".to_string()),
        ]
        .into(),
        annotations: [
            ("note".to_string(), "rendered".to_string()),
            (ANNOTATION_DATA_HASH.to_string(), "forged".to_string()),
        ]
        .into(),
    };
    let d = desired_secret(&b, "h1", &templated);
    assert_eq!(d.labels["team"], "b", "templated over target.labels");
    assert_eq!(d.labels["version"], "v2");
    assert_eq!(d.labels[LABEL_MANAGED], "true", "ours over templated");
    assert_eq!(d.annotations["note"], "rendered");
    assert_eq!(d.annotations[ANNOTATION_DATA_HASH], "h1");
    // A Secret written without the templated metadata does not conform.
    let hm = key();
    let data = data(&[("a", "1")]);
    let hash = hm.data_hash(&data);
    let plain = apply_object(&desired_secret(&b, &hash, &no_meta()), &data);
    let wanted = desired_secret(&b, &hash, &templated);
    assert!(!conforms(&plain, &wanted, &hm, &hash, &keys(&data)));
    let written = apply_object(&wanted, &data);
    assert!(conforms(&written, &wanted, &hm, &hash, &keys(&data)));
}

#[test]
fn target_checks() {
    let b = binding(CreationPolicy::Owner);
    let ours = apply_object(&desired_secret(&b, "h", &no_meta()), &data(&[]));
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
        apply_object(&desired_secret(&o, "h", &no_meta()), &data(&[]))
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
        &desired_secret(&binding(CreationPolicy::Orphan), "h", &no_meta()),
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
    let desired = desired_secret(&b, &hash, &no_meta());
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
        templates: 7,
        inputs: None,
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

#[test]
fn a_build_is_skipped_only_for_the_same_inputs_under_the_same_spec() {
    let stamp = |s: &[u64]| InputStamp::new(s.to_vec());
    let memo = ReadMemo {
        generation: Some(2),
        source_epoch: 1,
        next_refresh: None,
        failed: false,
        templates: 7,
        inputs: Some(stamp(&[4, 9])),
    };
    let same = stamp(&[4, 9]);
    assert!(inputs_unchanged(Some(&memo), Some(2), 1, 7, Some(&same)));
    // A value changed, a key was added, or the read was not identifiable.
    assert!(!inputs_unchanged(
        Some(&memo),
        Some(2),
        1,
        7,
        Some(&stamp(&[4, 10]))
    ));
    assert!(!inputs_unchanged(
        Some(&memo),
        Some(2),
        1,
        7,
        Some(&stamp(&[4, 9, 11]))
    ));
    assert!(!inputs_unchanged(Some(&memo), Some(2), 1, 7, None));
    // The spec, the source or the templates changed; no build yet; the last sync failed.
    assert!(!inputs_unchanged(Some(&memo), Some(3), 1, 7, Some(&same)));
    assert!(!inputs_unchanged(Some(&memo), Some(2), 2, 7, Some(&same)));
    assert!(!inputs_unchanged(Some(&memo), Some(2), 1, 8, Some(&same)));
    assert!(!inputs_unchanged(None, Some(2), 1, 7, Some(&same)));
    let failed = ReadMemo {
        failed: true,
        ..memo.clone()
    };
    assert!(!inputs_unchanged(Some(&failed), Some(2), 1, 7, Some(&same)));
    let unidentified = ReadMemo {
        inputs: None,
        ..memo
    };
    assert!(!inputs_unchanged(
        Some(&unidentified),
        Some(2),
        1,
        7,
        Some(&same)
    ));
}

#[test]
fn a_template_change_alone_renders_again_without_reading() {
    let now = Instant::now();
    let memo = ReadMemo {
        generation: Some(2),
        source_epoch: 1,
        next_refresh: Some(now + std::time::Duration::from_secs(60)),
        failed: false,
        templates: 7,
        inputs: None,
    };
    let due = |m: Option<&ReadMemo>, generation, templates, force| {
        data_due(m, generation, 1, templates, force, now)
    };
    assert_eq!(due(Some(&memo), Some(2), 7, false), DataDue::Nothing);
    assert_eq!(due(Some(&memo), Some(2), 8, false), DataDue::Rerender);
    // Anything that makes a read due wins: it renders the new templates too.
    assert_eq!(due(None, Some(2), 8, false), DataDue::Read);
    assert_eq!(due(Some(&memo), Some(3), 8, false), DataDue::Read);
    assert_eq!(due(Some(&memo), Some(2), 8, true), DataDue::Read);
    let failed = ReadMemo {
        failed: true,
        ..memo.clone()
    };
    assert_eq!(due(Some(&failed), Some(2), 7, false), DataDue::Read);
    let later = now + std::time::Duration::from_secs(61);
    assert_eq!(
        data_due(Some(&memo), Some(2), 1, 8, false, later),
        DataDue::Read
    );
}

#[test]
fn a_rerender_accepts_every_value_the_last_read_may_have_used() {
    let refresh = std::time::Duration::from_secs(100);
    let now = Instant::now();
    // The latest a refresh can be due after the oldest fetch (r close to 1).
    let fetched = now;
    let due = next_refresh(refresh, true, Some(fetched), now, 0.999).unwrap();
    assert!(rerender_max_age(refresh) > due - fetched);
    assert_eq!(
        rerender_max_age(std::time::Duration::ZERO),
        std::time::Duration::ZERO
    );
}

fn t(secs: i64) -> Time {
    Time(Timestamp::from_second(secs).unwrap())
}

#[test]
fn status_transitions() {
    let synced = |hash: &str, read| Outcome::Synced {
        keys: vec!["a".into(), "b".into()],
        hash: hash.into(),
        missing: vec![],
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

    // Missing optional keys are listed while missing, kept through a failure, and gone
    // once found.
    let with_missing = Outcome::Synced {
        keys: vec!["a".into()],
        hash: "h3".into(),
        missing: vec!["ca".into(), "db#tls".into()],
        read: true,
    };
    let s7 = next_status(Some(&s6), Some(1), &with_missing, &t(700));
    assert_eq!(s7.missing_keys, ["ca", "db#tls"]);
    let s8 = next_status(Some(&s7), Some(1), &failed, &t(800));
    assert_eq!(s8.missing_keys, s7.missing_keys);
    let s9 = next_status(Some(&s8), Some(1), &synced("h4", true), &t(900));
    assert!(s9.missing_keys.is_empty());
    assert!(
        !serde_json::to_string(&s9).unwrap().contains("missingKeys"),
        "an empty list is left out, so the apply drops the field"
    );
    assert_eq!(ready_of(Some(&s6)), Some(false));
    assert_eq!(keys_message(1), "1 key");
}

#[test]
fn settled_status_agrees_with_building_the_next_one() {
    let synced = |hash: &str, keys: &[&str], missing: &[&str], read| Outcome::Synced {
        keys: keys.iter().map(|k| k.to_string()).collect(),
        hash: hash.into(),
        missing: missing.iter().map(|k| k.to_string()).collect(),
        read,
    };
    let failed = Outcome::Failed {
        reason: ConditionReason::BackendUnavailable,
        message: "down".into(),
    };
    let base = next_status(
        None,
        Some(1),
        &synced("h1", &["a", "b"], &[], true),
        &t(100),
    );
    let broken = next_status(Some(&base), Some(1), &failed, &t(150));
    let mut other_condition = base.clone();
    other_condition.conditions.insert(
        0,
        Condition {
            type_: "Other".into(),
            ..base.conditions[0].clone()
        },
    );
    let mut ready_not_last = other_condition.clone();
    ready_not_last.conditions.reverse();
    let mut two_ready = base.clone();
    two_ready.conditions.push(base.conditions[0].clone());
    let mut never_synced = base.clone();
    never_synced.last_sync_time = None;
    let prevs = [
        base.clone(),
        broken,
        other_condition,
        ready_not_last,
        two_ready,
        never_synced,
    ];
    let outcomes = [
        synced("h1", &["a", "b"], &[], false),
        synced("h1", &["a", "b"], &[], true),
        synced("h2", &["a", "b"], &[], true),
        synced("h1", &["a"], &[], false),
        synced("h1", &["a", "b"], &["c"], false),
        failed,
    ];
    let hour = std::time::Duration::from_secs(3600);
    let mut settled = 0;
    for prev in &prevs {
        for outcome in &outcomes {
            for generation in [Some(1), Some(2)] {
                // Within the heartbeat, after it, and with none (write every refresh).
                for (now, heartbeat) in [
                    (t(160), hour),
                    (t(100_000), hour),
                    (t(160), std::time::Duration::ZERO),
                ] {
                    let next = hold_heartbeat(
                        Some(prev),
                        next_status(Some(prev), generation, outcome, &now),
                        &now,
                        heartbeat,
                        "uid-1",
                    );
                    let fast = status_settled(prev, generation, outcome, &now, heartbeat, "uid-1");
                    // Never settled when something would change; for a sync, exactly when
                    // nothing would (a failure always takes the full path).
                    let exact = matches!(outcome, Outcome::Synced { .. });
                    assert!(
                        if exact {
                            fast == (next == *prev)
                        } else {
                            !fast
                        },
                        "prev {prev:?}, outcome {outcome:?}, generation {generation:?}, now {now:?}, heartbeat {heartbeat:?}"
                    );
                    settled += usize::from(fast);
                }
            }
        }
    }
    // Both answers occur: the table is not all one case.
    assert!(settled >= 3, "{settled}");
}

#[test]
fn never_synced_goes_first() {
    let mut b = binding(CreationPolicy::Owner);
    assert!(never_synced(&b));
    let ok = Outcome::Synced {
        keys: vec![],
        hash: "h".into(),
        missing: vec![],
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
    let s = apply_object(
        &desired_secret(&binding(CreationPolicy::Owner), "h", &no_meta()),
        &d,
    );
    assert_eq!(
        secret_data_hash(&hm, &s, &["a".into()]),
        Some(hm.data_hash(&d))
    );
    assert_eq!(secret_data_hash(&hm, &s, &["zz".into()]), None);
}

#[test]
fn heartbeat_holds_back_a_lone_last_sync_time() {
    let synced = |hash: &str| Outcome::Synced {
        keys: vec!["a".into()],
        hash: hash.into(),
        missing: vec![],
        read: true,
    };
    let beat = Duration::from_secs(600);
    let uid = "uid-1";
    // The binding's next heartbeat slot boundary after 100 s (slots of 660 s).
    let phase = (phase_of(uid) * 660_000.0) as i64;
    let boundary = ((100_000 + phase) / 660_000 + 1) * 660_000 - phase;
    let (before, after) = (boundary / 1000 - 1, boundary / 1000 + 1);
    let first = next_status(None, Some(1), &synced("h1"), &t(100));
    // Nothing before: written whole.
    assert_eq!(
        hold_heartbeat(None, first.clone(), &t(100), beat, uid),
        first
    );
    // Same data just before the binding's heartbeat slot ends: the only change would be
    // lastSyncTime, held back.
    let later = next_status(Some(&first), Some(1), &synced("h1"), &t(before));
    assert_eq!(
        hold_heartbeat(Some(&first), later, &t(before), beat, uid),
        first
    );
    // Once the next slot has begun it is written.
    let due = next_status(Some(&first), Some(1), &synced("h1"), &t(after));
    let kept = hold_heartbeat(Some(&first), due, &t(after), beat, uid);
    assert_eq!(kept.last_sync_time, Some(t(after)));
    // Any other change (a rotation) writes at once, with the new lastSyncTime.
    let rotated = next_status(Some(&first), Some(1), &synced("h2"), &t(before));
    let kept = hold_heartbeat(Some(&first), rotated.clone(), &t(before), beat, uid);
    assert_eq!(kept, rotated);
    assert_eq!(kept.last_sync_time, Some(t(before)));
    // A new generation is a change too.
    let regen = next_status(Some(&first), Some(2), &synced("h1"), &t(before));
    assert_eq!(
        hold_heartbeat(Some(&first), regen.clone(), &t(before), beat, uid),
        regen
    );
    // Zero: every refresh writes it (the behaviour before the heartbeat).
    let every = next_status(Some(&first), Some(1), &synced("h1"), &t(101));
    assert_eq!(
        hold_heartbeat(Some(&first), every, &t(101), Duration::ZERO, uid).last_sync_time,
        Some(t(101))
    );
}

#[test]
fn refreshes_follow_the_fetch_of_the_oldest_value() {
    let now = Instant::now();
    let minute = Duration::from_secs(60);
    let fetched = now - Duration::from_secs(20);
    // Counted from the fetch, within [1.0, 1.1) of the interval.
    assert_eq!(
        next_refresh(minute, true, Some(fetched), now, 0.0),
        Some(fetched + minute)
    );
    let late = next_refresh(minute, true, Some(fetched), now, 0.9999).unwrap();
    assert!(late < fetched + Duration::from_secs(66) && late > fetched + Duration::from_secs(65));
    // Never in the past.
    let old = now - Duration::from_secs(90);
    assert_eq!(next_refresh(minute, true, Some(old), now, 0.5), Some(now));
    // An explicit ttl (or nothing read): from now, within [0.9, 1.1).
    assert_eq!(
        next_refresh(minute, false, Some(fetched), now, 0.5),
        Some(now + minute)
    );
    assert_eq!(
        next_refresh(minute, true, None, now, 0.0),
        Some(now + Duration::from_secs(54))
    );
    // refreshInterval 0: never.
    assert_eq!(
        next_refresh(Duration::ZERO, true, Some(fetched), now, 0.5),
        None
    );
}

#[test]
fn each_binding_rewrites_once_per_heartbeat_period_at_its_own_phase() {
    let h = Duration::from_secs(600);
    let period = 660; // heartbeat × 1.1
    for i in 0..200 {
        let uid = format!("uid-{i}");
        // Written at 10,000 s; refreshed every second from then on.
        let mut last = 10_000i64;
        let mut writes = vec![];
        for now in 10_001..10_000 + 3 * period + 1 {
            if heartbeat_due(&t(last), &t(now), h, &uid) {
                writes.push(now);
                last = now;
            }
        }
        assert!((3..=4).contains(&writes.len()), "{uid}: {writes:?}");
        for w in writes.windows(2) {
            assert_eq!(w[1] - w[0], period, "{uid}: {writes:?}");
        }
    }
    assert!(heartbeat_due(&t(5), &t(5), Duration::ZERO, "any"));
    // A clock going backwards is not due.
    assert!(!heartbeat_due(&t(1000), &t(10), h, "uid-1"));
}

/// Status writes per minute of 10,000 bindings synced together, refreshing every 60 s
/// (times 1.0-1.1), data unchanged: on average at most bindings ÷ heartbeat minutes, and
/// the busiest minute within 15 % of that, from the first round on.
#[test]
fn heartbeat_writes_per_minute_stay_within_bindings_over_heartbeat() {
    for (heartbeat_min, horizon_min) in [(10u64, 60u64), (60, 240)] {
        let n = 10_000u64;
        let h = Duration::from_secs(heartbeat_min * 60);
        let mut per_minute = vec![0u64; horizon_min as usize];
        for b in 0..n {
            let uid = format!("uid-{b}");
            let start = 1_000_000i64;
            let mut last = start;
            let mut at = start as f64;
            let mut x = b
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            loop {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let r = secretsync_backends::retry::unit_of(x);
                at += 60.0 * (1.0 + 0.1 * r);
                let now = at as i64;
                if now - start >= (horizon_min * 60) as i64 {
                    break;
                }
                if heartbeat_due(&t(last), &t(now), h, &uid) {
                    last = now;
                    per_minute[((now - start) / 60) as usize] += 1;
                }
            }
        }
        let limit = n / heartbeat_min;
        let mean = per_minute.iter().sum::<u64>() as f64 / horizon_min as f64;
        let busiest = per_minute.iter().max().copied().unwrap_or(0);
        assert!(
            mean <= limit as f64,
            "heartbeat {heartbeat_min}m: {mean} writes a minute on average, limit {limit}"
        );
        assert!(
            (busiest as f64) <= 1.15 * limit as f64,
            "heartbeat {heartbeat_min}m: {busiest} writes in the busiest minute, limit {limit}"
        );
    }
}
