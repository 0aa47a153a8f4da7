//! Watches: kube-runtime watchers across forced closes and `410 Gone`, streaming lists,
//! metadata-only watches, bookmarks, selector transitions, bounded history.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use secretsync_testkit::harness::wait_for;
use serde_json::json;
use support::{merge, secret, setup};

mod support;

const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Seen {
    names: BTreeSet<String>,
    init_done: usize,
}

fn spawn_watcher<S, K>(stream: S) -> (Arc<Mutex<Seen>>, tokio::task::JoinHandle<()>)
where
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    K: Resource + Send + 'static,
{
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s2 = seen.clone();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            let Ok(ev) = ev else { continue };
            let mut g = s2.lock().unwrap();
            match ev {
                watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                    g.names.insert(o.meta().name.clone().unwrap_or_default());
                }
                watcher::Event::Delete(o) => {
                    g.names.remove(&o.meta().name.clone().unwrap_or_default());
                }
                watcher::Event::Init => {}
                watcher::Event::InitDone => g.init_done += 1,
            }
        }
    });
    (seen, task)
}

fn has(seen: &Arc<Mutex<Seen>>, name: &str) -> bool {
    seen.lock().unwrap().names.contains(name)
}

#[tokio::test]
async fn watcher_survives_forced_close_and_gone() {
    let (server, client) = setup().await;
    let api: Api<Secret> = Api::namespaced(client, "w");
    let (seen, task) =
        spawn_watcher(watcher(api.clone(), watcher::Config::default()).default_backoff());

    api.create(&PostParams::default(), &secret("a", &[]))
        .await
        .unwrap();
    wait_for(DEADLINE, || async { has(&seen, "a") })
        .await
        .unwrap();

    // forced close: the watcher re-watches from its last resource version
    let watches = server.count("watch", "secrets");
    server.close_watches();
    wait_for(DEADLINE, || async {
        server.count("watch", "secrets") > watches
    })
    .await
    .unwrap();
    api.create(&PostParams::default(), &secret("b", &[]))
        .await
        .unwrap();
    wait_for(DEADLINE, || async { has(&seen, "b") })
        .await
        .unwrap();

    // 410 Gone: the re-watch resumes from an expired resource version and must relist
    let lists = server.count("list", "secrets");
    server.pause();
    server.close_watches();
    server
        .apply_yaml("apiVersion: v1\nkind: Secret\nmetadata: {name: c, namespace: w}\n")
        .unwrap();
    server.expire_resource_versions();
    server.resume();
    wait_for(DEADLINE, || async {
        server.count("list", "secrets") > lists
    })
    .await
    .expect("relisted after 410");
    wait_for(DEADLINE, || async {
        has(&seen, "c") && seen.lock().unwrap().init_done >= 2
    })
    .await
    .unwrap();
    // and keeps watching afterwards
    api.create(&PostParams::default(), &secret("d", &[]))
        .await
        .unwrap();
    wait_for(DEADLINE, || async { has(&seen, "d") })
        .await
        .unwrap();
    task.abort();
}

#[tokio::test]
async fn raw_watch_gets_410_when_history_is_compacted() {
    let (server, client) = setup().await;
    server.set_history_limit(2);
    let api: Api<Secret> = Api::namespaced(client, "h");
    let first = api
        .create(&PostParams::default(), &secret("s0", &[]))
        .await
        .unwrap();
    for i in 1..5 {
        api.create(&PostParams::default(), &secret(&format!("s{i}"), &[]))
            .await
            .unwrap();
    }
    let rv = first.resource_version().unwrap();
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Error(e)) => assert_eq!(e.code, 410),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    // a recent resource version still works and replays what followed it
    let list = api.list(&ListParams::default()).await.unwrap();
    let recent = list.items[3].resource_version().unwrap();
    let mut stream = api
        .watch(&WatchParams::default(), &recent)
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Added(s)) => assert_eq!(s.name_any(), "s4"),
        other => panic!("expected ADDED s4, got {other:?}"),
    }
}

#[tokio::test]
async fn streaming_list_watcher() {
    let (server, client) = setup().await;
    let api: Api<Secret> = Api::namespaced(client, "sl");
    api.create(&PostParams::default(), &secret("pre", &[]))
        .await
        .unwrap();
    let (seen, task) = spawn_watcher(
        watcher(api.clone(), watcher::Config::default().streaming_lists()).default_backoff(),
    );
    wait_for(DEADLINE, || async {
        has(&seen, "pre") && seen.lock().unwrap().init_done == 1
    })
    .await
    .unwrap();
    assert_eq!(
        server.count("list", "secrets"),
        0,
        "no list call in streaming mode"
    );
    api.create(&PostParams::default(), &secret("post", &[]))
        .await
        .unwrap();
    wait_for(DEADLINE, || async { has(&seen, "post") })
        .await
        .unwrap();
    task.abort();
}

#[tokio::test]
async fn metadata_only_watch_and_list() {
    let (_server, client) = setup().await;
    let api: Api<Secret> = Api::namespaced(client, "m");
    let (seen, task) = spawn_watcher(
        watcher(
            Api::<PartialObjectMeta<Secret>>::namespaced(api.clone().into_client(), "m"),
            watcher::Config::default().labels("secretsync.dev/managed=true"),
        )
        .default_backoff(),
    );
    let mut managed = secret("managed", &[("secretsync.dev/managed", "true")]);
    managed.data = Some([("k".to_string(), k8s_openapi::ByteString(b"v".to_vec()))].into());
    api.create(&PostParams::default(), &managed).await.unwrap();
    api.create(&PostParams::default(), &secret("other", &[]))
        .await
        .unwrap();
    wait_for(DEADLINE, || async { has(&seen, "managed") })
        .await
        .unwrap();
    assert!(!has(&seen, "other"));

    let meta = api.get_metadata("managed").await.unwrap();
    let types = meta.types.unwrap();
    assert_eq!(
        (types.api_version.as_str(), types.kind.as_str()),
        ("meta.k8s.io/v1", "PartialObjectMetadata")
    );
    let list = api.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 2);

    // watch events carry PartialObjectMetadata, never the data
    let mut stream = api
        .watch_metadata(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Added(m)) => {
            assert_eq!(m.types.unwrap().kind, "PartialObjectMetadata");
        }
        other => panic!("expected ADDED, got {other:?}"),
    }
    task.abort();
}

#[tokio::test]
async fn bookmarks_and_selector_transitions() {
    let (server, client) = setup().await;
    server.set_bookmark_interval(Duration::from_millis(100));
    let api: Api<Secret> = Api::namespaced(client, "b");
    api.create(&PostParams::default(), &secret("x", &[("keep", "yes")]))
        .await
        .unwrap();
    let mut wp = WatchParams::default().labels("keep=yes");
    wp.bookmarks = true;
    let mut stream = api.watch(&wp, "0").await.unwrap().boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Added(s)) => assert_eq!(s.name_any(), "x"),
        other => panic!("expected ADDED, got {other:?}"),
    }
    // the object stops matching the selector: the watcher sees DELETED
    merge(&api, "x", json!({"metadata": {"labels": {"keep": "no"}}})).await;
    let mut got_deleted = false;
    let mut got_bookmark = false;
    while !(got_deleted && got_bookmark) {
        match tokio::time::timeout(DEADLINE, stream.try_next()).await {
            Ok(Ok(Some(WatchEvent::Deleted(s)))) => {
                assert_eq!(s.name_any(), "x");
                got_deleted = true;
            }
            Ok(Ok(Some(WatchEvent::Bookmark(_)))) => got_bookmark = true,
            other => panic!("unexpected {other:?}"),
        }
    }
}
