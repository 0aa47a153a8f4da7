//! Authentication and RBAC authorization, as a real API server does them: bearer tokens
//! identify a user (the admin token, or a service-account token issued through
//! TokenRequest), and every request is checked against the Roles, ClusterRoles and their
//! bindings stored in the fake. Refusals are `403 Forbidden` with the real server's message.
//!
//! The admin token of [`crate::kubeconfig_for`] is in `system:masters`, which — as on a real
//! cluster — is allowed everything without consulting RBAC. A request without credentials
//! is the admin too, as on the API server's old insecure port: the fake speaks plain HTTP,
//! over which `kubectl` never sends a token. Any token that is sent is checked.

use serde_json::{Value, json};

use crate::request_info::RequestInfo;
use crate::status::ApiError;
use crate::store::Inner;
use crate::util::{meta_str, string_list};

/// The bearer token of the admin kubeconfig.
pub const ADMIN_TOKEN: &str = "secretsync-fake-token";
/// The admin user's name.
pub(crate) const ADMIN_USER: &str = "kubernetes-admin";
const MASTERS: &str = "system:masters";
const AUTHENTICATED: &str = "system:authenticated";
const UNAUTHENTICATED: &str = "system:unauthenticated";

/// Who sent a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct User {
    pub name: String,
    pub groups: Vec<String>,
}

impl User {
    pub fn admin() -> Self {
        User {
            name: ADMIN_USER.into(),
            groups: vec![MASTERS.into(), AUTHENTICATED.into()],
        }
    }

    /// A service account's user.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        User {
            name: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                AUTHENTICATED.into(),
            ],
        }
    }

    fn is_privileged(&self) -> bool {
        self.groups.iter().any(|g| g == MASTERS)
    }
}

/// The user behind an `Authorization` header value; `Err(401)` for a token the server
/// does not know (or one that expired, or whose service account was deleted). No header
/// is the admin (see the module docs).
pub(crate) fn authenticate(inner: &Inner, authorization: Option<&str>) -> Result<User, ApiError> {
    let Some(header) = authorization else {
        return Ok(User::admin());
    };
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .unwrap_or_default();
    if token == ADMIN_TOKEN {
        return Ok(User::admin());
    }
    match inner.valid_token(token) {
        Some(t) => Ok(User::service_account(&t.namespace, &t.name)),
        None => Err(ApiError::new(401, "Unauthorized", "Unauthorized")),
    }
}

/// Whether `user` may do what `req` asks (RBAC only: bindings in the request's namespace
/// and cluster-wide bindings).
pub(crate) fn allowed(inner: &Inner, user: &User, req: &RequestInfo) -> bool {
    if user.is_privileged() {
        return true;
    }
    let grants = |role_ref: &Value, binding_ns: Option<&str>| -> bool {
        rules_of(inner, role_ref, binding_ns)
            .iter()
            .any(|rule| rule_allows(rule, req))
    };
    let cluster = objects(inner, "clusterrolebindings", None);
    if cluster
        .iter()
        .any(|b| binds(b, user, None) && grants(&b["roleRef"], None))
    {
        return true;
    }
    if req.namespace.is_empty() {
        return false;
    }
    objects(inner, "rolebindings", Some(&req.namespace))
        .iter()
        .any(|b| {
            binds(b, user, Some(&req.namespace)) && grants(&b["roleRef"], Some(&req.namespace))
        })
}

fn objects<'a>(inner: &'a Inner, plural: &str, ns: Option<&str>) -> Vec<&'a Value> {
    inner
        .find("rbac.authorization.k8s.io", "v1", plural)
        .map(|def| inner.list(&def, ns))
        .unwrap_or_default()
}

/// Whether a binding's subjects include `user`.
fn binds(binding: &Value, user: &User, binding_ns: Option<&str>) -> bool {
    let Some(subjects) = binding.get("subjects").and_then(Value::as_array) else {
        return false;
    };
    subjects.iter().any(|s| {
        let name = s.get("name").and_then(Value::as_str).unwrap_or_default();
        match s.get("kind").and_then(Value::as_str) {
            Some("User") => name == user.name,
            Some("Group") => user.groups.iter().any(|g| g == name),
            Some("ServiceAccount") => {
                let ns = s
                    .get("namespace")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                    .or(binding_ns)
                    .unwrap_or_default();
                user.name == format!("system:serviceaccount:{ns}:{name}")
            }
            _ => false,
        }
    })
}

/// The rules of the role a binding refers to (a missing role grants nothing).
fn rules_of(inner: &Inner, role_ref: &Value, binding_ns: Option<&str>) -> Vec<Value> {
    let name = role_ref
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let role = match (role_ref.get("kind").and_then(Value::as_str), binding_ns) {
        (Some("ClusterRole"), _) => objects(inner, "clusterroles", None)
            .into_iter()
            .find(|r| meta_str(r, "name") == Some(name)),
        (Some("Role"), Some(ns)) => objects(inner, "roles", Some(ns))
            .into_iter()
            .find(|r| meta_str(r, "name") == Some(name)),
        _ => None,
    };
    role.and_then(|r| r.get("rules"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn has(list: &[String], want: &str) -> bool {
    list.iter().any(|v| v == "*" || v == want)
}

/// One policy rule against one request.
pub(crate) fn rule_allows(rule: &Value, req: &RequestInfo) -> bool {
    if !has(&string_list(rule, "verbs"), &req.verb) {
        return false;
    }
    if !req.resource_request {
        return string_list(rule, "nonResourceURLs").iter().any(|u| {
            u == "*"
                || u == &req.path
                || u.strip_suffix('*')
                    .is_some_and(|prefix| req.path.starts_with(prefix))
        });
    }
    if !has(&string_list(rule, "apiGroups"), &req.group) {
        return false;
    }
    let combined = req.combined_resource();
    let resource_ok = string_list(rule, "resources").iter().any(|r| {
        r == "*"
            || *r == combined
            || (!req.subresource.is_empty() && *r == format!("*/{}", req.subresource))
    });
    if !resource_ok {
        return false;
    }
    let names = string_list(rule, "resourceNames");
    names.is_empty() || (!req.name.is_empty() && names.contains(&req.name))
}

fn group_resource(req: &RequestInfo) -> String {
    if req.group.is_empty() {
        req.resource.clone()
    } else {
        format!("{}.{}", req.resource, req.group)
    }
}

fn forbidden_status(req: &RequestInfo, message: String) -> ApiError {
    let mut e = ApiError::new(403, "Forbidden", message);
    e.details.group = (!req.group.is_empty()).then(|| req.group.clone());
    e.details.kind = (!req.resource.is_empty()).then(|| req.resource.clone());
    e.details.name = (!req.name.is_empty()).then(|| req.name.clone());
    e
}

/// The `403` a real API server answers when its authorization filter refuses a request.
pub(crate) fn forbidden(user: &User, req: &RequestInfo) -> ApiError {
    if !req.resource_request {
        return forbidden_status(
            req,
            format!(
                "forbidden: User \"{}\" cannot {} path \"{}\"",
                user.name, req.verb, req.path
            ),
        );
    }
    let scope = if req.namespace.is_empty() {
        "at the cluster scope".to_owned()
    } else {
        format!("in the namespace \"{}\"", req.namespace)
    };
    let why = format!(
        "User \"{}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
        user.name,
        req.verb,
        req.combined_resource(),
        req.group
    );
    let subject = if req.name.is_empty() {
        group_resource(req)
    } else {
        format!("{} \"{}\"", group_resource(req), req.name)
    };
    forbidden_status(req, format!("{subject} is forbidden: {why}"))
}

/// The `403` of a patch (server-side apply) that would create an object the user may
/// patch but not create: the real server checks `create` inside the handler, and its
/// message carries only the (empty) RBAC reason.
pub(crate) fn forbidden_create(req: &RequestInfo) -> ApiError {
    forbidden_status(
        req,
        format!("{} \"{}\" is forbidden: ", group_resource(req), req.name),
    )
}

/// The default RBAC objects of a new cluster that matter here: `cluster-admin`, discovery
/// for authenticated users, health and version for everyone, and `system:auth-delegator`
/// (TokenReview, for Vault's Kubernetes auth), which nothing is bound to by default.
pub(crate) fn bootstrap_policy() -> Vec<Value> {
    let role = |name: &str, rules: Value| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
               "rules": rules})
    };
    let binding = |name: &str, groups: &[&str]| {
        let subjects: Vec<Value> = groups
            .iter()
            .map(|g| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g}))
            .collect();
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
               "subjects": subjects})
    };
    let public = ["/healthz", "/livez", "/readyz", "/version", "/version/"];
    let mut discovery: Vec<&str> = vec![
        "/api",
        "/api/*",
        "/apis",
        "/apis/*",
        "/openapi",
        "/openapi/*",
    ];
    discovery.extend(public);
    vec![
        role(
            "cluster-admin",
            json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                   {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
        ),
        binding("cluster-admin", &[MASTERS]),
        role(
            "system:discovery",
            json!([{"nonResourceURLs": discovery, "verbs": ["get"]}]),
        ),
        binding("system:discovery", &[AUTHENTICATED]),
        role(
            "system:public-info-viewer",
            json!([{"nonResourceURLs": public, "verbs": ["get"]}]),
        ),
        binding(
            "system:public-info-viewer",
            &[AUTHENTICATED, UNAUTHENTICATED],
        ),
        role(
            "system:auth-delegator",
            json!([{"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
                   {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]}]),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn req(method: &str, path: &str) -> RequestInfo {
        crate::request_info::parse(method, path, &BTreeMap::new())
    }

    #[test]
    fn rules_match_verbs_groups_resources_and_names() {
        let rule = json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "patch"]});
        assert!(rule_allows(
            &rule,
            &req("GET", "/api/v1/namespaces/a/secrets/x")
        ));
        assert!(rule_allows(
            &rule,
            &req("PATCH", "/api/v1/namespaces/a/secrets/x")
        ));
        assert!(!rule_allows(
            &rule,
            &req("POST", "/api/v1/namespaces/a/secrets")
        ));
        assert!(
            !rule_allows(&rule, &req("GET", "/api/v1/namespaces/a/secrets")),
            "list"
        );
        assert!(
            !rule_allows(&rule, &req("GET", "/apis/apps/v1/namespaces/a/secrets/x")),
            "group"
        );
        assert!(
            !rule_allows(
                &rule,
                &req("PATCH", "/api/v1/namespaces/a/secrets/x/status")
            ),
            "a subresource needs its own rule"
        );

        let named = json!({"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["key"], "verbs": ["get", "list", "create"]});
        assert!(rule_allows(
            &named,
            &req("GET", "/api/v1/namespaces/a/secrets/key")
        ));
        assert!(!rule_allows(
            &named,
            &req("GET", "/api/v1/namespaces/a/secrets/other")
        ));
        assert!(
            !rule_allows(&named, &req("GET", "/api/v1/namespaces/a/secrets")),
            "lists have no name"
        );
        assert!(
            !rule_allows(&named, &req("POST", "/api/v1/namespaces/a/secrets")),
            "nor do creates"
        );

        let sub = json!({"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["*"]});
        assert!(rule_allows(
            &sub,
            &req("PATCH", "/apis/x.dev/v1/namespaces/a/things/t/status")
        ));
        assert!(!rule_allows(
            &sub,
            &req("PATCH", "/apis/x.dev/v1/namespaces/a/things/t")
        ));
    }

    #[test]
    fn non_resource_rules_match_paths_and_prefixes() {
        let rule = json!({"nonResourceURLs": ["/version", "/apis/*"], "verbs": ["get"]});
        assert!(rule_allows(&rule, &req("GET", "/version")));
        assert!(rule_allows(&rule, &req("GET", "/apis/apps")));
        assert!(!rule_allows(&rule, &req("GET", "/openapi/v3")));
        let resource_rule = json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]});
        assert!(!rule_allows(&resource_rule, &req("GET", "/version")));
    }

    #[test]
    fn subjects_match_users_groups_and_service_accounts() {
        let sa = User::service_account("ops", "op");
        let b = |subjects: Value| json!({"subjects": subjects});
        assert!(binds(
            &b(json!([{"kind": "ServiceAccount", "name": "op", "namespace": "ops"}])),
            &sa,
            None
        ));
        assert!(!binds(
            &b(json!([{"kind": "ServiceAccount", "name": "op", "namespace": "dev"}])),
            &sa,
            None
        ));
        assert!(binds(
            &b(json!([{"kind": "ServiceAccount", "name": "op"}])),
            &sa,
            Some("ops")
        ));
        assert!(binds(
            &b(json!([{"kind": "Group", "name": "system:serviceaccounts:ops"}])),
            &sa,
            None
        ));
        assert!(binds(
            &b(json!([{"kind": "User", "name": "system:serviceaccount:ops:op"}])),
            &sa,
            None
        ));
        assert!(!binds(
            &b(json!([{"kind": "User", "name": "op"}])),
            &sa,
            None
        ));
    }

    #[test]
    fn forbidden_messages_have_the_real_shape() {
        let sa = User::service_account("ops", "op");
        let e = forbidden(&sa, &req("GET", "/api/v1/namespaces/shop/secrets/db"));
        assert_eq!(
            e.message,
            "secrets \"db\" is forbidden: User \"system:serviceaccount:ops:op\" cannot get resource \"secrets\" in API group \"\" in the namespace \"shop\""
        );
        assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
        let e = forbidden(&sa, &req("GET", "/apis/apps/v1/deployments"));
        assert_eq!(
            e.message,
            "deployments.apps is forbidden: User \"system:serviceaccount:ops:op\" cannot list resource \"deployments\" in API group \"apps\" at the cluster scope"
        );
        let e = forbidden(
            &sa,
            &req(
                "PATCH",
                "/apis/secretsync.dev/v1alpha1/namespaces/a/secretbindings/b/status",
            ),
        );
        assert!(
            e.message
                .contains("cannot patch resource \"secretbindings/status\""),
            "{}",
            e.message
        );
        let e = forbidden(&sa, &req("GET", "/version"));
        assert_eq!(
            e.message,
            "forbidden: User \"system:serviceaccount:ops:op\" cannot get path \"/version\""
        );
        let e = forbidden_create(&req("PATCH", "/api/v1/namespaces/a/secrets/db"));
        assert_eq!(e.message, "secrets \"db\" is forbidden: ");
        assert_eq!(e.details.name.as_deref(), Some("db"));
    }
}
