//! `secretsync render` on every example whose backend the test suite has: file, env,
//! templating and the data-shaping examples (dockerconfigjson, tls-bundle, json-config,
//! template-from) offline; Vault token/AppRole against the real OpenBao server and AWS (IRSA,
//! static keys + AssumeRole, Parameter Store) against the real moto server started by
//! `make test`, Kubernetes Secrets from the input files,
//! with the examples' server addresses pointed at them. Vault Kubernetes auth needs a
//! cluster and is covered by the end-to-end tests instead.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use secretsync_testkit::aws::{emulator_config, put_parameter};
use serde_json::json;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn required_env(name: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| {
            panic!("{name} is not set: run the tests with `make test` (or scripts/test-servers.sh)")
        })
}

/// Runs render and returns the Secret manifests it printed, failing on any error.
fn render_docs(args: &[&str], env: &[(&str, &str)]) -> Vec<serde_json::Value> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_secretsync"));
    cmd.arg("render").args(args).current_dir(root());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "render {args:?} failed: {stderr}");
    serde_yaml::Deserializer::from_slice(&out.stdout)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .filter(|v: &serde_json::Value| !v.is_null())
        .collect()
}

/// The (namespace, name) of each rendered Secret, sorted.
fn locations(docs: &[serde_json::Value]) -> Vec<(String, String)> {
    let mut at: Vec<(String, String)> = docs
        .iter()
        .map(|d| {
            let m = &d["metadata"];
            (
                m["namespace"].as_str().unwrap().to_string(),
                m["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    at.sort();
    at
}

/// Runs render and returns (secret name → key → decoded value), failing on any error.
fn render(args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let mut secrets = serde_json::Map::new();
    for v in render_docs(args, env) {
        let mut data = serde_json::Map::new();
        for (k, b64) in v["data"].as_object().unwrap() {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.as_str().unwrap())
                .unwrap();
            data.insert(k.clone(), json!(String::from_utf8(bytes).unwrap()));
        }
        secrets.insert(
            v["metadata"]["name"].as_str().unwrap().to_string(),
            data.into(),
        );
    }
    secrets.into()
}

/// Renders the manifests `files` with Files sources read below `file_root`.
fn render_files(files: &[&str], file_root: &str) -> serde_json::Value {
    let mut args = vec!["-f"];
    args.extend_from_slice(files);
    args.extend(["--file-root", file_root]);
    render(&args, &[])
}

/// The ClusterSecretBinding example stamps its SecretBinding into the two Namespace
/// manifests labelled `registry: internal` (not into `marketing`), each reading the
/// ClusterSecretSource that admits them.
#[test]
fn cluster_binding_example_renders_one_secret_per_selected_namespace() {
    let docs = render_docs(
        &[
            "-f",
            "examples/cluster-binding/",
            "--file-root",
            "examples/cluster-binding/root",
        ],
        &[],
    );
    let at = locations(&docs);
    assert_eq!(
        at,
        [
            ("shop-backend".to_string(), "registry-pull".to_string()),
            ("shop-frontend".to_string(), "registry-pull".to_string()),
        ]
    );
    for d in &docs {
        assert_eq!(d["type"], "kubernetes.io/dockerconfigjson");
        let b64 = d["data"][".dockerconfigjson"].as_str().unwrap();
        let json = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert!(v["auths"].is_object(), "{v}");
    }
}

/// A binding in a namespace a ClusterSecretSource does not admit fails with
/// SourceNotAllowed, naming the source and namespace; nothing is printed for it.
#[test]
fn render_refuses_a_namespace_the_cluster_source_does_not_admit() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("all.yaml"),
        r#"apiVersion: v1
kind: Namespace
metadata: {name: marketing}
---
apiVersion: secretsync.dev/v1alpha1
kind: SecretBinding
metadata: {name: pull, namespace: marketing}
spec:
  sourceRef: {kind: ClusterSecretSource, name: registry-files}
  data: [{secretKey: x, remoteRef: {key: dockerconfigjson}}]
"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_secretsync"))
        .args([
            "render",
            "-f",
            "examples/cluster-binding/cluster-source.yaml",
            "-f",
        ])
        .arg(dir.path())
        .args(["--file-root", "examples/cluster-binding/root"])
        .current_dir(root())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "render should fail: {stderr}");
    assert!(
        stderr.contains("SourceNotAllowed")
            && stderr.contains("registry-files")
            && stderr.contains("marketing"),
        "{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "nothing rendered for a refused binding"
    );
}

/// kubernetes-secrets: a ClusterSecretSource copies an `infra` Secret into both admitted
/// namespaces, and a SecretSource shapes a Secret of its own namespace, all from the Secrets
/// given in the input files.
#[test]
fn kubernetes_secrets_example_reads_the_given_secrets() {
    let docs = render_docs(&["-f", "examples/kubernetes-secrets"], &[]);
    let seen = locations(&docs);
    let want = [
        ("payments", "registry-ca"),
        ("shop", "orders-db-url"),
        ("shop", "registry-ca"),
    ]
    .map(|(n, s)| (n.to_string(), s.to_string()));
    assert_eq!(seen, want);
    let s = render(&["-f", "examples/kubernetes-secrets"], &[]);
    assert!(
        s["registry-ca"]["ca.crt"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----"),
        "{s}"
    );
    assert_eq!(
        s["orders-db-url"]["url"],
        "postgres://orders:example-password@orders-db.shop.svc:5432/orders"
    );
}

#[test]
fn offline_examples() {
    let s = render(&["-f", "examples/env/"], &[("SHOP_DB_PASSWORD", "s3cret")]);
    assert_eq!(s["shop-db-password"]["password"], "s3cret");

    let s = render_files(
        &["examples/file/source.yaml", "examples/file/binding.yaml"],
        "examples/file/root",
    );
    assert_eq!(s["shop-config"]["api-key"], "demo-api-key");
    assert_eq!(s["shop-config"]["db-password"], "demo-file-password");
    assert_eq!(s["shop-config"]["user"], "shop");

    let s = render_files(&["examples/templating/"], "examples/templating/root");
    assert_eq!(
        s["shop-database"]["DATABASE_URL"],
        "postgres://shop:demo-template-password@postgres.shop.svc:5432/shop"
    );
    assert_eq!(s["shop-database"].as_object().unwrap().len(), 2);
}

/// Copies an example, pointing it at the test server, and appends extra manifests.
fn patched(example: &str, from: &str, to: &str, extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join(example)).unwrap();
    assert!(text.contains(from), "{example} no longer contains {from:?}");
    let text = format!("{}\n---\n{extra}", text.replace(from, to));
    std::fs::write(dir.path().join("example.yaml"), text).unwrap();
    dir
}

async fn vault(method: reqwest::Method, path: &str, body: serde_json::Value) -> serde_json::Value {
    let resp = reqwest::Client::new()
        .request(
            method,
            format!("{}/v1/{path}", required_env("SECRETSYNC_TEST_BAO_ADDR")),
        )
        .header("X-Vault-Token", required_env("SECRETSYNC_TEST_BAO_TOKEN"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert!(
        status.is_success() || text.contains("path is already in use"),
        "{path}: {status} {text}"
    );
    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
}

/// Field `field` of the data a Vault request (with an empty body) answers with.
async fn vault_data(method: reqwest::Method, path: &str, field: &str) -> String {
    vault(method, path, json!({})).await["data"][field]
        .as_str()
        .unwrap()
        .to_string()
}

/// A Secret manifest `name` in namespace `shop` with `string_data` (a YAML flow map).
fn secret_manifest(name: &str, string_data: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: shop}}\nstringData: {string_data}\n"
    )
}

#[tokio::test]
async fn vault_examples_against_openbao() {
    let addr = required_env("SECRETSYNC_TEST_BAO_ADDR");
    let token = required_env("SECRETSYNC_TEST_BAO_TOKEN");
    let post = reqwest::Method::POST;
    // vault-token: KV v2 at the dev server's `secret/` mount.
    vault(
        post.clone(),
        "secret/data/apps/shop/database/creds",
        json!({"data": {"username": "shop", "password": "example-vault-pw"}}),
    )
    .await;
    let dir = patched(
        "examples/vault-token/vault-token.yaml",
        "https://vault.example:8200",
        &addr,
        &secret_manifest("vault-token", &format!("{{token: {token}}}")),
    );
    let s = render(&["-f", dir.path().to_str().unwrap()], &[]);
    assert_eq!(s["shop-db"]["password"], "example-vault-pw");
    assert_eq!(s["shop-db"]["username"], "shop");

    // vault-approle: KV v1 mount `kv`, AppRole login, find over nested keys.
    vault(
        post.clone(),
        "sys/mounts/kv",
        json!({"type": "kv", "options": {"version": "1"}}),
    )
    .await;
    vault(post.clone(), "kv/payments/stripe", json!({"key": "sk"})).await;
    vault(post.clone(), "kv/payments/eu/adyen", json!({"key": "ak"})).await;
    vault(post.clone(), "sys/auth/approle", json!({"type": "approle"})).await;
    vault(
        reqwest::Method::PUT,
        "sys/policies/acl/example-approle",
        json!({"policy": "path \"kv/*\" { capabilities = [\"read\", \"list\"] }"}),
    )
    .await;
    vault(
        post.clone(),
        "auth/approle/role/example-shop",
        json!({"token_policies": "example-approle", "token_ttl": "10m"}),
    )
    .await;
    let role = "auth/approle/role/example-shop";
    let role_id = vault_data(reqwest::Method::GET, &format!("{role}/role-id"), "role_id").await;
    let secret_id = vault_data(post.clone(), &format!("{role}/secret-id"), "secret_id").await;
    let dir = patched(
        "examples/vault-approle/vault-approle.yaml",
        "https://vault.example:8200",
        &addr,
        &secret_manifest("approle", &format!("{{secret-id: {secret_id}}}")),
    );
    let file = dir.path().join("example.yaml");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("7f3f2c9e-0000-4000-8000-000000000000", &role_id);
    std::fs::write(&file, text).unwrap();
    let s = render(&["-f", dir.path().to_str().unwrap()], &[]);
    assert_eq!(s["shop-payments"]["payments_stripe"], r#"{"key":"sk"}"#);
    assert_eq!(s["shop-payments"]["payments_eu_adyen"], r#"{"key":"ak"}"#);
}

/// A Secrets Manager client of moto at `endpoint` in `region`.
fn aws_client(endpoint: &str, region: &str) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(&emulator_config(endpoint, region, "AKIDEXAMPLES"))
}

/// Renders AWS example `example` against moto: the example's `region: R` line gains moto's
/// endpoint, and an `aws-creds` Secret holds the static keys `access_key_id`.
fn render_with_static_keys(
    example: &str,
    region: &str,
    endpoint: &str,
    access_key_id: &str,
) -> serde_json::Value {
    let dir = patched(
        example,
        &format!("region: {region}"),
        &format!("region: {region}\n    endpoint: {endpoint}"),
        &secret_manifest(
            "aws-creds",
            &format!("{{access-key-id: {access_key_id}, secret-access-key: x}}"),
        ),
    );
    render(&["-f", dir.path().to_str().unwrap()], &[])
}

#[tokio::test]
async fn aws_examples_against_moto() {
    let endpoint = required_env("SECRETSYNC_TEST_MOTO_ENDPOINT");
    // aws-irsa: default chain (here: environment keys), AWSPREVIOUS after a rotation.
    let eu = aws_client(&endpoint, "eu-west-1");
    let name = "prod/shop/stripe";
    if eu.describe_secret().secret_id(name).send().await.is_err() {
        let versions = [r#"{"api_key":"old-key"}"#, r#"{"api_key":"new-key"}"#];
        eu.create_secret()
            .name(name)
            .secret_string(versions[0])
            .send()
            .await
            .unwrap();
        // The second version makes the first AWSPREVIOUS.
        let put = eu.put_secret_value().secret_id(name);
        put.secret_string(versions[1]).send().await.unwrap();
    }
    let dir = patched(
        "examples/aws-irsa/aws-irsa.yaml",
        "region: eu-west-1",
        &format!("region: eu-west-1\n    endpoint: {endpoint}"),
        "",
    );
    let s = render(
        &["-f", dir.path().to_str().unwrap()],
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDIRSA"),
            ("AWS_SECRET_ACCESS_KEY", "x"),
        ],
    );
    assert_eq!(s["shop-stripe"]["api-key"], "new-key");
    assert_eq!(s["shop-stripe"]["previous-api-key"], "old-key");

    // aws-static-keys: keys from a Secret, AssumeRole (moto's STS), find.
    let us = aws_client(&endpoint, "us-east-1");
    for (n, v) in [("shop/db", "db-pw"), ("shop/api", "api-key")] {
        let _ = us.create_secret().name(n).secret_string(v).send().await;
    }
    let s = render_with_static_keys(
        "examples/aws-static-keys/aws-static-keys.yaml",
        "us-east-1",
        &endpoint,
        "AKIDSTATIC",
    );
    assert_eq!(s["shop-aws"]["shop_db"], "db-pw");
    assert_eq!(s["shop-aws"]["shop_api"], "api-key");
}

/// aws-parameter-store: SecureString decrypted, a label pin, `property` on a JSON String
/// parameter, and `find` over a path (GetParametersByPath), all through `render`.
#[tokio::test]
async fn aws_parameter_store_example_against_moto() {
    use aws_sdk_ssm::types::ParameterType;
    let endpoint = required_env("SECRETSYNC_TEST_MOTO_ENDPOINT");
    let ssm = aws_sdk_ssm::Client::new(&emulator_config(&endpoint, "eu-west-1", "AKIDEXAMPLES"));
    let put = |name, kind, value| put_parameter(&ssm, name, kind, value);
    let old = put("/shop/db/password", ParameterType::SecureString, "old-pw").await;
    put("/shop/db/password", ParameterType::SecureString, "new-pw").await;
    // Moves the label if a previous run of this test set it.
    ssm.label_parameter_version()
        .name("/shop/db/password")
        .parameter_version(old)
        .labels("previous")
        .send()
        .await
        .unwrap();
    put(
        "/shop/db/config",
        ParameterType::String,
        r#"{"username":"shop-user"}"#,
    )
    .await;
    put("/shop/feature/checkout", ParameterType::String, "on").await;
    put("/shop/feature/regions", ParameterType::StringList, "eu,us").await;

    let s = render_with_static_keys(
        "examples/aws-parameter-store/aws-parameter-store.yaml",
        "eu-west-1",
        &endpoint,
        "AKIDSSM",
    );
    assert_eq!(s["shop-db"]["password"], "new-pw");
    assert_eq!(s["shop-db"]["previous-password"], "old-pw");
    assert_eq!(s["shop-db"]["username"], "shop-user");
    assert_eq!(s["shop-db"]["feature_checkout"], "on");
    assert_eq!(s["shop-db"]["feature_regions"], "eu,us");
}

/// The bytes behind a Secret manifest's `data` entry.
fn data_bytes(secret: &serde_json::Value, key: &str) -> Vec<u8> {
    let b64 = secret["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("no data key {key:?} in {secret}"));
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

/// Renders one example folder, reading files below its `root/`: the one Secret printed,
/// and what render wrote on stderr.
fn render_example(example: &str) -> (serde_json::Value, String) {
    let dir = format!("examples/{example}/");
    let root_dir = format!("examples/{example}/root");
    let out = Command::new(env!("CARGO_BIN_EXE_secretsync"))
        .args(["render", "-f", &dir, "--file-root", &root_dir])
        .current_dir(root())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "render {example} failed: {stderr}");
    let mut docs: Vec<serde_json::Value> = serde_yaml::Deserializer::from_slice(&out.stdout)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .filter(|v: &serde_json::Value| !v.is_null())
        .collect();
    assert_eq!(docs.len(), 1, "{example}: one Secret expected");
    (docs.remove(0), stderr)
}

/// `.dockerconfigjson` from a user name and password: valid JSON, `auth` is base64 of
/// `user:password`, the Secret has the image-pull type and only that key.
#[test]
fn dockerconfigjson_example() {
    let (s, _) = render_example("dockerconfigjson");
    assert_eq!(s["type"], "kubernetes.io/dockerconfigjson");
    assert_eq!(s["data"].as_object().unwrap().len(), 1);
    let cfg: serde_json::Value =
        serde_json::from_slice(&data_bytes(&s, ".dockerconfigjson")).unwrap();
    let login = &cfg["auths"]["registry.example.com"];
    assert_eq!(login["username"], "shop-ci");
    assert_eq!(login["password"], "demo-registry-password");
    let auth = base64::engine::general_purpose::STANDARD
        .decode(login["auth"].as_str().unwrap())
        .unwrap();
    assert_eq!(auth, b"shop-ci:demo-registry-password");
}

/// A kubernetes.io/tls Secret from a base64 PEM bundle: decoded fields, leaf then chain
/// in `tls.crt`, the key in `tls.key`, and the templated fingerprint annotation.
#[test]
fn tls_bundle_example() {
    let (s, _) = render_example("tls-bundle");
    assert_eq!(s["type"], "kubernetes.io/tls");
    let keys: Vec<&String> = s["data"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["tls.crt", "tls.key"]);
    let crt = String::from_utf8(data_bytes(&s, "tls.crt")).unwrap();
    assert!(crt.starts_with("-----BEGIN CERTIFICATE-----\n"), "{crt}");
    assert_eq!(
        crt.matches("-----BEGIN CERTIFICATE-----").count(),
        2,
        "{crt}"
    );
    let key = String::from_utf8(data_bytes(&s, "tls.key")).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{key}");
    let fingerprint = s["metadata"]["annotations"]["shop.example/certificate-sha256"]
        .as_str()
        .unwrap();
    assert_eq!(fingerprint.len(), 64);
    assert!(fingerprint.bytes().all(|b| b.is_ascii_hexdigit()));
    // The operator's own marks are still there.
    assert_eq!(s["metadata"]["labels"]["secretsync.dev/managed"], "true");
}

/// A JSON config file from several keys, with an optional key that does not exist yet:
/// the Secret renders without it (the template's default fills in) and render notes it.
#[test]
fn json_config_example() {
    let (s, stderr) = render_example("json-config");
    let keys: Vec<&String> = s["data"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["config.json"]);
    let cfg: serde_json::Value = serde_json::from_slice(&data_bytes(&s, "config.json")).unwrap();
    assert_eq!(
        cfg,
        json!({
            "database": {
                "host": "postgres.shop.svc",
                "port": 5432,
                "user": "shop",
                "password": "demo-json-password"
            },
            "payments": {"apiKey": "demo-payment-key"},
            "newCheckout": false
        })
    );
    let version = s["metadata"]["labels"]["shop.example/config-version"]
        .as_str()
        .unwrap();
    assert_eq!(version.len(), 12);
    assert!(
        stderr.contains("optional keys not found (left out): new_checkout"),
        "{stderr}"
    );
}

/// Templates from a ConfigMap given to render with `-f`: each listed key renders the
/// Secret key of its name, the inline `REDIS_URL` wins over the ConfigMap's, and with the
/// default `mergePolicy: Replace` only the templated keys are written.
#[test]
fn template_from_example() {
    let (s, _) = render_example("template-from");
    let keys: Vec<&String> = s["data"].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["DATABASE_URL", "REDIS_URL", "application.properties"]
    );
    let text = |k: &str| String::from_utf8(data_bytes(&s, k)).unwrap();
    assert_eq!(
        text("DATABASE_URL"),
        "postgres://shop:demo-templatefrom-password@postgres.shop.svc:5432/shop"
    );
    assert_eq!(
        text("REDIS_URL"),
        "redis://:demo-redis-password@redis.shop.svc:6379/3",
        "the binding's inline template wins"
    );
    assert_eq!(
        text("application.properties").lines().collect::<Vec<_>>(),
        [
            "spring.datasource.url=jdbc:postgresql://postgres.shop.svc:5432/shop",
            "spring.datasource.username=shop",
            "spring.datasource.password=demo-templatefrom-password",
        ]
    );
}
