//! RBAC: service-account tokens are authorized against the Roles, ClusterRoles and bindings
//! stored in the fake, like a real API server (verbs, the create check of an apply that
//! creates, resourceNames, subresources, namespaces), and refused with its 403 messages.

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenReview};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::{DynamicObject, GroupVersionKind};
use secretsync_testkit::{FakeApiServer, kubeconfig_with_token};
use serde_json::json;

async fn client_with_token(server: &FakeApiServer, token: &str) -> kube::Client {
    let kc =
        kube::config::Kubeconfig::from_yaml(&kubeconfig_with_token(&server.url(), token)).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

async fn token_for(admin: &kube::Client, ns: &str, sa: &str) -> String {
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), ns);
    let req: TokenRequest = serde_json::from_value(json!({"spec": {}})).unwrap();
    let issued = sas
        .create_token_request(sa, &PostParams::default(), &req)
        .await
        .unwrap();
    issued.status.unwrap().token.unwrap()
}

async fn apply(admin: &kube::Client, manifest: serde_json::Value) {
    let types = manifest.clone();
    let (av, kind) = (
        types["apiVersion"].as_str().unwrap(),
        types["kind"].as_str().unwrap(),
    );
    let (group, version) = av.split_once('/').unwrap_or(("", av));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (ar, caps) = kube::discovery::pinned_kind(admin, &gvk).await.unwrap();
    let name = manifest["metadata"]["name"].as_str().unwrap().to_owned();
    let api: Api<DynamicObject> = match manifest["metadata"]["namespace"].as_str() {
        Some(ns) if caps.scope == kube::discovery::Scope::Namespaced => {
            Api::namespaced_with(admin.clone(), ns, &ar)
        }
        _ => Api::all_with(admin.clone(), &ar),
    };
    api.patch(
        &name,
        &PatchParams::apply("test").force(),
        &Patch::Apply(&manifest),
    )
    .await
    .unwrap();
}

fn api_error(e: kube::Error) -> (u16, String, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason, s.message),
        other => panic!("not an API error: {other}"),
    }
}

const USER: &str = "system:serviceaccount:ops:op";

/// A fake with namespaces `ops` and `shop`, service account `ops/op` bound to:
/// - Role `shop/reader`: get Secret `key` (by name), list/watch ConfigMaps, patch Secrets;
/// - ClusterRole `lister`: list Deployments cluster-wide, patch `things/status`.
async fn setup() -> (FakeApiServer, kube::Client, kube::Client) {
    let server = FakeApiServer::start().await.unwrap();
    let admin = server.client().await.unwrap();
    for ns in ["ops", "shop"] {
        apply(
            &admin,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await;
    }
    apply(&admin, json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "op", "namespace": "ops"}})).await;
    apply(
        &admin,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": "reader", "namespace": "shop"},
               "rules": [
                   {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["key"], "verbs": ["get"]},
                   {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list", "watch"]},
                   {"apiGroups": [""], "resources": ["secrets"], "verbs": ["patch"]},
               ]}),
    )
    .await;
    apply(
        &admin,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "reader", "namespace": "shop"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
               "subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": "ops"}]}),
    )
    .await;
    apply(
        &admin,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": "lister"},
               "rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["list"]}]}),
    )
    .await;
    apply(
        &admin,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "op-lister"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "lister"},
               "subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": "ops"}]}),
    )
    .await;
    let token = token_for(&admin, "ops", "op").await;
    let user = client_with_token(&server, &token).await;
    (server, admin, user)
}

fn secret(name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "shop"},
           "data": {"k": "dg=="}})
}

#[tokio::test]
async fn verbs_names_and_namespaces_are_enforced_with_real_messages() {
    let (_server, admin, user) = setup().await;
    let secrets: Api<Secret> = Api::namespaced(user.clone(), "shop");
    // Allowed by name: the object is absent, so 404, not 403.
    let (code, reason, _) = api_error(secrets.get("key").await.unwrap_err());
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
    // Another name.
    let (code, reason, message) = api_error(secrets.get("other").await.unwrap_err());
    assert_eq!((code, reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        message,
        format!(
            "secrets \"other\" is forbidden: User \"{USER}\" cannot get resource \"secrets\" in API group \"\" in the namespace \"shop\""
        )
    );
    // A list has no name, so a resourceNames rule never allows it.
    let (code, _, message) = api_error(secrets.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(code, 403);
    assert_eq!(
        message,
        format!(
            "secrets is forbidden: User \"{USER}\" cannot list resource \"secrets\" in API group \"\" in the namespace \"shop\""
        )
    );
    // Namespaced grants stop at their namespace.
    let cms: Api<ConfigMap> = Api::namespaced(user.clone(), "shop");
    assert!(cms.list(&ListParams::default()).await.is_ok());
    let elsewhere: Api<ConfigMap> = Api::namespaced(user.clone(), "ops");
    let (code, _, message) = api_error(elsewhere.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(code, 403);
    assert!(message.ends_with("in the namespace \"ops\""), "{message}");
    let all: Api<ConfigMap> = Api::all(user.clone());
    let (code, _, message) = api_error(all.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(code, 403);
    assert!(message.ends_with("at the cluster scope"), "{message}");
    // A ClusterRoleBinding grants in every namespace and cluster-wide.
    let deploys: Api<k8s_openapi::api::apps::v1::Deployment> = Api::all(user.clone());
    assert!(deploys.list(&ListParams::default()).await.is_ok());
    let deploys: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(user.clone(), "ops");
    assert!(deploys.list(&ListParams::default()).await.is_ok());
    // Discovery is open to every authenticated user (bootstrap policy).
    assert!(user.apiserver_version().await.is_ok());
    assert!(user.list_api_groups().await.is_ok());
    // The admin is allowed everything.
    assert!(
        Api::<Secret>::all(admin)
            .list(&ListParams::default())
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn an_apply_that_creates_needs_create_as_well_as_patch() {
    let (_server, admin, user) = setup().await;
    let secrets: Api<Secret> = Api::namespaced(user.clone(), "shop");
    let pp = PatchParams::apply("secretsync").force();
    // patch alone: applying a Secret that does not exist is refused as a create.
    let (code, reason, message) = api_error(
        secrets
            .patch("db", &pp, &Patch::Apply(&secret("db")))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (403, "Forbidden"));
    assert_eq!(message, "secrets \"db\" is forbidden: ");
    assert!(
        Api::<Secret>::namespaced(admin.clone(), "shop")
            .get_opt("db")
            .await
            .unwrap()
            .is_none(),
        "nothing was created"
    );
    // Once it exists, patch is enough.
    Api::<Secret>::namespaced(admin.clone(), "shop")
        .patch("db", &pp, &Patch::Apply(&secret("db")))
        .await
        .unwrap();
    secrets
        .patch("db", &pp, &Patch::Apply(&secret("db")))
        .await
        .unwrap();
    // Granting create makes the creating apply pass.
    apply(
        &admin,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": "creator", "namespace": "shop"},
               "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}]}),
    )
    .await;
    apply(
        &admin,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "creator", "namespace": "shop"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "creator"},
               "subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": "ops"}]}),
    )
    .await;
    secrets
        .patch("new", &pp, &Patch::Apply(&secret("new")))
        .await
        .unwrap();
    // A plain POST needs create too, and has no name for resourceNames to match.
    let cms: Api<ConfigMap> = Api::namespaced(user, "shop");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "c"}})).unwrap();
    let (code, _, message) = api_error(cms.create(&PostParams::default(), &cm).await.unwrap_err());
    assert_eq!(code, 403);
    assert!(
        message.contains("cannot create resource \"configmaps\""),
        "{message}"
    );
}

#[tokio::test]
async fn subresources_need_their_own_rules() {
    let (_server, admin, user) = setup().await;
    let sas: Api<ServiceAccount> = Api::namespaced(user.clone(), "shop");
    apply(&admin, json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader", "namespace": "shop"}})).await;
    let req: TokenRequest = serde_json::from_value(json!({"spec": {}})).unwrap();
    let (code, _, message) = api_error(
        sas.create_token_request("reader", &PostParams::default(), &req)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 403);
    assert_eq!(
        message,
        format!(
            "serviceaccounts \"reader\" is forbidden: User \"{USER}\" cannot create resource \"serviceaccounts/token\" in API group \"\" in the namespace \"shop\""
        )
    );
    apply(
        &admin,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": "tokens", "namespace": "shop"},
               "rules": [{"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]}]}),
    )
    .await;
    apply(
        &admin,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "tokens", "namespace": "shop"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tokens"},
               "subjects": [{"kind": "Group", "name": "system:serviceaccounts:ops"}]}),
    )
    .await;
    assert!(
        sas.create_token_request("reader", &PostParams::default(), &req)
            .await
            .is_ok()
    );
    // The grant covers only the subresource: the service accounts themselves stay closed.
    let (code, _, _) = api_error(sas.get("reader").await.unwrap_err());
    assert_eq!(code, 403);

    // TokenReview (what Vault's Kubernetes auth calls) needs system:auth-delegator.
    let tr: TokenReview = serde_json::from_value(json!({"spec": {"token": "x"}})).unwrap();
    let reviews: Api<TokenReview> = Api::all(user.clone());
    let (code, _, message) = api_error(
        reviews
            .create(&PostParams::default(), &tr)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 403);
    assert!(
        message.contains(
            "\"tokenreviews\" in API group \"authentication.k8s.io\" at the cluster scope"
        ),
        "{message}"
    );
    apply(
        &admin,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "op-delegator"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
               "subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": "ops"}]}),
    )
    .await;
    assert!(reviews.create(&PostParams::default(), &tr).await.is_ok());
}

#[tokio::test]
async fn unknown_and_invalidated_tokens_are_unauthorized() {
    let (server, admin, user) = setup().await;
    let stranger = client_with_token(&server, "not-a-token").await;
    let (code, reason, _) = api_error(stranger.apiserver_version().await.unwrap_err());
    assert_eq!((code, reason.as_str()), (401, "Unauthorized"));
    assert!(user.apiserver_version().await.is_ok());
    Api::<ServiceAccount>::namespaced(admin, "ops")
        .delete("op", &DeleteParams::default())
        .await
        .unwrap();
    let (code, _, _) = api_error(user.apiserver_version().await.unwrap_err());
    assert_eq!(
        code, 401,
        "a deleted service account's token is no longer valid"
    );
}

#[tokio::test]
async fn requests_are_recorded_with_the_user_who_made_them() {
    let (server, _admin, user) = setup().await;
    server.reset_counts();
    let cms: Api<ConfigMap> = Api::namespaced(user, "shop");
    cms.list(&ListParams::default()).await.unwrap();
    let _ = Api::<ConfigMap>::namespaced(cms.into_client(), "ops")
        .list(&ListParams::default())
        .await;
    // Refused requests are requests too.
    assert_eq!(server.count("list", "configmaps"), 2);
    // Every client's requests since the reset: only the service account's.
    assert_eq!(
        server.users_by_agent("").into_iter().collect::<Vec<_>>(),
        vec![USER.to_string()]
    );
}
