//! Helpers for tests against the real OpenBao dev server started by
//! `scripts/test-servers.sh` (`make test`). Include from a test file with
//! `mod vault_support;`.
//!
//! - [`bao_addr`], [`root_token`], [`audit_log`]: the shared server; they panic with
//!   instructions when unset, so tests never pass silently without a server.
//! - [`unique`]: a fresh name per call, for mounts, keys and policies, so tests share one
//!   server in parallel.
//! - [`Admin`]: test-data setup through the HTTP API (mounts, KV writes, policies, tokens,
//!   AppRole).
//! - [`MapCredentials`]: a `Credentials` provider answering from a map.
//! - [`count_audit_requests`]: counts requests the server received for one path (from its
//!   file audit device), e.g. to prove concurrent reads were coalesced into one.
//! - [`PrivateBao`]: a private dev server (killed on drop) for outage tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use secretsync_api::{SecretKeySelector, VaultAppRoleAuth, VaultAuth, VaultSource, VaultTokenAuth};
use secretsync_backends::{BackendError, Credentials, SecretValue};
use serde_json::{Value, json};

pub fn required_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: these tests need a real OpenBao server. Run them with \
             `make test` or `scripts/test-servers.sh cargo test -p secretsync-backends \
             --test vault`"
        ),
    }
}

pub fn bao_addr() -> String {
    required_env("SECRETSYNC_TEST_BAO_ADDR")
}

pub fn root_token() -> String {
    required_env("SECRETSYNC_TEST_BAO_TOKEN")
}

pub fn audit_log() -> PathBuf {
    PathBuf::from(required_env("SECRETSYNC_TEST_BAO_AUDIT_LOG"))
}

/// A name no other test (or earlier run against the same server) uses.
pub fn unique(tag: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{tag}-{}-{:x}-{}",
        std::process::id(),
        nanos & 0xffff_ffff,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Admin access to a server through its HTTP API (test setup only).
#[derive(Clone)]
pub struct Admin {
    pub http: reqwest::Client,
    pub addr: String,
    pub token: String,
    pub namespace: Option<String>,
}

impl Admin {
    pub fn shared() -> Self {
        Admin::new(&bao_addr(), &root_token())
    }

    pub fn new(addr: &str, token: &str) -> Self {
        Admin {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            addr: addr.trim_end_matches('/').to_string(),
            token: token.to_string(),
            namespace: None,
        }
    }

    pub fn in_namespace(&self, ns: &str) -> Self {
        Admin {
            namespace: Some(ns.to_string()),
            ..self.clone()
        }
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(method, format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", &self.token);
        if let Some(ns) = &self.namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        if let Some(body) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(serde_json::to_vec(&body).unwrap());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    pub async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, value) = self.call(method, path, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path} answered {status}: {value}"
        );
        value
    }

    pub async fn enable_kv(&self, mount: &str, version: u8) {
        self.ok(
            "POST",
            &format!("sys/mounts/{mount}"),
            Some(json!({"type": "kv", "options": {"version": version.to_string()}})),
        )
        .await;
    }

    pub async fn put_v2(&self, mount: &str, path: &str, data: Value) -> u64 {
        let resp = self
            .ok(
                "POST",
                &format!("{mount}/data/{path}"),
                Some(json!({ "data": data })),
            )
            .await;
        resp["data"]["version"].as_u64().unwrap()
    }

    pub async fn put_v1(&self, mount: &str, path: &str, data: Value) {
        self.ok("POST", &format!("{mount}/{path}"), Some(data))
            .await;
    }

    pub async fn policy(&self, name: &str, hcl: &str) {
        self.ok(
            "PUT",
            &format!("sys/policies/acl/{name}"),
            Some(json!({ "policy": hcl })),
        )
        .await;
    }

    pub async fn token_with_policy(&self, policy: &str) -> String {
        let resp = self
            .ok(
                "POST",
                "auth/token/create",
                Some(json!({"policies": [policy], "ttl": "1h"})),
            )
            .await;
        resp["auth"]["client_token"].as_str().unwrap().to_string()
    }

    /// Enables AppRole at `mount` with a role bound to `policy`; returns (role_id, secret_id).
    pub async fn approle(
        &self,
        mount: &str,
        role: &str,
        policy: &str,
        ttl: &str,
    ) -> (String, String) {
        self.ok(
            "POST",
            &format!("sys/auth/{mount}"),
            Some(json!({"type": "approle"})),
        )
        .await;
        self.ok(
            "POST",
            &format!("auth/{mount}/role/{role}"),
            Some(json!({"token_policies": [policy], "token_ttl": ttl, "token_max_ttl": ttl})),
        )
        .await;
        let role_id = self
            .ok("GET", &format!("auth/{mount}/role/{role}/role-id"), None)
            .await["data"]["role_id"]
            .as_str()
            .unwrap()
            .to_string();
        let secret_id = self
            .ok("POST", &format!("auth/{mount}/role/{role}/secret-id"), None)
            .await["data"]["secret_id"]
            .as_str()
            .unwrap()
            .to_string();
        (role_id, secret_id)
    }
}

/// Credentials answered from a map of (Secret name, key) → value.
#[derive(Default)]
pub struct MapCredentials {
    pub secrets: HashMap<(String, String), String>,
    pub vault_token: Option<String>,
}

impl MapCredentials {
    pub fn with(name: &str, key: &str, value: &str) -> Self {
        let mut c = MapCredentials::default();
        c.secrets
            .insert((name.to_string(), key.to_string()), value.to_string());
        c
    }
}

#[async_trait]
impl Credentials for MapCredentials {
    async fn secret_value(&self, name: &str, key: &str) -> Result<SecretValue, BackendError> {
        self.secrets
            .get(&(name.to_string(), key.to_string()))
            .map(|v| SecretValue::from(v.as_str()))
            .ok_or_else(|| {
                BackendError::invalid_config(format!("Secret {name:?} (key {key:?}) not found"))
            })
    }

    async fn vault_token_fallback(&self) -> Option<SecretValue> {
        self.vault_token.as_deref().map(SecretValue::from)
    }

    async fn service_account_token(
        &self,
        _service_account: Option<&str>,
        _audiences: &[String],
    ) -> Result<SecretValue, BackendError> {
        Err(BackendError::invalid_config(
            "no service account token in tests",
        ))
    }
}

pub fn token_auth() -> VaultAuth {
    VaultAuth {
        token: Some(VaultTokenAuth {
            secret_ref: SecretKeySelector {
                name: "vault-token".into(),
                key: "token".into(),
            },
        }),
        ..Default::default()
    }
}

pub fn source(server: &str, mount: &str, kv_version: u8, auth: VaultAuth) -> VaultSource {
    VaultSource {
        server: server.to_string(),
        namespace: None,
        mount: mount.to_string(),
        kv_version,
        ca_bundle: None,
        auth,
    }
}

/// Counts the audit log's "request" entries whose path is exactly `path` (for example
/// `secret/data/app/db`). Request entries are written before the request is handled, so
/// every request answered so far is counted. Use a key no other test touches.
///
/// For the cache's coalescing test: N concurrent reads of one key through `SourceCache`
/// should show up here as one request (path `<mount>/data/<key>` for KV v2).
pub fn count_audit_requests(log: &Path, path: &str) -> usize {
    let Ok(content) = std::fs::read_to_string(log) else {
        return 0;
    };
    content
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|entry| {
            entry["type"] == "request" && entry["request"]["path"].as_str() == Some(path)
        })
        .count()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private OpenBao dev server, killed when dropped.
pub struct PrivateBao {
    pub child: Child,
    pub addr: String,
    pub dir: tempfile::TempDir,
}

impl PrivateBao {
    pub async fn start(tls: bool) -> PrivateBao {
        let bin = required_env("SECRETSYNC_BAO_BIN");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("bao.log")).unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("server")
            .arg("-dev")
            .arg("-dev-root-token-id=root")
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            // Keep the dev server's token helper file out of the real home directory.
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if tls {
            cmd.arg("-dev-tls")
                .arg(format!("-dev-tls-cert-dir={}", dir.path().display()));
        }
        let child = cmd.spawn().unwrap();
        let scheme = if tls { "https" } else { "http" };
        let server = PrivateBao {
            child,
            addr: format!("{scheme}://127.0.0.1:{port}"),
            dir,
        };
        server.wait_ready(tls).await;
        server
    }

    pub async fn wait_ready(&self, tls: bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(2));
            // With -dev-tls the CA file appears once the server has generated it.
            if tls && let Ok(pem) = std::fs::read(self.dir.path().join("vault-ca.pem")) {
                let certs = reqwest::Certificate::from_pem_bundle(&pem).unwrap_or_default();
                builder = builder.tls_certs_only(certs);
            }
            if let Ok(client) = builder.build() {
                let ready = client
                    .get(format!("{}/v1/sys/health", self.addr))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ready {
                    return;
                }
            }
            let log = std::fs::read_to_string(self.dir.path().join("bao.log")).unwrap_or_default();
            assert!(
                Instant::now() < deadline,
                "private OpenBao did not start at {}; log:\n{log}",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("vault-ca.pem")).unwrap()
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateBao {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn approle_auth(mount: &str, role_id: &str) -> VaultAuth {
    VaultAuth {
        app_role: Some(VaultAppRoleAuth {
            role_id: role_id.to_string(),
            secret_ref: SecretKeySelector {
                name: "approle".into(),
                key: "secret-id".into(),
            },
            mount_path: mount.to_string(),
        }),
        ..Default::default()
    }
}
