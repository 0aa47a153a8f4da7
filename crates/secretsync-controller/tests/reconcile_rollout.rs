//! The rollout reconciler called directly against the fake API server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod rig;

use std::collections::BTreeMap;
use std::time::Duration;

use rig::{NS, Rig};
use secretsync_controller::managed::ManagedSecret;
use secretsync_controller::outcome::{ReconcileResult, Requeue};
use secretsync_controller::rollout::plan::WorkloadKind;
use secretsync_controller::rollout::{WorkloadKey, reconcile};
use secretsync_controller::runtime::ObjKey;
use serde_json::Value;

const REVISION: &str = "secretsync.dev/secret-revision";
const RESTARTED_AT: &str = "secretsync.dev/restartedAt";

/// A rig whose managed Secret `db` (binding `db`) holds hash `h1`, and a Deployment
/// `api` reading it, opted in (or not) and paused (or not), tracked as its watch would.
fn setup(rig: &Rig, opt_in: bool, paused: bool) -> WorkloadKey {
    set_hash(rig, "h1");
    let annotations = if opt_in {
        "{secretsync.dev/restart-on-rotation: \"true\"}"
    } else {
        "{}"
    };
    let stored = rig.put(&format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: api, namespace: {NS}, annotations: {annotations}}}
spec:
  paused: {paused}
  selector: {{matchLabels: {{app: api}}}}
  template:
    metadata: {{labels: {{app: api}}}}
    spec:
      containers:
        - name: app
          image: app:1
          env: [{{name: P, valueFrom: {{secretKeyRef: {{name: db, key: password}}}}}}]
"#
    ));
    rig.put(&Rig::binding_yaml(
        "db",
        "files",
        "[{secretKey: password, remoteRef: {key: P}}]",
    ));
    let key = WorkloadKey {
        kind: WorkloadKind::Deployment,
        namespace: NS.into(),
        name: "api".into(),
    };
    track(rig, &key, &stored[0]);
    key
}

/// What the workload watch would tell the rollout state.
fn track(rig: &Rig, key: &WorkloadKey, obj: &Value) {
    let annotations: BTreeMap<String, String> =
        serde_json::from_value(obj["metadata"]["annotations"].clone()).unwrap_or_default();
    rig.ctx.rollout.workload_applied(
        key.clone(),
        &annotations,
        obj["metadata"]["generation"].as_i64(),
    );
}

fn set_hash(rig: &Rig, hash: &str) {
    rig.ctx.managed.upsert(
        &ObjKey::new(NS, "db"),
        ManagedSecret {
            binding: Some("db".into()),
            hash: Some(hash.into()),
            resource_version: Some("1".into()),
        },
    );
}

/// What looking at an unchanged workload costs: one read.
const LOOKED: &[(&str, u64)] = &[("get deployments", 1)];

/// The first look at the workload recorded and seen by its watch, then the Secret rotated.
async fn rotated(rig: &Rig, key: &WorkloadKey) {
    reconcile(&rig.ctx, key).await;
    track(rig, key, &deployment(rig));
    set_hash(rig, "h2");
}

/// The watch shows workload `d` as it now is; looking at it again reads it and writes
/// nothing.
async fn unchanged_when_seen_again(rig: &Rig, key: &WorkloadKey, d: &Value) {
    track(rig, key, d);
    rig.reconciles(reconcile(&rig.ctx, key), ReconcileResult::Unchanged, LOOKED)
        .await;
}

fn deployment(rig: &Rig) -> Value {
    rig.server
        .object("apps", "deployments", Some(NS), "api")
        .unwrap()
}

#[tokio::test]
async fn first_sight_records_the_revision_without_a_restart() {
    let rig = Rig::new(Duration::ZERO).await;
    let key = setup(&rig, true, false);
    let recorded = &[("get deployments", 1), ("patch deployments", 1)];
    rig.reconciles(
        reconcile(&rig.ctx, &key),
        ReconcileResult::Recorded,
        recorded,
    )
    .await;
    let d = deployment(&rig);
    assert!(d["metadata"]["annotations"][REVISION].is_string());
    assert!(d["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT].is_null());
    assert_eq!(d["metadata"]["generation"], 1, "the spec is untouched");
    // Seen again unchanged: a GET, no write.
    unchanged_when_seen_again(&rig, &key, &d).await;
}

#[tokio::test]
async fn a_rotation_waits_for_the_debounce() {
    let rig = Rig::new(Duration::from_secs(10)).await;
    let key = setup(&rig, true, false);
    rotated(&rig, &key).await;
    let r = rig
        .reconciles(reconcile(&rig.ctx, &key), ReconcileResult::Pending, LOOKED)
        .await;
    assert!(
        matches!(r.requeue, Requeue::After(d) if d > Duration::from_secs(9) && d <= Duration::from_secs(10)),
        "{r:?}"
    );
}

#[tokio::test]
async fn a_rotation_restarts_once_and_lists_the_restart_in_the_binding() {
    let rig = Rig::new(Duration::ZERO).await;
    let key = setup(&rig, true, false);
    rotated(&rig, &key).await;
    let restarted = &[
        ("get deployments", 1),
        ("patch deployments", 1),
        ("create events", 1),
        ("get secretbindings", 1),
        ("patch secretbindings/status", 1),
    ];
    rig.reconciles(
        reconcile(&rig.ctx, &key),
        ReconcileResult::Restarted,
        restarted,
    )
    .await;
    let d = deployment(&rig);
    assert!(d["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT].is_string());
    assert_eq!(d["metadata"]["generation"], 2);
    let b = rig
        .server
        .object("secretsync.dev", "secretbindings", Some(NS), "db")
        .unwrap();
    assert_eq!(b["status"]["restarted"][0]["name"], "api");
    // The new revision is recorded: looking again restarts nothing.
    unchanged_when_seen_again(&rig, &key, &d).await;
}

#[tokio::test]
async fn a_paused_deployment_gets_a_warning_and_no_patch() {
    let rig = Rig::new(Duration::ZERO).await;
    let key = setup(&rig, true, true);
    rotated(&rig, &key).await;
    let warned = &[("get deployments", 1), ("create events", 1)];
    rig.reconciles(reconcile(&rig.ctx, &key), ReconcileResult::Paused, warned)
        .await;
    // Once per revision: no second event.
    rig.reconciles(reconcile(&rig.ctx, &key), ReconcileResult::Paused, LOOKED)
        .await;
}

#[tokio::test]
async fn a_workload_that_did_not_opt_in_is_never_looked_at() {
    let rig = Rig::new(Duration::ZERO).await;
    let key = setup(&rig, false, false);
    rig.reconciles(reconcile(&rig.ctx, &key), ReconcileResult::Untracked, &[])
        .await;
}
