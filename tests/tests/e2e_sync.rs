//! End-to-end: the real `secretsync run` binary against the testkit API server.

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
    let fake = env.fake().unwrap();
    fake.apply_yaml(&format!(
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
"#,
        ns = env.namespace,
        path = root.path().join("app.env").display()
    ))
    .unwrap();
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

    // Drift: delete the Secret; it comes back.
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.namespace);
    secrets.delete("app", &Default::default()).await.unwrap();
    wait_until(WAIT, || async {
        let s = secrets.get_opt("app").await.ok()??;
        (s.data?.get("password")?.0 == b"CANARY-e2e-9f1").then_some(())
    })
    .await
    .unwrap();

    // Canary: never in logs, status, events or metrics.
    let metrics_text =
        secretsync_testkit::harness::http_status(&format!("127.0.0.1:{metrics}"), "/metrics").await;
    assert_eq!(metrics_text, Some(200));
    let bindings: Api<SecretBinding> = Api::namespaced(env.client.clone(), &env.namespace);
    let status = serde_json::to_string(&bindings.get("app").await.unwrap().status).unwrap();
    assert!(!status.contains("CANARY"));
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(env.client.clone(), &env.namespace);
    let ev = serde_json::to_string(&events.list(&Default::default()).await.unwrap()).unwrap();
    assert!(!ev.contains("CANARY"));

    sigterm(&op);
    let exited = wait_until(WAIT, || {
        let st = op.try_wait();
        async move { st }
    })
    .await
    .unwrap();
    assert!(exited.success(), "exit status {exited:?}\n{}", op.output());
    assert!(!op.output().contains("CANARY"), "value leaked into logs");
}

#[tokio::test]
async fn standby_takes_over_when_the_leader_is_killed() {
    let bin = binary();
    let (env, root) = setup().await;
    let (mut a, _) = start_operator(&env, &bin, root.path(), "op-a");
    wait_until(WAIT, || synced_secret(&env))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", a.output()));
    let (b, _) = start_operator(&env, &bin, root.path(), "op-b");
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
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(holder().await.as_deref(), Some("op-a"));

    a.kill();
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
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.namespace);
    secrets.delete("app", &Default::default()).await.unwrap();
    wait_until(WAIT, || async {
        secrets.get_opt("app").await.ok()?.map(|_| ())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", b.output()));
}
