//! Static checks of the Helm chart (Helm itself is not available to the test suite):
//! template delimiters balance, the RBAC rules grant exactly the API calls in the
//! operator's table (`rbac::API_ACCESS`), in the right scope, and the chart's CRDs equal
//! `crds/`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use secretsync_controller::rbac::{API_ACCESS, Scope};

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/secretsync")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(chart().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn template_delimiters_and_blocks_balance() {
    let dir = chart().join("templates");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            text.matches("{{").count(),
            text.matches("}}").count(),
            "{name}: unbalanced {{{{ }}}}"
        );
        // Every block opener has its `end`.
        let mut depth: i32 = 0;
        for action in text.split("{{").skip(1) {
            let body = action.split("}}").next().unwrap_or("");
            let word = body
                .trim_start_matches('-')
                .split_whitespace()
                .next()
                .unwrap_or("");
            match word {
                "if" | "range" | "with" | "define" | "block" => depth += 1,
                "end" => depth -= 1,
                _ => {}
            }
            assert!(depth >= 0, "{name}: `end` without an opener");
        }
        assert_eq!(depth, 0, "{name}: block not closed");
        checked += 1;
    }
    assert!(
        checked >= 8,
        "expected the chart's templates, found {checked}"
    );
}

/// (group, resource, verb, conditional) from one-line rules like
/// `- {apiGroups: [""], resources: ["secrets"], verbs: ["get"]}`.
fn rules(text: &str) -> BTreeSet<(String, String, String, bool)> {
    let list = |line: &str, field: &str| -> Vec<String> {
        let Some(start) = line.find(&format!("{field}: [")) else {
            return vec![];
        };
        let rest = &line[start + field.len() + 3..];
        let end = rest.find(']').unwrap();
        rest[..end]
            .split(',')
            .map(|s| s.trim().trim_matches('"').to_string())
            .collect()
    };
    let mut out = BTreeSet::new();
    let mut conditional = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("{{- if .Values.rbac.vaultKubernetesAuth") {
            conditional = true;
        } else if t.starts_with("{{- end") {
            conditional = false;
        }
        if !t.starts_with("- {apiGroups:") {
            continue;
        }
        for g in list(t, "apiGroups") {
            for r in list(t, "resources") {
                for v in list(t, "verbs") {
                    out.insert((g.clone(), r.clone(), v, conditional));
                }
            }
        }
    }
    out
}

#[test]
fn rbac_grants_exactly_what_the_operator_uses() {
    let watch = rules(&read("templates/rbac-watch.yaml"));
    let operator = rules(&read("templates/rbac-operator.yaml"));
    assert!(!watch.is_empty() && !operator.is_empty());
    let key = |g: &str, r: &str, v: &str, c: bool| (g.to_string(), r.to_string(), v.to_string(), c);

    // Everything in the table is granted in its scope.
    for a in API_ACCESS {
        for v in a.verbs {
            let granted = match a.scope {
                Scope::Watched => watch.contains(&key(a.group, a.resource, v, false)),
                Scope::WatchedVaultKubernetesAuth => {
                    watch.contains(&key(a.group, a.resource, v, true))
                }
                Scope::Operator => {
                    operator.contains(&key(a.group, a.resource, v, false))
                        // Cluster-wide Secret reads also cover the HMAC key.
                        || watch.contains(&key(a.group, a.resource, v, false))
                            && operator.iter().any(|(g, r, _, _)| g == a.group && r == a.resource)
                }
            };
            assert!(
                granted,
                "chart does not grant {v} on {}/{} ({:?}): {}",
                a.group, a.resource, a.scope, a.reason
            );
        }
    }
    // Nothing beyond the table, and nothing operator-only granted in watched namespaces.
    for (g, r, v, c) in &watch {
        let listed = API_ACCESS.iter().any(|a| {
            a.group == g
                && a.resource == r
                && a.verbs.contains(&v.as_str())
                && match a.scope {
                    Scope::Watched => !c,
                    Scope::WatchedVaultKubernetesAuth => *c,
                    Scope::Operator => false,
                }
        });
        assert!(
            listed,
            "rbac-watch.yaml grants {v} on {g}/{r}, which the operator never uses there"
        );
    }
    for (g, r, v, _) in &operator {
        let listed = API_ACCESS.iter().any(|a| {
            a.group == g
                && a.resource == r
                && a.verbs.contains(&v.as_str())
                && a.scope == Scope::Operator
        });
        assert!(
            listed,
            "rbac-operator.yaml grants {v} on {g}/{r}, which is not an operator-namespace call"
        );
    }
    // Leases never leave the operator namespace.
    assert!(!watch.iter().any(|(_, r, _, _)| r == "leases"));
    // No delete anywhere: owned Secrets are garbage-collected by Kubernetes.
    assert!(
        !watch
            .iter()
            .chain(&operator)
            .any(|(_, _, v, _)| v == "delete" || v == "*")
    );
}

#[test]
fn chart_crds_match_crds_dir() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let committed = std::fs::read_to_string(root.join("crds/secretsync-crds.yaml")).unwrap();
    assert!(
        read("files/secretsync-crds.yaml") == committed,
        "charts/secretsync/files/secretsync-crds.yaml differs from crds/: run `make crds`"
    );
}

#[test]
fn values_have_the_documented_keys() {
    let values: serde_yaml::Value = serde_yaml::from_str(&read("values.yaml")).unwrap();
    for path in [
        "image.repository",
        "image.tag",
        "image.pullPolicy",
        "imagePullSecrets",
        "replicaCount",
        "resources",
        "nodeSelector",
        "tolerations",
        "affinity",
        "podAnnotations",
        "podLabels",
        "priorityClassName",
        "serviceAccount.create",
        "serviceAccount.name",
        "serviceAccount.annotations",
        "watchNamespaces",
        "env.allow",
        "file.root",
        "file.volumes",
        "extraArgs",
        "extraEnv",
        "logFormat",
        "metrics.service",
        "serviceMonitor.enabled",
        "podDisruptionBudget",
        "crds.install",
        "rbac.vaultKubernetesAuth",
        "networkPolicy.enabled",
    ] {
        let mut v = &values;
        for part in path.split('.') {
            v = v
                .get(part)
                .unwrap_or_else(|| panic!("values.yaml lacks {path}"));
        }
    }
    assert_eq!(values["replicaCount"].as_u64(), Some(2));
    let readme = read("README.md");
    for key in [
        "watchNamespaces",
        "rbac.vaultKubernetesAuth",
        "crds.install",
        "file.root",
    ] {
        assert!(
            readme.contains(key),
            "chart README's values table lacks {key}"
        );
    }
    let sc = &values["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(
        values["podSecurityContext"]["runAsNonRoot"].as_bool(),
        Some(true)
    );
}
