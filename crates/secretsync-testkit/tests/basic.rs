//! Conformance of the fake API server through `kube::Client`: CRUD, selectors, pagination,
//! optimistic concurrency, validation, finalizers, garbage collection, patches, faults.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use secretsync_testkit::FakeApiServer;
use secretsync_testkit::harness::wait_for;
use serde_json::json;
use support::{api_err, merge, setup};

mod support;

/// Secret `name` with `labels`, holding `k: v`.
fn secret(name: &str, labels: &[(&str, &str)]) -> Secret {
    let mut s = support::secret(name, labels);
    s.data = Some(BTreeMap::from([(
        "k".to_string(),
        ByteString(b"v".to_vec()),
    )]));
    s
}

/// The names of the Secrets `lp` lists, in the order listed.
async fn names(api: &Api<Secret>, lp: &ListParams) -> Vec<String> {
    let list = api.list(lp).await.unwrap();
    list.items.iter().map(|s| s.name_any()).collect()
}

/// Creates Secret `name` (no labels) through `api`.
async fn create_secret(api: &Api<Secret>, name: &str) {
    api.create(&PostParams::default(), &secret(name, &[]))
        .await
        .unwrap();
}

fn cm(name: &str) -> ConfigMap {
    let mut c = ConfigMap::default();
    c.metadata.name = Some(name.into());
    c.data = Some(BTreeMap::from([("a".to_string(), "1".to_string())]));
    c
}

#[tokio::test]
async fn crud_roundtrip() {
    let (_s, client) = setup().await;
    let api: Api<Secret> = Api::namespaced(client, "ns1");
    let created = api
        .create(&PostParams::default(), &secret("a", &[]))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.resource_version.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(created.metadata.generation, None);
    assert_eq!(created.type_.as_deref(), Some("Opaque"));
    let got = api.get("a").await.unwrap();
    assert_eq!(got.data.unwrap()["k"].0, b"v");
    let err = api_err(
        api.create(&PostParams::default(), &secret("a", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));
    let err = api_err(api.get("nope").await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
    api.delete("a", &DeleteParams::default()).await.unwrap();
    assert!(api.get_opt("a").await.unwrap().is_none());
}

#[tokio::test]
async fn generate_name_and_string_data() {
    let (_s, client) = setup().await;
    let api: Api<Secret> = Api::namespaced(client, "ns1");
    let mut s = Secret::default();
    s.metadata.generate_name = Some("gen-".into());
    s.string_data = Some(BTreeMap::from([("p".to_string(), "hello".to_string())]));
    let created = api.create(&PostParams::default(), &s).await.unwrap();
    let name = created.name_any();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
    assert_eq!(created.data.unwrap()["p"].0, b"hello");
    assert!(created.string_data.is_none());
}

#[tokio::test]
async fn label_selectors() {
    let (_s, client) = setup().await;
    let api: Api<Secret> = Api::namespaced(client, "sel");
    for (n, l) in [
        ("a", vec![("app", "web"), ("tier", "fe")]),
        ("b", vec![("app", "db")]),
        ("c", vec![("app", "cache"), ("tier", "be")]),
        ("d", vec![]),
    ] {
        api.create(&PostParams::default(), &secret(n, &l))
            .await
            .unwrap();
    }
    let selected = |sel: &'static str| {
        let api = api.clone();
        async move {
            let mut v = names(&api, &ListParams::default().labels(sel)).await;
            v.sort();
            v.join(",")
        }
    };
    assert_eq!(selected("app=web").await, "a");
    assert_eq!(selected("app==db").await, "b");
    assert_eq!(selected("app!=web").await, "b,c,d");
    assert_eq!(selected("app in (web,db)").await, "a,b");
    assert_eq!(selected("app notin (web,db)").await, "c,d");
    assert_eq!(selected("tier").await, "a,c");
    assert_eq!(selected("!tier").await, "b,d");
    assert_eq!(selected("app,!tier").await, "b");
    assert_eq!(selected("").await, "a,b,c,d");
}

#[tokio::test]
async fn field_selectors_and_cluster_wide_list() {
    let (_s, client) = setup().await;
    for ns in ["n1", "n2"] {
        let api: Api<Secret> = Api::namespaced(client.clone(), ns);
        create_secret(&api, "x").await;
        create_secret(&api, "y").await;
    }
    let all: Api<Secret> = Api::all(client.clone());
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        4
    );
    let xs = all
        .list(&ListParams::default().fields("metadata.name=x"))
        .await
        .unwrap();
    assert_eq!(xs.items.len(), 2);
    let n2 = all
        .list(&ListParams::default().fields("metadata.namespace=n2,metadata.name!=x"))
        .await
        .unwrap();
    assert_eq!(n2.items.len(), 1);
    assert_eq!(n2.items[0].namespace().as_deref(), Some("n2"));
}

#[tokio::test]
async fn pagination() {
    let (_s, client) = setup().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "pg");
    for i in 0..7 {
        api.create(&PostParams::default(), &cm(&format!("cm-{i}")))
            .await
            .unwrap();
    }
    let mut lp = ListParams::default().limit(3);
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = api.list(&lp).await.unwrap();
        pages += 1;
        seen.extend(page.items.iter().map(|c| c.name_any()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => {
                assert!(page.metadata.remaining_item_count.unwrap() > 0);
                lp = lp.continue_token(&c);
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let want: Vec<String> = (0..7).map(|i| format!("cm-{i}")).collect();
    assert_eq!(seen, want);
}

/// Replaces ConfigMap `c` (its resourceVersion is the precondition).
async fn replace(api: &Api<ConfigMap>, c: &ConfigMap) -> kube::Result<ConfigMap> {
    api.replace("c", &PostParams::default(), c).await
}

#[tokio::test]
async fn optimistic_concurrency() {
    let (_s, client) = setup().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "oc");
    api.create(&PostParams::default(), &cm("c")).await.unwrap();
    let mut first = api.get("c").await.unwrap();
    let mut second = first.clone();
    first.data = Some(BTreeMap::from([("a".into(), "2".into())]));
    let updated = replace(&api, &first).await.unwrap();
    assert_ne!(
        updated.metadata.resource_version,
        second.metadata.resource_version
    );
    second.data = Some(BTreeMap::from([("a".into(), "3".into())]));
    let err = api_err(replace(&api, &second).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    // a no-op update keeps the resource version
    let again = replace(&api, &updated).await.unwrap();
    assert_eq!(
        again.metadata.resource_version,
        updated.metadata.resource_version
    );
}

#[tokio::test]
async fn validation_errors() {
    let (_s, client) = setup().await;
    let api: Api<Secret> = Api::namespaced(client, "v");
    create_secret(&api, "ok").await;
    let err = api_err(
        api.patch(
            "ok",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"bad": "not base64!"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    let causes = err.details.unwrap().causes;
    assert_eq!(causes[0].field, "data[bad]");
    let err = api_err(
        api.create(&PostParams::default(), &secret("Bad_Name", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    assert!(err.message.contains("metadata.name"), "{}", err.message);
    let mut nameless = secret("x", &[]);
    nameless.metadata.name = None;
    let err = api_err(
        api.create(&PostParams::default(), &nameless)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);
}

#[tokio::test]
async fn finalizer_blocks_deletion() {
    let (_s, client) = setup().await;
    let api: Api<Secret> = Api::namespaced(client, "fin");
    let mut s = secret("f", &[]);
    s.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    api.create(&PostParams::default(), &s).await.unwrap();
    let res = api.delete("f", &DeleteParams::default()).await.unwrap();
    let pending = res
        .left()
        .expect("object returned while finalizers pending");
    assert!(pending.metadata.deletion_timestamp.is_some());
    let still = api.get("f").await.unwrap();
    assert!(still.metadata.deletion_timestamp.is_some());
    merge(&api, "f", json!({"metadata": {"finalizers": null}})).await;
    assert!(api.get_opt("f").await.unwrap().is_none());
}

fn owner_ref(c: &ConfigMap) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: c.name_any(),
        uid: c.uid().unwrap(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

#[tokio::test]
async fn garbage_collection_of_owned_objects() {
    let (_s, client) = setup().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "gc");
    let secrets: Api<Secret> = Api::namespaced(client, "gc");
    let o1 = cms.create(&PostParams::default(), &cm("o1")).await.unwrap();
    let o2 = cms.create(&PostParams::default(), &cm("o2")).await.unwrap();
    let mut single = secret("single", &[]);
    single.metadata.owner_references = Some(vec![owner_ref(&o1)]);
    secrets
        .create(&PostParams::default(), &single)
        .await
        .unwrap();
    let mut shared = secret("shared", &[]);
    let mut r2 = owner_ref(&o2);
    r2.controller = None;
    shared.metadata.owner_references = Some(vec![owner_ref(&o1), r2]);
    secrets
        .create(&PostParams::default(), &shared)
        .await
        .unwrap();

    cms.delete("o1", &DeleteParams::default()).await.unwrap();
    wait_for(Duration::from_secs(5), || async {
        secrets.get_opt("single").await.unwrap().is_none()
    })
    .await
    .unwrap();
    let s = secrets.get("shared").await.unwrap();
    let refs = s.metadata.owner_references.unwrap();
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0].name, "o2");

    cms.delete("o2", &DeleteParams::default()).await.unwrap();
    wait_for(Duration::from_secs(5), || async {
        secrets.get_opt("shared").await.unwrap().is_none()
    })
    .await
    .unwrap();

    // orphan propagation keeps dependents
    let o3 = cms.create(&PostParams::default(), &cm("o3")).await.unwrap();
    let mut kept = secret("kept", &[]);
    kept.metadata.owner_references = Some(vec![owner_ref(&o3)]);
    secrets.create(&PostParams::default(), &kept).await.unwrap();
    cms.delete("o3", &DeleteParams::orphan()).await.unwrap();
    let k = secrets.get("kept").await.unwrap();
    assert!(k.metadata.owner_references.is_none());
}

#[tokio::test]
async fn patch_types() {
    let (_s, client) = setup().await;
    let api: Api<Deployment> = Api::namespaced(client.clone(), "p");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [
                    {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}]},
                    {"name": "side", "image": "side:1"}
                ]}
            }
        }
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &d).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(created.spec.replicas, Some(1), "defaulted");
    let patched = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {
                "metadata": {"annotations": {"secretsync.dev/restartedAt": "now"}},
                "spec": {"containers": [{"name": "app", "env": [{"name": "B", "value": "2"}]}]}
            }}})),
        )
        .await
        .unwrap();
    let spec = patched.spec.template.spec.unwrap();
    assert_eq!(spec.containers.len(), 2);
    assert_eq!(spec.containers[0].image.as_deref(), Some("app:1"));
    let env: Vec<String> = spec.containers[0]
        .env
        .clone()
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(env, ["A", "B"]);
    assert_eq!(patched.metadata.generation, Some(2));

    // label-only change: generation unchanged
    let labelled = merge(&api, "web", json!({"metadata": {"labels": {"x": "y"}}})).await;
    assert_eq!(labelled.metadata.generation, Some(2));

    // status subresource: main writes ignore status, status writes keep generation
    let st = api
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(st.status.unwrap().replicas, Some(3));
    assert_eq!(st.metadata.generation, Some(2));
    let ignored = merge(&api, "web", json!({"status": {"replicas": 9}})).await;
    assert_eq!(ignored.status.unwrap().replicas, Some(3));

    let cms: Api<ConfigMap> = Api::namespaced(client, "p");
    cms.create(&PostParams::default(), &cm("j")).await.unwrap();
    let jp: json_patch::Patch = serde_json::from_value(json!([
        {"op": "add", "path": "/data/b", "value": "2"},
        {"op": "remove", "path": "/data/a"}
    ]))
    .unwrap();
    let out = cms
        .patch("j", &PatchParams::default(), &Patch::<()>::Json(jp))
        .await
        .unwrap();
    assert_eq!(
        out.data.unwrap(),
        BTreeMap::from([("b".to_string(), "2".to_string())])
    );
}

#[tokio::test]
async fn fault_injection_then_success() {
    let (server, client) = setup().await;
    let api: Api<Secret> = Api::namespaced(client.clone(), "f");
    create_secret(&api, "s").await;
    server.reset_counts();
    server.fail_next("get", "secrets", 2, 500);
    for _ in 0..2 {
        let err = api_err(api.get("s").await.unwrap_err());
        assert_eq!((err.code, err.reason.as_str()), (500, "InternalError"));
    }
    api.get("s").await.unwrap();
    assert_eq!(server.count("get", "secrets"), 3);

    // the same over HTTP
    let req = |method: &str, path: &str, body: serde_json::Value| {
        http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap())
            .unwrap()
    };
    client
        .request_text(req(
            "POST",
            "/_testkit/faults",
            json!({"verb": "list", "resource": "secrets", "count": 1, "code": 503}),
        ))
        .await
        .unwrap();
    // kube's client retries a 503 by itself: one failure, one success
    api.list(&ListParams::default()).await.unwrap();
    let counts: serde_json::Value = client
        .request(req("GET", "/_testkit/counts", json!(null)))
        .await
        .unwrap();
    let list_count = counts["counts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["verb"] == "list" && c["resource"] == "secrets")
        .unwrap()["count"]
        .clone();
    assert_eq!(list_count, json!(2));
    client
        .request_text(req("POST", "/_testkit/counts/reset", json!(null)))
        .await
        .unwrap();
    assert_eq!(server.count("list", "secrets"), 0);
}

#[tokio::test]
async fn latency_and_pause() {
    let (server, client) = setup().await;
    let api: Api<Secret> = Api::namespaced(client, "l");
    create_secret(&api, "s").await;
    server.add_latency("get", "secrets", Duration::from_millis(300), Some(1));
    let t = Instant::now();
    api.get("s").await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
    let t = Instant::now();
    api.get("s").await.unwrap();
    assert!(t.elapsed() < Duration::from_millis(300));

    server.pause();
    let held = tokio::spawn({
        let api = api.clone();
        async move { api.get("s").await }
    });
    // the request must still be held after a while
    let held = match tokio::time::timeout(Duration::from_millis(300), held).await {
        Ok(r) => panic!("request completed while paused: {r:?}"),
        Err(_) => server.count("get", "secrets"),
    };
    assert_eq!(held, 2, "held request not counted yet");
    server.resume();
    wait_for(Duration::from_secs(5), || async {
        server.count("get", "secrets") == 3
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn latency_holds_no_lock_and_overlaps() {
    let (server, client) = setup().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "l");
    let secrets: Api<Secret> = Api::namespaced(client, "l");
    cms.create(&PostParams::default(), &cm("c")).await.unwrap();
    let delay = Duration::from_secs(3);
    server.add_latency("patch", "configmaps", delay, None);
    let patch = json!({"data": {"a": "2"}});
    let slow = tokio::spawn({
        let cms = cms.clone();
        async move {
            cms.patch("c", &PatchParams::default(), &Patch::Merge(&patch))
                .await
        }
    });
    // the patch is counted, then sleeps out its delay
    wait_for(Duration::from_secs(5), || async {
        server.count("patch", "configmaps") == 1
    })
    .await
    .unwrap();
    // meanwhile reads, other writes and the in-process store are served
    cms.get("c").await.unwrap();
    secrets
        .create(&PostParams::default(), &secret("s", &[]))
        .await
        .unwrap();
    assert!(server.object("", "configmaps", Some("l"), "c").is_some());
    assert!(!slow.is_finished(), "the delayed patch finished too early");
    assert_eq!(slow.await.unwrap().unwrap().data.unwrap()["a"], "2");

    // delays of concurrent requests overlap rather than queue behind each other
    let t = Instant::now();
    let patches = (0..8).map(|n| {
        let cms = cms.clone();
        async move {
            let p = json!({"data": {"a": n.to_string()}});
            cms.patch("c", &PatchParams::default(), &Patch::Merge(&p))
                .await
        }
    });
    for r in futures::future::join_all(patches).await {
        r.unwrap();
    }
    assert!(t.elapsed() >= delay);
    assert!(
        t.elapsed() < delay * 4,
        "8 delayed patches took {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn method_not_allowed() {
    let (_s, client) = setup().await;
    let req = http::Request::builder()
        .method("PUT")
        .uri("/api/v1/namespaces/x/secrets")
        .header("content-type", "application/json")
        .body(b"{}".to_vec())
        .unwrap();
    let err = api_err(client.request::<serde_json::Value>(req).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (405, "MethodNotAllowed"));
}

#[tokio::test]
async fn kube_event_recorder_creates_then_patches() {
    use kube::Resource;
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let (server, client) = setup().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "ev");
    let c = cms.create(&PostParams::default(), &cm("c")).await.unwrap();
    let reporter = Reporter {
        controller: "secretsync".into(),
        instance: None,
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let ev = Event {
        type_: EventType::Normal,
        reason: "Synced".into(),
        note: Some("1 keys".into()),
        action: "Sync".into(),
        secondary: None,
    };
    recorder.publish(&ev, &c.object_ref(&())).await.unwrap();
    recorder.publish(&ev, &c.object_ref(&())).await.unwrap();
    assert_eq!(server.count("create", "events"), 1);
    assert_eq!(server.count("patch", "events"), 1);
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client, "ev");
    let list = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].reason.as_deref(), Some("Synced"));
    // the recorder writes events.k8s.io events; the per-group counts tell them from core ones
    let by_group = server.counts_by_group();
    let n = |verb: &str, group: &str| {
        by_group
            .get(&(verb.to_owned(), group.to_owned(), "events".to_owned()))
            .copied()
            .unwrap_or(0)
    };
    assert_eq!((n("create", "events.k8s.io"), n("create", "")), (1, 0));
    assert_eq!((n("patch", "events.k8s.io"), n("patch", "")), (1, 0));
    assert_eq!(n("list", "events.k8s.io"), 1);
}

#[tokio::test]
async fn namespaces_deletecollection_and_dry_run() {
    use k8s_openapi::api::core::v1::Namespace;
    let (_s, client) = setup().await;
    let api: Api<Secret> = Api::namespaced(client.clone(), "tmp");
    // dry run: validated and answered, not stored
    let dry = api
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &secret("dry", &[]),
        )
        .await
        .unwrap();
    assert_eq!(dry.name_any(), "dry");
    assert!(api.get_opt("dry").await.unwrap().is_none());

    for n in ["a", "b", "c"] {
        api.create(
            &PostParams::default(),
            &secret(n, &[("grp", if n == "c" { "y" } else { "x" })]),
        )
        .await
        .unwrap();
    }
    // the namespace was created implicitly
    let nss: Api<Namespace> = Api::all(client);
    assert!(nss.get_opt("tmp").await.unwrap().is_some());
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("grp=x"),
    )
    .await
    .unwrap();
    assert_eq!(names(&api, &ListParams::default()).await, ["c"]);
    // deleting the namespace deletes its objects
    nss.delete("tmp", &DeleteParams::default()).await.unwrap();
    assert!(
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn objects_with_only_missing_owners_are_collected() {
    let (_s, client) = setup().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "dangling");
    let secrets: Api<Secret> = Api::namespaced(client, "dangling");
    let owner = cms.create(&PostParams::default(), &cm("o")).await.unwrap();
    let mut wrong = owner_ref(&owner);
    wrong.uid = "00000000-0000-4000-a000-000000000000".into();
    let mut s = secret("orphaned", &[]);
    s.metadata.owner_references = Some(vec![wrong.clone()]);
    secrets.create(&PostParams::default(), &s).await.unwrap();
    wait_for(Duration::from_secs(5), || async {
        secrets.get_opt("orphaned").await.unwrap().is_none()
    })
    .await
    .unwrap();
    // one live owner is enough
    let mut ok = secret("owned", &[]);
    ok.metadata.owner_references = Some(vec![wrong, owner_ref(&owner)]);
    secrets.create(&PostParams::default(), &ok).await.unwrap();
    assert!(secrets.get_opt("owned").await.unwrap().is_some());
}

#[tokio::test]
async fn calls_are_recorded_per_user_agent() {
    let server = FakeApiServer::start().await.unwrap();
    let plain = server.client().await.unwrap();
    let kc = kube::config::Kubeconfig::from_yaml(&server.kubeconfig_yaml()).unwrap();
    let mut config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .unwrap();
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static("probe/1.0"),
    ));
    let probe = Client::try_from(config).unwrap();

    let secrets: Api<Secret> = Api::namespaced(probe, "shop");
    assert!(secrets.get_opt("nope").await.unwrap().is_none());
    let cms: Api<ConfigMap> = Api::namespaced(plain, "shop");
    cms.list(&ListParams::default()).await.unwrap();

    let probe_calls = server.calls_by_agent("probe/");
    assert_eq!(
        probe_calls.into_iter().collect::<Vec<_>>(),
        vec![("get".to_owned(), "secrets".to_owned())]
    );
    assert!(
        server
            .calls_by_agent("")
            .contains(&("list".into(), "configmaps".into()))
    );
    server.reset_counts();
    assert!(server.calls_by_agent("").is_empty());
}
