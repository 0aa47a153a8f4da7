//! Reads: get of one object (or its `status`), and lists with selectors, `limit` and
//! `continue` pages, as full objects, metadata or a table.

use axum::response::Response;
use base64::Engine;
use serde_json::{Value, json};

use super::render::{render, table};
use super::response::{Format, Params, error_response, json_response, selectors};
use super::{Call, lock};
use crate::resources::{ResourceDef, Special};
use crate::status::ApiError;
use crate::store::{Inner, partial_metadata};
use crate::util::meta_str;

/// GET of one object.
pub(super) fn get(call: &Call<'_>) -> Response {
    let def = call.def;
    let name = call.name.unwrap_or_default();
    let inner = lock(&call.sh.inner);
    match inner.get(def, call.ns, name) {
        Some(o) => json_response(200, &render(def, call.version, o, call.fmt)),
        None => error_response(&ApiError::not_found(&def.group, &def.plural, name)),
    }
}

/// GET of a collection.
pub(super) fn list(call: &Call<'_>) -> Response {
    let inner = lock(&call.sh.inner);
    match list_value(
        &inner,
        call.def,
        call.version,
        call.ns,
        call.params,
        call.fmt,
    ) {
        Ok(v) => json_response(200, &v),
        Err(e) => error_response(&e),
    }
}

/// `namespace/name`, the order of lists and the position a continue token holds.
fn list_key(o: &Value) -> String {
    format!(
        "{}/{}",
        meta_str(o, "namespace").unwrap_or_default(),
        meta_str(o, "name").unwrap_or_default()
    )
}

/// The resource version a list is read at and the key it continues after.
fn continue_from(inner: &Inner, params: &Params) -> Result<(u64, Option<String>), ApiError> {
    let Some(c) = params.get("continue").filter(|c| !c.is_empty()) else {
        return Ok((inner.rv, None));
    };
    let tok: Value = base64::engine::general_purpose::URL_SAFE_NO_PAD
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
    Ok((
        rv,
        tok.get("start").and_then(Value::as_str).map(str::to_owned),
    ))
}

fn list_value(
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
    let (list_rv, start_after) = continue_from(inner, params)?;
    let limit = params
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let matching: Vec<&Value> = inner
        .list(def, ns)
        .into_iter()
        .filter(|o| lsel.matches(o) && fsel.matches(o))
        .filter(|o| {
            start_after
                .as_deref()
                .is_none_or(|s| list_key(o).as_str() > s)
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
        let token = json!({"rv": list_rv, "start": list_key(last)}).to_string();
        meta["continue"] = json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token));
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
