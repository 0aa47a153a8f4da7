//! ValidatingAdmissionPolicies (`admissionregistration.k8s.io/v1`), as a real API server
//! runs them on every create and update once the object is mutated and passed schema
//! validation: each binding of an existing policy whose match rules, selectors and
//! `matchConditions` select the request evaluates the policy's `validations` over
//! `object`, `oldObject`, `request`, `namespaceObject` and `variables`. A failed
//! validation of a binding with the `Deny` action refuses the request with the real
//! server's status and message. Also the checks and defaults of the policy objects
//! themselves.
//!
//! Expressions go through the small CEL subset of [`crate::cel`]: one it cannot evaluate is
//! skipped (never a false refusal), so a policy beyond the subset does not protect
//! anything here. Not modelled: `paramKind` (see [`admit`]), `authorizer`,
//! `auditAnnotations`, `matchPolicy: Equivalent` across API groups, and DELETE and CONNECT
//! requests (the fake admits only writes that store an object).

use serde_json::{Map, Value, json};

use crate::cel::{self, Activation, CelError};
use crate::rbac::User;
use crate::selectors::LabelSelector;
use crate::status::{ApiError, Cause};
use crate::util::{labels, meta_str, string_list};

/// The API group of policies and bindings.
pub(crate) const GROUP: &str = "admissionregistration.k8s.io";
/// Plural of ValidatingAdmissionPolicy.
pub(crate) const POLICIES: &str = "validatingadmissionpolicies";
/// Plural of ValidatingAdmissionPolicyBinding.
pub(crate) const BINDINGS: &str = "validatingadmissionpolicybindings";

/// Resources no admission policy applies to, so a bad policy can always be fixed.
const EXEMPT: &[&str] = &[
    POLICIES,
    BINDINGS,
    "mutatingadmissionpolicies",
    "mutatingadmissionpolicybindings",
    "validatingwebhookconfigurations",
    "mutatingwebhookconfigurations",
];

/// Longest `messageExpression` result a real server uses (5 KiB).
const MAX_MESSAGE_BYTES: usize = 5 * 1024;

/// The operation of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Create,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
        }
    }
}

/// What policies match a write on and see of it as `request`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attributes<'a> {
    pub operation: Operation,
    pub group: &'a str,
    pub version: &'a str,
    /// Plural resource name.
    pub resource: &'a str,
    /// `status` for a write of the status subresource, else empty.
    pub subresource: &'a str,
    pub kind: &'a str,
    /// `None` for cluster-scoped resources.
    pub namespace: Option<&'a str>,
    /// The object's name (a generated name is already filled in).
    pub name: &'a str,
    pub user: &'a User,
    pub dry_run: bool,
    /// The stored namespace of a namespaced write, if it exists yet.
    pub namespace_object: Option<&'a Value>,
}

/// A write the policies let through.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Admitted {
    /// Failed validations of bindings with the `Warn` action. A real server sends them as
    /// `Warning` headers; the fake computes them but does not send them.
    pub warnings: Vec<String>,
}

/// A validation that did not pass (or could not be evaluated under `failurePolicy: Fail`).
#[derive(Debug, Clone, PartialEq)]
struct Failure {
    reason: String,
    message: String,
}

/// Runs every binding of `bindings` whose policy is in `policies` on a write of `object`
/// (`old` = the stored object of an update). `Err` is the refusal a real server answers.
pub(crate) fn admit(
    policies: &[&Value],
    bindings: &[&Value],
    attrs: &Attributes<'_>,
    object: &Value,
    old: Option<&Value>,
) -> Result<Admitted, ApiError> {
    let mut admitted = Admitted::default();
    if attrs.group == GROUP && EXEMPT.contains(&attrs.resource) {
        return Ok(admitted);
    }
    let mut denied: Option<(String, String, Failure)> = None;
    // Policies, then their bindings, in name order (the store keeps objects sorted): the
    // first denial is the one reported, as on a real server.
    for policy in policies {
        let spec = &policy["spec"];
        // `paramKind` policies read a parameter object named by each binding's `paramRef`
        // (or a selection of them); the fake resolves no parameters, and evaluating such a
        // policy without `params` would refuse requests a real server admits.
        if spec.get("paramKind").is_some_and(|p| !p.is_null()) {
            continue;
        }
        let policy_name = meta_str(policy, "name").unwrap_or_default();
        if !matches_resources(&spec["matchConstraints"], true, attrs, object, old) {
            continue;
        }
        let of_policy = bindings
            .iter()
            .filter(|b| b["spec"]["policyName"].as_str() == Some(policy_name));
        let mut failures: Option<Vec<Failure>> = None;
        for binding in of_policy {
            let spec = &binding["spec"];
            if let Some(mr) = spec.get("matchResources").filter(|m| !m.is_null())
                && !matches_resources(mr, false, attrs, object, old)
            {
                continue;
            }
            // the policy's verdict does not depend on the binding (no params): once
            let failures = failures.get_or_insert_with(|| evaluate(policy, attrs, object, old));
            let binding_name = meta_str(binding, "name").unwrap_or_default();
            let mut actions = string_list(spec, "validationActions");
            actions.sort();
            actions.dedup();
            for f in failures.iter() {
                for action in &actions {
                    match action.as_str() {
                        "Deny" if denied.is_none() => {
                            denied = Some((policy_name.into(), binding_name.into(), f.clone()));
                        }
                        "Warn" => admitted.warnings.push(format!(
                            "Validation failed for ValidatingAdmissionPolicy '{policy_name}' with binding '{binding_name}': {}",
                            f.message
                        )),
                        // `Audit` only annotates the audit event
                        _ => {}
                    }
                }
            }
        }
    }
    match denied {
        None => Ok(admitted),
        Some((policy, binding, f)) => Err(refusal(attrs, &policy, &binding, f)),
    }
}

/// The refusal of a real server: the `Forbidden` wording of admission errors, with the
/// code and reason the validation asked for.
fn refusal(attrs: &Attributes<'_>, policy: &str, binding: &str, f: Failure) -> ApiError {
    let why = format!(
        "ValidatingAdmissionPolicy '{policy}' with binding '{binding}' denied request: {}",
        f.message
    );
    let resource = if attrs.group.is_empty() {
        attrs.resource.to_owned()
    } else {
        format!("{}.{}", attrs.resource, attrs.group)
    };
    let message = if attrs.name.is_empty() {
        format!("{resource} is forbidden: {why}")
    } else {
        format!("{resource} \"{}\" is forbidden: {why}", attrs.name)
    };
    let mut e = ApiError::new(status_code(&f.reason), &f.reason, message);
    e.details.group = (!attrs.group.is_empty()).then(|| attrs.group.to_owned());
    e.details.kind = Some(attrs.resource.to_owned());
    e.details.name = (!attrs.name.is_empty()).then(|| attrs.name.to_owned());
    e.details.causes = vec![Cause {
        reason: String::new(),
        message: why,
        field: String::new(),
    }];
    e
}

/// The HTTP status of a validation's `reason`.
fn status_code(reason: &str) -> u16 {
    match reason {
        "Forbidden" => 403,
        "Unauthorized" => 401,
        "RequestEntityTooLarge" => 413,
        // `Invalid`, and the default of a validation without a reason
        _ => 422,
    }
}

/// The failed validations of `policy` for a request its match rules select.
fn evaluate(
    policy: &Value,
    attrs: &Attributes<'_>,
    object: &Value,
    old: Option<&Value>,
) -> Vec<Failure> {
    let spec = &policy["spec"];
    let fail = spec["failurePolicy"].as_str() != Some("Ignore");
    let mut activation = Activation::default()
        .bind("object", object.clone())
        .bind("oldObject", old.cloned().unwrap_or(Value::Null))
        .bind("request", request(attrs))
        .bind(
            "namespaceObject",
            attrs
                .namespace
                .map_or(Value::Null, |ns| namespace_view(ns, attrs.namespace_object)),
        );
    match match_conditions(spec, &activation) {
        Conditions::Match => {}
        Conditions::NoMatch => return Vec::new(),
        Conditions::Error(message) if fail => {
            return vec![Failure {
                reason: "Invalid".into(),
                message,
            }];
        }
        Conditions::Error(_) => return Vec::new(),
    }
    for v in spec["variables"].as_array().into_iter().flatten() {
        if let (Some(name), Some(expr)) = (v["name"].as_str(), v["expression"].as_str()) {
            activation.define(name, expr);
        }
    }
    let mut failures = Vec::new();
    for v in spec["validations"].as_array().into_iter().flatten() {
        let Some(expr) = v["expression"].as_str() else {
            continue;
        };
        let error = match cel::evaluate(expr, &activation) {
            Ok(Value::Bool(true)) | Err(CelError::Unsupported) => continue,
            Ok(Value::Bool(false)) => {
                failures.push(Failure {
                    reason: v["reason"].as_str().unwrap_or("Invalid").to_owned(),
                    message: message(v, expr, &activation),
                });
                continue;
            }
            // a real server compiles validations to bool; anything else is its error
            Ok(other) => format!("expression must evaluate to bool, got {other}"),
            Err(CelError::Runtime(e)) => e,
        };
        if fail {
            failures.push(Failure {
                reason: "Invalid".into(),
                message: format!("expression '{expr}' resulted in error: {error}"),
            });
        }
    }
    failures
}

/// What a policy's `matchConditions` say about a request.
enum Conditions {
    Match,
    NoMatch,
    /// One errored and none was false: `failurePolicy` decides.
    Error(String),
}

/// All `matchConditions` must hold; a false one wins over errors in others. One the
/// subset cannot evaluate leaves open whether the policy applies: it does not.
fn match_conditions(spec: &Value, activation: &Activation) -> Conditions {
    let mut error = None;
    for c in spec["matchConditions"].as_array().into_iter().flatten() {
        let name = c["name"].as_str().unwrap_or_default();
        let Some(expr) = c["expression"].as_str() else {
            continue;
        };
        match cel::evaluate(expr, activation) {
            Ok(Value::Bool(true)) => {}
            Ok(Value::Bool(false)) | Err(CelError::Unsupported) => return Conditions::NoMatch,
            Ok(other) => {
                error.get_or_insert(format!(
                    "matchCondition '{name}' must evaluate to bool, got {other}"
                ));
            }
            Err(CelError::Runtime(e)) => {
                error.get_or_insert(format!("matchCondition '{name}' resulted in error: {e}"));
            }
        }
    }
    error.map_or(Conditions::Match, Conditions::Error)
}

/// The message of a failed validation: `messageExpression` when it gives one line of
/// text, else `message`, else the expression.
fn message(v: &Value, expr: &str, activation: &Activation) -> String {
    if let Some(me) = v["messageExpression"].as_str()
        && let Ok(Value::String(s)) = cel::evaluate(me, activation)
    {
        let s = s.trim();
        if !s.is_empty() && !s.contains('\n') && s.len() <= MAX_MESSAGE_BYTES {
            return s.to_owned();
        }
    }
    match v["message"].as_str().map(str::trim) {
        Some(m) if !m.is_empty() => m.to_owned(),
        _ => format!("failed expression: {}", expr.trim()),
    }
}

/// The `request` variable: the AdmissionRequest of the write. `name` and `namespace` are
/// always strings (empty for a cluster-scoped object), so reading them never errors.
fn request(attrs: &Attributes<'_>) -> Value {
    let kind = json!({"group": attrs.group, "version": attrs.version, "kind": attrs.kind});
    let resource =
        json!({"group": attrs.group, "version": attrs.version, "resource": attrs.resource});
    json!({
        "kind": kind,
        "resource": resource,
        "subResource": attrs.subresource,
        "requestKind": kind,
        "requestResource": resource,
        "requestSubResource": attrs.subresource,
        "name": attrs.name,
        "namespace": attrs.namespace.unwrap_or_default(),
        "operation": attrs.operation.as_str(),
        "userInfo": {"username": attrs.user.name, "groups": attrs.user.groups},
        "dryRun": attrs.dry_run,
    })
}

/// The namespace `ns` as selectors and `namespaceObject` see it. A real server labels
/// every namespace with `kubernetes.io/metadata.name`; the fake's namespaces do not carry
/// it, so it is added here.
fn namespace_view(ns: &str, stored: Option<&Value>) -> Value {
    let mut obj = stored.cloned().unwrap_or_else(
        || json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    );
    let mut l: Map<String, Value> = labels(&obj).cloned().unwrap_or_default();
    l.insert("kubernetes.io/metadata.name".into(), json!(ns));
    obj["metadata"]["labels"] = Value::Object(l);
    obj
}

/// Whether a `matchConstraints` (policy) or `matchResources` (binding) selects the
/// request. A policy without `resourceRules` selects nothing; a binding without them
/// leaves the choice to its policy.
fn matches_resources(
    mr: &Value,
    policy: bool,
    attrs: &Attributes<'_>,
    object: &Value,
    old: Option<&Value>,
) -> bool {
    let rules = mr["resourceRules"].as_array();
    let included = match rules {
        Some(rules) => rules.iter().any(|r| rule_matches(r, attrs)),
        None => !policy,
    };
    let excluded = mr["excludeResourceRules"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| rule_matches(r, attrs));
    included
        && !excluded
        && namespace_selected(mr, attrs, object)
        && object_selected(mr, object, old)
}

/// A selector field of `mr`: `Some(None)` for one that cannot be parsed (selects nothing).
fn selector(mr: &Value, field: &str) -> Option<Option<LabelSelector>> {
    mr.get(field)
        .filter(|s| !s.is_null())
        .map(LabelSelector::from_object)
}

/// `namespaceSelector`: against the request's namespace; a Namespace is matched by its own
/// labels, and other cluster-scoped objects are always selected.
fn namespace_selected(mr: &Value, attrs: &Attributes<'_>, object: &Value) -> bool {
    let Some(sel) = selector(mr, "namespaceSelector") else {
        return true;
    };
    let Some(sel) = sel else {
        return false;
    };
    match attrs.namespace {
        Some(ns) => sel.matches(&namespace_view(ns, attrs.namespace_object)),
        None if attrs.group.is_empty() && attrs.resource == "namespaces" => {
            sel.matches(&namespace_view(attrs.name, Some(object)))
        }
        None => true,
    }
}

/// `objectSelector`: the new or the old object's labels match.
fn object_selected(mr: &Value, object: &Value, old: Option<&Value>) -> bool {
    let Some(sel) = selector(mr, "objectSelector") else {
        return true;
    };
    let Some(sel) = sel else {
        return false;
    };
    sel.matches(object) || old.is_some_and(|o| sel.matches(o))
}

fn listed(list: &[String], want: &str) -> bool {
    list.iter().any(|v| v == "*" || v == want)
}

/// One `NamedRuleWithOperations`: operations, API groups and versions, resources (`*` is
/// every resource but no subresource, `*/*` everything, `x/*` and `*/status`
/// subresources), scope and resource names.
fn rule_matches(rule: &Value, attrs: &Attributes<'_>) -> bool {
    if !listed(&string_list(rule, "operations"), attrs.operation.as_str())
        || !listed(&string_list(rule, "apiGroups"), attrs.group)
        || !listed(&string_list(rule, "apiVersions"), attrs.version)
    {
        return false;
    }
    let (res, sub) = (attrs.resource, attrs.subresource);
    let resource_ok = string_list(rule, "resources").iter().any(|r| {
        r == "*/*"
            || if sub.is_empty() {
                r == "*" || r == res
            } else {
                *r == format!("{res}/{sub}") || *r == format!("*/{sub}") || *r == format!("{res}/*")
            }
    });
    let scope_ok = match rule["scope"].as_str() {
        Some("Cluster") => attrs.namespace.is_none(),
        Some("Namespaced") => attrs.namespace.is_some(),
        _ => true,
    };
    let names = string_list(rule, "resourceNames");
    resource_ok && scope_ok && (names.is_empty() || names.iter().any(|n| n == attrs.name))
}

fn cause(reason: &str, field: &str, message: impl Into<String>) -> Cause {
    Cause {
        reason: reason.into(),
        message: message.into(),
        field: field.into(),
    }
}

fn not_supported(field: &str, value: &str, supported: &[&str]) -> Cause {
    let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
    cause(
        "FieldValueNotSupported",
        field,
        format!(
            "Unsupported value: {value:?}: supported values: {}",
            list.join(", ")
        ),
    )
}

/// What a real server refuses in a policy or binding (the checks a test is likely to
/// trip over, not all of them).
pub(crate) fn object_causes(resource: &str, obj: &Value) -> Vec<Cause> {
    let spec = &obj["spec"];
    let mut causes = Vec::new();
    if resource == POLICIES {
        if let Some(f) = spec["failurePolicy"].as_str()
            && f != "Fail"
            && f != "Ignore"
        {
            causes.push(not_supported("spec.failurePolicy", f, &["Fail", "Ignore"]));
        }
        if spec["matchConstraints"].is_null() {
            causes.push(cause(
                "FieldValueRequired",
                "spec.matchConstraints",
                "Required value",
            ));
        } else if spec["matchConstraints"]["resourceRules"].is_null() {
            causes.push(cause(
                "FieldValueRequired",
                "spec.matchConstraints.resourceRules",
                "Required value",
            ));
        }
        let validations = spec["validations"]
            .as_array()
            .map_or(&[][..], Vec::as_slice);
        let audits = spec["auditAnnotations"].as_array().map_or(0, Vec::len);
        if validations.is_empty() && audits == 0 {
            causes.push(cause(
                "FieldValueRequired",
                "spec.validations",
                "Required value: validations or auditAnnotations must contain at least one item",
            ));
        }
        for (i, v) in validations.iter().enumerate() {
            if v["expression"].as_str().is_none_or(|e| e.trim().is_empty()) {
                causes.push(cause(
                    "FieldValueRequired",
                    &format!("spec.validations[{i}].expression"),
                    "Required value: expression is not specified",
                ));
            }
            if let Some(r) = v["reason"].as_str() {
                let supported = [
                    "Unauthorized",
                    "Forbidden",
                    "Invalid",
                    "RequestEntityTooLarge",
                ];
                if !supported.contains(&r) {
                    causes.push(not_supported(
                        &format!("spec.validations[{i}].reason"),
                        r,
                        &supported,
                    ));
                }
            }
        }
    } else if resource == BINDINGS {
        if spec["policyName"].as_str().is_none_or(str::is_empty) {
            causes.push(cause(
                "FieldValueRequired",
                "spec.policyName",
                "Required value",
            ));
        }
        let actions = string_list(spec, "validationActions");
        if actions.is_empty() {
            causes.push(cause(
                "FieldValueRequired",
                "spec.validationActions",
                "Required value: at least one validation action is required",
            ));
        }
        for (i, a) in actions.iter().enumerate() {
            if !["Deny", "Warn", "Audit"].contains(&a.as_str()) {
                causes.push(not_supported(
                    &format!("spec.validationActions[{i}]"),
                    a,
                    &["Audit", "Deny", "Warn"],
                ));
            }
        }
        if actions.iter().any(|a| a == "Deny") && actions.iter().any(|a| a == "Warn") {
            causes.push(cause(
                "FieldValueInvalid",
                "spec.validationActions",
                "Invalid value: must not contain both Deny and Warn (repeating the same validation failure information in the API response and headers serves no purpose)",
            ));
        }
    }
    causes
}

/// The defaults a real server stores in a policy or binding.
pub(crate) fn defaults(resource: &str, obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let mr_key = if resource == POLICIES {
        spec.entry("failurePolicy").or_insert(json!("Fail"));
        "matchConstraints"
    } else {
        "matchResources"
    };
    let Some(mr) = spec.get_mut(mr_key).and_then(Value::as_object_mut) else {
        return;
    };
    mr.entry("matchPolicy").or_insert(json!("Equivalent"));
    mr.entry("namespaceSelector").or_insert(json!({}));
    mr.entry("objectSelector").or_insert(json!({}));
    for rules in ["resourceRules", "excludeResourceRules"] {
        for r in mr
            .get_mut(rules)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(r) = r.as_object_mut() {
                r.entry("scope").or_insert(json!("*"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &str = "spec.kubernetes.namespace must be the SecretSource's own namespace";

    fn policy(name: &str, spec: Value) -> Value {
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
               "metadata": {"name": name}, "spec": spec})
    }

    fn binding(name: &str, policy: &str, actions: &[&str]) -> Value {
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
               "metadata": {"name": name}, "spec": {"policyName": policy, "validationActions": actions}})
    }

    fn sources_rule() -> Value {
        json!({"apiGroups": ["secretsync.dev"], "apiVersions": ["*"],
               "operations": ["CREATE", "UPDATE"], "resources": ["secretsources"]})
    }

    /// A policy on SecretSources with `validations` and more of its spec from `extra`.
    fn on_sources(validations: Value, extra: Value) -> Value {
        let mut spec = json!({"matchConstraints": {"resourceRules": [sources_rule()]},
                              "validations": validations});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        policy("p", spec)
    }

    /// The chart's policy.
    fn namespace_policy() -> Value {
        on_sources(
            json!([{
                "expression": "!has(object.spec.kubernetes) || !has(object.spec.kubernetes.namespace) || object.spec.kubernetes.namespace == object.metadata.namespace",
                "message": MESSAGE, "reason": "Invalid",
            }]),
            json!({"failurePolicy": "Fail"}),
        )
    }

    fn source(ns: &str, spec: Value) -> Value {
        json!({"apiVersion": "secretsync.dev/v1alpha1", "kind": "SecretSource",
               "metadata": {"name": "s", "namespace": ns}, "spec": spec})
    }

    fn attrs<'a>(user: &'a User, operation: Operation, ns: &'a str) -> Attributes<'a> {
        Attributes {
            operation,
            group: "secretsync.dev",
            version: "v1alpha1",
            resource: "secretsources",
            subresource: "",
            kind: "SecretSource",
            namespace: Some(ns),
            name: "s",
            user,
            dry_run: false,
            namespace_object: None,
        }
    }

    /// Admission of a create of `obj` in `shop` under `p` bound with `actions`.
    fn create(p: &Value, actions: &[&str], obj: &Value) -> Result<Admitted, ApiError> {
        let user = User::admin();
        let b = binding("b", "p", actions);
        admit(
            &[p],
            &[&b],
            &attrs(&user, Operation::Create, "shop"),
            obj,
            None,
        )
    }

    fn to_infra() -> Value {
        source("shop", json!({"kubernetes": {"namespace": "infra"}}))
    }

    #[test]
    fn deny_refuses_with_the_status_and_message_of_a_real_server() {
        let p = namespace_policy();
        let e = create(&p, &["Deny"], &to_infra()).unwrap_err();
        let why =
            format!("ValidatingAdmissionPolicy 'p' with binding 'b' denied request: {MESSAGE}");
        assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
        assert_eq!(
            e.message,
            format!("secretsources.secretsync.dev \"s\" is forbidden: {why}")
        );
        assert_eq!(e.details.causes.len(), 1);
        assert_eq!(e.details.causes[0].message, why);
        assert_eq!(e.details.kind.as_deref(), Some("secretsources"));
        assert_eq!(e.details.group.as_deref(), Some("secretsync.dev"));
        assert_eq!(e.details.name.as_deref(), Some("s"));
        let status = e.to_status();
        assert_eq!(status["details"]["causes"], json!([{"message": why}]));

        for ok in [
            json!({"kubernetes": {"namespace": "shop"}}),
            json!({"kubernetes": {}}),
            json!({"env": {}}),
        ] {
            assert_eq!(
                create(&p, &["Deny"], &source("shop", ok)).unwrap(),
                Admitted::default()
            );
        }
    }

    #[test]
    fn warn_and_audit_never_refuse() {
        let p = namespace_policy();
        let warned = create(&p, &["Warn"], &to_infra()).unwrap();
        assert_eq!(
            warned.warnings,
            [format!(
                "Validation failed for ValidatingAdmissionPolicy 'p' with binding 'b': {MESSAGE}"
            )]
        );
        assert_eq!(
            create(&p, &["Audit"], &to_infra()).unwrap(),
            Admitted::default()
        );
        let both = create(&p, &["Deny", "Audit"], &to_infra()).unwrap_err();
        assert_eq!(both.code, 422);
    }

    #[test]
    fn the_reason_sets_code_and_reason() {
        for (reason, code, shown) in [
            (None, 422, "Invalid"),
            (Some("Invalid"), 422, "Invalid"),
            (Some("Forbidden"), 403, "Forbidden"),
            (Some("Unauthorized"), 401, "Unauthorized"),
            (Some("RequestEntityTooLarge"), 413, "RequestEntityTooLarge"),
        ] {
            let mut v = json!({"expression": "false", "message": "no"});
            if let Some(r) = reason {
                v["reason"] = json!(r);
            }
            let e = create(&on_sources(json!([v]), json!({})), &["Deny"], &to_infra()).unwrap_err();
            assert_eq!((e.code, e.reason.as_str()), (code, shown), "{reason:?}");
        }
    }

    #[test]
    fn messages_fall_back_to_the_expression() {
        let e = create(
            &on_sources(json!([{"expression": " object.spec.x == 1 "}]), json!({})),
            &["Deny"],
            &source("shop", json!({"x": 2})),
        )
        .unwrap_err();
        assert!(
            e.message
                .ends_with("denied request: failed expression: object.spec.x == 1"),
            "{}",
            e.message
        );
        let with_expression = on_sources(
            json!([{"expression": "false", "message": "static",
                    "messageExpression": "'source ' + object.metadata.name + ' is refused'"}]),
            json!({}),
        );
        let e = create(&with_expression, &["Deny"], &to_infra()).unwrap_err();
        assert!(
            e.message.ends_with(": source s is refused"),
            "{}",
            e.message
        );
        let unusable = on_sources(
            json!([{"expression": "false", "message": "static", "messageExpression": "1"}]),
            json!({}),
        );
        let e = create(&unusable, &["Deny"], &to_infra()).unwrap_err();
        assert!(e.message.ends_with(": static"), "{}", e.message);
    }

    #[test]
    fn rules_match_operations_groups_versions_resources_and_names() {
        let user = User::admin();
        let create = attrs(&user, Operation::Create, "shop");
        let update = attrs(&user, Operation::Update, "shop");
        let status = Attributes {
            subresource: "status",
            ..update
        };
        let rule = |r: Value| {
            let mut base = json!({"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["*"], "resources": ["*"]});
            if let (Some(b), Some(r)) = (base.as_object_mut(), r.as_object()) {
                b.extend(r.clone());
            }
            base
        };
        let m = |r: Value, a: &Attributes<'_>| rule_matches(&rule(r), a);
        assert!(m(json!({}), &create));
        assert!(!m(json!({}), &status), "`*` is no subresource");
        assert!(m(json!({"resources": ["*/*"]}), &status));
        assert!(m(json!({"resources": ["secretsources/status"]}), &status));
        assert!(m(json!({"resources": ["*/status"]}), &status));
        assert!(m(json!({"resources": ["secretsources/*"]}), &status));
        assert!(!m(json!({"resources": ["secretsources"]}), &status));
        assert!(!m(json!({"resources": ["secretbindings"]}), &create));
        assert!(m(json!({"operations": ["CREATE"]}), &create));
        assert!(!m(json!({"operations": ["CREATE"]}), &update));
        assert!(!m(json!({"operations": ["DELETE"]}), &create));
        assert!(m(json!({"apiGroups": ["secretsync.dev"]}), &create));
        assert!(!m(json!({"apiGroups": [""]}), &create));
        assert!(m(json!({"apiVersions": ["v1alpha1"]}), &create));
        assert!(!m(json!({"apiVersions": ["v1"]}), &create));
        assert!(m(json!({"resourceNames": ["s"]}), &create));
        assert!(!m(json!({"resourceNames": ["other"]}), &create));
        assert!(m(json!({"scope": "Namespaced"}), &create));
        assert!(!m(json!({"scope": "Cluster"}), &create));
    }

    #[test]
    fn excluded_and_unmatched_requests_are_admitted() {
        let refuse = json!([{"expression": "false"}]);
        let excluded = on_sources(
            refuse.clone(),
            json!({"matchConstraints": {"resourceRules": [sources_rule()],
                   "excludeResourceRules": [{"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["*"], "resources": ["*"], "resourceNames": ["s"]}]}}),
        );
        assert!(create(&excluded, &["Deny"], &to_infra()).is_ok());
        let elsewhere = on_sources(
            refuse.clone(),
            json!({"matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["*"], "resources": ["secrets"]}]}}),
        );
        assert!(create(&elsewhere, &["Deny"], &to_infra()).is_ok());
        let no_rules = on_sources(refuse.clone(), json!({"matchConstraints": {}}));
        assert!(create(&no_rules, &["Deny"], &to_infra()).is_ok());

        // a binding of another policy, and policies and bindings themselves, are untouched
        let p = on_sources(refuse.clone(), json!({}));
        let user = User::admin();
        let other = binding("b", "q", &["Deny"]);
        let a = attrs(&user, Operation::Create, "shop");
        assert!(admit(&[&p], &[&other], &a, &to_infra(), None).is_ok());
        let everything = on_sources(
            refuse,
            json!({"matchConstraints": {"resourceRules": [{"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["*"], "resources": ["*"]}]}}),
        );
        let b = binding("b", "p", &["Deny"]);
        let own = Attributes {
            group: GROUP,
            version: "v1",
            resource: POLICIES,
            kind: "ValidatingAdmissionPolicy",
            namespace: None,
            name: "p",
            ..a
        };
        assert!(admit(&[&everything], &[&b], &own, &everything, None).is_ok());
    }

    #[test]
    fn old_object_is_null_on_create_and_request_describes_the_write() {
        let p = on_sources(
            json!([{"expression": "oldObject == null", "message": "an update"}]),
            json!({}),
        );
        let user = User::admin();
        let b = binding("b", "p", &["Deny"]);
        let obj = to_infra();
        let create = attrs(&user, Operation::Create, "shop");
        assert!(admit(&[&p], &[&b], &create, &obj, None).is_ok());
        let update = attrs(&user, Operation::Update, "shop");
        let e = admit(&[&p], &[&b], &update, &obj, Some(&obj)).unwrap_err();
        assert!(e.message.ends_with(": an update"), "{}", e.message);

        let request = on_sources(
            json!([{"expression": "request.operation == 'CREATE' && request.namespace == 'shop' && request.name == 's' && request.userInfo.username == 'kubernetes-admin' && request.resource.group == 'secretsync.dev' && request.resource.version == 'v1alpha1' && request.resource.resource == 'secretsources' && request.kind.kind == 'SecretSource' && !request.dryRun"}]),
            json!({}),
        );
        assert!(admit(&[&request], &[&b], &create, &obj, None).is_ok());
        assert!(admit(&[&request], &[&b], &update, &obj, Some(&obj)).is_err());
    }

    #[test]
    fn variables_are_evaluated_in_order() {
        let p = on_sources(
            json!([{"expression": "variables.wanted == variables.own", "message": "elsewhere"}]),
            json!({"variables": [
                {"name": "own", "expression": "object.metadata.namespace"},
                {"name": "wanted", "expression": "has(object.spec.kubernetes.namespace) ? object.spec.kubernetes.namespace : variables.own"},
            ]}),
        );
        assert!(create(&p, &["Deny"], &to_infra()).is_err());
        assert!(create(&p, &["Deny"], &source("shop", json!({"kubernetes": {}}))).is_ok());
        // a variable that errors fails only the validations that use it
        let unused = on_sources(
            json!([{"expression": "true"}]),
            json!({"variables": [{"name": "broken", "expression": "object.spec.missing"}]}),
        );
        assert!(create(&unused, &["Deny"], &to_infra()).is_ok());
    }

    #[test]
    fn match_conditions_must_all_hold() {
        let p = |conditions: Value, failure: &str| {
            on_sources(
                json!([{"expression": "false", "message": "refused"}]),
                json!({"matchConditions": conditions, "failurePolicy": failure}),
            )
        };
        let cond = |name: &str, expr: &str| json!({"name": name, "expression": expr});
        let holds = cond("shop", "object.metadata.namespace == 'shop'");
        let fails = cond("prod", "object.metadata.name.startsWith('prod-')");
        let errs = cond("missing", "object.spec.missing == 1");
        let obj = to_infra();
        assert!(create(&p(json!([holds.clone()]), "Fail"), &["Deny"], &obj).is_err());
        assert!(
            create(
                &p(json!([holds.clone(), fails.clone()]), "Fail"),
                &["Deny"],
                &obj
            )
            .is_ok()
        );
        assert!(
            create(&p(json!([errs.clone(), fails]), "Fail"), &["Deny"], &obj).is_ok(),
            "a false condition wins over an error"
        );
        let e = create(&p(json!([holds, errs.clone()]), "Fail"), &["Deny"], &obj).unwrap_err();
        assert_eq!(e.code, 422);
        assert!(
            e.message
                .contains("matchCondition 'missing' resulted in error: no such key: missing"),
            "{}",
            e.message
        );
        assert!(create(&p(json!([errs]), "Ignore"), &["Deny"], &obj).is_ok());
    }

    #[test]
    fn failure_policy_decides_about_runtime_errors() {
        let p = |failure: &str| {
            on_sources(
                json!([{"expression": "object.spec.missing == 'x'", "message": "unused"}]),
                json!({"failurePolicy": failure}),
            )
        };
        let e = create(&p("Fail"), &["Deny"], &to_infra()).unwrap_err();
        assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
        assert!(
            e.message.ends_with("denied request: expression 'object.spec.missing == 'x'' resulted in error: no such key: missing"),
            "{}",
            e.message
        );
        assert!(create(&p("Ignore"), &["Deny"], &to_infra()).is_ok());
        let defaulted = on_sources(
            json!([{"expression": "object.spec.missing == 'x'"}]),
            json!({}),
        );
        assert!(
            create(&defaulted, &["Deny"], &to_infra()).is_err(),
            "Fail is the default"
        );
    }

    #[test]
    fn expressions_beyond_the_subset_are_skipped() {
        for expr in [
            "object.metadata.name.lowerAscii() == 'x'",
            "authorizer.group('').resource('secrets').check('get').allowed()",
            "object.spec.kubernetes.namespace in {'a': 1}",
            "variables.undefined == 1",
        ] {
            let p = on_sources(
                json!([{"expression": expr}]),
                json!({"failurePolicy": "Fail"}),
            );
            assert!(create(&p, &["Deny"], &to_infra()).is_ok(), "{expr}");
        }
    }

    #[test]
    fn param_kind_policies_are_skipped() {
        let p = on_sources(
            json!([{"expression": "false"}]),
            json!({"paramKind": {"apiVersion": "v1", "kind": "ConfigMap"}}),
        );
        assert!(create(&p, &["Deny"], &to_infra()).is_ok());
    }

    #[test]
    fn selectors_narrow_policies_and_bindings() {
        let refuse = json!([{"expression": "false"}]);
        let user = User::admin();
        let prod = json!({"metadata": {"name": "shop", "labels": {"env": "prod"}}});
        let mut a = attrs(&user, Operation::Create, "shop");
        let b = binding("b", "p", &["Deny"]);
        let with = |mc: Value| on_sources(refuse.clone(), json!({"matchConstraints": mc}));
        let rules = json!([sources_rule()]);

        let ns_sel = with(
            json!({"resourceRules": rules, "namespaceSelector": {"matchLabels": {"env": "prod"}}}),
        );
        assert!(
            admit(&[&ns_sel], &[&b], &a, &to_infra(), None).is_ok(),
            "no such labels"
        );
        a.namespace_object = Some(&prod);
        assert!(admit(&[&ns_sel], &[&b], &a, &to_infra(), None).is_err());
        let by_name = with(
            json!({"resourceRules": rules, "namespaceSelector": {"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["shop"]}]}}),
        );
        assert!(admit(&[&by_name], &[&b], &a, &to_infra(), None).is_err());

        let obj_sel = with(
            json!({"resourceRules": rules, "objectSelector": {"matchLabels": {"guarded": "yes"}}}),
        );
        let mut labelled = to_infra();
        assert!(admit(&[&obj_sel], &[&b], &a, &labelled, None).is_ok());
        labelled["metadata"]["labels"] = json!({"guarded": "yes"});
        assert!(admit(&[&obj_sel], &[&b], &a, &labelled, None).is_err());
        let update = Attributes {
            operation: Operation::Update,
            ..a
        };
        assert!(
            admit(&[&obj_sel], &[&b], &update, &to_infra(), Some(&labelled)).is_err(),
            "the old object's labels count too"
        );

        let p = on_sources(refuse.clone(), json!({}));
        let mut narrowed = b.clone();
        narrowed["spec"]["matchResources"] =
            json!({"namespaceSelector": {"matchLabels": {"env": "dev"}}});
        assert!(admit(&[&p], &[&narrowed], &a, &to_infra(), None).is_ok());
        narrowed["spec"]["matchResources"] =
            json!({"namespaceSelector": {"matchLabels": {"env": "prod"}}});
        assert!(admit(&[&p], &[&narrowed], &a, &to_infra(), None).is_err());
        narrowed["spec"]["matchResources"]["resourceRules"] = json!([{"apiGroups": [""], "apiVersions": ["*"], "operations": ["*"], "resources": ["secrets"]}]);
        assert!(admit(&[&p], &[&narrowed], &a, &to_infra(), None).is_ok());
    }

    #[test]
    fn policy_objects_are_checked_and_defaulted() {
        assert!(object_causes(POLICIES, &namespace_policy()).is_empty());
        let fields = |resource: &str, obj: Value| -> Vec<String> {
            object_causes(resource, &obj)
                .into_iter()
                .map(|c| c.field)
                .collect()
        };
        assert_eq!(
            fields(
                POLICIES,
                policy(
                    "p",
                    json!({"failurePolicy": "Sometimes", "validations": [{"expression": "", "reason": "Teapot"}]})
                )
            ),
            [
                "spec.failurePolicy",
                "spec.matchConstraints",
                "spec.validations[0].expression",
                "spec.validations[0].reason"
            ]
        );
        assert!(object_causes(BINDINGS, &binding("b", "p", &["Deny"])).is_empty());
        assert_eq!(
            fields(BINDINGS, binding("b", "", &[])),
            ["spec.policyName", "spec.validationActions"]
        );
        assert_eq!(
            fields(BINDINGS, binding("b", "p", &["Deny", "Warn", "Log"])),
            ["spec.validationActions[2]", "spec.validationActions"]
        );

        let mut p = namespace_policy();
        p["spec"].as_object_mut().unwrap().remove("failurePolicy");
        defaults(POLICIES, &mut p);
        assert_eq!(p["spec"]["failurePolicy"], "Fail");
        let mc = &p["spec"]["matchConstraints"];
        assert_eq!(mc["matchPolicy"], "Equivalent");
        assert_eq!(
            (&mc["namespaceSelector"], &mc["objectSelector"]),
            (&json!({}), &json!({}))
        );
        assert_eq!(mc["resourceRules"][0]["scope"], "*");
    }
}
