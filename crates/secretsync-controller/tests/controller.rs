//! The controller in-process against the testkit's fake API server: file-backend binding to
//! Secret bytes and status, drift restore, Owner conflict, Merge cleanup, leader election.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use secretsync_api::SecretBinding;
use secretsync_controller::{Config, run};
use secretsync_testkit::FakeApiServer;
use secretsync_testkit::harness::{free_port, wait_until};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(20);

fn addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port().unwrap())
        .parse()
        .unwrap()
}

fn config(root: &Path, identity: &str, leader_elect: bool) -> Config {
    Config {
        operator_namespace: "secretsync-system".into(),
        namespaces: vec![],
        concurrency: 4,
        metrics_addr: addr(),
        health_addr: addr(),
        leader_elect,
        env_allow: vec![],
        file_root: root.to_path_buf(),
        restart_debounce: Duration::from_secs(1),
        status_heartbeat: Duration::from_secs(600),
        max_restarts_per_minute: 0,
        identity: identity.into(),
        webhook: None,
    }
}

struct Operator {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), secretsync_controller::Error>>,
    metrics_addr: SocketAddr,
}

impl Operator {
    fn start(client: Client, cfg: Config) -> Self {
        let (tx, rx) = oneshot::channel();
        let metrics_addr = cfg.metrics_addr;
        let task = tokio::spawn(run(client, cfg, async move {
            let _ = rx.await;
        }));
        Operator {
            stop: Some(tx),
            task,
            metrics_addr,
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let res = tokio::time::timeout(Duration::from_secs(30), self.task).await;
        assert!(
            matches!(res, Ok(Ok(Ok(())))),
            "operator did not stop cleanly"
        );
    }
}

async fn setup() -> (FakeApiServer, Client, tempfile::TempDir) {
    let server = FakeApiServer::start().await.unwrap();
    server.install_secretsync_crds().unwrap();
    let client = server.client().await.unwrap();
    let root = tempfile::tempdir().unwrap();
    std::fs::write(
        root.path().join("shop.env"),
        "DB_USER=shop\nDB_PASSWORD=CANARY-s3cret\nAPI_TOKEN=tok\n",
    )
    .unwrap();
    server
        .apply_yaml(&format!(
            r#"
apiVersion: v1
kind: Namespace
metadata: {{name: secretsync-system}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: shop}}
---
apiVersion: secretsync.dev/v1alpha1
kind: SecretSource
metadata: {{name: files, namespace: shop}}
spec:
  file: {{path: "{}", format: Dotenv}}
"#,
            root.path().join("shop.env").display()
        ))
        .unwrap();
    (server, client, root)
}

fn binding_yaml(name: &str, policy: &str, target: &str) -> String {
    format!(
        r#"
apiVersion: secretsync.dev/v1alpha1
kind: SecretBinding
metadata: {{name: {name}, namespace: shop}}
spec:
  sourceRef: {{name: files}}
  refreshInterval: 1h
  target: {{name: {target}, creationPolicy: {policy}}}
  data:
    - secretKey: username
      remoteRef: {{key: DB_USER}}
    - secretKey: password
      remoteRef: {{key: DB_PASSWORD}}
"#
    )
}

fn bytes(s: &Secret, k: &str) -> Option<Vec<u8>> {
    s.data.as_ref()?.get(k).map(|b| b.0.clone())
}

async fn ready(client: &Client, name: &str) -> Option<SecretBinding> {
    let api: Api<SecretBinding> = Api::namespaced(client.clone(), "shop");
    let b = api.get_opt(name).await.ok()??;
    let st = b.status.as_ref()?;
    let c = st.conditions.iter().find(|c| c.type_ == "Ready")?;
    (c.status == "True" && st.observed_generation == b.metadata.generation).then_some(b)
}

async fn reason(client: &Client, name: &str) -> Option<String> {
    let api: Api<SecretBinding> = Api::namespaced(client.clone(), "shop");
    let b = api.get_opt(name).await.ok()??;
    let c = b
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")?;
    (c.status == "False").then_some(c.reason)
}

#[tokio::test]
async fn owner_binding_syncs_restores_drift_and_refuses_foreign_secrets() {
    let (server, client, root) = setup().await;
    let op = Operator::start(client.clone(), config(root.path(), "op-1", false));
    server
        .apply_yaml(&binding_yaml("shop-db", "Owner", "shop-db"))
        .unwrap();

    let b = wait_until(WAIT, || ready(&client, "shop-db"))
        .await
        .unwrap();
    let st = b.status.clone().unwrap();
    assert_eq!(st.synced_keys, vec!["password", "username"]);
    assert_eq!(st.conditions[0].reason, "Synced");
    assert_eq!(st.conditions[0].message, "2 keys");
    assert!(st.last_sync_time.is_some());
    assert!(st.last_rotation_time.is_none());
    let hash = st.data_hash.clone().unwrap();
    assert_eq!(hash.len(), 64);

    let secrets: Api<Secret> = Api::namespaced(client.clone(), "shop");
    let s = secrets.get("shop-db").await.unwrap();
    assert_eq!(
        bytes(&s, "password").as_deref(),
        Some(&b"CANARY-s3cret"[..])
    );
    assert_eq!(bytes(&s, "username").as_deref(), Some(&b"shop"[..]));
    assert_eq!(s.labels()["secretsync.dev/managed"], "true");
    assert_eq!(s.annotations()["secretsync.dev/binding"], "shop-db");
    assert_eq!(s.annotations()["secretsync.dev/data-hash"], hash);
    assert_eq!(s.owner_references()[0].uid, b.uid().unwrap());
    assert!(s.string_data.is_none());

    // HMAC key created.
    let keys: Api<Secret> = Api::namespaced(client.clone(), "secretsync-system");
    let k = keys.get("secretsync-hmac-key").await.unwrap();
    assert_eq!(bytes(&k, "key").map(|b| b.len()), Some(32));

    // A resync writes nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.reset_counts();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes: u64 = server
        .counts()
        .iter()
        .filter(|((verb, _), _)| ["create", "update", "patch"].contains(&verb.as_str()))
        .filter(|((_, res), _)| res != "leases" && res != "events")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        writes,
        0,
        "steady state must not write: {:?}",
        server.counts()
    );

    // Drift: edit a value, then delete the Secret.
    let edit = serde_json::json!({"data": {"password": "ZWRpdGVk"}});
    secrets
        .patch("shop-db", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .unwrap();
    wait_until(WAIT, || async {
        let s = secrets.get("shop-db").await.ok()?;
        (bytes(&s, "password").as_deref() == Some(&b"CANARY-s3cret"[..])).then_some(())
    })
    .await
    .expect("edited Secret restored");
    secrets
        .delete("shop-db", &DeleteParams::default())
        .await
        .unwrap();
    wait_until(WAIT, || async {
        let s = secrets.get_opt("shop-db").await.ok()??;
        (bytes(&s, "password").as_deref() == Some(&b"CANARY-s3cret"[..])).then_some(())
    })
    .await
    .expect("deleted Secret restored");

    // Owner refuses a Secret it does not own.
    let mut foreign = Secret::default();
    foreign.metadata.name = Some("taken".into());
    foreign.data = Some(BTreeMap::from([(
        "x".to_string(),
        ByteString(b"keep".to_vec()),
    )]));
    secrets
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    server
        .apply_yaml(&binding_yaml("grabby", "Owner", "taken"))
        .unwrap();
    let r = wait_until(WAIT, || reason(&client, "grabby"))
        .await
        .unwrap();
    assert_eq!(r, "TargetConflict");
    let s = secrets.get("taken").await.unwrap();
    assert_eq!(bytes(&s, "x").as_deref(), Some(&b"keep"[..]));
    assert!(bytes(&s, "password").is_none());

    // A bad binding (unknown source) gets a clear condition.
    server
        .apply_yaml(&binding_yaml("lost", "Owner", "lost").replace("{name: files}", "{name: nope}"))
        .unwrap();
    assert_eq!(
        wait_until(WAIT, || reason(&client, "lost")).await.unwrap(),
        "SourceNotFound"
    );

    // Rotation: change the file; a force-sync re-reads now.
    std::fs::write(
        root.path().join("shop.env"),
        "DB_USER=shop\nDB_PASSWORD=CANARY-rotated\n",
    )
    .unwrap();
    let bindings: Api<SecretBinding> = Api::namespaced(client.clone(), "shop");
    let force =
        serde_json::json!({"metadata": {"annotations": {"secretsync.dev/force-sync": "1"}}});
    bindings
        .patch("shop-db", &PatchParams::default(), &Patch::Merge(&force))
        .await
        .unwrap();
    let rotated = wait_until(WAIT, || async {
        let b = ready(&client, "shop-db").await?;
        let st = b.status?;
        (st.data_hash.as_deref() != Some(hash.as_str())).then_some(st)
    })
    .await
    .unwrap();
    assert!(rotated.last_rotation_time.is_some());
    let s = secrets.get("shop-db").await.unwrap();
    assert_eq!(
        bytes(&s, "password").as_deref(),
        Some(&b"CANARY-rotated"[..])
    );

    // Metrics, and no secret value anywhere in them or in status.
    let body = reqwest_get(op.metrics_addr, "/metrics").await;
    assert!(
        body.contains("secretsync_reconcile_total{controller=\"binding\""),
        "{body}"
    );
    assert!(body.contains("secretsync_rotations_total 1"), "{body}");
    assert!(!body.contains("CANARY"));
    let all = bindings.list(&Default::default()).await.unwrap();
    assert!(!serde_json::to_string(&all).unwrap().contains("CANARY"));

    op.stop().await;
}

async fn reqwest_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn merge_keeps_foreign_keys_and_cleans_up_its_own() {
    let (server, client, root) = setup().await;
    let op = Operator::start(client.clone(), config(root.path(), "op-1", false));
    server
        .apply_yaml(&binding_yaml("merger", "Merge", "shared"))
        .unwrap();
    assert_eq!(
        wait_until(WAIT, || reason(&client, "merger"))
            .await
            .unwrap(),
        "TargetNotFound"
    );

    let secrets: Api<Secret> = Api::namespaced(client.clone(), "shop");
    let mut shared = Secret::default();
    shared.metadata.name = Some("shared".into());
    shared.data = Some(BTreeMap::from([(
        "other".to_string(),
        ByteString(b"theirs".to_vec()),
    )]));
    secrets
        .create(&PostParams::default(), &shared)
        .await
        .unwrap();
    wait_until(Duration::from_secs(30), || ready(&client, "merger"))
        .await
        .unwrap();
    let s = secrets.get("shared").await.unwrap();
    assert_eq!(bytes(&s, "other").as_deref(), Some(&b"theirs"[..]));
    assert_eq!(bytes(&s, "username").as_deref(), Some(&b"shop"[..]));

    let bindings: Api<SecretBinding> = Api::namespaced(client.clone(), "shop");
    bindings
        .delete("merger", &DeleteParams::default())
        .await
        .unwrap();
    wait_until(WAIT, || async {
        bindings
            .get_opt("merger")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await
    .expect("finalizer removed");
    let s = secrets.get("shared").await.unwrap();
    assert_eq!(bytes(&s, "other").as_deref(), Some(&b"theirs"[..]));
    assert!(bytes(&s, "username").is_none(), "our keys removed");
    op.stop().await;
}

#[tokio::test]
async fn only_the_leader_reconciles_and_a_standby_takes_over() {
    let (server, client, root) = setup().await;
    let a = Operator::start(client.clone(), config(root.path(), "op-a", true));
    let leases: Api<Lease> = Api::namespaced(client.clone(), "secretsync-system");
    let holder = |l: Lease| l.spec.and_then(|s| s.holder_identity);
    wait_until(WAIT, || async {
        (holder(leases.get_opt("secretsync-leader").await.ok()??)?.as_str() == "op-a").then_some(())
    })
    .await
    .unwrap();
    let b = Operator::start(client.clone(), config(root.path(), "op-b", true));
    server
        .apply_yaml(&binding_yaml("shop-db", "Owner", "shop-db"))
        .unwrap();
    wait_until(WAIT, || ready(&client, "shop-db"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let l = leases.get("secretsync-leader").await.unwrap();
    assert_eq!(
        holder(l).as_deref(),
        Some("op-a"),
        "standby must not take a live lease"
    );

    // A graceful stop releases the lease; the standby takes over well within 15s.
    let t0 = std::time::Instant::now();
    a.stop().await;
    wait_until(WAIT, || async {
        (holder(leases.get_opt("secretsync-leader").await.ok()??)?.as_str() == "op-b").then_some(())
    })
    .await
    .unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t0.elapsed()
    );
    // The new leader reconciles: a new binding gets synced.
    server
        .apply_yaml(&binding_yaml("second", "Owner", "second"))
        .unwrap();
    wait_until(WAIT, || ready(&client, "second")).await.unwrap();
    b.stop().await;
}
