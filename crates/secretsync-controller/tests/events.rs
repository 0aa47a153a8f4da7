//! Event publishing against the testkit's fake API server: warnings fold into series,
//! normal events are created one by one (and not kept in the recorder's cache).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use k8s_openapi::api::core::v1::ObjectReference;
use secretsync_controller::events::Events;
use secretsync_controller::runtime::ObjKey;
use secretsync_testkit::FakeApiServer;

#[tokio::test]
async fn warnings_fold_into_series_and_normal_events_are_plain_creates() {
    let server = FakeApiServer::start().await.unwrap();
    server.install_secretsync_crds().unwrap();
    let events = Events::new(server.client().await.unwrap(), "test-instance");
    let key = ObjKey::new("ns", "b");
    let reference = ObjectReference {
        api_version: Some("secretsync.dev/v1alpha1".into()),
        kind: Some("SecretBinding".into()),
        name: Some("b".into()),
        namespace: Some("ns".into()),
        uid: Some("uid-b".into()),
        ..Default::default()
    };
    for _ in 0..2 {
        events
            .publish(&key, &reference, false, "Synced", "written".into())
            .await;
    }
    assert_eq!(server.count("create", "events"), 2);
    assert_eq!(server.count("patch", "events"), 0);
    for _ in 0..2 {
        events
            .publish(&key, &reference, true, "SyncFailed", "failed".into())
            .await;
    }
    assert_eq!(server.count("create", "events"), 3);
    assert_eq!(server.count("patch", "events"), 1, "the repeat is a series");
}

fn binding_ref(ns: &str, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("secretsync.dev/v1alpha1".into()),
        kind: Some("SecretBinding".into()),
        name: Some(name.into()),
        namespace: Some(ns.into()),
        uid: Some(format!("uid-{name}")),
        ..Default::default()
    }
}

#[tokio::test]
async fn fifty_similar_events_are_ten_creates_and_one_summary() {
    let server = FakeApiServer::start().await.unwrap();
    server.install_secretsync_crds().unwrap();
    let events = Events::new(server.client().await.unwrap(), "test-instance");
    for i in 0..50 {
        let name = format!("b{i}");
        events
            .publish(
                &ObjKey::new("ns", &name),
                &binding_ref("ns", &name),
                false,
                "Synced",
                format!("Secret \"{name}\" written (1 key: a)"),
            )
            .await;
    }
    assert_eq!(server.count("create", "events"), 10);
    events.summarise().await;
    assert_eq!(server.count("create", "events"), 11);
    let api: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(server.client().await.unwrap(), "ns");
    let notes: Vec<String> = api
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.note)
        .collect();
    let summary = notes
        .iter()
        .find(|n| n.contains("combined from similar events"))
        .unwrap_or_else(|| panic!("no summary in {notes:?}"));
    assert!(
        summary.starts_with("40 more Synced events in namespace \"ns\"")
            && summary.ends_with("latest: Secret \"b49\" written (1 key: a)"),
        "{summary}"
    );
    // Nothing new folded: the next summary round writes nothing.
    events.summarise().await;
    assert_eq!(server.count("create", "events"), 11);
}
