//! The real `kubectl` against the fake, through the generated kubeconfig.

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use secretsync_testkit::TestEnv;
use secretsync_testkit::harness::find_binary;

async fn kubectl(env: &TestEnv, bin: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(bin)
        .args(args)
        .arg("--cache-dir")
        .arg(env.dir().join("kube-cache"))
        .env("KUBECONFIG", &env.kubeconfig)
        .env_remove("KUBECTL_EXTERNAL_DIFF")
        .output()
        .await
        .expect("run kubectl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn manifests(ns: &str, keys: &[&str]) -> String {
    let data: String = keys.iter().map(|k| format!("  {k}: dmFsdWU=\n")).collect();
    format!(
        "apiVersion: v1
kind: Secret
metadata:
  name: s1
  namespace: {ns}
data:
{data}---
apiVersion: secretsync.dev/v1alpha1
kind: SecretBinding
metadata:
  name: b1
  namespace: {ns}
spec:
  sourceRef: {{name: src}}
  data:
  - secretKey: password
    remoteRef: {{key: database/creds, property: password}}
"
    )
}

#[tokio::test]
async fn kubectl_get_apply_delete() {
    let Some(bin) = find_binary("SECRETSYNC_KUBECTL", "kubectl") else {
        println!("skipping: kubectl is not on PATH");
        return;
    };
    let env = TestEnv::start().await.unwrap();
    env.install_crds().await.unwrap();
    let ns = env.namespace.clone();

    let (ok, out) = kubectl(&env, &bin, &["get", "secrets", "-n", &ns]).await;
    assert!(ok, "{out}");
    assert!(out.contains("No resources found"), "{out}");

    let file = env.dir().join("objects.yaml");
    std::fs::write(&file, manifests(&ns, &["a", "b"])).unwrap();
    let f = file.to_string_lossy().into_owned();
    let (ok, out) = kubectl(&env, &bin, &["apply", "--server-side", "-f", &f]).await;
    assert!(ok, "{out}");
    assert!(out.contains("secret/s1 serverside-applied"), "{out}");
    assert!(
        out.contains("secretbinding.secretsync.dev/b1 serverside-applied"),
        "{out}"
    );

    let (ok, out) = kubectl(&env, &bin, &["get", "secrets", "-n", &ns]).await;
    assert!(ok && out.contains("s1"), "{out}");
    let (ok, out) = kubectl(&env, &bin, &["get", "sbind", "-n", &ns]).await;
    assert!(
        ok && out.contains("b1") && out.contains("SOURCE") && out.contains("src"),
        "{out}"
    );
    let (ok, out) = kubectl(&env, &bin, &["get", "secretsync", "-n", &ns, "-o", "name"]).await;
    assert!(
        ok && out.contains("secretbinding.secretsync.dev/b1"),
        "{out}"
    );

    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &ns);
    let s = secrets.get("s1").await.unwrap();
    let managers: Vec<String> = s
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(managers, ["kubectl"]);

    // re-apply without key b: server-side apply removes it
    std::fs::write(&file, manifests(&ns, &["a"])).unwrap();
    let (ok, out) = kubectl(&env, &bin, &["apply", "--server-side", "-f", &f]).await;
    assert!(ok, "{out}");
    let keys: Vec<String> = secrets
        .get("s1")
        .await
        .unwrap()
        .data
        .unwrap_or_default()
        .into_keys()
        .collect();
    assert_eq!(keys, ["a"]);

    let (ok, out) = kubectl(&env, &bin, &["delete", "secret", "s1", "-n", &ns]).await;
    assert!(ok && out.contains("secret \"s1\" deleted"), "{out}");
    assert!(secrets.get_opt("s1").await.unwrap().is_none());
    let (ok, out) = kubectl(&env, &bin, &["delete", "-f", &f, "--ignore-not-found"]).await;
    assert!(ok, "{out}");
    let (ok, out) = kubectl(&env, &bin, &["get", "sbind", "-n", &ns]).await;
    assert!(ok && out.contains("No resources found"), "{out}");
}
