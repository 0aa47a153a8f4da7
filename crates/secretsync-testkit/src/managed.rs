//! Field ownership (`metadata.managedFields`, fieldsV1) and server-side apply.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::resources::{Cursor, ListType};
use crate::util::now_rfc3339;

/// A set of field paths in the fieldsV1 tree shape.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FieldSet {
    member: bool,
    children: BTreeMap<String, FieldSet>,
}

impl FieldSet {
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    pub fn insert(&mut self, path: &[String]) {
        match path.split_first() {
            None => self.member = true,
            Some((first, rest)) => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    pub fn node(&self, path: &[String]) -> Option<&FieldSet> {
        match path.split_first() {
            None => Some(self),
            Some((first, rest)) => self.children.get(first)?.node(rest),
        }
    }

    pub fn contains(&self, path: &[String]) -> bool {
        self.node(path).is_some_and(|n| n.member)
    }

    pub fn union_with(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (k, c) in &other.children {
            self.children.entry(k.clone()).or_default().union_with(c);
        }
    }

    pub fn minus(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (k, c) in &self.children {
            let d = match other.children.get(k) {
                Some(o) => c.minus(o),
                None => c.clone(),
            };
            if !d.is_empty() {
                out.children.insert(k.clone(), d);
            }
        }
        out
    }

    pub fn intersect(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (k, c) in &self.children {
            if let Some(o) = other.children.get(k) {
                let d = c.intersect(o);
                if !d.is_empty() {
                    out.children.insert(k.clone(), d);
                }
            }
        }
        out
    }

    pub fn remove(&mut self, path: &[String]) {
        match path.split_first() {
            None => self.member = false,
            Some((first, rest)) => {
                if let Some(c) = self.children.get_mut(first) {
                    c.remove(rest);
                    if c.is_empty() {
                        self.children.remove(first);
                    }
                }
            }
        }
    }

    /// All member paths.
    pub fn paths(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        self.walk(&mut Vec::new(), &mut out);
        out
    }

    fn walk(&self, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        if self.member {
            out.push(prefix.clone());
        }
        for (k, c) in &self.children {
            prefix.push(k.clone());
            c.walk(prefix, out);
            prefix.pop();
        }
    }

    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        if self.member && !self.children.is_empty() {
            m.insert(".".into(), json!({}));
        }
        for (k, c) in &self.children {
            m.insert(k.clone(), c.to_json());
        }
        Value::Object(m)
    }

    pub fn from_json(v: &Value) -> FieldSet {
        let mut out = FieldSet::default();
        match v.as_object() {
            Some(m) if !m.is_empty() => {
                for (k, c) in m {
                    if k == "." {
                        out.member = true;
                    } else {
                        out.children.insert(k.clone(), FieldSet::from_json(c));
                    }
                }
            }
            _ => out.member = true,
        }
        out
    }
}

/// Which part of an object a write may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The main resource; `strip_status` when status is a subresource.
    Main { strip_status: bool },
    /// The `status` subresource.
    Status,
}

impl Scope {
    pub fn subresource(&self) -> &'static str {
        match self {
            Scope::Main { .. } => "",
            Scope::Status => "status",
        }
    }
}

const IGNORED_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
];

fn key_element(item: &Value, keys: &[String]) -> Option<String> {
    let mut sorted: Vec<&String> = keys.iter().collect();
    sorted.sort();
    let mut m = Map::new();
    for k in sorted {
        if let Some(v) = item.get(k.as_str()) {
            m.insert(k.clone(), v.clone());
        }
    }
    if m.is_empty() {
        return None;
    }
    Some(format!("k:{}", Value::Object(m)))
}

fn collect(v: &Value, cur: Cursor<'_>, path: &mut Vec<String>, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() && !cur.atomic_map() => {
            for (k, c) in m {
                path.push(format!("f:{k}"));
                collect(c, cur.field(k), path, out);
                path.pop();
            }
        }
        Value::Array(items) => match cur.list_type() {
            ListType::Map(keys) => {
                let mut all_keyed = true;
                let mut elems = Vec::new();
                for it in items {
                    match key_element(it, &keys) {
                        Some(k) => elems.push((k, it)),
                        None => all_keyed = false,
                    }
                }
                if !all_keyed {
                    out.insert(path);
                    return;
                }
                for (k, it) in elems {
                    path.push(k);
                    out.insert(path);
                    collect_item_fields(it, cur.items(), path, out);
                    path.pop();
                }
            }
            ListType::Set => {
                for it in items {
                    path.push(format!("v:{it}"));
                    out.insert(path);
                    path.pop();
                }
            }
            ListType::Atomic => out.insert(path),
        },
        _ => out.insert(path),
    }
}

fn collect_item_fields(it: &Value, cur: Cursor<'_>, path: &mut Vec<String>, out: &mut FieldSet) {
    if let Value::Object(m) = it {
        for (k, c) in m {
            path.push(format!("f:{k}"));
            collect(c, cur.field(k), path, out);
            path.pop();
        }
    }
}

/// The field set of an object, restricted to what `scope` may own.
pub(crate) fn fields_of(obj: &Value, schema: &Value, scope: Scope) -> FieldSet {
    let mut out = FieldSet::default();
    let root = Cursor::new(Some(schema));
    if let Value::Object(m) = obj {
        for (k, c) in m {
            if k == "apiVersion" || k == "kind" {
                continue;
            }
            match scope {
                Scope::Status if k != "status" => continue,
                Scope::Main { strip_status: true } if k == "status" => continue,
                _ => {}
            }
            let mut path = vec![format!("f:{k}")];
            collect(c, root.field(k), &mut path, &mut out);
        }
    }
    for f in IGNORED_META {
        out.remove(&["f:metadata".to_owned(), format!("f:{f}")]);
    }
    if let Some(meta) = out.children.get("f:metadata")
        && meta.children.is_empty()
    {
        out.children.remove("f:metadata");
    }
    out
}

fn item_matches(item: &Value, key: &Value) -> bool {
    key.as_object()
        .is_some_and(|km| km.iter().all(|(k, v)| item.get(k) == Some(v)))
}

/// The value at a fieldsV1 path.
pub(crate) fn get_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for el in path {
        if el == "." {
            continue;
        }
        if let Some(f) = el.strip_prefix("f:") {
            cur = cur.get(f)?;
        } else if let Some(k) = el.strip_prefix("k:") {
            let key: Value = serde_json::from_str(k).ok()?;
            cur = cur.as_array()?.iter().find(|it| item_matches(it, &key))?;
        } else if let Some(v) = el.strip_prefix("v:") {
            let val: Value = serde_json::from_str(v).ok()?;
            cur = cur.as_array()?.iter().find(|it| **it == val)?;
        } else {
            return None;
        }
    }
    Some(cur)
}

fn get_at_mut<'a>(obj: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = obj;
    for el in path {
        if el == "." {
            continue;
        }
        if let Some(f) = el.strip_prefix("f:") {
            cur = cur.get_mut(f)?;
        } else if let Some(k) = el.strip_prefix("k:") {
            let key: Value = serde_json::from_str(k).ok()?;
            cur = cur
                .as_array_mut()?
                .iter_mut()
                .find(|it| item_matches(it, &key))?;
        } else {
            return None;
        }
    }
    Some(cur)
}

/// Remove the field at `path` (a trailing `.` means the list item itself).
pub(crate) fn remove_at(obj: &mut Value, path: &[String]) {
    let path: Vec<String> = match path.last() {
        Some(l) if l == "." => path[..path.len() - 1].to_vec(),
        _ => path.to_vec(),
    };
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let Some(p) = get_at_mut(obj, parent) else {
        return;
    };
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = p.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(k) = last.strip_prefix("k:") {
        if let (Ok(key), Some(a)) = (serde_json::from_str::<Value>(k), p.as_array_mut()) {
            a.retain(|it| !item_matches(it, &key));
        }
    } else if let Some(v) = last.strip_prefix("v:")
        && let (Ok(val), Some(a)) = (serde_json::from_str::<Value>(v), p.as_array_mut())
    {
        a.retain(|it| *it != val);
    }
}

/// `.spec.conditions[type="Ready"].status`, like the real server's conflict messages.
pub(crate) fn render_path(path: &[String]) -> String {
    let mut s = String::new();
    for el in path {
        if el == "." {
            continue;
        }
        if let Some(f) = el.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = el.strip_prefix("k:") {
            let parts: Vec<String> = serde_json::from_str::<Map<String, Value>>(k)
                .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default();
            s.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = el.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        }
    }
    s
}

/// One `managedFields` entry.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: String,
    pub fields: FieldSet,
}

impl Entry {
    fn same_identity(&self, manager: &str, operation: &str, subresource: &str) -> bool {
        self.manager == manager && self.operation == operation && self.subresource == subresource
    }
}

pub(crate) fn read_managed(obj: &Value) -> Vec<Entry> {
    let Some(arr) = obj
        .get("metadata")
        .and_then(|m| m.get("managedFields"))
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    arr.iter()
        .filter_map(|e| {
            let s = |k: &str| {
                e.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            let manager = s("manager");
            if manager.is_empty() && e.get("fieldsV1").is_none() {
                return None;
            }
            Some(Entry {
                manager,
                operation: s("operation"),
                api_version: s("apiVersion"),
                time: s("time"),
                subresource: s("subresource"),
                fields: e
                    .get("fieldsV1")
                    .map(FieldSet::from_json)
                    .unwrap_or_default(),
            })
        })
        .collect()
}

pub(crate) fn write_managed(obj: &mut Value, entries: &[Entry]) {
    let arr: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": e.fields.to_json(),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    let meta = crate::util::meta_mut(obj);
    if arr.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(arr));
    }
}

/// Record a non-apply write (`operation: Update`) by `manager`: the fields it changed become
/// its own and are taken away from every other manager; removed fields are forgotten.
pub(crate) fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    schema: &Value,
    manager: &str,
    scope: Scope,
    api_version: &str,
) {
    let mut entries = old.map(read_managed).unwrap_or_default();
    let new_set = fields_of(new, schema, scope);
    let old_set = old.map(|o| fields_of(o, schema, scope)).unwrap_or_default();
    let mut changed = FieldSet::default();
    for p in new_set.paths() {
        let before = old.and_then(|o| get_at(o, &p));
        let differs = if p
            .last()
            .is_some_and(|l| l.starts_with("k:") || l.starts_with("v:"))
        {
            before.is_none()
        } else {
            before != get_at(new, &p)
        };
        if differs {
            changed.insert(&p);
        }
    }
    let removed = old_set.minus(&new_set);
    for e in entries.iter_mut() {
        e.fields = e.fields.minus(&changed).minus(&removed);
    }
    let sub = scope.subresource();
    if !changed.is_empty() {
        match entries
            .iter_mut()
            .find(|e| e.same_identity(manager, "Update", sub))
        {
            Some(e) => {
                e.fields.union_with(&changed);
                e.time = now_rfc3339();
                e.api_version = api_version.to_owned();
            }
            None => entries.push(Entry {
                manager: manager.to_owned(),
                operation: "Update".into(),
                api_version: api_version.to_owned(),
                time: now_rfc3339(),
                subresource: sub.to_owned(),
                fields: changed,
            }),
        }
    }
    entries.retain(|e| !e.fields.is_empty());
    write_managed(new, &entries);
}

/// A field another manager owns with a different value.
#[derive(Debug, Clone)]
pub(crate) struct Conflict {
    pub manager: String,
    pub path: String,
}

fn merge_applied(live: &mut Value, applied: &Value, cur: Cursor<'_>) {
    match (live, applied) {
        (Value::Object(lm), Value::Object(am)) if !cur.atomic_map() => {
            for (k, av) in am {
                if av.is_null() {
                    lm.remove(k);
                } else if let Some(lv) = lm.get_mut(k) {
                    merge_applied(lv, av, cur.field(k));
                } else {
                    lm.insert(k.clone(), av.clone());
                }
            }
        }
        (Value::Array(la), Value::Array(aa)) => match cur.list_type() {
            ListType::Map(keys) => {
                for it in aa {
                    let key = key_element(it, &keys)
                        .and_then(|k| serde_json::from_str::<Value>(&k[2..]).ok());
                    match key.and_then(|key| la.iter_mut().find(|l| item_matches(l, &key))) {
                        Some(l) => merge_applied(l, it, cur.items()),
                        None => la.push(it.clone()),
                    }
                }
            }
            ListType::Set => {
                for it in aa {
                    if !la.contains(it) {
                        la.push(it.clone());
                    }
                }
            }
            ListType::Atomic => *la = aa.clone(),
        },
        (l, a) => *l = a.clone(),
    }
}

/// Restrict an applied configuration to what `scope` may write.
pub(crate) fn scoped_config(applied: &Value, scope: Scope) -> Value {
    let mut a = applied.clone();
    if let Some(m) = a.as_object_mut() {
        match scope {
            Scope::Status => {
                m.retain(|k, _| k == "status" || k == "apiVersion" || k == "kind");
            }
            Scope::Main { strip_status: true } => {
                m.remove("status");
            }
            Scope::Main { .. } => {}
        }
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
            meta.remove("resourceVersion");
        }
    }
    a
}

/// `[.., k:{"name":"a"}, f:name]`: the key field of a keyed list item (never removed alone).
fn is_key_field(path: &[String]) -> bool {
    let n = path.len();
    if n < 2 {
        return false;
    }
    match (
        path[n - 2].strip_prefix("k:"),
        path[n - 1].strip_prefix("f:"),
    ) {
        (Some(key), Some(field)) => {
            serde_json::from_str::<Map<String, Value>>(key).is_ok_and(|m| m.contains_key(field))
        }
        _ => false,
    }
}

/// Server-side apply of `applied` (already scoped) by `manager` onto `live` (or onto a
/// fresh object). Returns the merged object with updated `managedFields`.
pub(crate) fn apply(
    live: &Value,
    applied: &Value,
    schema: &Value,
    manager: &str,
    force: bool,
    scope: Scope,
    api_version: &str,
) -> Result<Value, Vec<Conflict>> {
    let sub = scope.subresource();
    let mut entries = read_managed(live);
    let new_set = fields_of(applied, schema, scope);
    let is_me = |e: &Entry| e.same_identity(manager, "Apply", sub);

    // Conflicts: fields owned by someone else that this apply would change.
    let mut conflicts = Vec::new();
    let mut conflicting = FieldSet::default();
    for e in entries.iter().filter(|e| !is_me(e)) {
        for p in new_set.intersect(&e.fields).paths() {
            if p.last()
                .is_some_and(|l| l.starts_with("k:") || l.starts_with("v:"))
            {
                continue;
            }
            if get_at(applied, &p) != get_at(live, &p) {
                conflicts.push(Conflict {
                    manager: e.manager.clone(),
                    path: render_path(&p),
                });
                conflicting.insert(&p);
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    for e in entries.iter_mut().filter(|e| !is_me(e)) {
        e.fields = e.fields.minus(&conflicting);
    }

    // Fields this manager applied before and no longer applies, owned by nobody else: removed.
    let previous = entries
        .iter()
        .find(|e| is_me(e))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let mut others = FieldSet::default();
    for e in entries.iter().filter(|e| !is_me(e)) {
        others.union_with(&e.fields);
    }
    let dropped = previous.minus(&new_set);
    let mut out = live.clone();
    let mut paths = dropped.paths();
    paths.sort_by_key(|p| p.len());
    for p in paths {
        if others.contains(&p) || is_key_field(&p) {
            continue;
        }
        if p.last().is_some_and(|l| l.starts_with("k:")) {
            // a keyed list item goes only when nobody else owns any part of it
            if others.node(&p).is_some() || new_set.node(&p).is_some() {
                continue;
            }
        }
        remove_at(&mut out, &p);
    }

    merge_applied(&mut out, applied, Cursor::new(Some(schema)));

    let now = now_rfc3339();
    match entries.iter_mut().find(|e| is_me(e)) {
        Some(e) => {
            e.fields = new_set;
            e.time = now;
            e.api_version = api_version.to_owned();
        }
        None => entries.push(Entry {
            manager: manager.to_owned(),
            operation: "Apply".into(),
            api_version: api_version.to_owned(),
            time: now,
            subresource: sub.to_owned(),
            fields: new_set,
        }),
    }
    entries.retain(|e| !e.fields.is_empty());
    write_managed(&mut out, &entries);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "metadata": crate::resources::metadata_schema(),
            "status": {"type": "object", "properties": {"conditions": {
                "type": "array", "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"], "items": {"type": "object"}}}}
        }})
    }

    const MAIN: Scope = Scope::Main {
        strip_status: false,
    };

    #[test]
    fn fieldsv1_roundtrip() {
        let obj = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "a", "labels": {"x": "1"}, "finalizers": ["f1"]},
            "data": {"k": "dg=="},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let fs = fields_of(&obj, &schema(), MAIN);
        let j = fs.to_json();
        assert_eq!(j["f:data"], json!({"f:k": {}}));
        assert_eq!(j["f:metadata"]["f:labels"], json!({"f:x": {}}));
        assert_eq!(j["f:metadata"]["f:finalizers"], json!({"v:\"f1\"": {}}));
        assert_eq!(
            j["f:status"]["f:conditions"]["k:{\"type\":\"Ready\"}"],
            json!({".": {}, "f:type": {}, "f:status": {}})
        );
        assert_eq!(FieldSet::from_json(&j), fs);
    }

    #[test]
    fn apply_removes_and_conflicts() {
        let live = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "a"}});
        let s = schema();
        let a1 = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "a"}, "data": {"x": "MQ==", "y": "Mg=="}});
        let o1 = apply(&live, &a1, &s, "m1", false, MAIN, "v1").unwrap();
        let a2 = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "a"}, "data": {"x": "MQ=="}});
        let o2 = apply(&o1, &a2, &s, "m1", false, MAIN, "v1").unwrap();
        assert_eq!(o2["data"], json!({"x": "MQ=="}));
        let a3 = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "a"}, "data": {"x": "Mw=="}});
        let err = apply(&o2, &a3, &s, "m2", false, MAIN, "v1").unwrap_err();
        assert_eq!(err[0].manager, "m1");
        assert_eq!(err[0].path, ".data.x");
        let o3 = apply(&o2, &a3, &s, "m2", true, MAIN, "v1").unwrap();
        assert_eq!(o3["data"]["x"], "Mw==");
        let mf = read_managed(&o3);
        assert_eq!(mf.len(), 1, "{mf:?}");
        assert_eq!(mf[0].manager, "m2");
    }
}
