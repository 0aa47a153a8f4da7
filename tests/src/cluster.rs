//! The test's cluster: a fresh environment with the CRDs, setup through the client, and
//! reading bindings and Secrets back.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::Api;
use secretsync_api::SecretBinding;
use secretsync_testkit::TestEnv;
use secretsync_testkit::harness::{wait_for, wait_until};

use crate::{Operator, WAIT};

/// A fresh environment (fake API server or the real cluster) with the CRDs installed.
pub async fn env() -> TestEnv {
    let env = TestEnv::start().await.expect("test environment");
    env.install_crds().await.expect("installing the CRDs");
    env
}

/// [`env`] for a test whose operator watches every namespace: on a real cluster it runs
/// alone (see `TestEnv::start_exclusive`).
pub async fn env_all_namespaces() -> TestEnv {
    let env = TestEnv::start_exclusive().await.expect("test environment");
    env.install_crds().await.expect("installing the CRDs");
    env
}

/// Environment variable naming a file where skipped tests and assertions are recorded
/// (one line each) for `make test-e2e-cluster`'s summary.
pub const SKIP_REPORT_ENV: &str = "SECRETSYNC_E2E_SKIP_REPORT";

/// The running test's name (libtest names each test's thread after it).
fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unknown test")
        .to_owned()
}

fn record_skip(kind: &str, what: &str) {
    let test = test_name();
    let why = "needs the fake API server's fault injection or request counters";
    eprintln!("SKIPPED {kind} {test}: {what}: {why} (SECRETSYNC_E2E_KUBECONFIG is a real cluster)");
    if let Some(path) = std::env::var_os(SKIP_REPORT_ENV) {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{kind}\t{test}\t{what}: {why}");
        }
    }
}

/// Whether the whole test must be skipped because it needs the fake's fault injection or
/// request accounting; on a real cluster it prints and records why.
pub fn skip_test_without_fake(env: &TestEnv, what: &str) -> bool {
    if env.is_fake() {
        return false;
    }
    record_skip("test", what);
    true
}

/// Whether the assertions described by `what` must be skipped (the rest of the test runs);
/// on a real cluster it prints and records why.
pub fn skip_assertions_without_fake(env: &TestEnv, what: &str) -> bool {
    if env.is_fake() {
        return false;
    }
    record_skip("assertions", what);
    true
}

/// Server-side applies (manager `e2e`, forced) every document of a YAML stream, of any
/// kind; namespaced objects without a namespace land in the environment's namespace.
pub async fn apply(env: &TestEnv, yaml: &str) {
    apply_as(env, "e2e", yaml).await
}

/// [`apply`] with a chosen field manager.
pub async fn apply_as(env: &TestEnv, manager: &str, yaml: &str) {
    if let Err(e) = env.apply_as(manager, yaml).await {
        panic!("{e}\n--- manifest ---\n{yaml}");
    }
}

/// Bindings of the environment's namespace.
pub fn bindings(env: &TestEnv) -> Api<SecretBinding> {
    bindings_in(env, &env.namespace)
}

/// Bindings of namespace `ns`.
pub fn bindings_in(env: &TestEnv, ns: &str) -> Api<SecretBinding> {
    Api::namespaced(env.client.clone(), ns)
}

/// Secrets of the environment's namespace.
pub fn secrets(env: &TestEnv) -> Api<Secret> {
    secrets_in(env, &env.namespace)
}

/// Secrets of namespace `ns`.
pub fn secrets_in(env: &TestEnv, ns: &str) -> Api<Secret> {
    Api::namespaced(env.client.clone(), ns)
}

/// The binding's Ready condition, if any.
pub async fn ready(env: &TestEnv, binding: &str) -> Option<Condition> {
    ready_in(env, &env.namespace, binding).await
}

/// The Ready condition of binding `binding` in namespace `ns`, if any.
pub async fn ready_in(env: &TestEnv, ns: &str, binding: &str) -> Option<Condition> {
    let b = bindings_in(env, ns).get_opt(binding).await.ok()??;
    b.status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
}

/// The value of key `key` in Secret `name` of namespace `ns`, as a string.
pub async fn secret_value(env: &TestEnv, ns: &str, name: &str, key: &str) -> Option<String> {
    let s = secrets_in(env, ns).get_opt(name).await.ok()??;
    let v = s.data?.remove(key)?;
    String::from_utf8(v.0).ok()
}

/// Waits up to `within` until every binding of `names` in `ns` is Ready=True for its
/// current generation.
pub async fn all_ready(env: &TestEnv, ns: &str, names: &[String], within: Duration) -> bool {
    let api = bindings_in(env, ns);
    wait_for(within, || async {
        let Ok(list) = api.list(&Default::default()).await else {
            return false;
        };
        names.iter().all(|n| {
            list.items.iter().any(|b| {
                b.metadata.name.as_deref() == Some(n.as_str())
                    && b.status.as_ref().is_some_and(|s| {
                        s.observed_generation == b.metadata.generation
                            && s.conditions
                                .iter()
                                .any(|c| c.type_ == "Ready" && c.status == "True")
                    })
            })
        })
    })
    .await
    .is_ok()
}

/// Requests for any of `paths` in the OpenBao audit log `audit`.
pub fn audit_reads(audit: &std::path::Path, paths: &[String]) -> usize {
    paths
        .iter()
        .map(|p| secretsync_testkit::bao::count_audit_requests(audit, p))
        .sum()
}

/// A Secret's data as byte vectors.
pub async fn secret_data(env: &TestEnv, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
    let s = secrets(env).get_opt(name).await.ok()??;
    Some(
        s.data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect(),
    )
}

/// Expected Secret data from string pairs.
pub fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect()
}

/// Printable form of Secret data for assertion messages.
pub fn show(d: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, String> {
    d.iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

/// Waits until binding `binding` is Ready=True for its current generation and its target
/// Secret `secret` holds exactly `want`; panics with the operator's output otherwise.
pub async fn wait_synced(
    env: &TestEnv,
    op: &Operator,
    binding: &str,
    secret: &str,
    want: &BTreeMap<String, Vec<u8>>,
) {
    let res = wait_until(WAIT, || async {
        let b = bindings(env).get_opt(binding).await.ok()??;
        let st = b.status.as_ref()?;
        let ok = st.observed_generation == b.metadata.generation
            && st
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True" && c.reason == "Synced");
        // The status describes the Secret's current data (it is written after the Secret).
        let s = secrets(env).get_opt(secret).await.ok()??;
        let hash_ok = s
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("secretsync.dev/data-hash"))
            == st.data_hash.as_ref();
        let got: BTreeMap<String, Vec<u8>> = s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        (ok && hash_ok && &got == want).then_some(())
    })
    .await;
    if res.is_err() {
        panic!(
            "binding {binding}: not synced to {:?} within {WAIT:?}; Ready={:?}; Secret={:?}\n--- operator output ---\n{}",
            show(want),
            ready(env, binding).await,
            secret_data(env, secret).await.as_ref().map(show),
            op.output()
        );
    }
}

/// [`wait_synced`] for a binding writing the Secret of its own name, which must hold
/// exactly the string pairs `want`.
pub async fn wait_synced_own(env: &TestEnv, op: &Operator, binding: &str, want: &[(&str, &str)]) {
    wait_synced(env, op, binding, binding, &data(want)).await
}

/// Polls `check` for `window`, failing as soon as it does not hold: a bounded check that
/// nothing (more) happens, not a synchronisation sleep.
pub async fn holds_for(window: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let end = std::time::Instant::now() + window;
    while std::time::Instant::now() < end {
        assert!(check().await, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(check().await, "{what}");
}

/// Waits until binding `binding` is Ready=False with `reason`; returns the condition.
pub async fn wait_reason(env: &TestEnv, op: &Operator, binding: &str, reason: &str) -> Condition {
    wait_reason_in(env, op, &env.namespace, binding, reason).await
}

/// [`wait_reason`] for a binding in namespace `ns`.
pub async fn wait_reason_in(
    env: &TestEnv,
    op: &Operator,
    ns: &str,
    binding: &str,
    reason: &str,
) -> Condition {
    let res = wait_until(WAIT, || async {
        ready_in(env, ns, binding)
            .await
            .filter(|c| c.status == "False" && c.reason == reason)
    })
    .await;
    match res {
        Ok(c) => c,
        Err(_) => panic!(
            "binding {ns}/{binding}: no Ready=False/{reason} within {WAIT:?}; Ready={:?}\n--- operator output ---\n{}",
            ready_in(env, ns, binding).await,
            op.output()
        ),
    }
}

/// Waits up to `within` until the audit log holds at least `at_least` more requests for
/// `paths` than `before`; returns how many more it holds then (the log is written
/// asynchronously to answering).
pub async fn reads_since(
    audit: &std::path::Path,
    paths: &[String],
    before: usize,
    at_least: usize,
    within: Duration,
) -> usize {
    let _ = wait_for(within, || async {
        audit_reads(audit, paths) - before >= at_least
    })
    .await;
    audit_reads(audit, paths) - before
}

/// Waits until Deployment `name` has its revision recorded (the operator saw it first).
pub async fn wait_revision_recorded(
    deployments: &kube::Api<kube::api::DynamicObject>,
    op: &Operator,
    name: &str,
) {
    wait_for(WAIT, || async {
        deployments.get(name).await.is_ok_and(|d| {
            d.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(secretsync_api::ANNOTATION_SECRET_REVISION))
        })
    })
    .await
    .unwrap_or_else(|_| panic!("revision of {name} never recorded\n{}", op.output()));
}
