//! Tests of the `secretsync` binary's offline commands: `crds` and `render`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn secretsync() -> Command {
    Command::new(env!("CARGO_BIN_EXE_secretsync"))
}

#[test]
fn crds_dir_matches_generated_output() {
    let out = secretsync().arg("crds").output().unwrap();
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).unwrap();
    let committed =
        std::fs::read_to_string(workspace_root().join("crds/secretsync-crds.yaml")).unwrap();
    assert!(
        generated == committed,
        "crds/secretsync-crds.yaml is stale: run `make crds` and commit the result"
    );
    // Structural-schema guard rails the API server enforces.
    assert!(!generated.contains("anyOf") && !generated.contains("oneOf"));
    assert!(!generated.contains("$ref"));
}

fn secret_docs(yaml: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &serde_yaml::Value| !v.is_null())
        .collect()
}

fn decoded(doc: &serde_yaml::Value, key: &str) -> String {
    let b64 = doc["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("no key {key}"));
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn render_quickstart() {
    let root = workspace_root();
    let out = secretsync()
        .args(["render", "-f"])
        .arg(root.join("examples/quickstart"))
        .arg("--file-root")
        .arg(root.join("examples"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "render failed: {stderr}");
    let docs = secret_docs(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(docs.len(), 2);
    let db = docs
        .iter()
        .find(|d| d["metadata"]["name"] == "shop-db")
        .unwrap();
    assert_eq!(db["apiVersion"], "v1");
    assert_eq!(db["kind"], "Secret");
    assert_eq!(db["type"], "Opaque");
    assert_eq!(db["metadata"]["namespace"], "demo");
    assert_eq!(db["metadata"]["labels"]["secretsync.dev/managed"], "true");
    assert_eq!(
        db["metadata"]["annotations"]["secretsync.dev/binding"],
        "shop-db"
    );
    let hash = db["metadata"]["annotations"]["secretsync.dev/data-hash"]
        .as_str()
        .unwrap();
    assert_eq!(hash.len(), 64);
    assert_eq!(decoded(db, "username"), "shop");
    assert_eq!(decoded(db, "password"), "demo-password-change-me");
    assert_eq!(decoded(db, "DB_HOST"), "postgres.shop.svc");
    assert_eq!(
        decoded(db, "DATABASE_URL"),
        "postgres://shop:demo-password-change-me@postgres.shop.svc:5432/shop"
    );
    assert!(db.get("stringData").is_none());
    let api = docs
        .iter()
        .find(|d| d["metadata"]["name"] == "api-token")
        .unwrap();
    assert_eq!(decoded(api, "token"), "demo-token-123");
}

#[test]
fn render_reports_each_failing_binding_by_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("vals.env"),
        "GOOD=1\nPASSWORD=CANARY-render-7\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("m.yaml"),
        r#"
apiVersion: secretsync.dev/v1alpha1
kind: SecretSource
metadata: {name: src, namespace: t}
spec: {file: {path: vals.env, format: Dotenv}}
---
apiVersion: secretsync.dev/v1alpha1
kind: SecretBinding
metadata: {name: ok, namespace: t}
spec: {sourceRef: {name: src}, data: [{secretKey: good, remoteRef: {key: GOOD}}]}
---
apiVersion: secretsync.dev/v1alpha1
kind: SecretBinding
metadata: {name: missing-key, namespace: t}
spec: {sourceRef: {name: src}, data: [{secretKey: x, remoteRef: {key: NOPE}}]}
---
apiVersion: secretsync.dev/v1alpha1
kind: SecretBinding
metadata: {name: no-source, namespace: t}
spec: {sourceRef: {name: other}, data: [{secretKey: x, remoteRef: {key: GOOD}}]}
---
apiVersion: secretsync.dev/v1alpha1
kind: SecretBinding
metadata: {name: bad-json, namespace: t}
spec: {sourceRef: {name: src}, data: [{secretKey: x, remoteRef: {key: PASSWORD, property: a}}]}
---
apiVersion: secretsync.dev/v1alpha1
kind: SecretBinding
metadata: {name: bad-template, namespace: t}
spec:
  sourceRef: {name: src}
  data: [{secretKey: p, remoteRef: {key: PASSWORD}}]
  target: {template: {data: {out: "{{ p | int }} {{ nope }}"}}}
"#,
    )
    .unwrap();
    let out = secretsync()
        .args(["render", "-f"])
        .arg(dir.path())
        .arg("--file-root")
        .arg(dir.path())
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let docs = secret_docs(&stdout);
    assert_eq!(docs.len(), 1, "only the good binding renders");
    assert!(
        stderr.contains("SecretBinding t/missing-key") && stderr.contains("SecretNotFound"),
        "{stderr}"
    );
    assert!(
        stderr.contains("SecretBinding t/no-source") && stderr.contains("SourceNotFound"),
        "{stderr}"
    );
    assert!(
        stderr.contains("SecretBinding t/bad-json") && stderr.contains("InvalidJson"),
        "{stderr}"
    );
    assert!(
        stderr.contains("SecretBinding t/bad-template") && stderr.contains("InvalidTemplate"),
        "{stderr}"
    );
    assert!(stderr.contains("\"NOPE\""), "errors name the key: {stderr}");
    assert!(
        !stderr.contains("CANARY-render-7"),
        "a value leaked into stderr: {stderr}"
    );
}

/// `templateFrom` in `render`: ConfigMap manifests given with `-f` supply the templates
/// (the inline template wins over one of the same key); a ConfigMap that is not among them
/// fails that binding with `TemplateNotFound`, naming the ConfigMap, and no value.
#[test]
fn render_takes_template_from_config_maps_given_with_f() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("vals.env"),
        "USER=shop\nPASSWORD=CANARY-render-tf\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("m.yaml"),
        r#"
apiVersion: secretsync.dev/v1alpha1
kind: SecretSource
metadata: {name: src, namespace: t}
spec: {file: {path: vals.env, format: Dotenv}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: db-templates, namespace: t}
data:
  DATABASE_URL: "postgres://{{ user }}:{{ password }}@db:5432/shop"
  NOTE: "from the ConfigMap"
---
apiVersion: secretsync.dev/v1alpha1
kind: SecretBinding
metadata: {name: shaped, namespace: t}
spec:
  sourceRef: {name: src}
  data:
    - {secretKey: user, remoteRef: {key: USER}}
    - {secretKey: password, remoteRef: {key: PASSWORD}}
  target:
    template:
      templateFrom:
        - configMap: {name: db-templates, items: [{key: DATABASE_URL}, {key: NOTE}]}
      data: {NOTE: "inline for {{ user }}"}
---
apiVersion: secretsync.dev/v1alpha1
kind: SecretBinding
metadata: {name: no-config-map, namespace: t}
spec:
  sourceRef: {name: src}
  data: [{secretKey: password, remoteRef: {key: PASSWORD}}]
  target:
    template:
      templateFrom: [{configMap: {name: elsewhere, items: [{key: x}]}}]
"#,
    )
    .unwrap();
    let out = secretsync()
        .args(["render", "-f"])
        .arg(dir.path())
        .arg("--file-root")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "one binding fails");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let docs = secret_docs(&stdout);
    assert_eq!(docs.len(), 1, "{stdout}\n{stderr}");
    assert_eq!(
        decoded(&docs[0], "DATABASE_URL"),
        "postgres://shop:CANARY-render-tf@db:5432/shop"
    );
    assert_eq!(decoded(&docs[0], "NOTE"), "inline for shop");
    assert!(
        stderr.contains("SecretBinding t/no-config-map")
            && stderr.contains("TemplateNotFound")
            && stderr.contains("\"elsewhere\"")
            && stderr.contains("-f"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("CANARY"),
        "a value leaked into stderr: {stderr}"
    );
}
