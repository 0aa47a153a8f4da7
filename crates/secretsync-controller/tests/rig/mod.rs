//! A reconciler test rig: a [`Ctx`] wired to an in-process fake API server, with objects
//! put into the fake and the context's stores the way the watches would, so a test calls
//! one reconcile directly and asserts the exact requests it made.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use secretsync_api::{SecretBinding, SecretSource};
use secretsync_backends::env::EnvPolicy;
use secretsync_backends::hash::HmacKey;
use secretsync_controller::Config;
use secretsync_controller::context::Ctx;
use secretsync_controller::managed::ManagedSecret;
use secretsync_controller::metrics::Metrics;
use secretsync_controller::outcome::{ReconcileResult, Reconciled};
use secretsync_controller::runtime::ObjKey;
use secretsync_controller::source::SourceRegistry;
use secretsync_testkit::FakeApiServer;
use serde_json::Value;

/// The test namespace.
pub const NS: &str = "shop";

/// The store key of source `name` in the test namespace.
pub fn source_key(name: &str) -> ObjKey {
    ObjKey::new(NS, name)
}

pub struct Rig {
    pub server: FakeApiServer,
    pub ctx: Arc<Ctx>,
    pub files: tempfile::TempDir,
}

impl Rig {
    /// A rig whose rollout debounce is `debounce`, with the default status heartbeat.
    pub async fn new(debounce: Duration) -> Rig {
        Self::with_heartbeat(debounce, Duration::from_secs(600)).await
    }

    /// A rig with `--restart-debounce` `debounce` and `--status-heartbeat` `heartbeat`.
    pub async fn with_heartbeat(debounce: Duration, heartbeat: Duration) -> Rig {
        let server = FakeApiServer::start().await.unwrap();
        server.install_secretsync_crds().unwrap();
        // Like the operator's client: no retries inside it (the runtime retries).
        let kc = kube::config::Kubeconfig::from_yaml(&server.kubeconfig_yaml()).unwrap();
        let mut kube_config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        kube_config.default_retry = false;
        let client = kube::Client::try_from(kube_config).unwrap();
        let files = tempfile::tempdir().unwrap();
        let unused: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let config = Arc::new(Config {
            operator_namespace: "ops".into(),
            namespaces: vec![],
            concurrency: 4,
            metrics_addr: unused,
            health_addr: unused,
            leader_elect: false,
            env_allow: vec![],
            file_root: files.path().to_path_buf(),
            restart_debounce: debounce,
            status_heartbeat: heartbeat,
            max_restarts_per_minute: 0,
            identity: "rig".into(),
            webhook: None,
        });
        let metrics = Arc::new(Metrics::new());
        let registry = SourceRegistry::new(
            client.clone(),
            EnvPolicy::from_globs::<&str>(&[]).unwrap(),
            files.path().to_path_buf(),
            metrics.clone(),
        );
        let ctx = Arc::new(Ctx::new(
            client,
            config,
            HmacKey::new(vec![7; 32]),
            metrics,
            registry,
        ));
        Rig { server, ctx, files }
    }

    /// Stores YAML documents in the fake (in-process, uncounted); returns them as stored.
    pub fn put(&self, yaml: &str) -> Vec<Value> {
        self.server.apply_yaml(yaml).unwrap()
    }

    /// A Dotenv file `name` in the file root holding `body`.
    pub fn file(&self, name: &str, body: &str) -> String {
        let path = self.files.path().join(name);
        std::fs::write(&path, body).unwrap();
        path.display().to_string()
    }

    /// A Dotenv file source `name` reading file `file`, stored and known to the context.
    pub fn file_source(&self, name: &str, file: &str, body: &str) -> ObjKey {
        let path = self.file(file, body);
        let yaml = format!(
            "apiVersion: secretsync.dev/v1alpha1\nkind: SecretSource\nmetadata: {{name: {name}, namespace: {NS}}}\nspec: {{file: {{path: \"{path}\", format: Dotenv}}}}\n"
        );
        self.source(&yaml)
    }

    /// Stores a SecretSource and puts it into the context's store (as its watch would).
    pub fn source(&self, yaml: &str) -> ObjKey {
        let stored = self.put(yaml).remove(0);
        let src: SecretSource = serde_json::from_value(stored).unwrap();
        let key = ObjKey::new(NS, src.metadata.name.clone().unwrap());
        self.ctx.sources.upsert(key.clone(), src);
        key
    }

    /// Stores a SecretBinding and puts it into the context's store.
    pub fn binding(&self, yaml: &str) -> ObjKey {
        let stored = self.put(yaml).remove(0);
        self.refresh_binding_value(stored)
    }

    fn refresh_binding_value(&self, stored: Value) -> ObjKey {
        let b: SecretBinding = serde_json::from_value(stored).unwrap();
        let key = ObjKey::new(NS, b.metadata.name.clone().unwrap());
        self.ctx.bindings.upsert(key.clone(), b);
        key
    }

    /// Re-reads a binding from the fake into the store (e.g. after a status write).
    pub fn reload_binding(&self, key: &ObjKey) -> SecretBinding {
        let v = self
            .server
            .object("secretsync.dev", "secretbindings", Some(NS), &key.name)
            .unwrap();
        self.refresh_binding_value(v);
        (*self.ctx.bindings.get(key).unwrap()).clone()
    }

    /// Re-reads a source from the fake into the store.
    pub fn reload_source(&self, key: &ObjKey) -> SecretSource {
        let v = self
            .server
            .object("secretsync.dev", "secretsources", Some(NS), &key.name)
            .unwrap();
        let src: SecretSource = serde_json::from_value(v).unwrap();
        self.ctx.sources.upsert(key.clone(), src.clone());
        src
    }

    /// The stored Secret `name`, if any.
    pub fn secret(&self, name: &str) -> Option<Value> {
        self.server.object("", "secrets", Some(NS), name)
    }

    /// A Secret's data, decoded.
    pub fn secret_data(&self, name: &str) -> BTreeMap<String, String> {
        use base64::Engine;
        let s = self.secret(name).unwrap();
        s["data"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(v.as_str().unwrap())
                            .unwrap();
                        (k.clone(), String::from_utf8(bytes).unwrap())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Feeds the managed-Secret index the stored Secret's metadata (as its watch would).
    pub fn watch_sees_secret(&self, name: &str) {
        let v = self.secret(name).unwrap();
        let meta: PartialObjectMeta<Secret> = serde_json::from_value(serde_json::json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": v["metadata"]
        }))
        .unwrap();
        self.ctx
            .managed
            .upsert(&ObjKey::new(NS, name), ManagedSecret::of(&meta));
    }

    /// Requests made since the last reset, as sorted `verb resource` → count, so a test
    /// states exactly which writes (and reads) a reconcile made.
    pub fn requests(&self) -> BTreeMap<String, u64> {
        self.server
            .counts()
            .into_iter()
            .map(|((verb, resource), n)| (format!("{verb} {resource}"), n))
            .collect()
    }

    /// `requests()` expected: pairs of `verb resource` and count.
    pub fn expect(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect()
    }

    /// Counts the requests of one reconcile (`run`, not yet started) from zero, and asserts
    /// its result and exactly the requests it made; returns what it decided.
    pub async fn reconciles(
        &self,
        run: impl Future<Output = Reconciled>,
        result: ReconcileResult,
        requests: &[(&str, u64)],
    ) -> Reconciled {
        self.server.reset_counts();
        let r = run.await;
        assert_eq!(r.result, result, "{r:?}");
        assert_eq!(self.requests(), Self::expect(requests), "{r:?}");
        r
    }

    /// Stores Secret `name` holding `data` (a YAML flow map of base64 values), written by
    /// someone other than the operator.
    pub fn put_secret(&self, name: &str, data: &str) {
        self.put(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {NS}}}\ndata: {data}\n"
        ));
    }

    /// The YAML of a SecretBinding `name` on source `source` with `data` (a YAML flow list).
    pub fn binding_yaml(name: &str, source: &str, data: &str) -> String {
        format!(
            "apiVersion: secretsync.dev/v1alpha1\nkind: SecretBinding\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n  sourceRef: {{name: {source}}}\n  data: {data}\n"
        )
    }

    /// The binding's Ready condition as stored: (status, reason, message).
    pub fn ready(&self, key: &ObjKey) -> (String, String, String) {
        let v = self
            .server
            .object("secretsync.dev", "secretbindings", Some(NS), &key.name)
            .unwrap();
        let c = v["status"]["conditions"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["type"] == "Ready").cloned())
            .unwrap_or(Value::Null);
        let s = |f: &str| c[f].as_str().unwrap_or_default().to_string();
        (s("status"), s("reason"), s("message"))
    }
}
