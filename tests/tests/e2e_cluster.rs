//! End-to-end: the cluster kinds. A ClusterSecretSource admits namespaces by label (and
//! never reads for one it refuses), shares one cache across namespaces, and rejects a
//! credential reference without a namespace; a ClusterSecretBinding follows the namespaces
//! it selects. Each test's operator watches every namespace.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use secretsync_api::{ClusterSecretBinding, SecretBinding};
use secretsync_e2e::*;
use serde_json::json;

/// A Secret `vault-token` in `ns` holding the token of `kv`, and a ClusterSecretSource `name`
/// reading its mount with it, admitting the namespaces labelled `selector`
/// (`key: value`).
fn cluster_vault_source(name: &str, ns: &str, kv: &Kv, selector: &str) -> String {
    let (addr, mount) = (&kv.addr, &kv.mount);
    format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: vault-token, namespace: {ns}}}
data: {{token: {token}}}
---
apiVersion: secretsync.dev/v1alpha1
kind: ClusterSecretSource
metadata: {{name: {name}}}
spec:
  namespaceSelector: {{matchLabels: {{{selector}}}}}
  vault:
    server: {addr}
    mount: {mount}
    auth: {{token: {{secretRef: {{namespace: {ns}, name: vault-token, key: token}}}}}}
"#,
        token = b64(&kv.token),
    )
}

/// The shared OpenBao, its audit log, and a fresh KV v2 mount named after `tag` with a
/// token that may only read it: (admin, audit log, mount).
async fn vault(tag: &str) -> (BaoAdmin, std::path::PathBuf, Kv) {
    let bao = BaoAdmin::shared();
    let (mount, token) = vault_mount_and_reader(&bao, tag).await;
    let kv = Kv {
        addr: bao.addr.clone(),
        mount,
        token,
    };
    (bao, shared_audit_log(), kv)
}

/// A KV v2 mount on OpenBao at `addr` and a token that may read it.
struct Kv {
    addr: String,
    mount: String,
    token: String,
}

/// Bindings in two `team=shop` namespaces sync through the cluster source; a binding in
/// a third namespace gets SourceNotAllowed and its key is never read. Relabelling a shop
/// namespace stops its binding (its Secret keeps the data) and labelling it back recovers it.
#[tokio::test]
async fn cluster_source_admits_namespaces_by_label_and_never_reads_for_others() {
    let env = env_all_namespaces().await;
    let (bao, audit, kv) = vault("e2e-cssrc").await;
    bao.put_v2(&kv.mount, "shop/db", json!({"password": "one"}))
        .await;
    bao.put_v2(&kv.mount, "other/db", json!({"password": "not-yours"}))
        .await;
    let refused_path = vec![format!("{}/data/other/db", kv.mount)];
    let source = format!("{}-vault", env.namespace);
    let (shop_a, shop_b, other) = (
        format!("{}-shop-a", env.namespace),
        format!("{}-shop-b", env.namespace),
        format!("{}-other", env.namespace),
    );
    let op = Operator::all_namespaces(&env).await;
    let refused_before = audit_reads(&audit, &refused_path);
    apply(
        &env,
        &stream(&[
            namespace_manifest(&shop_a, "team: shop"),
            namespace_manifest(&shop_b, "team: shop"),
            namespace_manifest(&other, ""),
            cluster_vault_source(&source, &env.namespace, &kv, "team: shop"),
        ]),
    )
    .await;
    let shop_binding = |ns: &str| {
        binding("db", &source)
            .cluster_source()
            .namespace(ns)
            .refresh("2s")
            .property("password", "shop/db", "password")
            .yaml()
    };
    apply(
        &env,
        &stream(&[
            shop_binding(&shop_a),
            shop_binding(&shop_b),
            binding("db", &source)
                .cluster_source()
                .namespace(&other)
                .refresh("2s")
                .property("password", "other/db", "password")
                .yaml(),
        ]),
    )
    .await;
    let names = vec!["db".to_string()];
    for ns in [&shop_a, &shop_b] {
        assert!(
            all_ready(&env, ns, &names, WAIT).await,
            "{ns}/db did not sync through the cluster source; Ready={:?}\n{}",
            ready_in(&env, ns, "db").await,
            op.output()
        );
        assert_eq!(
            secret_value(&env, ns, "db", "password").await.as_deref(),
            Some("one")
        );
    }
    let refused = wait_reason_in(&env, &op, &other, "db", "SourceNotAllowed").await;
    assert!(
        refused.message.contains(&source) && refused.message.contains(&other),
        "the refusal names neither the source nor the namespace: {}",
        refused.message
    );
    assert_eq!(secret_value(&env, &other, "db", "password").await, None);
    // A refused binding keeps retrying on its interval: several 2 s intervals pass while
    // this waits for a read that must not come.
    let leaked = reads_since(
        &audit,
        &refused_path,
        refused_before,
        1,
        Duration::from_secs(6),
    )
    .await;
    assert_eq!(
        leaked, 0,
        "the key of a binding in a namespace the source does not admit was read {leaked} times"
    );

    // shop-b leaves the team: its binding stops and keeps its Secret's data, while shop-a
    // follows a rotation.
    apply(&env, &namespace_manifest(&shop_b, "")).await;
    wait_reason_in(&env, &op, &shop_b, "db", "SourceNotAllowed").await;
    bao.put_v2(&kv.mount, "shop/db", json!({"password": "two"}))
        .await;
    wait_for(WAIT, || async {
        secret_value(&env, &shop_a, "db", "password")
            .await
            .as_deref()
            == Some("two")
    })
    .await
    .unwrap_or_else(|_| panic!("{shop_a}/db did not follow the rotation\n{}", op.output()));
    // Two more intervals of the refused binding: still the last data, still refused.
    let t0 = std::time::Instant::now();
    wait_for(Duration::from_secs(6), || async {
        t0.elapsed() >= Duration::from_secs(4)
    })
    .await
    .unwrap();
    assert_eq!(
        secret_value(&env, &shop_b, "db", "password")
            .await
            .as_deref(),
        Some("one"),
        "a refused binding's Secret must keep its last data"
    );
    assert_eq!(
        ready_in(&env, &shop_b, "db").await.map(|c| c.reason),
        Some("SourceNotAllowed".to_string())
    );

    // Back in the team: it recovers and catches up.
    apply(&env, &namespace_manifest(&shop_b, "team: shop")).await;
    wait_for(WAIT, || async {
        secret_value(&env, &shop_b, "db", "password")
            .await
            .as_deref()
            == Some("two")
            && ready_in(&env, &shop_b, "db")
                .await
                .is_some_and(|c| c.status == "True")
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "{shop_b}/db did not recover after its namespace was labelled again\n{}",
            op.output()
        )
    });
    op.assert_calls_in_rbac_table(&env);
}

/// 30 bindings in 3 namespaces read 5 shared keys through one cluster source: one cache
/// for all of them, so the cold start reads each key once.
#[tokio::test]
async fn thirty_bindings_in_three_namespaces_read_five_shared_keys_five_times() {
    let env = env_all_namespaces().await;
    let (bao, audit, kv) = vault("e2e-cssrc-shared").await;
    for i in 0..5 {
        bao.put_v2(
            &kv.mount,
            &format!("shared/k{i}"),
            json!({"v": format!("v{i}")}),
        )
        .await;
    }
    let paths: Vec<String> = (0..5)
        .map(|i| format!("{}/data/shared/k{i}", kv.mount))
        .collect();
    let source = format!("{}-vault", env.namespace);
    let namespaces: Vec<String> = (0..3).map(|i| format!("{}-t{i}", env.namespace)).collect();
    let mut docs: Vec<String> = namespaces
        .iter()
        .map(|ns| namespace_manifest(ns, "tier: shared"))
        .collect();
    docs.push(cluster_vault_source(
        &source,
        &env.namespace,
        &kv,
        "tier: shared",
    ));
    let names: Vec<String> = (0..10).map(|n| format!("b{n}")).collect();
    for ns in &namespaces {
        for n in &names {
            let b = binding(n, &source).cluster_source().namespace(ns);
            docs.push(shared_keys(b, 5).yaml());
        }
    }
    let before = audit_reads(&audit, &paths);
    let op = Operator::all_namespaces(&env).await;
    apply(&env, &stream(&docs)).await;
    for ns in &namespaces {
        assert!(
            all_ready(&env, ns, &names, WAIT).await,
            "namespace {ns}: not all bindings Ready\n{}",
            op.output()
        );
    }
    assert_eq!(
        secret_value(&env, &namespaces[2], "b9", "k4")
            .await
            .as_deref(),
        Some("v4")
    );
    let cold = reads_since(&audit, &paths, before, 5, Duration::from_secs(5)).await;
    eprintln!("cold start: {cold} reads of 5 keys by 30 bindings in 3 namespaces");
    assert!(
        cold <= 5,
        "the cold start read the 5 shared keys {cold} times (one read per binding would be 150)"
    );
    op.assert_calls_in_rbac_table(&env);
}

/// The generated SecretBinding in namespace `ns`, if any.
async fn generated(env: &TestEnv, ns: &str, name: &str) -> Option<SecretBinding> {
    bindings_in(env, ns).get_opt(name).await.ok()?
}

/// Waits until namespace `ns` holds neither the generated SecretBinding `name` nor its
/// Secret `registry-pull`.
async fn generated_removed(env: &TestEnv, ns: &str, name: &str) -> bool {
    wait_for(WAIT, || async {
        generated(env, ns, name).await.is_none()
            && secrets_in(env, ns)
                .get_opt("registry-pull")
                .await
                .ok()
                .flatten()
                .is_none()
    })
    .await
    .is_ok()
}

/// Waits until the ClusterSecretBinding `name` reports itself provisioned in exactly
/// `want` (sorted), with no failures and Ready=True.
async fn provisioned_in(csbs: &Api<ClusterSecretBinding>, name: &str, want: &[String]) -> bool {
    wait_for(WAIT, || async {
        let Ok(c) = csbs.get(name).await else {
            return false;
        };
        c.status.as_ref().is_some_and(|s| {
            s.namespaces == want
                && s.failed_namespaces.is_empty()
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        })
    })
    .await
    .is_ok()
}

/// Waits until Secret `registry-pull` in `ns` holds the test's registry config.
async fn pull_secret_synced(env: &TestEnv, ns: &str) -> bool {
    wait_for(WAIT, || async {
        secret_value(env, ns, "registry-pull", "config")
            .await
            .as_deref()
            == Some("{\"auths\":{}}")
    })
    .await
    .is_ok()
}

/// A ClusterSecretBinding over namespaces labelled `registry=internal`: a new labelled
/// namespace gets its SecretBinding and Secret, unlabelling removes them, an edit of a
/// generated SecretBinding is reverted, and deleting the ClusterSecretBinding removes
/// everything it created.
#[tokio::test]
async fn cluster_binding_follows_the_namespaces_it_selects() {
    let env = env_all_namespaces().await;
    let source = format!("{}-vault", env.namespace);
    let name = format!("{}-pull", env.namespace);
    let (bao, _, kv) = vault("e2e-csbind").await;
    bao.put_v2(
        &kv.mount,
        "registry/pull",
        json!({"config": "{\"auths\":{}}"}),
    )
    .await;
    let (first, second) = (
        format!("{}-r1", env.namespace),
        format!("{}-r2", env.namespace),
    );
    let op = Operator::all_namespaces(&env).await;
    let cluster_binding = format!(
        r#"apiVersion: secretsync.dev/v1alpha1
kind: ClusterSecretBinding
metadata: {{name: {name}}}
spec:
  namespaceSelector: {{matchLabels: {{registry: internal}}}}
  bindingSpec:
    sourceRef: {{kind: ClusterSecretSource, name: {source}}}
    refreshInterval: 1h
    target: {{name: registry-pull}}
    data:
      - {{secretKey: config, remoteRef: {{key: registry/pull, property: config}}}}
"#
    );
    apply(
        &env,
        &stream(&[
            namespace_manifest(&first, "registry: internal"),
            cluster_vault_source(&source, &env.namespace, &kv, "registry: internal"),
            cluster_binding.clone(),
        ]),
    )
    .await;
    let csbs: Api<ClusterSecretBinding> = Api::all(env.client.clone());
    assert!(
        pull_secret_synced(&env, &first).await,
        "no Secret in {first}\n{}",
        op.output()
    );
    let b = generated(&env, &first, &name)
        .await
        .expect("generated binding");
    assert_eq!(
        b.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("secretsync.dev/cluster-binding")),
        Some(&name)
    );
    assert!(
        provisioned_in(&csbs, &name, std::slice::from_ref(&first)).await,
        "status.namespaces is not [{first}]: {:?}\n{}",
        csbs.get(&name).await.ok().and_then(|c| c.status),
        op.output()
    );

    // A namespace that starts matching gets its binding and Secret.
    apply(&env, &namespace_manifest(&second, "registry: internal")).await;
    assert!(
        pull_secret_synced(&env, &second).await,
        "no Secret in the new namespace {second}\n{}",
        op.output()
    );
    let mut both = vec![first.clone(), second.clone()];
    both.sort();
    assert!(
        provisioned_in(&csbs, &name, &both).await,
        "status.namespaces does not list both namespaces: {:?}",
        csbs.get(&name).await.ok().and_then(|c| c.status)
    );

    // An edit of a generated binding is reverted.
    apply_as(
        &env,
        "someone-else",
        &format!(
            "apiVersion: secretsync.dev/v1alpha1\nkind: SecretBinding\nmetadata: {{name: {name}, namespace: {first}}}\nspec:\n  refreshInterval: 5m\n"
        ),
    )
    .await;
    let reverted = wait_for(WAIT, || async {
        generated(&env, &first, &name)
            .await
            .is_some_and(|b| b.spec.refresh_interval == "1h")
    })
    .await;
    assert!(
        reverted.is_ok(),
        "the edited SecretBinding was not reverted: {:?}\n{}",
        generated(&env, &first, &name).await.map(|b| b.spec),
        op.output()
    );

    // A namespace that stops matching loses its binding and, with it, the Secret.
    apply(&env, &namespace_manifest(&second, "")).await;
    assert!(
        generated_removed(&env, &second, &name).await,
        "the unlabelled namespace kept its binding or Secret\n{}",
        op.output()
    );
    assert!(provisioned_in(&csbs, &name, std::slice::from_ref(&first)).await);

    // Deleting the ClusterSecretBinding removes everything it created.
    csbs.delete(&name, &DeleteParams::default())
        .await
        .expect("deleting the ClusterSecretBinding");
    assert!(
        generated_removed(&env, &first, &name).await,
        "the generated binding or Secret outlived the ClusterSecretBinding\n{}",
        op.output()
    );
    // The namespace itself is untouched.
    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    assert!(namespaces.get_opt(&first).await.unwrap().is_some());
    op.assert_calls_in_rbac_table(&env);
}

/// A ClusterSecretSource whose credential Secret reference has no namespace is refused by
/// the API server, with the field named; nothing is stored.
#[tokio::test]
async fn cluster_source_credential_reference_without_namespace_is_rejected() {
    let env = env().await;
    let name = format!("{}-bad", env.namespace);
    let obj: secretsync_api::ClusterSecretSource = serde_json::from_value(json!({
        "apiVersion": "secretsync.dev/v1alpha1",
        "kind": "ClusterSecretSource",
        "metadata": {"name": name, "labels": {"secretsync.dev/e2e": "true"}},
        "spec": {
            "namespaces": ["shop"],
            "vault": {
                "server": "https://vault.example:8200",
                "auth": {"token": {"secretRef": {"name": "vault-token", "key": "token"}}}
            }
        }
    }))
    .expect("a ClusterSecretSource");
    let api: Api<secretsync_api::ClusterSecretSource> = Api::all(env.client.clone());
    let err = api
        .create(&PostParams::default(), &obj)
        .await
        .expect_err("the API server accepted a cluster source credential without a namespace");
    let kube::Error::Api(status) = err else {
        panic!("not an API error: {err}");
    };
    assert_eq!(status.code, 422, "{status:?}");
    assert!(
        status
            .message
            .contains("spec.vault.auth.token.secretRef.namespace"),
        "the rejection does not name the field: {}",
        status.message
    );
    assert!(api.get_opt(&name).await.unwrap().is_none());
}
