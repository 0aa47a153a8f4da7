//! End-to-end: what a binding writes and how — data + dataFrom (extract, find) + template
//! into one Secret, key collisions, creation policies (Owner, Merge, Orphan) and bad
//! bindings that must not disturb the others.

use std::path::Path;

use kube::api::DeleteParams;
use secretsync_e2e::*;

const APP_JSON: &str = r#"{
  "api_token": "tok-1",
  "db": {"user": "shop", "password": "pw-1"},
  "feature_a": "on",
  "feature_b": "off",
  "x:y": "colon",
  "x_y": "underscore"
}"#;

/// A file root with `app.json` and `app.env`, and a Json source `json` plus a Dotenv source
/// `dotenv` on them.
async fn file_sources(env: &TestEnv, root: &Path) {
    std::fs::write(root.join("app.json"), APP_JSON).unwrap();
    std::fs::write(root.join("app.env"), "PASSWORD=merge-pw\nUSER=merge-user\n").unwrap();
    let yaml = stream(&[
        file_source("json", root.join("app.json").display(), "Json"),
        file_source("dotenv", root.join("app.env").display(), "Dotenv"),
    ]);
    apply(env, &yaml).await;
}

async fn start(env: &TestEnv, root: &Path) -> Operator {
    Operator::start(
        env,
        &OperatorOpts {
            file_root: Some(root.to_path_buf()),
            ..Default::default()
        },
    )
    .await
}

const COMBINED: &str = r#"
apiVersion: secretsync.dev/v1alpha1
kind: SecretBinding
metadata: {name: combined}
spec:
  sourceRef: {name: json}
  refreshInterval: 1s
  target:
    template:
      mergePolicy: Merge
      data:
        DSN: "postgres://{{ user }}:{{ password }}@db:5432/shop?token={{ token }}"
  data:
    - {secretKey: token, remoteRef: {key: api_token}}
  dataFrom:
    - extract: {key: db}
    - find: {name: "feature_*"}
"#;

fn combined_data(token: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
    let dsn = format!("postgres://shop:pw-1@db:5432/shop?token={token}");
    data(&[
        ("token", token),
        ("user", "shop"),
        ("password", "pw-1"),
        ("feature_a", "on"),
        ("feature_b", "off"),
        ("DSN", &dsn),
    ])
}

#[tokio::test]
async fn data_extract_find_and_template_into_one_secret_and_key_collisions() {
    let env = env().await;
    let root = tempfile::tempdir().unwrap();
    file_sources(&env, root.path()).await;
    let op = start(&env, root.path()).await;
    apply(&env, COMBINED).await;
    wait_synced(&env, &op, "combined", "combined", &combined_data("tok-1")).await;
    let b = bindings(&env).get("combined").await.unwrap();
    let st = b.status.unwrap();
    let mut keys = st.synced_keys.clone();
    keys.sort();
    assert_eq!(
        keys,
        ["DSN", "feature_a", "feature_b", "password", "token", "user"]
    );
    assert_eq!(st.data_hash.as_ref().map(String::len), Some(64));
    let s = secrets(&env).get("combined").await.unwrap();
    assert_eq!(
        s.metadata.annotations.as_ref().unwrap()["secretsync.dev/data-hash"],
        st.data_hash.clone().unwrap()
    );
    assert_eq!(
        s.metadata.labels.as_ref().unwrap()["secretsync.dev/managed"],
        "true"
    );

    // The backend value changes: the next refresh rotates every derived key.
    std::fs::write(
        root.path().join("app.json"),
        APP_JSON.replace("tok-1", "tok-2"),
    )
    .unwrap();
    wait_synced(&env, &op, "combined", "combined", &combined_data("tok-2")).await;
    let st = bindings(&env)
        .get("combined")
        .await
        .unwrap()
        .status
        .unwrap();
    assert!(st.last_rotation_time.is_some(), "{st:?}");

    // Two remote keys landing on one Secret key: KeyCollision naming both, nothing written.
    let collide = binding("collide", "json").spec(r#"dataFrom: [{find: {name: "x*"}}]"#);
    apply(&env, &collide.yaml()).await;
    let c = wait_reason(&env, &op, "collide", "KeyCollision").await;
    assert!(
        c.message.contains("x:y") && c.message.contains("x_y"),
        "{c:?}"
    );
    assert!(secrets(&env).get_opt("collide").await.unwrap().is_none());
    let out = op.output();
    assert!(!out.contains("pw-1") && !out.contains("colon"), "{out}");
}

#[tokio::test]
async fn bad_bindings_get_clear_conditions_and_do_not_affect_others() {
    let env = env().await;
    let root = tempfile::tempdir().unwrap();
    file_sources(&env, root.path()).await;
    let op = start(&env, root.path()).await;
    // The bad ones first, so the good one is queued behind them.
    // A binding extracting `db` into a template of one key, DSN = `dsn`.
    let templated = |name: &str, dsn: &str| {
        binding(name, "json")
            .spec(&format!("target: {{template: {{data: {{DSN: {dsn:?}}}}}}}"))
            .spec("dataFrom: [{extract: {key: db}}]")
            .yaml()
    };
    let yaml = stream(&[
        binding("unknown-source", "does-not-exist")
            .key("a", "api_token")
            .yaml(),
        templated("bad-template", "postgres://{{ user "),
        templated("undefined-variable", "{{ no_such_key }}"),
        binding("missing-key", "json").key("a", "nope").yaml(),
    ]);
    apply(&env, &yaml).await;
    apply(&env, COMBINED).await;
    wait_synced(&env, &op, "combined", "combined", &combined_data("tok-1")).await;

    let c = wait_reason(&env, &op, "unknown-source", "SourceNotFound").await;
    assert!(c.message.contains("does-not-exist"), "{c:?}");
    let c = wait_reason(&env, &op, "bad-template", "InvalidTemplate").await;
    assert!(c.message.contains("DSN"), "{c:?}");
    let c = wait_reason(&env, &op, "undefined-variable", "InvalidTemplate").await;
    assert!(c.message.contains("DSN"), "{c:?}");
    let c = wait_reason(&env, &op, "missing-key", "SecretNotFound").await;
    assert!(c.message.contains("nope"), "{c:?}");
    for name in [
        "unknown-source",
        "bad-template",
        "undefined-variable",
        "missing-key",
    ] {
        assert!(
            secrets(&env).get_opt(name).await.unwrap().is_none(),
            "{name}"
        );
    }

    // The good binding keeps refreshing while the bad ones keep failing.
    std::fs::write(
        root.path().join("app.json"),
        APP_JSON.replace("tok-1", "tok-3"),
    )
    .unwrap();
    wait_synced(&env, &op, "combined", "combined", &combined_data("tok-3")).await;

    // Fixing a bad binding makes it Ready without touching anything else.
    let fixed = binding("unknown-source", "json").key("a", "api_token");
    apply(&env, &fixed.yaml()).await;
    wait_synced_own(&env, &op, "unknown-source", &[("a", "tok-3")]).await;
    let out = op.output();
    assert!(!out.contains("pw-1") && !out.contains("tok-3"), "{out}");
    op.assert_calls_in_rbac_table(&env);
}

#[tokio::test]
async fn creation_policies_owner_merge_orphan() {
    let env = env().await;
    let root = tempfile::tempdir().unwrap();
    file_sources(&env, root.path()).await;
    // Secrets that exist before the operator: one foreign, one to merge into.
    apply_as(
        &env,
        "other-tool",
        &stream(&[
            secret("foreign", &format!("{{mine: {}}}", b64("foreign-value"))),
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: shared, labels: {{team: a}}}}\n\
                 type: Opaque\ndata: {{other: {}}}\n",
                b64("keep-me")
            ),
        ]),
    )
    .await;
    let foreign_before = secrets(&env).get("foreign").await.unwrap();
    let op = start(&env, root.path()).await;
    // A binding on `dotenv` with `target` (none when empty) and key `password`.
    let on_dotenv = |name: &str, target: &str| {
        let b = binding(name, "dotenv");
        let b = if target.is_empty() {
            b
        } else {
            b.spec(&format!("target: {target}"))
        };
        b.key("password", "PASSWORD")
    };
    let yaml = stream(&[
        binding("owner-conflict", "dotenv")
            .spec("target: {name: foreign}")
            .key("mine", "PASSWORD")
            .yaml(),
        on_dotenv("merge", "{name: shared, creationPolicy: Merge}")
            .key("user", "USER")
            .yaml(),
        on_dotenv("merge-missing", "{name: not-there, creationPolicy: Merge}").yaml(),
        on_dotenv("orphan", "{creationPolicy: Orphan}").yaml(),
        on_dotenv("owner", "").yaml(),
    ]);
    apply(&env, &yaml).await;

    // Owner refuses the foreign Secret and leaves it exactly as it was.
    let c = wait_reason(&env, &op, "owner-conflict", "TargetConflict").await;
    assert!(c.message.contains("foreign"), "{c:?}");
    // Merge into a missing Secret: TargetNotFound, nothing created.
    wait_reason(&env, &op, "merge-missing", "TargetNotFound").await;
    assert!(secrets(&env).get_opt("not-there").await.unwrap().is_none());

    wait_synced(
        &env,
        &op,
        "merge",
        "shared",
        &data(&[
            ("other", "keep-me"),
            ("password", "merge-pw"),
            ("user", "merge-user"),
        ]),
    )
    .await;
    wait_synced_own(&env, &op, "orphan", &[("password", "merge-pw")]).await;
    wait_synced_own(&env, &op, "owner", &[("password", "merge-pw")]).await;
    let owner = secrets(&env).get("owner").await.unwrap();
    let refs = owner.metadata.owner_references.unwrap_or_default();
    assert!(
        refs.iter()
            .any(|r| r.kind == "SecretBinding" && r.name == "owner" && r.controller == Some(true)),
        "{refs:?}"
    );
    let orphan = secrets(&env).get("orphan").await.unwrap();
    assert!(
        orphan
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );
    let merge = bindings(&env).get("merge").await.unwrap();
    assert!(
        merge
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"secretsync.dev/cleanup".to_string())
    );
    let foreign_after = secrets(&env).get("foreign").await.unwrap();
    assert_eq!(foreign_after.data, foreign_before.data);
    assert_eq!(
        foreign_after.metadata.labels,
        foreign_before.metadata.labels
    );
    assert_eq!(
        foreign_after.metadata.resource_version, foreign_before.metadata.resource_version,
        "the foreign Secret was written to"
    );

    // Deleting the bindings: Merge removes only its keys, Owner's Secret is garbage
    // collected, Orphan's stays.
    for name in ["merge", "orphan", "owner"] {
        bindings(&env)
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    let gone = wait_for(WAIT, || async {
        let shared = secret_data(&env, "shared").await;
        let bindings_gone = all_bindings_gone(&env, &["merge", "orphan", "owner"]).await;
        let owner_gone = secrets(&env)
            .get_opt("owner")
            .await
            .ok()
            .flatten()
            .is_none();
        bindings_gone && owner_gone && shared == Some(data(&[("other", "keep-me")]))
    })
    .await;
    if gone.is_err() {
        panic!(
            "after deletion: shared={:?} owner secret={:?}\n{}",
            secret_data(&env, "shared").await.as_ref().map(show),
            secret_data(&env, "owner").await.as_ref().map(show),
            op.output()
        );
    }
    let shared = secrets(&env).get("shared").await.unwrap();
    let labels = shared.metadata.labels.unwrap_or_default();
    assert_eq!(labels.get("team").map(String::as_str), Some("a"));
    assert!(!labels.contains_key("secretsync.dev/managed"), "{labels:?}");
    assert_eq!(
        secret_data(&env, "orphan").await,
        Some(data(&[("password", "merge-pw")])),
        "the Orphan Secret must outlive its binding"
    );
    op.assert_calls_in_rbac_table(&env);
}

async fn all_bindings_gone(env: &TestEnv, names: &[&str]) -> bool {
    for n in names {
        if !matches!(bindings(env).get_opt(n).await, Ok(None)) {
            return false;
        }
    }
    true
}
