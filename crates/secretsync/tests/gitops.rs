//! The GitOps health checks the README ships (`examples/gitops/`: Argo CD Lua, Flux CEL)
//! judge the status the operator really writes: Healthy / current when the current
//! generation synced, Degraded / failed when Ready is False, Progressing / in progress
//! before the operator caught up. Evaluated by Lua and CEL interpreters from the test
//! venv (`SECRETSYNC_TEST_PYTHON`, see scripts/test-servers.sh).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use std::path::Path;
use std::process::Command;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use secretsync_api::{SecretBinding, SecretBindingSpec, SecretSource, SecretSourceSpec};
use secretsync_backends::BackendError;
use secretsync_controller::binding::plan::{Outcome, next_status};
use secretsync_controller::source::source_status;
use serde_json::Value;

fn evaluate(objects: &[Value]) -> Vec<(String, String)> {
    let python = std::env::var("SECRETSYNC_TEST_PYTHON").expect(
        "SECRETSYNC_TEST_PYTHON is not set: run under scripts/test-servers.sh (make test does)",
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/gitops-health.py");
    let out = Command::new(python)
        .arg(script)
        .arg(serde_json::to_string(objects).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    results
        .iter()
        .map(|r| {
            (
                r["argocd"].as_str().unwrap().to_owned(),
                r["flux"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

fn binding(generation: i64, outcome: Option<(i64, Outcome)>) -> Value {
    let mut b = SecretBinding::new("b", SecretBindingSpec::default());
    b.metadata.generation = Some(generation);
    b.status = outcome.map(|(observed, o)| next_status(None, Some(observed), &o, &now()));
    serde_json::to_value(b).unwrap()
}

fn source(generation: i64, observed: i64, readiness: Result<(), &BackendError>) -> Value {
    let mut s = SecretSource::new("s", SecretSourceSpec::default());
    s.metadata.generation = Some(generation);
    s.status = Some(source_status(None, Some(observed), None, readiness, &now()));
    serde_json::to_value(s).unwrap()
}

#[test]
fn health_checks_follow_ready_and_observed_generation() {
    let synced = || Outcome::Synced {
        keys: vec!["password".into()],
        hash: "h".into(),
        missing: vec![],
        read: true,
    };
    let failed = Outcome::Failed {
        reason: secretsync_api::ConditionReason::SecretNotFound,
        message: "remote key db not found".into(),
    };
    let denied = BackendError::access_denied("token lacks read");
    let cases = [
        (binding(2, Some((2, synced()))), ("Healthy", "current")),
        (
            binding(3, Some((2, synced()))),
            ("Progressing", "inProgress"),
        ),
        (binding(1, Some((1, failed))), ("Degraded", "failed")),
        (binding(1, None), ("Progressing", "inProgress")),
        (source(4, 4, Ok(())), ("Healthy", "current")),
        (source(4, 4, Err(&denied)), ("Degraded", "failed")),
        (source(5, 4, Ok(())), ("Progressing", "inProgress")),
    ];
    let objects: Vec<Value> = cases.iter().map(|(o, _)| o.clone()).collect();
    let got = evaluate(&objects);
    for ((obj, (argo, flux)), (got_argo, got_flux)) in cases.iter().zip(&got) {
        assert_eq!(
            (got_argo.as_str(), got_flux.as_str()),
            (*argo, *flux),
            "for {kind} with metadata {meta} and status {status}",
            kind = obj["kind"],
            meta = obj["metadata"],
            status = obj["status"]
        );
    }
}
