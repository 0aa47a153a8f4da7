//! `templateFrom` in the binding reconciler against the fake API server: templates come
//! from a ConfigMap read once and then held; an edit of it is reported by the namespace's
//! metadata watch and renders again from the cached values, without a backend read; a
//! missing ConfigMap or key fails the binding and leaves the Secret alone; ConfigMaps are
//! held (and their namespace watched) only while a binding references them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod rig;

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use rig::{NS, Rig, source_key};
use secretsync_controller::binding::reconcile;
use secretsync_controller::outcome::ReconcileResult;
use secretsync_controller::runtime::ObjKey;
use secretsync_controller::runtime::held::Change;
use tokio::sync::mpsc::UnboundedReceiver;

const ENV: &str = "DB_USER=shop\nDB_PASSWORD=pw-1\n";

fn config_map(name: &str, url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {NS}}}\ndata:\n  DATABASE_URL: \"{url}\"\n  unused: \"x\"\n"
    )
}

fn binding_yaml(name: &str, template: &str) -> String {
    format!(
        r#"apiVersion: secretsync.dev/v1alpha1
kind: SecretBinding
metadata: {{name: {name}, namespace: {NS}}}
spec:
  sourceRef: {{name: files}}
  refreshInterval: 1h
  target:
    template: {template}
  data:
    - {{secretKey: password, remoteRef: {{key: DB_PASSWORD}}}}
    - {{secretKey: username, remoteRef: {{key: DB_USER}}}}
"#
    )
}

const FROM_DB_TEMPLATES: &str =
    "{templateFrom: [{configMap: {name: db-templates, items: [{key: DATABASE_URL}]}}]}";

async fn backend_calls(rig: &Rig) -> u64 {
    let entry = rig
        .ctx
        .registry
        .current(&source_key("files"))
        .await
        .unwrap();
    entry.cache.as_ref().unwrap().stats().backend_calls
}

async fn next_change(rx: &mut UnboundedReceiver<Change>) -> Change {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no ConfigMap change reported within 10 s")
        .expect("change channel closed")
}

async fn rig_with(template: &str) -> (Rig, ObjKey, UnboundedReceiver<Change>) {
    let rig = Rig::new(Duration::from_secs(1)).await;
    rig.file_source("files", "app.env", ENV);
    rig.put(&config_map(
        "db-templates",
        "postgres://{{ username }}:{{ password }}@db/shop",
    ));
    rig.put(&config_map("unrelated", "{{ nope }}"));
    let key = rig.binding(&binding_yaml("app", template));
    let changes = rig.ctx.templates.take_changes().unwrap();
    (rig, key, changes)
}

/// The first sync and the watch event it causes, as in production.
async fn synced(rig: &Rig, key: &ObjKey) {
    let r = reconcile(&rig.ctx, key).await;
    assert_eq!(r.result, ReconcileResult::Written, "{:?}", rig.ready(key));
    rig.watch_sees_secret(&key.name);
    rig.reload_binding(key);
}

#[tokio::test]
async fn a_config_map_edit_renders_again_from_cached_values() {
    let (rig, key, mut changes) = rig_with(FROM_DB_TEMPLATES).await;
    // Many unrelated ConfigMaps in the same namespace: none is fetched or held.
    let mut unrelated = String::new();
    for i in 0..300 {
        unrelated.push_str(&config_map(&format!("other-{i}"), "x"));
        unrelated.push_str("---\n");
    }
    rig.put(&unrelated);
    synced(&rig, &key).await;
    assert_eq!(rig.ctx.templates.held_len(), 1);
    assert_eq!(
        rig.secret_data("app")["DATABASE_URL"],
        "postgres://shop:pw-1@db/shop"
    );
    assert_eq!(rig.server.count("get", "configmaps"), 1);
    let reads = backend_calls(&rig).await;
    let synced_at = rig.reload_binding(&key).status.unwrap().last_sync_time;

    // Nothing due: the held ConfigMap is not fetched again, the backend is not read.
    let r = reconcile(&rig.ctx, &key).await;
    assert_eq!(r.result, ReconcileResult::Unchanged);
    assert_eq!(rig.server.count("get", "configmaps"), 1);

    // An unrelated ConfigMap changing is not reported; the referenced one is.
    rig.put(&config_map("unrelated", "{{ other }}"));
    rig.put(&config_map(
        "db-templates",
        "mysql://{{ username }}:{{ password }}@db/shop",
    ));
    let change = next_change(&mut changes).await;
    assert_eq!(change.name, "db-templates");
    assert_eq!(rig.ctx.templates.users(&change), vec![key.clone()]);
    let r = reconcile(&rig.ctx, &key).await;
    assert_eq!(r.result, ReconcileResult::Written);
    assert_eq!(
        rig.secret_data("app")["DATABASE_URL"],
        "mysql://shop:pw-1@db/shop"
    );
    assert_eq!(
        backend_calls(&rig).await,
        reads,
        "a template change does not read the backend"
    );
    assert_eq!(rig.server.count("get", "configmaps"), 2);
    let status = rig.reload_binding(&key).status.unwrap();
    assert_eq!(
        status.last_sync_time, synced_at,
        "lastSyncTime is a backend read; a re-render is not one"
    );
    assert_eq!(rig.ready(&key).1, "Synced");
    // One GET per version of the one referenced ConfigMap; the other is never fetched.
    assert!(changes.try_recv().is_err(), "{:?}", changes.try_recv());
}

#[tokio::test]
async fn a_missing_config_map_or_key_fails_and_leaves_the_secret() {
    let (rig, key, mut changes) = rig_with(FROM_DB_TEMPLATES).await;
    synced(&rig, &key).await;
    let before = rig.secret_data("app");

    // The key goes away.
    rig.put(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: db-templates, namespace: {NS}}}\ndata: {{other: x}}\n"
    ));
    next_change(&mut changes).await;
    let r = reconcile(&rig.ctx, &key).await;
    assert_eq!(r.result, ReconcileResult::Error);
    let (status, reason, message) = rig.ready(&key);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "TemplateNotFound")
    );
    assert!(
        message.contains(r#"ConfigMap "db-templates" has no key "DATABASE_URL""#),
        "{message}"
    );
    assert_eq!(
        rig.secret_data("app"),
        before,
        "the Secret is left as it was"
    );

    // The ConfigMap goes away.
    Api::<ConfigMap>::namespaced(rig.ctx.client.clone(), NS)
        .delete("db-templates", &Default::default())
        .await
        .unwrap();
    next_change(&mut changes).await;
    let gets = rig.server.count("get", "configmaps");
    reconcile(&rig.ctx, &key).await;
    let (_, reason, message) = rig.ready(&key);
    assert_eq!(reason, "TemplateNotFound");
    assert!(
        message.contains(
            r#"ConfigMap "db-templates" (keys "DATABASE_URL"): not found in namespace "shop""#
        ),
        "{message}"
    );
    assert_eq!(rig.secret_data("app"), before);
    // The watch showed the deletion: neither that reconcile nor a retry asks the API
    // server (the watch reports the ConfigMap's return).
    reconcile(&rig.ctx, &key).await;
    assert_eq!(rig.server.count("get", "configmaps"), gets);

    rig.put(&config_map("db-templates", "back://{{ username }}"));
    next_change(&mut changes).await;
    let r = reconcile(&rig.ctx, &key).await;
    assert_eq!(r.result, ReconcileResult::Written);
    assert_eq!(rig.secret_data("app")["DATABASE_URL"], "back://shop");
    assert_eq!(rig.ready(&key).1, "Synced");
}

#[tokio::test]
async fn config_maps_are_held_only_while_referenced() {
    let (rig, key, _changes) = rig_with(FROM_DB_TEMPLATES).await;
    synced(&rig, &key).await;
    assert_eq!(rig.ctx.templates.held_len(), 1);
    assert_eq!(rig.ctx.templates.watched_namespaces(), [NS]);

    // The binding drops templateFrom: nothing is held or watched any more.
    rig.binding(&binding_yaml("app", "{data: {url: \"{{ username }}\"}}"));
    let r = reconcile(&rig.ctx, &key).await;
    assert_eq!(r.result, ReconcileResult::Written);
    assert_eq!(rig.ctx.templates.held_len(), 0);
    assert!(rig.ctx.templates.watched_namespaces().is_empty());

    // Referenced again, then the binding is deleted.
    rig.binding(&binding_yaml("app", FROM_DB_TEMPLATES));
    reconcile(&rig.ctx, &key).await;
    assert_eq!(rig.ctx.templates.watched_namespaces(), [NS]);
    rig.ctx.bindings.remove(&key);
    let r = reconcile(&rig.ctx, &key).await;
    assert_eq!(r.result, ReconcileResult::Deleted);
    assert_eq!(rig.ctx.templates.held_len(), 0);
    assert!(rig.ctx.templates.watched_namespaces().is_empty());
}

#[tokio::test]
async fn the_inline_template_wins_and_bindings_without_templates_hold_nothing() {
    let (rig, key, _changes) = rig_with(
        "{templateFrom: [{configMap: {name: db-templates, items: [{key: DATABASE_URL}]}}], data: {DATABASE_URL: \"inline:{{ username }}\"}}",
    )
    .await;
    synced(&rig, &key).await;
    assert_eq!(rig.secret_data("app")["DATABASE_URL"], "inline:shop");

    let plain = rig.binding(&binding_yaml("plain", "{data: {u: \"{{ username }}\"}}"));
    let gets = rig.server.count("get", "configmaps");
    synced(&rig, &plain).await;
    assert_eq!(rig.server.count("get", "configmaps"), gets);
    assert_eq!(rig.ctx.templates.held_len(), 1, "only app's ConfigMap");
}
