//! The template language of `spec.target.template`: minijinja with its built-in filters,
//! plus the functions templates brought over from External Secrets Operator rely on.
//!
//! | name | what it does |
//! |---|---|
//! | `b64encode` | standard base64 (with padding) of a string's or a binary value's bytes |
//! | `b64decode` | decodes standard base64 (padding optional, whitespace skipped) |
//! | `fromjson` | parses JSON text into maps, lists and scalars |
//! | `tojson` | minijinja's: JSON text (`<`, `>`, `&`, `'` written as `\u` escapes) |
//! | `sha256` | lowercase hex SHA-256 of a string's or a binary value's bytes |
//! | `trim`, `upper`, `lower`, `indent` | minijinja's built-ins |
//!
//! Every one works as a filter (`{{ password | b64encode }}`) and as a function
//! (`{{ b64encode(password) }}`).
//!
//! Values are bytes. A UTF-8 value is a string variable; any other value is a binary one,
//! which `b64encode`, `sha256` and `length` accept and which can never be written into the
//! output as it is: the template fails with `InvalidTemplate` instead of writing mangled
//! bytes.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use minijinja::value::ValueKind;
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior, Value};
use sha2::{Digest, Sha256};

use secretsync_api::TemplateMetadata;

use crate::resolve::SecretData;
use crate::{BackendError, Reason};

/// Why a template function refused its input. The text names the function and the problem,
/// never the input, so it may reach status and events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FunctionError {
    /// `b64decode` of something that is not base64.
    #[error("b64decode: the input is not valid base64")]
    NotBase64,
    /// `fromjson` of something that is not JSON.
    #[error("fromjson: the input is not valid JSON")]
    NotJson,
    /// A function that needs text or bytes got something else.
    #[error("{0}: the input must be a string or a binary value")]
    NotBytes(&'static str),
    /// A function that needs text got a binary value.
    #[error("{0}: the input must be a string")]
    NotText(&'static str),
    /// A binary value was about to be written into the output.
    #[error(
        "a binary (non-UTF-8) value cannot be written into a template; pass it through b64encode"
    )]
    Binary,
}

impl From<FunctionError> for Error {
    fn from(e: FunctionError) -> Self {
        Error::new(ErrorKind::InvalidOperation, e.to_string()).with_source(e)
    }
}

fn bytes_of<'a>(name: &'static str, value: &'a Value) -> Result<&'a [u8], Error> {
    match value.kind() {
        ValueKind::String | ValueKind::Bytes => value
            .as_bytes()
            .ok_or_else(|| FunctionError::NotBytes(name).into()),
        _ => Err(FunctionError::NotBytes(name).into()),
    }
}

fn text_of<'a>(name: &'static str, value: &'a Value) -> Result<&'a str, Error> {
    match value.kind() {
        ValueKind::String => value
            .as_str()
            .ok_or_else(|| FunctionError::NotText(name).into()),
        _ => Err(FunctionError::NotText(name).into()),
    }
}

/// `b64encode`: standard base64 with padding.
fn b64encode(value: &Value) -> Result<String, Error> {
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes_of("b64encode", value)?))
}

/// `b64decode`: a string when the result is UTF-8, else a binary value.
fn b64decode(value: &Value) -> Result<Value, Error> {
    let decoded = crate::decode::base64_standard(text_of("b64decode", value)?.as_bytes())
        .ok_or(FunctionError::NotBase64)?;
    Ok(match std::str::from_utf8(&decoded) {
        Ok(s) => Value::from(s),
        Err(_) => Value::from_bytes(decoded.to_vec()),
    })
}

/// `fromjson`: JSON text to a value. The parser's message is dropped: it may quote input.
fn fromjson(value: &Value) -> Result<Value, Error> {
    let parsed: serde_json::Value =
        serde_json::from_str(text_of("fromjson", value)?).map_err(|_| FunctionError::NotJson)?;
    Ok(Value::from_serialize(&parsed))
}

/// `sha256`: lowercase hex digest of the bytes.
fn sha256(value: &Value) -> Result<String, Error> {
    Ok(hex::encode(Sha256::digest(bytes_of("sha256", value)?)))
}

/// The environment every binding template renders in.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // The output is a Secret value, not HTML: no auto-escaping, whatever a key is named.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_formatter(|out, state, value| {
        if value.kind() == ValueKind::Bytes && value.as_str().is_none() {
            return Err(FunctionError::Binary.into());
        }
        minijinja::escape_formatter(out, state, value)
    });
    env.add_filter("b64encode", b64encode);
    env.add_filter("b64decode", b64decode);
    env.add_filter("fromjson", fromjson);
    env.add_filter("sha256", sha256);
    // Every name also as a function (minijinja's built-ins are filters only), so both
    // spellings work for each of them.
    env.add_function("b64encode", b64encode);
    env.add_function("b64decode", b64decode);
    env.add_function("fromjson", fromjson);
    env.add_function("sha256", sha256);
    env.add_function("tojson", minijinja::filters::tojson);
    env.add_function("trim", minijinja::filters::trim);
    env.add_function("upper", minijinja::filters::upper);
    env.add_function("lower", minijinja::filters::lower);
    env.add_function("indent", minijinja::filters::indent);
    env
}

/// Renders templates over one binding's resolved keys.
pub struct Templates {
    env: Environment<'static>,
    vars: Value,
    /// Whether a string input already holds U+FFFD (see [`Templates::render`]).
    inputs_have_replacement: bool,
}

impl Templates {
    /// Templates whose variables are `data`'s keys. minijinja keeps its own copies of the
    /// values, which cannot be zeroed; they live only as long as this value.
    pub fn new(data: &SecretData) -> Self {
        let vars: Value = data
            .iter()
            .map(|(k, v)| {
                let value = match v.as_str() {
                    Some(s) => Value::from(s),
                    None => Value::from_bytes(v.as_bytes().to_vec()),
                };
                (k.as_str(), value)
            })
            .collect();
        let inputs_have_replacement = data.values().any(|v| {
            v.as_str()
                .is_some_and(|s| s.contains(char::REPLACEMENT_CHARACTER))
        });
        Templates {
            env: environment(),
            vars,
            inputs_have_replacement,
        }
    }

    /// Renders `src`; errors name `field` (e.g. `spec.target.template.data["tls.crt"]`) and
    /// never a value.
    pub fn render(&self, field: &str, src: &str) -> Result<String, BackendError> {
        let fail = |detail: String| {
            BackendError::new(Reason::InvalidTemplate, format!("{field}: {detail}"))
        };
        let out = self
            .env
            .render_str(src, &self.vars)
            .map_err(|e| fail(describe(&e)))?;
        // Concatenation and most filters turn a binary value into text with U+FFFD for every
        // byte that is not UTF-8, without an error. A U+FFFD that neither the template nor a
        // string input brought in came from binary data being mangled.
        if out.contains(char::REPLACEMENT_CHARACTER)
            && !src.contains(char::REPLACEMENT_CHARACTER)
            && !self.inputs_have_replacement
        {
            return Err(fail(FunctionError::Binary.to_string()));
        }
        Ok(out)
    }
}

/// Labels and annotations rendered from `spec.target.template.metadata`. They end up in
/// the Secret's metadata, which is not secret, but they are rendered from values, so
/// `Debug` shows only their keys.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TemplatedMetadata {
    /// Label key → rendered value.
    pub labels: BTreeMap<String, String>,
    /// Annotation key → rendered value.
    pub annotations: BTreeMap<String, String>,
}

impl fmt::Debug for TemplatedMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TemplatedMetadata")
            .field("labels", &self.labels.keys().collect::<Vec<_>>())
            .field("annotations", &self.annotations.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Templates {
    /// Renders `spec.target.template.metadata`. Keys must be valid label or annotation keys
    /// (`InvalidConfig`), rendered label values valid label values (`InvalidTemplate`).
    pub fn render_metadata(
        &self,
        spec: &TemplateMetadata,
    ) -> Result<TemplatedMetadata, BackendError> {
        let mut out = TemplatedMetadata::default();
        for (kind, templates, into) in [
            ("labels", &spec.labels, &mut out.labels),
            ("annotations", &spec.annotations, &mut out.annotations),
        ] {
            for (key, src) in templates {
                let field = format!("spec.target.template.metadata.{kind}[{key:?}]");
                if let Err(why) = check_qualified_name(key) {
                    return Err(BackendError::invalid_config(format!(
                        "spec.target.template.metadata.{kind}: key {key:?} is not valid: {why}"
                    )));
                }
                let value = self.render(&field, src)?;
                if kind == "labels" && !is_label_value(&value) {
                    return Err(BackendError::new(
                        Reason::InvalidTemplate,
                        format!(
                            "{field}: renders to an invalid label value (at most 63 characters of alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric, or empty)"
                        ),
                    ));
                }
                into.insert(key.clone(), value);
            }
        }
        Ok(out)
    }
}

/// Kubernetes' "qualified name" (label and annotation keys): an optional DNS subdomain
/// prefix and `/`, then a name of at most 63 characters.
fn check_qualified_name(key: &str) -> Result<(), &'static str> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if p.is_empty() || p.len() > 253 || !p.split('.').all(label_ok) {
            return Err(
                "the prefix must be a DNS subdomain (lowercase alphanumerics, '-' and '.')",
            );
        }
    }
    if name.is_empty() || !is_label_value(name) {
        return Err(
            "the name must be at most 63 characters of alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric",
        );
    }
    Ok(())
}

/// A valid label value: empty, or at most 63 characters of `[-_.A-Za-z0-9]` starting and
/// ending alphanumeric.
fn is_label_value(v: &str) -> bool {
    let edge_ok = |b: Option<u8>| b.is_none_or(|b| b.is_ascii_alphanumeric());
    v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && edge_ok(v.bytes().next())
        && edge_ok(v.bytes().last())
}

/// A template error description that cannot contain values: our functions' own messages,
/// and minijinja's detail text only for kinds whose detail is about the template itself
/// (syntax, names).
fn describe(e: &Error) -> String {
    use minijinja::ErrorKind as K;
    let line = e.line().map(|l| format!(" (line {l})")).unwrap_or_default();
    if let Some(f) = function_error(e) {
        return format!("{f}{line}");
    }
    let detail = match e.kind() {
        K::SyntaxError
        | K::UndefinedError
        | K::UnknownFilter
        | K::UnknownFunction
        | K::UnknownTest
        | K::UnknownMethod
        | K::TooManyArguments
        | K::MissingArgument => e.detail().map(|d| format!(": {d}")).unwrap_or_default(),
        _ => String::new(),
    };
    format!("{}{detail}{line}", e.kind())
}

/// The [`FunctionError`] somewhere in `e`'s source chain.
fn function_error(e: &Error) -> Option<FunctionError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(f) = s.downcast_ref::<FunctionError>() {
            return Some(*f);
        }
        source = s.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretValue;

    fn data(pairs: &[(&str, &[u8])]) -> SecretData {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), SecretValue::new(v.to_vec())))
            .collect()
    }

    fn render(d: &SecretData, src: &str) -> Result<String, BackendError> {
        Templates::new(d).render("spec.target.template.data[\"out\"]", src)
    }

    fn ok(d: &SecretData, src: &str) -> String {
        render(d, src).unwrap_or_else(|e| panic!("{src}: {e}"))
    }

    /// The error, checked to be an `InvalidTemplate` naming the key and holding no canary.
    fn err(d: &SecretData, src: &str) -> String {
        let e = render(d, src).expect_err(src);
        assert_eq!(e.reason, Reason::InvalidTemplate, "{e}");
        let all = format!("{e} {e:?}");
        assert!(all.contains("spec.target.template.data[\"out\"]"), "{all}");
        assert!(!all.contains("CANARY"), "{all}");
        e.message
    }

    #[test]
    fn b64encode_of_text_and_binary() {
        let d = data(&[("user", b"shop"), ("bin", &[0xff, 0x00, 0xfe])]);
        assert_eq!(ok(&d, "{{ user | b64encode }}"), "c2hvcA==");
        assert_eq!(ok(&d, "{{ b64encode(user) }}"), "c2hvcA==");
        assert_eq!(ok(&d, "{{ bin | b64encode }}"), "/wD+");
        assert_eq!(
            ok(&d, "{{ (user ~ ':' ~ 'pw') | b64encode }}"),
            "c2hvcDpwdw=="
        );
        let m = err(&d, "{{ 42 | b64encode }}");
        assert!(m.contains("b64encode: the input must be a string"), "{m}");
    }

    #[test]
    fn b64decode_round_trips_and_refuses_garbage() {
        let d = data(&[
            ("enc", b"c2hvcA=="),
            ("nopad", b"c2hvcA"),
            ("wrapped", b"c2hv\ncA==\n"),
            ("binenc", b"/wD+"),
            ("junk", b"CANARY not base64!"),
        ]);
        assert_eq!(ok(&d, "{{ enc | b64decode }}"), "shop");
        assert_eq!(ok(&d, "{{ nopad | b64decode }}"), "shop");
        assert_eq!(ok(&d, "{{ wrapped | b64decode }}"), "shop");
        assert_eq!(ok(&d, "{{ enc | b64decode | b64encode }}"), "c2hvcA==");
        // Binary results stay binary: usable through b64encode, not as text.
        assert_eq!(ok(&d, "{{ binenc | b64decode | b64encode }}"), "/wD+");
        let m = err(&d, "{{ binenc | b64decode }}");
        assert!(m.contains("pass it through b64encode"), "{m}");
        let m = err(&d, "{{ junk | b64decode }}");
        assert!(
            m.contains("b64decode: the input is not valid base64"),
            "{m}"
        );
        assert!(m.contains("line 1"), "{m}");
    }

    #[test]
    fn fromjson_and_tojson() {
        let d = data(&[
            ("cfg", br#"{"user":"shop","port":5432,"tags":["a","b"]}"#),
            ("pw", b"p&ss\"w"),
            ("junk", b"{CANARY"),
        ]);
        assert_eq!(ok(&d, "{{ (cfg | fromjson).user }}"), "shop");
        assert_eq!(ok(&d, "{{ fromjson(cfg).port + 1 }}"), "5433");
        assert_eq!(ok(&d, "{{ (cfg | fromjson).tags | join(',') }}"), "a,b");
        // Maps come out with sorted keys, so the output is stable.
        assert_eq!(
            ok(&d, r#"{{ {"z": pw, "a": 1} | tojson }}"#),
            r#"{"a":1,"z":"p\u0026ss\"w"}"#
        );
        assert_eq!(
            ok(&d, "{{ tojson(cfg | fromjson) }}"),
            r#"{"port":5432,"tags":["a","b"],"user":"shop"}"#
        );
        assert_eq!(
            ok(&d, "{{ {'a': 1} | tojson(indent=2) }}"),
            "{\n  \"a\": 1\n}"
        );
        // A document built from a map literal with a variable key (a .dockerconfigjson).
        let d2 = data(&[("server", b"r.example"), ("u", b"ci"), ("p", b"pw")]);
        assert_eq!(
            ok(
                &d2,
                r#"{{ {"auths": {server: {"auth": (u ~ ":" ~ p) | b64encode}}} | tojson }}"#
            ),
            r#"{"auths":{"r.example":{"auth":"Y2k6cHc="}}}"#
        );
        let m = err(&d, "{{ junk | fromjson }}");
        assert!(m.contains("fromjson: the input is not valid JSON"), "{m}");
        let m = err(&d, "{{ 3 | fromjson }}");
        assert!(m.contains("fromjson: the input must be a string"), "{m}");
    }

    #[test]
    fn sha256_in_hex() {
        let d = data(&[("v", b"abc"), ("bin", &[0xff])]);
        assert_eq!(
            ok(&d, "{{ v | sha256 }}"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(ok(&d, "{{ sha256(v) }}"), ok(&d, "{{ v | sha256 }}"));
        assert_eq!(
            ok(&d, "{{ bin | sha256 }}"),
            "a8100ae6aa1940d0b663bb31cd466142ebbdbd5187131b92d93818987832eb89"
        );
        err(&d, "{{ none | sha256 }}");
    }

    #[test]
    fn trim_upper_lower_indent() {
        let d = data(&[
            ("v", b"  Shop \n"),
            ("pem", b"-----BEGIN X-----\nAAA\n-----END X-----\n"),
        ]);
        assert_eq!(ok(&d, "{{ v | trim }}"), "Shop");
        assert_eq!(ok(&d, "{{ trim(v) | upper }}"), "SHOP");
        assert_eq!(ok(&d, "{{ lower(v | trim) }}"), "shop");
        // minijinja's indent: the first line stays, the trailing newline goes; `first=true`
        // indents every line like sprig's `indent`.
        assert_eq!(
            ok(&d, "{{ pem | indent(2) }}"),
            "-----BEGIN X-----\n  AAA\n  -----END X-----"
        );
        assert_eq!(
            ok(&d, "{{ indent(pem, 2, true) }}"),
            "  -----BEGIN X-----\n  AAA\n  -----END X-----"
        );
    }

    #[test]
    fn binary_values_never_reach_the_output() {
        let d = data(&[("bin", &[b'C', b'A', 0xff, 0xfe]), ("s", b"x")]);
        for src in [
            "{{ bin }}",
            "{{ bin ~ s }}",
            "{{ s ~ bin }}",
            "{{ bin | upper }}",
            "{{ bin | string }}",
            "{% for c in [bin] %}{{ c }}{% endfor %}",
        ] {
            let m = err(&d, src);
            assert!(m.contains("pass it through b64encode"), "{src}: {m}");
        }
        assert_eq!(ok(&d, "{{ bin | length }}"), "4");
        // A replacement character that is really in the input or the template is fine.
        let d = data(&[("s", "a\u{fffd}b".as_bytes())]);
        assert_eq!(ok(&d, "{{ s }}"), "a\u{fffd}b");
        assert_eq!(ok(&data(&[]), "\u{fffd}"), "\u{fffd}");
    }

    fn meta(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> TemplateMetadata {
        let m = |p: &[(&str, &str)]| {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        TemplateMetadata {
            labels: m(labels),
            annotations: m(annotations),
        }
    }

    #[test]
    fn metadata_is_rendered_and_checked() {
        let d = data(&[("version", b"v42"), ("pw", b"CANARY pw!")]);
        let t = Templates::new(&d);
        let out = t
            .render_metadata(&meta(
                &[
                    ("app.kubernetes.io/version", "{{ version }}"),
                    ("empty", ""),
                ],
                &[
                    ("shop.example/pw-sha256", "{{ pw | sha256 }}"),
                    ("note", "{{ pw | length }} bytes"),
                ],
            ))
            .unwrap();
        assert_eq!(out.labels["app.kubernetes.io/version"], "v42");
        assert_eq!(out.labels["empty"], "");
        assert_eq!(out.annotations["note"], "10 bytes");
        assert_eq!(out.annotations["shop.example/pw-sha256"].len(), 64);
        let dbg = format!("{out:?}");
        assert!(dbg.contains("note") && !dbg.contains("10 bytes"), "{dbg}");

        // A label value that is not one: InvalidTemplate naming the label, not the value.
        let e = t
            .render_metadata(&meta(&[("pw", "{{ pw }}")], &[]))
            .unwrap_err();
        assert_eq!(e.reason, Reason::InvalidTemplate);
        assert!(
            e.message
                .contains(r#"spec.target.template.metadata.labels["pw"]"#),
            "{e}"
        );
        assert!(!e.message.contains("CANARY"), "{e}");
        // Annotation values may be anything.
        assert!(t.render_metadata(&meta(&[], &[("a", "{{ pw }}")])).is_ok());
        // Keys are configuration: InvalidConfig naming them.
        for bad in [
            "a b",
            "Upper.Example/x",
            "/x",
            "x/",
            "-x",
            "a/b/c",
            &"k".repeat(64),
        ] {
            let e = t.render_metadata(&meta(&[(bad, "v")], &[])).unwrap_err();
            assert_eq!(e.reason, Reason::InvalidConfig, "{bad}");
            assert!(e.message.contains("metadata.labels"), "{e}");
            let e = t.render_metadata(&meta(&[], &[(bad, "v")])).unwrap_err();
            assert!(e.message.contains("metadata.annotations"), "{e}");
        }
        // Template errors in metadata name the field too.
        let e = t
            .render_metadata(&meta(&[], &[("a", "{{ nope }}")]))
            .unwrap_err();
        assert!(e.message.contains(r#"metadata.annotations["a"]"#), "{e}");
    }

    #[test]
    fn label_values() {
        for ok in ["", "a", "a-b_c.d", "A1", &"x".repeat(63)] {
            assert!(is_label_value(ok), "{ok}");
        }
        for bad in ["-a", "a-", "a b", "ä", &"x".repeat(64)] {
            assert!(!is_label_value(bad), "{bad}");
        }
    }

    #[test]
    fn other_errors_hide_values() {
        let d = data(&[("password", b"CANARY-x")]);
        err(&d, "{{ password | int }}");
        err(&d, "{{ password + 1 }}");
        err(&d, "{{ password | b64decode }}");
        err(&d, "{{ password | fromjson }}");
        let m = err(&d, "{{ nope }}");
        assert!(m.contains("undefined"), "{m}");
        let m = err(&d, "{% if %}");
        assert!(m.contains("syntax"), "{m}");
    }
}
