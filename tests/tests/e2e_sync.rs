//! End-to-end: the real `secretsync run` binary against the testkit API server.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use secretsync_api::SecretBinding;
use secretsync_testkit::harness::{ChildProcess, TestEnv, free_port, wait_until};

const WAIT: Duration = Duration::from_secs(30);

/// The operator binary: `SECRETSYNC_BIN`, else the workspace's debug build (built on demand).
fn binary() -> PathBuf {
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
}

fn start_operator(
    env: &TestEnv,
    bin: &PathBuf,
    root: &std::path::Path,
    identity: &str,
) -> (ChildProcess, u16) {
    let metrics = free_port().unwrap();
    let health = free_port().unwrap();
    let mut cmd = std::process::Command::new(bin);
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
    .arg(format!("--file-root={}", root.display()))
    .env("KUBECONFIG", &env.kubeconfig)
    .env("POD_NAME", identity)
    .env("RUST_LOG", "info");
    (ChildProcess::spawn(cmd).unwrap(), metrics)
}

async fn setup() -> (TestEnv, tempfile::TempDir) {
    let env = TestEnv::start().await.unwrap();
    env.install_crds().await.unwrap();
    let root = tempfile::tempdir().unwrap();
    std::fs::write(
        root.path().join("app.env"),
        "DB_USER=shop\nDB_PASSWORD=CANARY-e2e-9f1\n",
    )
    .unwrap();
    support::apply(
        &env,
        &format!(
            r#"
apiVersion: secretsync.dev/v1alpha1
kind: SecretSource
metadata: {{name: files, namespace: {ns}}}
spec:
  file: {{path: "{path}", format: Dotenv}}
---
apiVersion: secretsync.dev/v1alpha1
kind: SecretBinding
metadata: {{name: app, namespace: {ns}}}
spec:
  sourceRef: {{name: files}}
  data:
    - secretKey: password
      remoteRef: {{key: DB_PASSWORD}}
    - secretKey: username
      remoteRef: {{key: DB_USER}}
---
apiVersion: secretsync.dev/v1alpha1
kind: SecretBinding
metadata: {{name: app2, namespace: {ns}}}
spec:
  sourceRef: {{name: files}}
  data:
    - secretKey: user
      remoteRef: {{key: DB_USER}}
"#,
            ns = env.namespace,
            path = root.path().join("app.env").display()
        ),
    )
    .await;
    (env, root)
}

async fn synced_secret(env: &TestEnv) -> Option<Secret> {
    let bindings: Api<SecretBinding> = Api::namespaced(env.client.clone(), &env.namespace);
    let b = bindings.get_opt("app").await.ok()??;
    let ready = b
        .status
        .as_ref()?
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if !ready {
        return None;
    }
    Api::<Secret>::namespaced(env.client.clone(), &env.namespace)
        .get_opt("app")
        .await
        .ok()?
}

fn sigterm(p: &ChildProcess) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &p.id().to_string()])
        .status();
}

#[tokio::test]
async fn file_binding_syncs_and_drift_is_restored_and_values_stay_secret() {
    let bin = binary();
    let (env, root) = setup().await;
    let (mut op, metrics) = start_operator(&env, &bin, root.path(), "op-1");
    let s = wait_until(WAIT, || synced_secret(&env))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", op.output()));
    let data = s.data.clone().unwrap();
    assert_eq!(data["password"].0, b"CANARY-e2e-9f1");
    assert_eq!(data["username"].0, b"shop");

    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.namespace);
    wait_until(WAIT, || async {
        let s = secrets.get_opt("app2").await.ok()??;
        (s.data?.get("user")?.0 == b"shop").then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.output()));

    // Drift: edit one managed Secret's value and delete another; both are restored.
    let edit = serde_json::json!({"data": {"password": "ZWRpdGVk"}}); // "edited"
    secrets
        .patch(
            "app",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&edit),
        )
        .await
        .unwrap();
    secrets.delete("app2", &Default::default()).await.unwrap();
    wait_until(WAIT, || async {
        let a = secrets.get_opt("app").await.ok()??;
        let b = secrets.get_opt("app2").await.ok()??;
        (a.data?.get("password")?.0 == b"CANARY-e2e-9f1" && b.data?.get("user")?.0 == b"shop")
            .then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("drift not restored: {e}\n{}", op.output()));

    // Error paths that handle the value: JSON parsing of it, a template filter on it.
    let error_bindings = format!(
        r#"
apiVersion: secretsync.dev/v1alpha1
kind: SecretBinding
metadata: {{name: not-json, namespace: {ns}}}
spec:
  sourceRef: {{name: files}}
  data:
    - secretKey: x
      remoteRef: {{key: DB_PASSWORD, property: field}}
---
apiVersion: secretsync.dev/v1alpha1
kind: SecretBinding
metadata: {{name: not-extractable, namespace: {ns}}}
spec:
  sourceRef: {{name: files}}
  dataFrom:
    - extract: {{key: DB_PASSWORD}}
---
apiVersion: secretsync.dev/v1alpha1
kind: SecretBinding
metadata: {{name: bad-filter, namespace: {ns}}}
spec:
  sourceRef: {{name: files}}
  target:
    template:
      data:
        n: "{{{{ password | int }}}}{{{{ password.nope.deeper }}}}"
  data:
    - secretKey: password
      remoteRef: {{key: DB_PASSWORD}}
"#,
        ns = env.namespace
    );
    support::apply(&env, &error_bindings).await;
    let bindings: Api<SecretBinding> = Api::namespaced(env.client.clone(), &env.namespace);
    for (name, reason) in [
        ("not-json", "InvalidJson"),
        ("not-extractable", "InvalidJson"),
        ("bad-filter", "InvalidTemplate"),
    ] {
        wait_until(WAIT, || async {
            let b = bindings.get_opt(name).await.ok()??;
            b.status?
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "False" && c.reason == reason)
                .then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{name}: no {reason}: {e}\n{}", op.output()));
    }

    // Canary: never in logs, status, events or metrics.
    let metrics_body = wait_until(WAIT, || async {
        let addr = format!("127.0.0.1:{metrics}");
        let mut s = tokio::net::TcpStream::connect(&addr).await.ok()?;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).await.ok()?;
        body.contains("secretsync_reconcile_total").then_some(body)
    })
    .await
    .unwrap();
    assert!(metrics_body.contains("HTTP/1.1 200"), "{metrics_body}");
    assert!(
        !metrics_body.contains("CANARY"),
        "value leaked into metrics"
    );
    let all = bindings.list(&Default::default()).await.unwrap();
    assert_eq!(all.items.len(), 5);
    let status =
        serde_json::to_string(&all.items.iter().map(|b| &b.status).collect::<Vec<_>>()).unwrap();
    assert!(
        !status.contains("CANARY"),
        "value leaked into status: {status}"
    );
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(env.client.clone(), &env.namespace);
    let ev = serde_json::to_string(&events.list(&Default::default()).await.unwrap()).unwrap();
    assert!(ev.contains("SyncFailed"), "error events exist: {ev}");
    assert!(!ev.contains("CANARY"), "value leaked into events: {ev}");

    sigterm(&op);
    let exited = wait_until(WAIT, || {
        let st = op.try_wait();
        async move { st }
    })
    .await
    .unwrap();
    assert!(exited.success(), "exit status {exited:?}\n{}", op.output());
    assert!(!op.output().contains("CANARY"), "value leaked into logs");
    support::assert_operator_calls_in_rbac_table(&env);
}

#[tokio::test]
async fn standby_takes_over_when_the_leader_is_killed() {
    let bin = binary();
    let (env, root) = setup().await;
    let (mut a, _) = start_operator(&env, &bin, root.path(), "op-a");
    wait_until(WAIT, || synced_secret(&env))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", a.output()));
    let (b, b_metrics) = start_operator(&env, &bin, root.path(), "op-b");
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.namespace);
    let holder = || async {
        leases
            .get_opt("secretsync-leader")
            .await
            .ok()??
            .spec?
            .holder_identity
    };
    assert_eq!(holder().await.as_deref(), Some("op-a"));
    // Wait until the standby runs (its health endpoint answers), then make work: only the
    // leader may write.
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.namespace);
    wait_until(WAIT, || async {
        let addr = format!("127.0.0.1:{b_metrics}");
        (secretsync_testkit::harness::http_status(&addr, "/metrics").await == Some(200))
            .then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("standby never started: {e}\n{}", b.output()));
    secrets.delete("app", &Default::default()).await.unwrap();
    wait_until(WAIT, || async {
        secrets.get_opt("app").await.ok()?.map(|_| ())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", a.output()));
    assert_eq!(holder().await.as_deref(), Some("op-a"));
    let standby_log = b.output();
    assert!(
        !standby_log.contains("applied Secret")
            && !standby_log.contains("starting reconcilers")
            && !standby_log.contains("sync failed"),
        "the standby reconciled while op-a led:\n{standby_log}"
    );
    assert!(
        a.output().contains("Secret drifted or missing; restoring"),
        "{}",
        a.output()
    );

    a.kill();
    let killed_at = k8s_openapi::jiff::Timestamp::now();
    let t0 = std::time::Instant::now();
    wait_until(Duration::from_secs(25), || async {
        (holder().await.as_deref() == Some("op-b")).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", b.output()));
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "takeover took {:?}",
        t0.elapsed()
    );
    // The new leader restores a deleted Secret.
    secrets.delete("app", &Default::default()).await.unwrap();
    wait_until(WAIT, || async {
        secrets.get_opt("app").await.ok()?.map(|_| ())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", b.output()));
    // Every Event op-b reported was emitted after op-a died: writers never overlapped.
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(env.client.clone(), &env.namespace);
    let evs = events.list(&Default::default()).await.unwrap().items;
    for e in &evs {
        let who = e.reporting_instance.as_deref().unwrap_or_default();
        assert!(who == "op-a" || who == "op-b", "{e:?}");
        if who == "op-b" {
            let at = e
                .event_time
                .as_ref()
                .map(|t| t.0)
                .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
                .unwrap();
            assert!(
                at >= killed_at,
                "op-b wrote at {at} while op-a led (killed {killed_at})"
            );
        }
    }
}
