//! The binding reconciler called directly against the fake API server: each test names
//! one behaviour and asserts the exact requests one reconcile made.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod rig;

use std::time::Duration;

use rig::{NS, Rig};
use secretsync_controller::binding::reconcile;
use secretsync_controller::outcome::{ReconcileResult, Reconciled, Requeue};
use secretsync_controller::runtime::ObjKey;
use secretsync_controller::source::AnySource;

const ENV: &str = "DB_USER=shop\nDB_PASSWORD=pw-1\n";

fn binding_yaml(name: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: secretsync.dev/v1alpha1
kind: SecretBinding
metadata: {{name: {name}, namespace: {NS}}}
spec:
  sourceRef: {{name: files}}
  refreshInterval: 1h
{extra}  data:
    - {{secretKey: password, remoteRef: {{key: DB_PASSWORD}}}}
    - {{secretKey: username, remoteRef: {{key: DB_USER}}}}
"#
    )
}

/// A rig with source `files` and binding `app` (Owner policy).
async fn rig_with_binding(extra: &str) -> (Rig, ObjKey) {
    let rig = Rig::new(Duration::from_secs(1)).await;
    rig.file_source("files", "app.env", ENV);
    let key = rig.binding(&binding_yaml("app", extra));
    (rig, key)
}

/// The requests of a first write to the Secret: read it, write it, record it.
const FIRST_WRITE: &[(&str, u64)] = &[
    ("get secrets", 1),
    ("patch secrets", 1),
    ("patch secretbindings/status", 1),
    ("create events", 1),
];

/// The requests of a failure reported without touching the Secret.
const REPORTED: &[(&str, u64)] = &[("patch secretbindings/status", 1), ("create events", 1)];

/// The first sync and the watch event it causes, as in production.
async fn synced(rig: &Rig, key: &ObjKey) {
    let r = reconcile(&rig.ctx, key).await;
    assert_eq!(r.result, ReconcileResult::Written);
    rig.watch_sees_secret(&key.name);
    rig.reload_binding(key);
}

/// Makes the binding's refresh due now, as if its interval had passed: its timer fires, and
/// the values the source's cache holds are as old as the interval (due again).
async fn refresh_due(rig: &Rig, key: &ObjKey) {
    let mut st = rig.ctx.binding_state(key);
    st.memo.as_mut().unwrap().next_refresh = Some(tokio::time::Instant::now());
    rig.ctx.set_binding_state(key, st);
    let src = rig.ctx.sources.get(&rig::source_key("files")).unwrap();
    if let Ok(cache) = &rig
        .ctx
        .registry
        .get(AnySource::Namespaced(&src))
        .await
        .cache
    {
        cache.invalidate_all();
    }
}

#[tokio::test]
async fn first_sync_writes_the_secret_status_and_one_event() {
    let (rig, key) = rig_with_binding("").await;
    let r = rig
        .reconciles(
            reconcile(&rig.ctx, &key),
            ReconcileResult::Written,
            FIRST_WRITE,
        )
        .await;
    assert!(
        matches!(r.requeue, Requeue::After(d) if d > Duration::from_secs(3000) && d < Duration::from_secs(4000)),
        "refresh in 1h ±10%: {r:?}"
    );
    let data = rig.secret_data("app");
    assert_eq!(data["password"], "pw-1");
    assert_eq!(data["username"], "shop");
    let s = rig.secret("app").unwrap();
    assert_eq!(s["metadata"]["labels"]["secretsync.dev/managed"], "true");
    assert_eq!(s["metadata"]["ownerReferences"][0]["kind"], "SecretBinding");
    assert_eq!(rig.ready(&key).1, "Synced");
}

#[tokio::test]
async fn nothing_due_and_the_secret_as_written_costs_no_request() {
    let (rig, key) = rig_with_binding("").await;
    synced(&rig, &key).await;
    rig.reconciles(reconcile(&rig.ctx, &key), ReconcileResult::Unchanged, &[])
        .await;
}

#[tokio::test]
async fn a_due_refresh_of_unchanged_data_writes_nothing_before_the_heartbeat() {
    let (rig, key) = rig_with_binding("").await;
    synced(&rig, &key).await;
    let before = rig.reload_binding(&key).status.unwrap().last_sync_time;
    refresh_due(&rig, &key).await;
    // lastSyncTime would be the only change, and it is younger than the 10m heartbeat.
    rig.reconciles(reconcile(&rig.ctx, &key), ReconcileResult::Unchanged, &[])
        .await;
    assert_eq!(
        rig.reload_binding(&key).status.unwrap().last_sync_time,
        before
    );
}

#[tokio::test]
async fn with_heartbeat_zero_a_due_refresh_writes_last_sync_time() {
    let rig = Rig::with_heartbeat(Duration::from_secs(1), Duration::ZERO).await;
    rig.file_source("files", "app.env", ENV);
    let key = rig.binding(&binding_yaml("app", ""));
    synced(&rig, &key).await;
    refresh_due(&rig, &key).await;
    // Only lastSyncTime moves.
    let only_status = &[("patch secretbindings/status", 1)];
    rig.reconciles(
        reconcile(&rig.ctx, &key),
        ReconcileResult::Unchanged,
        only_status,
    )
    .await;
}

#[tokio::test]
async fn an_edited_secret_is_read_and_restored() {
    let (rig, key) = rig_with_binding("").await;
    synced(&rig, &key).await;
    rig.put_secret("app", "{password: ZWRpdGVk}");
    rig.watch_sees_secret("app");
    // The backend is read again to restore it; the status is the same data as before, so
    // (lastSyncTime being younger than the heartbeat) it is not rewritten.
    let restore = &[
        ("get secrets", 1),
        ("patch secrets", 1),
        ("create events", 1),
    ];
    rig.reconciles(reconcile(&rig.ctx, &key), ReconcileResult::Written, restore)
        .await;
    assert_eq!(rig.secret_data("app")["password"], "pw-1");
}

#[tokio::test]
async fn a_rotated_value_is_written_with_a_rotated_event() {
    let (rig, key) = rig_with_binding("").await;
    synced(&rig, &key).await;
    rig.file("app.env", "DB_USER=shop\nDB_PASSWORD=pw-2\n");
    refresh_due(&rig, &key).await;
    let rotate = &[
        ("patch secrets", 1),
        ("patch secretbindings/status", 1),
        ("create events", 1),
    ];
    rig.reconciles(reconcile(&rig.ctx, &key), ReconcileResult::Written, rotate)
        .await;
    assert_eq!(rig.secret_data("app")["password"], "pw-2");
    let b = rig.reload_binding(&key);
    assert!(b.status.unwrap().last_rotation_time.is_some());
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(rig.ctx.client.clone(), NS);
    let reasons: Vec<String> = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert_eq!(reasons, vec!["Synced", "Rotated"]);
}

#[tokio::test]
async fn a_missing_source_is_reported_and_nothing_is_written() {
    let rig = Rig::new(Duration::from_secs(1)).await;
    let key = rig.binding(&binding_yaml("app", ""));
    let r = rig
        .reconciles(reconcile(&rig.ctx, &key), ReconcileResult::Error, REPORTED)
        .await;
    assert!(
        matches!(r.requeue, Requeue::After(d) if d <= Duration::from_secs(6)),
        "{r:?}"
    );
    let (status, reason, message) = rig.ready(&key);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "SourceNotFound")
    );
    assert!(message.contains("\"files\""), "{message}");
    assert!(rig.secret("app").is_none());
}

#[tokio::test]
async fn a_foreign_secret_is_never_overwritten() {
    let (rig, key) = rig_with_binding("").await;
    rig.put_secret("app", "{mine: eA==}");
    let refused = &[
        ("get secrets", 1),
        ("patch secretbindings/status", 1),
        ("create events", 1),
    ];
    rig.reconciles(reconcile(&rig.ctx, &key), ReconcileResult::Error, refused)
        .await;
    assert_eq!(rig.ready(&key).1, "TargetConflict");
    assert_eq!(
        rig.secret_data("app").keys().collect::<Vec<_>>(),
        vec!["mine"]
    );
}

#[tokio::test]
async fn merge_into_a_missing_secret_adds_the_finalizer_and_writes_nothing() {
    let (rig, key) = rig_with_binding("  target: {creationPolicy: Merge}\n").await;
    let finalized = &[
        ("patch secretbindings", 1),
        ("get secrets", 1),
        ("patch secretbindings/status", 1),
        ("create events", 1),
    ];
    rig.reconciles(reconcile(&rig.ctx, &key), ReconcileResult::Error, finalized)
        .await;
    assert_eq!(rig.ready(&key).1, "TargetNotFound");
    let b = rig.reload_binding(&key);
    assert_eq!(
        b.metadata.finalizers,
        Some(vec!["secretsync.dev/cleanup".into()])
    );
}

#[tokio::test]
async fn merge_writes_only_its_keys_and_removes_them_on_deletion() {
    let (rig, key) = rig_with_binding("  target: {creationPolicy: Merge}\n").await;
    rig.put_secret("app", "{theirs: eA==}");
    let r = reconcile(&rig.ctx, &key).await;
    assert_eq!(r.result, ReconcileResult::Written);
    let keys: Vec<String> = rig.secret_data("app").into_keys().collect();
    assert_eq!(keys, vec!["password", "theirs", "username"]);
    // Deleting: the API server sets deletionTimestamp and keeps the object (finalizer).
    let mut b = rig.reload_binding(&key);
    b.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    rig.ctx.bindings.upsert(key.clone(), b);
    let cleanup = &[
        ("get secrets", 1),
        ("patch secrets", 1),
        ("patch secretbindings", 1),
    ];
    rig.reconciles(reconcile(&rig.ctx, &key), ReconcileResult::Deleted, cleanup)
        .await;
    let keys: Vec<String> = rig.secret_data("app").into_keys().collect();
    assert_eq!(keys, vec!["theirs"], "only the other writer's key is left");
}

#[tokio::test]
async fn a_missing_remote_key_keeps_the_secret_and_backs_off() {
    let (rig, key) = rig_with_binding("").await;
    synced(&rig, &key).await;
    rig.file("app.env", "DB_USER=shop\n");
    refresh_due(&rig, &key).await;
    let r = rig
        .reconciles(reconcile(&rig.ctx, &key), ReconcileResult::Error, REPORTED)
        .await;
    assert!(matches!(r.requeue, Requeue::After(_)), "{r:?}");
    assert_eq!(rig.ready(&key).1, "SecretNotFound");
    assert_eq!(
        rig.secret_data("app")["password"],
        "pw-1",
        "last good data stays"
    );
}

#[tokio::test]
async fn bindings_on_a_failing_key_share_its_backoff_and_one_read() {
    let rig = Rig::new(Duration::from_secs(1)).await;
    rig.file_source("files", "app.env", "DB_USER=shop\n");
    let a = rig.binding(&binding_yaml("a", ""));
    let b = rig.binding(&binding_yaml("b", ""));
    let t0 = tokio::time::Instant::now();
    let ra = reconcile(&rig.ctx, &a).await;
    assert_eq!(ra.result, ReconcileResult::Error);
    let src = rig.ctx.sources.get(&rig::source_key("files")).unwrap();
    let cache = rig
        .ctx
        .registry
        .get(AnySource::Namespaced(&src))
        .await
        .cache
        .clone()
        .unwrap();
    let calls = cache.stats().backend_calls;
    let rb = reconcile(&rig.ctx, &b).await;
    assert_eq!(rb.result, ReconcileResult::Error);
    assert_eq!(rig.ready(&b).1, "SecretNotFound");
    assert_eq!(
        cache.stats().backend_calls,
        calls,
        "the second binding got the key's remembered failure without a read"
    );
    // Both come back when the key is retried (first backoff step: 4-6 s), within a second
    // of each other, instead of each on a backoff of its own.
    let at = |r: &Reconciled| match r.requeue {
        Requeue::After(d) => t0 + d,
        ref other => panic!("{other:?}"),
    };
    let (ta, tb) = (at(&ra), at(&rb));
    for t in [ta, tb] {
        let d = t - t0;
        assert!(
            d >= Duration::from_secs(3) && d <= Duration::from_secs(8),
            "{d:?}"
        );
    }
    let apart = if ta > tb { ta - tb } else { tb - ta };
    assert!(apart <= Duration::from_millis(1100), "{apart:?} apart");
}

#[tokio::test]
async fn a_refused_write_is_write_failed_in_status() {
    let (rig, key) = rig_with_binding("").await;
    rig.server.fail_next("patch", "secrets", 1, 403);
    rig.reconciles(
        reconcile(&rig.ctx, &key),
        ReconcileResult::Error,
        FIRST_WRITE,
    )
    .await;
    let (_, reason, message) = rig.ready(&key);
    assert_eq!(reason, "WriteFailed");
    assert_eq!(message, "writing Secret \"app\" failed: 403 Forbidden");
}

#[tokio::test]
async fn an_unavailable_api_server_is_retried_without_touching_status() {
    let (rig, key) = rig_with_binding("").await;
    rig.server.fail_next("patch", "secrets", 1, 503);
    let attempted = &[("get secrets", 1), ("patch secrets", 1)];
    let r = rig
        .reconciles(reconcile(&rig.ctx, &key), ReconcileResult::Error, attempted)
        .await;
    assert!(
        matches!(r.requeue, Requeue::ApiRetry(_)),
        "parked for the API server: {r:?}"
    );
    assert!(rig.reload_binding(&key).status.is_none());
}

#[tokio::test]
async fn a_bad_refresh_interval_is_invalid_config() {
    let (rig, key) = rig_with_binding("").await;
    // Admission would refuse it; a stored object from an older CRD could still carry it.
    let mut b = rig.reload_binding(&key);
    b.spec.refresh_interval = "every hour".into();
    rig.ctx.bindings.upsert(key.clone(), b);
    rig.reconciles(reconcile(&rig.ctx, &key), ReconcileResult::Error, REPORTED)
        .await;
    let (_, reason, message) = rig.ready(&key);
    assert_eq!(reason, "InvalidConfig");
    assert!(message.starts_with("spec.refreshInterval"), "{message}");
}

#[tokio::test]
async fn a_deleted_binding_is_forgotten() {
    let (rig, key) = rig_with_binding("").await;
    synced(&rig, &key).await;
    rig.ctx.bindings.remove(&key);
    rig.reconciles(reconcile(&rig.ctx, &key), ReconcileResult::Deleted, &[])
        .await;
    assert!(rig.ctx.binding_state(&key).memo.is_none());
}

/// A binding on source `files` with `spec` (YAML lines indented under `spec:`).
fn shaped_binding(rig: &Rig, spec: &str) -> ObjKey {
    rig.binding(&format!(
        "apiVersion: secretsync.dev/v1alpha1\nkind: SecretBinding\nmetadata: {{name: app, namespace: {NS}}}\nspec:\n  sourceRef: {{name: files}}\n  refreshInterval: 1h\n{spec}"
    ))
}

/// The cache forgets what it read of `key`, as once the refresh interval has passed.
async fn forget(rig: &Rig, key: &str) {
    let src = rig.ctx.sources.get(&rig::source_key("files")).unwrap();
    if let Ok(cache) = &rig
        .ctx
        .registry
        .get(AnySource::Namespaced(&src))
        .await
        .cache
    {
        cache.invalidate_key(key);
    }
}

/// An optional key that does not exist is left out, the binding is Synced and
/// `status.missingKeys` names it; once it exists, the next refresh writes it and clears the
/// list. Templated labels reach the Secret.
#[tokio::test]
async fn optional_keys_are_listed_while_missing_and_synced_once_they_appear() {
    let rig = Rig::new(Duration::from_secs(1)).await;
    rig.file_source("files", "app.env", ENV);
    let key = shaped_binding(
        &rig,
        r#"  target:
    template:
      mergePolicy: Merge
      data:
        DATABASE_URL: "postgres://{{ username }}@db/{{ ca | default('no-ca') }}"
      metadata:
        labels:
          db-user: "{{ username }}"
  data:
    - {secretKey: username, remoteRef: {key: DB_USER}}
    - {secretKey: ca, remoteRef: {key: DB_CA}, optional: true}
"#,
    );
    synced(&rig, &key).await;
    assert_eq!(rig.ready(&key).1, "Synced");
    let status = rig.reload_binding(&key).status.unwrap();
    assert_eq!(status.missing_keys, ["DB_CA"]);
    assert_eq!(status.synced_keys, ["DATABASE_URL", "username"]);
    let data = rig.secret_data("app");
    assert_eq!(data["DATABASE_URL"], "postgres://shop@db/no-ca");
    assert!(!data.contains_key("ca"));
    let s = rig.secret("app").unwrap();
    assert_eq!(s["metadata"]["labels"]["db-user"], "shop");
    assert_eq!(s["metadata"]["labels"]["secretsync.dev/managed"], "true");

    // Someone adds the key; at the next refresh it is synced.
    rig.file("app.env", &format!("{ENV}DB_CA=ca-pem\n"));
    refresh_due(&rig, &key).await;
    forget(&rig, "DB_CA").await;
    let r = reconcile(&rig.ctx, &key).await;
    assert_eq!(r.result, ReconcileResult::Written, "{r:?}");
    let data = rig.secret_data("app");
    assert_eq!(data["ca"], "ca-pem");
    assert_eq!(data["DATABASE_URL"], "postgres://shop@db/ca-pem");
    let status = rig.reload_binding(&key).status.unwrap();
    assert!(status.missing_keys.is_empty(), "{status:?}");
}

/// A templated label that changes while the Secret's data does not still rewrites the
/// Secret: what the binding remembers as verified includes the rendered metadata.
#[tokio::test]
async fn a_templated_label_change_alone_rewrites_the_secret() {
    let rig = Rig::new(Duration::from_secs(1)).await;
    rig.file_source("files", "app.env", ENV);
    let key = shaped_binding(
        &rig,
        r#"  target:
    template:
      data:
        fixed: "same data"
      metadata:
        labels:
          db-user: "{{ username }}"
  data:
    - {secretKey: username, remoteRef: {key: DB_USER}}
"#,
    );
    synced(&rig, &key).await;
    let hash = rig.reload_binding(&key).status.unwrap().data_hash;
    rig.file("app.env", "DB_USER=orders\nDB_PASSWORD=pw-1\n");
    refresh_due(&rig, &key).await;
    let r = reconcile(&rig.ctx, &key).await;
    assert_eq!(r.result, ReconcileResult::Written, "{r:?}");
    let s = rig.secret("app").unwrap();
    assert_eq!(s["metadata"]["labels"]["db-user"], "orders");
    assert_eq!(rig.reload_binding(&key).status.unwrap().data_hash, hash);
}

/// A template error in templated metadata is InvalidTemplate naming the label, and the
/// Secret is not touched.
#[tokio::test]
async fn an_invalid_rendered_label_fails_without_touching_the_secret() {
    let rig = Rig::new(Duration::from_secs(1)).await;
    rig.file_source("files", "app.env", ENV);
    let key = shaped_binding(
        &rig,
        r#"  target:
    template:
      metadata:
        labels:
          pw: "{{ password }}!"
  data:
    - {secretKey: password, remoteRef: {key: DB_PASSWORD}}
"#,
    );
    rig.reconciles(
        reconcile(&rig.ctx, &key),
        ReconcileResult::Error,
        &[
            ("get secrets", 1),
            ("patch secretbindings/status", 1),
            ("create events", 1),
        ],
    )
    .await;
    let (status, reason, message) = rig.ready(&key);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "InvalidTemplate")
    );
    assert!(message.contains(r#"metadata.labels["pw"]"#), "{message}");
    assert!(!message.contains("pw-1"), "{message}");
    assert!(rig.secret("app").is_none());
}
