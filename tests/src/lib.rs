//! Support library of the end-to-end tests in `tests/e2e_*.rs`: the operator binary, run
//! under the Helm chart's RBAC with a token of its ServiceAccount; setup through the
//! client (so every test runs unchanged on a real cluster); reading bindings and Secrets;
//! backend test data. Servers come from `scripts/test-servers.sh` (`make test`).

pub mod cluster;
pub mod operator;

pub use cluster::*;
pub use operator::*;
pub use secretsync_testkit::bao::{BaoAdmin, count_audit_requests, shared_audit_log};
pub use secretsync_testkit::harness::{
    BaoServer, ChildProcess, TestEnv, WatchScope, free_port, wait_for, wait_until,
};
pub use secretsync_testkit::names::{required_env, unique};

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
    let resp = reqwest::Client::new()
        .post(format!("{}/", endpoint.trim_end_matches('/')))
        .header("Content-Type", "application/x-amz-json-1.1")
        .header("X-Amz-Target", "secretsmanager.CreateSecret")
        // moto takes the region and service from the credential scope; the signature is
        // not checked.
        .header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDSECRETSYNCE2E/20260101/us-east-1/secretsmanager/aws4_request, SignedHeaders=host, Signature=00",
        )
        .body(serde_json::json!({"Name": name, "SecretString": value}).to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("moto CreateSecret {name}: {e}"));
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    assert!(
        status.is_success(),
        "moto CreateSecret {name}: {status} {body}"
    );
}
