//! Dotenv parsing: `KEY=VALUE` lines, `export ` stripped, comments and blanks skipped,
//! surrounding single or double quotes removed.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use crate::{BackendError, SecretValue};

/// Parses dotenv text. Errors name the line number, never its contents.
pub fn parse(text: &str) -> Result<BTreeMap<String, SecretValue>, BackendError> {
    let mut out = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line
            .strip_prefix("export ")
            .map(str::trim_start)
            .unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err(BackendError::invalid_config(format!(
                "dotenv line {}: expected KEY=VALUE",
                i + 1
            )));
        };
        let key = key.trim();
        if key.is_empty() || key.chars().any(char::is_whitespace) {
            return Err(BackendError::invalid_config(format!(
                "dotenv line {}: invalid key",
                i + 1
            )));
        }
        let value = Zeroizing::new(unquote(value.trim()).to_string());
        out.insert(key.to_string(), SecretValue::new(value.as_bytes().to_vec()));
    }
    Ok(out)
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return &v[1..v.len() - 1];
        }
    }
    // An unquoted value may carry a trailing ` # comment`.
    match v.find(" #") {
        Some(pos) => v[..pos].trim_end(),
        None => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dotenv() {
        let text = r#"
# a comment
export DB_USER=shop
DB_PASSWORD="p@ss word"
  SINGLE='it''s # not a comment'
EMPTY=
WITH_EQ=a=b=c
TRAILING=value # comment
HASH_IN="x # y"
"#;
        let m = parse(text).unwrap();
        let get = |k: &str| m[k].as_str().unwrap().to_string();
        assert_eq!(get("DB_USER"), "shop");
        assert_eq!(get("DB_PASSWORD"), "p@ss word");
        assert_eq!(get("SINGLE"), "it''s # not a comment");
        assert_eq!(get("EMPTY"), "");
        assert_eq!(get("WITH_EQ"), "a=b=c");
        assert_eq!(get("TRAILING"), "value");
        assert_eq!(get("HASH_IN"), "x # y");
        assert_eq!(m.len(), 7);
    }

    #[test]
    fn errors_name_line_not_value() {
        let err = parse("OK=1\nCANARY-VALUE-NO-EQUALS\n").unwrap_err();
        assert!(err.message.contains("line 2"), "{err}");
        assert!(!err.message.contains("CANARY"), "{err}");
    }
}
