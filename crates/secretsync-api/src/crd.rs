//! CRD generation: the YAML that `secretsync crds` prints and `crds/` holds.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition, JSONSchemaProps,
    JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

use crate::{ClusterSecretBinding, ClusterSecretSource, SecretBinding, SecretSource};

/// Error rendering the CRDs.
#[derive(Debug, thiserror::Error)]
#[error("rendering CRD YAML: {0}")]
pub struct CrdError(#[from] serde_yaml::Error);

/// The CRDs as the API server receives them, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        SecretSource::crd(),
        SecretBinding::crd(),
        ClusterSecretSource::crd(),
        ClusterSecretBinding::crd(),
    ];
    for crd in &mut crds {
        let columns = printer_columns(&crd.spec.names.kind);
        for version in &mut crd.spec.versions {
            version.additional_printer_columns = Some(columns.clone());
            if let Some(schema) = version
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
            {
                reflow_schema(schema);
            }
        }
    }
    crds
}

/// `kubectl get` columns of each kind, in one table so the kinds that show the same
/// thing show it the same way.
fn printer_columns(kind: &str) -> Vec<CustomResourceColumnDefinition> {
    const READY: &str = ".status.conditions[?(@.type==\"Ready\")].status";
    const REASON: &str = ".status.conditions[?(@.type==\"Ready\")].reason";
    const AGE: &str = ".metadata.creationTimestamp";
    let columns: &[(&str, &str, &str)] = match kind {
        "SecretSource" | "ClusterSecretSource" => &[
            ("Backend", "string", ".status.backend"),
            ("Ready", "string", READY),
            ("Age", "date", AGE),
        ],
        "SecretBinding" => &[
            ("Source", "string", ".spec.sourceRef.name"),
            ("Target", "string", ".spec.target.name"),
            ("Ready", "string", READY),
            ("Reason", "string", REASON),
            ("Last Sync", "date", ".status.lastSyncTime"),
            ("Age", "date", AGE),
        ],
        "ClusterSecretBinding" => &[
            ("Source", "string", ".spec.bindingSpec.sourceRef.name"),
            ("Namespaces", "integer", ".status.provisionedCount"),
            ("Ready", "string", READY),
            ("Reason", "string", REASON),
            ("Age", "date", AGE),
        ],
        _ => &[],
    };
    columns
        .iter()
        .map(|(name, type_, path)| CustomResourceColumnDefinition {
            name: (*name).to_string(),
            type_: (*type_).to_string(),
            json_path: (*path).to_string(),
            ..Default::default()
        })
        .collect()
}

/// File name in `crds/` and the YAML of each CRD, in a stable order.
pub fn crd_files() -> Result<Vec<(&'static str, String)>, CrdError> {
    let names = [
        "secretsync.dev_secretsources.yaml",
        "secretsync.dev_secretbindings.yaml",
        "secretsync.dev_clustersecretsources.yaml",
        "secretsync.dev_clustersecretbindings.yaml",
    ];
    names
        .into_iter()
        .zip(crds())
        .map(|(name, crd)| Ok((name, serde_yaml::to_string(&crd)?)))
        .collect()
}

/// Every CRD as one multi-document YAML stream.
pub fn crds_yaml() -> Result<String, CrdError> {
    let mut out = String::new();
    for (_, doc) in crd_files()? {
        out.push_str("---\n");
        out.push_str(&doc);
    }
    Ok(out)
}

/// Doc comments arrive wrapped at source-code width; `kubectl explain` wraps on its own, so
/// a line break inside a sentence shows as a ragged break. Lines of one paragraph are
/// joined with single spaces; paragraphs stay separated by one blank line.
pub fn reflow(text: &str) -> String {
    let mut paragraphs: Vec<String> = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.is_empty() {
            if !current.is_empty() {
                paragraphs.push(current.join(" "));
                current.clear();
            }
        } else {
            current.extend(words);
        }
    }
    if !current.is_empty() {
        paragraphs.push(current.join(" "));
    }
    paragraphs.join("\n\n")
}

fn reflow_schema(s: &mut JSONSchemaProps) {
    if let Some(d) = s.description.as_mut() {
        *d = reflow(d);
    }
    let maps = [
        s.properties.as_mut(),
        s.pattern_properties.as_mut(),
        s.definitions.as_mut(),
    ];
    for map in maps.into_iter().flatten() {
        map.values_mut().for_each(reflow_schema);
    }
    let lists = [s.all_of.as_mut(), s.any_of.as_mut(), s.one_of.as_mut()];
    for list in lists.into_iter().flatten() {
        list.iter_mut().for_each(reflow_schema);
    }
    if let Some(not) = s.not.as_mut() {
        reflow_schema(not);
    }
    match s.items.as_mut() {
        Some(JSONSchemaPropsOrArray::Schema(one)) => reflow_schema(one),
        Some(JSONSchemaPropsOrArray::Schemas(many)) => many.iter_mut().for_each(reflow_schema),
        None => {}
    }
    for extra in [
        s.additional_properties.as_mut(),
        s.additional_items.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        if let JSONSchemaPropsOrBool::Schema(one) = extra {
            reflow_schema(one);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflow_joins_lines_and_keeps_paragraphs() {
        assert_eq!(reflow("one\ntwo  \n  three"), "one two three");
        assert_eq!(reflow("changed.  If not"), "changed. If not");
        assert_eq!(reflow("a\nb\n\n\nc\n"), "a b\n\nc");
        assert_eq!(reflow("single"), "single");
        assert_eq!(reflow(""), "");
    }

    /// The CEL messages of a CRD's `spec` and of its root.
    fn rule_messages(kind: &str) -> Vec<String> {
        let crd = crds()
            .into_iter()
            .find(|c| c.spec.names.kind == kind)
            .expect("known kind");
        let schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.clone())
            .expect("schema");
        let spec = schema.properties.as_ref().expect("properties")["spec"].clone();
        [
            schema.x_kubernetes_validations,
            spec.x_kubernetes_validations,
        ]
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|r| r.message)
        .collect()
    }

    // Specs that flatten other structs (a ClusterSecretSource's backend part) get their
    // rules only partly from them: pin the rules every kind must carry.
    #[test]
    fn every_kind_carries_its_cel_rules() {
        let has = |kind: &str, part: &str| {
            let messages = rule_messages(kind);
            assert!(
                messages.iter().any(|m| m.contains(part)),
                "{kind}: no rule mentioning {part:?} in {messages:#?}"
            );
        };
        let lacks = |kind: &str, part: &str| {
            let messages = rule_messages(kind);
            assert!(
                !messages.iter().any(|m| m.contains(part)),
                "{kind}: unexpected rule mentioning {part:?}"
            );
        };
        for kind in ["SecretSource", "ClusterSecretSource"] {
            has(
                kind,
                "exactly one of spec.env, spec.file, spec.vault, spec.aws or spec.kubernetes",
            );
        }
        has(
            "ClusterSecretSource",
            "spec.kubernetes.namespace is required",
        );
        has(
            "SecretSource",
            "secretRef.namespace is only for a ClusterSecretSource",
        );
        lacks("SecretSource", "required in a ClusterSecretSource");
        has(
            "ClusterSecretSource",
            "token.secretRef.namespace is required",
        );
        has(
            "ClusterSecretSource",
            "at least one of spec.namespaceSelector",
        );
        lacks("ClusterSecretSource", "is only for a ClusterSecretSource");
        has(
            "ClusterSecretBinding",
            "at least one of spec.namespaceSelector",
        );
        has(
            "ClusterSecretBinding",
            "sourceRef.kind must be ClusterSecretSource",
        );
    }
}
