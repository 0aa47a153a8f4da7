//! HTTP front of the fake. Every request is parsed into its authorization attributes
//! ([`request_info::parse`]), authenticated, counted and authorized ([`rbac`]), then routed:
//! paths that are not resources to [`nonresource`]; resource requests are resolved against
//! the registry, go through fault injection ([`faults`]) and are dispatched by verb to the
//! handlers in [`read`], [`write`] and [`watch`]. `/_testkit/` ([`testkit`]) is the in-band
//! control surface, served before all of that.

mod faults;
mod nonresource;
mod read;
mod render;
mod response;
mod testkit;
mod watch;
mod write;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::response::Response;
use tokio::sync::watch as signal;

pub(crate) use faults::{FailRule, Faults, LatencyRule};
use response::{
    Format, Params, content_type, error_response, format_of, not_found_path, parse_query,
};

use crate::rbac::{self, User};
use crate::request_info::{self, RequestInfo};
use crate::resources::{ResourceDef, Special};
use crate::status::ApiError;
use crate::store::Inner;

/// State shared by all requests.
pub(crate) struct Shared {
    pub inner: Mutex<Inner>,
    pub counts: Mutex<BTreeMap<(String, String), u64>>,
    /// Requests per (verb, API group, resource), for resources served under more than one
    /// group (core and events.k8s.io `events`).
    pub group_counts: Mutex<BTreeMap<(String, String, String), u64>>,
    /// Requests per (User-Agent, user, verb, resource), so tests can tell one client's
    /// calls from another's and check who made them.
    pub agent_calls: Mutex<BTreeMap<(String, String, String, String), u64>>,
    pub faults: Mutex<Faults>,
    pub paused: signal::Sender<bool>,
    pub close_epoch: signal::Sender<u64>,
    pub bookmark_interval: Mutex<Duration>,
    pub addr: String,
}

/// Lock a mutex, recovering from poisoning (a panicking test must not wedge the server).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Entry point of every request.
pub(crate) async fn handle(State(sh): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let params = parse_query(parts.uri.query());
    let bytes = match axum::body::to_bytes(body, 64 << 20).await {
        Ok(b) => b,
        Err(e) => return error_response(&ApiError::bad_request(format!("reading body: {e}"))),
    };
    if let Some(rest) = path.strip_prefix("/_testkit/") {
        return testkit::serve(&sh, &parts.method, rest, &bytes);
    }
    // pause: hold every request until resumed
    let mut rx = sh.paused.subscribe();
    while *rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            break;
        }
    }
    let info = request_info::parse(parts.method.as_str(), &path, &params);
    let user = match authorize(&sh, &info, &parts.headers) {
        Ok(user) => user,
        Err(e) => return error_response(&e),
    };
    if !info.resource_request {
        return nonresource::serve(&sh, &path);
    }
    let request = Incoming {
        method: &parts.method,
        info: &info,
        params: &params,
        headers: &parts.headers,
        body: &bytes,
        user: &user,
    };
    route(&sh, request).await
}

/// Authenticates and authorizes a request, counting it (refused ones too) first.
fn authorize(sh: &Shared, info: &RequestInfo, headers: &HeaderMap) -> Result<User, ApiError> {
    let inner = lock(&sh.inner);
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let user = rbac::authenticate(&inner, auth)?;
    if info.resource_request {
        let resource = info.combined_resource();
        *lock(&sh.counts)
            .entry((info.verb.clone(), resource.clone()))
            .or_default() += 1;
        *lock(&sh.group_counts)
            .entry((info.verb.clone(), info.group.clone(), resource.clone()))
            .or_default() += 1;
        let agent = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        *lock(&sh.agent_calls)
            .entry((agent, user.name.clone(), info.verb.clone(), resource))
            .or_default() += 1;
    }
    if rbac::allowed(&inner, &user, info) {
        Ok(user)
    } else {
        Err(rbac::forbidden(&user, info))
    }
}

/// An authorized resource request, as it came in.
struct Incoming<'a> {
    method: &'a Method,
    info: &'a RequestInfo,
    params: &'a Params,
    headers: &'a HeaderMap,
    body: &'a [u8],
    user: &'a User,
}

/// A resource request resolved against the registry: what the handlers get.
struct Call<'a> {
    sh: &'a Shared,
    def: &'a ResourceDef,
    version: &'a str,
    /// The namespace, for namespaced resources.
    ns: Option<&'a str>,
    /// The object name from the path.
    name: Option<&'a str>,
    params: &'a Params,
    headers: &'a HeaderMap,
    body: &'a [u8],
    user: &'a User,
    fmt: Format,
}

impl<'a> Call<'a> {
    /// The object `name` (or its status) as the store's writes address it.
    fn target(&self, name: &'a str, status: bool) -> crate::store::WriteTarget<'a> {
        crate::store::WriteTarget {
            def: self.def,
            version: self.version,
            ns: self.ns,
            name,
            status,
        }
    }
}

/// Where a resource request points: the resource, the namespace (for namespaced
/// resources), and the object name and subresource from the path.
struct Target {
    def: Arc<ResourceDef>,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

impl Target {
    /// `plural` or `plural/subresource`, as fault rules name resources.
    fn resource(&self) -> String {
        match &self.sub {
            Some(s) => format!("{}/{s}", self.def.plural),
            None => self.def.plural.clone(),
        }
    }
}

/// Resolves a resource request against the registry; `None` is a `404`.
fn resolve(inner: &Inner, info: &RequestInfo) -> Option<Target> {
    let find = |plural: &str| inner.find(&info.group, &info.version, plural);
    let parts: Vec<&str> = info.parts.iter().map(String::as_str).collect();
    // what follows the resource: name and subresource
    let after = parts.get(1..).unwrap_or_default().to_vec();
    let (def, ns, tail) = match find(&info.resource) {
        // `/namespaces/NS/RESOURCE[/NAME[/SUB]]`
        Some(d) if info.in_namespace && d.namespaced => (d, Some(info.namespace.as_str()), after),
        // `/RESOURCE[/NAME[/SUB]]`, `/namespaces/NAME[/SUB]`; a namespaced resource only as
        // the list across namespaces
        Some(d) if !info.in_namespace && (!d.namespaced || parts.len() == 1) => (d, None, after),
        // `/namespaces/NS/X[/...]` where X is no namespaced resource: served as
        // subresource X of namespace NS, as the fake always has (a real server says 404)
        _ if info.in_namespace => {
            let def = find("namespaces").filter(|d| !d.namespaced)?;
            let tail = [&[info.namespace.as_str()][..], &parts].concat();
            (def, None, tail)
        }
        _ => return None,
    };
    if tail.len() > 2 {
        return None;
    }
    Some(Target {
        def,
        ns: ns.map(str::to_owned),
        name: tail.first().map(|s| (*s).to_owned()),
        sub: tail.get(1).map(|s| (*s).to_owned()),
    })
}

/// The verb a resource endpoint serves for a request, `None` for `405`. The request's
/// verb comes from [`request_info`], which names a list or watch by its field selector
/// for authorization; whether the endpoint is an object or a collection comes from the
/// path.
fn served_verb(method: &Method, info: &RequestInfo, target: &Target) -> Option<&'static str> {
    if *method == Method::HEAD {
        return None;
    }
    let named = target.name.is_some();
    match info.verb.as_str() {
        "create" if !named || target.sub.as_deref() == Some("token") => Some("create"),
        _ if target.def.special == Special::TokenReview => None,
        "watch" => Some("watch"),
        "get" | "list" if named => Some("get"),
        "get" | "list" => Some("list"),
        "update" if named => Some("update"),
        "patch" if named => Some("patch"),
        "delete" | "deletecollection" if named => Some("delete"),
        "delete" | "deletecollection" => Some("deletecollection"),
        _ => None,
    }
}

/// Routes an authorized resource request: resolve, verb, faults, checks, handler.
async fn route(sh: &Shared, req: Incoming<'_>) -> Response {
    let Some(target) = resolve(&lock(&sh.inner), req.info) else {
        return not_found_path();
    };
    let Some(verb) = served_verb(req.method, req.info, &target) else {
        return error_response(&ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({})",
            req.method
        )));
    };
    if let Some(failed) = faults::inject(sh, verb, &target.resource()).await {
        return failed;
    }
    if let Some(ns) = &target.ns
        && !crate::validation::is_dns_label(ns)
    {
        return not_found_path();
    }
    let ct = content_type(req.headers);
    if ct.contains("protobuf") || ct.contains("cbor") {
        return error_response(&ApiError::unsupported_media_type(ct));
    }
    let call = Call {
        sh,
        def: &target.def,
        version: &req.info.version,
        ns: target.ns.as_deref(),
        name: target.name.as_deref(),
        params: req.params,
        headers: req.headers,
        body: req.body,
        user: req.user,
        fmt: format_of(req.headers),
    };
    dispatch(verb, target.sub.as_deref(), &call)
}

/// The handler of a verb on an endpoint; `404` for what the endpoint does not serve.
fn dispatch(verb: &str, sub: Option<&str>, call: &Call<'_>) -> Response {
    let def = call.def;
    match (verb, sub) {
        ("watch", _) => watch::start(call),
        ("list", _) => read::list(call),
        ("get", None | Some("status")) => read::get(call),
        ("create", None) => write::create(call),
        ("create", Some("token")) if def.special == Special::ServiceAccount => {
            write::token_request(call)
        }
        ("update", None) => write::update(call, false),
        ("patch", None) => write::patch(call, false),
        ("delete", None) => write::delete(call),
        ("update", Some("status")) if def.status_subresource => write::update(call, true),
        ("patch", Some("status")) if def.status_subresource => write::patch(call, true),
        ("deletecollection", None) => write::delete_collection(call),
        _ => not_found_path(),
    }
}
