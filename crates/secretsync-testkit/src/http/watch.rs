//! Watches: the initial events (`ADDED` for every object, or the history after a resource
//! version, or `410 Gone` as an `ERROR` event), then live events filtered by namespace and
//! selectors (an object that stops or starts matching is `DELETED` or `ADDED`), bookmarks,
//! `sendInitialEvents` streaming lists, timeouts and forced closes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, watch};

use super::response::{Format, Params, error_response, selectors, truthy};
use super::{Call, lock};
use crate::resources::ResourceDef;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::{Event, Inner, partial_metadata};
use crate::util::meta_str;

/// Which objects a watch sees.
struct WatchFilter {
    ns: Option<String>,
    lsel: LabelSelector,
    fsel: FieldSelector,
}

impl WatchFilter {
    fn matches(&self, o: &Value) -> bool {
        self.ns
            .as_deref()
            .is_none_or(|ns| meta_str(o, "namespace") == Some(ns))
            && self.lsel.matches(o)
            && self.fsel.matches(o)
    }

    /// The event type a watcher with this filter sees, if any.
    fn translate(&self, ev: &Event) -> Option<&'static str> {
        let now = self.matches(&ev.obj);
        match ev.ty {
            "MODIFIED" => {
                let before = ev.old.as_ref().is_some_and(|o| self.matches(o));
                match (before, now) {
                    (true, true) => Some("MODIFIED"),
                    (false, true) => Some("ADDED"),
                    (true, false) => Some("DELETED"),
                    (false, false) => None,
                }
            }
            ty => now.then_some(ty),
        }
    }
}

/// What a watch request asks for.
struct WatchParams {
    filter: WatchFilter,
    /// `resourceVersion`; 0 = start with the current objects.
    from: u64,
    send_initial: bool,
    bookmarks: bool,
    timeout: Duration,
}

/// The watch parameters of a request; a watch of one named object filters on its name.
fn watch_params(
    params: &Params,
    ns: Option<&str>,
    name: Option<&str>,
) -> Result<WatchParams, ApiError> {
    let (lsel, mut fsel) = selectors(params)?;
    if let Some(n) = name {
        fsel = FieldSelector::parse(&format!("metadata.name={n}"))?;
    }
    Ok(WatchParams {
        filter: WatchFilter {
            ns: ns.map(str::to_owned),
            lsel,
            fsel,
        },
        from: params
            .get("resourceVersion")
            .and_then(|r| r.parse::<u64>().ok())
            .unwrap_or(0),
        send_initial: truthy(params, "sendInitialEvents"),
        bookmarks: truthy(params, "allowWatchBookmarks"),
        timeout: params
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(1800)),
    })
}

/// The events a watch starts with, or the message of its `410 Gone`.
fn backlog(
    inner: &Inner,
    def: &ResourceDef,
    ns: Option<&str>,
    key: &str,
    p: &WatchParams,
) -> Result<Vec<(&'static str, Value)>, String> {
    if p.from == 0 || p.send_initial {
        return Ok(inner
            .list(def, ns)
            .into_iter()
            .filter(|o| p.filter.matches(o))
            .map(|o| ("ADDED", o.clone()))
            .collect());
    }
    if p.from < inner.oldest_watchable(key) {
        return Err(format!(
            "too old resource version: {} ({})",
            p.from,
            inner.oldest_watchable(key)
        ));
    }
    Ok(inner
        .history
        .get(key)
        .map(|h| {
            h.iter()
                .filter(|e| e.rv > p.from)
                .filter_map(|e| p.filter.translate(e).map(|t| (t, e.obj.clone())))
                .collect()
        })
        .unwrap_or_default())
}

/// One watch event line, `type` before `object` as a real API server writes it (a
/// `serde_json::Map` would sort `object` first, which makes clients buffer the object
/// before they know the event type, and so cost them more than a real server does).
fn event_line(ty: &str, object: &Value) -> Bytes {
    let mut b = Vec::with_capacity(256);
    b.extend_from_slice(b"{\"type\":");
    // Writing to a Vec cannot fail, and a `Value` always serializes.
    let _ = serde_json::to_writer(&mut b, ty);
    b.extend_from_slice(b",\"object\":");
    let _ = serde_json::to_writer(&mut b, object);
    b.extend_from_slice(b"}\n");
    Bytes::from(b)
}

/// Encodes the events of one watch in the representation it asked for.
struct Encoder {
    kind: String,
    av: String,
    fmt: Format,
}

impl Encoder {
    fn object(&self, ty: &str, o: &Value) -> Bytes {
        let mut o = o.clone();
        o["apiVersion"] = json!(self.av);
        let o = if self.fmt == Format::Metadata {
            partial_metadata(&o)
        } else {
            o
        };
        event_line(ty, &o)
    }

    /// A `BOOKMARK` at `rv`; `end` marks the end of the initial events.
    fn bookmark(&self, rv: u64, end: bool) -> Bytes {
        let mut o = json!({"kind": self.kind, "apiVersion": self.av, "metadata": {"resourceVersion": rv.to_string()}});
        if self.fmt == Format::Metadata {
            o["kind"] = json!("PartialObjectMetadata");
            o["apiVersion"] = json!("meta.k8s.io/v1");
        }
        if end {
            o["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        event_line("BOOKMARK", &o)
    }
}

/// Starts a watch: the response streams its events until it times out, is closed, or
/// the client goes away.
pub(super) fn start(call: &Call<'_>) -> Response {
    let p = match watch_params(call.params, call.ns, call.name) {
        Ok(p) => p,
        Err(e) => return error_response(&e),
    };
    let def = call.def;
    let key = def.storage_key();
    let (start, rx, progress) = {
        let inner = lock(&call.sh.inner);
        // Subscribed under the same lock as the backlog: no event falls in between.
        let rx = inner.tx.subscribe();
        let progress = inner.rv;
        (backlog(&inner, def, call.ns, &key, &p), rx, progress)
    };
    let interval = *lock(&call.sh.bookmark_interval);
    let mut close_rx = call.sh.close_epoch.subscribe();
    close_rx.borrow_and_update();
    let (tx, out_rx) = mpsc::channel::<Bytes>(256);
    let task = WatchTask {
        key,
        enc: Encoder {
            kind: def.kind.clone(),
            av: def.api_version(call.version),
            fmt: call.fmt,
        },
        p,
        rx,
        close_rx,
        progress,
        interval,
    };
    tokio::spawn(task.run(tx, start));
    let stream = futures::stream::unfold(out_rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(stream))
        .unwrap_or_default()
}

/// The task writing one watch's events.
struct WatchTask {
    key: String,
    enc: Encoder,
    p: WatchParams,
    rx: broadcast::Receiver<Arc<Event>>,
    close_rx: watch::Receiver<u64>,
    /// The resource version of the last event seen (of any resource), for bookmarks.
    progress: u64,
    interval: Duration,
}

impl WatchTask {
    async fn run(self, tx: mpsc::Sender<Bytes>, start: Result<Vec<(&'static str, Value)>, String>) {
        let WatchTask {
            key,
            enc,
            p,
            mut rx,
            mut close_rx,
            mut progress,
            interval,
        } = self;
        let initial = match start {
            Ok(initial) => initial,
            Err(msg) => {
                let st = ApiError::gone(msg).to_status();
                let _ = tx.send(event_line("ERROR", &st)).await;
                return;
            }
        };
        for (ty, o) in &initial {
            if tx.send(enc.object(ty, o)).await.is_err() {
                return;
            }
        }
        if p.send_initial && tx.send(enc.bookmark(progress, true)).await.is_err() {
            return;
        }
        let deadline = tokio::time::sleep(p.timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Ok(ev) => {
                        progress = ev.rv;
                        if ev.key != key {
                            continue;
                        }
                        if let Some(ty) = p.filter.translate(&ev)
                            && tx.send(enc.object(ty, &ev.obj)).await.is_err()
                        {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tick.tick(), if p.bookmarks => {
                    if tx.send(enc.bookmark(progress, false)).await.is_err() {
                        return;
                    }
                }
                _ = close_rx.changed() => return,
                _ = &mut deadline => return,
                _ = tx.closed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_event_lines_put_the_type_first() {
        let line = event_line(
            "MODIFIED",
            &json!({"metadata": {"name": "a"}, "kind": "Secret"}),
        );
        assert_eq!(
            std::str::from_utf8(&line).unwrap(),
            "{\"type\":\"MODIFIED\",\"object\":{\"kind\":\"Secret\",\"metadata\":{\"name\":\"a\"}}}\n"
        );
    }
}
