//! The benchmark's objects: namespaces of bindings over one OpenBao, opted-in Deployments,
//! unrelated Secrets, ConfigMaps and Deployments, labelled (trigger) ConfigMaps. Written in-process into the fake (no HTTP, not
//! counted as API requests); the remote keys are written to OpenBao.

use anyhow::{Context, Result, bail};
use base64::Engine;
use secretsync_api::{ANNOTATION_FORCE_SYNC, ANNOTATION_RESTART_ON_ROTATION};
use secretsync_testkit::FakeApiServer;
use secretsync_testkit::bao::BaoAdmin;
use serde_json::{Value, json};

/// Remote keys each namespace's bindings read (every binding of a namespace reads all of
/// them, two properties each: 10 Secret keys per binding).
pub const KEYS_PER_NAMESPACE: usize = 5;
/// Properties read from every remote key.
pub const PROPERTIES: [&str; 2] = ["username", "password"];
/// The Vault token Secret of every namespace.
pub const TOKEN_SECRET: &str = "bao-token";
/// The SecretSource of every namespace.
pub const SOURCE: &str = "bao";

/// Namespace `i`.
pub fn ns_name(i: usize) -> String {
    format!("bench-{i:03}")
}

/// Remote key `r` of namespace `i`: namespaces use disjoint keys.
pub fn remote_key(i: usize, r: usize) -> String {
    format!("bench/k{:04}", i * KEYS_PER_NAMESPACE + r)
}

/// Remote key `r` of the layout whose namespaces all read the same keys.
pub fn shared_key(r: usize) -> String {
    format!("bench/shared/k{r}")
}

/// Which remote keys a namespace's bindings read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// Namespace `i` reads [`remote_key`]`(i, 0..5)`: disjoint keys per namespace.
    PerNamespace,
    /// Every namespace reads [`shared_key`]`(0..5)`, each through its own source.
    Shared,
}

impl Keys {
    /// Remote key `r` read by the bindings of namespace `i`.
    pub fn key(self, i: usize, r: usize) -> String {
        match self {
            Keys::PerNamespace => remote_key(i, r),
            Keys::Shared => shared_key(r),
        }
    }
}

/// Binding `j` of a namespace (also its Secret's name).
pub fn binding_name(j: usize) -> String {
    format!("b-{j:04}")
}

/// The value stored under a remote key (`gen` changes it for rotations).
pub fn remote_value(n: usize, generation: u32) -> Value {
    json!({
        "username": format!("user-{n}"),
        "password": format!("pw-{n}-{generation}-0123456789abcdef0123456789abcdef"),
    })
}

/// Writes remote key `key` (KV v2, mount `secret`) on OpenBao.
pub async fn bao_put(bao: &BaoAdmin, key: &str, data: &Value) -> Result<()> {
    let path = format!("secret/data/{key}");
    let Some((code, body)) = bao
        .try_call("POST", &path, Some(json!({ "data": data })))
        .await
    else {
        bail!("OpenBao write of {key}: no answer from {}", bao.addr);
    };
    if code / 100 != 2 {
        bail!("OpenBao write of {key}: HTTP {code}: {body}");
    }
    Ok(())
}

/// Writes one object in-process (server-side apply as the testkit's manager).
pub fn put(server: &FakeApiServer, v: &Value) -> Result<()> {
    // JSON is YAML.
    server
        .apply_yaml(&v.to_string())
        .with_context(|| format!("creating {}", v["metadata"]["name"]))?;
    Ok(())
}

/// The Secret in namespace `ns` holding the OpenBao dev server's root token.
fn token_secret(ns: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": TOKEN_SECRET, "namespace": ns},
        "data": {"token": base64::engine::general_purpose::STANDARD.encode("root")},
    })
}

/// The `vault` block of a source reading KV v2 `secret` with the token of
/// [`token_secret`] (`token_ns`: the namespace a cluster source must name).
fn vault_spec(bao_addr: &str, token_ns: Option<&str>) -> Value {
    let mut secret_ref = json!({"name": TOKEN_SECRET, "key": "token"});
    if let Some(ns) = token_ns {
        secret_ref["namespace"] = json!(ns);
    }
    json!({
        "server": bao_addr,
        "mount": "secret",
        "kvVersion": 2,
        "auth": {"token": {"secretRef": secret_ref}},
    })
}

/// The token Secret and the SecretSource of namespace `ns`; `cache_ttl` is its
/// `spec.cache.ttl`, `None` for a source without `spec.cache` (what users get by default).
pub fn source_objects(ns: &str, bao_addr: &str, cache_ttl: Option<&str>) -> Vec<Value> {
    let mut spec = json!({"vault": vault_spec(bao_addr, None)});
    if let Some(ttl) = cache_ttl {
        spec["cache"] = json!({ "ttl": ttl });
    }
    let source = json!({
        "apiVersion": "secretsync.dev/v1alpha1", "kind": "SecretSource",
        "metadata": {"name": SOURCE, "namespace": ns},
        "spec": spec,
    });
    vec![token_secret(ns), source]
}

/// The token Secret (in namespace `ns`) and one ClusterSecretSource admitting every
/// namespace (an empty selector), no `spec.cache`.
pub fn cluster_source_objects(ns: &str, bao_addr: &str) -> Vec<Value> {
    let source = json!({
        "apiVersion": "secretsync.dev/v1alpha1", "kind": "ClusterSecretSource",
        "metadata": {"name": SOURCE},
        "spec": {"namespaceSelector": {}, "vault": vault_spec(bao_addr, Some(ns))},
    });
    vec![token_secret(ns), source]
}

/// A binding of namespace index `i` reading the remote keys `keys` gives that namespace,
/// through the namespace's SecretSource or (`cluster`) the ClusterSecretSource.
pub fn binding(keys: Keys, i: usize, name: &str, refresh: &str, cluster: bool) -> Value {
    let mut data = Vec::new();
    for r in 0..KEYS_PER_NAMESPACE {
        for p in PROPERTIES {
            data.push(json!({
                "secretKey": format!("k{r}-{p}"),
                "remoteRef": {"key": keys.key(i, r), "property": p},
            }));
        }
    }
    json!({
        "apiVersion": "secretsync.dev/v1alpha1", "kind": "SecretBinding",
        "metadata": {"name": name, "namespace": ns_name(i)},
        "spec": {
            "sourceRef": {
                "kind": if cluster { "ClusterSecretSource" } else { "SecretSource" },
                "name": SOURCE,
            },
            "refreshInterval": refresh,
            "data": data,
        },
    })
}

/// A Deployment whose container reads `secrets` (key `k0-password`) through env
/// `secretKeyRef`; `opted_in` adds the restart-on-rotation annotation.
pub fn deployment(ns: &str, name: &str, secrets: &[String], opted_in: bool) -> Value {
    let env: Vec<Value> = secrets
        .iter()
        .enumerate()
        .map(|(n, s)| {
            json!({
                "name": format!("SECRET_{n}"),
                "valueFrom": {"secretKeyRef": {"name": s, "key": "k0-password"}},
            })
        })
        .collect();
    let mut annotations = serde_json::Map::new();
    if opted_in {
        annotations.insert(ANNOTATION_RESTART_ON_ROTATION.into(), "true".into());
    }
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "annotations": annotations},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1", "env": env}]},
            },
        },
    })
}

/// An unmanaged Secret of about 300 bytes of data.
pub fn unrelated_secret(ns: &str, n: usize) -> Value {
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": format!("other-{n:05}"), "namespace": ns, "labels": {"app": "unrelated"}},
        "data": {
            "tls.crt": b64(format!("{n:0>200}")),
            "password": b64(format!("unrelated-{n}-0123456789abcdef")),
        },
    })
}

/// Label that makes a Secret or ConfigMap a restart trigger (the design's "Restarts
/// beyond managed Secrets"; the operator's constant lives in the controller crate, which
/// the bench does not depend on).
pub const LABEL_WATCH: &str = "secretsync.dev/watch";

/// A ConfigMap without the watch label, about 300 bytes of data: what the operator must
/// never see.
pub fn unlabelled_configmap(ns: &str, n: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": format!("plain-{n:05}"), "namespace": ns, "labels": {"app": "unrelated"}},
        "data": {
            "app.properties": format!("# unrelated settings {n}\nlog.level=info\nfeature.flags={n:0>200}\n"),
            "mode": "production",
        },
    })
}

/// Labelled ConfigMap `n` (a restart trigger) with about 300 bytes of data; `revision`
/// changes its data.
pub fn watched_configmap(ns: &str, n: usize, revision: u32) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": watched_configmap_name(n), "namespace": ns, "labels": {LABEL_WATCH: "true"}},
        "data": {
            "settings.json": format!("{{\"instance\": {n}, \"revision\": {revision}, \"pool\": \"{n:0>200}\"}}"),
            "mode": "production",
        },
    })
}

/// Name of labelled ConfigMap `n`.
pub fn watched_configmap_name(n: usize) -> String {
    format!("watched-{n:04}")
}

/// Name of the opted-in Deployment reading labelled ConfigMap `n`.
pub fn configmap_deployment_name(n: usize) -> String {
    format!("cm-app-{n:04}")
}

/// Opted-in Deployment `n` (restart-on-rotation `"true"`) reading labelled ConfigMap `n`
/// through `envFrom`.
pub fn configmap_deployment(ns: &str, n: usize) -> Value {
    let name = configmap_deployment_name(n);
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns,
            "annotations": {ANNOTATION_RESTART_ON_ROTATION: "true"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": "app",
                    "image": "example.invalid/app:1",
                    "envFrom": [{"configMapRef": {"name": watched_configmap_name(n)}}],
                }]},
            },
        },
    })
}

/// The merge patch that forces a re-read of a binding.
pub fn force_sync_patch(value: &str) -> Value {
    json!({"metadata": {"annotations": {ANNOTATION_FORCE_SYNC: value}}})
}

/// Whether a stored binding is Ready for its current generation.
pub fn is_ready(obj: &Value) -> bool {
    let generation = obj["metadata"]["generation"].as_i64();
    let status = &obj["status"];
    status["observedGeneration"].as_i64() == generation
        && status["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_shape() {
        let b = binding(Keys::PerNamespace, 3, "b-0001", "60s", false);
        assert_eq!(b["metadata"]["namespace"], "bench-003");
        let data = b["spec"]["data"].as_array().unwrap();
        assert_eq!(data.len(), 10);
        assert_eq!(data[0]["remoteRef"]["key"], "bench/k0015");
        let shared = binding(Keys::Shared, 3, "b-0001", "60s", true);
        assert_eq!(shared["metadata"]["namespace"], "bench-003");
        assert_eq!(
            shared["spec"]["data"][9]["remoteRef"]["key"],
            "bench/shared/k4"
        );
        assert_eq!(b["spec"]["sourceRef"]["kind"], "SecretSource");
        assert_eq!(shared["spec"]["sourceRef"]["kind"], "ClusterSecretSource");
        let cluster = cluster_source_objects("bench-000", "http://bao");
        assert_eq!(cluster[1]["kind"], "ClusterSecretSource");
        assert_eq!(
            cluster[1]["spec"]["vault"]["auth"]["token"]["secretRef"]["namespace"],
            "bench-000"
        );
    }

    #[test]
    fn source_with_and_without_cache() {
        let cached = source_objects("n", "http://bao", Some("60s"));
        assert_eq!(cached[1]["spec"]["cache"]["ttl"], "60s");
        let plain = source_objects("n", "http://bao", None);
        assert!(plain[1]["spec"].get("cache").is_none());
        assert_eq!(plain[1]["spec"]["vault"]["kvVersion"], 2);
    }

    #[test]
    fn trigger_objects() {
        let plain = unlabelled_configmap("bench-001", 7);
        assert!(plain["metadata"]["labels"].get(LABEL_WATCH).is_none());
        let size: usize = plain["data"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_str().unwrap().len())
            .sum();
        assert!((250..400).contains(&size), "{size} bytes");
        let cm = watched_configmap("bench-001", 7, 1);
        assert_eq!(cm["metadata"]["labels"][LABEL_WATCH], "true");
        assert_ne!(cm["data"], watched_configmap("bench-001", 7, 2)["data"]);
        let d = configmap_deployment("bench-001", 7);
        assert_eq!(
            d["metadata"]["annotations"][ANNOTATION_RESTART_ON_ROTATION],
            "true"
        );
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["configMapRef"]["name"],
            cm["metadata"]["name"]
        );
    }

    #[test]
    fn readiness() {
        let mut o = json!({"metadata": {"generation": 2}, "status": {"observedGeneration": 2,
            "conditions": [{"type": "Ready", "status": "True"}]}});
        assert!(is_ready(&o));
        o["metadata"]["generation"] = json!(3);
        assert!(!is_ready(&o));
    }
}
