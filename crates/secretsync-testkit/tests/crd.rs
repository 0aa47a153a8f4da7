//! CustomResourceDefinitions: dynamic registration, discovery, status subresource,
//! generation, schema validation and defaulting — with the secretsync CRDs.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{GroupVersionKind, Status};
use kube::discovery::Discovery;
use secretsync_testkit::TestEnv;
use secretsync_testkit::harness::wait_for;
use serde_json::json;
use support::{api_err, merge};

mod support;

/// The API of secretsync kind `kind` (plural `plural`) in the test namespace.
fn crd_api(env: &TestEnv, kind: &str, plural: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("secretsync.dev", "v1alpha1", kind),
        plural,
    );
    Api::namespaced_with(env.client.clone(), &env.namespace, &ar)
}

/// A test environment with the secretsync CRDs installed, and the SecretBinding API.
async fn with_crds() -> (TestEnv, Api<DynamicObject>) {
    let env = TestEnv::start().await.unwrap();
    env.install_crds().await.unwrap();
    let api = crd_api(&env, "SecretBinding", "secretbindings");
    (env, api)
}

/// Creating `obj` fails: the API error.
async fn refused(api: &Api<DynamicObject>, obj: &DynamicObject) -> Status {
    api_err(api.create(&PostParams::default(), obj).await.unwrap_err())
}

/// The types of an object's status conditions, in order.
fn condition_types(obj: &DynamicObject) -> Vec<&str> {
    obj.data["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect()
}

fn binding(name: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "secretsync.dev/v1alpha1",
        "kind": "SecretBinding",
        "metadata": {"name": name},
        "spec": {"sourceRef": {"name": "src"}, "data": [{"secretKey": "k", "remoteRef": {"key": "a/b"}}]},
    }))
    .unwrap()
}

#[tokio::test]
async fn crds_install_and_show_up_in_discovery() {
    let env = TestEnv::start().await.unwrap();
    env.install_crds().await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    let crd = crds.get("secretbindings.secretsync.dev").await.unwrap();
    assert!(
        crd.status
            .unwrap()
            .conditions
            .unwrap()
            .iter()
            .any(|c| c.type_ == "Established")
    );

    let discovery = Discovery::new(env.client.clone()).run().await.unwrap();
    let group = discovery
        .groups()
        .find(|g| g.name() == "secretsync.dev")
        .expect("group discovered");
    let kinds: Vec<String> = group
        .recommended_resources()
        .into_iter()
        .map(|(ar, _)| ar.kind)
        .collect();
    assert!(kinds.contains(&"SecretBinding".to_string()), "{kinds:?}");
    assert!(kinds.contains(&"SecretSource".to_string()), "{kinds:?}");
    let (_, caps) = group
        .recommended_resources()
        .into_iter()
        .find(|(ar, _)| ar.kind == "SecretBinding")
        .unwrap();
    assert!(caps.supports_operation(kube::discovery::verbs::WATCH));
    assert!(
        caps.subresources
            .iter()
            .any(|(ar, _)| ar.plural == "status")
    );
}

#[tokio::test]
async fn status_write_does_not_bump_generation() {
    let (_env, api) = with_crds().await;
    let created = api
        .create(&PostParams::default(), &binding("b"))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    // defaulting from the schema
    assert_eq!(created.data["spec"]["refreshInterval"], "1h");
    assert_eq!(created.data["spec"]["target"]["creationPolicy"], "Owner");

    let status = json!({
        "apiVersion": "secretsync.dev/v1alpha1",
        "kind": "SecretBinding",
        "status": {"observedGeneration": 1, "conditions": [{
            "type": "Ready", "status": "True", "reason": "Synced", "message": "1 keys",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
    });
    let after = api
        .patch_status(
            "b",
            &PatchParams::apply("secretsync"),
            &Patch::Apply(&status),
        )
        .await
        .unwrap();
    assert_eq!(after.metadata.generation, Some(1));
    assert_eq!(after.data["status"]["conditions"][0]["reason"], "Synced");
    let mf = after.metadata.managed_fields.unwrap();
    assert!(
        mf.iter()
            .any(|m| m.subresource.as_deref() == Some("status"))
    );

    // a main-resource write ignores status but bumps generation on spec changes
    let spec_change = merge(
        &api,
        "b",
        json!({"spec": {"refreshInterval": "5m"}, "status": {"observedGeneration": 99}}),
    )
    .await;
    assert_eq!(spec_change.metadata.generation, Some(2));
    assert_eq!(spec_change.data["status"]["observedGeneration"], 1);
    // metadata-only change: no bump
    let labelled = merge(&api, "b", json!({"metadata": {"labels": {"a": "b"}}})).await;
    assert_eq!(labelled.metadata.generation, Some(2));
}

#[tokio::test]
async fn schema_validation_rejects_bad_objects() {
    let (_env, api) = with_crds().await;
    let mut bad = binding("bad");
    bad.data["spec"]["target"] = json!({"creationPolicy": "Sometimes"});
    let err = refused(&api, &bad).await;
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    let causes = err.details.unwrap().causes;
    assert!(
        causes
            .iter()
            .any(|c| c.field == "spec.target.creationPolicy"),
        "{causes:?}"
    );

    let mut missing = binding("missing");
    missing.data["spec"]
        .as_object_mut()
        .unwrap()
        .remove("sourceRef");
    let err = refused(&api, &missing).await;
    assert_eq!(err.code, 422);
    assert!(err.message.contains("spec.sourceRef"), "{}", err.message);

    let mut wrong_type = binding("wrongtype");
    wrong_type.data["spec"]["refreshInterval"] = json!(5);
    let err = refused(&api, &wrong_type).await;
    assert_eq!(err.code, 422);
    assert!(
        err.message.contains("spec.refreshInterval"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn deleting_a_crd_removes_its_resources() {
    let (env, api) = with_crds().await;
    api.create(&PostParams::default(), &binding("gone"))
        .await
        .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    crds.delete("secretbindings.secretsync.dev", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(Duration::from_secs(5), || async {
        matches!(api.get("gone").await, Err(kube::Error::Api(s)) if s.code == 404)
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn status_conditions_are_a_map_list() {
    let (_env, api) = with_crds().await;
    api.create(&PostParams::default(), &binding("c"))
        .await
        .unwrap();
    let cond = |t: &str| json!({"type": t, "status": "True", "reason": "R", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"});
    let status = |conds: Vec<serde_json::Value>| json!({"apiVersion": "secretsync.dev/v1alpha1", "kind": "SecretBinding", "status": {"conditions": conds}});
    api.patch_status(
        "c",
        &PatchParams::apply("secretsync"),
        &Patch::Apply(status(vec![cond("Ready")])),
    )
    .await
    .unwrap();
    api.patch_status(
        "c",
        &PatchParams::apply("other"),
        &Patch::Apply(status(vec![cond("Extra")])),
    )
    .await
    .unwrap();
    let got = api.get("c").await.unwrap();
    assert_eq!(condition_types(&got), ["Ready", "Extra"]);
    let got = api
        .patch_status(
            "c",
            &PatchParams::apply("secretsync"),
            &Patch::Apply(status(vec![])),
        )
        .await
        .unwrap();
    assert_eq!(condition_types(&got), ["Extra"]);
}

#[tokio::test]
async fn cel_rules_of_the_secretsync_crds_are_enforced() {
    let (env, api) = with_crds().await;
    let mut bad_key = binding("badkey");
    bad_key.data["spec"]["data"][0]["secretKey"] = json!("a/b");
    let err = refused(&api, &bad_key).await;
    assert_eq!(err.code, 422);
    assert!(err.message.contains("secretKey"), "{}", err.message);

    let mut bad_interval = binding("badinterval");
    bad_interval.data["spec"]["refreshInterval"] = json!("soon");
    let err = refused(&api, &bad_interval).await;
    assert_eq!(err.code, 422);
    assert!(err.message.contains("refreshInterval"), "{}", err.message);

    let mut no_data = binding("nodata");
    no_data.data["spec"].as_object_mut().unwrap().remove("data");
    let err = refused(&api, &no_data).await;
    assert_eq!(err.code, 422, "{}", err.message);

    let sources = crd_api(&env, "SecretSource", "secretsources");
    let src = |spec: serde_json::Value| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "secretsync.dev/v1alpha1", "kind": "SecretSource",
            "metadata": {"name": "src"}, "spec": spec,
        }))
        .unwrap()
    };
    let err = refused(
        &sources,
        &src(json!({"env": {}, "aws": {"region": "eu-west-1"}})),
    )
    .await;
    assert_eq!(err.code, 422, "{}", err.message);
    sources
        .create(&PostParams::default(), &src(json!({"env": {}})))
        .await
        .unwrap();
}

#[tokio::test]
async fn unknown_fields_are_pruned_or_rejected_when_strict() {
    let (_env, api) = with_crds().await;
    let mut extra = binding("extra");
    extra.data["spec"]["bogus"] = json!(1);
    let err = api_err(
        api.patch(
            "extra",
            &PatchParams::apply("t").validation_strict(),
            &Patch::Apply(&extra),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 400);
    assert!(err.message.contains("spec.bogus"), "{}", err.message);
    let created = api.create(&PostParams::default(), &extra).await.unwrap();
    assert!(created.data["spec"].get("bogus").is_none(), "pruned");
}

#[tokio::test]
async fn root_rules_may_read_only_name_and_generate_name_of_metadata() {
    let env = TestEnv::start().await.unwrap();
    // a group of the test's own, so tests on one real cluster stay apart
    let group = format!("{}.test.secretsync.dev", env.namespace);
    let crd = |rule: &str| {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("widgets.{group}")},
            "spec": {
                "group": group, "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object",
                        "x-kubernetes-validations": [{"rule": rule}]}}}],
            },
        })
    };
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    let hidden: CustomResourceDefinition =
        serde_json::from_value(crd("self.metadata.namespace == 'x'")).unwrap();
    let err = api_err(
        crds.create(&PostParams::default(), &hidden)
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"), "{err:?}");
    let causes = err.details.unwrap().causes;
    assert!(
        causes.iter().any(|c| c.field
            == "spec.validation.openAPIV3Schema.x-kubernetes-validations[0].rule"
            && c.message
                .contains("compilation failed: ERROR: <input>:1:14: undefined field 'namespace'")),
        "{causes:?}"
    );
    // through the environment, so a real cluster gets it deleted again
    env.apply_value("e2e", crd("self.metadata.name == 'x'"))
        .await
        .unwrap();
}
