//! Objects held by name: a reader asks for one object of a namespace, gets it with one GET,
//! and every later read is served from memory while a metadata-only watch of that namespace
//! shows it unchanged. The other objects of the namespace pass through the watch as
//! metadata and are dropped, so memory grows with the objects asked for, not with the
//! namespace (nor with the cluster: only namespaces where something is held are watched).
//! When the watch shows a held object changed, created or deleted, the held copy is dropped
//! and the change is sent on a channel, so its readers can read again at once instead of
//! waiting for a timer.
//!
//! Two holders use it: the kubernetes backend (the Secrets its sources read,
//! `source/kubernetes.rs`) and `templateFrom` (the ConfigMaps bindings load templates from,
//! `binding/templates.rs`). The decisions — what a watch event or a fetch means for a held
//! entry, what a relist shows — are pure functions, unit-tested below.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

/// A kind whose objects can be held.
pub trait HeldKind:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    /// What is kept of one object.
    type Content: Send + Sync + 'static;

    /// Moves what is kept out of `obj`, leaving no copy of it behind.
    fn take_content(obj: &mut Self) -> Self::Content;
}

/// A held object changed (or appeared, or went away).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// What is known of one held object.
enum Known<C> {
    /// Never fetched, or changed since: the next read fetches it.
    Unknown,
    /// Fetched at `rv`.
    Present { rv: String, data: Arc<C> },
    /// Fetched and not found.
    Absent,
}

impl<C> Known<C> {
    fn version(&self) -> Option<Option<&str>> {
        match self {
            Known::Unknown => None,
            Known::Present { rv, .. } => Some(Some(rv)),
            Known::Absent => Some(None),
        }
    }
}

struct Entry<C> {
    known: Known<C>,
    /// Watch events seen for the name: a fetch that saw the counter move while it was in
    /// flight may be stale.
    events: u64,
    /// Fetches in flight.
    fetching: u32,
    /// What the last event during a fetch showed (`Some(None)`: deleted): a fetch that
    /// read that same version is current after all.
    seen_during_fetch: Option<Option<String>>,
}

impl<C> Default for Entry<C> {
    fn default() -> Self {
        Entry {
            known: Known::Unknown,
            events: 0,
            fetching: 0,
            seen_during_fetch: None,
        }
    }
}

/// Applies one watch event (`rv` = the object's resourceVersion, `None` = deleted) to an
/// entry; returns whether its readers must read again. While a fetch is in flight the
/// answer waits for the fetch ([`on_fetched`]): on a cold start the watch's first list and
/// the fetch usually see the same version, which is no change at all.
fn on_event<C>(entry: &mut Entry<C>, rv: Option<&str>) -> bool {
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

/// A relist that did not show an entry held only since the list began: the list may have
/// been taken before or after the entry's fetch, so whether the object exists is not
/// known, and the next read asks the API server. Returns whether its readers must read
/// again.
fn on_unlisted<C>(entry: &mut Entry<C>) -> bool {
    entry.events += 1;
    if entry.fetching > 0 {
        // The fetch in flight is not kept (see `on_fetched`): its caller is told to read
        // again.
        entry.seen_during_fetch = None;
        entry.known = Known::Unknown;
        return false;
    }
    match entry.known {
        Known::Unknown => false,
        _ => {
            entry.known = Known::Unknown;
            true
        }
    }
}

/// Applies the result of a fetch that started when the entry had seen `events_before`
/// events; returns whether its readers must read again (the fetch may have returned a
/// version older than the watch has seen, and the caller got that).
fn on_fetched<C>(entry: &mut Entry<C>, events_before: u64, fetched: Known<C>) -> bool {
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

/// A fetch that failed: nothing was learnt.
fn on_fetch_failed<C>(entry: &mut Entry<C>) {
    entry.fetching = entry.fetching.saturating_sub(1);
    if entry.fetching == 0 {
        entry.seen_during_fetch = None;
    }
}

/// The held entries of one namespace.
struct Namespace<C> {
    entries: Mutex<HashMap<String, Entry<C>>>,
}

impl<C> Namespace<C> {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry<C>>> {
        // Entries change in single steps; a poisoned lock holds consistent entries.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One watched namespace: its entries and its watch task.
struct Watched<C> {
    state: Arc<Namespace<C>>,
    watch: tokio::task::AbortHandle,
}

/// The held objects of kind `K` (see the module docs).
pub struct Held<K: HeldKind> {
    client: Client,
    /// Who holds them, for logs ("kubernetes source", "templateFrom").
    purpose: &'static str,
    namespaces: Mutex<HashMap<String, Watched<K::Content>>>,
    changes: mpsc::UnboundedSender<Change>,
}

impl<K: HeldKind> Held<K> {
    /// Holds objects read through `client` for `purpose`; changes arrive on the receiver.
    pub fn new(client: Client, purpose: &'static str) -> (Self, mpsc::UnboundedReceiver<Change>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let me = Held {
            client,
            purpose,
            namespaces: Mutex::default(),
            changes: tx,
        };
        (me, rx)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Watched<K::Content>>> {
        self.namespaces.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The namespace's state, starting its watch on first use.
    fn namespace(&self, ns: &str) -> Arc<Namespace<K::Content>> {
        let mut map = self.lock();
        if let Some(w) = map.get(ns) {
            return w.state.clone();
        }
        let state = Arc::new(Namespace {
            entries: Mutex::default(),
        });
        let task = tokio::spawn(watch_namespace::<K>(
            Api::namespaced(self.client.clone(), ns),
            ns.to_string(),
            self.purpose,
            Arc::downgrade(&state),
            self.changes.clone(),
        ));
        map.insert(
            ns.to_string(),
            Watched {
                state: state.clone(),
                watch: task.abort_handle(),
            },
        );
        state
    }

    /// Starts tracking `ns/name` without reading it: from now on its changes are reported
    /// (the next [`Held::get`] fetches it).
    pub fn hold(&self, ns: &str, name: &str) {
        self.namespace(ns)
            .lock()
            .entry(name.to_string())
            .or_default();
    }

    /// Stops tracking `ns/name`; the last one released in a namespace stops its watch.
    pub fn release(&self, ns: &str, name: &str) {
        let mut map = self.lock();
        let Some(w) = map.get(ns) else { return };
        let empty = {
            let mut entries = w.state.lock();
            entries.remove(name);
            entries.is_empty()
        };
        if empty && let Some(w) = map.remove(ns) {
            w.watch.abort();
        }
    }

    /// Object `ns/name`'s content (`None`: it does not exist): from memory while the watch
    /// shows it unchanged, else with one GET. Tracks it from now on (see [`Held::hold`]).
    pub async fn get(&self, ns: &str, name: &str) -> Result<Option<Arc<K::Content>>, kube::Error> {
        let state = self.namespace(ns);
        let seen = {
            let mut entries = state.lock();
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
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        let got = match api.get_opt(name).await {
            Ok(got) => got,
            Err(e) => {
                if let Some(entry) = state.lock().get_mut(name) {
                    on_fetch_failed(entry);
                }
                return Err(e);
            }
        };
        let (known, out) = match got {
            Some(mut obj) => {
                let rv = obj.meta().resource_version.clone().unwrap_or_default();
                let data = Arc::new(K::take_content(&mut obj));
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
        let stale = state
            .lock()
            .get_mut(name)
            .is_some_and(|entry| on_fetched(entry, seen, known));
        if stale {
            let _ = self.changes.send(Change {
                namespace: ns.to_string(),
                name: name.to_string(),
            });
        }
        Ok(out)
    }

    /// How many objects are tracked, over all namespaces.
    pub fn held_len(&self) -> usize {
        self.lock().values().map(|w| w.state.lock().len()).sum()
    }

    /// Namespaces watched now, sorted.
    pub fn watched_namespaces(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lock().keys().cloned().collect();
        v.sort();
        v
    }
}

impl<K: HeldKind> Drop for Held<K> {
    fn drop(&mut self) {
        for (_, w) in self.lock().drain() {
            w.watch.abort();
        }
    }
}

/// One watch event, reduced to what matters here.
#[derive(Debug, Clone, PartialEq, Eq)]
enum WatchEvent {
    /// A (re)list starts.
    ListStarts,
    /// An object in the list, or created or changed: its name and resourceVersion.
    Seen(String, String),
    /// An object deleted.
    Deleted(String),
    /// The list is complete.
    ListDone,
}

impl WatchEvent {
    fn of<K: Resource>(ev: watcher::Event<PartialObjectMeta<K>>) -> Self {
        let seen = |m: PartialObjectMeta<K>| {
            WatchEvent::Seen(
                m.metadata.name.unwrap_or_default(),
                m.metadata.resource_version.unwrap_or_default(),
            )
        };
        match ev {
            watcher::Event::Init => WatchEvent::ListStarts,
            watcher::Event::InitApply(m) | watcher::Event::Apply(m) => seen(m),
            watcher::Event::Delete(m) => WatchEvent::Deleted(m.metadata.name.unwrap_or_default()),
            watcher::Event::InitDone => WatchEvent::ListDone,
        }
    }
}

/// What a list in progress has shown, of the held names only (so a namespace of 50,000
/// objects costs no more than one of ten).
#[derive(Default)]
struct Listing {
    /// Names held when the list started.
    before: HashSet<String>,
    /// Held names the list showed.
    seen: HashSet<String>,
}

/// Follows the watch of one namespace against the held entries.
#[derive(Default)]
struct Tracker {
    /// The list in progress: an object deleted while the watch was down shows up only as
    /// missing from the next list.
    listing: Option<Listing>,
}

impl Tracker {
    /// Applies one event; returns the names whose readers must read again.
    fn apply<C>(&mut self, entries: &mut HashMap<String, Entry<C>>, ev: WatchEvent) -> Vec<String> {
        let mut changed = Vec::new();
        match ev {
            WatchEvent::ListStarts => {
                self.listing = Some(Listing {
                    before: entries.keys().cloned().collect(),
                    seen: HashSet::new(),
                });
            }
            WatchEvent::Seen(name, rv) => {
                if let Some(e) = entries.get_mut(&name) {
                    if let Some(l) = self.listing.as_mut() {
                        l.seen.insert(name.clone());
                    }
                    if on_event(e, Some(&rv)) {
                        changed.push(name);
                    }
                }
            }
            WatchEvent::Deleted(name) => {
                if let Some(e) = entries.get_mut(&name)
                    && on_event(e, None)
                {
                    changed.push(name);
                }
            }
            WatchEvent::ListDone => {
                let listing = self.listing.take().unwrap_or_default();
                for (name, e) in entries.iter_mut() {
                    if listing.seen.contains(name) {
                        continue;
                    }
                    // Held before the list and not in it: deleted. Held since: unknown.
                    let must_read = if listing.before.contains(name) {
                        on_event(e, None)
                    } else {
                        on_unlisted(e)
                    };
                    if must_read {
                        changed.push(name.clone());
                    }
                }
            }
        }
        changed
    }
}

/// Watches one namespace's objects of kind `K` (metadata only) for as long as its state is
/// alive (or until the task is aborted on release).
async fn watch_namespace<K: HeldKind>(
    api: Api<PartialObjectMeta<K>>,
    ns: String,
    purpose: &'static str,
    state: Weak<Namespace<K::Content>>,
    changes: mpsc::UnboundedSender<Change>,
) {
    let kind = K::kind(&());
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
                    tracing::info!(namespace = %ns, kind = %kind, purpose, "watch of held objects recovered");
                    failing = false;
                }
                tracker.apply(&mut state.lock(), WatchEvent::of(ev))
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(namespace = %ns, kind = %kind, purpose, error = %super::watch::shown(&e),
                        "watch of held objects failed; retrying");
                    failing = true;
                }
                Vec::new()
            }
        };
        for name in changed {
            tracing::debug!(namespace = %ns, kind = %kind, name = %name, purpose, "held object changed");
            let _ = changes.send(Change {
                namespace: ns.clone(),
                name,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type E = Entry<()>;

    fn fetched(rv: &str) -> Known<()> {
        Known::Present {
            rv: rv.into(),
            data: Arc::default(),
        }
    }

    fn present(rv: &str) -> E {
        Entry {
            known: fetched(rv),
            ..Entry::default()
        }
    }

    fn absent() -> E {
        Entry {
            known: Known::Absent,
            ..Entry::default()
        }
    }

    fn fetching() -> E {
        Entry {
            fetching: 1,
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
    fn a_failed_fetch_learns_nothing() {
        let mut e = fetching();
        assert!(!on_event(&mut e, Some("8")));
        on_fetch_failed(&mut e);
        assert_eq!(e.fetching, 0);
        assert!(e.seen_during_fetch.is_none());
        assert!(matches!(e.known, Known::Unknown));
    }

    #[test]
    fn a_change_with_no_fetch_in_flight_is_reported_at_once() {
        let mut e = E::default();
        assert!(on_event(&mut e, Some("7")));
    }

    #[test]
    fn an_object_deleted_while_the_watch_was_down_is_missing_from_the_relist() {
        let mut entries = HashMap::from([
            ("ca".to_string(), present("5")),
            ("db".to_string(), present("6")),
            ("gone-before".to_string(), absent()),
        ]);
        let mut t = Tracker::default();
        let mut run = |ev| t.apply(&mut entries, ev);
        assert!(run(WatchEvent::ListStarts).is_empty());
        assert!(run(WatchEvent::Seen("ca".into(), "5".into())).is_empty());
        assert!(
            run(WatchEvent::Seen("unrelated".into(), "9".into())).is_empty(),
            "objects nobody reads are not tracked"
        );
        assert_eq!(run(WatchEvent::ListDone), ["db"]);
        assert!(matches!(entries["db"].known, Known::Absent));
        assert!(matches!(entries["ca"].known, Known::Present { .. }));
        assert!(!entries.contains_key("unrelated"));
    }

    #[test]
    fn a_relist_remembers_only_held_names() {
        let mut entries = HashMap::from([("ca".to_string(), present("5"))]);
        let mut t = Tracker::default();
        t.apply(&mut entries, WatchEvent::ListStarts);
        for i in 0..1000 {
            t.apply(
                &mut entries,
                WatchEvent::Seen(format!("unrelated-{i}"), "1".into()),
            );
        }
        t.apply(&mut entries, WatchEvent::Seen("ca".into(), "5".into()));
        let listing = t.listing.as_ref().unwrap();
        assert_eq!(listing.seen.len(), 1);
        assert_eq!(listing.before.len(), 1);
        assert!(t.apply(&mut entries, WatchEvent::ListDone).is_empty());
        assert!(t.listing.is_none());
    }

    #[test]
    fn an_entry_held_during_a_relist_and_not_in_it_is_asked_again_not_assumed_deleted() {
        // Its list item may have passed before it was held: the list proves nothing.
        let mut entries: HashMap<String, E> = HashMap::new();
        let mut t = Tracker::default();
        t.apply(&mut entries, WatchEvent::ListStarts);
        t.apply(&mut entries, WatchEvent::Seen("tpl".into(), "3".into()));
        // Held and fetched (at "3") while the list ran.
        entries.insert("tpl".into(), present("3"));
        entries.insert("in-flight".into(), fetching());
        assert_eq!(t.apply(&mut entries, WatchEvent::ListDone), ["tpl"]);
        assert!(matches!(entries["tpl"].known, Known::Unknown));
        // The fetch in flight is not kept: its caller reads again.
        let before = 0;
        assert!(on_fetched(
            entries.get_mut("in-flight").unwrap(),
            before,
            fetched("4")
        ));
        assert!(matches!(entries["in-flight"].known, Known::Unknown));
        // Not known anyway: nothing to report.
        let mut e = E::default();
        assert!(!on_unlisted(&mut e));
    }

    #[test]
    fn live_events_after_the_list() {
        let mut entries = HashMap::from([("ca".to_string(), present("5"))]);
        let mut t = Tracker::default();
        assert!(t.apply(&mut entries, WatchEvent::ListStarts).is_empty());
        assert!(
            t.apply(&mut entries, WatchEvent::Seen("ca".into(), "5".into()))
                .is_empty()
        );
        assert!(t.apply(&mut entries, WatchEvent::ListDone).is_empty());
        assert_eq!(
            t.apply(&mut entries, WatchEvent::Seen("ca".into(), "7".into())),
            ["ca"]
        );
        assert_eq!(
            t.apply(&mut entries, WatchEvent::Deleted("ca".into())),
            ["ca"]
        );
    }
}
