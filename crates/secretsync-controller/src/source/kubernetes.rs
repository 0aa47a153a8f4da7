//! The Secrets kubernetes sources read, served from memory while a namespace-scoped,
//! metadata-only watch shows them unchanged.
//!
//! A namespace is watched from the first read of one of its Secrets until the term ends.
//! Only Secrets a binding asked for are held (their data, fetched with one GET); every
//! other Secret of the namespace passes through the watch as metadata and is dropped, so
//! memory does not grow with unrelated Secrets. When the watch shows a held Secret changed
//! (or created, or deleted), the held copy is dropped and the change is sent on: the
//! controller invalidates the key in every source's cache and re-queues the bindings that
//! read it, without waiting for their refresh interval.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use secretsync_api::SecretSourceSpec;
use secretsync_backends::kubernetes::{ClusterSecrets, SecretDataMap, source_namespace};
use secretsync_backends::{BackendError, SecretValue};
use tokio::sync::mpsc;

use crate::context::Ctx;
use crate::runtime::ObjKey;

/// A Secret read by a kubernetes source changed (or appeared, or went away).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretChange {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// What is known of one Secret a binding asked for.
#[derive(Default)]
enum Known {
    /// Never fetched, or changed since: the next read fetches it.
    #[default]
    Unknown,
    /// Fetched at `rv`.
    Present {
        rv: String,
        data: Arc<SecretDataMap>,
    },
    /// Fetched and not found.
    Absent,
}

#[derive(Default)]
struct Entry {
    known: Known,
    /// Watch events seen for the name: a fetch that saw the counter move while it was in
    /// flight may be stale.
    events: u64,
    /// Fetches in flight.
    fetching: u32,
    /// What the last event during a fetch showed (`Some(None)`: deleted): a fetch that
    /// read that same version is current after all.
    seen_during_fetch: Option<Option<String>>,
}

impl Known {
    fn version(&self) -> Option<Option<&str>> {
        match self {
            Known::Unknown => None,
            Known::Present { rv, .. } => Some(Some(rv)),
            Known::Absent => Some(None),
        }
    }
}

/// Applies one watch event (`rv` = the Secret's resourceVersion, `None` = deleted) to an
/// entry; returns whether the bindings reading it must read again. While a fetch is in
/// flight the answer waits for the fetch ([`on_fetched`]): on a cold start the watch's
/// first list and the fetch usually see the same version, which is no change at all.
fn on_event(entry: &mut Entry, rv: Option<&str>) -> bool {
    entry.events += 1;
    if entry.known.version() == Some(rv) {
        return false;
    }
    if entry.fetching > 0 {
        entry.seen_during_fetch = Some(rv.map(str::to_string));
        entry.known = Known::Unknown;
        return false;
    }
    entry.known = match rv {
        None => Known::Absent,
        // Changed or created: the next read fetches it.
        Some(_) => Known::Unknown,
    };
    true
}

/// Applies the result of a fetch that started when the entry had seen `events_before`
/// events; returns whether the bindings reading it must read again (the fetch may have
/// returned a version older than the watch has seen, and the caller got that).
fn on_fetched(entry: &mut Entry, events_before: u64, fetched: Known) -> bool {
    entry.fetching = entry.fetching.saturating_sub(1);
    let current = entry.events == events_before
        || entry
            .seen_during_fetch
            .as_ref()
            .is_some_and(|seen| Some(seen.as_deref()) == fetched.version());
    if entry.fetching == 0 {
        entry.seen_during_fetch = None;
    }
    if current {
        entry.known = fetched;
        false
    } else {
        true
    }
}

#[derive(Default)]
struct Namespace {
    entries: Mutex<HashMap<String, Entry>>,
}

impl Namespace {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The kubernetes backend's view of the cluster's Secrets (see the module docs).
pub struct KubeSecrets {
    client: Client,
    namespaces: Mutex<HashMap<String, Arc<Namespace>>>,
    watches: Mutex<Vec<tokio::task::AbortHandle>>,
    changes: mpsc::UnboundedSender<SecretChange>,
}

impl KubeSecrets {
    /// A provider reading through `client`; changes arrive on the receiver.
    pub fn new(client: Client) -> (Self, mpsc::UnboundedReceiver<SecretChange>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let me = KubeSecrets {
            client,
            namespaces: Mutex::default(),
            watches: Mutex::default(),
            changes: tx,
        };
        (me, rx)
    }

    /// The namespace's state, starting its watch on first use.
    fn namespace(&self, ns: &str) -> Arc<Namespace> {
        let mut map = self.namespaces.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get(ns) {
            return n.clone();
        }
        let n = Arc::new(Namespace::default());
        let task = tokio::spawn(watch_namespace(
            Api::<kube::core::PartialObjectMeta<Secret>>::namespaced(self.client.clone(), ns),
            ns.to_string(),
            Arc::downgrade(&n),
            self.changes.clone(),
        ));
        self.watches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task.abort_handle());
        map.insert(ns.to_string(), n.clone());
        n
    }

    /// How many Secrets are tracked (asked for by a binding), over all namespaces.
    pub fn held_len(&self) -> usize {
        self.namespaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|n| n.lock().len())
            .sum()
    }

    /// Namespaces watched so far.
    pub fn watched_namespaces(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .namespaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }
}

impl Drop for KubeSecrets {
    fn drop(&mut self) {
        for w in self
            .watches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            w.abort();
        }
    }
}

/// A Secret's data, moved out of the object (no copies of the bytes left behind);
/// `stringData` is only ever in input files, never in what the API server returns.
pub fn secret_data(secret: &mut Secret) -> SecretDataMap {
    let mut out: SecretDataMap = secret
        .data
        .take()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, SecretValue::new(v.0)))
        .collect();
    for (k, v) in secret.string_data.take().unwrap_or_default() {
        out.insert(k, SecretValue::from_string(v));
    }
    out
}

fn api_error(ns: &str, what: &str, e: kube::Error) -> BackendError {
    match &e {
        kube::Error::Api(s) if s.code == 403 => BackendError::access_denied(format!(
            "the operator may not {what} in namespace {ns:?} (RBAC: secrets get, list and watch)"
        )),
        kube::Error::Api(s) => BackendError::unavailable(format!(
            "{what} in namespace {ns:?}: API server answered {}",
            s.code
        )),
        // A response that does not parse may quote the Secret's body in the error text.
        kube::Error::SerdeError(_) => BackendError::unavailable(format!(
            "{what} in namespace {ns:?}: the API server's answer did not parse"
        )),
        _ => BackendError::unavailable(format!("{what} in namespace {ns:?}: {e}")),
    }
}

#[async_trait]
impl ClusterSecrets for KubeSecrets {
    async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<SecretDataMap>>, BackendError> {
        let ns = self.namespace(namespace);
        let seen = {
            let mut entries = ns.lock();
            let entry = entries.entry(name.to_string()).or_default();
            match &entry.known {
                Known::Present { data, .. } => return Ok(Some(data.clone())),
                Known::Absent => return Ok(None),
                Known::Unknown => {
                    entry.fetching += 1;
                    entry.events
                }
            }
        };
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let got = match api.get_opt(name).await {
            Ok(got) => got,
            Err(e) => {
                if let Some(entry) = ns.lock().get_mut(name) {
                    entry.fetching = entry.fetching.saturating_sub(1);
                }
                return Err(api_error(namespace, "read Secrets", e));
            }
        };
        let (known, out) = match got {
            Some(mut s) => {
                let rv = s.metadata.resource_version.clone().unwrap_or_default();
                let data = Arc::new(secret_data(&mut s));
                (
                    Known::Present {
                        rv,
                        data: data.clone(),
                    },
                    Some(data),
                )
            }
            None => (Known::Absent, None),
        };
        let stale = ns
            .lock()
            .get_mut(name)
            .is_some_and(|entry| on_fetched(entry, seen, known));
        if stale {
            let _ = self.changes.send(SecretChange {
                namespace: namespace.to_string(),
                name: name.to_string(),
            });
        }
        Ok(out)
    }

    async fn names(&self, namespace: &str) -> Result<Vec<String>, BackendError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let mut names = Vec::new();
        let mut params = ListParams::default().limit(500);
        loop {
            let page = api
                .list_metadata(&params)
                .await
                .map_err(|e| api_error(namespace, "list Secrets", e))?;
            names.extend(page.items.into_iter().filter_map(|m| m.metadata.name));
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        Ok(names)
    }

    async fn check(&self, namespace: &str) -> Result<(), BackendError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        api.list_metadata(&ListParams::default().limit(1))
            .await
            .map(|_| ())
            .map_err(|e| api_error(namespace, "list Secrets", e))
    }
}

/// One watch event, reduced to what matters here.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SecretEvent {
    /// A (re)list starts.
    ListStarts,
    /// A Secret in the list, or created or changed: its name and resourceVersion.
    Seen(String, String),
    /// A Secret deleted.
    Deleted(String),
    /// The list is complete.
    ListDone,
}

impl SecretEvent {
    fn of(ev: watcher::Event<kube::core::PartialObjectMeta<Secret>>) -> Self {
        let seen = |m: kube::core::PartialObjectMeta<Secret>| {
            SecretEvent::Seen(
                m.metadata.name.unwrap_or_default(),
                m.metadata.resource_version.unwrap_or_default(),
            )
        };
        match ev {
            watcher::Event::Init => SecretEvent::ListStarts,
            watcher::Event::InitApply(m) | watcher::Event::Apply(m) => seen(m),
            watcher::Event::Delete(m) => SecretEvent::Deleted(m.metadata.name.unwrap_or_default()),
            watcher::Event::InitDone => SecretEvent::ListDone,
        }
    }
}

/// Follows the watch of one namespace against the held entries.
#[derive(Default)]
struct Tracker {
    /// Names seen by the list in progress: a Secret deleted while the watch was down shows
    /// up only as missing from the next list.
    listed: Option<HashSet<String>>,
}

impl Tracker {
    /// Applies one event; returns the names whose readers must read again.
    fn apply(&mut self, entries: &mut HashMap<String, Entry>, ev: SecretEvent) -> Vec<String> {
        let mut changed = Vec::new();
        match ev {
            SecretEvent::ListStarts => self.listed = Some(HashSet::new()),
            SecretEvent::Seen(name, rv) => {
                if let Some(l) = self.listed.as_mut() {
                    l.insert(name.clone());
                }
                if let Some(e) = entries.get_mut(&name)
                    && on_event(e, Some(&rv))
                {
                    changed.push(name);
                }
            }
            SecretEvent::Deleted(name) => {
                if let Some(e) = entries.get_mut(&name)
                    && on_event(e, None)
                {
                    changed.push(name);
                }
            }
            SecretEvent::ListDone => {
                let seen = self.listed.take().unwrap_or_default();
                for (name, e) in entries.iter_mut() {
                    if !seen.contains(name) && on_event(e, None) {
                        changed.push(name.clone());
                    }
                }
            }
        }
        changed
    }
}

/// Watches one namespace's Secrets (metadata only) for as long as its state is alive.
async fn watch_namespace(
    api: Api<kube::core::PartialObjectMeta<Secret>>,
    ns: String,
    state: Weak<Namespace>,
    changes: mpsc::UnboundedSender<SecretChange>,
) {
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut tracker = Tracker::default();
    let mut failing = false;
    while let Some(event) = stream.next().await {
        let Some(state) = state.upgrade() else { return };
        let changed = match event {
            Ok(ev) => {
                if failing {
                    tracing::info!(namespace = %ns, "Secret watch of a kubernetes source recovered");
                    failing = false;
                }
                tracker.apply(&mut state.lock(), SecretEvent::of(ev))
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(namespace = %ns, error = %e, "Secret watch of a kubernetes source failed; retrying");
                    failing = true;
                }
                Vec::new()
            }
        };
        for name in changed {
            tracing::debug!(namespace = %ns, secret = %name, "source Secret changed");
            let _ = changes.send(SecretChange {
                namespace: ns.clone(),
                name,
            });
        }
    }
}

/// The sources whose kubernetes backend reads namespace `ns`, with their specs.
fn sources_reading(ctx: &Ctx, ns: &str) -> Vec<(ObjKey, SecretSourceSpec)> {
    let reads = |spec: &SecretSourceSpec, own: Option<&str>| {
        spec.kubernetes
            .as_ref()
            .and_then(|k| source_namespace(k, own).ok())
            .is_some_and(|n| n == ns)
    };
    let mut out: Vec<(ObjKey, SecretSourceSpec)> = ctx
        .sources
        .filter(|k, s| reads(&s.spec, Some(k.namespace.as_str())))
        .into_iter()
        .map(|(k, s)| (k, s.spec.clone()))
        .collect();
    out.extend(
        ctx.cluster_sources
            .filter(|_, s| reads(&s.spec.backend, None))
            .into_iter()
            .map(|(k, s)| (k, s.spec.source_spec())),
    );
    out
}

/// Routes one change: the key is dropped from each reading source's cache and its readers
/// read again now.
pub async fn route_change(ctx: &Ctx, change: &SecretChange) {
    for (src, spec) in sources_reading(ctx, &change.namespace) {
        let Some(key) = change
            .name
            .strip_prefix(spec.prefix())
            .filter(|k| !k.is_empty())
        else {
            continue;
        };
        crate::changes::refresh_keys(ctx, &src, &[key.to_string()]).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn present(rv: &str) -> Entry {
        Entry {
            known: fetched(rv),
            ..Entry::default()
        }
    }

    #[test]
    fn the_same_version_is_no_change() {
        let mut e = present("5");
        assert!(!on_event(&mut e, Some("5")));
        assert!(matches!(e.known, Known::Present { .. }));
        assert_eq!(e.events, 1);
    }

    #[test]
    fn a_new_version_drops_the_held_copy() {
        let mut e = present("5");
        assert!(on_event(&mut e, Some("6")));
        assert!(matches!(e.known, Known::Unknown));
    }

    #[test]
    fn deletion_and_creation() {
        let mut e = present("5");
        assert!(on_event(&mut e, None));
        assert!(matches!(e.known, Known::Absent));
        assert!(!on_event(&mut e, None), "deleted twice is one change");
        assert!(on_event(&mut e, Some("9")), "created again");
        assert!(matches!(e.known, Known::Unknown));
    }

    fn fetching() -> Entry {
        Entry {
            fetching: 1,
            ..Entry::default()
        }
    }

    fn fetched(rv: &str) -> Known {
        Known::Present {
            rv: rv.into(),
            data: Arc::default(),
        }
    }

    #[test]
    fn a_fetch_that_saw_what_the_watch_saw_is_kept() {
        // The watch's first list shows the version the fetch read: no change.
        let mut e = fetching();
        assert!(!on_event(&mut e, Some("7")));
        assert!(!on_fetched(&mut e, 0, fetched("7")));
        assert!(matches!(e.known, Known::Present { .. }));
        assert_eq!(e.fetching, 0);
    }

    #[test]
    fn a_fetch_older_than_the_watch_is_dropped_and_reported() {
        let mut e = fetching();
        assert!(
            !on_event(&mut e, Some("8")),
            "decided when the fetch returns"
        );
        assert!(on_fetched(&mut e, 0, fetched("7")));
        assert!(matches!(e.known, Known::Unknown));
    }

    #[test]
    fn a_fetch_without_events_is_kept() {
        let mut e = fetching();
        assert!(!on_fetched(&mut e, 0, Known::Absent));
        assert!(matches!(e.known, Known::Absent));
    }

    #[test]
    fn a_change_with_no_fetch_in_flight_is_reported_at_once() {
        let mut e = Entry::default();
        assert!(on_event(&mut e, Some("7")));
    }

    #[test]
    fn a_secret_deleted_while_the_watch_was_down_is_missing_from_the_relist() {
        let mut entries = HashMap::from([
            ("ca".to_string(), present("5")),
            ("db".to_string(), present("6")),
            (
                "gone-before".to_string(),
                Entry {
                    known: Known::Absent,
                    ..Entry::default()
                },
            ),
        ]);
        let mut t = Tracker::default();
        let mut run = |ev| t.apply(&mut entries, ev);
        assert!(run(SecretEvent::ListStarts).is_empty());
        assert!(run(SecretEvent::Seen("ca".into(), "5".into())).is_empty());
        assert!(
            run(SecretEvent::Seen("unrelated".into(), "9".into())).is_empty(),
            "Secrets nobody reads are not tracked"
        );
        assert_eq!(run(SecretEvent::ListDone), ["db"]);
        assert!(matches!(entries["db"].known, Known::Absent));
        assert!(matches!(entries["ca"].known, Known::Present { .. }));
        assert!(!entries.contains_key("unrelated"));
    }

    #[test]
    fn live_events_after_the_list() {
        let mut entries = HashMap::from([("ca".to_string(), present("5"))]);
        let mut t = Tracker::default();
        assert!(t.apply(&mut entries, SecretEvent::ListStarts).is_empty());
        assert!(
            t.apply(&mut entries, SecretEvent::Seen("ca".into(), "5".into()))
                .is_empty()
        );
        assert!(t.apply(&mut entries, SecretEvent::ListDone).is_empty());
        assert_eq!(
            t.apply(&mut entries, SecretEvent::Seen("ca".into(), "7".into())),
            ["ca"]
        );
        assert_eq!(
            t.apply(&mut entries, SecretEvent::Deleted("ca".into())),
            ["ca"]
        );
    }

    #[test]
    fn data_moves_out_of_the_object() {
        let mut s: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db"},
            "data": {"user": "YXBw"},
            "stringData": {"password": "pw"}
        }))
        .unwrap();
        let d = secret_data(&mut s);
        assert_eq!(d["user"].as_str(), Some("app"));
        assert_eq!(d["password"].as_str(), Some("pw"));
        assert!(s.data.is_none() && s.string_data.is_none());
    }
}
