//! ValidatingAdmissionPolicies: the fake serves them and enforces the chart's policy, which
//! keeps a SecretSource's `spec.kubernetes.namespace` in the source's own namespace. The
//! policy is rendered from the chart by Helm's engine (the test venv, as for every chart
//! test), and the end-to-end environment installs it as the chart ships it.

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{GroupVersionKind, Status};
use kube::discovery::Discovery;
use secretsync_testkit::chart::{self, Rendered};
use secretsync_testkit::{FakeApiServer, TestEnv, WatchScope};
use serde_json::{Value, json};
use support::{api_err, setup};

mod support;

const RELEASE: &str = "ss";
const POLICY: &str = "ss-secretsync-source-namespace";

fn render(values: Value) -> Rendered {
    chart::render(&values, RELEASE, "secretsync-system")
        .unwrap_or_else(|e| panic!("rendering {values}: {e}"))
}

/// A stand-in for the SecretSource CRD that has `spec.kubernetes.namespace` and nothing
/// else: the policy is about that field alone, and this keeps the test independent of the
/// rest of the real CRD (its other rules, whether it has the kubernetes backend yet).
fn source_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "secretsources.secretsync.dev"},
        "spec": {
            "group": "secretsync.dev", "scope": "Namespaced",
            "names": {"plural": "secretsources", "singular": "secretsource", "kind": "SecretSource"},
            "versions": [{"name": "v1alpha1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {
                        "kubernetes": {"type": "object", "properties": {
                            "namespace": {"type": "string"}}}}}}}}}],
        },
    }))
    .unwrap()
}

/// A server with the stand-in CRD and the chart's policy and binding, applied as Helm
/// would (server-side, manager `helm`); the SecretSources of namespace `shop` and the
/// message the policy refuses with.
async fn with_chart_policy() -> (FakeApiServer, Api<DynamicObject>, String) {
    let (server, client) = setup().await;
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &source_crd())
        .await
        .unwrap();
    let rendered = render(json!({}));
    let pp = PatchParams::apply("helm").force();
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    for p in rendered.of_kind("ValidatingAdmissionPolicy") {
        let name = p["metadata"]["name"].as_str().unwrap();
        policies.patch(name, &pp, &Patch::Apply(p)).await.unwrap();
    }
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    for b in rendered.of_kind("ValidatingAdmissionPolicyBinding") {
        let name = b["metadata"]["name"].as_str().unwrap();
        bindings.patch(name, &pp, &Patch::Apply(b)).await.unwrap();
    }
    let message = rendered.get("ValidatingAdmissionPolicy", POLICY).unwrap()["spec"]["validations"]
        [0]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("secretsync.dev", "v1alpha1", "SecretSource"),
        "secretsources",
    );
    (server, Api::namespaced_with(client, "shop", &ar), message)
}

fn source(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "secretsync.dev/v1alpha1", "kind": "SecretSource",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

fn to_infra() -> Value {
    json!({"kubernetes": {"namespace": "infra"}})
}

/// The refusal of the chart's policy, as a real server words it.
fn assert_refused(err: &Status, name: &str, message: &str) {
    let why = format!(
        "ValidatingAdmissionPolicy '{POLICY}' with binding '{POLICY}' denied request: {message}"
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"), "{err:?}");
    assert_eq!(
        err.message,
        format!("secretsources.secretsync.dev \"{name}\" is forbidden: {why}")
    );
    let causes = &err.details.as_ref().unwrap().causes;
    assert_eq!(causes.len(), 1, "{causes:?}");
    assert_eq!(causes[0].message, why);
}

#[tokio::test]
async fn the_chart_policy_keeps_a_sources_kubernetes_namespace_its_own() {
    let (server, sources, message) = with_chart_policy().await;
    let pp = PostParams::default();
    let err = api_err(
        sources
            .create(&pp, &source("elsewhere", to_infra()))
            .await
            .unwrap_err(),
    );
    assert_refused(&err, "elsewhere", &message);
    assert!(
        server
            .object("secretsync.dev", "secretsources", Some("shop"), "elsewhere")
            .is_none(),
        "nothing stored"
    );
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let err = api_err(
        sources
            .create(&dry, &source("elsewhere", to_infra()))
            .await
            .unwrap_err(),
    );
    assert_refused(&err, "elsewhere", &message);

    for (name, spec) in [
        ("own", json!({"kubernetes": {"namespace": "shop"}})),
        ("implicit", json!({"kubernetes": {}})),
        ("other-backend", json!({})),
    ] {
        sources.create(&pp, &source(name, spec)).await.unwrap();
    }

    // every kind of update is admitted too
    let merge = Patch::Merge(json!({"spec": to_infra()}));
    let err = api_err(
        sources
            .patch("own", &PatchParams::default(), &merge)
            .await
            .unwrap_err(),
    );
    assert_refused(&err, "own", &message);
    let mut replaced = sources.get("own").await.unwrap();
    replaced.data["spec"] = to_infra();
    let err = api_err(sources.replace("own", &pp, &replaced).await.unwrap_err());
    assert_refused(&err, "own", &message);
    let applied = Patch::Apply(source("own", to_infra()));
    let err = api_err(
        sources
            .patch("own", &PatchParams::apply("t").force(), &applied)
            .await
            .unwrap_err(),
    );
    assert_refused(&err, "own", &message);
    let err = api_err(
        sources
            .patch(
                "created-by-apply",
                &PatchParams::apply("t"),
                &Patch::Apply(source("created-by-apply", to_infra())),
            )
            .await
            .unwrap_err(),
    );
    assert_refused(&err, "created-by-apply", &message);
    let stored = sources.get("own").await.unwrap();
    assert_eq!(stored.data["spec"]["kubernetes"]["namespace"], "shop");
    assert!(sources.get_opt("created-by-apply").await.unwrap().is_none());

    // an update that keeps the namespace is fine
    let merge = Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}}));
    sources
        .patch("own", &PatchParams::default(), &merge)
        .await
        .unwrap();
}

#[tokio::test]
async fn policies_and_bindings_are_served_cluster_wide_with_defaults() {
    let (_server, client) = setup().await;
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let group = discovery
        .groups()
        .find(|g| g.name() == "admissionregistration.k8s.io")
        .expect("group discovered");
    let kinds: Vec<(String, bool)> = group
        .recommended_resources()
        .into_iter()
        .map(|(ar, caps)| {
            let status = caps.subresources.iter().any(|(s, _)| s.plural == "status");
            (ar.kind, status)
        })
        .collect();
    assert!(
        kinds.contains(&("ValidatingAdmissionPolicy".into(), true)),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("ValidatingAdmissionPolicyBinding".into(), false)),
        "{kinds:?}"
    );

    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    let p: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "metadata": {"name": "p"},
        "spec": {"matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                     "operations": ["CREATE"], "resources": ["configmaps"]}]},
                 "validations": [{"expression": "object.metadata.name != 'forbidden'"}]},
    }))
    .unwrap();
    let created = policies.create(&PostParams::default(), &p).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let spec = created.spec.unwrap();
    assert_eq!(spec.failure_policy.as_deref(), Some("Fail"));
    let mc = spec.match_constraints.unwrap();
    assert_eq!(mc.match_policy.as_deref(), Some("Equivalent"));
    assert_eq!(mc.resource_rules.unwrap()[0].scope.as_deref(), Some("*"));

    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    let actionless: ValidatingAdmissionPolicyBinding =
        serde_json::from_value(json!({"metadata": {"name": "b"}, "spec": {"policyName": "p"}}))
            .unwrap();
    let err = api_err(
        bindings
            .create(&PostParams::default(), &actionless)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422, "{err:?}");
    assert!(
        err.message.contains("spec.validationActions"),
        "{}",
        err.message
    );

    // without a binding the policy does nothing; with one it refuses
    let configmaps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), "default");
    let cm = |name: &str| -> k8s_openapi::api::core::v1::ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
    };
    configmaps
        .create(&PostParams::default(), &cm("forbidden"))
        .await
        .unwrap();
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "metadata": {"name": "b"}, "spec": {"policyName": "p", "validationActions": ["Deny"]},
    }))
    .unwrap();
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let err = api_err(
        configmaps
            .create(&PostParams::default(), &cm("forbidden"))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422, "admission runs before the conflict: {err:?}");
    assert!(
        err.message
            .ends_with("denied request: failed expression: object.metadata.name != 'forbidden'"),
        "{}",
        err.message
    );
}

/// A rendered object's `labels`.
fn labels(o: &Value) -> &serde_json::Map<String, Value> {
    o["metadata"]["labels"].as_object().unwrap()
}

#[test]
fn the_chart_renders_the_policy_unless_disabled() {
    let r = render(json!({}));
    let p = r
        .get("ValidatingAdmissionPolicy", POLICY)
        .expect("the policy");
    let b = r
        .get("ValidatingAdmissionPolicyBinding", POLICY)
        .expect("its binding");
    let deployment = r
        .get("Deployment", "ss-secretsync")
        .expect("the Deployment");
    for o in [p, b] {
        assert_eq!(o["apiVersion"], "admissionregistration.k8s.io/v1");
        assert!(o["metadata"].get("namespace").is_none(), "cluster-scoped");
        assert_eq!(labels(o), labels(deployment), "the chart's common labels");
    }
    assert_eq!(p["spec"]["failurePolicy"], "Fail");
    assert_eq!(
        p["spec"]["matchConstraints"],
        json!({"resourceRules": [{"apiGroups": ["secretsync.dev"], "apiVersions": ["*"],
               "operations": ["CREATE", "UPDATE"], "resources": ["secretsources"]}]})
    );
    let v = &p["spec"]["validations"][0];
    assert_eq!(
        v["expression"],
        "!has(object.spec.kubernetes) || !has(object.spec.kubernetes.namespace) || object.spec.kubernetes.namespace == object.metadata.namespace"
    );
    assert_eq!(v["reason"], "Invalid");
    assert_eq!(
        b["spec"],
        json!({"policyName": POLICY, "validationActions": ["Deny"]})
    );

    let off = json!({"admissionPolicy": {"enabled": false}});
    let r = render(off.clone());
    assert!(r.of_kind("ValidatingAdmissionPolicy").is_empty());
    assert!(r.of_kind("ValidatingAdmissionPolicyBinding").is_empty());
    for values in [json!({}), off] {
        let messages = chart::lint(&values).unwrap_or_else(|e| panic!("lint: {e}"));
        let errors: Vec<_> = messages.iter().filter(|m| m.severity >= 3).collect();
        assert!(errors.is_empty(), "helm lint with {values}: {errors:?}");
    }
}

#[tokio::test]
async fn the_test_environment_installs_the_policy_with_the_operator() {
    let env = TestEnv::start().await.unwrap();
    let identity = env
        .operator_identity(WatchScope::Namespace, &json!({}))
        .await
        .unwrap();
    let name = format!("{}-secretsync-source-namespace", identity.release);
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(env.client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(env.client.clone());
    assert!(policies.get_opt(&name).await.unwrap().is_some());
    let binding = bindings.get(&name).await.unwrap();
    assert_eq!(binding.spec.policy_name, name);
}
