//! OpenBao test-data setup: an admin client over the HTTP API (mounts, KV writes,
//! policies, tokens, AppRole), the shared server of `scripts/test-servers.sh`, request
//! counting from its audit log, and seal/unseal of a private server for outage tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{BAO_BIN_ENV, ChildProcess, find_binary, free_port, http_status, wait_until};
use crate::names::required_env;
use crate::server::TestkitError;

/// Admin access to an OpenBao server through its HTTP API (test setup only). Panics on
/// anything unexpected: a test cannot continue without its data.
#[derive(Clone, Debug)]
pub struct BaoAdmin {
    /// `http://127.0.0.1:PORT`.
    pub addr: String,
    /// The admin token.
    pub token: String,
    /// `X-Vault-Namespace`, if any.
    pub namespace: Option<String>,
    http: reqwest::Client,
}

impl BaoAdmin {
    /// The shared server started by `scripts/test-servers.sh`.
    pub fn shared() -> Self {
        BaoAdmin::new(
            &required_env("SECRETSYNC_TEST_BAO_ADDR"),
            &required_env("SECRETSYNC_TEST_BAO_TOKEN"),
        )
    }

    /// A client for `addr` with `token`.
    pub fn new(addr: &str, token: &str) -> Self {
        Self::build(addr, token, None)
    }

    /// A client for an HTTPS server whose certificate is signed by `ca_pem` (trusted
    /// instead of the system roots), e.g. [`BaoServer::start_tls`].
    pub fn with_ca(addr: &str, token: &str, ca_pem: &str) -> Self {
        Self::build(addr, token, Some(ca_pem))
    }

    fn build(addr: &str, token: &str, ca_pem: Option<&str>) -> Self {
        BaoAdmin {
            addr: addr.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            namespace: None,
            http: http_client(ca_pem, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("cannot build the OpenBao admin client: {e}")),
        }
    }

    /// The same client acting in OpenBao namespace `ns`.
    pub fn in_namespace(&self, ns: &str) -> Self {
        BaoAdmin {
            namespace: Some(ns.to_owned()),
            ..self.clone()
        }
    }

    /// Any call: (status, JSON body or `Null`); `None` when the server did not answer.
    pub async fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Option<(u16, Value)> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).ok()?;
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
                .body(body.to_string());
        }
        let resp = req.send().await.ok()?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.ok()?;
        Some((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// A call that must be answered: (status, body).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.try_call(method, path, body)
            .await
            .unwrap_or_else(|| panic!("OpenBao at {} did not answer {method} {path}", self.addr))
    }

    /// A call that must succeed (2xx); its body.
    pub async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, value) = self.call(method, path, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path} answered {status}: {value}"
        );
        value
    }

    /// Mounts a KV engine (version 1 or 2) at `mount`.
    pub async fn enable_kv(&self, mount: &str, version: u8) {
        self.ok(
            "POST",
            &format!("sys/mounts/{mount}"),
            Some(json!({"type": "kv", "options": {"version": version.to_string()}})),
        )
        .await;
    }

    /// Writes a KV v2 secret; returns its new version.
    pub async fn put_v2(&self, mount: &str, path: &str, data: Value) -> u64 {
        let resp = self
            .ok(
                "POST",
                &format!("{mount}/data/{path}"),
                Some(json!({ "data": data })),
            )
            .await;
        resp["data"]["version"].as_u64().unwrap_or_default()
    }

    /// Writes a KV v1 secret.
    pub async fn put_v1(&self, mount: &str, path: &str, data: Value) {
        self.ok("POST", &format!("{mount}/{path}"), Some(data))
            .await;
    }

    /// Writes an ACL policy.
    pub async fn policy(&self, name: &str, hcl: &str) {
        self.ok(
            "PUT",
            &format!("sys/policies/acl/{name}"),
            Some(json!({ "policy": hcl })),
        )
        .await;
    }

    /// A read-only policy on a KV v2 mount (data reads, metadata read and list).
    pub async fn read_policy(&self, name: &str, mount: &str) {
        let hcl = format!(
            "path \"{mount}/data/*\" {{ capabilities = [\"read\"] }}\n\
             path \"{mount}/metadata/*\" {{ capabilities = [\"read\", \"list\"] }}\n"
        );
        self.policy(name, &hcl).await;
    }

    /// A token with `policy`, valid for an hour.
    pub async fn token_with_policy(&self, policy: &str) -> String {
        let resp = self
            .ok(
                "POST",
                "auth/token/create",
                Some(json!({"policies": [policy], "ttl": "1h"})),
            )
            .await;
        resp["auth"]["client_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Enables AppRole at `mount` with a role bound to `policy`; (role_id, secret_id).
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
            .unwrap_or_default()
            .to_owned();
        let secret_id = self
            .ok("POST", &format!("auth/{mount}/role/{role}/secret-id"), None)
            .await["data"]["secret_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        (role_id, secret_id)
    }
}

/// An HTTP client for OpenBao that trusts exactly `ca_pem` when given and no roots
/// otherwise: plain-HTTP servers need none, and not asking for the system's roots keeps
/// client construction working on hosts without a trust store.
pub(crate) fn http_client(
    ca_pem: Option<&str>,
    timeout: Duration,
) -> Result<reqwest::Client, reqwest::Error> {
    let certs = match ca_pem {
        Some(pem) => reqwest::Certificate::from_pem_bundle(pem.as_bytes())?,
        None => Vec::new(),
    };
    reqwest::Client::builder()
        .timeout(timeout)
        .tls_certs_only(certs)
        .build()
}

/// The shared server's audit log (`SECRETSYNC_TEST_BAO_AUDIT_LOG`).
pub fn shared_audit_log() -> PathBuf {
    PathBuf::from(required_env("SECRETSYNC_TEST_BAO_AUDIT_LOG"))
}

/// Counts the audit log's request entries whose path is exactly `path` (e.g.
/// `secret/data/app/db`). Entries are written before a request is handled, so every
/// request answered so far is counted. Use paths no other test touches.
pub fn count_audit_requests(log: &Path, path: &str) -> usize {
    let Ok(content) = std::fs::read_to_string(log) else {
        return 0;
    };
    content
        .lines()
        .filter(|l| l.contains(path))
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|e| e["type"] == "request" && e["request"]["path"].as_str() == Some(path))
        .count()
}

impl BaoServer {
    /// An admin client with the root token (trusting the server's CA when it serves TLS).
    pub fn admin(&self) -> BaoAdmin {
        match self.ca_pem() {
            Some(ca) => BaoAdmin::with_ca(&self.address, &self.root_token, ca),
            None => BaoAdmin::new(&self.address, &self.root_token),
        }
    }

    /// The unseal key the dev server printed.
    pub fn unseal_key(&self) -> Option<String> {
        self.process.output().lines().find_map(|l| {
            l.trim()
                .strip_prefix("Unseal Key:")
                .map(|k| k.trim().to_owned())
        })
    }

    /// Seals the server: every read fails until [`BaoServer::unseal`].
    pub async fn seal(&self) {
        self.admin().ok("PUT", "sys/seal", None).await;
    }

    /// Unseals the server with its dev unseal key.
    pub async fn unseal(&self) {
        let key = self
            .unseal_key()
            .unwrap_or_else(|| panic!("the dev server printed no unseal key"));
        let resp = self
            .admin()
            .ok("PUT", "sys/unseal", Some(json!({ "key": key })))
            .await;
        assert_eq!(resp["sealed"], json!(false), "{resp}");
    }
}

/// An OpenBao dev server (`bao server -dev`), killed on drop.
#[derive(Debug)]
pub struct BaoServer {
    /// `http://127.0.0.1:PORT` (`https://` for [`BaoServer::start_tls`]).
    pub address: String,
    /// The root token (`root`).
    pub root_token: String,
    /// The process.
    pub process: ChildProcess,
    /// PEM of the CA the dev server generated for its certificate (TLS servers only).
    ca_pem: Option<String>,
    /// `$HOME` of the process (the dev server writes a token helper file there) and, with
    /// TLS, the folder of its generated certificates.
    _home: tempfile::TempDir,
}

/// File name of the CA certificate `bao server -dev-tls` writes into its cert dir.
const BAO_DEV_CA_FILE: &str = "vault-ca.pem";

impl BaoServer {
    /// Start a dev server on a free port and wait until `/v1/sys/health` answers 200.
    /// `Err(Unsupported)` when no `bao` binary is available.
    pub async fn start() -> Result<Self, TestkitError> {
        Self::start_with_args(&[]).await
    }

    /// Like [`BaoServer::start`], with extra arguments (e.g. `-config FILE`).
    pub async fn start_with_args(extra: &[&str]) -> Result<Self, TestkitError> {
        Self::launch(extra, false).await
    }

    /// Like [`BaoServer::start`], but serving HTTPS (`-dev-tls`) with a certificate for
    /// 127.0.0.1 signed by a CA the server generates; [`BaoServer::ca_pem`] returns that CA,
    /// and [`BaoServer::admin`] trusts it.
    pub async fn start_tls() -> Result<Self, TestkitError> {
        Self::launch(&[], true).await
    }

    /// PEM of the CA that signed the server's certificate; `None` for plain HTTP.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    async fn launch(extra: &[&str], tls: bool) -> Result<Self, TestkitError> {
        let bin = find_binary(BAO_BIN_ENV, "bao").ok_or_else(|| {
            TestkitError::Unsupported(format!(
                "no bao binary (set {BAO_BIN_ENV} or put it on PATH)"
            ))
        })?;
        let port = free_port()?;
        let listen = format!("127.0.0.1:{port}");
        let home = tempfile::tempdir()?;
        let mut cmd = Command::new(bin);
        cmd.args([
            "server",
            "-dev",
            "-dev-root-token-id=root",
            &format!("-dev-listen-address={listen}"),
        ])
        .args(extra)
        .env("HOME", home.path());
        if tls {
            cmd.arg("-dev-tls")
                .arg(format!("-dev-tls-cert-dir={}", home.path().display()));
        }
        let mut process = ChildProcess::spawn(cmd)?;
        let ca_file = home.path().join(BAO_DEV_CA_FILE);
        // Ready: `Some(ca_pem)` for TLS, `None` for plain HTTP.
        let ready = wait_until(Duration::from_secs(30), || {
            let listen = listen.clone();
            let ca_file = ca_file.clone();
            async move {
                if tls {
                    https_health(&listen, &ca_file).await
                } else {
                    (http_status(&listen, "/v1/sys/health").await == Some(200)).then_some(None)
                }
            }
        })
        .await;
        let ca_pem = match ready {
            Ok(ca_pem) if process.is_running() => ca_pem,
            _ => {
                return Err(TestkitError::Other(format!(
                    "bao did not become ready; output:\n{}",
                    process.output()
                )));
            }
        };
        let scheme = if tls { "https" } else { "http" };
        Ok(Self {
            address: format!("{scheme}://{listen}"),
            root_token: "root".into(),
            process,
            ca_pem,
            _home: home,
        })
    }
}

/// `Some(Some(ca_pem))` once `https://listen/v1/sys/health` answers 200 over TLS verified
/// with the CA in `ca_file` (which the dev server writes shortly after starting).
async fn https_health(listen: &str, ca_file: &std::path::Path) -> Option<Option<String>> {
    let pem = std::fs::read_to_string(ca_file).ok()?;
    let client = http_client(Some(&pem), Duration::from_secs(2)).ok()?;
    let resp = client
        .get(format!("https://{listen}/v1/sys/health"))
        .send()
        .await
        .ok()?;
    (resp.status().as_u16() == 200).then_some(Some(pem))
}
