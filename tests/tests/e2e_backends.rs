//! End-to-end, one test per backend: the real `secretsync run` binary turns a binding into
//! the expected Secret bytes with Ready=True/Synced. env, file (Dir, Dotenv, Yaml, Json),
//! Vault KV v2 (token auth, Kubernetes auth against the API server's TokenReview), AWS
//! Secrets Manager and Parameter Store (moto, static credentials from a Secret; a
//! Parameter Store rotation restarts a Deployment once).

use base64::Engine as _;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::api::PostParams;
use secretsync_e2e::*;
use serde_json::json;

#[tokio::test]
async fn env_source_reads_only_allowed_variables() {
    let env = env().await;
    let op = Operator::start(
        &env,
        &OperatorOpts {
            args: vec!["--env-allow=E2E_APP_*".into()],
            envs: vec![
                ("E2E_APP_DB_PASSWORD".into(), "env-pw-1".into()),
                ("E2E_APP_API_TOKEN".into(), "env-token-2".into()),
                ("E2E_OTHER_SECRET".into(), "forbidden-value-77".into()),
            ],
            ..Default::default()
        },
    )
    .await;
    let yaml = stream(&[
        source("env-app", "prefix: E2E_APP_, env: {}"),
        binding("from-env", "env-app")
            .refresh("2s")
            .key("password", "db/password")
            .key("token", "api-token")
            .yaml(),
        source("env-other", "prefix: E2E_OTHER_, env: {}"),
        binding("not-allowed", "env-other")
            .key("s", "secret")
            .yaml(),
    ]);
    apply(&env, &yaml).await;
    let want = [("password", "env-pw-1"), ("token", "env-token-2")];
    wait_synced_own(&env, &op, "from-env", &want).await;
    let c = wait_reason(&env, &op, "not-allowed", "AccessDenied").await;
    assert!(c.message.contains("E2E_OTHER_SECRET"), "{c:?}");
    assert!(
        secrets(&env)
            .get_opt("not-allowed")
            .await
            .unwrap()
            .is_none()
    );
    let out = op.output();
    assert!(
        !out.contains("env-pw-1") && !out.contains("forbidden-value-77"),
        "{out}"
    );
}

#[tokio::test]
async fn file_source_in_each_format() {
    let env = env().await;
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("dir/db")).unwrap();
    std::fs::write(r.join("dir/db/password"), "dir-pw").unwrap();
    std::fs::write(r.join("dir/token"), "dir-token").unwrap();
    std::fs::write(
        r.join("app.env"),
        "# comment\nexport DB_USER=dotenv-user\nDB_PASSWORD='dotenv pw'\n\nPORT=\"5432\"\n",
    )
    .unwrap();
    std::fs::write(
        r.join("app.yaml"),
        "db_user: yaml-user\nport: 5432\ncreds:\n  password: yaml-pw\n",
    )
    .unwrap();
    std::fs::write(
        r.join("app.json"),
        r#"{"db_user": "json-user", "enabled": true, "creds": {"password": "json-pw"}}"#,
    )
    .unwrap();
    let op = Operator::start(
        &env,
        &OperatorOpts {
            file_root: Some(r.to_path_buf()),
            ..Default::default()
        },
    )
    .await;
    let p = |f: &str| r.join(f).display().to_string();
    let yaml = stream(&[
        file_source("dir", p("dir"), "Dir"),
        file_source("dotenv", p("app.env"), "Dotenv"),
        file_source("yaml", p("app.yaml"), "Yaml"),
        file_source("json", p("app.json"), "Json"),
        binding("dir", "dir")
            .key("password", "db/password")
            .key("token", "token")
            .yaml(),
        binding("dotenv", "dotenv")
            .key("user", "DB_USER")
            .key("password", "DB_PASSWORD")
            .key("port", "PORT")
            .yaml(),
        binding("yaml", "yaml")
            .key("user", "db_user")
            .key("port", "port")
            .property("password", "creds", "password")
            .yaml(),
        binding("json", "json")
            .key("user", "db_user")
            .key("enabled", "enabled")
            .property("password", "creds", "password")
            .yaml(),
    ]);
    apply(&env, &yaml).await;
    let want = [("password", "dir-pw"), ("token", "dir-token")];
    wait_synced_own(&env, &op, "dir", &want).await;
    let want = [
        ("user", "dotenv-user"),
        ("password", "dotenv pw"),
        ("port", "5432"),
    ];
    wait_synced_own(&env, &op, "dotenv", &want).await;
    let want = [
        ("user", "yaml-user"),
        ("port", "5432"),
        ("password", "yaml-pw"),
    ];
    wait_synced_own(&env, &op, "yaml", &want).await;
    let want = [
        ("user", "json-user"),
        ("enabled", "true"),
        ("password", "json-pw"),
    ];
    wait_synced_own(&env, &op, "json", &want).await;
}

/// A KV v2 mount with `app/db` and a read policy; returns (mount, policy).
async fn vault_data(bao: &BaoAdmin, password: &str) -> (String, String) {
    let mount = unique("e2e-kv");
    bao.enable_kv(&mount, 2).await;
    bao.put_v2(
        &mount,
        "app/db",
        json!({"username": "vault-user", "password": password}),
    )
    .await;
    let policy = unique("e2e-read");
    bao.read_policy(&policy, &mount).await;
    (mount, policy)
}

/// A binding `name` on source `name`: `password` from `app/db`, and all of `app/db`.
fn vault_binding(name: &str) -> String {
    binding(name, name)
        .property("password", "app/db", "password")
        .spec("dataFrom: [{extract: {key: app/db}}]")
        .yaml()
}

#[tokio::test]
async fn vault_kv2_with_token_auth() {
    let env = env().await;
    let bao = BaoAdmin::shared();
    let (mount, policy) = vault_data(&bao, "vault-token-pw").await;
    let token = bao.token_with_policy(&policy).await;
    let op = Operator::start(&env, &OperatorOpts::default()).await;
    let yaml = stream(&[
        vault_source_yaml(&bao.addr, &mount, &token, ""),
        vault_binding("vault"),
    ]);
    apply(&env, &yaml).await;
    let want = [("password", "vault-token-pw"), ("username", "vault-user")];
    wait_synced_own(&env, &op, "vault", &want).await;
    let sources: Api<secretsync_api::SecretSource> =
        Api::namespaced(env.client.clone(), &env.namespace);
    let src = sources.get("vault").await.unwrap();
    let c = &src.status.unwrap().conditions;
    assert!(
        c.iter()
            .any(|c| c.type_ == "Ready" && c.status == "True" && c.reason == "Valid"),
        "{c:?}"
    );
}

/// A self-signed CA certificate (no key kept) for OpenBao's config when the API server is
/// the plain-HTTP fake.
const UNUSED_CA: &str = "-----BEGIN CERTIFICATE-----\n\
MIIBnTCCAUOgAwIBAgIUY0q/Wptgq5y6JDQHzAWumkpAx9QwCgYIKoZIzj0EAwIw\n\
IzEhMB8GA1UEAwwYc2VjcmV0c3luYy1lMmUtdW51c2VkLWNhMCAXDTI2MTEyMzE5\n\
NDMyOFoYDzIxMjYxMDMwMTk0MzI4WjAjMSEwHwYDVQQDDBhzZWNyZXRzeW5jLWUy\n\
ZS11bnVzZWQtY2EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAScrsd+pNur8ReN\n\
gf24yN2dfS7vRdssQpnEGM2LkizryIOWYLaobQYSZnDoYpGqqp6hzC/HLn9ovTxy\n\
qLkuYGgvo1MwUTAdBgNVHQ4EFgQU8iFJzDdTop2Ztm8bxC2Stv1AK1owHwYDVR0j\n\
BBgwFoAU8iFJzDdTop2Ztm8bxC2Stv1AK1owDwYDVR0TAQH/BAUwAwEB/zAKBggq\n\
hkjOPQQDAgNIADBFAiA682gkZqNtDy4yT0FK4ltDomkCmETLPqM7DZW7/KZaewIh\n\
AMw+kDKZMsBhmTtQFjCdNNRLdIjhGDjzAPiHqiLhryoM\n\
-----END CERTIFICATE-----\n";

/// `kubernetes_host` and CA for OpenBao: the fake's URL, or the real cluster's from the
/// kubeconfig.
async fn api_server_for_bao(env: &TestEnv) -> (String, Option<String>) {
    if let Some(fake) = &env.server {
        return (fake.url(), None);
    }
    let kc = kube::config::Kubeconfig::read_from(&env.kubeconfig).unwrap();
    let ctx_name = kc.current_context.clone().unwrap();
    let ctx = kc
        .contexts
        .iter()
        .find(|c| c.name == ctx_name)
        .and_then(|c| c.context.clone())
        .unwrap();
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == ctx.cluster)
        .and_then(|c| c.cluster.clone())
        .unwrap();
    let ca = match (
        &cluster.certificate_authority_data,
        &cluster.certificate_authority,
    ) {
        (Some(d), _) => Some(
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(d.trim())
                    .unwrap(),
            )
            .unwrap(),
        ),
        (None, Some(f)) => Some(std::fs::read_to_string(f).unwrap()),
        _ => None,
    };
    (cluster.server.unwrap(), ca)
}

#[tokio::test]
async fn vault_kv2_with_kubernetes_auth() {
    let env = env_all_namespaces().await;
    let bao = BaoAdmin::shared();
    let (mount, policy) = vault_data(&bao, "vault-k8s-pw").await;
    let ns = env.namespace.clone();
    apply(
        &env,
        r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: bao-reviewer}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: shop-reader}
"#,
    )
    .await;
    {
        // The API server only answers TokenReviews of callers allowed to make them.
        apply(
            &env,
            &format!(
                r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: {ns}-bao-reviewer}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:auth-delegator"}}
subjects: [{{kind: ServiceAccount, name: bao-reviewer, namespace: {ns}}}]
"#
            ),
        )
        .await;
    }
    // The reviewer JWT OpenBao presents to the API server's TokenReview.
    let sas: Api<ServiceAccount> = Api::namespaced(env.client.clone(), &ns);
    let req = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let reviewer: TokenRequest = sas
        .create_subresource("token", "bao-reviewer", &PostParams::default(), &req)
        .await
        .unwrap();
    let reviewer_jwt = reviewer.status.unwrap().token;
    let (host, ca) = api_server_for_bao(&env).await;
    let auth_mount = unique("e2e-k8s");
    bao.ok(
        "POST",
        &format!("sys/auth/{auth_mount}"),
        Some(json!({"type": "kubernetes"})),
    )
    .await;
    let config = json!({
        "kubernetes_host": host,
        "token_reviewer_jwt": reviewer_jwt,
        // Not running in a pod: use only what is configured here. The fake speaks plain
        // HTTP, so its CA is a placeholder OpenBao parses but never uses.
        "disable_local_ca_jwt": true,
        "kubernetes_ca_cert": ca.unwrap_or_else(|| UNUSED_CA.to_string()),
    });
    bao.ok("POST", &format!("auth/{auth_mount}/config"), Some(config))
        .await;
    bao.ok(
        "POST",
        &format!("auth/{auth_mount}/role/shop"),
        Some(json!({
            "bound_service_account_names": ["shop-reader"],
            "bound_service_account_namespaces": [ns],
            "token_policies": [policy],
            "token_ttl": "1h",
        })),
    )
    .await;

    // All namespaces, with the chart's opt-in grant for service-account tokens.
    let op = Operator::start(
        &env,
        &OperatorOpts {
            scope: WatchScope::AllNamespaces,
            chart_values: json!({"rbac": {"vaultKubernetesAuth": true}}),
            ..Default::default()
        },
    )
    .await;
    // A source `name` logging in as `service_account` with role `shop`, and its binding.
    let k8s_source_and_binding = |name: &str, service_account: &str| {
        let auth = format!(
            "kubernetes: {{role: shop, mountPath: {auth_mount}, serviceAccountName: {service_account}}}"
        );
        let spec = format!(
            "vault: {{server: \"{}\", mount: {mount}, auth: {{{auth}}}}}",
            bao.addr
        );
        stream(&[source(name, &spec), vault_binding(name)])
    };
    apply(&env, &k8s_source_and_binding("vault-k8s", "shop-reader")).await;
    let want = [("password", "vault-k8s-pw"), ("username", "vault-user")];
    wait_synced_own(&env, &op, "vault-k8s", &want).await;

    // A service account the role is not bound to is refused: the source is Ready=False
    // AccessDenied, its binding SourceNotReady naming why, and no Secret is written.
    let intruder = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: intruder}\n";
    let yaml = stream(&[
        intruder.to_string(),
        k8s_source_and_binding("vault-intruder", "intruder"),
    ]);
    apply(&env, &yaml).await;
    let c = wait_reason(&env, &op, "vault-intruder", "SourceNotReady").await;
    assert!(c.message.contains("AccessDenied"), "{c:?}");
    let sources: Api<secretsync_api::SecretSource> =
        Api::namespaced(env.client.clone(), &env.namespace);
    wait_for(WAIT, || async {
        sources
            .get_opt("vault-intruder")
            .await
            .ok()
            .flatten()
            .and_then(|s| s.status)
            .is_some_and(|st| {
                st.conditions.iter().any(|c| {
                    c.type_ == "Ready" && c.status == "False" && c.reason == "AccessDenied"
                })
            })
    })
    .await
    .expect("SecretSource vault-intruder Ready=False/AccessDenied");
    assert!(
        secrets(&env)
            .get_opt("vault-intruder")
            .await
            .unwrap()
            .is_none()
    );
    op.assert_calls_in_rbac_table(&env);
}

#[tokio::test]
async fn aws_with_static_credentials_from_a_secret() {
    let env = env().await;
    let endpoint = required_env("SECRETSYNC_TEST_MOTO_ENDPOINT");
    let prefix = format!("{}/", unique("e2e-aws"));
    moto_create_secret(&endpoint, &format!("{prefix}db/password"), "aws-pw").await;
    let creds_json = r#"{"username":"aws-user","host":"db.internal"}"#;
    moto_create_secret(&endpoint, &format!("{prefix}db/creds"), creds_json).await;
    let op = Operator::start(&env, &OperatorOpts::default()).await;
    let aws = moto_source_spec(&prefix, &endpoint, "");
    let yaml = stream(&[
        moto_creds_secret(),
        source("aws", &aws),
        binding("aws", "aws")
            .key("password", "db/password")
            .property("username", "db/creds", "username")
            .spec("dataFrom: [{find: {name: \"db/*\"}}]")
            .yaml(),
    ]);
    apply(&env, &yaml).await;
    let want = [
        ("password", "aws-pw"),
        ("username", "aws-user"),
        ("db_password", "aws-pw"),
        ("db_creds", creds_json),
    ];
    wait_synced_own(&env, &op, "aws", &want).await;
}

/// A binding over Parameter Store (a SecureString, decrypted) syncs, and a new version of
/// the parameter reaches the Secret and restarts the opted-in Deployment exactly once.
#[tokio::test]
async fn aws_parameter_store_rotation_restarts_a_deployment_once() {
    let env = env().await;
    let endpoint = required_env("SECRETSYNC_TEST_MOTO_ENDPOINT");
    let prefix = format!("/{}/", unique("e2e-ssm"));
    let name = format!("{prefix}db/password");
    moto_put_parameter(&endpoint, &name, "before", "SecureString").await;
    let aws = moto_source_spec(&prefix, &endpoint, "service: ParameterStore, ");
    let op = Operator::start(
        &env,
        &OperatorOpts {
            args: vec!["--restart-debounce=1s".into()],
            ..Default::default()
        },
    )
    .await;
    apply(
        &env,
        &stream(&[
            moto_creds_secret(),
            source("ssm", &aws),
            deployment_reading("api", "db", "password"),
            binding("db", "ssm")
                .refresh("2s")
                .key("password", "db/password")
                .yaml(),
        ]),
    )
    .await;
    wait_synced_own(&env, &op, "db", &[("password", "before")]).await;
    let deployments = env
        .api("apps/v1", "Deployment", None)
        .await
        .expect("Deployment API");
    let template_annotation = |d: &kube::api::DynamicObject, key: &str| {
        d.data["spec"]["template"]["metadata"]["annotations"][key]
            .as_str()
            .map(str::to_owned)
    };
    // The first sync records the revision without restarting anything.
    wait_revision_recorded(&deployments, &op, "api").await;
    let d = deployments.get("api").await.unwrap();
    assert_eq!(template_annotation(&d, "secretsync.dev/restartedAt"), None);
    let generation = d.metadata.generation;

    moto_put_parameter(&endpoint, &name, "after", "SecureString").await;
    wait_synced_own(&env, &op, "db", &[("password", "after")]).await;
    let restarted = wait_for(WAIT, || async {
        deployments
            .get("api")
            .await
            .is_ok_and(|d| template_annotation(&d, "secretsync.dev/restartedAt").is_some())
    })
    .await;
    assert!(
        restarted.is_ok(),
        "the rotation did not restart the Deployment\n{}",
        op.output()
    );
    let once = deployments.get("api").await.unwrap();
    assert_eq!(
        once.metadata.generation,
        generation.map(|g| g + 1),
        "one restart is one template change"
    );
    // Several refreshes later the parameter is unchanged, and so is the Deployment.
    let t0 = std::time::Instant::now();
    wait_for(WAIT, || async {
        t0.elapsed() >= std::time::Duration::from_secs(6)
    })
    .await
    .unwrap();
    let later = deployments.get("api").await.unwrap();
    assert_eq!(
        later.metadata.generation,
        once.metadata.generation,
        "restarted again without a rotation\n{}",
        op.output()
    );
    op.assert_calls_in_rbac_table(&env);
}
