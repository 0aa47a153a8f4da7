//! HTTP plumbing shared by the handlers: responses, query parameters, request bodies,
//! the representation a client asks for, and selectors.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde_json::Value;

use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::ApiError;

pub(super) type Params = BTreeMap<String, String>;

pub(super) fn json_response(code: u16, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap_or_default()
}

pub(super) fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.to_status())
}

pub(super) fn text_response(code: u16, s: &str) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::OK))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(s.to_owned()))
        .unwrap_or_default()
}

/// `404` for a path the server does not serve (no details, like a real server).
pub(super) fn not_found_path() -> Response {
    let mut e = ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    );
    e.details.causes.clear();
    error_response(&e)
}

/// `{}`, the answer of the `/_testkit/` endpoints.
pub(super) fn empty_ok() -> Response {
    json_response(200, &serde_json::json!({}))
}

pub(super) fn parse_query(q: Option<&str>) -> Params {
    q.map(|q| {
        form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect::<BTreeMap<_, _>>()
    })
    .unwrap_or_default()
}

pub(super) fn truthy(p: &Params, k: &str) -> bool {
    matches!(p.get(k).map(String::as_str), Some("true" | "1"))
}

pub(super) fn parse_body(bytes: &[u8], yaml_ok: bool) -> Result<Value, ApiError> {
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

/// The `Content-Type` of a request, `""` when absent.
pub(super) fn content_type(h: &HeaderMap) -> &str {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// The representation the client accepts first.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Format {
    Full,
    Metadata,
    Table,
}

pub(super) fn format_of(h: &HeaderMap) -> Format {
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

/// `labelSelector` and `fieldSelector` of a list, watch or deletecollection.
pub(super) fn selectors(params: &Params) -> Result<(LabelSelector, FieldSelector), ApiError> {
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
