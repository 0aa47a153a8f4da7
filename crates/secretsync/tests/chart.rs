//! The Helm chart, rendered and linted by Helm's own engine (helm-python-sdk from the test
//! venv): RBAC grants exactly the operator's API calls (`rbac::API_ACCESS`) in the right
//! scope, the pod runs locked down with working probes, the container's arguments follow
//! the values and are flags the binary accepts, and the optional objects appear when
//! enabled.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use secretsync_controller::rbac::{API_ACCESS, Scope};
use secretsync_testkit::chart::{self, Rendered};
use serde_json::{Value, json};

const RELEASE: &str = "ss";
const NS: &str = "secretsync-system";
const FULLNAME: &str = "ss-secretsync";

fn render(values: Value) -> Rendered {
    chart::render(&values, RELEASE, NS).unwrap_or_else(|e| panic!("rendering {values}: {e}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// One grant: (group, resource, verb, limited to resourceNames).
type Grant = (String, String, String, bool);

fn grants(role: &Value) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().into_iter().flatten() {
        let named = !strings(&rule["resourceNames"]).is_empty();
        for g in strings(&rule["apiGroups"]) {
            for r in strings(&rule["resources"]) {
                for v in strings(&rule["verbs"]) {
                    out.insert((g.clone(), r.clone(), v, named));
                }
            }
        }
    }
    out
}

/// The roles bound to the chart's ServiceAccount: (kind, namespace, grants).
fn bound_roles(r: &Rendered) -> Vec<(String, String, BTreeSet<Grant>)> {
    let sa = r
        .get("ServiceAccount", FULLNAME)
        .expect("the ServiceAccount");
    assert_eq!(sa["metadata"]["namespace"], NS);
    let mut out = Vec::new();
    for kind in ["RoleBinding", "ClusterRoleBinding"] {
        for b in r.of_kind(kind) {
            let subjects = b["subjects"].as_array().cloned().unwrap_or_default();
            assert!(
                subjects.iter().all(|s| s["kind"] == "ServiceAccount"
                    && s["name"] == FULLNAME
                    && s["namespace"] == NS),
                "{kind} binds someone else: {b}"
            );
            let role_kind = b["roleRef"]["kind"].as_str().unwrap_or_default();
            let role_name = b["roleRef"]["name"].as_str().unwrap_or_default();
            let ns = b["metadata"]["namespace"].as_str().unwrap_or_default();
            let role = r
                .of_kind(role_kind)
                .into_iter()
                .find(|o| {
                    o["metadata"]["name"] == role_name
                        && (role_kind == "ClusterRole" || o["metadata"]["namespace"] == ns)
                })
                .unwrap_or_else(|| panic!("{kind} refers to a missing {role_kind} {role_name}"));
            out.push((kind.to_owned(), ns.to_owned(), grants(role)));
        }
    }
    // Nothing unbound lying around.
    assert_eq!(
        r.of_kind("Role").len() + r.of_kind("ClusterRole").len(),
        out.len(),
        "every Role and ClusterRole is bound exactly once"
    );
    out
}

fn key(a: &secretsync_controller::rbac::Access, v: &str) -> (String, String, String) {
    (a.group.to_owned(), a.resource.to_owned(), v.to_owned())
}

/// RBAC grants exactly the table: every listed call in every scope it is needed, nothing
/// else, and the operator-namespace permissions only there.
fn check_rbac(r: &Rendered, watched: &[&str], vault_kubernetes_auth: bool) {
    check_rbac_with(r, watched, vault_kubernetes_auth, false)
}

fn check_rbac_with(r: &Rendered, watched: &[&str], vault_kubernetes_auth: bool, webhook: bool) {
    let roles = bound_roles(r);
    let watch_scopes: Vec<&BTreeSet<Grant>> = if watched.is_empty() {
        assert!(
            r.of_kind("ClusterRoleBinding").len() == 1,
            "one ClusterRoleBinding"
        );
        roles
            .iter()
            .filter(|(k, _, _)| k == "ClusterRoleBinding")
            .map(|(_, _, g)| g)
            .collect()
    } else {
        assert!(
            r.of_kind("ClusterRole").is_empty(),
            "scoped mode grants nothing cluster-wide"
        );
        watched
            .iter()
            .map(|ns| {
                roles
                    .iter()
                    .find(|(k, n, g)| {
                        k == "RoleBinding" && n == ns && !g.iter().any(|(_, r, _, _)| r == "leases")
                    })
                    .map(|(_, _, g)| g)
                    .unwrap_or_else(|| panic!("no watch Role bound in {ns}"))
            })
            .collect()
    };
    let operator: Vec<&BTreeSet<Grant>> = roles
        .iter()
        .filter(|(k, n, g)| {
            k == "RoleBinding" && n == NS && g.iter().any(|(_, r, _, _)| r == "leases")
        })
        .map(|(_, _, g)| g)
        .collect();
    assert_eq!(operator.len(), 1, "one operator-namespace Role");
    let operator = operator[0];
    let unnamed = |g: &BTreeSet<Grant>, k: &(String, String, String)| {
        g.contains(&(k.0.clone(), k.1.clone(), k.2.clone(), false))
    };
    let any = |g: &BTreeSet<Grant>, k: &(String, String, String)| {
        unnamed(g, k) || g.contains(&(k.0.clone(), k.1.clone(), k.2.clone(), true))
    };

    for a in API_ACCESS {
        for v in a.verbs {
            let k = key(a, v);
            match a.scope {
                Scope::Watched => {
                    for g in &watch_scopes {
                        assert!(
                            unnamed(g, &k),
                            "not granted in a watched scope: {k:?} ({})",
                            a.reason
                        );
                    }
                }
                Scope::WatchedVaultKubernetesAuth => {
                    for g in &watch_scopes {
                        assert_eq!(
                            unnamed(g, &k),
                            vault_kubernetes_auth,
                            "{k:?} with rbac.vaultKubernetesAuth={vault_kubernetes_auth}"
                        );
                    }
                }
                Scope::Cluster => {
                    for g in &watch_scopes {
                        assert_eq!(
                            unnamed(g, &k),
                            watched.is_empty(),
                            "{k:?} is granted exactly in all-namespace installs ({})",
                            a.reason
                        );
                    }
                }
                Scope::OperatorWebhook if !webhook => {
                    assert!(
                        *v == "get" || !any(operator, &k),
                        "{k:?} in the operator namespace without webhook.enabled"
                    );
                }
                Scope::Operator | Scope::OperatorWebhook => {
                    let cluster_wide =
                        watched.is_empty() && watch_scopes.iter().any(|g| unnamed(g, &k));
                    assert!(
                        any(operator, &k) || cluster_wide,
                        "not granted in the operator namespace: {k:?} ({})",
                        a.reason
                    );
                }
            }
        }
    }
    let listed = |k: &Grant, scopes: &[Scope]| {
        API_ACCESS.iter().any(|a| {
            a.group == k.0
                && a.resource == k.1
                && a.verbs.contains(&k.2.as_str())
                && scopes.contains(&a.scope)
        })
    };
    let watch_kinds: &[Scope] = if watched.is_empty() {
        &[
            Scope::Watched,
            Scope::WatchedVaultKubernetesAuth,
            Scope::Cluster,
        ]
    } else {
        &[Scope::Watched, Scope::WatchedVaultKubernetesAuth]
    };
    for g in &watch_scopes {
        for k in g.iter() {
            assert!(
                listed(k, watch_kinds),
                "granted in watched namespaces but not an operator call there: {k:?}"
            );
            assert!(
                !k.3,
                "watched-namespace rules are never limited by name: {k:?}"
            );
        }
    }
    for k in operator {
        assert!(
            listed(k, &[Scope::Operator, Scope::OperatorWebhook]),
            "granted in the operator namespace but not an operator-namespace call: {k:?}"
        );
    }
    let all: Vec<&Grant> = roles.iter().flat_map(|(_, _, g)| g.iter()).collect();
    // The one delete: SecretBindings a ClusterSecretBinding generated, where a namespace
    // stops matching. Secrets are never deleted (Kubernetes garbage-collects owned ones).
    assert!(
        !all.iter().any(|k| (k.2 == "delete"
            && !(k.0 == "secretsync.dev" && k.1 == "secretbindings"))
            || k.2 == "*"
            || k.1 == "*"),
        "no delete but of generated SecretBindings, no wildcards"
    );
    assert!(
        !watch_scopes
            .iter()
            .any(|g| g.iter().any(|k| k.1 == "leases")),
        "leases only in the operator namespace"
    );
}

fn deployment(r: &Rendered) -> &Value {
    r.get("Deployment", FULLNAME).expect("the Deployment")
}

fn container(r: &Rendered) -> &Value {
    &deployment(r)["spec"]["template"]["spec"]["containers"][0]
}

fn args(r: &Rendered) -> Vec<String> {
    strings(&container(r)["args"])
}

/// Flags `secretsync run` accepts, from its help.
fn run_flags() -> BTreeSet<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_secretsync"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("--"))
        .map(|w| {
            w.split(['=', ',', '<', '['])
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

fn lint_clean(values: Value) {
    let messages = chart::lint(&values).unwrap_or_else(|e| panic!("lint: {e}"));
    let errors: Vec<_> = messages.iter().filter(|m| m.severity >= 3).collect();
    assert!(errors.is_empty(), "helm lint with {values}: {errors:?}");
}

#[test]
fn default_install_grants_exactly_the_operator_calls_cluster_wide() {
    let r = render(json!({}));
    check_rbac(&r, &[], false);
    let r = render(json!({"rbac": {"vaultKubernetesAuth": true}}));
    check_rbac(&r, &[], true);
    assert!(
        !args(&r).iter().any(|a| a.starts_with("--namespace")),
        "all namespaces by default"
    );
    lint_clean(json!({}));
}

#[test]
fn watch_namespaces_gives_one_role_per_namespace_and_matching_flags() {
    let values =
        json!({"watchNamespaces": ["shop", "payments"], "rbac": {"vaultKubernetesAuth": true}});
    let r = render(values.clone());
    check_rbac(&r, &["shop", "payments"], true);
    let a = args(&r);
    assert!(
        a.contains(&"--namespace=shop".to_string())
            && a.contains(&"--namespace=payments".to_string()),
        "{a:?}"
    );
    assert!(
        r.notes.contains("shop"),
        "NOTES name the watched namespaces: {}",
        r.notes
    );
    lint_clean(values);
}

#[test]
fn the_pod_is_locked_down_and_probed() {
    let r = render(json!({}));
    let d = deployment(&r);
    assert_eq!(d["metadata"]["namespace"], NS);
    assert_eq!(d["spec"]["replicas"], 2);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], FULLNAME);
    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true);
    assert_eq!(psc["runAsUser"], 65532);
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault");
    let c = container(&r);
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(
        c["image"], "ghcr.io/secretsync/secretsync:0.1.0",
        "tag defaults to appVersion"
    );
    // Probes hit the health server on the port the args give it.
    let ports: Vec<(String, i64)> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["containerPort"].as_i64().unwrap(),
            )
        })
        .collect();
    assert!(
        ports.contains(&("health".into(), 8081)) && ports.contains(&("metrics".into(), 8080)),
        "{ports:?}"
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "health"})
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "health"})
    );
    let a = args(&r);
    assert!(
        a.contains(&"--health-addr=0.0.0.0:8081".to_string())
            && a.contains(&"--metrics-addr=0.0.0.0:8080".to_string()),
        "{a:?}"
    );
    // The downward API gives the operator its namespace and leader identity.
    let env: Vec<String> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        env.contains(&"POD_NAME".into()) && env.contains(&"POD_NAMESPACE".into()),
        "{env:?}"
    );
    // A PodDisruptionBudget keeps one of the two replicas.
    let pdb = r
        .get("PodDisruptionBudget", FULLNAME)
        .expect("PDB with 2 replicas");
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        d["spec"]["selector"]["matchLabels"]
    );
    // The CRDs come with the chart and survive an uninstall.
    let crds = r.of_kind("CustomResourceDefinition");
    let names: BTreeSet<&str> = crds
        .iter()
        .filter_map(|c| c["metadata"]["name"].as_str())
        .collect();
    let want: BTreeSet<String> = secretsync_api::crd::crds()
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert_eq!(
        names,
        want.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        "the chart ships every CRD"
    );
    assert_eq!(crds.len(), 4);
    assert!(
        crds.iter()
            .all(|c| c["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep")
    );
}

#[test]
fn args_follow_the_values_and_are_flags_the_binary_accepts() {
    let r = render(json!({}));
    let defaults = args(&r);
    for want in [
        "run",
        "--leader-elect=true",
        "--concurrency=16",
        "--restart-debounce=10s",
        "--status-heartbeat=10m",
        "--log-format=json",
        "--file-root=/etc/secretsync/files",
    ] {
        assert!(
            defaults.contains(&want.to_string()),
            "{want} missing from {defaults:?}"
        );
    }
    let values = json!({
        "leaderElection": {"enabled": false}, "concurrency": 64, "restartDebounce": "30s", "statusHeartbeat": "1h",
        "logFormat": "text", "env": {"allow": ["APP_*", "DB_*"]}, "file": {"root": "/files"},
        "metrics": {"port": 9090}, "health": {"port": 9091}, "extraArgs": ["--concurrency=8"],
    });
    let r = render(values.clone());
    let a = args(&r);
    for want in [
        "--leader-elect=false",
        "--concurrency=64",
        "--restart-debounce=30s",
        "--status-heartbeat=1h",
        "--log-format=text",
        "--env-allow=APP_*",
        "--env-allow=DB_*",
        "--file-root=/files",
        "--metrics-addr=0.0.0.0:9090",
        "--health-addr=0.0.0.0:9091",
    ] {
        assert!(a.contains(&want.to_string()), "{want} missing from {a:?}");
    }
    assert_eq!(
        a.last().map(String::as_str),
        Some("--concurrency=8"),
        "extraArgs come last"
    );
    let flags = run_flags();
    for arg in a.iter().chain(&defaults).skip(1).filter(|a| *a != "run") {
        let name = arg.trim_start_matches("--").split('=').next().unwrap();
        assert!(
            flags.contains(name),
            "the chart passes --{name}, which `secretsync run` does not accept ({flags:?})"
        );
    }
    lint_clean(values);
}

#[test]
fn service_monitor_scrapes_the_metrics_service() {
    let r = render(json!({}));
    assert!(r.of_kind("ServiceMonitor").is_empty(), "off by default");
    let values = json!({"serviceMonitor": {"enabled": true, "interval": "15s", "labels": {"release": "prom"}}});
    let r = render(values.clone());
    let sm = r.get("ServiceMonitor", FULLNAME).expect("ServiceMonitor");
    let svc = r
        .get("Service", &format!("{FULLNAME}-metrics"))
        .expect("metrics Service");
    assert_eq!(sm["metadata"]["labels"]["release"], "prom");
    let selector = sm["spec"]["selector"]["matchLabels"].as_object().unwrap();
    for (k, v) in selector {
        assert_eq!(
            &svc["metadata"]["labels"][k], v,
            "ServiceMonitor selects the metrics Service"
        );
    }
    let endpoint = &sm["spec"]["endpoints"][0];
    assert_eq!(endpoint["interval"], "15s");
    assert_eq!(endpoint["path"], "/metrics");
    assert!(
        svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == endpoint["port"]),
        "endpoint port names a Service port"
    );
    // The Service targets the container's metrics port of the Deployment's pods.
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(
            &deployment(&r)["spec"]["template"]["metadata"]["labels"][k],
            v
        );
    }
    lint_clean(values);
}

#[test]
fn network_policy_admits_only_the_metrics_and_health_ports() {
    let r = render(json!({}));
    assert!(r.of_kind("NetworkPolicy").is_empty(), "off by default");
    let from = json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]);
    let values = json!({"networkPolicy": {"enabled": true, "metricsFrom": from}});
    let r = render(values.clone());
    let np = r.get("NetworkPolicy", FULLNAME).expect("NetworkPolicy");
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress"]));
    let ports: Vec<i64> = np["spec"]["ingress"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_i64().unwrap())
        .collect();
    assert_eq!(ports, vec![8080, 8081]);
    assert_eq!(np["spec"]["ingress"][0]["from"], from);
    for (k, v) in np["spec"]["podSelector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &deployment(&r)["spec"]["template"]["metadata"]["labels"][k],
            v,
            "selects the operator's pods"
        );
    }
    lint_clean(values);
}

#[test]
fn the_webhook_gets_its_port_service_key_secret_and_rbac() {
    let r = render(json!({}));
    assert!(
        r.get("Service", &format!("{FULLNAME}-webhook")).is_none(),
        "off by default"
    );
    assert!(!args(&r).iter().any(|a| a.starts_with("--webhook")));
    let values = json!({"webhook": {"enabled": true}, "networkPolicy": {"enabled": true}});
    let r = render(values.clone());
    check_rbac_with(&r, &[], false, true);
    let secret_name = format!("{FULLNAME}-webhook");
    let a = args(&r);
    assert!(
        a.contains(&"--webhook-addr=0.0.0.0:8443".to_string()),
        "{a:?}"
    );
    assert!(
        a.contains(&format!("--webhook-secret={NS}/{secret_name}")),
        "{a:?}"
    );
    let accepted = run_flags();
    for flag in a.iter().filter(|f| f.starts_with("--webhook")) {
        let name = flag.trim_start_matches("--").split('=').next().unwrap();
        assert!(accepted.contains(name), "secretsync run lacks --{name}");
    }
    let secret = r.get("Secret", &secret_name).expect("key Secret");
    let key = secret["data"]["key"].as_str().expect("data.key");
    assert!(key.len() >= 64, "a 48-character key, base64: {key}");
    let svc = r.get("Service", &secret_name).expect("webhook Service");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "webhook");
    assert_eq!(
        svc["spec"]["selector"][secretsync_api::LABEL_LEADER],
        "true",
        "the webhook Service selects the leader only"
    );
    let ports = container(&r)["ports"].as_array().unwrap().clone();
    assert!(
        ports
            .iter()
            .any(|p| p["name"] == "webhook" && p["containerPort"] == 8443)
    );
    let np = r.get("NetworkPolicy", FULLNAME).expect("NetworkPolicy");
    assert_eq!(np["spec"]["ingress"][1]["ports"][0]["port"], 8443);
    // The operator-namespace Role names the key Secret for list and watch.
    let role = r
        .of_kind("Role")
        .into_iter()
        .find(|r| r["metadata"]["name"] == format!("{FULLNAME}-operator"))
        .expect("operator Role");
    assert!(
        role["rules"].as_array().unwrap().iter().any(|rule| {
            rule["resourceNames"] == json!([secret_name])
                && rule["verbs"] == json!(["get", "list", "watch"])
        }),
        "{role}"
    );
    lint_clean(values);
    // A Secret of the user's: none is created, the flags and the Role name it.
    let r = render(json!({"webhook": {"enabled": true, "existingSecret": "hook-key"}}));
    assert!(r.get("Secret", &secret_name).is_none());
    assert!(args(&r).contains(&format!("--webhook-secret={NS}/hook-key")));
    check_rbac_with(&r, &[], false, true);
}

#[test]
fn chart_crds_match_crds_dir() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let committed = std::fs::read_to_string(root.join("crds/secretsync-crds.yaml")).unwrap();
    let shipped =
        std::fs::read_to_string(chart::chart_dir().join("files/secretsync-crds.yaml")).unwrap();
    assert!(
        shipped == committed,
        "charts/secretsync/files/secretsync-crds.yaml differs from crds/: run `make crds`"
    );
}

#[test]
fn values_have_the_documented_keys() {
    let text = std::fs::read_to_string(chart::chart_dir().join("values.yaml")).unwrap();
    let values: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let readme = std::fs::read_to_string(chart::chart_dir().join("README.md")).unwrap();
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
        "networkPolicy.webhookFrom",
        "webhook.enabled",
        "webhook.port",
        "webhook.existingSecret",
        "webhook.service",
    ] {
        let mut v = &values;
        for part in path.split('.') {
            v = v
                .get(part)
                .unwrap_or_else(|| panic!("values.yaml lacks {path}"));
        }
    }
    for key in [
        "watchNamespaces",
        "rbac.vaultKubernetesAuth",
        "crds.install",
        "file.root",
        "webhook.enabled",
        "webhook.existingSecret",
        "networkPolicy.webhookFrom",
    ] {
        assert!(
            readme.contains(key),
            "chart README's values table lacks {key}"
        );
    }
}
