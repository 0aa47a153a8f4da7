//! Unit tests of the pure decisions.
use super::*;
use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, EnvVar, EnvVarSource, ProjectedVolumeSource, SecretEnvSource,
    SecretKeySelector, SecretProjection, SecretVolumeSource, Volume, VolumeProjection,
};

fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn opt_in_modes() {
    assert_eq!(opt_in(None), None);
    assert_eq!(opt_in(Some(&ann(&[]))), None);
    assert_eq!(
        opt_in(Some(&ann(&[(ANNOTATION_RESTART_ON_ROTATION, "true")]))),
        Some(OptIn::Auto)
    );
    assert_eq!(
        opt_in(Some(&ann(&[(ANNOTATION_RESTART_ON_ROTATION, "false")]))),
        None
    );
    assert_eq!(
        opt_in(Some(&ann(&[(ANNOTATION_RESTART_ON_ROTATION, " a, b ,,")]))),
        Some(OptIn::Explicit(["a".to_string(), "b".to_string()].into()))
    );
}

fn pod() -> PodSpec {
    PodSpec {
        init_containers: Some(vec![Container {
            name: "init".into(),
            env_from: Some(vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: "init-secret".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }]),
        containers: vec![Container {
            name: "app".into(),
            env: Some(vec![EnvVar {
                name: "PW".into(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: "env-secret".into(),
                        key: "pw".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }],
        volumes: Some(vec![
            Volume {
                name: "v".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some("vol-secret".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Volume {
                name: "p".into(),
                projected: Some(ProjectedVolumeSource {
                    sources: Some(vec![VolumeProjection {
                        secret: Some(SecretProjection {
                            name: "proj-secret".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ]),
        ..Default::default()
    }
}

#[test]
fn finds_every_reference_kind() {
    let refs: Vec<String> = referenced_secrets(&pod()).into_iter().collect();
    assert_eq!(
        refs,
        vec!["env-secret", "init-secret", "proj-secret", "vol-secret"]
    );
}

#[test]
fn dependencies_filter_managed_and_selected() {
    let restartable: BTreeMap<String, String> = [
        ("env-secret".to_string(), "h1".to_string()),
        ("vol-secret".to_string(), "h2".to_string()),
        ("unrelated".to_string(), "h3".to_string()),
    ]
    .into();
    let auto = dependencies(&OptIn::Auto, Some(&pod()), &restartable);
    assert_eq!(
        auto.keys().copied().collect::<Vec<_>>(),
        vec!["env-secret", "vol-secret"]
    );
    let explicit = dependencies(
        &OptIn::Explicit(["unrelated".to_string(), "missing".to_string()].into()),
        Some(&pod()),
        &restartable,
    );
    assert_eq!(
        explicit.keys().copied().collect::<Vec<_>>(),
        vec!["unrelated"]
    );
}

fn st<'a>(
    annotations: Option<&'a BTreeMap<String, String>>,
    paused: bool,
    pending: Option<&'a Pending>,
    seen: Option<&'a BTreeMap<String, String>>,
) -> WorkloadState<'a> {
    WorkloadState {
        annotations,
        paused,
        pending,
        seen,
    }
}

#[test]
fn decisions() {
    let key = HmacKey::new(vec![3; 32]);
    let now = Instant::now();
    let debounce = Duration::from_secs(10);
    let deps: BTreeMap<&str, &str> = [("a", "h1")].into();
    let rev = key.revision([("a", "h1")]);

    // First sight: record, no restart.
    let plan = decide(&key, &st(None, false, None, None), &deps, now, debounce);
    assert_eq!(
        plan.decision,
        Decision::Record {
            revision: rev.clone()
        }
    );
    assert_eq!(plan.pending, None);
    // No dependencies: never a write.
    let plan = decide(
        &key,
        &st(None, false, None, None),
        &BTreeMap::new(),
        now,
        debounce,
    );
    assert_eq!(plan.decision, Decision::Nothing);

    // Same revision: nothing, whatever else is going on.
    let same = ann(&[(ANNOTATION_SECRET_REVISION, &rev)]);
    let plan = decide(
        &key,
        &st(Some(&same), true, None, None),
        &deps,
        now,
        debounce,
    );
    assert_eq!(plan.decision, Decision::Nothing);

    // A rotation: wait out the debounce first.
    let old = ann(&[(ANNOTATION_SECRET_REVISION, "old")]);
    let plan = decide(
        &key,
        &st(Some(&old), false, None, None),
        &deps,
        now,
        debounce,
    );
    assert_eq!(plan.decision, Decision::WaitUntil(now + debounce));
    let pending = plan.pending.clone().unwrap();
    assert_eq!(pending.since, now);
    // Re-evaluated before the due time: still waiting, same deadline.
    let plan = decide(
        &key,
        &st(Some(&old), false, Some(&pending), None),
        &deps,
        now + Duration::from_secs(3),
        debounce,
    );
    assert_eq!(plan.decision, Decision::WaitUntil(now + debounce));
    // Due: restart with the new revision.
    let plan = decide(
        &key,
        &st(Some(&old), false, Some(&pending), None),
        &deps,
        now + debounce,
        debounce,
    );
    assert_eq!(
        plan.decision,
        Decision::Restart {
            revision: rev.clone()
        }
    );
    // Paused: skip, keep the pending rotation for the unpause.
    let plan = decide(
        &key,
        &st(Some(&old), true, Some(&pending), None),
        &deps,
        now + debounce,
        debounce,
    );
    assert_eq!(
        plan.decision,
        Decision::SkipPaused {
            revision: rev.clone()
        }
    );
    assert_eq!(plan.pending, Some(pending.clone()));
    // Zero debounce restarts at once.
    let plan = decide(
        &key,
        &st(Some(&old), false, None, None),
        &deps,
        now,
        Duration::ZERO,
    );
    assert!(matches!(plan.decision, Decision::Restart { .. }));
}

#[test]
fn a_second_rotation_within_the_window_extends_it_up_to_a_cap() {
    let key = HmacKey::new(vec![3; 32]);
    let t0 = Instant::now();
    let d = Duration::from_secs(10);
    let old = ann(&[(ANNOTATION_SECRET_REVISION, "old")]);
    let deps1: BTreeMap<&str, &str> = [("a", "h2"), ("b", "h1")].into();
    let deps2: BTreeMap<&str, &str> = [("a", "h2"), ("b", "h2")].into();
    let p1 = decide(&key, &st(Some(&old), false, None, None), &deps1, t0, d)
        .pending
        .unwrap();
    let t1 = t0 + Duration::from_secs(2);
    let plan = decide(&key, &st(Some(&old), false, Some(&p1), None), &deps2, t1, d);
    assert_eq!(plan.decision, Decision::WaitUntil(t1 + d));
    let p2 = plan.pending.unwrap();
    assert_eq!(p2.since, t0);
    // One restart, with the revision of both rotations.
    let plan = decide(
        &key,
        &st(Some(&old), false, Some(&p2), None),
        &deps2,
        t1 + d,
        d,
    );
    assert_eq!(
        plan.decision,
        Decision::Restart {
            revision: key.revision([("a", "h2"), ("b", "h2")])
        }
    );
    // Rotations every few seconds cannot postpone it forever.
    let late = Pending {
        since: t0,
        last_change: t0 + d * 3,
        revision: p2.revision.clone(),
    };
    let plan = decide(
        &key,
        &st(Some(&old), false, Some(&late), None),
        &deps2,
        t0 + d * MAX_DEBOUNCE_FACTOR,
        d,
    );
    assert!(matches!(plan.decision, Decision::Restart { .. }));
}

#[test]
fn dependency_set_changes_alone_never_restart() {
    let key = HmacKey::new(vec![3; 32]);
    let now = Instant::now();
    let d = Duration::from_secs(10);
    let seen: BTreeMap<String, String> = [("a".to_string(), "h1".to_string())].into();
    let recorded = ann(&[(ANNOTATION_SECRET_REVISION, &key.revision([("a", "h1")]))]);
    // A new binding's first sync adds Secret b.
    let grown: BTreeMap<&str, &str> = [("a", "h1"), ("b", "h9")].into();
    let plan = decide(
        &key,
        &st(Some(&recorded), false, None, Some(&seen)),
        &grown,
        now,
        d,
    );
    assert!(matches!(plan.decision, Decision::Record { .. }));
    // But a changed hash is a rotation even when the set changed too.
    let rotated_deps: BTreeMap<&str, &str> = [("a", "h2"), ("b", "h9")].into();
    let plan = decide(
        &key,
        &st(Some(&recorded), false, None, Some(&seen)),
        &rotated_deps,
        now,
        d,
    );
    assert!(matches!(plan.decision, Decision::WaitUntil(_)));
    assert_eq!(rotated(Some(&seen), &rotated_deps), vec!["a", "b"]);
    let one: BTreeMap<&str, &str> = [("a", "h2")].into();
    assert_eq!(rotated(Some(&seen), &one), vec!["a"]);
    assert_eq!(rotated(None, &grown), vec!["a", "b"]);
}

#[test]
fn wake_up_filter() {
    let explicit = OptIn::Explicit(["a".to_string()].into());
    assert!(may_depend_on(&explicit, None, "a"));
    assert!(!may_depend_on(&explicit, None, "b"));
    let refs: BTreeSet<String> = ["b".to_string()].into();
    assert!(may_depend_on(&OptIn::Auto, None, "a"));
    assert!(may_depend_on(&OptIn::Auto, Some(&refs), "b"));
    assert!(!may_depend_on(&OptIn::Auto, Some(&refs), "a"));
}

#[test]
fn patches_are_conditional() {
    let r = record_patch("42", "rev");
    assert_eq!(r["metadata"]["resourceVersion"], "42");
    assert_eq!(
        r["metadata"]["annotations"][ANNOTATION_SECRET_REVISION],
        "rev"
    );
    assert!(r.get("spec").is_none(), "recording never restarts");
    let p = restart_patch(
        WorkloadKind::Deployment,
        "42",
        "rev",
        "2026-01-01T00:00:00Z",
    );
    assert_eq!(p["metadata"]["resourceVersion"], "42");
    assert_eq!(
        p["metadata"]["annotations"][ANNOTATION_SECRET_REVISION],
        "rev"
    );
    assert_eq!(
        p["spec"]["template"]["metadata"]["annotations"][ANNOTATION_RESTARTED_AT],
        "2026-01-01T00:00:00Z"
    );
}

#[test]
fn a_cron_job_restarts_through_its_job_template() {
    let p = restart_patch(WorkloadKind::CronJob, "7", "rev", "2026-01-01T00:00:00Z");
    assert_eq!(
        p["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["annotations"]
            [ANNOTATION_RESTARTED_AT],
        "2026-01-01T00:00:00Z"
    );
    assert!(p["spec"].get("template").is_none());
    assert_eq!(
        WorkloadKind::CronJob.pod_spec_pointer(),
        "/spec/jobTemplate/spec/template/spec"
    );
}

#[test]
fn an_argo_rollout_restarts_through_restart_at() {
    let p = restart_patch(WorkloadKind::Rollout, "7", "rev", "2026-01-01T00:00:00Z");
    assert_eq!(p["spec"]["restartAt"], "2026-01-01T00:00:00Z");
    assert!(
        p["spec"].get("template").is_none(),
        "the pod template is left alone"
    );
    assert_eq!(
        p["metadata"]["annotations"][ANNOTATION_SECRET_REVISION],
        "rev"
    );
}

#[test]
fn config_maps_are_triggers_by_prefix() {
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, ConfigMapProjection, ConfigMapVolumeSource,
    };
    let mut spec = pod();
    spec.containers.push(Container {
        name: "cm".into(),
        env: Some(vec![EnvVar {
            name: "A".into(),
            value_from: Some(EnvVarSource {
                config_map_key_ref: Some(ConfigMapKeySelector {
                    name: "env-cm".into(),
                    key: "a".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: "from-cm".into(),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ..Default::default()
    });
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    volumes.push(Volume {
        name: "c".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: "vol-cm".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    volumes.push(Volume {
        name: "pc".into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                config_map: Some(ConfigMapProjection {
                    name: "proj-cm".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    });
    let refs: Vec<String> = referenced_objects(&spec).into_iter().collect();
    assert_eq!(
        refs,
        vec![
            "configmap/env-cm",
            "configmap/from-cm",
            "configmap/proj-cm",
            "configmap/vol-cm",
            "env-secret",
            "init-secret",
            "proj-secret",
            "vol-secret"
        ]
    );
    // A ConfigMap and a Secret of one name are different triggers.
    let restartable: BTreeMap<String, String> = [
        ("configmap/vol-cm".to_string(), "h1".to_string()),
        ("vol-cm".to_string(), "h2".to_string()),
    ]
    .into();
    let deps = dependencies(&OptIn::Auto, Some(&spec), &restartable);
    assert_eq!(
        deps.keys().copied().collect::<Vec<_>>(),
        ["configmap/vol-cm"]
    );
    let explicit = opt_in(Some(
        &[(
            ANNOTATION_RESTART_ON_ROTATION.to_string(),
            "configmap/vol-cm, vol-cm".to_string(),
        )]
        .into(),
    ))
    .unwrap();
    assert_eq!(dependencies(&explicit, None, &restartable).len(), 2);
}

#[test]
fn restarted_lists_cover_the_last_rotation() {
    let t = |s: i64| Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap());
    let existing = vec![
        RestartRecord {
            kind: "Deployment".into(),
            name: "old".into(),
            at: t(10),
        },
        RestartRecord {
            kind: "StatefulSet".into(),
            name: "db".into(),
            at: t(105),
        },
        RestartRecord {
            kind: "Deployment".into(),
            name: "api".into(),
            at: t(101),
        },
    ];
    let out = restarted_list(&existing, Some(&t(100)), "Deployment", "api", &t(110));
    let names: Vec<(&str, &str)> = out
        .iter()
        .map(|r| (r.kind.as_str(), r.name.as_str()))
        .collect();
    assert_eq!(names, vec![("StatefulSet", "db"), ("Deployment", "api")]);
    assert_eq!(out[1].at, t(110));
    assert_eq!(restarted_list(&[], None, "DaemonSet", "x", &t(1)).len(), 1);
    assert_eq!(WorkloadKind::DaemonSet.to_string(), "DaemonSet");
}
