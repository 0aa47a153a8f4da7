//! What a request asks for, parsed from its method, path and query alone, the way the real
//! API server does before it authorizes: verb, group, version, namespace, resource,
//! subresource and name. Nothing here looks at the registry, so an unknown resource is
//! authorized (and refused) like a known one.

use std::collections::BTreeMap;

/// Subresources of a namespace object (`/api/v1/namespaces/NAME/status`).
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

/// The authorization attributes of one request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct RequestInfo {
    /// A resource request (`/api/...`, `/apis/G/V/...`), not a path like `/version`.
    pub resource_request: bool,
    /// The request path.
    pub path: String,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`;
    /// for non-resource requests the lower-cased HTTP method.
    pub verb: String,
    /// API group, empty for core.
    pub group: String,
    /// API version.
    pub version: String,
    /// Namespace, empty for cluster-scoped requests.
    pub namespace: String,
    /// Plural resource.
    pub resource: String,
    /// Subresource (`status`, `token`), empty for the main resource.
    pub subresource: String,
    /// Object name, empty for collections.
    pub name: String,
    /// The path from the resource on: `[resource, name, subresource, ...]`, for a namespace
    /// itself `[namespaces, NAME, ...]`. Authorization does not need it; serving does (the
    /// name of a list authorized by its field selector is not in the path, and a path
    /// with more than three parts is no resource).
    pub parts: Vec<String>,
    /// The resource is below a `/namespaces/NS/` prefix, rather than being a namespace
    /// itself (`/namespaces/NS[/SUB]`, whose namespace is its own name).
    pub in_namespace: bool,
}

impl RequestInfo {
    /// `resource` or `resource/subresource`.
    pub fn combined_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

/// Parses a request. `params` is the decoded query string.
pub(crate) fn parse(method: &str, path: &str, params: &BTreeMap<String, String>) -> RequestInfo {
    let non_resource = || RequestInfo {
        resource_request: false,
        path: path.to_owned(),
        verb: method.to_ascii_lowercase(),
        ..Default::default()
    };
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, mut rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return non_resource(),
    };
    // `/api/v1` and `/apis/G/V` alone are discovery documents, not resources.
    if rest.is_empty() {
        return non_resource();
    }
    let mut info = RequestInfo {
        resource_request: true,
        path: path.to_owned(),
        group: group.to_owned(),
        version: version.to_owned(),
        ..Default::default()
    };
    if rest[0] == "namespaces" && rest.len() > 1 {
        info.namespace = rest[1].to_owned();
        // `/namespaces/NS/RESOURCE...`: the resource is what follows; a namespace's own
        // subresources keep `namespaces` as the resource.
        if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
            rest = &rest[2..];
            info.in_namespace = true;
        }
    }
    info.parts = rest.iter().map(|p| (*p).to_owned()).collect();
    info.resource = rest[0].to_owned();
    if let Some(name) = rest.get(1) {
        info.name = (*name).to_owned();
    }
    if let Some(sub) = rest.get(2) {
        info.subresource = (*sub).to_owned();
    }
    let watch = matches!(params.get("watch").map(String::as_str), Some("true" | "1"));
    info.verb = match (method, info.name.is_empty()) {
        ("GET" | "HEAD", true) if watch => "watch",
        ("GET" | "HEAD", true) => "list",
        ("GET" | "HEAD", false) if watch => "watch",
        ("GET" | "HEAD", false) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "deletecollection",
        ("DELETE", false) => "delete",
        _ => "",
    }
    .to_owned();
    // A list or watch of one object by field selector is authorized as that object.
    if info.name.is_empty()
        && (info.verb == "list" || info.verb == "watch")
        && let Some(sel) = params.get("fieldSelector")
        && let Some(name) = single_name(sel)
    {
        info.name = name.to_owned();
    }
    info
}

/// `metadata.name=X` (or `==`) as the whole selector.
fn single_name(selector: &str) -> Option<&str> {
    let sel = selector.trim();
    if sel.contains(',') {
        return None;
    }
    let value = sel
        .strip_prefix("metadata.name==")
        .or_else(|| sel.strip_prefix("metadata.name="))?;
    (!value.is_empty()).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(method: &str, path: &str, query: &[(&str, &str)]) -> RequestInfo {
        let params = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(method, path, &params)
    }

    #[test]
    fn resource_requests() {
        let i = p("GET", "/api/v1/namespaces/shop/secrets/db", &[]);
        assert!(i.resource_request);
        assert_eq!(
            (i.verb.as_str(), i.group.as_str(), i.namespace.as_str()),
            ("get", "", "shop")
        );
        assert_eq!((i.resource.as_str(), i.name.as_str()), ("secrets", "db"));

        let i = p(
            "PATCH",
            "/apis/secretsync.dev/v1alpha1/namespaces/shop/secretbindings/b/status",
            &[],
        );
        assert_eq!(i.verb, "patch");
        assert_eq!(i.combined_resource(), "secretbindings/status");
        assert_eq!(i.group, "secretsync.dev");

        let i = p("GET", "/apis/apps/v1/deployments", &[("watch", "true")]);
        assert_eq!((i.verb.as_str(), i.namespace.as_str()), ("watch", ""));
        assert_eq!(p("GET", "/apis/apps/v1/deployments", &[]).verb, "list");
        assert_eq!(
            p("DELETE", "/api/v1/namespaces/x/secrets", &[]).verb,
            "deletecollection"
        );
        assert_eq!(
            p("POST", "/api/v1/namespaces/x/serviceaccounts/sa/token", &[]).combined_resource(),
            "serviceaccounts/token"
        );
    }

    #[test]
    fn parts_start_at_the_resource() {
        let parts = |path: &str| p("GET", path, &[]).parts;
        assert_eq!(
            parts("/api/v1/namespaces/shop/secrets/db/status/x"),
            ["secrets", "db", "status", "x"]
        );
        assert_eq!(parts("/apis/apps/v1/deployments"), ["deployments"]);
        assert_eq!(
            parts("/api/v1/namespaces/shop/status"),
            ["namespaces", "shop", "status"]
        );
        assert!(p("GET", "/api/v1/namespaces/shop/secrets", &[]).in_namespace);
        assert!(!p("GET", "/api/v1/namespaces/shop", &[]).in_namespace);
        assert!(p("GET", "/api/v1/namespaces/shop/namespaces/shop", &[]).in_namespace);
        let i = p(
            "GET",
            "/api/v1/namespaces/ops/secrets",
            &[("fieldSelector", "metadata.name=db")],
        );
        assert_eq!((i.name.as_str(), i.parts.len()), ("db", 1));
    }

    #[test]
    fn namespaces_are_their_own_namespace() {
        let i = p("GET", "/api/v1/namespaces/shop", &[]);
        assert_eq!(
            (i.resource.as_str(), i.name.as_str(), i.namespace.as_str()),
            ("namespaces", "shop", "shop")
        );
        let i = p("PUT", "/api/v1/namespaces/shop/finalize", &[]);
        assert_eq!(i.combined_resource(), "namespaces/finalize");
        let i = p("GET", "/api/v1/namespaces", &[]);
        assert_eq!((i.verb.as_str(), i.namespace.as_str()), ("list", ""));
    }

    #[test]
    fn field_selector_on_name_names_the_object() {
        let i = p(
            "GET",
            "/apis/coordination.k8s.io/v1/namespaces/ops/leases",
            &[("watch", "1"), ("fieldSelector", "metadata.name=leader")],
        );
        assert_eq!((i.verb.as_str(), i.name.as_str()), ("watch", "leader"));
        let i = p(
            "GET",
            "/api/v1/secrets",
            &[("fieldSelector", "metadata.name=a,type=Opaque")],
        );
        assert_eq!(i.name, "");
    }

    #[test]
    fn discovery_and_health_are_not_resources() {
        for path in [
            "/api",
            "/api/v1",
            "/apis",
            "/apis/apps/v1",
            "/version",
            "/openapi/v3",
        ] {
            let i = p("GET", path, &[]);
            assert!(!i.resource_request, "{path}");
            assert_eq!(i.verb, "get");
        }
    }
}
