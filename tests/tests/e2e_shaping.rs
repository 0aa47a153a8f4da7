//! End-to-end: shaping data. Templates from a ConfigMap (`templateFrom`) follow an edit of
//! it within seconds, with no refresh interval involved and no backend read; a missing
//! ConfigMap or key fails the binding and leaves its Secret alone; an `optional` key that
//! appears in the backend later is synced at the next refresh. A distinctive value never
//! reaches the operator's output, events or status through these paths.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use secretsync_e2e::*;
use serde_json::json;

/// How long an edit of a templateFrom ConfigMap may take to reach the Secret: the bindings
/// refresh hourly, so only the ConfigMap's watch can carry it this fast.
const CHANGE_ARRIVES: Duration = Duration::from_secs(10);

/// A ConfigMap `name` whose `data` is the YAML flow mapping `data`.
fn config_map(name: &str, data: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {data}\n")
}

/// A binding `name` on source `vault` with `user` and `password` from Vault key `app/db`,
/// refreshing hourly, whose template is the YAML flow mapping `template`.
fn templated(name: &str, template: &str) -> String {
    binding(name, "vault")
        .refresh("1h")
        .spec(&format!("target: {{template: {template}}}"))
        .property("user", "app/db", "user")
        .property("password", "app/db", "password")
        .yaml()
}

fn from_config_map(cm: &str, keys: &[&str]) -> String {
    let items: Vec<String> = keys.iter().map(|k| format!("{{key: {k}}}")).collect();
    format!(
        "{{templateFrom: [{{configMap: {{name: {cm}, items: [{}]}}}}]}}",
        items.join(", ")
    )
}

/// A Vault mount holding `app/db` (user `shop`, password `password`) and the YAML of a
/// source `vault` reading it: (mount, source YAML).
async fn vault_with_db(bao: &BaoAdmin, tag: &str, password: &str) -> (String, String) {
    let (mount, token) = vault_mount_and_reader(bao, tag).await;
    bao.put_v2(
        &mount,
        "app/db",
        json!({"user": "shop", "password": password}),
    )
    .await;
    let source = vault_source_yaml(&bao.addr, &mount, &token, "");
    (mount, source)
}

/// Waits until Secret `name` holds `want` under `key`, within `within`.
async fn holds(env: &TestEnv, name: &str, key: &str, want: &str, within: Duration) -> bool {
    wait_until(within, || async {
        (secret_value(env, &env.namespace, name, key)
            .await
            .as_deref()
            == Some(want))
        .then_some(())
    })
    .await
    .is_ok()
}

/// Asserts that `canary` is in none of the operator's output, the namespace's events and
/// the bindings' status.
async fn assert_never_shown(env: &TestEnv, op: &Operator, canary: &str) {
    let all = bindings(env).list(&Default::default()).await.unwrap();
    let status =
        serde_json::to_string(&all.items.iter().map(|b| &b.status).collect::<Vec<_>>()).unwrap();
    assert!(
        !status.contains(canary),
        "value leaked into status: {status}"
    );
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(env.client.clone(), &env.namespace);
    let ev = serde_json::to_string(&events.list(&Default::default()).await.unwrap()).unwrap();
    assert!(ev.contains("SyncFailed"), "error events exist: {ev}");
    assert!(!ev.contains(canary), "value leaked into events: {ev}");
    assert!(!op.output().contains(canary), "value leaked into logs");
}

/// A binding renders its Secret from a ConfigMap's template; editing the ConfigMap reaches
/// the Secret within seconds (the binding refreshes hourly) without reading Vault again. A
/// ConfigMap template that fails on the value reports InvalidTemplate without showing it.
#[tokio::test]
async fn a_template_from_config_map_edit_renders_again_within_seconds_without_a_backend_read() {
    let env = env().await;
    let bao = BaoAdmin::shared();
    let audit = shared_audit_log();
    let canary = unique("CANARY-shaping");
    let (mount, source) = vault_with_db(&bao, "e2e-shaping", &canary).await;
    let paths = [format!("{mount}/data/app/db")];
    let op = Operator::start(&env, &OperatorOpts::default()).await;
    let before = audit_reads(&audit, &paths);
    apply(
        &env,
        &stream(&[
            source,
            config_map(
                "db-templates",
                r#"{DATABASE_URL: "postgres://{{ user }}:{{ password }}@db:5432/shop", unused: "{{ nope }}"}"#,
            ),
            config_map("broken-templates", r#"{PORT: "{{ password | int }}"}"#),
            templated("app", &from_config_map("db-templates", &["DATABASE_URL"])),
            templated("broken", &from_config_map("broken-templates", &["PORT"])),
        ]),
    )
    .await;
    let url = |scheme: &str| format!("{scheme}://shop:{canary}@db:5432/shop");
    wait_synced_own(&env, &op, "app", &[("DATABASE_URL", &url("postgres"))]).await;
    let broken = wait_reason(&env, &op, "broken", "InvalidTemplate").await;
    assert!(
        broken
            .message
            .contains(r#"templateFrom[0] (ConfigMap "broken-templates", key "PORT")"#),
        "the error names the ConfigMap and key: {}",
        broken.message
    );
    // Both bindings share the key: the cold start read it once (the audit log is written
    // asynchronously to answering).
    let cold = reads_since(&audit, &paths, before, 1, Duration::from_secs(5)).await;
    assert_eq!(cold, 1, "the shared key is read once on the cold start");
    let synced_at = bindings(&env)
        .get("app")
        .await
        .unwrap()
        .status
        .unwrap()
        .last_sync_time;

    apply(
        &env,
        &config_map(
            "db-templates",
            r#"{DATABASE_URL: "mysql://{{ user }}:{{ password }}@db:5432/shop", unused: "{{ nope }}"}"#,
        ),
    )
    .await;
    assert!(
        holds(&env, "app", "DATABASE_URL", &url("mysql"), CHANGE_ARRIVES).await,
        "the ConfigMap edit did not reach the Secret within {CHANGE_ARRIVES:?}; Ready={:?}\n{}",
        ready(&env, "app").await,
        op.output()
    );
    wait_synced_own(&env, &op, "app", &[("DATABASE_URL", &url("mysql"))]).await;
    holds_for(
        Duration::from_secs(2),
        "a ConfigMap edit reads Vault again",
        || async { audit_reads(&audit, &paths) - before == cold },
    )
    .await;
    let status = bindings(&env).get("app").await.unwrap().status.unwrap();
    assert_eq!(
        status.last_sync_time, synced_at,
        "lastSyncTime records backend reads; a re-render is none"
    );

    assert_never_shown(&env, &op, &canary).await;
    op.assert_calls_in_rbac_table(&env);
}

/// A synced binding whose templateFrom ConfigMap loses the key, then goes away, turns
/// Ready=False with TemplateNotFound naming the ConfigMap and key, and its Secret keeps the
/// last good data; the ConfigMap's return syncs it again.
#[tokio::test]
async fn a_missing_template_from_config_map_or_key_fails_the_binding_and_keeps_the_secret() {
    let env = env().await;
    let bao = BaoAdmin::shared();
    let canary = unique("CANARY-shaping");
    let (_, source) = vault_with_db(&bao, "e2e-shaping-missing", &canary).await;
    let op = Operator::start(&env, &OperatorOpts::default()).await;
    let template = r#"{DATABASE_URL: "postgres://{{ user }}:{{ password }}@db:5432/shop"}"#;
    apply(
        &env,
        &stream(&[
            source,
            config_map("db-templates", template),
            templated("app", &from_config_map("db-templates", &["DATABASE_URL"])),
        ]),
    )
    .await;
    let good = format!("postgres://shop:{canary}@db:5432/shop");
    wait_synced_own(&env, &op, "app", &[("DATABASE_URL", &good)]).await;

    // The key goes away.
    apply(&env, &config_map("db-templates", r#"{OTHER: "x"}"#)).await;
    let c = wait_reason(&env, &op, "app", "TemplateNotFound").await;
    assert!(
        c.message
            .contains(r#"ConfigMap "db-templates" has no key "DATABASE_URL""#),
        "{}",
        c.message
    );
    assert_eq!(
        secret_value(&env, &env.namespace, "app", "DATABASE_URL")
            .await
            .as_deref(),
        Some(good.as_str()),
        "the Secret keeps the last good data"
    );

    // The ConfigMap goes away.
    Api::<ConfigMap>::namespaced(env.client.clone(), &env.namespace)
        .delete("db-templates", &Default::default())
        .await
        .unwrap();
    let gone = wait_until(WAIT, || async {
        ready(&env, "app")
            .await
            .filter(|c| c.reason == "TemplateNotFound" && c.message.contains("not found"))
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}: no TemplateNotFound for the deleted ConfigMap\n{}",
            op.output()
        )
    });
    assert!(
        gone.message
            .contains(r#"ConfigMap "db-templates" (keys "DATABASE_URL")"#),
        "{}",
        gone.message
    );
    assert_eq!(
        secret_value(&env, &env.namespace, "app", "DATABASE_URL")
            .await
            .as_deref(),
        Some(good.as_str()),
        "the Secret keeps the last good data"
    );

    // It comes back: synced again, without waiting for the hourly refresh.
    apply(&env, &config_map("db-templates", template)).await;
    wait_synced_own(&env, &op, "app", &[("DATABASE_URL", &good)]).await;

    assert_never_shown(&env, &op, &canary).await;
    op.assert_calls_in_rbac_table(&env);
}

/// An `optional` key missing from Vault leaves its Secret key out and is listed in
/// `status.missingKeys`; created later, it is in the Secret after the next refresh.
#[tokio::test]
async fn an_optional_key_that_appears_later_is_synced_at_the_next_refresh() {
    let env = env().await;
    let bao = BaoAdmin::shared();
    let (mount, source) = vault_with_db(&bao, "e2e-shaping-optional", "pw").await;
    let op = Operator::start(&env, &OperatorOpts::default()).await;
    let b = binding("app", "vault")
        .refresh("2s")
        .property("user", "app/db", "user")
        .optional_property("flag", "app/flags", "checkout")
        .yaml();
    apply(&env, &stream(&[source, b])).await;
    wait_synced_own(&env, &op, "app", &[("user", "shop")]).await;
    let st = bindings(&env).get("app").await.unwrap().status.unwrap();
    assert_eq!(st.missing_keys, ["app/flags"]);

    bao.put_v2(&mount, "app/flags", json!({"checkout": "on"}))
        .await;
    wait_synced_own(&env, &op, "app", &[("user", "shop"), ("flag", "on")]).await;
    let st = bindings(&env).get("app").await.unwrap().status.unwrap();
    assert!(st.missing_keys.is_empty(), "{:?}", st.missing_keys);
    op.assert_calls_in_rbac_table(&env);
}
