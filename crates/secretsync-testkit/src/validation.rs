//! Validation faithful enough to catch operator bugs, plus CRD defaulting and pruning.

use base64::Engine;
use serde_json::{Map, Value};

use crate::resources::ResourceDef;
use crate::status::Cause;

fn cause(reason: &str, field: &str, message: String) -> Cause {
    Cause {
        reason: reason.into(),
        message,
        field: field.into(),
    }
}

/// RFC 1123 subdomain (lowercase alphanumerics, `-`, `.`, at most 253).
pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// RFC 1123 label (subdomain without dots, at most 63).
pub(crate) fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && !s.contains('.') && is_dns_subdomain(s)
}

fn is_config_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 253
        && k != "."
        && k != ".."
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

fn is_label_value(v: &str) -> bool {
    v.len() <= 63
        && (v.is_empty()
            || (v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && v.starts_with(|c: char| c.is_ascii_alphanumeric())
                && v.ends_with(|c: char| c.is_ascii_alphanumeric())))
}

/// Validate an object about to be stored. Returns the causes of a 422.
pub(crate) fn validate(def: &ResourceDef, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let name = crate::util::meta_str(obj, "name").unwrap_or_default();
    let name_ok = if def.plural == "namespaces" {
        is_dns_label(name)
    } else if def.group == "rbac.authorization.k8s.io" {
        // RBAC names are path segments (`system:auth-delegator`), not DNS names.
        !name.contains(['/', '%']) && name != "." && name != ".."
    } else {
        is_dns_subdomain(name)
    };
    if name.is_empty() {
        causes.push(cause(
            "FieldValueRequired",
            "metadata.name",
            "Required value: name or generateName is required".into(),
        ));
    } else if !name_ok {
        causes.push(cause(
            "FieldValueInvalid",
            "metadata.name",
            format!("Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"),
        ));
    }
    if let Some(l) = crate::util::labels(obj) {
        for (k, v) in l {
            match v.as_str() {
                Some(s) if is_label_value(s) => {}
                _ => causes.push(cause(
                    "FieldValueInvalid",
                    &format!("metadata.labels[{k}]"),
                    format!("Invalid value: {v}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"),
                )),
            }
        }
    }
    if def.group.is_empty() && (def.plural == "secrets" || def.plural == "configmaps") {
        for field in ["data", "binaryData"] {
            let Some(m) = obj.get(field).and_then(Value::as_object) else {
                continue;
            };
            for (k, v) in m {
                let path = format!("{field}[{k}]");
                if !is_config_key(k) {
                    causes.push(cause(
                        "FieldValueInvalid",
                        &path,
                        format!("Invalid value: {k:?}: a valid config key must consist of alphanumeric characters, '-', '_' or '.'"),
                    ));
                }
                let needs_b64 = def.plural == "secrets" || field == "binaryData";
                match v.as_str() {
                    Some(s) if needs_b64 => {
                        if base64::engine::general_purpose::STANDARD.decode(s).is_err() {
                            causes.push(cause(
                                "FieldValueInvalid",
                                &path,
                                "Invalid value: \"<secret contents redacted>\": illegal base64 data".into(),
                            ));
                        }
                    }
                    Some(_) => {}
                    None => causes.push(cause(
                        "FieldValueTypeInvalid",
                        &path,
                        format!("Invalid value: {v}: must be a string"),
                    )),
                }
            }
        }
    }
    causes
}

/// Prune unknown fields and fill defaults of a custom resource, from its version's schema.
pub(crate) fn default_and_prune(schema: &Value, obj: &mut Value) {
    if let Value::Object(m) = obj {
        for (k, v) in m.iter_mut() {
            if k == "metadata" || k == "apiVersion" || k == "kind" {
                continue;
            }
            if let Some(s) = schema.get("properties").and_then(|p| p.get(k)) {
                walk_default(s, v);
            }
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            if !preserves(schema) {
                m.retain(|k, _| {
                    props.contains_key(k) || k == "metadata" || k == "apiVersion" || k == "kind"
                });
            }
            for (k, s) in props {
                if let (false, Some(d)) = (m.contains_key(k), s.get("default")) {
                    let mut d = d.clone();
                    walk_default(s, &mut d);
                    m.insert(k.clone(), d);
                }
            }
        }
    }
}

/// Paths of fields the schema does not know (what pruning would drop).
pub(crate) fn unknown_fields(schema: &Value, obj: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let (Value::Object(m), Some(props)) =
        (obj, schema.get("properties").and_then(Value::as_object))
    {
        for (k, v) in m {
            if k == "metadata" || k == "apiVersion" || k == "kind" {
                continue;
            }
            match props.get(k) {
                Some(s) => unknown_walk(s, v, k, &mut out),
                None if !preserves(schema) => out.push(k.clone()),
                None => {}
            }
        }
    }
    out
}

fn unknown_walk(schema: &Value, v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                let open = preserves(schema) || schema.get("additionalProperties").is_some();
                for (k, c) in m {
                    match props.get(k) {
                        Some(s) => unknown_walk(s, c, &format!("{path}.{k}"), out),
                        None if !open => out.push(format!("{path}.{k}")),
                        None => {}
                    }
                }
            } else if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for (k, c) in m {
                    unknown_walk(ap, c, &format!("{path}.{k}"), out);
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = schema.get("items") {
                for (i, it) in a.iter().enumerate() {
                    unknown_walk(items, it, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

fn preserves(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

fn walk_default(schema: &Value, v: &mut Value) {
    if v.is_null()
        && let Some(d) = schema.get("default")
    {
        *v = d.clone();
    }
    match v {
        Value::Object(m) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                if !preserves(schema) && schema.get("additionalProperties").is_none() {
                    m.retain(|k, _| props.contains_key(k));
                }
                for (k, s) in props {
                    match m.get_mut(k) {
                        Some(child) => walk_default(s, child),
                        None => {
                            if let Some(d) = s.get("default") {
                                let mut d = d.clone();
                                walk_default(s, &mut d);
                                m.insert(k.clone(), d);
                            }
                        }
                    }
                }
            } else if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for child in m.values_mut() {
                    walk_default(ap, child);
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = schema.get("items") {
                for it in a {
                    walk_default(items, it);
                }
            }
        }
        _ => {}
    }
}

/// Validate a custom resource against its schema: `type`, `required`, `enum`, `nullable`,
/// and `x-kubernetes-validations` rules within the small CEL subset of [`crate::cel`].
pub(crate) fn validate_schema(schema: &Value, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    if let Value::Object(m) = obj {
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (k, v) in m {
                if k == "metadata" || k == "apiVersion" || k == "kind" {
                    continue;
                }
                if let Some(s) = props.get(k) {
                    check(s, v, k, &mut causes);
                }
            }
        }
        required(schema, m, "", &mut causes);
    }
    rules(schema, obj, "", &mut causes);
    causes
}

/// What a real server's CEL compiler refuses in the `x-kubernetes-validations` at the
/// root of a CRD's schemas: at the root `self.metadata` exposes only `name` and
/// `generateName` (the rest of metadata is the server's, not the CRD's). A real server
/// reports identical schemas of all versions once, under `spec.validation`.
pub(crate) fn crd_rule_causes(crd: &Value) -> Vec<Cause> {
    let versions = crd["spec"]["versions"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    let schemas: Vec<&Value> = versions
        .iter()
        .map(|v| &v["schema"]["openAPIV3Schema"])
        .collect();
    let shared = schemas.windows(2).all(|w| w[0] == w[1]);
    let mut causes = Vec::new();
    for (i, schema) in schemas.iter().enumerate() {
        if shared && i > 0 {
            break;
        }
        let base = if shared {
            "spec.validation.openAPIV3Schema".to_owned()
        } else {
            format!("spec.versions[{i}].schema.openAPIV3Schema")
        };
        let rules = schema["x-kubernetes-validations"]
            .as_array()
            .map_or(&[][..], Vec::as_slice);
        for (j, r) in rules.iter().enumerate() {
            let Some(rule) = r["rule"].as_str() else {
                continue;
            };
            let errors: Vec<String> = crate::cel::hidden_metadata_fields(rule)
                .into_iter()
                .map(|(field, line, col)| {
                    let text = rule.lines().nth(line - 1).unwrap_or_default();
                    format!(
                        "ERROR: <input>:{line}:{col}: undefined field '{field}'\n | {text}\n | {}^",
                        ".".repeat(col - 1)
                    )
                })
                .collect();
            if !errors.is_empty() {
                causes.push(cause(
                    "FieldValueInvalid",
                    &format!("{base}.x-kubernetes-validations[{j}].rule"),
                    format!(
                        "Invalid value: {rule:?}: compilation failed: {}",
                        errors.join("\n")
                    ),
                ));
            }
        }
    }
    causes
}

/// `x-kubernetes-validations` of one schema node, evaluated with the tiny CEL subset.
fn rules(schema: &Value, v: &Value, path: &str, causes: &mut Vec<Cause>) {
    let Some(list) = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    else {
        return;
    };
    for r in list {
        let Some(rule) = r.get("rule").and_then(Value::as_str) else {
            continue;
        };
        if let Ok(false) = crate::cel::check_rule(rule, v) {
            let msg = r
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("failed rule: {rule}"));
            let shown = match v {
                Value::Object(_) => "\"object\"".to_owned(),
                Value::Array(_) => "\"array\"".to_owned(),
                other => other.to_string(),
            };
            let field = if path.is_empty() { "<root>" } else { path };
            causes.push(cause(
                "FieldValueInvalid",
                field,
                format!("Invalid value: {shown}: {msg}"),
            ));
        }
    }
}

fn required(schema: &Value, m: &Map<String, Value>, path: &str, causes: &mut Vec<Cause>) {
    if let Some(req) = schema.get("required").and_then(Value::as_array) {
        for r in req.iter().filter_map(Value::as_str) {
            if !m.contains_key(r) {
                let field = if path.is_empty() {
                    r.to_owned()
                } else {
                    format!("{path}.{r}")
                };
                causes.push(cause("FieldValueRequired", &field, "Required value".into()));
            }
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn check(schema: &Value, v: &Value, path: &str, causes: &mut Vec<Cause>) {
    let int_or_string = schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true);
    if v.is_null() {
        if schema.get("nullable").and_then(Value::as_bool) != Some(true) {
            causes.push(cause(
                "FieldValueTypeInvalid",
                path,
                format!(
                    "Invalid value: \"null\": {path} in body must be of type {}: \"null\"",
                    schema
                        .get("type")
                        .and_then(Value::as_str)
                        .unwrap_or("object")
                ),
            ));
        }
        return;
    }
    let actual = type_name(v);
    if int_or_string {
        if actual != "integer" && actual != "string" {
            causes.push(cause(
                "FieldValueTypeInvalid",
                path,
                format!("Invalid value: {v}: {path} in body must be of type integer or string: {actual:?}"),
            ));
        }
    } else if let Some(want) = schema.get("type").and_then(Value::as_str) {
        let ok = want == actual || (want == "number" && actual == "integer");
        if !ok {
            causes.push(cause(
                "FieldValueTypeInvalid",
                path,
                format!(
                    "Invalid value: {actual:?}: {path} in body must be of type {want}: {actual:?}"
                ),
            ));
            return;
        }
    }
    rules(schema, v, path, causes);
    if let Some(en) = schema.get("enum").and_then(Value::as_array)
        && !en.contains(v)
    {
        let supported: Vec<String> = en.iter().map(Value::to_string).collect();
        causes.push(cause(
            "FieldValueNotSupported",
            path,
            format!(
                "Unsupported value: {v}: supported values: {}",
                supported.join(", ")
            ),
        ));
    }
    match v {
        Value::Object(m) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, c) in m {
                    if let Some(s) = props.get(k) {
                        check(s, c, &format!("{path}.{k}"), causes);
                    }
                }
            } else if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for (k, c) in m {
                    check(ap, c, &format!("{path}.{k}"), causes);
                }
            }
            required(schema, m, path, causes);
        }
        Value::Array(a) => {
            if let Some(items) = schema.get("items") {
                for (i, it) in a.iter().enumerate() {
                    check(items, it, &format!("{path}[{i}]"), causes);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names() {
        assert!(is_dns_subdomain("a.b-c"));
        assert!(!is_dns_subdomain("A"));
        assert!(!is_dns_subdomain("-a"));
        assert!(!is_dns_label("a.b"));
    }

    #[test]
    fn schema_checks() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string"}, "mode": {"type": "string", "enum": ["A", "B"], "default": "A"},
                "n": {"type": "integer"}}}}});
        let causes = validate_schema(&schema, &json!({"spec": {"mode": "C", "n": "x"}}));
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert!(fields.contains(&"spec.mode"), "{causes:?}");
        assert!(fields.contains(&"spec.n"), "{causes:?}");
        assert!(fields.contains(&"spec.name"), "{causes:?}");
        let mut o = json!({"spec": {"name": "x", "junk": 1}, "extra": 2});
        default_and_prune(&schema, &mut o);
        assert_eq!(o, json!({"spec": {"name": "x", "mode": "A"}}));
    }

    #[test]
    fn crd_rules_may_not_read_hidden_metadata() {
        let version = |name: &str, rule: &str| {
            json!({"name": name, "served": true, "storage": name == "v1", "schema": {"openAPIV3Schema": {
                "type": "object", "x-kubernetes-validations": [{"rule": "self.metadata.name != ''"}, {"rule": rule}]}}})
        };
        let crd = |versions: Value| json!({"spec": {"versions": versions}});
        let bad = "self.metadata.namespace == 'x'";
        let causes = crd_rule_causes(&crd(json!([version("v1", bad)])));
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(
            causes[0].field,
            "spec.validation.openAPIV3Schema.x-kubernetes-validations[1].rule"
        );
        assert_eq!(
            causes[0].message,
            "Invalid value: \"self.metadata.namespace == 'x'\": compilation failed: ERROR: <input>:1:14: undefined field 'namespace'\n | self.metadata.namespace == 'x'\n | .............^"
        );
        let causes = crd_rule_causes(&crd(json!([
            version("v1", "self.metadata.name == 'x'"),
            version("v2", bad)
        ])));
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            ["spec.versions[1].schema.openAPIV3Schema.x-kubernetes-validations[1].rule"]
        );
        assert!(
            crd_rule_causes(&crd(json!([version("v1", "self.metadata.name == 'x'")]))).is_empty()
        );
    }
}
