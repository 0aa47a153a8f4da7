//! One relisting watch for any kind. Every watch of the operator (sources, bindings,
//! managed Secrets, workloads) is this loop; what differs is the [`Index`] it feeds.
//!
//! kube's watcher lists, then watches, and relists after a gap; this loop turns its
//! events into [`Index`] calls with the phase they belong to, signals the first complete
//! list, and paces retries itself: a jittered backoff capped at a few seconds (kube's
//! default grows to minutes, which kept the operator away from an API server that was
//! back), one warning when an outage starts and one info line when it ends, the retry
//! count in `secretsync_watch_retries_total{watch}`.

use std::collections::HashSet;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::backoff::{random_unit, watch_retry};
use super::health::ApiHealth;
use super::ready::ListToken;
use super::store::{ObjKey, key_of};
use crate::metrics::Metrics;

/// Which part of a watch's life an event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The first list after start: the startup pass covers these objects.
    FirstList,
    /// A relist after a gap (watch expired, API server away): changes may hide in it.
    Relist,
    /// A watch event.
    Live,
}

/// What a watch feeds. Implementations keep their own store and decide what to enqueue.
pub trait Index<K>: Send + Sync {
    /// An object was listed (`FirstList`/`Relist`) or added/changed (`Live`).
    fn apply(&self, obj: K, phase: Phase);
    /// An object was deleted.
    fn delete(&self, obj: K);
    /// A list of `scope` (a namespace, or all) completed; `seen` holds every key it
    /// returned, so anything else in that scope is gone.
    fn relisted(&self, scope: Option<&str>, seen: &HashSet<ObjKey>, phase: Phase);
}

/// A watch to run.
pub struct Watch<K: Resource> {
    /// Name in logs and metrics (`SecretBinding`, `Deployment`, ...).
    pub name: &'static str,
    /// Namespace, or `None` for all.
    pub scope: Option<String>,
    /// The API to list and watch.
    pub api: Api<K>,
    /// Label selector and the like.
    pub config: watcher::Config,
}

/// Whether a watch error means the API server is unreachable or failing (as opposed to,
/// say, an expired resource version, which the watcher repairs with a relist).
fn is_outage(e: &watcher::Error) -> bool {
    let client = match e {
        watcher::Error::InitialListFailed(c)
        | watcher::Error::WatchStartFailed(c)
        | watcher::Error::WatchFailed(c) => c,
        watcher::Error::WatchError(_) | watcher::Error::NoResourceVersion => return false,
    };
    match client {
        kube::Error::Api(s) => s.code >= 500 || s.code == 429,
        _ => true,
    }
}

/// A watch error as logged. A response that does not parse is not quoted: the parser's
/// text may contain part of the object, and some watches (labelled Secrets) carry data.
pub(crate) fn shown(e: &watcher::Error) -> String {
    match e {
        watcher::Error::InitialListFailed(kube::Error::SerdeError(_))
        | watcher::Error::WatchStartFailed(kube::Error::SerdeError(_))
        | watcher::Error::WatchFailed(kube::Error::SerdeError(_)) => {
            "the API server's answer did not parse".to_string()
        }
        other => other.to_string(),
    }
}

/// A run of failed attempts.
struct Trouble {
    since: Instant,
    retries: u32,
    outage: bool,
}

/// Runs `watch` until its stream ends (never, in practice; the task is aborted).
pub async fn run<K, I>(
    watch: Watch<K>,
    index: Arc<I>,
    mut first_list: ListToken,
    health: Arc<ApiHealth>,
    metrics: Arc<Metrics>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
    I: Index<K> + ?Sized,
{
    let Watch {
        name,
        scope,
        api,
        config,
    } = watch;
    let mut stream = watcher::watcher(api, config).boxed();
    let mut seen: Option<HashSet<ObjKey>> = None;
    let mut listed_once = false;
    let mut trouble: Option<Trouble> = None;
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(ev) => ev,
            Err(e) => {
                let t = trouble.get_or_insert_with(|| {
                    let outage = is_outage(&e);
                    // One outage, one warning: once another watch has reported the API
                    // server unreachable, the rest say so at debug.
                    if outage && health.is_down() {
                        tracing::debug!(watch = name, scope = scope.as_deref().unwrap_or("*"), error = %shown(&e),
                            "watch failed while the API server is unreachable; retrying");
                    } else {
                        tracing::warn!(watch = name, scope = scope.as_deref().unwrap_or("*"), error = %shown(&e),
                            "watch failed; retrying every few seconds until the API server answers");
                    }
                    if outage {
                        health.watch_failed(name);
                    }
                    Trouble {
                        since: Instant::now(),
                        retries: 0,
                        outage,
                    }
                });
                tracing::debug!(watch = name, retries = t.retries, error = %shown(&e), "watch retry failed");
                metrics.watch_retry(name);
                let pause = watch_retry(t.retries, random_unit());
                t.retries += 1;
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        if let Some(t) = trouble.take() {
            tracing::info!(
                watch = name,
                scope = scope.as_deref().unwrap_or("*"),
                retries = t.retries,
                down_ms = t.since.elapsed().as_millis() as u64,
                "watch reconnected"
            );
            if t.outage {
                health.watch_recovered(name);
            }
        }
        let list_phase = if listed_once {
            Phase::Relist
        } else {
            Phase::FirstList
        };
        match event {
            Event::Init => seen = Some(HashSet::new()),
            Event::InitApply(obj) => {
                if let Some(s) = seen.as_mut() {
                    s.insert(key_of(&obj));
                }
                index.apply(obj, list_phase);
            }
            Event::Apply(obj) => index.apply(obj, Phase::Live),
            Event::Delete(obj) => index.delete(obj),
            Event::InitDone => {
                let s = seen.take().unwrap_or_default();
                index.relisted(scope.as_deref(), &s, list_phase);
                listed_once = true;
                first_list.done();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unparsable_answers_are_not_quoted() {
        let Err(parse) = serde_json::from_str::<u64>("\"CANARY-value\"") else {
            unreachable!("a string is not a number")
        };
        assert!(parse.to_string().contains("CANARY"), "the parser quotes");
        let e = watcher::Error::InitialListFailed(kube::Error::SerdeError(parse));
        assert!(!shown(&e).contains("CANARY"), "{}", shown(&e));
        let api = watcher::Error::WatchFailed(status(503));
        assert_eq!(shown(&api), api.to_string());
    }

    fn status(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(
            kube::core::Status::failure("x", "y").with_code(code),
        ))
    }

    #[test]
    fn outages_are_transport_errors_and_server_failures() {
        assert!(is_outage(&watcher::Error::InitialListFailed(status(503))));
        assert!(is_outage(&watcher::Error::WatchFailed(status(429))));
        assert!(!is_outage(&watcher::Error::InitialListFailed(status(403))));
        assert!(!is_outage(&watcher::Error::NoResourceVersion));
    }
}
