//! The kubernetes backend's Secret provider against the fake API server: only the Secrets
//! asked for are held, reads between changes make no request, and a change or a deletion
//! of a held Secret is reported while changes of unrelated Secrets are not.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use std::time::Duration;

use secretsync_backends::kubernetes::ClusterSecrets;
use secretsync_controller::source::kubernetes::{KubeSecrets, SecretChange};
use secretsync_testkit::FakeApiServer;
use tokio::sync::mpsc::UnboundedReceiver;

const NS: &str = "infra";

fn secret(name: &str, value: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(value);
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {NS}}}\ndata: {{ca.crt: {b64}}}\n"
    )
}

async fn next_change(rx: &mut UnboundedReceiver<SecretChange>) -> SecretChange {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no change reported within 10 s")
        .expect("change channel closed")
}

async fn value(secrets: &KubeSecrets, name: &str) -> Option<String> {
    secrets
        .get(NS, name)
        .await
        .unwrap()
        .map(|d| d["ca.crt"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn only_asked_for_secrets_are_held_and_their_changes_reported() {
    let server = FakeApiServer::start().await.unwrap();
    let mut setup = format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n");
    for i in 0..200 {
        setup.push_str("---\n");
        setup.push_str(&secret(&format!("unrelated-{i}"), "x"));
    }
    setup.push_str("---\n");
    setup.push_str(&secret("ca", "one"));
    server.apply_yaml(&setup).unwrap();
    let (secrets, mut changes) = KubeSecrets::new(server.client().await.unwrap());

    assert_eq!(value(&secrets, "ca").await.as_deref(), Some("one"));
    let gets = server.count("get", "secrets");
    for _ in 0..5 {
        assert_eq!(value(&secrets, "ca").await.as_deref(), Some("one"));
    }
    assert_eq!(
        server.count("get", "secrets"),
        gets,
        "reads of an unchanged Secret are served from memory"
    );
    assert_eq!(value(&secrets, "missing").await, None);
    assert_eq!(
        secrets.held_len(),
        2,
        "only the Secrets asked for are tracked"
    );
    assert_eq!(secrets.watched_namespaces(), [NS]);

    // An unrelated change is not reported; the change of the held Secret is.
    server.apply_yaml(&secret("unrelated-3", "y")).unwrap();
    server.apply_yaml(&secret("ca", "two")).unwrap();
    let change = next_change(&mut changes).await;
    assert_eq!(
        change,
        SecretChange {
            namespace: NS.into(),
            name: "ca".into()
        }
    );
    assert_eq!(value(&secrets, "ca").await.as_deref(), Some("two"));

    // A Secret that was missing and is created is reported too.
    server.apply_yaml(&secret("missing", "new")).unwrap();
    assert_eq!(next_change(&mut changes).await.name, "missing");
    assert_eq!(value(&secrets, "missing").await.as_deref(), Some("new"));

    // A dropped watch re-lists without reporting anything unchanged; a change made
    // afterwards still arrives.
    server.close_watches();
    server.apply_yaml(&secret("ca", "three")).unwrap();
    assert_eq!(next_change(&mut changes).await.name, "ca");
    assert_eq!(value(&secrets, "ca").await.as_deref(), Some("three"));
    assert!(
        changes.try_recv().is_err(),
        "nothing else was reported: {:?}",
        changes.try_recv()
    );
    assert_eq!(secrets.held_len(), 2);
}
