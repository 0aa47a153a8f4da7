//! End-to-end: restarts beyond managed Secrets. ConfigMaps labelled
//! `secretsync.dev/watch: "true"` restart the Deployments, StatefulSets, DaemonSets and
//! CronJobs that opted in and reference them, exactly once per change, with the same
//! debounce as managed Secrets (one restart for both changing together), never after an
//! operator restart, and within `--max-restarts-per-minute`. Argo Rollouts get
//! `spec.restartAt` while their kind is installed, and no noise while it is not.
//!
//! Restarts are counted as in `e2e_rollout.rs`: a workload's `metadata.generation` moves
//! only when its spec changes, so `generation - 1` is the number of restart patches.

use std::time::Duration;

use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams};
use secretsync_e2e::*;
use secretsync_testkit::harness::wait_until;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(40);
const REVISION: &str = "secretsync.dev/secret-revision";
const RESTARTED_AT: &str = "secretsync.dev/restartedAt";

fn api_version(kind: &str) -> &'static str {
    match kind {
        "CronJob" => "batch/v1",
        "Rollout" => "argoproj.io/v1alpha1",
        _ => "apps/v1",
    }
}

async fn start(env: &TestEnv, identity: &str, args: &[&str]) -> Operator {
    Operator::start(
        env,
        &OperatorOpts {
            identity: identity.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        },
    )
    .await
}

/// A ConfigMap `name` with `data`, labelled as a restart trigger when `watched`.
fn config_map(name: &str, watched: bool, value: &str) -> String {
    let labels = if watched {
        "{secretsync.dev/watch: \"true\"}"
    } else {
        "{}"
    };
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, labels: {labels}}}\ndata: {{setting: \"{value}\"}}\n"
    )
}

/// A Secret `name` labelled as a restart trigger (not written by any binding).
fn labelled_secret(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, labels: {{secretsync.dev/watch: \"true\"}}}}\ndata: {{tls.crt: {}}}\n",
        b64(value)
    )
}

/// A workload of `kind` named `name` with pod spec `pod`, opted in when `opt_in` is set.
fn workload(kind: &str, name: &str, opt_in: Option<&str>, pod: Value) -> String {
    let mut annotations = serde_json::Map::new();
    if let Some(v) = opt_in {
        annotations.insert("secretsync.dev/restart-on-rotation".into(), json!(v));
    }
    let template = json!({"metadata": {"labels": {"app": name}}, "spec": pod});
    let spec = match kind {
        "CronJob" => {
            let mut job_pod = template.clone();
            job_pod["spec"]["restartPolicy"] = json!("OnFailure");
            json!({"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": job_pod}}})
        }
        "StatefulSet" => json!({
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": template,
        }),
        // A Deployment, DaemonSet or Argo Rollout: selector and pod template.
        _ => json!({"selector": {"matchLabels": {"app": name}}, "template": template}),
    };
    let obj = json!({
        "apiVersion": api_version(kind),
        "kind": kind,
        "metadata": {"name": name, "annotations": annotations},
        "spec": spec,
    });
    // JSON is YAML; documents of a stream end in a newline.
    serde_json::to_string(&obj).unwrap_or_default() + "\n"
}

fn env_from_cm(cm: &str) -> Value {
    json!({"containers": [{"name": "app", "image": "app:1", "envFrom": [{"configMapRef": {"name": cm}}]}]})
}

fn env_key_cm(cm: &str) -> Value {
    json!({"containers": [{"name": "app", "image": "app:1", "env": [
        {"name": "SETTING", "valueFrom": {"configMapKeyRef": {"name": cm, "key": "setting"}}}
    ]}]})
}

fn volume_cm(cm: &str) -> Value {
    json!({"containers": [{"name": "app", "image": "app:1"}],
        "volumes": [{"name": "c", "configMap": {"name": cm}}]})
}

fn projected_cm(cm: &str) -> Value {
    json!({"containers": [{"name": "app", "image": "app:1"}],
        "volumes": [{"name": "p", "projected": {"sources": [{"configMap": {"name": cm}}]}}]})
}

async fn object(env: &TestEnv, kind: &str, name: &str) -> Option<Value> {
    let api: Api<DynamicObject> = env.api(api_version(kind), kind, None).await.ok()?;
    let obj = api.get_opt(name).await.ok()??;
    serde_json::to_value(obj).ok()
}

/// Restart patches a workload received (`generation - 1`).
async fn restarts(env: &TestEnv, kind: &str, name: &str) -> i64 {
    let o = object(env, kind, name).await.unwrap_or_default();
    o["metadata"]["generation"].as_i64().unwrap_or(1) - 1
}

async fn revision(env: &TestEnv, kind: &str, name: &str) -> Option<String> {
    let o = object(env, kind, name).await?;
    o["metadata"]["annotations"][REVISION]
        .as_str()
        .map(str::to_string)
}

async fn restarted_at(env: &TestEnv, kind: &str, name: &str) -> Option<String> {
    let o = object(env, kind, name).await?;
    let template = if kind == "CronJob" {
        &o["spec"]["jobTemplate"]["spec"]["template"]
    } else {
        &o["spec"]["template"]
    };
    template["metadata"]["annotations"][RESTARTED_AT]
        .as_str()
        .map(str::to_string)
}

async fn recorded(env: &TestEnv, kind: &str, name: &str, op: &Operator) {
    wait_until(WAIT, || async { revision(env, kind, name).await })
        .await
        .unwrap_or_else(|e| panic!("{kind} {name}: no revision recorded: {e}\n{}", op.output()));
}

async fn restarted(env: &TestEnv, kind: &str, name: &str, within: Duration, op: &Operator) {
    wait_until(within, || async { restarted_at(env, kind, name).await })
        .await
        .unwrap_or_else(|e| panic!("{kind} {name} not restarted: {e}\n{}", op.output()));
}

/// A labelled ConfigMap changes: each opted-in workload kind referencing it (four ways of
/// referencing, and the explicit list) restarts exactly once, as does a Deployment reading
/// a labelled Secret. A workload that does not reference it, one that did
/// not opt in, and one referencing an unlabelled ConfigMap are untouched.
#[tokio::test]
async fn labelled_config_map_restarts_each_referencing_workload_once() {
    let env = env().await;
    let op = start(&env, "op-1", &["--restart-debounce=1s"]).await;
    apply(
        &env,
        &stream(&[
            config_map("app-config", true, "one"),
            config_map("plain", false, "one"),
            workload("Deployment", "dep", Some("true"), env_from_cm("app-config")),
            workload("StatefulSet", "sts", Some("true"), volume_cm("app-config")),
            workload("DaemonSet", "ds", Some("true"), env_key_cm("app-config")),
            workload("CronJob", "cron", Some("true"), projected_cm("app-config")),
            workload(
                "Deployment",
                "explicit",
                Some("configmap/app-config"),
                json!({"containers": [{"name": "app", "image": "app:1"}]}),
            ),
            labelled_secret("app-tls", "one"),
            workload(
                "Deployment",
                "reads-secret",
                Some("true"),
                json!({"containers": [{"name": "app", "image": "app:1"}],
                    "volumes": [{"name": "t", "secret": {"secretName": "app-tls"}}]}),
            ),
            workload(
                "Deployment",
                "unrelated",
                Some("true"),
                env_from_cm("other"),
            ),
            workload(
                "Deployment",
                "not-opted-in",
                None,
                env_from_cm("app-config"),
            ),
            workload(
                "Deployment",
                "unlabelled",
                Some("true"),
                env_from_cm("plain"),
            ),
        ]),
    )
    .await;
    let dependants = [
        ("Deployment", "dep"),
        ("StatefulSet", "sts"),
        ("DaemonSet", "ds"),
        ("CronJob", "cron"),
        ("Deployment", "explicit"),
        ("Deployment", "reads-secret"),
    ];
    for (kind, name) in dependants {
        recorded(&env, kind, name, &op).await;
        assert_eq!(
            restarts(&env, kind, name).await,
            0,
            "{kind} {name}: first sight restarts nothing"
        );
    }

    apply(
        &env,
        &stream(&[
            config_map("app-config", true, "two"),
            config_map("plain", false, "two"),
            labelled_secret("app-tls", "two"),
        ]),
    )
    .await;
    for (kind, name) in dependants {
        restarted(&env, kind, name, WAIT, &op).await;
    }
    holds_for(
        Duration::from_secs(3),
        "exactly one restart each, nothing else",
        async || {
            let mut ok = true;
            for (kind, name) in dependants {
                ok &= restarts(&env, kind, name).await == 1;
            }
            for name in ["unrelated", "not-opted-in", "unlabelled"] {
                ok &= restarts(&env, "Deployment", name).await == 0;
            }
            ok
        },
    )
    .await;
    assert_eq!(revision(&env, "Deployment", "not-opted-in").await, None);
    op.assert_calls_in_rbac_table(&env);
}

/// A Deployment reading a managed Secret and a labelled ConfigMap: both change 2 s apart,
/// inside the debounce, and it restarts once.
#[tokio::test]
async fn a_managed_secret_and_a_config_map_changing_together_restart_once() {
    let env = env().await;
    let op = start(&env, "op-1", &["--restart-debounce=5s"]).await;
    apply(
        &env,
        &stream(&[
            secret("upstream", &format!("{{password: {}}}", b64("one"))),
            source("local", "kubernetes: {}"),
            binding("db", "local").refresh("1h").property("password", "upstream", "password").yaml(),
            config_map("app-config", true, "one"),
            workload(
                "Deployment",
                "api",
                Some("true"),
                json!({"containers": [{"name": "app", "image": "app:1",
                    "envFrom": [{"configMapRef": {"name": "app-config"}}],
                    "env": [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]}]}),
            ),
        ]),
    )
    .await;
    wait_synced_own(&env, &op, "db", &[("password", "one")]).await;
    recorded(&env, "Deployment", "api", &op).await;
    let first = revision(&env, "Deployment", "api").await;

    apply(
        &env,
        &secret("upstream", &format!("{{password: {}}}", b64("two"))),
    )
    .await;
    wait_synced_own(&env, &op, "db", &[("password", "two")]).await;
    // The scenario's gap between the two changes, not a synchronisation.
    tokio::time::sleep(Duration::from_secs(2)).await;
    apply(&env, &config_map("app-config", true, "two")).await;
    restarted(&env, "Deployment", "api", WAIT, &op).await;
    holds_for(
        Duration::from_secs(7),
        "one restart for both changes",
        async || restarts(&env, "Deployment", "api").await == 1,
    )
    .await;
    assert_ne!(revision(&env, "Deployment", "api").await, first);
}

/// An operator restart with nothing changed restarts nothing; an operator killed between
/// a ConfigMap change and the restart restarts exactly once when it comes back.
#[tokio::test]
async fn config_map_restarts_survive_operator_restarts_exactly_once() {
    let env = env().await;
    apply(
        &env,
        &stream(&[
            config_map("app-config", true, "one"),
            workload("Deployment", "api", Some("true"), volume_cm("app-config")),
        ]),
    )
    .await;
    let mut op = start(&env, "op-1", &["--restart-debounce=1s"]).await;
    recorded(&env, "Deployment", "api", &op).await;
    op.sigterm();
    op.wait_exit().await;

    let mut op = start(&env, "op-2", &["--restart-debounce=30s"]).await;
    holds_for(
        Duration::from_secs(3),
        "no restart after an operator restart",
        async || restarts(&env, "Deployment", "api").await == 0,
    )
    .await;
    // Changed, then killed inside the 30 s debounce: nothing was restarted yet.
    apply(&env, &config_map("app-config", true, "two")).await;
    holds_for(Duration::from_secs(2), "debouncing", async || {
        restarts(&env, "Deployment", "api").await == 0
    })
    .await;
    op.process.kill();
    op.wait_exit().await;

    let op = start(&env, "op-3", &["--restart-debounce=1s"]).await;
    restarted(&env, "Deployment", "api", WAIT, &op).await;
    holds_for(Duration::from_secs(3), "exactly one restart", async || {
        restarts(&env, "Deployment", "api").await == 1
    })
    .await;
}

/// `--max-restarts-per-minute 5` with 12 Deployments on one ConfigMap: all 12 restart,
/// each once, in turns, never more than 5 within any 60 s; the waiting ones get a
/// `RolloutDelayed` event.
#[tokio::test]
async fn max_restarts_per_minute_spreads_restarts_and_drops_none() {
    let env = env().await;
    let op = start(
        &env,
        "op-1",
        &["--restart-debounce=1s", "--max-restarts-per-minute=5"],
    )
    .await;
    let names: Vec<String> = (0..12).map(|i| format!("app-{i:02}")).collect();
    let mut docs = vec![config_map("app-config", true, "one")];
    docs.extend(
        names
            .iter()
            .map(|n| workload("Deployment", n, Some("true"), env_from_cm("app-config"))),
    );
    apply(&env, &stream(&docs)).await;
    for n in &names {
        recorded(&env, "Deployment", n, &op).await;
    }

    let api: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(env.client.clone(), &env.namespace);
    api.patch(
        "app-config",
        &PatchParams::default(),
        &Patch::Merge(&json!({"data": {"setting": "two"}})),
    )
    .await
    .unwrap_or_else(|e| panic!("changing the ConfigMap: {e}"));
    // Two full windows and the debounce: 5 now, 5 after 60 s, 2 after 120 s.
    let all_within = Duration::from_secs(150);
    for n in &names {
        restarted(&env, "Deployment", n, all_within, &op).await;
    }
    let mut at = Vec::new();
    for n in &names {
        assert_eq!(
            restarts(&env, "Deployment", n).await,
            1,
            "{n}: exactly one restart"
        );
        let t: k8s_openapi::jiff::Timestamp = restarted_at(&env, "Deployment", n)
            .await
            .unwrap_or_default()
            .parse()
            .unwrap_or_else(|e| panic!("{n}: restartedAt: {e}"));
        at.push(t);
    }
    at.sort();
    for (i, t) in at.iter().enumerate() {
        let within = at[i..]
            .iter()
            .filter(|u| u.duration_since(*t).as_secs_f64() < 60.0)
            .count();
        assert!(
            within <= 5,
            "{within} restarts within 60 s from restart {i}: {at:?}"
        );
    }
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(env.client.clone(), &env.namespace);
    let delayed = events
        .list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("RolloutDelayed"))
        .count();
    assert!(
        delayed >= 7,
        "only {delayed} RolloutDelayed events for 7 waiting restarts\n{}",
        op.output()
    );
    op.assert_calls_in_rbac_table(&env);
}

/// The Rollout CRD, reduced to what the test needs (Argo Rollouts' own is much larger).
const ROLLOUT_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: rollouts.argoproj.io}
spec:
  group: argoproj.io
  names: {kind: Rollout, listKind: RolloutList, plural: rollouts, singular: rollout}
  scope: Namespaced
  versions:
    - name: v1alpha1
      served: true
      storage: true
      subresources: {status: {}}
      schema:
        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

/// Installs the Rollout CRD unless the cluster already has Argo Rollouts; waits until the
/// API server serves the kind.
async fn rollout_kind(env: &TestEnv) {
    if env
        .api("argoproj.io/v1alpha1", "Rollout", None)
        .await
        .is_err()
    {
        apply(env, ROLLOUT_CRD).await;
    }
    wait_until(WAIT, || async {
        env.api("argoproj.io/v1alpha1", "Rollout", None).await.ok()
    })
    .await
    .unwrap_or_else(|e| panic!("the Rollout kind is not served: {e}"));
}

async fn restart_at(env: &TestEnv, name: &str) -> Option<String> {
    let o = object(env, "Rollout", name).await?;
    o["spec"]["restartAt"].as_str().map(str::to_string)
}

/// With the Rollout kind installed, a Rollout reading a managed Secret gets
/// `spec.restartAt` once per rotation (its pod template untouched).
#[tokio::test]
async fn argo_rollout_gets_restart_at_once_per_rotation() {
    let env = env().await;
    rollout_kind(&env).await;
    let op = start(&env, "op-1", &["--restart-debounce=1s"]).await;
    let pw = |v: &str| secret("upstream", &format!("{{password: {}}}", b64(v)));
    apply(
        &env,
        &stream(&[
            pw("one"),
            source("local", "kubernetes: {}"),
            binding("db", "local")
                .refresh("1h")
                .property("password", "upstream", "password")
                .yaml(),
            workload(
                "Rollout",
                "web",
                Some("true"),
                json!({"containers": [{"name": "app", "image": "app:1", "env": [
                    {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}
                ]}]}),
            ),
        ]),
    )
    .await;
    wait_synced_own(&env, &op, "db", &[("password", "one")]).await;
    recorded(&env, "Rollout", "web", &op).await;
    assert_eq!(
        restart_at(&env, "web").await,
        None,
        "first sight restarts nothing"
    );

    let mut last = None;
    for (round, value) in [(1, "two"), (2, "three")] {
        apply(&env, &pw(value)).await;
        wait_synced_own(&env, &op, "db", &[("password", value)]).await;
        let prev = last.clone();
        let at = wait_until(WAIT, || async {
            restart_at(&env, "web")
                .await
                .filter(|t| Some(t) != prev.as_ref())
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "rotation {round}: no new spec.restartAt: {e}\n{}",
                op.output()
            )
        });
        last = Some(at);
        holds_for(
            Duration::from_secs(3),
            "one restart per rotation",
            async || restarts(&env, "Rollout", "web").await == round,
        )
        .await;
    }
    assert_eq!(
        restarted_at(&env, "Rollout", "web").await,
        None,
        "the pod template is left alone"
    );
    op.assert_calls_in_rbac_table(&env);
}

/// Without the Rollout kind the operator says nothing about it above info.
#[tokio::test]
async fn without_argo_rollouts_nothing_is_logged_about_them() {
    let env = env().await;
    if env
        .api("argoproj.io/v1alpha1", "Rollout", None)
        .await
        .is_ok()
    {
        skip_test_without_fake(&env, "a cluster without Argo Rollouts");
        return;
    }
    let op = start(&env, "op-1", &[]).await;
    wait_until(WAIT, || async {
        op.output()
            .contains("rollout reconciler running")
            .then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("the rollout reconciler did not start: {e}\n{}", op.output()));
    let output = op.output();
    let noisy: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("\"WARN\"") || l.contains("\"ERROR\""))
        .filter(|l| l.contains("argoproj") || l.contains("Rollout"))
        .collect();
    assert!(
        noisy.is_empty(),
        "warnings about Argo Rollouts without them: {noisy:#?}"
    );
}
