//! JSON merge patch (RFC 7386), strategic merge patch and JSON patch (RFC 6902).

use serde_json::{Map, Value};

use crate::resources::{Cursor, ListType};

/// RFC 7386 merge patch.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(pm) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(tm) = target {
        for (k, pv) in pm {
            if pv.is_null() {
                tm.remove(k);
            } else {
                merge_patch(tm.entry(k.clone()).or_insert(Value::Null), pv);
            }
        }
    }
}

/// RFC 6902 JSON patch.
pub(crate) fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let p: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| format!("invalid JSON patch: {e}"))?;
    json_patch::patch(target, &p).map_err(|e| e.to_string())
}

/// Strategic merge patch: maps merge, lists whose schema declares keys merge by the first
/// key (the patch merge key), other lists are replaced. Supports `$patch: delete` on list
/// items and `$patch: replace` on maps; `$setElementOrder/…` and `$retainKeys` are ignored.
pub(crate) fn strategic_merge(target: &mut Value, patch: &Value, cur: Cursor<'_>) {
    let Value::Object(pm) = patch else {
        *target = patch.clone();
        return;
    };
    if pm.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut p = pm.clone();
        p.remove("$patch");
        *target = Value::Object(p);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(tm) = target else { return };
    for (k, pv) in pm {
        if k.starts_with('$') {
            continue;
        }
        if pv.is_null() {
            tm.remove(k);
            continue;
        }
        let child = cur.field(k);
        match (tm.get_mut(k), pv) {
            (Some(Value::Array(ta)), Value::Array(pa)) => match child.list_type() {
                ListType::Map(keys) => merge_list(ta, pa, &keys[0], child.items()),
                ListType::Set => {
                    for it in pa {
                        if !ta.contains(it) {
                            ta.push(it.clone());
                        }
                    }
                }
                ListType::Atomic => *ta = pa.clone(),
            },
            (Some(tv @ Value::Object(_)), Value::Object(_)) => strategic_merge(tv, pv, child),
            (_, pv) => {
                tm.insert(k.clone(), strip_directives(pv));
            }
        }
    }
}

fn merge_list(ta: &mut Vec<Value>, pa: &[Value], key: &str, item_cur: Cursor<'_>) {
    for it in pa {
        let Some(kv) = it.get(key) else {
            continue;
        };
        let pos = ta.iter().position(|t| t.get(key) == Some(kv));
        let delete = it.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                ta.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge(&mut ta[i], it, item_cur),
            (None, false) => ta.push(strip_directives(it)),
        }
    }
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_rfc7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
    }

    #[test]
    fn strategic_containers_by_name() {
        let schema = json!({"properties": {"containers": {"type": "array",
            "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
            "items": {"properties": {"env": {"type": "array", "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"]}}}}}});
        let mut t = json!({"containers": [
            {"name": "a", "image": "x", "env": [{"name": "E1", "value": "1"}]},
            {"name": "b", "image": "y"}]});
        strategic_merge(
            &mut t,
            &json!({"containers": [
                {"name": "a", "env": [{"name": "E2", "value": "2"}]},
                {"name": "b", "$patch": "delete"}]}),
            Cursor::new(Some(&schema)),
        );
        assert_eq!(
            t,
            json!({"containers": [{"name": "a", "image": "x",
                "env": [{"name": "E1", "value": "1"}, {"name": "E2", "value": "2"}]}]})
        );
    }

    #[test]
    fn json_patch_ops() {
        let mut t = json!({"a": [1, 2]});
        json_patch(&mut t, &json!([{"op": "add", "path": "/a/-", "value": 3}, {"op": "replace", "path": "/b", "value": 1}])).unwrap_err();
        let mut t2 = json!({"a": [1, 2]});
        json_patch(&mut t2, &json!([{"op": "add", "path": "/a/-", "value": 3}])).unwrap();
        assert_eq!(t2, json!({"a": [1, 2, 3]}));
        let _ = t;
    }
}
