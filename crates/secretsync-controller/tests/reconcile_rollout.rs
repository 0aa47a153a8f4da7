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
    rig.put(&format!(
        "apiVersion: secretsync.dev/v1alpha1\nkind: SecretBinding\nmetadata: {{name: db, namespace: {NS}}}\nspec:\n  sourceRef: {{name: files}}\n  data: [{{secretKey: password, remoteRef: {{key: P}}}}]\n"
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

fn deployment(rig: &Rig) -> Value {
    rig.server
        .object("apps", "deployments", Some(NS), "api")
        .unwrap()
}

#[tokio::test]
async fn first_sight_records_the_revision_without_a_restart() {
    let rig = Rig::new(Duration::ZERO).await;
    let key = setup(&rig, true, false);
    rig.server.reset_counts();
    let r = reconcile(&rig.ctx, &key).await;
    assert_eq!(r.result, ReconcileResult::Recorded);
    assert_eq!(
        rig.requests(),
        Rig::expect(&[("get deployments", 1), ("patch deployments", 1)])
    );
    let d = deployment(&rig);
    assert!(d["metadata"]["annotations"][REVISION].is_string());
    assert!(d["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT].is_null());
    assert_eq!(d["metadata"]["generation"], 1, "the spec is untouched");
    // Seen again unchanged: a GET, no write.
    track(&rig, &key, &d);
    rig.server.reset_counts();
    let r = reconcile(&rig.ctx, &key).await;
    assert_eq!(r.result, ReconcileResult::Unchanged);
    assert_eq!(rig.requests(), Rig::expect(&[("get deployments", 1)]));
}

#[tokio::test]
async fn a_rotation_waits_for_the_debounce() {
    let rig = Rig::new(Duration::from_secs(10)).await;
    let key = setup(&rig, true, false);
    reconcile(&rig.ctx, &key).await;
    track(&rig, &key, &deployment(&rig));
    set_hash(&rig, "h2");
    rig.server.reset_counts();
    let r = reconcile(&rig.ctx, &key).await;
    assert_eq!(r.result, ReconcileResult::Pending);
    assert!(
        matches!(r.requeue, Requeue::After(d) if d > Duration::from_secs(9) && d <= Duration::from_secs(10)),
        "{r:?}"
    );
    assert_eq!(rig.requests(), Rig::expect(&[("get deployments", 1)]));
}

#[tokio::test]
async fn a_rotation_restarts_once_and_lists_the_restart_in_the_binding() {
    let rig = Rig::new(Duration::ZERO).await;
    let key = setup(&rig, true, false);
    reconcile(&rig.ctx, &key).await;
    track(&rig, &key, &deployment(&rig));
    set_hash(&rig, "h2");
    rig.server.reset_counts();
    let r = reconcile(&rig.ctx, &key).await;
    assert_eq!(r.result, ReconcileResult::Restarted);
    assert_eq!(
        rig.requests(),
        Rig::expect(&[
            ("get deployments", 1),
            ("patch deployments", 1),
            ("create events", 1),
            ("get secretbindings", 1),
            ("patch secretbindings/status", 1),
        ])
    );
    let d = deployment(&rig);
    assert!(d["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT].is_string());
    assert_eq!(d["metadata"]["generation"], 2);
    let b = rig
        .server
        .object("secretsync.dev", "secretbindings", Some(NS), "db")
        .unwrap();
    assert_eq!(b["status"]["restarted"][0]["name"], "api");
    // The new revision is recorded: looking again restarts nothing.
    track(&rig, &key, &d);
    rig.server.reset_counts();
    assert_eq!(
        reconcile(&rig.ctx, &key).await.result,
        ReconcileResult::Unchanged
    );
    assert_eq!(rig.requests(), Rig::expect(&[("get deployments", 1)]));
}

#[tokio::test]
async fn a_paused_deployment_gets_a_warning_and_no_patch() {
    let rig = Rig::new(Duration::ZERO).await;
    let key = setup(&rig, true, true);
    reconcile(&rig.ctx, &key).await;
    track(&rig, &key, &deployment(&rig));
    set_hash(&rig, "h2");
    rig.server.reset_counts();
    let r = reconcile(&rig.ctx, &key).await;
    assert_eq!(r.result, ReconcileResult::Paused);
    assert_eq!(
        rig.requests(),
        Rig::expect(&[("get deployments", 1), ("create events", 1)])
    );
    // Once per revision: no second event.
    rig.server.reset_counts();
    assert_eq!(
        reconcile(&rig.ctx, &key).await.result,
        ReconcileResult::Paused
    );
    assert_eq!(rig.requests(), Rig::expect(&[("get deployments", 1)]));
}

#[tokio::test]
async fn a_workload_that_did_not_opt_in_is_never_looked_at() {
    let rig = Rig::new(Duration::ZERO).await;
    let key = setup(&rig, false, false);
    rig.server.reset_counts();
    let r = reconcile(&rig.ctx, &key).await;
    assert_eq!(r.result, ReconcileResult::Untracked);
    assert_eq!(rig.requests(), Rig::expect(&[]));
}
