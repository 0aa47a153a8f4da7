//! ValidatingAdmissionPolicies: the fake serves them, with the defaults and checks of a
//! real server, and enforces them on writes.

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use kube::api::{Api, PostParams};
use kube::discovery::Discovery;
use serde_json::json;
use support::{api_err, setup};

mod support;

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
