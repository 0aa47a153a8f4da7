//! End-to-end under failure and load: a backend down for 30 s, API server faults (409, 500,
//! closed watches, 410 Gone), and 50 bindings sharing 5 Vault keys.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use kube::api::DeleteParams;
use secretsync_e2e::*;
use serde_json::json;

#[tokio::test]
async fn backend_down_for_30s_keeps_the_secret_and_recovers_by_itself() {
    let env = env().await;
    let bao = BaoServer::start()
        .await
        .expect("a private OpenBao (SECRETSYNC_BAO_BIN)");
    bao.admin().enable_kv("kv", 2).await;
    bao.admin()
        .put_v2(
            "kv",
            "app/db",
            json!({"password": "outage-pw", "user": "u1"}),
        )
        .await;
    let op = Operator::start(&env, &OperatorOpts::default()).await;
    let app = binding("app", "vault")
        .refresh("2s")
        .spec("dataFrom: [{extract: {key: app/db}}]");
    let yaml = stream(&[
        vault_source_yaml(&bao.address, "kv", "root", ""),
        app.yaml(),
    ]);
    apply(&env, &yaml).await;
    let want = data(&[("password", "outage-pw"), ("user", "u1")]);
    wait_synced(&env, &op, "app", "app", &want).await;
    let before = secrets(&env).get("app").await.unwrap();

    bao.seal().await;
    let t0 = Instant::now();
    let mut saw_unavailable = None;
    let mut samples = 0;
    while t0.elapsed() < Duration::from_secs(30) {
        let s = secrets(&env).get("app").await.unwrap();
        assert_eq!(
            s.data,
            before.data,
            "the Secret changed during the outage\n{}",
            op.output()
        );
        assert_eq!(
            s.metadata.resource_version, before.metadata.resource_version,
            "the Secret was written during the outage"
        );
        samples += 1;
        if saw_unavailable.is_none()
            && let Some(c) = ready(&env, "app").await
            && c.status == "False"
            && c.reason == "BackendUnavailable"
        {
            assert!(!c.message.contains("outage-pw"), "{c:?}");
            saw_unavailable = Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let Some(seen) = saw_unavailable else {
        panic!(
            "never Ready=False/BackendUnavailable during the outage; Ready={:?}\n{}",
            ready(&env, "app").await,
            op.output()
        )
    };
    assert!(seen < Duration::from_secs(10), "reported after {seen:?}");
    assert!(samples > 50, "only {samples} samples");
    let c = ready(&env, "app").await.unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "BackendUnavailable"),
        "still failing at the end of the outage"
    );
    let st = bindings(&env).get("app").await.unwrap().status.unwrap();
    assert_eq!(
        st.data_hash.as_deref(),
        before
            .metadata
            .annotations
            .as_ref()
            .unwrap()
            .get("secretsync.dev/data-hash")
            .map(String::as_str),
        "the last good dataHash stays"
    );

    // Back: recovers without any nudge (backoff after ~30 s of failures is < 60 s).
    bao.unseal().await;
    let t1 = Instant::now();
    let recovered = wait_until(Duration::from_secs(75), || async {
        ready(&env, "app")
            .await
            .filter(|c| c.status == "True" && c.reason == "Synced")
    })
    .await;
    assert!(
        recovered.is_ok(),
        "no recovery within 75 s\n{}",
        op.output()
    );
    eprintln!("recovered {:?} after the backend returned", t1.elapsed());
    assert_eq!(secret_data(&env, "app").await, Some(want));
}

#[tokio::test]
async fn api_server_faults_converge_without_duplicate_writes() {
    let env = env().await;
    if skip_test_without_fake(
        &env,
        "injects 409/500 faults, closes watches, expires resource versions and counts writes",
    ) {
        return;
    }
    let fake = env.fake().unwrap();
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("app.env"), "A=1\nB=2\nC=3\n").unwrap();
    let files = file_source("files", root.path().join("app.env").display(), "Dotenv");
    apply(&env, &files).await;
    let op = Operator::start(
        &env,
        &OperatorOpts {
            file_root: Some(root.path().to_path_buf()),
            // Refreshes of unchanged data are observed through lastSyncTime below.
            args: vec!["--status-heartbeat=0".into()],
            ..Default::default()
        },
    )
    .await;
    // Wait until the operator leads and reconciles (a warm-up binding is synced), so the
    // faults hit the tested binding's writes and only its own reconciles happen: /readyz
    // is already 200 while standing by, and a binding that appears while the operator is
    // still starting can be reconciled twice in a row (startup pass and watch event).
    apply(&env, &binding("warmup", "files").key("a", "A").yaml()).await;
    wait_synced_own(&env, &op, "warmup", &[("a", "1")]).await;

    // 1. The first two Secret writes fail: a conflict, then a server error.
    fake.fail_next("patch", "secrets", 1, 409);
    fake.reset_counts();
    let retried = binding("retried", "files").refresh("1s").key("a", "A");
    apply(&env, &retried.yaml()).await;
    // The 500 is queued once the 409 was served, so the order is deterministic.
    wait_for(WAIT, || async { fake.count("patch", "secrets") >= 1 })
        .await
        .unwrap();
    fake.fail_next("patch", "secrets", 1, 500);
    let c = wait_reason(&env, &op, "retried", "WriteFailed").await;
    assert!(
        !c.message.contains("injected"),
        "API messages stay out of status: {c:?}"
    );
    wait_synced_own(&env, &op, "retried", &[("a", "1")]).await;
    assert_eq!(
        fake.count("patch", "secrets"),
        3,
        "two failed writes and one good one"
    );
    // More refreshes of unchanged data write nothing, and once the Secret watch has shown
    // the operator its own write, they do not read the Secret back either.
    let last_sync = || async {
        bindings(&env)
            .get("retried")
            .await
            .ok()
            .and_then(|b| b.status?.last_sync_time)
            .map(|t| t.0.as_second())
    };
    let synced_at = last_sync().await.unwrap();
    wait_for(WAIT, || async {
        last_sync().await.is_some_and(|t| t > synced_at)
    })
    .await
    .unwrap();
    let gets = fake.count("get", "secrets");
    wait_for(WAIT, || async {
        last_sync().await.is_some_and(|t| t >= synced_at + 4)
    })
    .await
    .unwrap();
    assert_eq!(
        fake.count("patch", "secrets"),
        3,
        "refreshes of unchanged data must not write"
    );
    assert_eq!(
        fake.count("get", "secrets"),
        gets,
        "refreshes of an unchanged Secret must not GET it"
    );

    // 2. Watches closed: a binding that never polls still sees its spec change.
    // Binding `watched`, never polling, on the remote keys `keys` (their Secret keys
    // lower-case).
    let watched = |keys: &[&str]| {
        let b = binding("watched", "files").refresh("0");
        let b = keys.iter().fold(b, |b, k| b.key(&k.to_lowercase(), k));
        b.yaml()
    };
    apply(&env, &watched(&["B"])).await;
    wait_synced_own(&env, &op, "watched", &[("b", "2")]).await;
    let writes = fake.count("patch", "secrets");
    fake.close_watches();
    apply(&env, &watched(&["B", "C"])).await;
    wait_synced_own(&env, &op, "watched", &[("b", "2"), ("c", "3")]).await;
    assert_eq!(fake.count("patch", "secrets"), writes + 1);

    // 3. 410 Gone: every resource version expires and watches restart from a relist.
    fake.expire_resource_versions();
    fake.close_watches();
    secrets(&env)
        .delete("watched", &DeleteParams::default())
        .await
        .unwrap();
    wait_synced_own(&env, &op, "watched", &[("b", "2"), ("c", "3")]).await;
    fake.expire_resource_versions();
    fake.close_watches();
    apply(&env, &watched(&["C"])).await;
    wait_synced_own(&env, &op, "watched", &[("c", "3")]).await;
    assert_eq!(
        fake.count("patch", "secrets"),
        writes + 3,
        "one write per change (restore, spec change), nothing duplicated"
    );
    // The relist after the gap re-checks bindings but writes nothing new.
    let counts: BTreeMap<_, _> = fake.counts();
    eprintln!("request counts: {counts:?}");
    assert_eq!(
        secret_data(&env, "retried").await,
        Some(data(&[("a", "1")]))
    );
}

#[tokio::test]
async fn fifty_bindings_share_five_vault_reads_per_refresh() {
    let env = env().await;
    let bao = BaoAdmin::shared();
    let audit = shared_audit_log();
    let (mount, token) = vault_mount_and_reader(&bao, "e2e-share").await;
    for i in 0..5 {
        bao.put_v2(
            &mount,
            &format!("shared/k{i}"),
            json!({"v": format!("value-{i}")}),
        )
        .await;
    }
    let op = Operator::start(&env, &OperatorOpts::default()).await;
    let mut yaml = vault_source_yaml(&bao.addr, &mount, &token, "  cache: {ttl: 2s}\n");
    for n in 0..50 {
        yaml.push_str("---\n");
        let b = binding(&format!("b{n}"), "vault").refresh("2s");
        yaml.push_str(&shared_keys(b, 5).yaml());
    }
    apply(&env, &yaml).await;
    let want: BTreeMap<String, Vec<u8>> = (0..5)
        .map(|i| (format!("k{i}"), format!("value-{i}").into_bytes()))
        .collect();
    let all_synced = wait_for(Duration::from_secs(60), || async {
        let Ok(list) = bindings(&env).list(&Default::default()).await else {
            return false;
        };
        list.items.len() == 50
            && list.items.iter().all(|b| {
                b.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            })
    })
    .await;
    assert!(all_synced.is_ok(), "not all synced\n{}", op.output());
    for n in [0, 17, 49] {
        assert_eq!(
            secret_data(&env, &format!("b{n}")).await,
            Some(want.clone())
        );
    }

    // Over a 10 s window (about 5 refresh cycles of every binding) each key is read about
    // once per cycle, not once per binding.
    let paths: Vec<String> = (0..5)
        .map(|i| format!("{mount}/data/shared/k{i}"))
        .collect();
    let count = || {
        paths
            .iter()
            .map(|p| count_audit_requests(&audit, p))
            .sum::<usize>()
    };
    let start = count();
    let t0 = Instant::now();
    // Keep the operator busy for the window: the bindings' own refreshes are the load.
    wait_for(Duration::from_secs(15), || async {
        t0.elapsed() >= Duration::from_secs(10)
    })
    .await
    .unwrap();
    let reads = count() - start;
    let cycles = (t0.elapsed().as_secs_f64() / 2.0).ceil() as usize;
    eprintln!("{reads} Vault reads of the 5 shared keys in {cycles} refresh cycles");
    assert!(
        reads > 0,
        "no reads at all: the bindings stopped refreshing"
    );
    assert!(
        reads <= 5 * (cycles + 1),
        "{reads} reads in {cycles} cycles: more than 5 per cycle (50 bindings × 5 keys would be {})",
        50 * 5 * cycles
    );
    let st = bindings(&env).get("b0").await.unwrap().status.unwrap();
    assert!(st.last_sync_time.is_some());
}

/// The API server refuses every request (and drops every watch) for 20 s while a Vault
/// value rotates, as when it is restarted or its node dies. After it is back the Secret
/// follows the new value and the dependent Deployment restarts exactly once within the
/// debounce plus 5 s, and the outage costs a handful of warning lines, not one per retry.
#[tokio::test]
async fn api_server_refusing_everything_for_20s_while_a_value_rotates() {
    let env = env().await;
    if skip_test_without_fake(&env, "refuses every API request for 20 s") {
        return;
    }
    let fake = env.fake().unwrap();
    let bao = BaoAdmin::shared();
    let (mount, token) = vault_mount_and_reader(&bao, "e2e-outage").await;
    bao.put_v2(&mount, "app/db", json!({"password": "before"}))
        .await;
    apply(
        &env,
        &format!(
            r#"{source}
---
{binding}
---
{deployment}"#,
            source = vault_source_yaml(&bao.addr, &mount, &token, ""),
            deployment = deployment_reading("api", "db", "password"),
            binding = binding("db", "vault")
                .refresh("2s")
                .property("password", "app/db", "password")
                .yaml(),
        ),
    )
    .await;
    const DEBOUNCE: Duration = Duration::from_secs(2);
    let op = Operator::start(
        &env,
        &OperatorOpts {
            args: vec![format!("--restart-debounce={}s", DEBOUNCE.as_secs())],
            ..Default::default()
        },
    )
    .await;
    wait_synced(&env, &op, "db", "db", &data(&[("password", "before")])).await;
    let ns = env.namespace.clone();
    // Read in-process during the outage: every HTTP request is refused, the test's too.
    let deployment = || {
        fake.object("apps", "deployments", Some(&ns), "api")
            .unwrap()
    };
    let secret_value = || {
        fake.object("", "secrets", Some(&ns), "db").and_then(|s| {
            s["data"]["password"]
                .as_str()
                .map(|v| String::from_utf8(b64_decode(v)).unwrap())
        })
    };
    wait_for(WAIT, || async {
        deployment()["metadata"]["annotations"]["secretsync.dev/secret-revision"].is_string()
    })
    .await
    .unwrap_or_else(|e| panic!("revision never recorded: {e}\n{}", op.output()));
    let warnings_before = warnings(&op.output());

    fake.close_watches();
    fake.fail_next("*", "*", u32::MAX, 503);
    bao.put_v2(&mount, "app/db", json!({"password": "after"}))
        .await;
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(20) {
        assert_eq!(
            secret_value().as_deref(),
            Some("before"),
            "written during the outage?"
        );
        assert_eq!(
            deployment()["metadata"]["generation"],
            1,
            "restarted during the outage"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    fake.clear_faults();
    let back = Instant::now();

    let limit = DEBOUNCE + Duration::from_secs(5);
    let restarted = wait_until(limit, || async {
        let d = deployment();
        let ok = secret_value().as_deref() == Some("after")
            && d["spec"]["template"]["metadata"]["annotations"]["secretsync.dev/restartedAt"]
                .is_string();
        ok.then_some(())
    })
    .await;
    assert!(
        restarted.is_ok(),
        "not updated and restarted within {limit:?} of recovery\n{}",
        op.output()
    );
    eprintln!(
        "updated and restarted {:?} after the API server was back",
        back.elapsed()
    );
    let once = Instant::now() + Duration::from_secs(3);
    while Instant::now() < once {
        assert_eq!(
            deployment()["metadata"]["generation"],
            2,
            "exactly one restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let output = op.output();
    let outage_warnings = warnings(&output) - warnings_before;
    assert!(
        outage_warnings <= 10,
        "{outage_warnings} warning/error lines about a 20 s outage:\n{output}"
    );
    assert!(
        op.metric("secretsync_watch_retries_total{watch=\"Secret\"}")
            .await
            >= 1.0,
        "watch retries are counted\n{}",
        op.metrics().await
    );
}

fn b64_decode(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// Lines at WARN or ERROR level.
fn warnings(output: &str) -> usize {
    output
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .count()
}
