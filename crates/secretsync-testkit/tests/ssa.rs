//! Server-side apply semantics through `kube::Client`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use secretsync_testkit::FakeApiServer;
use serde_json::{Value, json};
use support::api_err;

mod support;

async fn setup() -> (FakeApiServer, Client, Api<Secret>) {
    let (server, client) = support::setup().await;
    let api = Api::namespaced(client.clone(), "ssa");
    (server, client, api)
}

fn applied(data: &[(&str, &str)], annotations: &[(&str, &str)]) -> Value {
    use base64::Engine;
    let data: BTreeMap<String, String> = data
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                base64::engine::general_purpose::STANDARD.encode(v),
            )
        })
        .collect();
    let ann: BTreeMap<&str, &str> = annotations.iter().copied().collect();
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s", "annotations": ann},
        "data": data,
    })
}

/// Applies Secret `s` with `body` (see [`applied`]) under `pp`.
async fn apply(api: &Api<Secret>, pp: &PatchParams, body: Value) -> kube::Result<Secret> {
    api.patch("s", pp, &Patch::Apply(body)).await
}

/// Another writer, `kubectl-edit`, changes Secret `s` with a merge patch.
async fn edit(api: &Api<Secret>, body: Value) {
    let pp = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..Default::default()
    };
    api.patch("s", &pp, &Patch::Merge(body)).await.unwrap();
}

/// The names of a Deployment's containers, in order.
fn container_names(d: k8s_openapi::api::apps::v1::Deployment) -> Vec<String> {
    d.spec
        .template
        .spec
        .unwrap()
        .containers
        .into_iter()
        .map(|c| c.name)
        .collect()
}

fn keys(s: &Secret) -> Vec<String> {
    s.data
        .clone()
        .unwrap_or_default()
        .into_keys()
        .collect::<Vec<_>>()
}

#[tokio::test]
async fn create_via_apply_records_managed_fields() {
    let (_s, _c, api) = setup().await;
    let s = apply(
        &api,
        &PatchParams::apply("secretsync"),
        applied(&[("a", "1")], &[("x", "y")]),
    )
    .await
    .unwrap();
    assert_eq!(keys(&s), ["a"]);
    let mf = s.metadata.managed_fields.unwrap();
    assert_eq!(mf.len(), 1);
    assert_eq!(mf[0].manager.as_deref(), Some("secretsync"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));
    let f = &mf[0].fields_v1.as_ref().unwrap().0;
    assert_eq!(f["f:data"], json!({"f:a": {}}));
    assert_eq!(f["f:metadata"]["f:annotations"], json!({"f:x": {}}));
}

#[tokio::test]
async fn apply_removes_fields_the_manager_stopped_applying() {
    let (_s, _c, api) = setup().await;
    let pp = PatchParams::apply("secretsync");
    apply(
        &api,
        &pp,
        applied(&[("a", "1"), ("b", "2")], &[("x", "1"), ("y", "2")]),
    )
    .await
    .unwrap();
    // another writer adds its own key with a merge patch
    edit(
        &api,
        json!({"data": {"c": "Mw=="}, "metadata": {"annotations": {"z": "3"}}}),
    )
    .await;
    let s = apply(&api, &pp, applied(&[("a", "1")], &[("x", "1")]))
        .await
        .unwrap();
    assert_eq!(keys(&s), ["a", "c"], "b removed, c (other manager) kept");
    let ann = s.metadata.annotations.unwrap();
    assert_eq!(
        ann.keys().cloned().collect::<Vec<_>>(),
        ["x", "z"],
        "y removed, z kept"
    );
}

#[tokio::test]
async fn shared_field_survives_when_one_owner_stops_applying() {
    let (_s, _c, api) = setup().await;
    apply(&api, &PatchParams::apply("m1"), applied(&[("a", "1")], &[]))
        .await
        .unwrap();
    // same value: no conflict, both own it
    apply(&api, &PatchParams::apply("m2"), applied(&[("a", "1")], &[]))
        .await
        .unwrap();
    let s = apply(&api, &PatchParams::apply("m1"), applied(&[], &[]))
        .await
        .unwrap();
    assert_eq!(keys(&s), ["a"]);
}

#[tokio::test]
async fn conflict_between_managers_and_force() {
    let (_s, _c, api) = setup().await;
    apply(&api, &PatchParams::apply("m1"), applied(&[("a", "1")], &[]))
        .await
        .unwrap();
    let err = api_err(
        apply(&api, &PatchParams::apply("m2"), applied(&[("a", "2")], &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(err.message.contains("m1"), "{}", err.message);
    let cause = &err.details.unwrap().causes[0];
    assert_eq!(cause.reason, "FieldManagerConflict");
    assert_eq!(cause.field, ".data.a");
    assert!(cause.message.contains("m1"));

    let s = apply(
        &api,
        &PatchParams::apply("m2").force(),
        applied(&[("a", "2")], &[]),
    )
    .await
    .unwrap();
    assert_eq!(s.data.unwrap()["a"].0, b"2");
    let mf = s.metadata.managed_fields.unwrap();
    let owns_a = |m: &str| {
        mf.iter()
            .filter(|e| e.manager.as_deref() == Some(m))
            .any(|e| e.fields_v1.as_ref().unwrap().0.get("f:data").is_some())
    };
    assert!(owns_a("m2"), "ownership moved to m2: {mf:?}");
    assert!(!owns_a("m1"), "m1 lost .data.a: {mf:?}");
}

#[tokio::test]
async fn apply_conflicts_with_update_owned_field() {
    let (_s, _c, api) = setup().await;
    apply(
        &api,
        &PatchParams::apply("secretsync"),
        applied(&[("a", "1")], &[]),
    )
    .await
    .unwrap();
    // someone edits the applied key
    edit(&api, json!({"data": {"a": "ZWRpdGVk"}})).await;
    let s = api.get("s").await.unwrap();
    let mf = s.metadata.managed_fields.unwrap();
    let edit = mf
        .iter()
        .find(|m| m.manager.as_deref() == Some("kubectl-edit"))
        .unwrap();
    assert_eq!(edit.operation.as_deref(), Some("Update"));
    // the applier no longer owns it, so re-applying its value conflicts
    let err = api_err(
        apply(
            &api,
            &PatchParams::apply("secretsync"),
            applied(&[("a", "1")], &[]),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 409);
    assert!(err.message.contains("kubectl-edit"), "{}", err.message);
    // force restores it (drift correction)
    let s = apply(
        &api,
        &PatchParams::apply("secretsync").force(),
        applied(&[("a", "1")], &[]),
    )
    .await
    .unwrap();
    assert_eq!(s.data.unwrap()["a"].0, b"1");
}

#[tokio::test]
async fn apply_without_changes_is_a_no_op() {
    let (server, _c, api) = setup().await;
    let pp = PatchParams::apply("secretsync");
    let first = apply(&api, &pp, applied(&[("a", "1")], &[])).await.unwrap();
    let rv = server.resource_version();
    let again = apply(&api, &pp, applied(&[("a", "1")], &[])).await.unwrap();
    assert_eq!(
        first.metadata.resource_version,
        again.metadata.resource_version
    );
    assert_eq!(server.resource_version(), rv);
}

#[tokio::test]
async fn apply_accepts_yaml_and_requires_field_manager() {
    let (_s, client, _api) = setup().await;
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y\ndata:\n  k: v\n";
    let req = |q: &str| {
        http::Request::builder()
            .method("PATCH")
            .uri(format!("/api/v1/namespaces/ssa/configmaps/y{q}"))
            .header("content-type", "application/apply-patch+yaml")
            .body(yaml.as_bytes().to_vec())
            .unwrap()
    };
    let out: Value = client
        .request(req("?fieldManager=yaml-test"))
        .await
        .unwrap();
    assert_eq!(out["data"]["k"], "v");
    let err = api_err(client.request::<Value>(req("")).await.unwrap_err());
    assert_eq!(err.code, 400);
}

#[tokio::test]
async fn keyed_and_set_lists_merge_per_item() {
    let (_s, client, _api) = setup().await;
    // finalizers are a set: each manager owns its own entries
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), "ssa");
    let fin = |m: &str, f: &[&str]| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "finalizers": f}, "data": {m: "x"}});
    cms.patch(
        "c",
        &PatchParams::apply("a"),
        &Patch::Apply(fin("a", &["a/f"])),
    )
    .await
    .unwrap();
    cms.patch(
        "c",
        &PatchParams::apply("b"),
        &Patch::Apply(fin("b", &["b/f"])),
    )
    .await
    .unwrap();
    let c = cms
        .patch("c", &PatchParams::apply("a"), &Patch::Apply(fin("a", &[])))
        .await
        .unwrap();
    assert_eq!(c.metadata.finalizers.unwrap(), ["b/f"]);

    // containers are keyed by name
    let deploys: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client, "ssa");
    let d = |m: &str, containers: Value| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "annotations": {m: "1"}},
            "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": {
                "metadata": {"labels": {"app": "d"}}, "spec": {"containers": containers}}}})
    };
    deploys
        .patch(
            "d",
            &PatchParams::apply("a"),
            &Patch::Apply(d("a", json!([{"name": "app", "image": "app:1"}]))),
        )
        .await
        .unwrap();
    let out = deploys
        .patch(
            "d",
            &PatchParams::apply("b"),
            &Patch::Apply(d("b", json!([{"name": "side", "image": "side:1"}]))),
        )
        .await
        .unwrap();
    assert_eq!(container_names(out), ["app", "side"]);
    // b stops applying its container: it goes, a's stays
    let out = deploys
        .patch(
            "d",
            &PatchParams::apply("b"),
            &Patch::Apply(d("b", json!([]))),
        )
        .await
        .unwrap();
    assert_eq!(container_names(out), ["app"]);
}
