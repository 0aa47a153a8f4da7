//! The source reconciler called directly against the fake API server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod rig;

use std::time::Duration;

use rig::{NS, Rig};
use secretsync_controller::outcome::{ReconcileResult, Requeue};
use secretsync_controller::runtime::ObjKey;
use secretsync_controller::source::{RECHECK, reconcile};

fn ready(rig: &Rig, key: &ObjKey) -> (String, String) {
    let v = rig
        .server
        .object("secretsync.dev", "secretsources", Some(NS), &key.name)
        .unwrap();
    let c = &v["status"]["conditions"][0];
    (
        c["status"].as_str().unwrap_or_default().into(),
        c["reason"].as_str().unwrap_or_default().into(),
    )
}

/// What reporting a source's state costs: one status write.
const STATUS: &[(&str, u64)] = &[("patch secretsources/status", 1)];

#[tokio::test]
async fn a_valid_source_reports_ready_once_and_rechecks_every_minute() {
    let rig = Rig::new(Duration::from_secs(1)).await;
    let key = rig.file_source("files", "app.env", "A=1\n");
    let r = rig
        .reconciles(reconcile(&rig.ctx, &key), ReconcileResult::Success, STATUS)
        .await;
    assert_eq!(r.requeue, Requeue::After(RECHECK));
    assert_eq!(ready(&rig, &key), ("True".into(), "Valid".into()));
    // The next check finds nothing changed: no write.
    rig.reload_source(&key);
    rig.reconciles(reconcile(&rig.ctx, &key), ReconcileResult::Success, &[])
        .await;
}

#[tokio::test]
async fn a_source_outside_the_rules_reports_why_and_backs_off() {
    let rig = Rig::new(Duration::from_secs(1)).await;
    // The operator allows no environment variables (no --env-allow).
    let key = rig.source(&format!(
        "apiVersion: secretsync.dev/v1alpha1\nkind: SecretSource\nmetadata: {{name: env, namespace: {NS}}}\nspec: {{env: {{}}}}\n"
    ));
    let r = rig
        .reconciles(reconcile(&rig.ctx, &key), ReconcileResult::Error, STATUS)
        .await;
    assert!(
        matches!(r.requeue, Requeue::After(d) if d < RECHECK),
        "{r:?}"
    );
    assert_eq!(ready(&rig, &key), ("False".into(), "AccessDenied".into()));
}

#[tokio::test]
async fn a_deleted_source_wakes_its_bindings() {
    let rig = Rig::new(Duration::from_secs(1)).await;
    let key = rig.file_source("files", "app.env", "A=1\n");
    reconcile(&rig.ctx, &key).await;
    let binding = rig.binding(&Rig::binding_yaml(
        "b",
        "files",
        "[{secretKey: a, remoteRef: {key: A}}]",
    ));
    rig.ctx.sources.remove(&key);
    let r = rig
        .reconciles(reconcile(&rig.ctx, &key), ReconcileResult::Deleted, &[])
        .await;
    assert_eq!(r.requeue, Requeue::Never);
    let next = tokio::time::timeout(Duration::from_secs(1), rig.ctx.binding_queue.next())
        .await
        .unwrap();
    assert_eq!(
        next,
        Some(binding),
        "its binding is reconciled to report SourceNotFound"
    );
}
