//! Requests for paths that are not resources: version, health, discovery and OpenAPI.

use super::Shared;
use super::lock;
use super::response::{json_response, not_found_path, text_response};
use crate::discovery;

/// Serves a non-resource path, whatever the method; `404` for paths the fake does not
/// know.
pub(super) fn serve(sh: &Shared, path: &str) -> axum::response::Response {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let found = |v: Option<serde_json::Value>| {
        v.map(|v| json_response(200, &v))
            .unwrap_or_else(not_found_path)
    };
    match segs.as_slice() {
        ["version"] => json_response(200, &discovery::version()),
        ["healthz" | "readyz" | "livez", ..] => text_response(200, "ok"),
        ["api"] => json_response(200, &discovery::core_versions(&sh.addr)),
        ["apis"] => json_response(200, &discovery::group_list(&lock(&sh.inner).registry)),
        ["api", "v1"] => found(discovery::resource_list(
            &lock(&sh.inner).registry,
            "",
            "v1",
        )),
        ["apis", g] => found(discovery::group(&lock(&sh.inner).registry, g)),
        ["apis", g, v] => found(discovery::resource_list(&lock(&sh.inner).registry, g, v)),
        ["openapi", "v3"] => {
            json_response(200, &discovery::openapi_v3_root(&lock(&sh.inner).registry))
        }
        ["openapi", "v3", "api", v] => {
            found(discovery::openapi_v3_gv(&lock(&sh.inner).registry, "", v))
        }
        ["openapi", "v3", "apis", g, v] => {
            found(discovery::openapi_v3_gv(&lock(&sh.inner).registry, g, v))
        }
        _ => not_found_path(),
    }
}
