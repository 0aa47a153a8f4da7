//! HTTP front: routing, verbs, watches, request accounting, faults, `/_testkit` endpoints.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use crate::discovery;
use crate::rbac::{self, User};
use crate::request_info::{self, RequestInfo};
use crate::resources::{ResourceDef, Special};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::{DeleteOpts, Event, Inner, PatchType, WriteOpts, partial_metadata};
use crate::util::{human_age, meta_str};

/// A rule failing the next `remaining` matching requests.
#[derive(Debug, Clone)]
pub(crate) struct FailRule {
    pub verb: Option<String>,
    pub resource: Option<String>,
    pub remaining: u32,
    pub code: u16,
    pub message: String,
}

/// A rule delaying matching requests.
#[derive(Debug, Clone)]
pub(crate) struct LatencyRule {
    pub verb: Option<String>,
    pub resource: Option<String>,
    pub delay: Duration,
    pub remaining: Option<u32>,
}

#[derive(Debug, Default)]
pub(crate) struct Faults {
    pub fail: Vec<FailRule>,
    pub latency: Vec<LatencyRule>,
}

/// State shared by all requests.
pub(crate) struct Shared {
    pub inner: Mutex<Inner>,
    pub counts: Mutex<BTreeMap<(String, String), u64>>,
    /// Requests per (User-Agent, user, verb, resource), so tests can tell one client's
    /// calls from another's and check who made them.
    pub agent_calls: Mutex<BTreeMap<(String, String, String, String), u64>>,
    pub faults: Mutex<Faults>,
    pub paused: watch::Sender<bool>,
    pub close_epoch: watch::Sender<u64>,
    pub bookmark_interval: Mutex<Duration>,
    pub addr: String,
}

/// Lock a mutex, recovering from poisoning (a panicking test must not wedge the server).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn matches_rule(rv: &Option<String>, rr: &Option<String>, verb: &str, resource: &str) -> bool {
    rv.as_deref().is_none_or(|v| v == "*" || v == verb)
        && rr.as_deref().is_none_or(|r| r == "*" || r == resource)
}

fn json_response(code: u16, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap_or_default()
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.to_status())
}

fn text_response(code: u16, s: &str) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::OK))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(s.to_owned()))
        .unwrap_or_default()
}

fn not_found_path() -> Response {
    let mut e = ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    );
    e.details.causes.clear();
    error_response(&e)
}

type Params = BTreeMap<String, String>;

fn parse_query(q: Option<&str>) -> Params {
    q.map(|q| {
        form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect::<BTreeMap<_, _>>()
    })
    .unwrap_or_default()
}

fn truthy(p: &Params, k: &str) -> bool {
    matches!(p.get(k).map(String::as_str), Some("true" | "1"))
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Full,
    Metadata,
    Table,
}

fn format_of(h: &HeaderMap) -> Format {
    let accept = h
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let first = accept.split(',').next().unwrap_or_default();
    if first.contains("as=PartialObjectMetadata") {
        Format::Metadata
    } else if first.contains("as=Table") {
        Format::Table
    } else {
        Format::Full
    }
}

fn manager_of(p: &Params, h: &HeaderMap) -> String {
    if let Some(m) = p.get("fieldManager").filter(|m| !m.is_empty()) {
        return m.clone();
    }
    h.get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown")
        .to_owned()
}

fn parse_body(bytes: &[u8], yaml_ok: bool) -> Result<Value, ApiError> {
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => Ok(v),
        Err(e) if !yaml_ok => Err(ApiError::bad_request(format!(
            "error decoding request body as JSON: {e}"
        ))),
        Err(_) => serde_yaml::from_slice::<Value>(bytes)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}"))),
    }
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
        return testkit(&sh, &parts.method, rest, &bytes);
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
    route(sh, parts.method, &path, params, parts.headers, bytes, &user).await
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

async fn route(
    sh: Arc<Shared>,
    method: Method,
    path: &str,
    params: Params,
    headers: HeaderMap,
    bytes: Bytes,
    user: &User,
) -> Response {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["version"] => return json_response(200, &discovery::version()),
        ["healthz" | "readyz" | "livez", ..] => return text_response(200, "ok"),
        ["api"] => return json_response(200, &discovery::core_versions(&sh.addr)),
        ["apis"] => {
            let inner = lock(&sh.inner);
            return json_response(200, &discovery::group_list(&inner.registry));
        }
        ["api", "v1"] => {
            let inner = lock(&sh.inner);
            return discovery::resource_list(&inner.registry, "", "v1")
                .map(|v| json_response(200, &v))
                .unwrap_or_else(not_found_path);
        }
        ["apis", g] => {
            let inner = lock(&sh.inner);
            return discovery::group(&inner.registry, g)
                .map(|v| json_response(200, &v))
                .unwrap_or_else(not_found_path);
        }
        ["apis", g, v] => {
            let inner = lock(&sh.inner);
            return discovery::resource_list(&inner.registry, g, v)
                .map(|v| json_response(200, &v))
                .unwrap_or_else(not_found_path);
        }
        ["openapi", "v3"] => {
            let inner = lock(&sh.inner);
            return json_response(200, &discovery::openapi_v3_root(&inner.registry));
        }
        ["openapi", "v3", "api", v] => {
            let inner = lock(&sh.inner);
            return discovery::openapi_v3_gv(&inner.registry, "", v)
                .map(|v| json_response(200, &v))
                .unwrap_or_else(not_found_path);
        }
        ["openapi", "v3", "apis", g, v] => {
            let inner = lock(&sh.inner);
            return discovery::openapi_v3_gv(&inner.registry, g, v)
                .map(|v| json_response(200, &v))
                .unwrap_or_else(not_found_path);
        }
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", g, v, rest @ ..] => (g, v, rest),
        _ => return not_found_path(),
    };
    let found = {
        let inner = lock(&sh.inner);
        let namespaced = |p: &str| inner.find(group, version, p).filter(|d| d.namespaced);
        match rest {
            ["namespaces", ns, plural, tail @ ..] if namespaced(plural).is_some() => {
                namespaced(plural).map(|d| (d, Some(ns.to_string()), tail.to_vec()))
            }
            [plural, tail @ ..] => inner
                .find(group, version, plural)
                .filter(|d| !d.namespaced || tail.is_empty())
                .map(|d| (d, None, tail.to_vec())),
            [] => None,
        }
    };
    let Some((def, ns, tail)) = found else {
        return not_found_path();
    };
    let name = tail.first().map(|s| s.to_string());
    let sub = tail.get(1).map(|s| s.to_string());
    if tail.len() > 2 {
        return not_found_path();
    }
    let watch = truthy(&params, "watch");
    let create_only = def.special == Special::TokenReview;
    let verb = match (&method, &name) {
        (&Method::POST, None) => "create",
        (&Method::POST, Some(_)) if sub.as_deref() == Some("token") => "create",
        _ if create_only => "",
        (&Method::GET, None) if watch => "watch",
        (&Method::GET, None) => "list",
        (&Method::GET, Some(_)) if watch => "watch",
        (&Method::GET, Some(_)) => "get",
        (&Method::PUT, Some(_)) => "update",
        (&Method::PATCH, Some(_)) => "patch",
        (&Method::DELETE, None) => "deletecollection",
        (&Method::DELETE, Some(_)) => "delete",
        _ => "",
    };
    if verb.is_empty() {
        return error_response(&ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method})"
        )));
    }
    let resource = match &sub {
        Some(s) => format!("{}/{s}", def.plural),
        None => def.plural.clone(),
    };
    // fault injection
    let (fail, delay) = {
        let mut f = lock(&sh.faults);
        let mut fail = None;
        if let Some(rule) = f
            .fail
            .iter_mut()
            .find(|r| r.remaining > 0 && matches_rule(&r.verb, &r.resource, verb, &resource))
        {
            rule.remaining -= 1;
            fail = Some((rule.code, rule.message.clone()));
        }
        f.fail.retain(|r| r.remaining > 0);
        let mut delay = Duration::ZERO;
        for rule in f.latency.iter_mut() {
            if rule.remaining != Some(0)
                && matches_rule(&rule.verb, &rule.resource, verb, &resource)
            {
                delay += rule.delay;
                if let Some(n) = rule.remaining.as_mut() {
                    *n -= 1;
                }
            }
        }
        f.latency.retain(|r| r.remaining != Some(0));
        (fail, delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some((code, message)) = fail {
        let mut e = ApiError::new(code, ApiError::reason_for_code(code), message);
        if code == 429 || code == 503 {
            e.details.retry_after = Some(1);
        }
        return error_response(&e);
    }

    if let Some(ns) = &ns
        && !crate::validation::is_dns_label(ns)
    {
        return not_found_path();
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.contains("protobuf") || content_type.contains("cbor") {
        return error_response(&ApiError::unsupported_media_type(content_type));
    }
    let fmt = format_of(&headers);
    let ns = ns.as_deref();
    let name = name.as_deref();
    let sub = sub.as_deref();
    match (verb, sub) {
        ("watch", _) => start_watch(&sh, &def, version, ns, name, &params, fmt),
        ("list", _) => {
            let inner = lock(&sh.inner);
            match list(&inner, &def, version, ns, &params, fmt) {
                Ok(v) => json_response(200, &v),
                Err(e) => error_response(&e),
            }
        }
        ("get", None | Some("status")) => {
            let inner = lock(&sh.inner);
            match inner.get(&def, ns, name.unwrap_or_default()) {
                Some(o) => json_response(200, &render(&def, version, o, fmt)),
                None => error_response(&ApiError::not_found(
                    &def.group,
                    &def.plural,
                    name.unwrap_or_default(),
                )),
            }
        }
        ("create", None) => write(
            &sh, &def, version, ns, verb, None, false, &params, &headers, &bytes, user,
        ),
        ("create", Some("token")) if def.special == Special::ServiceAccount => {
            let body = match parse_body(&bytes, false) {
                Ok(b) => b,
                Err(e) => return error_response(&e),
            };
            let mut inner = lock(&sh.inner);
            match inner.token_request(ns.unwrap_or_default(), name.unwrap_or_default(), &body) {
                Ok(v) => json_response(201, &v),
                Err(e) => error_response(&e),
            }
        }
        ("update" | "patch" | "delete", None) => write(
            &sh, &def, version, ns, verb, name, false, &params, &headers, &bytes, user,
        ),
        ("update" | "patch", Some("status")) if def.status_subresource => write(
            &sh, &def, version, ns, verb, name, true, &params, &headers, &bytes, user,
        ),
        ("deletecollection", None) => {
            let opts = delete_opts(&params, &bytes);
            let mut inner = lock(&sh.inner);
            let (lsel, fsel) = match selectors(&params) {
                Ok(s) => s,
                Err(e) => return error_response(&e),
            };
            let names: Vec<(Option<String>, String)> = inner
                .list(&def, ns)
                .into_iter()
                .filter(|o| lsel.matches(o) && fsel.matches(o))
                .map(|o| {
                    (
                        meta_str(o, "namespace").map(str::to_owned),
                        meta_str(o, "name").unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            let mut items = Vec::new();
            for (n, name) in names {
                let before = inner.get(&def, n.as_deref(), &name).cloned();
                match inner.delete(&def, n.as_deref(), &name, &opts) {
                    Ok(v) if v.get("kind").and_then(Value::as_str) == Some("Status") => {
                        items.extend(before);
                    }
                    Ok(v) => items.push(v),
                    Err(_) => {}
                }
            }
            json_response(
                200,
                &json!({"kind": format!("{}List", def.kind), "apiVersion": def.api_version(version), "metadata": {"resourceVersion": inner.rv.to_string()}, "items": items}),
            )
        }
        _ => not_found_path(),
    }
}

fn delete_opts(params: &Params, bytes: &[u8]) -> DeleteOpts {
    let body = parse_body(bytes, false).unwrap_or(Value::Null);
    let policy = params.get("propagationPolicy").cloned().or_else(|| {
        body.get("propagationPolicy")
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    let orphan = policy.as_deref() == Some("Orphan")
        || body.get("orphanDependents").and_then(Value::as_bool) == Some(true);
    let pre = body.get("preconditions");
    DeleteOpts {
        orphan,
        dry_run: params.contains_key("dryRun")
            || body
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty()),
        uid: pre
            .and_then(|p| p.get("uid"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        resource_version: pre
            .and_then(|p| p.get("resourceVersion"))
            .and_then(Value::as_str)
            .map(str::to_owned),
    }
}

#[allow(clippy::too_many_arguments)]
fn write(
    sh: &Shared,
    def: &ResourceDef,
    version: &str,
    ns: Option<&str>,
    verb: &str,
    name: Option<&str>,
    status: bool,
    params: &Params,
    headers: &HeaderMap,
    bytes: &[u8],
    user: &User,
) -> Response {
    let fmt = format_of(headers);
    let opts = WriteOpts {
        manager: manager_of(params, headers),
        dry_run: params.contains_key("dryRun"),
        force: truthy(params, "force"),
        strict: params.get("fieldValidation").map(String::as_str) == Some("Strict"),
    };
    let name_s = name.unwrap_or_default();
    let result: Result<(u16, Value), ApiError> = (|| {
        let mut inner = lock(&sh.inner);
        match verb {
            "create" => {
                let body = parse_body(bytes, false)?;
                if def.special == Special::TokenReview {
                    return Ok((201, inner.token_review(&body)));
                }
                inner
                    .create(def, version, ns, body, &opts)
                    .map(|v| (201, v))
            }
            "update" => {
                let body = parse_body(bytes, false)?;
                inner
                    .update(def, version, ns, name_s, body, status, &opts)
                    .map(|v| (200, v))
            }
            "patch" => {
                let ct = headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                let ct = ct.split(';').next().unwrap_or_default().trim();
                match ct {
                    "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
                        let body = parse_body(bytes, true)?;
                        // An apply that creates the object is also authorized as create.
                        if !status && inner.get(def, ns, name_s).is_none() {
                            let create = RequestInfo {
                                resource_request: true,
                                verb: "create".into(),
                                group: def.group.clone(),
                                version: version.to_owned(),
                                namespace: ns.unwrap_or_default().to_owned(),
                                resource: def.plural.clone(),
                                name: name_s.to_owned(),
                                ..Default::default()
                            };
                            if !rbac::allowed(&inner, user, &create) {
                                return Err(rbac::forbidden_create(&create));
                            }
                        }
                        // apply needs an explicit manager (no User-Agent fallback)
                        let opts = WriteOpts {
                            manager: params.get("fieldManager").cloned().unwrap_or_default(),
                            ..opts.clone()
                        };
                        inner
                            .apply(def, version, ns, name_s, body, status, &opts)
                            .map(|(v, created)| (if created { 201 } else { 200 }, v))
                    }
                    "application/merge-patch+json"
                    | "application/json-patch+json"
                    | "application/strategic-merge-patch+json" => {
                        let pt = match ct {
                            "application/merge-patch+json" => PatchType::Merge,
                            "application/json-patch+json" => PatchType::Json,
                            _ => PatchType::Strategic,
                        };
                        let body = parse_body(bytes, false)?;
                        inner
                            .patch(def, version, ns, name_s, pt, &body, status, &opts)
                            .map(|v| (200, v))
                    }
                    other => Err(ApiError::unsupported_media_type(other)),
                }
            }
            "delete" => {
                let opts = delete_opts(params, bytes);
                inner.delete(def, ns, name_s, &opts).map(|v| (200, v))
            }
            _ => Err(ApiError::method_not_allowed("unsupported verb")),
        }
    })();
    match result {
        Ok((code, v)) if v.get("kind").and_then(Value::as_str) == Some("Status") => {
            json_response(code, &v)
        }
        Ok((code, v)) if def.special == Special::TokenReview => json_response(code, &v),
        Ok((code, v)) => json_response(code, &render(def, version, &v, fmt)),
        Err(e) => error_response(&e),
    }
}

fn render(def: &ResourceDef, version: &str, obj: &Value, fmt: Format) -> Value {
    let mut o = obj.clone();
    o["apiVersion"] = json!(def.api_version(version));
    match fmt {
        Format::Metadata => partial_metadata(&o),
        Format::Table => table(def, version, &[&o], &Value::Null),
        Format::Full => o,
    }
}

fn selectors(params: &Params) -> Result<(LabelSelector, FieldSelector), ApiError> {
    Ok((
        LabelSelector::parse(
            params
                .get("labelSelector")
                .map(String::as_str)
                .unwrap_or_default(),
        )?,
        FieldSelector::parse(
            params
                .get("fieldSelector")
                .map(String::as_str)
                .unwrap_or_default(),
        )?,
    ))
}

fn list(
    inner: &Inner,
    def: &ResourceDef,
    version: &str,
    ns: Option<&str>,
    params: &Params,
    fmt: Format,
) -> Result<Value, ApiError> {
    if def.special == Special::TokenReview {
        return Err(ApiError::method_not_allowed(
            "tokenreviews can only be created",
        ));
    }
    let (lsel, fsel) = selectors(params)?;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (list_rv, start_after) = match params.get("continue").filter(|c| !c.is_empty()) {
        Some(c) => {
            let tok: Value = b64
                .decode(c)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
            let rv = tok.get("rv").and_then(Value::as_u64).unwrap_or(inner.rv);
            if rv < inner.expired_below {
                return Err(ApiError::gone(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ));
            }
            (
                rv,
                tok.get("start").and_then(Value::as_str).map(str::to_owned),
            )
        }
        None => (inner.rv, None),
    };
    let limit = params
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let matching: Vec<&Value> = inner
        .list(def, ns)
        .into_iter()
        .filter(|o| lsel.matches(o) && fsel.matches(o))
        .filter(|o| {
            start_after.as_deref().is_none_or(|s| {
                let k = format!(
                    "{}/{}",
                    meta_str(o, "namespace").unwrap_or_default(),
                    meta_str(o, "name").unwrap_or_default()
                );
                k.as_str() > s
            })
        })
        .collect();
    let (page, more) = match limit {
        Some(l) if matching.len() > l => (&matching[..l], matching.len() - l),
        _ => (&matching[..], 0),
    };
    let mut meta = json!({"resourceVersion": list_rv.to_string()});
    if more > 0
        && let Some(last) = page.last()
    {
        let key = format!(
            "{}/{}",
            meta_str(last, "namespace").unwrap_or_default(),
            meta_str(last, "name").unwrap_or_default()
        );
        meta["continue"] = json!(b64.encode(json!({"rv": list_rv, "start": key}).to_string()));
        meta["remainingItemCount"] = json!(more);
    }
    let av = def.api_version(version);
    Ok(match fmt {
        Format::Table => table(def, version, page, &meta),
        Format::Metadata => json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": meta,
            "items": page.iter().map(|o| partial_metadata(o)).collect::<Vec<_>>(),
        }),
        Format::Full => json!({
            "kind": format!("{}List", def.kind),
            "apiVersion": av,
            "metadata": meta,
            "items": page.iter().map(|o| { let mut o = (*o).clone(); o["apiVersion"] = json!(av); o }).collect::<Vec<_>>(),
        }),
    })
}

/// Tiny JSONPath for printer columns: `.a.b`, `.a[?(@.k=="v")].b`.
fn jsonpath(obj: &Value, path: &str) -> Option<Value> {
    let mut cur = obj.clone();
    let mut rest = path.trim().trim_start_matches('{').trim_end_matches('}');
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("[?(@.") {
            let end = r.find(")]")?;
            let cond = &r[..end];
            let (k, v) = cond.split_once("==")?;
            let v = v.trim().trim_matches('"').trim_matches('\'');
            cur = cur
                .as_array()?
                .iter()
                .find(|it| it.get(k.trim()).and_then(Value::as_str) == Some(v))?
                .clone();
            rest = &r[end + 2..];
        } else if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            cur = cur.get(&r[..end])?.clone();
            rest = &r[end..];
        } else {
            return None;
        }
    }
    Some(cur)
}

fn table(def: &ResourceDef, version: &str, items: &[&Value], meta: &Value) -> Value {
    let mut cols = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}),
    ];
    let custom: Vec<(String, String, String)> = if def.printer_columns.is_empty() {
        vec![(
            "Age".into(),
            "date".into(),
            ".metadata.creationTimestamp".into(),
        )]
    } else {
        def.printer_columns.clone()
    };
    for (n, t, _) in &custom {
        cols.push(json!({"name": n, "type": if t == "date" { "string" } else { t.as_str() }, "format": "", "description": "", "priority": 0}));
    }
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut cells = vec![json!(meta_str(o, "name").unwrap_or_default())];
            for (_, t, p) in &custom {
                let v = jsonpath(o, p);
                cells.push(match (t.as_str(), v) {
                    ("date", Some(Value::String(s))) => json!(human_age(&s)),
                    (_, Some(v)) => v,
                    (_, None) => Value::Null,
                });
            }
            let mut po = partial_metadata(o);
            po["apiVersion"] = json!("meta.k8s.io/v1");
            json!({"cells": cells, "object": po})
        })
        .collect();
    let _ = version;
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": if meta.is_null() { json!({}) } else { meta.clone() },
        "columnDefinitions": cols,
        "rows": rows,
    })
}

struct WatchFilter {
    ns: Option<String>,
    name: Option<String>,
    lsel: LabelSelector,
    fsel: FieldSelector,
}

impl WatchFilter {
    fn matches(&self, o: &Value) -> bool {
        self.ns
            .as_deref()
            .is_none_or(|ns| meta_str(o, "namespace") == Some(ns))
            && self
                .name
                .as_deref()
                .is_none_or(|n| meta_str(o, "name") == Some(n))
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

fn start_watch(
    sh: &Arc<Shared>,
    def: &Arc<ResourceDef>,
    version: &str,
    ns: Option<&str>,
    name: Option<&str>,
    params: &Params,
    fmt: Format,
) -> Response {
    let (lsel, mut fsel) = match selectors(params) {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    if let Some(n) = name {
        fsel = match FieldSelector::parse(&format!("metadata.name={n}")) {
            Ok(f) => f,
            Err(e) => return error_response(&e),
        };
    }
    let filter = WatchFilter {
        ns: ns.map(str::to_owned),
        name: None,
        lsel,
        fsel,
    };
    let rv_param = params
        .get("resourceVersion")
        .and_then(|r| r.parse::<u64>().ok())
        .unwrap_or(0);
    let send_initial = truthy(params, "sendInitialEvents");
    let bookmarks = truthy(params, "allowWatchBookmarks");
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let key = def.storage_key();
    let av = def.api_version(version);
    let kind = def.kind.clone();

    let (initial, mut rx, mut progress, gone) = {
        let inner = lock(&sh.inner);
        let rx = inner.tx.subscribe();
        let progress = inner.rv;
        if rv_param == 0 || send_initial {
            let objs: Vec<(&'static str, Value)> = inner
                .list(def, ns)
                .into_iter()
                .filter(|o| filter.matches(o))
                .map(|o| ("ADDED", o.clone()))
                .collect();
            (objs, rx, progress, None)
        } else if rv_param < inner.oldest_watchable(&key) {
            (
                Vec::new(),
                rx,
                progress,
                Some(format!(
                    "too old resource version: {rv_param} ({})",
                    inner.oldest_watchable(&key)
                )),
            )
        } else {
            let evs: Vec<(&'static str, Value)> = inner
                .history
                .get(&key)
                .map(|h| {
                    h.iter()
                        .filter(|e| e.rv > rv_param)
                        .filter_map(|e| filter.translate(e).map(|t| (t, e.obj.clone())))
                        .collect()
                })
                .unwrap_or_default();
            (evs, rx, progress, None)
        }
    };
    let interval = *lock(&sh.bookmark_interval);
    let mut close_rx = sh.close_epoch.subscribe();
    close_rx.borrow_and_update();
    let (tx, out_rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    let encode = move |ty: &str, o: &Value| -> Bytes {
        let mut o = o.clone();
        o["apiVersion"] = json!(av);
        let o = if fmt == Format::Metadata {
            partial_metadata(&o)
        } else {
            o
        };
        event_line(ty, &o)
    };
    let bookmark = {
        let kind = kind.clone();
        let av = def.api_version(version);
        move |rv: u64, end: bool| -> Bytes {
            let mut o = json!({"kind": kind, "apiVersion": av, "metadata": {"resourceVersion": rv.to_string()}});
            if fmt == Format::Metadata {
                o["kind"] = json!("PartialObjectMetadata");
                o["apiVersion"] = json!("meta.k8s.io/v1");
            }
            if end {
                o["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            event_line("BOOKMARK", &o)
        }
    };
    tokio::spawn(async move {
        if let Some(msg) = gone {
            let st = ApiError::gone(msg).to_status();
            let _ = tx.send(event_line("ERROR", &st)).await;
            return;
        }
        for (ty, o) in &initial {
            if tx.send(encode(ty, o)).await.is_err() {
                return;
            }
        }
        if send_initial && tx.send(bookmark(progress, true)).await.is_err() {
            return;
        }
        let deadline = tokio::time::sleep(timeout);
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
                        if let Some(ty) = filter.translate(&ev)
                            && tx.send(encode(ty, &ev.obj)).await.is_err()
                        {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tick.tick(), if bookmarks => {
                    if tx.send(bookmark(progress, false)).await.is_err() {
                        return;
                    }
                }
                _ = close_rx.changed() => return,
                _ = &mut deadline => return,
                _ = tx.closed() => return,
            }
        }
    });
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

/// `/_testkit/...` endpoints.
fn testkit(sh: &Shared, method: &Method, rest: &str, bytes: &[u8]) -> Response {
    let body = parse_body(bytes, true).unwrap_or(Value::Null);
    let s = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
    match (method.as_str(), rest.trim_end_matches('/')) {
        ("GET", "counts") => json_response(200, &counts_json(&lock(&sh.counts))),
        ("POST", "counts/reset") => {
            lock(&sh.counts).clear();
            lock(&sh.agent_calls).clear();
            json_response(200, &json!({}))
        }
        ("POST", "faults") => {
            let code = body.get("code").and_then(Value::as_u64).unwrap_or(500) as u16;
            lock(&sh.faults).fail.push(FailRule {
                verb: s("verb"),
                resource: s("resource"),
                remaining: body.get("count").and_then(Value::as_u64).unwrap_or(1) as u32,
                code,
                message: s("message").unwrap_or_else(|| "injected fault".into()),
            });
            json_response(200, &json!({}))
        }
        ("POST", "latency") => {
            lock(&sh.faults).latency.push(LatencyRule {
                verb: s("verb"),
                resource: s("resource"),
                delay: Duration::from_millis(
                    body.get("delayMs").and_then(Value::as_u64).unwrap_or(0),
                ),
                remaining: body.get("count").and_then(Value::as_u64).map(|c| c as u32),
            });
            json_response(200, &json!({}))
        }
        ("DELETE", "faults") => {
            let mut f = lock(&sh.faults);
            f.fail.clear();
            f.latency.clear();
            json_response(200, &json!({}))
        }
        ("POST", "watches/close") => {
            sh.close_epoch.send_modify(|e| *e += 1);
            json_response(200, &json!({}))
        }
        ("POST", "pause") => {
            sh.paused.send_replace(true);
            json_response(200, &json!({}))
        }
        ("POST", "resume") => {
            sh.paused.send_replace(false);
            json_response(200, &json!({}))
        }
        ("POST", "expire") => {
            lock(&sh.inner).expire_all();
            json_response(200, &json!({}))
        }
        ("POST", "history-limit") => {
            let n = body.get("limit").and_then(Value::as_u64).unwrap_or(1000) as usize;
            lock(&sh.inner).set_history_limit(n);
            json_response(200, &json!({}))
        }
        _ => not_found_path(),
    }
}

pub(crate) fn counts_json(c: &BTreeMap<(String, String), u64>) -> Value {
    json!({"counts": c.iter().map(|((v, r), n)| json!({"verb": v, "resource": r, "count": n})).collect::<Vec<_>>()})
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
