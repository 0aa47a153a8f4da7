//! Parsing of YAML/JSON manifest streams into typed objects (used by `render` and tests).

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use serde::Deserialize;

use crate::{ClusterSecretBinding, ClusterSecretSource, SecretBinding, SecretSource};

/// One parsed manifest document.
#[derive(Debug, Clone)]
pub enum Manifest {
    /// A `SecretSource`.
    Source(Box<SecretSource>),
    /// A `SecretBinding`.
    Binding(Box<SecretBinding>),
    /// A `ClusterSecretSource`.
    ClusterSource(Box<ClusterSecretSource>),
    /// A `ClusterSecretBinding`.
    ClusterBinding(Box<ClusterSecretBinding>),
    /// A core `v1/Secret` (credentials for `secretRef`s).
    Secret(Box<Secret>),
    /// A core `v1/ConfigMap` (templates for `templateFrom`).
    ConfigMap(Box<ConfigMap>),
    /// A core `v1/Namespace` (its labels decide what cluster kinds apply to it).
    Namespace(Box<Namespace>),
    /// Any other kind; kept by kind/name so callers can report or skip it.
    Other {
        /// `apiVersion` of the document.
        api_version: String,
        /// `kind` of the document.
        kind: String,
    },
}

/// A document that could not be parsed. Never contains document contents (which may be
/// secret), only positions and schema errors.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// YAML syntax or structure error.
    #[error("document {index}: {message}")]
    Parse {
        /// 1-based document index in the stream.
        index: usize,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeMeta {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
}

/// Parses a multi-document YAML (or JSON) stream. Empty documents are skipped; a document
/// that is a `List` contributes its items.
pub fn parse_stream(text: &str) -> Result<Vec<Manifest>, ManifestError> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let index = i + 1;
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| ManifestError::Parse {
            index,
            message: redact_yaml_error(&e),
        })?;
        if value.is_null() {
            continue;
        }
        push_value(value, index, &mut out)?;
    }
    Ok(out)
}

fn push_value(
    value: serde_yaml::Value,
    index: usize,
    out: &mut Vec<Manifest>,
) -> Result<(), ManifestError> {
    let parse_err = |message: String| ManifestError::Parse { index, message };
    let meta: TypeMeta = serde_yaml::from_value(value.clone()).map_err(|e| {
        parse_err(format!(
            "not a Kubernetes object: {}",
            redact_yaml_error(&e)
        ))
    })?;
    let typed = |e: serde_yaml::Error| {
        parse_err(format!(
            "invalid {} {}: {}",
            meta.kind,
            object_name(&value),
            redact_yaml_error(&e)
        ))
    };
    match (meta.api_version.as_str(), meta.kind.as_str()) {
        ("secretsync.dev/v1alpha1", "SecretSource") => out.push(Manifest::Source(Box::new(
            serde_yaml::from_value(value.clone()).map_err(typed)?,
        ))),
        ("secretsync.dev/v1alpha1", "SecretBinding") => out.push(Manifest::Binding(Box::new(
            serde_yaml::from_value(value.clone()).map_err(typed)?,
        ))),
        ("secretsync.dev/v1alpha1", "ClusterSecretSource") => out.push(Manifest::ClusterSource(
            Box::new(serde_yaml::from_value(value.clone()).map_err(typed)?),
        )),
        ("secretsync.dev/v1alpha1", "ClusterSecretBinding") => out.push(Manifest::ClusterBinding(
            Box::new(serde_yaml::from_value(value.clone()).map_err(typed)?),
        )),
        ("v1", "Secret") => out.push(Manifest::Secret(Box::new(
            serde_yaml::from_value(value.clone()).map_err(typed)?,
        ))),
        ("v1", "ConfigMap") => out.push(Manifest::ConfigMap(Box::new(
            serde_yaml::from_value(value.clone()).map_err(typed)?,
        ))),
        ("v1", "Namespace") => out.push(Manifest::Namespace(Box::new(
            serde_yaml::from_value(value.clone()).map_err(typed)?,
        ))),
        ("v1", "List") => {
            if let Some(items) = value.get("items").and_then(|v| v.as_sequence()) {
                for item in items.clone() {
                    push_value(item, index, out)?;
                }
            }
        }
        _ => out.push(Manifest::Other {
            api_version: meta.api_version,
            kind: meta.kind,
        }),
    }
    Ok(())
}

fn object_name(value: &serde_yaml::Value) -> String {
    value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .map(|n| format!("{n:?}"))
        .unwrap_or_else(|| "(unnamed)".to_string())
}

/// serde_yaml errors can quote the offending scalar, which may be a secret (e.g. a bad
/// base64 `data` value). Keep only the structural part of the message.
fn redact_yaml_error(e: &serde_yaml::Error) -> String {
    let msg = e.to_string();
    // serde quotes offending values in backticks or as `invalid value: string "..."`.
    let mut out = String::with_capacity(msg.len());
    let mut in_quote: Option<char> = None;
    for c in msg.chars() {
        match in_quote {
            Some(q) if c == q => {
                out.push_str("<redacted>");
                out.push(c);
                in_quote = None;
            }
            Some(_) => {}
            None => {
                out.push(c);
                if c == '"' {
                    in_quote = Some('"');
                }
            }
        }
    }
    if let Some(loc) = e.location()
        && !out.contains("line")
    {
        out.push_str(&format!(" at line {} column {}", loc.line(), loc.column()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mixed_stream() {
        let text = r#"
apiVersion: secretsync.dev/v1alpha1
kind: SecretSource
metadata: {name: s, namespace: ns}
spec:
  file: {path: /x, format: Dotenv}
---
apiVersion: secretsync.dev/v1alpha1
kind: SecretBinding
metadata: {name: b, namespace: ns}
spec:
  sourceRef: {name: s}
  data: [{secretKey: a, remoteRef: {key: A}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: c}
data: {t: "{{ a }}"}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: sa}
---
"#;
        let docs = parse_stream(text).unwrap();
        assert_eq!(docs.len(), 4);
        assert!(matches!(&docs[0], Manifest::Source(s) if s.spec.file.is_some()));
        match &docs[1] {
            Manifest::Binding(b) => {
                assert_eq!(b.spec.refresh_interval, "1h");
                assert!(b.spec.rollout.restart);
                assert_eq!(b.spec.target.type_, "Opaque");
                assert_eq!(b.target_name(), "b");
            }
            other => panic!("unexpected {other:?}"),
        }
        // ConfigMaps are typed (templateFrom reads them); other kinds are kept by kind.
        assert!(
            matches!(&docs[2], Manifest::ConfigMap(c) if c.data.as_ref().is_some_and(|d| d["t"] == "{{ a }}"))
        );
        assert!(matches!(&docs[3], Manifest::Other { kind, .. } if kind == "ServiceAccount"));
    }

    #[test]
    fn errors_do_not_echo_values() {
        let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {k: \"not base64 CANARY-123\"}\n";
        let err = parse_stream(text).unwrap_err().to_string();
        assert!(!err.contains("CANARY-123"), "{err}");
    }
}
