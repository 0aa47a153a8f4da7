//! End-to-end: the real `secretsync run` binary against the testkit API server.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use secretsync_api::SecretBinding;
use secretsync_e2e::*;

async fn start_operator(
    env: &TestEnv,
    root: &std::path::Path,
    identity: &str,
    scope: WatchScope,
) -> Operator {
    Operator::start(
        env,
        &OperatorOpts {
            identity: identity.into(),
            scope,
            file_root: Some(root.to_path_buf()),
            ..Default::default()
        },
    )
    .await
}

async fn setup(scope: WatchScope) -> (TestEnv, tempfile::TempDir) {
    let env = match scope {
        WatchScope::Namespace => env().await,
        WatchScope::AllNamespaces => env_all_namespaces().await,
    };
    let root = tempfile::tempdir().unwrap();
    std::fs::write(
        root.path().join("app.env"),
        "DB_USER=shop\nDB_PASSWORD=CANARY-e2e-9f1\n",
    )
    .unwrap();
    let yaml = stream(&[
        file_source("files", root.path().join("app.env").display(), "Dotenv"),
        binding("app", "files")
            .key("password", "DB_PASSWORD")
            .key("username", "DB_USER")
            .yaml(),
        binding("app2", "files").key("user", "DB_USER").yaml(),
    ]);
    apply(&env, &yaml).await;
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

#[tokio::test]
async fn file_binding_syncs_and_drift_is_restored_and_values_stay_secret() {
    let (env, root) = setup(WatchScope::AllNamespaces).await;
    let mut op = start_operator(&env, root.path(), "op-1", WatchScope::AllNamespaces).await;
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
    let error_bindings = stream(&[
        binding("not-json", "files")
            .property("x", "DB_PASSWORD", "field")
            .yaml(),
        binding("not-extractable", "files")
            .spec("dataFrom: [{extract: {key: DB_PASSWORD}}]")
            .yaml(),
        binding("bad-filter", "files")
            .spec(
                r#"target: {template: {data: {n: "{{ password | int }}{{ password.nope.deeper }}"}}}"#,
            )
            .key("password", "DB_PASSWORD")
            .yaml(),
    ]);
    apply(&env, &error_bindings).await;
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
        let body = op.metrics().await;
        body.contains("secretsync_reconcile_total").then_some(body)
    })
    .await
    .unwrap();
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

    op.sigterm();
    let exited = op.wait_exit().await;
    assert!(exited.success(), "exit status {exited:?}\n{}", op.output());
    assert!(!op.output().contains("CANARY"), "value leaked into logs");
    op.assert_calls_in_rbac_table(&env);
}

#[tokio::test]
async fn standby_takes_over_when_the_leader_is_killed() {
    let (env, root) = setup(WatchScope::Namespace).await;
    let mut a = start_operator(&env, root.path(), "op-a", WatchScope::Namespace).await;
    wait_until(WAIT, || synced_secret(&env))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", a.output()));
    let b = start_operator(&env, root.path(), "op-b", WatchScope::Namespace).await;
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.operator_namespace());
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
        (http_get(&format!("http://{}/metrics", b.metrics_addr))
            .await
            .is_some_and(|(status, _)| status == 200))
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

    a.process.kill();
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
