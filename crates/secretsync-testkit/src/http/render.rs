//! How stored objects are sent: as they are (with the requested `apiVersion`), as
//! `PartialObjectMetadata`, or as a `Table` for `kubectl get`.

use serde_json::{Value, json};

use super::response::Format;
use crate::resources::ResourceDef;
use crate::store::partial_metadata;
use crate::util::{human_age, meta_str};

/// One object in the representation `fmt`.
pub(super) fn render(def: &ResourceDef, version: &str, obj: &Value, fmt: Format) -> Value {
    let mut o = obj.clone();
    o["apiVersion"] = json!(def.api_version(version));
    match fmt {
        Format::Metadata => partial_metadata(&o),
        Format::Table => table(def, version, &[&o], &Value::Null),
        Format::Full => o,
    }
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

pub(super) fn table(def: &ResourceDef, version: &str, items: &[&Value], meta: &Value) -> Value {
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
