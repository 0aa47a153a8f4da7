//! Key mapping: env variable names, Secret key sanitising, property extraction, globbing.

use std::collections::BTreeMap;

use crate::{BackendError, SecretValue};

/// Env variable name for a remote key: upper-cased, every char outside `[A-Za-z0-9_]`
/// turned into `_` (`database/url` → `DATABASE_URL`). The prefix is not transformed.
pub fn env_var_name(prefix: &str, key: &str) -> String {
    let mapped: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("{prefix}{mapped}")
}

/// Makes a valid Secret key: chars outside `[-._a-zA-Z0-9]` become `_`.
pub fn sanitize_secret_key(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Whether `name` is a valid Secret data key.
pub fn is_valid_secret_key(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        && name != "."
        && name != ".."
}

/// Parses a value as a JSON object, for `property` and `extract`.
fn as_object(
    value: &SecretValue,
    key: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, BackendError> {
    let not_object = || {
        BackendError::invalid_json(format!(
            "remote key {key:?} is not a JSON object, so property/extract cannot be used"
        ))
    };
    // The parse error text may quote the value, so it is dropped.
    match serde_json::from_slice::<serde_json::Value>(value.as_bytes()) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        _ => Err(not_object()),
    }
}

/// The bytes a JSON field contributes: strings as-is, everything else as JSON text.
fn json_field_bytes(v: &serde_json::Value) -> SecretValue {
    match v {
        serde_json::Value::String(s) => SecretValue::new(s.as_bytes().to_vec()),
        other => SecretValue::new(other.to_string().into_bytes()),
    }
}

/// Picks a top-level field of a JSON object value. Objects stay JSON.
pub fn extract_property(
    value: &SecretValue,
    key: &str,
    property: &str,
) -> Result<SecretValue, BackendError> {
    let map = as_object(value, key)?;
    map.get(property).map(json_field_bytes).ok_or_else(|| {
        BackendError::new(
            crate::Reason::SecretNotFound,
            format!("remote key {key:?} has no property {property:?}"),
        )
    })
}

/// Every top-level field of a JSON object value, for `dataFrom.extract`.
pub fn extract_all(
    value: &SecretValue,
    key: &str,
) -> Result<BTreeMap<String, SecretValue>, BackendError> {
    let map = as_object(value, key)?;
    Ok(map
        .iter()
        .map(|(k, v)| (k.clone(), json_field_bytes(v)))
        .collect())
}

/// Compiled `find` glob. `*` and `?` do not cross `/`; `**` does.
pub struct KeyGlob {
    matcher: globset::GlobMatcher,
    literal_prefix: String,
}

impl KeyGlob {
    /// Compiles a glob; the error names the pattern.
    pub fn new(pattern: &str) -> Result<Self, BackendError> {
        let glob = globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| {
                BackendError::invalid_config(format!("invalid find pattern {pattern:?}: {e}"))
            })?;
        let literal_prefix = pattern
            .chars()
            .take_while(|c| !matches!(c, '*' | '?' | '[' | '{' | '\\'))
            .collect();
        Ok(KeyGlob {
            matcher: glob.compile_matcher(),
            literal_prefix,
        })
    }

    /// Whether a remote key matches.
    pub fn is_match(&self, key: &str) -> bool {
        self.matcher.is_match(key)
    }

    /// The literal part before the first wildcard, usable as a server-side filter.
    pub fn literal_prefix(&self) -> &str {
        &self.literal_prefix
    }
}

/// Adds a value under the sanitised form of `name` into `out`, refusing two different
/// origins (remote keys, or `key:field` for extracted fields) that land on one Secret key.
pub fn insert_sanitized(
    out: &mut BTreeMap<String, (String, SecretValue)>,
    name: &str,
    origin: &str,
    value: SecretValue,
) -> Result<(), BackendError> {
    let name = sanitize_secret_key(name);
    if let Some((existing, _)) = out.get(&name)
        && existing != origin
    {
        return Err(BackendError::new(
            crate::Reason::KeyCollision,
            format!("remote keys {existing:?} and {origin:?} both map to Secret key {name:?}"),
        ));
    }
    out.insert(name, (origin.to_string(), value));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names() {
        assert_eq!(env_var_name("", "database/url"), "DATABASE_URL");
        assert_eq!(env_var_name("APP_", "db.pass-word"), "APP_DB_PASS_WORD");
        assert_eq!(env_var_name("app_", "x"), "app_X");
        assert_eq!(env_var_name("", "ünï"), "_N_");
    }

    #[test]
    fn sanitizing() {
        assert_eq!(sanitize_secret_key("db/creds:user"), "db_creds_user");
        assert_eq!(sanitize_secret_key("a-b.c_D9"), "a-b.c_D9");
        assert!(is_valid_secret_key("a-b.c_D9"));
        assert!(!is_valid_secret_key("a/b"));
        assert!(!is_valid_secret_key(""));
    }

    #[test]
    fn property_extraction() {
        let v = SecretValue::from(r#"{"user":"u","port":5432,"nested":{"a":1},"flag":true}"#);
        assert_eq!(
            extract_property(&v, "k", "user").unwrap().as_str(),
            Some("u")
        );
        assert_eq!(
            extract_property(&v, "k", "port").unwrap().as_str(),
            Some("5432")
        );
        assert_eq!(
            extract_property(&v, "k", "nested").unwrap().as_str(),
            Some(r#"{"a":1}"#)
        );
        let missing = extract_property(&v, "k", "nope").unwrap_err();
        assert_eq!(missing.reason, crate::Reason::SecretNotFound);
        let not_json = SecretValue::from("plain CANARY");
        let err = extract_property(&not_json, "k", "user").unwrap_err();
        assert_eq!(err.reason, crate::Reason::InvalidJson);
        assert!(!err.to_string().contains("CANARY"));
        let array = SecretValue::from("[1,2]");
        assert_eq!(
            extract_all(&array, "k").unwrap_err().reason,
            crate::Reason::InvalidJson
        );
        let all = extract_all(&v, "k").unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(all["flag"].as_str(), Some("true"));
    }

    #[test]
    fn globs() {
        let g = KeyGlob::new("db_*").unwrap();
        assert!(g.is_match("db_user"));
        assert!(!g.is_match("db/user"));
        assert!(!g.is_match("xdb_user"));
        assert_eq!(g.literal_prefix(), "db_");
        let nested = KeyGlob::new("apps/*/password").unwrap();
        assert!(nested.is_match("apps/shop/password"));
        assert!(!nested.is_match("apps/shop/x/password"));
        let deep = KeyGlob::new("apps/**").unwrap();
        assert!(deep.is_match("apps/shop/x/password"));
        assert_eq!(deep.literal_prefix(), "apps/");
        let class = KeyGlob::new("key[12]").unwrap();
        assert!(class.is_match("key1") && !class.is_match("key3"));
        assert!(KeyGlob::new("a[").is_err());
    }

    #[test]
    fn collisions() {
        let mut out = BTreeMap::new();
        insert_sanitized(&mut out, "db/user", "db/user", SecretValue::from("a")).unwrap();
        insert_sanitized(&mut out, "db/pass", "db/pass", SecretValue::from("b")).unwrap();
        // The same origin twice is not a collision.
        insert_sanitized(&mut out, "db/pass", "db/pass", SecretValue::from("b")).unwrap();
        let err =
            insert_sanitized(&mut out, "db:user", "db:user", SecretValue::from("c")).unwrap_err();
        assert_eq!(err.reason, crate::Reason::KeyCollision, "{err}");
        assert!(out.contains_key("db_user") && out.contains_key("db_pass"));
    }
}
