//! Writes: create (and TokenReview), update, the patch types including server-side apply
//! (whose create is authorized as `create` too), delete, deletecollection, and the
//! TokenRequest subresource of service accounts.

use axum::http::{HeaderMap, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::render::render;
use super::response::{
    Params, content_type, error_response, json_response, parse_body, selectors, truthy,
};
use super::{Call, lock};
use crate::rbac;
use crate::request_info::RequestInfo;
use crate::resources::Special;
use crate::status::ApiError;
use crate::store::{DeleteOpts, Inner, PatchType, WriteOpts};
use crate::util::meta_str;

/// The field manager of a write: `fieldManager`, else the User-Agent's product name.
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

fn write_opts(call: &Call<'_>) -> WriteOpts {
    let params = call.params;
    WriteOpts {
        manager: manager_of(params, call.headers),
        dry_run: params.contains_key("dryRun"),
        force: truthy(params, "force"),
        strict: params.get("fieldValidation").map(String::as_str) == Some("Strict"),
        user: Some(call.user.clone()),
    }
}

/// The response of a write: a `Status` or TokenReview as it is, an object rendered.
fn respond(call: &Call<'_>, result: Result<(u16, Value), ApiError>) -> Response {
    match result {
        Ok((code, v)) if v.get("kind").and_then(Value::as_str) == Some("Status") => {
            json_response(code, &v)
        }
        Ok((code, v)) if call.def.special == Special::TokenReview => json_response(code, &v),
        Ok((code, v)) => json_response(code, &render(call.def, call.version, &v, call.fmt)),
        Err(e) => error_response(&e),
    }
}

/// POST to a collection.
pub(super) fn create(call: &Call<'_>) -> Response {
    let opts = write_opts(call);
    let result = (|| {
        let mut inner = lock(&call.sh.inner);
        let body = parse_body(call.body, false)?;
        if call.def.special == Special::TokenReview {
            return Ok((201, inner.token_review(&body)));
        }
        inner
            .create(call.def, call.version, call.ns, body, &opts)
            .map(|v| (201, v))
    })();
    respond(call, result)
}

/// PUT of an object (`status` = of its status subresource).
pub(super) fn update(call: &Call<'_>, status: bool) -> Response {
    let opts = write_opts(call);
    let name = call.name.unwrap_or_default();
    let result = (|| {
        let mut inner = lock(&call.sh.inner);
        let body = parse_body(call.body, false)?;
        inner
            .update(call.target(name, status), body, &opts)
            .map(|v| (200, v))
    })();
    respond(call, result)
}

/// PATCH of an object (`status` = of its status subresource), by content type.
pub(super) fn patch(call: &Call<'_>, status: bool) -> Response {
    let opts = write_opts(call);
    let name = call.name.unwrap_or_default();
    let result = (|| {
        let mut inner = lock(&call.sh.inner);
        let ct = content_type(call.headers);
        let ct = ct.split(';').next().unwrap_or_default().trim();
        let pt = match ct {
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
                return apply(&mut inner, call, status, &opts);
            }
            "application/merge-patch+json" => PatchType::Merge,
            "application/json-patch+json" => PatchType::Json,
            "application/strategic-merge-patch+json" => PatchType::Strategic,
            other => return Err(ApiError::unsupported_media_type(other)),
        };
        let body = parse_body(call.body, false)?;
        inner
            .patch(call.target(name, status), pt, &body, &opts)
            .map(|v| (200, v))
    })();
    respond(call, result)
}

/// Server-side apply; `201` when it created the object.
fn apply(
    inner: &mut Inner,
    call: &Call<'_>,
    status: bool,
    opts: &WriteOpts,
) -> Result<(u16, Value), ApiError> {
    let (def, ns) = (call.def, call.ns);
    let name = call.name.unwrap_or_default();
    let body = parse_body(call.body, true)?;
    // An apply that creates the object is also authorized as create.
    if !status && inner.get(def, ns, name).is_none() {
        let create = RequestInfo {
            resource_request: true,
            verb: "create".into(),
            group: def.group.clone(),
            version: call.version.to_owned(),
            namespace: ns.unwrap_or_default().to_owned(),
            resource: def.plural.clone(),
            name: name.to_owned(),
            ..Default::default()
        };
        if !rbac::allowed(inner, call.user, &create) {
            return Err(rbac::forbidden_create(&create));
        }
    }
    // apply needs an explicit manager (no User-Agent fallback)
    let opts = WriteOpts {
        manager: call.params.get("fieldManager").cloned().unwrap_or_default(),
        ..opts.clone()
    };
    inner
        .apply(call.target(name, status), body, &opts)
        .map(|(v, created)| (if created { 201 } else { 200 }, v))
}

/// The options of a delete, from the query and a `DeleteOptions` body.
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

/// DELETE of an object.
pub(super) fn delete(call: &Call<'_>) -> Response {
    let opts = delete_opts(call.params, call.body);
    let mut inner = lock(&call.sh.inner);
    let result = inner
        .delete(call.def, call.ns, call.name.unwrap_or_default(), &opts)
        .map(|v| (200, v));
    drop(inner);
    respond(call, result)
}

/// DELETE of a collection: every matching object; the list of what was deleted (or, for
/// objects held by finalizers, marked).
pub(super) fn delete_collection(call: &Call<'_>) -> Response {
    let def = call.def;
    let opts = delete_opts(call.params, call.body);
    let mut inner = lock(&call.sh.inner);
    let (lsel, fsel) = match selectors(call.params) {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    let names: Vec<(Option<String>, String)> = inner
        .list(def, call.ns)
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
        let before = inner.get(def, n.as_deref(), &name).cloned();
        match inner.delete(def, n.as_deref(), &name, &opts) {
            Ok(v) if v.get("kind").and_then(Value::as_str) == Some("Status") => {
                items.extend(before);
            }
            Ok(v) => items.push(v),
            Err(_) => {}
        }
    }
    json_response(
        200,
        &json!({"kind": format!("{}List", def.kind), "apiVersion": def.api_version(call.version), "metadata": {"resourceVersion": inner.rv.to_string()}, "items": items}),
    )
}

/// POST of `serviceaccounts/NAME/token`.
pub(super) fn token_request(call: &Call<'_>) -> Response {
    let body = match parse_body(call.body, false) {
        Ok(b) => b,
        Err(e) => return error_response(&e),
    };
    let mut inner = lock(&call.sh.inner);
    let ns = call.ns.unwrap_or_default();
    match inner.token_request(ns, call.name.unwrap_or_default(), &body) {
        Ok(v) => json_response(201, &v),
        Err(e) => error_response(&e),
    }
}
