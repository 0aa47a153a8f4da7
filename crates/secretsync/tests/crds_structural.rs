//! The CRDs in `crds/` must be structural, or a real API server (apiextensions.k8s.io/v1)
//! refuses to store them. The fake API server used by the other tests does not enforce
//! these rules, so they are checked here on the shipped YAML.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use std::path::PathBuf;

use serde_json::Value;

fn crds() -> Vec<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../crds/secretsync-crds.yaml");
    let text = std::fs::read_to_string(&path).expect("read crds/secretsync-crds.yaml");
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(doc).expect("valid YAML");
            serde_json::to_value(v).expect("YAML as JSON")
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// Keys a schema node may not set inside `allOf`/`anyOf`/`oneOf`/`not`.
const NOT_IN_LOGIC: &[&str] = &[
    "type",
    "description",
    "default",
    "additionalProperties",
    "nullable",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-embedded-resource",
];

fn check_no_nulls(v: &Value, at: &str, errors: &mut Vec<String>) {
    match v {
        Value::Null => errors.push(format!("{at}: null")),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_no_nulls(item, &format!("{at}[{i}]"), errors);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                check_no_nulls(item, &format!("{at}.{k}"), errors);
            }
        }
        _ => {}
    }
}

/// Inside a logical junctor: value validations only, and every property it names must
/// also exist in the enclosing structural node.
fn check_logic(node: &Value, outer: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(map) = node.as_object() else {
        errors.push(format!("{at}: not an object"));
        return;
    };
    for key in NOT_IN_LOGIC {
        if map.contains_key(*key) {
            errors.push(format!("{at}: sets `{key}` inside a logical junctor"));
        }
    }
    if let Some(props) = map.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            let outer_sub = outer.get("properties").and_then(|p| p.get(name));
            match outer_sub {
                Some(o) => check_logic(sub, o, &format!("{at}.properties.{name}"), errors),
                None => errors.push(format!(
                    "{at}.properties.{name}: not in the structural schema around it"
                )),
            }
        }
    }
    check_junctors(map, outer, at, errors);
}

/// Checks every `allOf`/`anyOf`/`oneOf`/`not` of `map` against the structural node `outer`.
fn check_junctors(
    map: &serde_json::Map<String, Value>,
    outer: &Value,
    at: &str,
    errors: &mut Vec<String>,
) {
    for junctor in ["allOf", "anyOf", "oneOf"] {
        for (i, sub) in map
            .get(junctor)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            check_logic(sub, outer, &format!("{at}.{junctor}[{i}]"), errors);
        }
    }
    if let Some(sub) = map.get("not") {
        check_logic(sub, outer, &format!("{at}.not"), errors);
    }
}

fn check_node(node: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(map) = node.as_object() else {
        errors.push(format!("{at}: not an object"));
        return;
    };
    let free = map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
        || map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    let ty = map.get("type").and_then(Value::as_str).unwrap_or("");
    if ty.is_empty() && !free {
        errors.push(format!("{at}: no `type`"));
    }
    if let Some(props) = map.get("properties").and_then(Value::as_object) {
        if ty != "object" && !free {
            errors.push(format!("{at}: `properties` on a non-object"));
        }
        for (name, sub) in props {
            check_node(sub, &format!("{at}.properties.{name}"), errors);
        }
    }
    if map.contains_key("properties")
        && map
            .get("additionalProperties")
            .is_some_and(|a| a.is_object())
    {
        errors.push(format!(
            "{at}: both `properties` and `additionalProperties`"
        ));
    }
    if let Some(sub) = map.get("additionalProperties").filter(|a| a.is_object()) {
        check_node(sub, &format!("{at}.additionalProperties"), errors);
    }
    if ty == "array" {
        match map.get("items") {
            Some(items) => check_node(items, &format!("{at}.items"), errors),
            None => errors.push(format!("{at}: array without `items`")),
        }
    }
    if map.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") {
        let keys: Vec<&str> = map
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if keys.is_empty() {
            errors.push(format!(
                "{at}: map list without `x-kubernetes-list-map-keys`"
            ));
        }
        let item = map.get("items").cloned().unwrap_or(Value::Null);
        let required: Vec<&str> = item
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        for key in keys {
            let has_default = item
                .get("properties")
                .and_then(|p| p.get(key))
                .is_some_and(|p| p.get("default").is_some());
            if !required.contains(&key) && !has_default {
                errors.push(format!(
                    "{at}: map-list key `{key}` is neither required nor defaulted"
                ));
            }
        }
    }
    check_junctors(map, node, at, errors);
}

#[test]
fn shipped_crds_are_structural_and_null_free() {
    let docs = crds();
    assert_eq!(
        docs.len(),
        4,
        "four CRDs: the two namespaced kinds and their cluster counterparts"
    );
    let mut errors = Vec::new();
    for crd in &docs {
        let name = crd["metadata"]["name"].as_str().unwrap_or("?").to_owned();
        assert_eq!(crd["apiVersion"], "apiextensions.k8s.io/v1", "{name}");
        check_no_nulls(crd, &name, &mut errors);
        let versions = crd["spec"]["versions"].as_array().expect("versions");
        for v in versions {
            let at = format!("{name}/{}", v["name"].as_str().unwrap_or("?"));
            let schema = &v["schema"]["openAPIV3Schema"];
            assert!(schema.is_object(), "{at}: no openAPIV3Schema");
            assert_eq!(schema["type"], "object", "{at}: root must be an object");
            check_node(schema, &at, &mut errors);
        }
    }
    assert!(
        errors.is_empty(),
        "non-structural CRD schema:\n{}",
        errors.join("\n")
    );
}

#[test]
fn the_checker_catches_what_an_api_server_rejects() {
    let bad = serde_json::json!({
        "type": "object",
        "properties": {
            "untyped": {"description": "no type"},
            "list": {"type": "array"},
            "conds": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
                "items": {"type": "object", "properties": {"type": {"type": "string"}}}
            },
            "either": {
                "type": "object",
                "properties": {"a": {"type": "string"}},
                "oneOf": [{"required": ["a"], "type": "object"}, {"properties": {"b": {}}}]
            }
        }
    });
    let mut errors = Vec::new();
    check_node(&bad, "bad", &mut errors);
    check_no_nulls(&serde_json::json!({"a": null}), "doc", &mut errors);
    let text = errors.join("\n");
    for expected in [
        "bad.properties.untyped: no `type`",
        "bad.properties.list: array without `items`",
        "map-list key `type` is neither required nor defaulted",
        "sets `type` inside a logical junctor",
        "bad.properties.either.oneOf[1].properties.b: not in the structural schema",
        "doc.a: null",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

fn check_descriptions(v: &Value, at: &str, errors: &mut Vec<String>) {
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_descriptions(item, &format!("{at}[{i}]"), errors);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                let here = format!("{at}.{k}");
                if let ("description", Some(text)) = (k.as_str(), item.as_str()) {
                    // `kubectl explain` wraps text itself: a single line break inside a
                    // paragraph shows as a ragged break mid-sentence.
                    let without_paragraph_breaks = text.replace("\n\n", "");
                    if without_paragraph_breaks.contains('\n') {
                        errors.push(format!("{here}: line break inside a paragraph: {text:?}"));
                    }
                    if text.contains("\n\n\n") || text.trim() != text || text.contains("  ") {
                        errors.push(format!("{here}: stray whitespace: {text:?}"));
                    }
                } else {
                    check_descriptions(item, &here, errors);
                }
            }
        }
        _ => {}
    }
}

#[test]
fn descriptions_are_paragraphs_without_hard_wraps() {
    let mut errors = Vec::new();
    let mut described = 0;
    for crd in crds() {
        let name = crd["metadata"]["name"].as_str().unwrap_or("?").to_string();
        described += serde_json::to_string(&crd)
            .unwrap()
            .matches("\"description\"")
            .count();
        check_descriptions(&crd, &name, &mut errors);
    }
    assert!(
        described > 50,
        "expected documented schemas, found {described}"
    );
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}
