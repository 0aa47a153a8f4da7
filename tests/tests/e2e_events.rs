//! End-to-end: change events instead of polling. A signed `POST /v1/refresh` makes every
//! binding reading the named key read it now, with one backend read between them; a call
//! that is not signed right changes and reads nothing. An EventBridge-shaped message on an
//! SQS queue (moto) brings a rotation to a binding that never polls, restarts its
//! Deployment once, and is deleted; a poison message is counted and deleted.

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use secretsync_e2e::*;
use serde_json::json;
use sha2::Sha256;

const KEY: &[u8] = b"e2e-webhook-key-0123456789abcdef";
const KEY_SECRET: &str = "webhook-key";

fn sign(key: &[u8], body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// POSTs `body` to `/v1/refresh` with `signature`: (status, answer).
async fn post(addr: &str, body: &str, signature: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
        .post(format!("http://{addr}/v1/refresh"))
        .header("Content-Type", "application/json")
        .body(body.to_string());
    if let Some(s) = signature {
        req = req.header("X-Secretsync-Signature", s);
    }
    let resp = req.send().await.expect("webhook answers");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// Binding `b0`'s Secret keeps the value of the last accepted call for `window`.
async fn b0_stays(env: &TestEnv, window: Duration, what: &str) {
    holds_for(window, what, async || {
        secret_value(env, &env.namespace, "b0", "v")
            .await
            .as_deref()
            == Some("hv-two")
    })
    .await;
}

/// Operator options with the webhook on `addr`, under the chart's RBAC for it.
fn webhook_opts(env: &TestEnv, identity: &str, addr: &str) -> OperatorOpts {
    OperatorOpts {
        identity: identity.into(),
        chart_values: json!({"webhook": {"enabled": true, "existingSecret": KEY_SECRET}}),
        args: vec![
            format!("--webhook-addr={addr}"),
            format!("--webhook-secret={}/{KEY_SECRET}", env.operator_namespace()),
        ],
        ..Default::default()
    }
}

/// Stores the signing key where the chart's Role lets the operator watch it.
async fn create_key_secret(env: &TestEnv) {
    let api: Api<Secret> = Api::namespaced(env.client.clone(), &env.operator_namespace());
    let s = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(KEY_SECRET.into()),
            ..Default::default()
        },
        data: Some([("key".to_string(), ByteString(KEY.to_vec()))].into()),
        ..Default::default()
    };
    api.create(&PostParams::default(), &s)
        .await
        .expect("creating the webhook key Secret");
}

/// 20 bindings share one Vault key, a 21st reads another. One signed call for the shared
/// key brings its new value into all 20 Secrets with one OpenBao read and nothing for the
/// other key; unsigned, mis-signed, oversized, malformed and unknown-source calls change
/// and read nothing, and a standby answers 503.
#[tokio::test]
async fn a_signed_webhook_call_refreshes_every_reader_of_the_key_with_one_read() {
    let env = env().await;
    let bao = BaoAdmin::shared();
    let audit = shared_audit_log();
    let (mount, token) = vault_mount_and_reader(&bao, "e2e-hook").await;
    bao.put_v2(&mount, "shared/hook", json!({"v": "hv-one"}))
        .await;
    bao.put_v2(&mount, "other/key", json!({"v": "x"})).await;
    let hook_path = vec![format!("{mount}/data/shared/hook")];
    let other_path = vec![format!("{mount}/data/other/key")];
    let names: Vec<String> = (0..20).map(|n| format!("b{n}")).collect();
    let mut docs = vec![vault_source_yaml(&bao.addr, &mount, &token, "")];
    for n in &names {
        docs.push(
            binding(n, "vault")
                .refresh("1h")
                .property("v", "shared/hook", "v")
                .yaml(),
        );
    }
    docs.push(
        binding("bystander", "vault")
            .refresh("1h")
            .property("v", "other/key", "v")
            .yaml(),
    );
    let port = free_port().expect("port");
    let addr = format!("127.0.0.1:{port}");
    // Pods named like the two operators (POD_NAME), for the leader label.
    apply(&env, &namespace_manifest(&env.operator_namespace(), "")).await;
    for pod in ["op-1", "op-2"] {
        create_pod(&env, pod).await;
    }
    let mut op = Operator::start(&env, &webhook_opts(&env, "op-1", &addr)).await;
    create_key_secret(&env).await;
    apply(&env, &stream(&docs)).await;
    let mut all = names.clone();
    all.push("bystander".into());
    assert!(
        all_ready(&env, &env.namespace, &all, WAIT).await,
        "bindings not Ready\n{}",
        op.output()
    );
    let source = format!("{}/vault", env.namespace);

    // Ready for calls once the key is loaded and the caches are synced.
    let probe = json!({"source": source, "keys": ["nothing/here"]}).to_string();
    wait_for(WAIT, || async {
        post(&addr, &probe, Some(&sign(KEY, &probe))).await.0 == 202
    })
    .await
    .unwrap_or_else(|_| panic!("webhook never accepted a signed call\n{}", op.output()));

    bao.put_v2(&mount, "shared/hook", json!({"v": "hv-two"}))
        .await;
    let hook_before = audit_reads(&audit, &hook_path);
    let other_before = audit_reads(&audit, &other_path);
    let body = json!({"source": source, "keys": ["shared/hook"]}).to_string();
    let t0 = Instant::now();
    let (status, answer) = post(&addr, &body, Some(&sign(KEY, &body))).await;
    assert_eq!(status, 202, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).expect("JSON answer");
    assert_eq!(answer["bindings"], 20, "{answer}");
    let every = wait_for(WAIT, || async {
        for n in &names {
            if secret_value(&env, &env.namespace, n, "v").await.as_deref() != Some("hv-two") {
                return false;
            }
        }
        true
    })
    .await;
    assert!(
        every.is_ok(),
        "not every Secret followed the call\n{}",
        op.output()
    );
    eprintln!("webhook call → 20 Secrets updated in {:?}", t0.elapsed());
    let reads = reads_since(&audit, &hook_path, hook_before, 1, Duration::from_secs(5)).await;
    assert_eq!(reads, 1, "one OpenBao read of the key for its 20 bindings");
    assert_eq!(
        audit_reads(&audit, &other_path),
        other_before,
        "the other key was not read"
    );
    assert_eq!(
        secret_value(&env, &env.namespace, "bystander", "v")
            .await
            .as_deref(),
        Some("x")
    );

    // Calls that are not signed right, too big, malformed or for an unknown source.
    bao.put_v2(&mount, "shared/hook", json!({"v": "hv-three-canary"}))
        .await;
    let hook_before = audit_reads(&audit, &hook_path);
    let canary =
        json!({"source": source, "keys": ["shared/hook", "canary-e2e-hunter2"]}).to_string();
    assert_eq!(
        post(
            &addr,
            &canary,
            Some(&sign(b"not-the-key-0123456789", &canary))
        )
        .await
        .0,
        401
    );
    assert_eq!(post(&addr, &canary, None).await.0, 401);
    assert_eq!(post(&addr, &canary, Some("sha256=00")).await.0, 401);
    let huge = json!({"source": source, "keys": vec!["k".repeat(1000); 80]}).to_string();
    assert_eq!(post(&addr, &huge, Some(&sign(KEY, &huge))).await.0, 413);
    let unknown =
        json!({"source": format!("{}/nope", env.namespace), "keys": ["shared/hook"]}).to_string();
    assert_eq!(
        post(&addr, &unknown, Some(&sign(KEY, &unknown))).await.0,
        404
    );
    let malformed = r#"{"source": "x"}"#;
    assert_eq!(
        post(&addr, malformed, Some(&sign(KEY, malformed))).await.0,
        400
    );
    b0_stays(
        &env,
        Duration::from_secs(3),
        "nothing changes without a valid call",
    )
    .await;
    assert_eq!(
        audit_reads(&audit, &hook_path),
        hook_before,
        "a refused call read the backend"
    );
    for (result, at_least) in [
        ("accepted", 2.0),
        ("unauthorized", 3.0),
        ("too_large", 1.0),
        ("unknown_source", 1.0),
        ("bad_request", 1.0),
    ] {
        let series = format!("secretsync_events_total{{source=\"webhook\",result=\"{result}\"}}");
        let n = op.metric(&series).await;
        assert!(n >= at_least, "{series} = {n}, want ≥ {at_least}");
    }

    // A standby (same lease, its own listener) acts on nothing.
    let standby_addr = format!("127.0.0.1:{}", free_port().expect("port"));
    let standby = Operator::start(&env, &webhook_opts(&env, "op-2", &standby_addr)).await;
    let refused = wait_for(WAIT, || async {
        let r = reqwest::Client::new()
            .post(format!("http://{standby_addr}/v1/refresh"))
            .header("X-Secretsync-Signature", sign(KEY, &body))
            .body(body.clone())
            .send()
            .await;
        r.is_ok_and(|r| r.status().as_u16() == 503 && r.headers().get("retry-after").is_some())
    })
    .await;
    assert!(
        refused.is_ok(),
        "the standby did not answer 503\n{}",
        standby.output()
    );
    b0_stays(
        &env,
        Duration::from_secs(2),
        "the standby's refusal changes nothing",
    )
    .await;
    // A new key in the Secret: within seconds it signs, and the old one no longer does.
    let new_key = b"e2e-webhook-key-rotated-fedcba9876543210";
    let keys: Api<Secret> = Api::namespaced(env.client.clone(), &env.operator_namespace());
    let patch = json!({"data": {"key": b64(std::str::from_utf8(new_key).unwrap())}});
    keys.patch(
        KEY_SECRET,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .expect("rotating the webhook key");
    let rotated = wait_for(WAIT, || async {
        post(&addr, &probe, Some(&sign(new_key, &probe))).await.0 == 202
    })
    .await;
    assert!(
        rotated.is_ok(),
        "the new key was not taken up\n{}",
        op.output()
    );
    assert_eq!(
        post(&addr, &probe, Some(&sign(KEY, &probe))).await.0,
        401,
        "the old key still signs"
    );
    for out in [op.output(), standby.output()] {
        assert!(
            !out.contains("canary-e2e-hunter2"),
            "a request body reached the log:\n{out}"
        );
        assert!(
            !out.contains("hv-three-canary"),
            "a value reached the log:\n{out}"
        );
    }
    // The leader's pod carries the label the webhook Service selects; the standby's not.
    let labelled = wait_for(WAIT, || async {
        leader_label(&env, "op-1").await.as_deref() == Some("true")
    })
    .await;
    assert!(
        labelled.is_ok(),
        "the leader did not label its pod\n{}",
        op.output()
    );
    assert_eq!(
        leader_label(&env, "op-2").await,
        None,
        "the standby's pod is labelled"
    );
    op.assert_calls_in_rbac_table(&env);
    // A leader that shuts down takes the label with it; the new leader puts it on its pod.
    op.sigterm();
    let _ = op.wait_exit().await;
    assert_eq!(
        leader_label(&env, "op-1").await,
        None,
        "the old leader's pod is still labelled"
    );
    let moved = wait_for(Duration::from_secs(60), || async {
        leader_label(&env, "op-2").await.as_deref() == Some("true")
    })
    .await;
    assert!(
        moved.is_ok(),
        "the new leader did not label its pod\n{}",
        standby.output()
    );
}

/// A pod standing in for an operator replica (never run by the fake; a real cluster runs a
/// pause container).
async fn create_pod(env: &TestEnv, name: &str) {
    use k8s_openapi::api::core::v1::Pod;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10"}]},
    }))
    .expect("Pod");
    Api::<Pod>::namespaced(env.client.clone(), &env.operator_namespace())
        .create(&PostParams::default(), &pod)
        .await
        .expect("creating a Pod");
}

/// The leader label on pod `name` of the operator namespace.
async fn leader_label(env: &TestEnv, name: &str) -> Option<String> {
    use k8s_openapi::api::core::v1::Pod;
    Api::<Pod>::namespaced(env.client.clone(), &env.operator_namespace())
        .get(name)
        .await
        .ok()?
        .metadata
        .labels?
        .get(secretsync_api::LABEL_LEADER)
        .cloned()
}

/// Waits until `secretsync_events_total{source="sqs",result}` counts `what` and the queue
/// is empty.
async fn counted_and_deleted(op: &Operator, endpoint: &str, queue: &str, result: &str, what: &str) {
    let series = format!("secretsync_events_total{{source=\"sqs\",result=\"{result}\"}}");
    let counted = wait_for(WAIT, || async { op.metric(&series).await >= 1.0 }).await;
    assert!(
        counted.is_ok(),
        "{what} was not counted as {result}\n{}",
        op.output()
    );
    let gone = wait_for(WAIT, || async {
        moto_queue_counts(endpoint, queue).await == (0, 0)
    })
    .await;
    assert!(gone.is_ok(), "{what} is still queued\n{}", op.output());
}

fn put_secret_value_event(name: &str) -> String {
    json!({
        "version": "0",
        "id": "2b4f6c1e-0000-4000-8000-000000000001",
        "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.secretsmanager",
        "account": "123456789012",
        "region": "us-east-1",
        "detail": {
            "eventSource": "secretsmanager.amazonaws.com",
            "eventName": "PutSecretValue",
            "requestParameters": {"secretId": name},
        }
    })
    .to_string()
}

/// A binding with `refreshInterval: 0` (no polling) reads an AWS secret; its Deployment
/// opted in to restarts. A PutSecretValue and the matching EventBridge event on the
/// source's queue bring the new value, one restart, and an empty queue; a poison message
/// is counted and deleted.
#[tokio::test]
async fn an_sqs_change_event_syncs_and_restarts_without_polling() {
    let env = env().await;
    let endpoint = required_env("SECRETSYNC_TEST_MOTO_ENDPOINT");
    let prefix = format!("{}/", unique("e2e-events"));
    let name = format!("{prefix}db/password");
    moto_create_secret(&endpoint, &name, "one").await;
    let queue = moto_create_queue(&endpoint, &unique("e2e-changes")).await;
    let aws = moto_source_spec(
        &prefix,
        &endpoint,
        &format!("events: {{sqsQueueUrl: \"{queue}\"}}, "),
    );
    let op = Operator::start(
        &env,
        &OperatorOpts {
            args: vec!["--restart-debounce=1s".into()],
            ..Default::default()
        },
    )
    .await;
    apply(
        &env,
        &stream(&[
            moto_creds_secret(),
            source("aws", &aws),
            deployment_reading("api", "db", "password"),
            binding("db", "aws")
                .refresh("0")
                .key("password", "db/password")
                .yaml(),
        ]),
    )
    .await;
    wait_synced_own(&env, &op, "db", &[("password", "one")]).await;
    let deployments = env
        .api("apps/v1", "Deployment", None)
        .await
        .expect("Deployment API");
    let restarted_at = |d: &kube::api::DynamicObject| {
        d.data["spec"]["template"]["metadata"]["annotations"]["secretsync.dev/restartedAt"]
            .as_str()
            .map(str::to_owned)
    };
    wait_revision_recorded(&deployments, &op, "api").await;
    let generation = deployments.get("api").await.unwrap().metadata.generation;

    moto_put_secret_value(&endpoint, &name, "two").await;
    let t0 = Instant::now();
    moto_send_message(&endpoint, &queue, &put_secret_value_event(&name)).await;
    wait_synced_own(&env, &op, "db", &[("password", "two")]).await;
    eprintln!("SQS event → Secret updated in {:?}", t0.elapsed());
    let restarted = wait_for(WAIT, || async {
        deployments
            .get("api")
            .await
            .is_ok_and(|d| restarted_at(&d).is_some())
    })
    .await;
    assert!(
        restarted.is_ok(),
        "the event did not restart the Deployment\n{}",
        op.output()
    );
    let gone = wait_for(WAIT, || async {
        moto_queue_counts(&endpoint, &queue).await == (0, 0)
    })
    .await;
    assert!(
        gone.is_ok(),
        "the handled message is still queued\n{}",
        op.output()
    );
    holds_for(
        Duration::from_secs(3),
        "one restart for one rotation",
        async || {
            deployments
                .get("api")
                .await
                .is_ok_and(|d| d.metadata.generation == generation.map(|g| g + 1))
        },
    )
    .await;
    assert!(
        op.metric("secretsync_events_total{source=\"sqs\",result=\"applied\"}")
            .await
            >= 1.0
    );

    // An event about a secret no binding reads: counted as ignored and deleted.
    moto_send_message(
        &endpoint,
        &queue,
        &put_secret_value_event(&format!("{prefix}unused")),
    )
    .await;
    counted_and_deleted(&op, &endpoint, &queue, "ignored", "the unrelated event").await;

    // A poison message: counted, deleted, and the consumer keeps going.
    moto_send_message(&endpoint, &queue, "canary-e2e-poison {not json").await;
    counted_and_deleted(&op, &endpoint, &queue, "malformed", "the poison message").await;
    moto_put_secret_value(&endpoint, &name, "three").await;
    moto_send_message(&endpoint, &queue, &put_secret_value_event(&name)).await;
    wait_synced_own(&env, &op, "db", &[("password", "three")]).await;
    let out = op.output();
    assert!(
        !out.contains("canary-e2e-poison"),
        "a message body reached the log:\n{out}"
    );
    op.assert_calls_in_rbac_table(&env);
}

/// Only the leader reads the queues: with the lease held elsewhere, the operator (a
/// standby) leaves a change event in the queue, visible and untouched.
#[tokio::test]
async fn a_standby_leaves_queue_messages_alone() {
    use k8s_openapi::api::coordination::v1::Lease;
    let env = env().await;
    let endpoint = required_env("SECRETSYNC_TEST_MOTO_ENDPOINT");
    let prefix = format!("{}/", unique("e2e-standby"));
    let name = format!("{prefix}db/password");
    moto_create_secret(&endpoint, &name, "one").await;
    let queue = moto_create_queue(&endpoint, &unique("e2e-standby")).await;
    let op_ns = env.operator_namespace();
    apply(&env, &namespace_manifest(&op_ns, "")).await;
    // Another process holds the lease for the whole test.
    let now = k8s_openapi::jiff::Timestamp::now();
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "secretsync-leader"},
        "spec": {
            "holderIdentity": "elsewhere",
            "leaseDurationSeconds": 3600,
            "acquireTime": now.to_string(),
            "renewTime": now.to_string(),
        }
    }))
    .expect("Lease");
    Api::<Lease>::namespaced(env.client.clone(), &op_ns)
        .create(&PostParams::default(), &lease)
        .await
        .expect("creating the Lease");
    let op = Operator::start(&env, &OperatorOpts::default()).await;
    wait_for(WAIT, || async {
        http_get(&format!("http://{}/readyz", op.health_addr))
            .await
            .is_some_and(|(status, _)| status == 200)
    })
    .await
    .unwrap_or_else(|_| panic!("standby never ready\n{}", op.output()));
    let aws = moto_source_spec(
        &prefix,
        &endpoint,
        &format!("events: {{sqsQueueUrl: \"{queue}\"}}, "),
    );
    apply(
        &env,
        &stream(&[
            moto_creds_secret(),
            source("aws", &aws),
            binding("db", "aws")
                .refresh("0")
                .key("password", "db/password")
                .yaml(),
        ]),
    )
    .await;
    moto_send_message(&endpoint, &queue, &put_secret_value_event(&name)).await;
    holds_for(
        Duration::from_secs(6),
        "the message stays queued and visible",
        async || moto_queue_counts(&endpoint, &queue).await == (1, 0),
    )
    .await;
    let out = op.output();
    assert!(
        !out.contains("change queue: reading"),
        "a standby read the queue:\n{out}"
    );
}
