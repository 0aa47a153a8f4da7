//! Shared helpers of the end-to-end tests: the operator binary and its processes, applying
//! manifests (works on the fake and on a real cluster), reading bindings and Secrets, and
//! test-data setup on the real OpenBao and moto servers started by
//! `scripts/test-servers.sh`. Include with `mod support;`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use secretsync_api::SecretBinding;
use secretsync_testkit::harness::{ChildProcess, TestEnv, free_port, wait_until};
use serde_json::{Value, json};

/// Default deadline of a wait.
pub const WAIT: Duration = Duration::from_secs(30);

/// The operator binary: `SECRETSYNC_BIN`, else the workspace's debug build (built once per
/// test binary, on demand).
pub fn binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("SECRETSYNC_BIN") {
            return PathBuf::from(p);
        }
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "secretsync", "--bin", "secretsync"])
            .current_dir(&root)
            .status()
            .expect("cargo build");
        assert!(status.success());
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        target.join("debug").join("secretsync")
    })
    .clone()
}

/// How to start an operator process.
#[derive(Debug, Clone)]
pub struct OperatorOpts {
    /// Leader-election identity (`POD_NAME`).
    pub identity: String,
    /// `--file-root`.
    pub file_root: Option<PathBuf>,
    /// Extra arguments of `secretsync run`.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub envs: Vec<(String, String)>,
    /// `RUST_LOG`.
    pub rust_log: String,
}

impl Default for OperatorOpts {
    fn default() -> Self {
        OperatorOpts {
            identity: "op-1".into(),
            file_root: None,
            args: Vec::new(),
            envs: Vec::new(),
            rust_log: "info".into(),
        }
    }
}

/// A running `secretsync run`, killed on drop.
pub struct Operator {
    /// The process (captured output).
    pub process: ChildProcess,
    /// `127.0.0.1:PORT` of `/metrics`.
    pub metrics_addr: String,
    /// `127.0.0.1:PORT` of `/healthz`, `/readyz`.
    pub health_addr: String,
}

impl Operator {
    /// Starts the operator scoped to the environment's namespace (which is also its
    /// operator namespace).
    pub fn start(env: &TestEnv, opts: &OperatorOpts) -> Operator {
        let metrics = free_port().unwrap();
        let health = free_port().unwrap();
        let mut cmd = std::process::Command::new(binary());
        cmd.args([
            "run",
            "--log-format",
            "text",
            "--operator-namespace",
            &env.namespace,
            "--namespace",
            &env.namespace,
        ])
        .arg(format!("--metrics-addr=127.0.0.1:{metrics}"))
        .arg(format!("--health-addr=127.0.0.1:{health}"))
        .args(&opts.args)
        .env("KUBECONFIG", &env.kubeconfig)
        .env("POD_NAME", &opts.identity)
        .env("RUST_LOG", &opts.rust_log)
        .env("NO_COLOR", "1");
        if let Some(root) = &opts.file_root {
            cmd.arg(format!("--file-root={}", root.display()));
        }
        for (k, v) in &opts.envs {
            cmd.env(k, v);
        }
        Operator {
            process: ChildProcess::spawn(cmd).unwrap(),
            metrics_addr: format!("127.0.0.1:{metrics}"),
            health_addr: format!("127.0.0.1:{health}"),
        }
    }

    /// Captured output so far.
    pub fn output(&self) -> String {
        self.process.output()
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        http_get(&format!("http://{}/metrics", self.metrics_addr))
            .await
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.process.id().to_string()])
            .status();
    }
}

/// A fresh environment (fake API server or the real cluster) with the CRDs installed.
pub async fn env() -> TestEnv {
    let env = TestEnv::start().await.unwrap();
    env.install_crds().await.unwrap();
    env
}

/// Whether the test must skip itself because it needs the fake's fault injection or
/// request accounting; prints why.
pub fn skip_without_fake(env: &TestEnv, test: &str) -> bool {
    if env.is_fake() {
        return false;
    }
    eprintln!(
        "SKIPPED {test}: needs the fake API server's fault injection / request accounting \
         (SECRETSYNC_E2E_KUBECONFIG points at a real cluster)"
    );
    true
}

fn api_resource(api_version: &str, kind: &str) -> (ApiResource, bool) {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let (plural, namespaced) = match kind {
        "SecretSource" => ("secretsources", true),
        "SecretBinding" => ("secretbindings", true),
        "Secret" => ("secrets", true),
        "ServiceAccount" => ("serviceaccounts", true),
        "ConfigMap" => ("configmaps", true),
        "Namespace" => ("namespaces", false),
        other => panic!("apply: add {other} to the kind table"),
    };
    let gvk = GroupVersionKind::gvk(group, version, kind);
    (ApiResource::from_gvk_with_plural(&gvk, plural), namespaced)
}

/// Server-side applies (manager `e2e`, forced) every document of a YAML stream; namespaced
/// objects without a namespace land in the environment's namespace.
pub async fn apply(env: &TestEnv, yaml: &str) {
    apply_as(env, "e2e", yaml).await
}

/// [`apply`] with a chosen field manager.
pub async fn apply_as(env: &TestEnv, manager: &str, yaml: &str) {
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let v: Value = serde::Deserialize::deserialize(doc).unwrap();
        if v.is_null() {
            continue;
        }
        let obj: DynamicObject = serde_json::from_value(v.clone()).unwrap();
        let types = obj.types.clone().expect("apiVersion and kind");
        let (ar, namespaced) = api_resource(&types.api_version, &types.kind);
        let api: Api<DynamicObject> = if namespaced {
            let ns = obj
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| env.namespace.clone());
            Api::namespaced_with(env.client.clone(), &ns, &ar)
        } else {
            Api::all_with(env.client.clone(), &ar)
        };
        let name = obj.metadata.name.clone().expect("metadata.name");
        let mut body = v;
        if namespaced {
            body["metadata"]["namespace"] = json!(
                obj.metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| env.namespace.clone())
            );
        }
        api.patch(
            &name,
            &PatchParams::apply(manager).force(),
            &Patch::Apply(&body),
        )
        .await
        .unwrap_or_else(|e| panic!("applying {} {name}: {e}", types.kind));
    }
}

/// Bindings of the environment's namespace.
pub fn bindings(env: &TestEnv) -> Api<SecretBinding> {
    Api::namespaced(env.client.clone(), &env.namespace)
}

/// Secrets of the environment's namespace.
pub fn secrets(env: &TestEnv) -> Api<Secret> {
    Api::namespaced(env.client.clone(), &env.namespace)
}

/// The binding's Ready condition, if any.
pub async fn ready(env: &TestEnv, binding: &str) -> Option<Condition> {
    let b = bindings(env).get_opt(binding).await.ok()??;
    b.status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
}

/// A Secret's data as byte vectors.
pub async fn secret_data(env: &TestEnv, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
    let s = secrets(env).get_opt(name).await.ok()??;
    Some(
        s.data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect(),
    )
}

/// Expected Secret data from string pairs.
pub fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect()
}

/// Printable form of Secret data for assertion messages.
pub fn show(d: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, String> {
    d.iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

/// Waits until binding `binding` is Ready=True for its current generation and its target
/// Secret `secret` holds exactly `want`; panics with the operator's output otherwise.
pub async fn wait_synced(
    env: &TestEnv,
    op: &Operator,
    binding: &str,
    secret: &str,
    want: &BTreeMap<String, Vec<u8>>,
) {
    let res = wait_until(WAIT, || async {
        let b = bindings(env).get_opt(binding).await.ok()??;
        let st = b.status.as_ref()?;
        let ok = st.observed_generation == b.metadata.generation
            && st
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True" && c.reason == "Synced");
        // The status describes the Secret's current data (it is written after the Secret).
        let s = secrets(env).get_opt(secret).await.ok()??;
        let hash_ok = s
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("secretsync.dev/data-hash"))
            == st.data_hash.as_ref();
        let got: BTreeMap<String, Vec<u8>> = s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        (ok && hash_ok && &got == want).then_some(())
    })
    .await;
    if res.is_err() {
        panic!(
            "binding {binding}: not synced to {:?} within {WAIT:?}; Ready={:?}; Secret={:?}\n--- operator output ---\n{}",
            show(want),
            ready(env, binding).await,
            secret_data(env, secret).await.as_ref().map(show),
            op.output()
        );
    }
}

/// Waits until binding `binding` is Ready=False with `reason`; returns the condition.
pub async fn wait_reason(env: &TestEnv, op: &Operator, binding: &str, reason: &str) -> Condition {
    let res = wait_until(WAIT, || async {
        ready(env, binding)
            .await
            .filter(|c| c.status == "False" && c.reason == reason)
    })
    .await;
    match res {
        Ok(c) => c,
        Err(_) => panic!(
            "binding {binding}: no Ready=False/{reason} within {WAIT:?}; Ready={:?}\n--- operator output ---\n{}",
            ready(env, binding).await,
            op.output()
        ),
    }
}

/// A name no other test (or earlier run against the same servers) uses.
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

/// An environment variable the test needs; panics with instructions when unset, so tests
/// never pass silently without their servers.
pub fn required_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().to_string(),
        _ => panic!(
            "{name} is not set: run the e2e tests with \
             `scripts/test-servers.sh cargo test -p secretsync-e2e` (or `make test`)"
        ),
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// GET `url`: (status, body), `None` when nothing answered.
pub async fn http_get(url: &str) -> Option<(u16, String)> {
    let resp = http().get(url).send().await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.ok()?))
}

/// Test-data setup on an OpenBao server through its HTTP API.
#[derive(Clone)]
pub struct Bao {
    pub addr: String,
    pub token: String,
    http: reqwest::Client,
}

impl Bao {
    /// The shared server of `scripts/test-servers.sh`.
    pub fn shared() -> Bao {
        Bao::new(
            &required_env("SECRETSYNC_TEST_BAO_ADDR"),
            &required_env("SECRETSYNC_TEST_BAO_TOKEN"),
        )
    }

    pub fn new(addr: &str, token: &str) -> Bao {
        Bao {
            addr: addr.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: http(),
        }
    }

    /// Any call: (status, JSON body or Null); `None` when the server did not answer.
    pub async fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Option<(u16, Value)> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(method, format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", &self.token);
        if let Some(body) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(serde_json::to_vec(&body).unwrap());
        }
        let resp = req.send().await.ok()?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.ok()?;
        Some((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// A call that must succeed (2xx).
    pub async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, value) = self
            .try_call(method, path, body)
            .await
            .unwrap_or_else(|| panic!("OpenBao at {} did not answer {method} {path}", self.addr));
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

    /// Writes a KV v2 secret.
    pub async fn put_v2(&self, mount: &str, path: &str, data: Value) {
        self.ok(
            "POST",
            &format!("{mount}/data/{path}"),
            Some(json!({ "data": data })),
        )
        .await;
    }

    /// A read-only policy on a KV v2 mount.
    pub async fn read_policy(&self, name: &str, mount: &str) {
        let hcl = format!(
            "path \"{mount}/data/*\" {{ capabilities = [\"read\"] }}\n\
             path \"{mount}/metadata/*\" {{ capabilities = [\"read\", \"list\"] }}\n"
        );
        self.ok(
            "PUT",
            &format!("sys/policies/acl/{name}"),
            Some(json!({ "policy": hcl })),
        )
        .await;
    }

    /// A token with `policy`.
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
}

/// Counts the audit log's request entries for exactly `path` (e.g. `kv/data/app/db`).
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

/// moto (AWS emulator): creates a string secret through the Secrets Manager JSON API.
pub async fn moto_create_secret(endpoint: &str, name: &str, value: &str) {
    let resp = http()
        .post(format!("{}/", endpoint.trim_end_matches('/')))
        .header("Content-Type", "application/x-amz-json-1.1")
        .header("X-Amz-Target", "secretsmanager.CreateSecret")
        // moto takes the region and service from the credential scope; the signature is
        // not checked.
        .header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDSECRETSYNCE2E/20260101/us-east-1/secretsmanager/aws4_request, SignedHeaders=host, Signature=00",
        )
        .body(json!({"Name": name, "SecretString": value}).to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    assert!(
        status.is_success(),
        "moto CreateSecret {name}: {status} {body}"
    );
}

/// A private OpenBao dev server (`SECRETSYNC_BAO_BIN`, else `bao` on PATH) for tests that
/// take the backend down; killed on drop.
pub struct PrivateBao {
    pub process: ChildProcess,
    pub admin: Bao,
    _home: tempfile::TempDir,
}

impl PrivateBao {
    pub async fn start() -> PrivateBao {
        let bin = secretsync_testkit::harness::find_binary("SECRETSYNC_BAO_BIN", "bao")
            .unwrap_or_else(|| {
                panic!(
                    "no bao binary: set SECRETSYNC_BAO_BIN (scripts/test-servers.sh does) or \
                     put bao on PATH"
                )
            });
        let home = tempfile::tempdir().unwrap();
        let port = free_port().unwrap();
        let mut cmd = std::process::Command::new(bin);
        cmd.args([
            "server",
            "-dev",
            "-dev-root-token-id=root",
            &format!("-dev-listen-address=127.0.0.1:{port}"),
        ])
        // The dev server writes a token helper file into $HOME.
        .env("HOME", home.path());
        let process = ChildProcess::spawn(cmd).unwrap();
        let bao = PrivateBao {
            process,
            admin: Bao::new(&format!("http://127.0.0.1:{port}"), "root"),
            _home: home,
        };
        let ready = wait_until(WAIT, || async {
            let (status, _) = bao.admin.try_call("GET", "sys/health", None).await?;
            (status == 200).then_some(())
        })
        .await;
        assert!(
            ready.is_ok(),
            "private OpenBao did not start:\n{}",
            bao.process.output()
        );
        bao
    }

    /// The unseal key the dev server printed.
    pub fn unseal_key(&self) -> String {
        self.process
            .output()
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("Unseal Key:")
                    .map(|k| k.trim().to_string())
            })
            .expect("the dev server prints its unseal key")
    }

    pub async fn seal(&self) {
        self.admin.ok("PUT", "sys/seal", None).await;
    }

    pub async fn unseal(&self) {
        let key = self.unseal_key();
        let resp = self
            .admin
            .ok("PUT", "sys/unseal", Some(json!({ "key": key })))
            .await;
        assert_eq!(resp["sealed"], json!(false), "{resp}");
    }
}

/// Fake API server only: every (verb, resource) the operator requested — told apart from
/// the test's own client and from OpenBao by its `User-Agent` — is listed in
/// `rbac::API_ACCESS`, the table the Helm chart's RBAC rules are checked against. A call
/// missing there would be forbidden in a cluster installed from the chart.
pub fn assert_operator_calls_in_rbac_table(env: &TestEnv) {
    let Ok(fake) = env.fake() else {
        return;
    };
    let calls = fake.calls_by_agent("secretsync/");
    assert!(
        !calls.is_empty(),
        "no request carried the operator's User-Agent"
    );
    let missing: Vec<_> = calls
        .iter()
        .filter(|(verb, resource)| {
            !secretsync_controller::rbac::API_ACCESS
                .iter()
                .any(|a| a.resource == resource && a.verbs.contains(&verb.as_str()))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "operator API calls missing from rbac::API_ACCESS (and so from the chart's RBAC): {missing:?}; all calls: {calls:?}"
    );
}
