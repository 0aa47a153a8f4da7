//! End-to-end: the kubernetes backend. A ClusterSecretSource copies a Secret of one
//! namespace into team namespaces and a change of it arrives within seconds, with no
//! refresh interval involved; a SecretSource reads its own namespace only (the API server
//! refuses another), Secrets written by secretsync can be read again (chains), and a
//! binding never reads its own target.

use std::time::Duration;

use kube::api::{Api, PostParams};
use secretsync_api::SecretSource;
use secretsync_e2e::*;
use secretsync_testkit::WatchScope;
use secretsync_testkit::harness::wait_until;
use serde_json::json;

/// How long a change of a source Secret may take to reach the bindings' Secrets: the
/// bindings refresh hourly, so only the change event can carry it this fast.
const CHANGE_ARRIVES: Duration = Duration::from_secs(10);

/// A Secret `name` in namespace `ns` whose `ca.crt` is `value`.
fn ca_secret(ns: &str, name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\ndata: {{ca.crt: {}}}\n",
        b64(value)
    )
}

/// Waits until Secret `ns/name` holds `want` under `key`.
async fn holds(
    env: &TestEnv,
    ns: &str,
    name: &str,
    key: &str,
    want: &str,
    within: Duration,
) -> bool {
    wait_until(within, || async {
        (secret_value(env, ns, name, key).await.as_deref() == Some(want)).then_some(())
    })
    .await
    .is_ok()
}

/// A ClusterSecretSource reading namespace `infra` copies its CA Secret into two team
/// namespaces; editing the source Secret reaches both copies within seconds although the
/// bindings refresh only hourly.
#[tokio::test]
async fn cluster_source_copies_a_secret_into_team_namespaces_and_follows_its_changes() {
    let env = env_all_namespaces().await;
    let (infra, team_a, team_b) = (
        format!("{}-infra", env.namespace),
        format!("{}-team-a", env.namespace),
        format!("{}-team-b", env.namespace),
    );
    let source = format!("{}-infra", env.namespace);
    let label = format!("copy-ca: {}", env.namespace);
    let op = Operator::all_namespaces(&env).await;
    apply(
        &env,
        &stream(&[
            namespace_manifest(&infra, ""),
            namespace_manifest(&team_a, &label),
            namespace_manifest(&team_b, &label),
            ca_secret(&infra, "registry-ca", "one"),
            format!(
                "apiVersion: secretsync.dev/v1alpha1\nkind: ClusterSecretSource\nmetadata: {{name: {source}}}\n\
                 spec:\n  namespaceSelector: {{matchLabels: {{{label}}}}}\n  kubernetes: {{namespace: {infra}}}\n"
            ),
        ]),
    )
    .await;
    let copy = |ns: &str| {
        binding("ca", &source)
            .cluster_source()
            .namespace(ns)
            .refresh("1h")
            .property("ca.crt", "registry-ca", "ca.crt")
            .yaml()
    };
    apply(&env, &stream(&[copy(&team_a), copy(&team_b)])).await;
    for ns in [&team_a, &team_b] {
        assert!(
            holds(&env, ns, "ca", "ca.crt", "one", WAIT).await,
            "{ns}/ca did not get the infra Secret; Ready={:?}\n{}",
            ready_in(&env, ns, "ca").await,
            op.output()
        );
    }

    apply(&env, &ca_secret(&infra, "registry-ca", "two")).await;
    for ns in [&team_a, &team_b] {
        assert!(
            holds(&env, ns, "ca", "ca.crt", "two", CHANGE_ARRIVES).await,
            "the change of {infra}/registry-ca did not reach {ns}/ca within {CHANGE_ARRIVES:?}; it holds {:?}\n{}",
            secret_value(&env, ns, "ca", "ca.crt").await,
            op.output()
        );
    }
    op.assert_calls_in_rbac_table(&env);
}

/// A SecretSource reads its own namespace's Secrets: a copy of a Secret, a copy of that
/// copy (a chain through a Secret secretsync wrote) both follow a change at once, and a
/// binding naming its own target gets InvalidConfig.
#[tokio::test]
async fn secret_source_reads_its_namespace_in_chains_but_never_its_own_target() {
    let env = env().await;
    let op = Operator::start(&env, &OperatorOpts::default()).await;
    let ns = env.namespace.clone();
    apply(
        &env,
        &stream(&[
            ca_secret(&ns, "upstream", "one"),
            source("local", "kubernetes: {}"),
            binding("copy", "local")
                .refresh("1h")
                .property("ca.crt", "upstream", "ca.crt")
                .yaml(),
            binding("chain", "local")
                .refresh("1h")
                .property("ca.crt", "copy", "ca.crt")
                .yaml(),
            binding("itself", "local")
                .refresh("1h")
                .property("ca.crt", "itself", "ca.crt")
                .yaml(),
        ]),
    )
    .await;
    for name in ["copy", "chain"] {
        assert!(
            holds(&env, &ns, name, "ca.crt", "one", WAIT).await,
            "{name} did not sync; Ready={:?}\n{}",
            ready(&env, name).await,
            op.output()
        );
    }
    let refused = wait_reason(&env, &op, "itself", "InvalidConfig").await;
    assert!(
        refused.message.contains("own target Secret"),
        "the error does not say why: {}",
        refused.message
    );

    apply(&env, &ca_secret(&ns, "upstream", "two")).await;
    for name in ["copy", "chain"] {
        assert!(
            holds(&env, &ns, name, "ca.crt", "two", CHANGE_ARRIVES).await,
            "the change did not reach {name} within {CHANGE_ARRIVES:?}; it holds {:?}\n{}",
            secret_value(&env, &ns, name, "ca.crt").await,
            op.output()
        );
    }
    op.assert_calls_in_rbac_table(&env);
}

fn kubernetes_source(name: &str, ns: &str, reads: Option<&str>) -> SecretSource {
    let kubernetes = match reads {
        Some(r) => json!({"namespace": r}),
        None => json!({}),
    };
    serde_json::from_value(json!({
        "apiVersion": "secretsync.dev/v1alpha1",
        "kind": "SecretSource",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"kubernetes": kubernetes}
    }))
    .expect("a SecretSource")
}

/// A SecretSource in one namespace naming another in `spec.kubernetes.namespace` is refused
/// by the API server (the chart's ValidatingAdmissionPolicy), with the field named; its own
/// namespace, or none, is accepted.
#[tokio::test]
async fn secret_source_naming_another_namespace_is_rejected_by_the_api_server() {
    let env = env().await;
    // The chart's RBAC and admission policy, as `helm install` creates them.
    env.operator_identity(WatchScope::Namespace, &json!({}))
        .await
        .expect("installing the chart's RBAC and admission policy");
    let ns = env.namespace.clone();
    let infra = format!("{ns}-infra");
    let api: Api<SecretSource> = Api::namespaced(env.client.clone(), &ns);
    // A real API server starts enforcing a new policy within moments, not at once.
    let status = wait_until(WAIT, || async {
        match api
            .create(
                &PostParams::default(),
                &kubernetes_source("elsewhere", &ns, Some(&infra)),
            )
            .await
        {
            Err(kube::Error::Api(s)) => Some(s),
            Ok(_) => {
                let _ = api.delete("elsewhere", &Default::default()).await;
                None
            }
            Err(e) => panic!("not an API error: {e}"),
        }
    })
    .await
    .expect("the API server kept accepting a SecretSource that reads another namespace");
    assert_eq!(status.code, 422, "{status:?}");
    assert!(
        status.message.contains("spec.kubernetes.namespace"),
        "the rejection does not name the field: {}",
        status.message
    );
    assert!(api.get_opt("elsewhere").await.unwrap().is_none());

    for (name, reads) in [("own", Some(ns.as_str())), ("implicit", None)] {
        api.create(&PostParams::default(), &kubernetes_source(name, &ns, reads))
            .await
            .unwrap_or_else(|e| {
                panic!("SecretSource {name} reading its own namespace was refused: {e}")
            });
    }
}
