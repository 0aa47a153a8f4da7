//! The cluster kinds' reconcilers called directly against the fake API server: a binding
//! reading a ClusterSecretSource (admission by namespace labels) and the
//! ClusterSecretBinding reconciler (generated SecretBindings per selected namespace).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod rig;

use std::collections::BTreeMap;
use std::time::Duration;

use rig::{NS, Rig};
use secretsync_api::{ClusterSecretBinding, ClusterSecretSource, SecretBinding};
use secretsync_controller::outcome::ReconcileResult;
use secretsync_controller::runtime::ObjKey;
use serde_json::Value;

/// Puts Namespace `name` with `labels` into the fake and the context's namespace store.
fn namespace(rig: &Rig, name: &str, labels: &[(&str, &str)]) {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let doc = serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": labels},
    });
    rig.put(&doc.to_string());
    rig.ctx.namespaces.upsert(ObjKey::new("", name), labels);
}

/// A file-backed ClusterSecretSource `files` admitting namespaces labelled `team=shop`.
fn cluster_source(rig: &Rig) -> ObjKey {
    let path = rig.file("shared.env", "TOKEN=t-1\n");
    let stored = rig
        .put(&format!(
            "apiVersion: secretsync.dev/v1alpha1\nkind: ClusterSecretSource\nmetadata: {{name: files}}\nspec:\n  namespaceSelector: {{matchLabels: {{team: shop}}}}\n  file: {{path: \"{path}\", format: Dotenv}}\n"
        ))
        .remove(0);
    let src: ClusterSecretSource = serde_json::from_value(stored).unwrap();
    let key = ObjKey::new("", "files");
    rig.ctx.cluster_sources.upsert(key.clone(), src);
    key
}

fn cluster_binding_yaml(name: &str) -> String {
    format!(
        "apiVersion: secretsync.dev/v1alpha1\nkind: SecretBinding\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n  sourceRef: {{kind: ClusterSecretSource, name: files}}\n  data: [{{secretKey: token, remoteRef: {{key: TOKEN}}}}]\n"
    )
}

#[tokio::test]
async fn a_binding_reads_an_admitting_cluster_source_and_is_refused_once_its_namespace_stops_matching()
 {
    let rig = Rig::new(Duration::from_secs(1)).await;
    namespace(&rig, NS, &[("team", "shop")]);
    cluster_source(&rig);
    let key = rig.binding(&cluster_binding_yaml("app"));
    rig.reconciles(
        secretsync_controller::binding::reconcile(&rig.ctx, &key),
        ReconcileResult::Written,
        &[
            ("get secrets", 1),
            ("patch secrets", 1),
            ("patch secretbindings/status", 1),
            ("create events", 1),
        ],
    )
    .await;
    assert_eq!(rig.secret_data("app")["token"], "t-1");

    // The namespace loses its label; the value changes in the backend meanwhile.
    namespace(&rig, NS, &[("team", "marketing")]);
    rig.file("shared.env", "TOKEN=t-2\n");
    rig.reload_binding(&key);
    rig.reconciles(
        secretsync_controller::binding::reconcile(&rig.ctx, &key),
        ReconcileResult::Error,
        // Nothing is read (no Secret GET either): the status says why, and an event.
        &[("patch secretbindings/status", 1), ("create events", 1)],
    )
    .await;
    let (status, reason, message) = rig.ready(&key);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "SourceNotAllowed")
    );
    assert!(
        message.contains("\"files\"") && message.contains(NS),
        "{message}"
    );
    // The Secret keeps the last good data.
    assert_eq!(rig.secret_data("app")["token"], "t-1");
}

#[tokio::test]
async fn a_binding_on_a_missing_cluster_source_reports_source_not_found() {
    let rig = Rig::new(Duration::from_secs(1)).await;
    namespace(&rig, NS, &[("team", "shop")]);
    let key = rig.binding(&cluster_binding_yaml("app"));
    rig.reconciles(
        secretsync_controller::binding::reconcile(&rig.ctx, &key),
        ReconcileResult::Error,
        &[("patch secretbindings/status", 1), ("create events", 1)],
    )
    .await;
    let (_, reason, message) = rig.ready(&key);
    assert_eq!(reason, "SourceNotFound");
    assert!(message.contains("ClusterSecretSource"), "{message}");
}

/// Stores a ClusterSecretBinding `pull` selecting namespaces labelled `registry=internal`.
fn put_cluster_binding(rig: &Rig) -> ObjKey {
    let stored = rig
        .put(
            "apiVersion: secretsync.dev/v1alpha1\nkind: ClusterSecretBinding\nmetadata: {name: pull}\nspec:\n  namespaceSelector: {matchLabels: {registry: internal}}\n  bindingSpec:\n    sourceRef: {kind: ClusterSecretSource, name: files}\n    data: [{secretKey: token, remoteRef: {key: TOKEN}}]\n",
        )
        .remove(0);
    let csb: ClusterSecretBinding = serde_json::from_value(stored).unwrap();
    let key = ObjKey::new("", "pull");
    rig.ctx.cluster_bindings.upsert(key.clone(), csb);
    key
}

/// The generated SecretBinding `pull` in `ns`, as the fake holds it; also fed into the
/// context's binding store (as the watch would).
fn generated(rig: &Rig, ns: &str) -> Option<Value> {
    let v = rig
        .server
        .object("secretsync.dev", "secretbindings", Some(ns), "pull")?;
    let b: SecretBinding = serde_json::from_value(v.clone()).unwrap();
    rig.ctx.bindings.upsert(ObjKey::new(ns, "pull"), b);
    Some(v)
}

fn status(rig: &Rig) -> Value {
    rig.server
        .object("secretsync.dev", "clustersecretbindings", None, "pull")
        .unwrap()["status"]
        .clone()
}

fn reload(rig: &Rig, key: &ObjKey) {
    let v = rig
        .server
        .object("secretsync.dev", "clustersecretbindings", None, "pull")
        .unwrap();
    let csb: ClusterSecretBinding = serde_json::from_value(v).unwrap();
    rig.ctx.cluster_bindings.upsert(key.clone(), csb);
}

#[tokio::test]
async fn a_cluster_binding_follows_its_namespaces_and_reverts_edits() {
    let rig = Rig::new(Duration::from_secs(1)).await;
    namespace(&rig, "a", &[("registry", "internal")]);
    namespace(&rig, "b", &[]);
    let key = put_cluster_binding(&rig);
    use secretsync_controller::cluster_binding::reconcile;
    rig.reconciles(
        reconcile(&rig.ctx, &key),
        ReconcileResult::Written,
        &[
            ("create secretbindings", 1),
            ("patch clustersecretbindings/status", 1),
        ],
    )
    .await;
    let a = generated(&rig, "a").expect("generated in a");
    assert_eq!(
        a["metadata"]["labels"]["secretsync.dev/cluster-binding"],
        "pull"
    );
    assert_eq!(
        a["metadata"]["ownerReferences"][0]["kind"],
        "ClusterSecretBinding"
    );
    assert_eq!(a["spec"]["sourceRef"]["kind"], "ClusterSecretSource");
    assert!(generated(&rig, "b").is_none());
    let st = status(&rig);
    assert_eq!(st["namespaces"], serde_json::json!(["a"]));
    assert_eq!(st["conditions"][0]["reason"], "Provisioned");

    // Nothing changed: no write at all.
    reload(&rig, &key);
    rig.reconciles(reconcile(&rig.ctx, &key), ReconcileResult::Unchanged, &[])
        .await;

    // Someone edits the generated binding's spec: it is put back (one replace).
    let mut edited: SecretBinding = serde_json::from_value(generated(&rig, "a").unwrap()).unwrap();
    edited.spec.refresh_interval = "5s".into();
    let doc = serde_json::to_value(&edited).unwrap();
    rig.put(&doc.to_string());
    generated(&rig, "a");
    rig.reconciles(
        reconcile(&rig.ctx, &key),
        ReconcileResult::Written,
        &[("update secretbindings", 1)],
    )
    .await;
    assert_eq!(
        generated(&rig, "a").unwrap()["spec"]["refreshInterval"],
        "1h"
    );

    // The label moves from a to b: created in b, deleted from a.
    namespace(&rig, "a", &[]);
    namespace(&rig, "b", &[("registry", "internal")]);
    reload(&rig, &key);
    rig.reconciles(
        reconcile(&rig.ctx, &key),
        ReconcileResult::Written,
        &[
            ("create secretbindings", 1),
            ("delete secretbindings", 1),
            ("patch clustersecretbindings/status", 1),
        ],
    )
    .await;
    assert!(generated(&rig, "b").is_some());
    assert!(
        rig.server
            .object("secretsync.dev", "secretbindings", Some("a"), "pull")
            .is_none()
    );
    assert_eq!(status(&rig)["namespaces"], serde_json::json!(["b"]));
}

#[tokio::test]
async fn a_cluster_binding_leaves_a_foreign_binding_of_its_name_alone_and_reports_it() {
    let rig = Rig::new(Duration::from_secs(1)).await;
    namespace(&rig, "a", &[("registry", "internal")]);
    let stored = rig
        .put(
            "apiVersion: secretsync.dev/v1alpha1\nkind: SecretBinding\nmetadata: {name: pull, namespace: a}\nspec:\n  sourceRef: {name: mine}\n  data: [{secretKey: x, remoteRef: {key: X}}]\n",
        )
        .remove(0);
    let b: SecretBinding = serde_json::from_value(stored).unwrap();
    rig.ctx.bindings.upsert(ObjKey::new("a", "pull"), b);
    let key = put_cluster_binding(&rig);
    let r = rig
        .reconciles(
            secretsync_controller::cluster_binding::reconcile(&rig.ctx, &key),
            ReconcileResult::Error,
            &[("patch clustersecretbindings/status", 1)],
        )
        .await;
    assert!(
        matches!(r.requeue, secretsync_controller::outcome::Requeue::After(_)),
        "{r:?}"
    );
    let st = status(&rig);
    assert_eq!(st["failedNamespaces"][0]["namespace"], "a");
    assert_eq!(st["conditions"][0]["reason"], "ProvisionFailed");
    // Untouched.
    let v = rig
        .server
        .object("secretsync.dev", "secretbindings", Some("a"), "pull")
        .unwrap();
    assert_eq!(v["spec"]["sourceRef"]["name"], "mine");
}

#[tokio::test]
async fn a_deleted_cluster_binding_removes_what_it_generated() {
    let rig = Rig::new(Duration::from_secs(1)).await;
    namespace(&rig, "a", &[("registry", "internal")]);
    namespace(&rig, "b", &[("registry", "internal")]);
    let key = put_cluster_binding(&rig);
    use secretsync_controller::cluster_binding::reconcile;
    reconcile(&rig.ctx, &key).await;
    generated(&rig, "a").unwrap();
    generated(&rig, "b").unwrap();
    rig.ctx.cluster_bindings.remove(&key);
    rig.reconciles(
        reconcile(&rig.ctx, &key),
        ReconcileResult::Deleted,
        &[("delete secretbindings", 2)],
    )
    .await;
    for ns in ["a", "b"] {
        assert!(
            rig.server
                .object("secretsync.dev", "secretbindings", Some(ns), "pull")
                .is_none()
        );
    }
}
