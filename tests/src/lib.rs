//! Support library of the end-to-end tests in `tests/e2e_*.rs`: the operator binary, run
//! under the Helm chart's RBAC with a token of its ServiceAccount; setup through the
//! client (so every test runs unchanged on a real cluster); reading bindings and Secrets;
//! backend test data. Servers come from `scripts/test-servers.sh` (`make test`).

pub mod cluster;
pub mod manifests;
pub mod operator;

pub use cluster::*;
pub use manifests::{
    binding, deployment_reading, file_source, namespace_manifest, secret, source, stream,
};
pub use operator::*;
pub use secretsync_testkit::bao::{BaoAdmin, count_audit_requests, shared_audit_log};
pub use secretsync_testkit::harness::{ChildProcess, free_port, wait_for, wait_until};
pub use secretsync_testkit::names::{required_env, unique};
pub use secretsync_testkit::{BaoServer, TestEnv, WatchScope};

use std::time::Duration;

/// Default deadline of a wait.
pub const WAIT: Duration = Duration::from_secs(30);

/// GET `url` over plain HTTP: (status, body), `None` when nothing answered.
pub async fn http_get(url: &str) -> Option<(u16, String)> {
    let resp = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .ok()?
        .get(url)
        .send()
        .await
        .ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.ok()?))
}

/// moto (AWS emulator): creates a string secret through the Secrets Manager JSON API.
pub async fn moto_create_secret(endpoint: &str, name: &str, value: &str) {
    moto_call(
        endpoint,
        "secretsmanager.CreateSecret",
        "secretsmanager",
        serde_json::json!({"Name": name, "SecretString": value}),
    )
    .await;
}

/// One call of moto's JSON protocol: `target` (`X-Amz-Target`) of `service`; returns the
/// answer's JSON (`null` when empty).
async fn moto_call(
    endpoint: &str,
    target: &str,
    service: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    // SQS speaks JSON 1.0, Secrets Manager and SSM 1.1.
    let content_type = if service == "sqs" {
        "application/x-amz-json-1.0"
    } else {
        "application/x-amz-json-1.1"
    };
    let resp = reqwest::Client::new()
        .post(format!("{}/", endpoint.trim_end_matches('/')))
        .header("Content-Type", content_type)
        .header("X-Amz-Target", target)
        // moto takes the region and service from the credential scope; the signature is
        // not checked.
        .header(
            "Authorization",
            format!("AWS4-HMAC-SHA256 Credential=AKIDSECRETSYNCE2E/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=00"),
        )
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("moto {target}: {e}"));
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    assert!(status.is_success(), "moto {target}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
}

/// moto: a new version of secret `name` holding `value` (`PutSecretValue`).
pub async fn moto_put_secret_value(endpoint: &str, name: &str, value: &str) {
    moto_call(
        endpoint,
        "secretsmanager.PutSecretValue",
        "secretsmanager",
        serde_json::json!({"SecretId": name, "SecretString": value}),
    )
    .await;
}

/// moto: creates SQS queue `name`; returns its URL.
pub async fn moto_create_queue(endpoint: &str, name: &str) -> String {
    let out = moto_call(
        endpoint,
        "AmazonSQS.CreateQueue",
        "sqs",
        serde_json::json!({"QueueName": name}),
    )
    .await;
    out["QueueUrl"]
        .as_str()
        .unwrap_or_else(|| panic!("CreateQueue answered {out}"))
        .to_string()
}

/// moto: sends `body` to the queue at `url`.
pub async fn moto_send_message(endpoint: &str, url: &str, body: &str) {
    moto_call(
        endpoint,
        "AmazonSQS.SendMessage",
        "sqs",
        serde_json::json!({"QueueUrl": url, "MessageBody": body}),
    )
    .await;
}

/// moto: (visible, in flight) message counts of the queue at `url`.
pub async fn moto_queue_counts(endpoint: &str, url: &str) -> (u64, u64) {
    let out = moto_call(
        endpoint,
        "AmazonSQS.GetQueueAttributes",
        "sqs",
        serde_json::json!({"QueueUrl": url, "AttributeNames": ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]}),
    )
    .await;
    let n = |k: &str| {
        out["Attributes"][k]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("GetQueueAttributes answered {out}"))
    };
    (
        n("ApproximateNumberOfMessages"),
        n("ApproximateNumberOfMessagesNotVisible"),
    )
}

/// moto: creates or overwrites (a new version) parameter `name` of `type_` (`String`,
/// `StringList`, `SecureString`) through the SSM JSON API.
pub async fn moto_put_parameter(endpoint: &str, name: &str, value: &str, type_: &str) {
    moto_call(
        endpoint,
        "AmazonSSM.PutParameter",
        "ssm",
        serde_json::json!({"Name": name, "Value": value, "Type": type_, "Overwrite": true}),
    )
    .await;
}

/// Standard base64 of a string (Secret `data` in test manifests).
pub fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A fresh KV v2 mount on the shared OpenBao (named after `tag`) and a token that may only
/// read it: (mount, token).
pub async fn vault_mount_and_reader(bao: &BaoAdmin, tag: &str) -> (String, String) {
    let mount = unique(tag);
    bao.enable_kv(&mount, 2).await;
    let policy = unique(&format!("{tag}-read"));
    bao.read_policy(&policy, &mount).await;
    let token = bao.token_with_policy(&policy).await;
    (mount, token)
}

/// `b` reading keys `k0`… of `n` Vault keys `shared/k0`…, each from its property `v`.
pub fn shared_keys(b: manifests::Binding, n: usize) -> manifests::Binding {
    (0..n).fold(b, |b, i| {
        b.property(&format!("k{i}"), &format!("shared/k{i}"), "v")
    })
}

/// YAML of a Secret `vault-token` holding `token` and a SecretSource `vault` reading KV v2
/// `mount` at `addr` with it; `spec_extra` is added to the source's spec (e.g.
/// `"  cache: {ttl: 2s}\n"`).
pub fn vault_source_yaml(addr: &str, mount: &str, token: &str, spec_extra: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: vault-token}}
data: {{token: {token}}}
---
apiVersion: secretsync.dev/v1alpha1
kind: SecretSource
metadata: {{name: vault}}
spec:
{spec_extra}  vault:
    server: {addr}
    mount: {mount}
    auth: {{token: {{secretRef: {{name: vault-token, key: token}}}}}}
"#,
        token = b64(token),
    )
}

/// The `aws-creds` Secret of moto's static test keys (moto checks no signature).
pub fn moto_creds_secret() -> String {
    manifests::secret(
        "aws-creds",
        &format!(
            "{{access-key-id: {}, secret-access-key: {}}}",
            b64("AKIDSECRETSYNCE2E"),
            b64("e2e-secret-access-key")
        ),
    )
}

/// The spec of an `aws` source on moto with prefix `prefix`, the keys of
/// [`moto_creds_secret`], and `extra` (e.g. `"service: ParameterStore, "`) inside the `aws`
/// block.
pub fn moto_source_spec(prefix: &str, endpoint: &str, extra: &str) -> String {
    format!(
        "prefix: \"{prefix}\", aws: {{region: us-east-1, endpoint: \"{endpoint}\", {extra}auth: {{secretRef: \
         {{name: aws-creds, accessKeyIdKey: access-key-id, secretAccessKeyKey: secret-access-key}}}}}}"
    )
}
