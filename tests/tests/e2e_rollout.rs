//! End-to-end: rotation-driven rolling restarts. The real `secretsync run` binary under
//! the chart's RBAC against the API server and the real OpenBao dev server started by
//! `scripts/test-servers.sh`.
//!
//! Restarts are counted exactly: a workload's `metadata.generation` only moves when its
//! spec changes — minus the test's own spec edits, `generation - 1` is the number of
//! restart patches (recording a revision only touches `metadata.annotations`). On the fake
//! the request accounting also counts every patch the operator sends to workloads; on a
//! real cluster those assertions are skipped. Each test has its own namespace, Vault prefix
//! and operator, so they run in parallel.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event as KubeEvent;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use secretsync_api::SecretBinding;
use secretsync_e2e::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(40);
const REVISION: &str = "secretsync.dev/secret-revision";
const RESTARTED_AT: &str = "secretsync.dev/restartedAt";
const DATA_HASH: &str = "secretsync.dev/data-hash";

/// Starts an operator with `--restart-debounce` and `--leader-elect` as given.
async fn start(
    f: &Fixture,
    identity: &str,
    debounce: &str,
    leader_elect: bool,
    scope: WatchScope,
) -> Operator {
    Operator::start(
        &f.env,
        &OperatorOpts {
            identity: identity.into(),
            scope,
            args: vec![
                format!("--restart-debounce={debounce}"),
                format!("--leader-elect={leader_elect}"),
            ],
            ..Default::default()
        },
    )
    .await
}

// ---------------------------------------------------------------------------------------
// Fixture: namespace, Vault source, bindings, workloads

struct Fixture {
    env: TestEnv,
    bao: BaoAdmin,
    /// Vault key prefix of this test (KV v2 at mount `secret`).
    prefix: String,
    force: AtomicU64,
    skip_noted: AtomicBool,
}

impl Fixture {
    async fn new(tag: &str) -> Fixture {
        Fixture::on(tag, env().await).await
    }

    async fn on(tag: &str, env: TestEnv) -> Fixture {
        let bao = BaoAdmin::shared();
        let prefix = format!("rollout/{}/", unique(tag));
        let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.namespace);
        let mut s = Secret::default();
        s.metadata.name = Some("bao-token".into());
        s.data = Some(BTreeMap::from([(
            "token".to_string(),
            ByteString(bao.token.clone().into_bytes()),
        )]));
        secrets.create(&PostParams::default(), &s).await.unwrap();
        let f = Fixture {
            env,
            bao,
            prefix,
            force: AtomicU64::new(0),
            skip_noted: AtomicBool::new(false),
        };
        f.apply(&format!(
            r#"
apiVersion: secretsync.dev/v1alpha1
kind: SecretSource
metadata: {{name: bao}}
spec:
  prefix: "{prefix}"
  vault:
    server: "{server}"
    auth: {{token: {{secretRef: {{name: bao-token, key: token}}}}}}
"#,
            prefix = f.prefix,
            server = f.bao.addr,
        ))
        .await;
        f
    }

    fn ns(&self) -> &str {
        &self.env.namespace
    }

    async fn apply(&self, yaml: &str) {
        apply(&self.env, yaml).await
    }

    /// Writes `{password: value}` at Vault key `key` (under this test's prefix).
    async fn vault_put(&self, key: &str, value: &str) {
        let path = format!("{}{key}", self.prefix);
        self.bao
            .put_v2("secret", &path, json!({"password": value}))
            .await;
    }

    /// A binding `name` → Secret `name` with key `password` from Vault key `name`.
    async fn binding(&self, name: &str, restart: bool, refresh: &str) {
        self.apply(&format!(
            r#"
apiVersion: secretsync.dev/v1alpha1
kind: SecretBinding
metadata: {{name: {name}}}
spec:
  sourceRef: {{name: bao}}
  refreshInterval: "{refresh}"
  data:
    - secretKey: password
      remoteRef: {{key: {name}, property: password}}
  rollout: {{restart: {restart}}}
"#,
        ))
        .await;
    }

    /// Forces an immediate re-read of a binding.
    async fn force_sync(&self, binding: &str) {
        let n = self.force.fetch_add(1, Ordering::Relaxed) + 1;
        let api: Api<SecretBinding> = Api::namespaced(self.env.client.clone(), self.ns());
        let patch =
            json!({"metadata": {"annotations": {"secretsync.dev/force-sync": n.to_string()}}});
        api.patch(binding, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    /// A workload of `kind` with pod spec `pod` (JSON) and optional opt-in annotation.
    async fn workload(
        &self,
        kind: &str,
        name: &str,
        opt_in: Option<&str>,
        pod: Value,
        extra: Value,
    ) {
        let mut annotations = serde_json::Map::new();
        if let Some(v) = opt_in {
            annotations.insert("secretsync.dev/restart-on-rotation".into(), json!(v));
        }
        let mut spec = json!({
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod},
        });
        if kind == "StatefulSet" {
            spec["serviceName"] = json!(name);
        }
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                s.insert(k.clone(), v.clone());
            }
        }
        let obj = json!({
            "apiVersion": "apps/v1",
            "kind": kind,
            "metadata": {"name": name, "annotations": annotations},
            "spec": spec,
        });
        self.apply(&serde_json::to_string(&obj).unwrap()).await;
    }

    async fn object(&self, kind: &str, name: &str) -> Option<Value> {
        let api = self.env.api("apps/v1", kind, None).await.unwrap();
        let obj = api.get_opt(name).await.unwrap()?;
        Some(serde_json::to_value(obj).unwrap())
    }

    /// Restart patches a workload received: `generation - 1 - spec_edits`.
    async fn restarts(&self, kind: &str, name: &str, spec_edits: i64) -> i64 {
        let o = self.object(kind, name).await.unwrap();
        o["metadata"]["generation"].as_i64().unwrap_or(1) - 1 - spec_edits
    }

    async fn revision(&self, kind: &str, name: &str) -> Option<String> {
        let o = self.object(kind, name).await?;
        o["metadata"]["annotations"][REVISION]
            .as_str()
            .map(str::to_string)
    }

    async fn restarted_at(&self, kind: &str, name: &str) -> Option<String> {
        let o = self.object(kind, name).await?;
        o["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]
            .as_str()
            .map(str::to_string)
    }

    /// Waits until the workload's revision is recorded; returns it.
    async fn recorded(&self, kind: &str, name: &str, op: &Operator) -> String {
        wait_until(WAIT, || async { self.revision(kind, name).await })
            .await
            .unwrap_or_else(|e| panic!("{kind} {name}: no revision recorded: {e}\n{}", op.output()))
    }

    /// Waits until the workload was restarted.
    async fn restarted(&self, kind: &str, name: &str, op: &Operator) {
        wait_until(WAIT, || async { self.restarted_at(kind, name).await })
            .await
            .unwrap_or_else(|e| panic!("{kind} {name} not restarted: {e}\n{}", op.output()));
    }

    /// Patches the operator (not the test) sent to workloads: fake only (`None` on a real cluster, where
    /// every comparison of them holds trivially and is reported as skipped).
    fn workload_patches(&self) -> Option<u64> {
        if skip_quietly(&self.env, &self.skip_noted) {
            return None;
        }
        let f = self.env.fake().ok()?;
        let op = |resource| f.count_by_agent("secretsync/", "patch", resource);
        Some(op("deployments") + op("statefulsets") + op("daemonsets"))
    }

    async fn data_hash(&self, secret: &str) -> Option<String> {
        let api: Api<Secret> = Api::namespaced(self.env.client.clone(), self.ns());
        let s = api.get_opt(secret).await.ok()??;
        s.metadata.annotations?.get(DATA_HASH).cloned()
    }

    /// Waits until binding `name` synced (Secret carries a data hash) and returns the hash.
    async fn synced(&self, name: &str, op: &Operator) -> String {
        wait_until(WAIT, || async { self.data_hash(name).await })
            .await
            .unwrap_or_else(|e| panic!("{name} never synced: {e}\n{}", op.output()))
    }

    /// Rotates Vault key `name` and force-syncs its binding; waits until the Secret changed.
    async fn rotate(&self, name: &str, value: &str, op: &Operator) {
        let before = self.data_hash(name).await;
        self.vault_put(name, value).await;
        self.force_sync(name).await;
        wait_until(WAIT, || async {
            let now = self.data_hash(name).await;
            (now.is_some() && now != before).then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{name} did not rotate: {e}\n{}", op.output()));
    }

    async fn events(&self, reason: &str, regarding: &str) -> Vec<KubeEvent> {
        let api: Api<KubeEvent> = Api::namespaced(self.env.client.clone(), self.ns());
        api.list(&Default::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(regarding)
            })
            .collect()
    }

    async fn binding_status(&self, name: &str) -> Value {
        let api: Api<SecretBinding> = Api::namespaced(self.env.client.clone(), self.ns());
        serde_json::to_value(api.get(name).await.unwrap().status).unwrap()
    }
}

/// [`skip_assertions_without_fake`], reported once per test.
fn skip_quietly(env: &TestEnv, noted: &AtomicBool) -> bool {
    if env.is_fake() {
        return false;
    }
    if !noted.swap(true, Ordering::Relaxed) {
        skip_assertions_without_fake(env, "the operator's workload patch counts");
    }
    true
}

/// Pod spec whose container reads Secret `secret` through env `secretKeyRef`.
fn env_ref(secret: &str) -> Value {
    json!({"containers": [{"name": "app", "image": "app:1", "env": [
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}}}
    ]}]})
}

fn env_from(secret: &str) -> Value {
    json!({"containers": [{"name": "app", "image": "app:1",
        "envFrom": [{"secretRef": {"name": secret}}]}]})
}

fn volume(secret: &str) -> Value {
    json!({"containers": [{"name": "app", "image": "app:1"}],
        "volumes": [{"name": "s", "secret": {"secretName": secret}}]})
}

fn projected(secret: &str) -> Value {
    json!({"containers": [{"name": "app", "image": "app:1"}],
        "volumes": [{"name": "p", "projected": {"sources": [{"secret": {"name": secret}}]}}]})
}

fn no_secrets() -> Value {
    json!({"containers": [{"name": "app", "image": "app:1"}]})
}

/// Waits until `op` counted at least `n` rollout reconciles that found nothing to do.
async fn wait_unchanged_reconciles(op: &Operator, n: f64) {
    const UNCHANGED: &str =
        "secretsync_reconcile_total{controller=\"rollout\",result=\"unchanged\"}";
    wait_until(WAIT, || async {
        (op.metric(UNCHANGED).await >= n).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.output()));
}

// ---------------------------------------------------------------------------------------
// Tests

/// Every kind and reference style restarts exactly once; a workload without the opt-in,
/// and an opted-in one that does not use the rotated Secret, stay untouched; the first sync
/// restarts nothing.
#[tokio::test]
async fn rotation_restarts_each_dependent_workload_exactly_once() {
    let f = Fixture::on("kinds", env_all_namespaces().await).await;
    f.vault_put("db", "one").await;
    f.vault_put("other", "x").await;
    f.binding("db", true, "1h").await;
    f.binding("other", true, "1h").await;
    // (kind, name, opt-in, pod): the ones that must restart …
    let users = [
        ("Deployment", "env", Some("true"), env_ref("db")),
        ("Deployment", "envfrom", Some("true"), env_from("db")),
        ("Deployment", "projected", Some("true"), projected("db")),
        ("Deployment", "explicit", Some("other, db"), no_secrets()),
        ("StatefulSet", "sts", Some("true"), volume("db")),
        ("DaemonSet", "ds", Some("true"), env_ref("db")),
    ];
    // … and the ones that must not.
    let bystanders = [
        ("Deployment", "not-opted-in", None, env_ref("db")),
        ("Deployment", "uses-other", Some("true"), env_ref("other")),
        ("Deployment", "explicit-other", Some("other"), env_ref("db")),
        ("StatefulSet", "sts-other", Some("true"), volume("other")),
    ];
    for (kind, name, opt, pod) in users.iter().chain(bystanders.iter()) {
        f.workload(kind, name, *opt, pod.clone(), json!({})).await;
    }
    // All namespaces: the chart's ClusterRole must cover every workload kind.
    let op = start(&f, "op-1", "1s", true, WatchScope::AllNamespaces).await;
    f.synced("db", &op).await;
    f.synced("other", &op).await;

    // First sight: revisions recorded, nothing restarted.
    let recorded = users
        .iter()
        .chain(bystanders.iter())
        .filter(|w| w.2.is_some());
    for (kind, name, _, _) in recorded {
        f.recorded(kind, name, &op).await;
    }
    for (kind, name, _, _) in users.iter().chain(bystanders.iter()) {
        assert_eq!(
            f.restarts(kind, name, 0).await,
            0,
            "{kind} {name} restarted on first sync"
        );
        assert_eq!(f.restarted_at(kind, name).await, None);
    }
    assert_eq!(f.revision("Deployment", "not-opted-in").await, None);
    let mut before: BTreeMap<&str, Option<String>> = BTreeMap::new();
    for (k, n, _, _) in &bystanders {
        before.insert(n, f.revision(k, n).await);
    }
    // Recording took at least one patch per opted-in workload (`explicit` may record
    // twice: once when only `other` had synced, again when `db` appeared — a dependency
    // set change, never a restart).
    let recorded_patches = f.workload_patches();
    if let Some(p) = recorded_patches {
        assert!((9..=11).contains(&p), "{p}");
    }

    f.rotate("db", "CANARY-rot-2", &op).await;
    for (kind, name, _, _) in &users {
        f.restarted(kind, name, &op).await;
    }
    holds_for(
        Duration::from_secs(2),
        "exactly one restart each",
        async || {
            for (k, n, _, _) in &users {
                if f.restarts(k, n, 0).await != 1 {
                    return false;
                }
            }
            for (k, n, _, _) in &bystanders {
                if f.restarts(k, n, 0).await != 0 {
                    return false;
                }
            }
            true
        },
    )
    .await;
    for (kind, name, _, _) in &bystanders {
        assert_eq!(f.restarted_at(kind, name).await, None, "{kind} {name}");
        assert_eq!(f.revision(kind, name).await, before[name], "{kind} {name}");
    }
    assert_eq!(
        f.workload_patches(),
        recorded_patches.map(|p| p + users.len() as u64)
    );

    // Events name the rotated Secret; the binding lists what it restarted; metrics count.
    let ev = wait_until(WAIT, || async {
        let ev = f.events("RolloutRestarted", "env").await;
        (!ev.is_empty()).then_some(ev)
    })
    .await
    .unwrap();
    let note = ev[0].note.clone().unwrap_or_default();
    assert!(note.contains("db"), "{note}");
    assert!(!note.contains("CANARY"), "event leaks a value: {note}");
    let status = wait_until(WAIT, || async {
        let st = f.binding_status("db").await;
        (st["restarted"].as_array().map(Vec::len) == Some(users.len())).then_some(st)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.output()));
    let listed: std::collections::BTreeSet<(String, String)> = status["restarted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap().to_string(),
                r["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (kind, name, _, _) in &users {
        assert!(
            listed.contains(&(kind.to_string(), name.to_string())),
            "{listed:?}"
        );
    }
    assert_eq!(
        status["conditions"][0]["status"], "True",
        "status kept: {status}"
    );
    assert!(status["dataHash"].is_string(), "status kept: {status}");
    assert_eq!(
        op.metric("secretsync_rollout_restarts_total{kind=\"Deployment\"}")
            .await,
        4.0
    );
    assert_eq!(
        op.metric("secretsync_rollout_restarts_total{kind=\"StatefulSet\"}")
            .await,
        1.0
    );
    assert_eq!(
        op.metric("secretsync_rollout_restarts_total{kind=\"DaemonSet\"}")
            .await,
        1.0
    );

    // The binding reconciler's next status write (a forced re-read of unchanged data moves
    // lastSyncTime) keeps `restarted`, and restarts nothing.
    let last_sync = status["lastSyncTime"].clone();
    f.force_sync("db").await;
    let after = wait_until(WAIT, || async {
        let st = f.binding_status("db").await;
        (st["lastSyncTime"] != last_sync).then_some(st)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.output()));
    assert_eq!(
        after["restarted"].as_array().map(Vec::len),
        Some(users.len()),
        "{after}"
    );
    assert_eq!(
        f.workload_patches(),
        recorded_patches.map(|p| p + users.len() as u64)
    );
    assert!(!op.output().contains("CANARY"), "value in logs");
    op.assert_calls_in_rbac_table(&f.env);
}

/// Username and password rotated by two bindings 2 s apart: one restart.
#[tokio::test]
async fn two_rotations_within_the_debounce_give_one_restart() {
    let f = Fixture::new("debounce").await;
    f.vault_put("user", "u1").await;
    f.vault_put("pass", "p1").await;
    f.binding("user", true, "1h").await;
    f.binding("pass", true, "1h").await;
    let pod = json!({"containers": [{"name": "app", "image": "app:1", "env": [
        {"name": "U", "valueFrom": {"secretKeyRef": {"name": "user", "key": "password"}}},
        {"name": "P", "valueFrom": {"secretKeyRef": {"name": "pass", "key": "password"}}},
    ]}]});
    f.workload("Deployment", "api", Some("true"), pod, json!({}))
        .await;
    let op = start(&f, "op-1", "5s", true, WatchScope::Namespace).await;
    f.synced("user", &op).await;
    f.synced("pass", &op).await;
    let first = f.recorded("Deployment", "api", &op).await;

    f.rotate("user", "u2", &op).await;
    // The scenario itself: the second rotation lands 2 s after the first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        f.restarts("Deployment", "api", 0).await,
        0,
        "restarted inside the window"
    );
    f.rotate("pass", "p2", &op).await;
    f.restarted("Deployment", "api", &op).await;
    holds_for(Duration::from_secs(6), "exactly one restart", async || {
        f.restarts("Deployment", "api", 0).await == 1
    })
    .await;
    assert_ne!(f.revision("Deployment", "api").await, Some(first));
    let ev = f.events("RolloutRestarted", "api").await;
    assert_eq!(ev.len(), 1);
    let note = ev[0].note.clone().unwrap_or_default();
    assert!(note.contains("user") && note.contains("pass"), "{note}");
}

/// SIGKILL inside the debounce window (the Secret is updated, the restart not yet
/// written); the next operator process restarts exactly once. A further operator restart
/// with nothing rotated restarts nothing.
#[tokio::test]
async fn killed_inside_the_debounce_window_restarts_exactly_once_after_coming_back() {
    let f = Fixture::new("kill").await;
    f.vault_put("db", "one").await;
    f.binding("db", true, "1h").await;
    f.workload("Deployment", "api", Some("true"), env_ref("db"), json!({}))
        .await;
    let mut op = start(&f, "op-1", "30s", false, WatchScope::Namespace).await;
    f.synced("db", &op).await;
    f.recorded("Deployment", "api", &op).await;
    f.rotate("db", "two", &op).await;
    op.process.kill();
    op.wait_exit().await;
    assert_eq!(f.restarts("Deployment", "api", 0).await, 0);
    assert_eq!(f.restarted_at("Deployment", "api").await, None);

    let mut op2 = start(&f, "op-2", "1s", false, WatchScope::Namespace).await;
    f.restarted("Deployment", "api", &op2).await;
    holds_for(Duration::from_secs(2), "exactly one restart", async || {
        f.restarts("Deployment", "api", 0).await == 1
    })
    .await;
    let patches = f.workload_patches();

    // Restart again with nothing rotated: no restart, no workload write.
    op2.sigterm();
    op2.wait_exit().await;
    let op3 = start(&f, "op-3", "1s", false, WatchScope::Namespace).await;
    wait_unchanged_reconciles(&op3, 1.0).await;
    holds_for(
        Duration::from_secs(2),
        "no restart after an operator restart",
        async || f.restarts("Deployment", "api", 0).await == 1,
    )
    .await;
    assert_eq!(f.workload_patches(), patches);
}

/// A standby taking over (leader change) restarts nothing and writes no workload.
#[tokio::test]
async fn leader_change_restarts_nothing() {
    let f = Fixture::new("leader").await;
    f.vault_put("db", "one").await;
    f.binding("db", true, "1h").await;
    f.workload("Deployment", "api", Some("true"), env_ref("db"), json!({}))
        .await;
    f.workload("StatefulSet", "db", Some("db"), no_secrets(), json!({}))
        .await;
    let mut a = start(&f, "op-a", "1s", true, WatchScope::Namespace).await;
    f.synced("db", &a).await;
    for (k, n) in [("Deployment", "api"), ("StatefulSet", "db")] {
        f.recorded(k, n, &a).await;
    }
    let b = start(&f, "op-b", "1s", true, WatchScope::Namespace).await;
    let patches = f.workload_patches();
    a.sigterm();
    a.wait_exit().await;
    // The new leader reconciled the workloads (and found nothing to do).
    wait_unchanged_reconciles(&b, 2.0).await;
    holds_for(
        Duration::from_secs(2),
        "no restart on leader change",
        async || {
            f.restarts("Deployment", "api", 0).await == 0
                && f.restarts("StatefulSet", "db", 0).await == 0
        },
    )
    .await;
    assert_eq!(f.workload_patches(), patches);
}

/// Refreshes that re-read unchanged data, and drift repairs back to the same value, never
/// restart and never write the workload.
#[tokio::test]
async fn unchanged_refreshes_and_drift_repairs_restart_nothing() {
    let f = Fixture::new("refresh").await;
    f.vault_put("db", "one").await;
    f.binding("db", true, "1s").await;
    f.workload("Deployment", "api", Some("true"), volume("db"), json!({}))
        .await;
    let op = start(&f, "op-1", "1s", true, WatchScope::Namespace).await;
    f.synced("db", &op).await;
    f.recorded("Deployment", "api", &op).await;
    let patches = f.workload_patches();
    if let Some(p) = patches {
        assert_eq!(p, 1, "one patch recording the revision");
    }

    // Several refreshes re-read the same data.
    const READS: &str = "secretsync_backend_requests_total{backend=\"vault\",operation=\"read\",result=\"success\"}";
    let r0 = op.metric(READS).await;
    wait_until(WAIT, || async {
        (op.metric(READS).await >= r0 + 3.0).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("no refreshes: {e}\n{}", op.output()));
    assert_eq!(f.workload_patches(), patches);
    assert_eq!(f.restarts("Deployment", "api", 0).await, 0);

    // Drift: someone overwrites the value, then deletes the Secret; both are repaired.
    let secrets: Api<Secret> = Api::namespaced(f.env.client.clone(), f.ns());
    let tamper = json!({"data": {"password": "dGFtcGVyZWQ="}});
    secrets
        .patch("db", &PatchParams::default(), &Patch::Merge(&tamper))
        .await
        .unwrap();
    let restored = || async {
        let s = secrets.get_opt("db").await.ok()??;
        (s.data?.get("password")?.0 == b"one").then_some(())
    };
    wait_until(WAIT, restored).await.unwrap();
    secrets.delete("db", &Default::default()).await.unwrap();
    wait_until(WAIT, restored).await.unwrap();
    holds_for(
        Duration::from_secs(3),
        "no restart after drift repair",
        async || f.restarts("Deployment", "api", 0).await == 0,
    )
    .await;
    assert_eq!(f.workload_patches(), patches);
    assert_eq!(f.restarted_at("Deployment", "api").await, None);
}

/// A paused Deployment is skipped with a Warning event and restarted once unpaused.
#[tokio::test]
async fn paused_deployment_is_skipped_then_restarted_once_unpaused() {
    let f = Fixture::new("paused").await;
    f.vault_put("db", "one").await;
    f.binding("db", true, "1h").await;
    f.workload(
        "Deployment",
        "api",
        Some("true"),
        env_ref("db"),
        json!({"paused": true}),
    )
    .await;
    let op = start(&f, "op-1", "1s", true, WatchScope::Namespace).await;
    f.synced("db", &op).await;
    f.recorded("Deployment", "api", &op).await;
    let patches = f.workload_patches();
    f.rotate("db", "two", &op).await;
    let ev = wait_until(WAIT, || async {
        let ev = f.events("RolloutSkipped", "api").await;
        (!ev.is_empty()).then_some(ev)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.output()));
    assert_eq!(ev[0].type_.as_deref(), Some("Warning"));
    assert_eq!(
        f.workload_patches(),
        patches,
        "a paused Deployment is not patched"
    );
    assert_eq!(f.restarts("Deployment", "api", 0).await, 0);

    // Unpause (one spec edit of our own).
    f.workload(
        "Deployment",
        "api",
        Some("true"),
        env_ref("db"),
        json!({"paused": false}),
    )
    .await;
    f.restarted("Deployment", "api", &op).await;
    holds_for(Duration::from_secs(2), "exactly one restart", async || {
        f.restarts("Deployment", "api", 1).await == 1
    })
    .await;
    assert_eq!(f.workload_patches(), patches.map(|p| p + 1));
    assert_eq!(f.events("RolloutSkipped", "api").await.len(), 1);
}

/// `rollout.restart: false`: rotations never restart (and the workload is never written).
#[tokio::test]
async fn binding_with_restart_false_never_restarts() {
    let f = Fixture::new("norestart").await;
    f.vault_put("db", "one").await;
    f.binding("db", false, "1h").await;
    f.workload("Deployment", "api", Some("true"), env_ref("db"), json!({}))
        .await;
    f.workload("DaemonSet", "agent", Some("db"), no_secrets(), json!({}))
        .await;
    let op = start(&f, "op-1", "1s", true, WatchScope::Namespace).await;
    f.synced("db", &op).await;
    f.rotate("db", "two", &op).await;
    f.rotate("db", "three", &op).await;
    holds_for(Duration::from_secs(3), "no restart", async || {
        f.restarts("Deployment", "api", 0).await == 0
            && f.restarts("DaemonSet", "agent", 0).await == 0
    })
    .await;
    if let Some(p) = f.workload_patches() {
        assert_eq!(p, 0);
    }
    assert!(f.events("RolloutRestarted", "api").await.is_empty());
}
