//! The fake API server: start/stop, kubeconfig, in-process control of faults and counters.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;

use crate::http::{self, FailRule, Faults, LatencyRule, Shared, lock};
use crate::store::{Inner, WriteOpts, WriteTarget};

/// Errors of the testkit.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// I/O (sockets, files, processes).
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// kube client errors.
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
    /// kubeconfig errors.
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// YAML errors.
    #[error("YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// The fake rejected an in-process request.
    #[error("API: {0}")]
    Api(Box<crate::status::ApiError>),
    /// Generating the secretsync CRDs failed.
    #[error("CRDs: {0}")]
    Crd(#[from] secretsync_api::crd::CrdError),
    /// The operation is not available (e.g. fault injection against a real cluster).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A wait timed out.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl From<crate::status::ApiError> for TestkitError {
    fn from(e: crate::status::ApiError) -> Self {
        Self::Api(Box::new(e))
    }
}

/// Server options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Watch events kept per resource; older resource versions get `410 Gone`.
    pub history_limit: usize,
    /// Period of `BOOKMARK` events on watches that allow them.
    pub bookmark_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            history_limit: 1000,
            bookmark_interval: Duration::from_secs(5),
        }
    }
}

/// A running fake Kubernetes API server. Stops when dropped.
pub struct FakeApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FakeApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeApiServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl FakeApiServer {
    /// Start on a random loopback port with default options.
    pub async fn start() -> Result<Self, TestkitError> {
        Self::start_with(Options::default()).await
    }

    /// Start with options.
    pub async fn start_with(opts: Options) -> Result<Self, TestkitError> {
        let listener = tokio::net::TcpListener::bind(opts.listen).await?;
        let addr = listener.local_addr()?;
        let mut inner = Inner::new(opts.history_limit);
        inner.seed(crate::rbac::bootstrap_policy());
        let (paused, _) = watch::channel(false);
        let (close_epoch, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            inner: Mutex::new(inner),
            counts: Mutex::new(BTreeMap::new()),
            group_counts: Mutex::new(BTreeMap::new()),
            agent_calls: Mutex::new(BTreeMap::new()),
            faults: Mutex::new(Faults::default()),
            paused,
            close_epoch,
            bookmark_interval: Mutex::new(opts.bookmark_interval),
            addr: addr.to_string(),
        });
        let app = axum::Router::new()
            .fallback(http::handle)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("fake API server stopped: {e}");
            }
        });
        Ok(Self { shared, addr, task })
    }

    /// Listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig pointing at this server (the admin token, namespace `default`).
    pub fn kubeconfig_yaml(&self) -> String {
        kubeconfig_for(&self.url())
    }

    /// Write the kubeconfig to `path`.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), TestkitError> {
        std::fs::write(path, self.kubeconfig_yaml())?;
        Ok(())
    }

    /// A kube client for this server.
    pub async fn client(&self) -> Result<kube::Client, TestkitError> {
        let kc = kube::config::Kubeconfig::from_yaml(&self.kubeconfig_yaml())?;
        let config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// Requests seen so far per (verb, resource), e.g. `("patch", "secretbindings/status")`.
    pub fn counts(&self) -> BTreeMap<(String, String), u64> {
        lock(&self.shared.counts).clone()
    }

    /// Requests seen so far per (verb, API group, resource); the group is `""` for core,
    /// e.g. `("create", "events.k8s.io", "events")` next to `("create", "", "events")`.
    pub fn counts_by_group(&self) -> BTreeMap<(String, String, String), u64> {
        lock(&self.shared.group_counts).clone()
    }

    /// Requests seen so far for one verb and resource.
    pub fn count(&self, verb: &str, resource: &str) -> u64 {
        lock(&self.shared.counts)
            .get(&(verb.to_owned(), resource.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Every (verb, resource) requested by clients whose `User-Agent` starts with `prefix`
    /// (e.g. `secretsync/` for the operator), since the start or the last reset.
    pub fn calls_by_agent(&self, prefix: &str) -> BTreeSet<(String, String)> {
        lock(&self.shared.agent_calls)
            .keys()
            .filter(|(agent, _, _, _)| agent.starts_with(prefix))
            .map(|(_, _, verb, resource)| (verb.clone(), resource.clone()))
            .collect()
    }

    /// Requests for one verb and resource by clients whose `User-Agent` starts with
    /// `prefix`, since the start or the last reset.
    pub fn count_by_agent(&self, prefix: &str, verb: &str, resource: &str) -> u64 {
        lock(&self.shared.agent_calls)
            .iter()
            .filter(|((agent, _, v, r), _)| agent.starts_with(prefix) && v == verb && r == resource)
            .map(|(_, n)| n)
            .sum()
    }

    /// The users (e.g. `system:serviceaccount:NS:NAME`) that clients whose `User-Agent`
    /// starts with `prefix` authenticated as, since the start or the last reset.
    pub fn users_by_agent(&self, prefix: &str) -> BTreeSet<String> {
        lock(&self.shared.agent_calls)
            .keys()
            .filter(|(agent, _, _, _)| agent.starts_with(prefix))
            .map(|(_, user, _, _)| user.clone())
            .collect()
    }

    /// Reset the request counters.
    pub fn reset_counts(&self) {
        lock(&self.shared.counts).clear();
        lock(&self.shared.group_counts).clear();
        lock(&self.shared.agent_calls).clear();
    }

    /// Fail the next `n` requests matching `verb` and `resource` (`"*"` matches any) with
    /// `code` and a `Status` body.
    pub fn fail_next(&self, verb: &str, resource: &str, n: u32, code: u16) {
        lock(&self.shared.faults).fail.push(FailRule {
            verb: Some(verb.to_owned()),
            resource: Some(resource.to_owned()),
            remaining: n,
            code,
            message: format!("injected fault ({code})"),
        });
    }

    /// Delay matching requests by `delay` (`count` = how many, `None` = until cleared).
    pub fn add_latency(&self, verb: &str, resource: &str, delay: Duration, count: Option<u32>) {
        lock(&self.shared.faults).latency.push(LatencyRule {
            verb: Some(verb.to_owned()),
            resource: Some(resource.to_owned()),
            delay,
            remaining: count,
        });
    }

    /// Remove all fault and latency rules.
    pub fn clear_faults(&self) {
        let mut f = lock(&self.shared.faults);
        f.fail.clear();
        f.latency.clear();
    }

    /// End every open watch now (clients see the stream end and re-watch).
    pub fn close_watches(&self) {
        self.shared.close_epoch.send_modify(|e| *e += 1);
    }

    /// Hold every incoming request until [`FakeApiServer::resume`].
    pub fn pause(&self) {
        self.shared.paused.send_replace(true);
    }

    /// Release held requests.
    pub fn resume(&self) {
        self.shared.paused.send_replace(false);
    }

    /// Make every resource version issued so far too old: a watch resuming from one gets
    /// `410 Gone` (as a watch `ERROR` event), like after an etcd compaction.
    pub fn expire_resource_versions(&self) {
        lock(&self.shared.inner).expire_all();
    }

    /// Bound the watch history per resource (older resource versions get `410 Gone`).
    pub fn set_history_limit(&self, n: usize) {
        lock(&self.shared.inner).set_history_limit(n);
    }

    /// Period of `BOOKMARK` events for watches started from now on.
    pub fn set_bookmark_interval(&self, d: Duration) {
        *lock(&self.shared.bookmark_interval) = d;
    }

    /// Current resource version of the server.
    pub fn resource_version(&self) -> u64 {
        lock(&self.shared.inner).rv
    }

    /// The stored object, if any (`group` empty for core).
    pub fn object(&self, group: &str, plural: &str, ns: Option<&str>, name: &str) -> Option<Value> {
        self.inspect(group, plural, ns, name, Value::clone)
    }

    /// Runs `f` on the stored object, if any, without copying it (cheap enough to poll
    /// thousands of objects; `group` empty for core).
    pub fn inspect<T>(
        &self,
        group: &str,
        plural: &str,
        ns: Option<&str>,
        name: &str,
        f: impl FnOnce(&Value) -> T,
    ) -> Option<T> {
        let inner = lock(&self.shared.inner);
        let def = inner
            .registry
            .iter()
            .find(|d| d.group == group && d.plural == plural)
            .cloned()?;
        inner.get(&def, ns, name).map(f)
    }

    /// Create or server-side apply (as manager `testkit`, user the admin) every document of
    /// a YAML stream.
    pub fn apply_yaml(&self, yaml: &str) -> Result<Vec<Value>, TestkitError> {
        let mut out = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(yaml) {
            let v: Value = serde::Deserialize::deserialize(doc)?;
            if v.is_null() {
                continue;
            }
            out.push(self.apply_value(v)?);
        }
        Ok(out)
    }

    fn apply_value(&self, v: Value) -> Result<Value, TestkitError> {
        let av = v
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let (group, version) = match av.split_once('/') {
            Some((g, v)) => (g.to_owned(), v.to_owned()),
            None => (String::new(), av.to_owned()),
        };
        let kind = v.get("kind").and_then(Value::as_str).unwrap_or_default();
        let mut inner = lock(&self.shared.inner);
        let def = inner
            .registry
            .iter()
            .find(|d| d.group == group && d.kind == kind && d.versions.contains(&version))
            .cloned()
            .ok_or_else(|| TestkitError::Other(format!("no resource for {av} {kind}")))?;
        let name = crate::util::meta_str(&v, "name")
            .unwrap_or_default()
            .to_owned();
        let ns = if def.namespaced {
            Some(
                crate::util::meta_str(&v, "namespace")
                    .unwrap_or("default")
                    .to_owned(),
            )
        } else {
            None
        };
        let opts = WriteOpts {
            manager: "testkit".into(),
            dry_run: false,
            force: true,
            strict: false,
            user: Some(crate::rbac::User::admin()),
        };
        let target = WriteTarget {
            def: &def,
            version: &version,
            ns: ns.as_deref(),
            name: &name,
            status: false,
        };
        let (obj, _) = inner.apply(target, v, &opts)?;
        Ok(obj)
    }

    /// Install the secretsync CRDs (in-process; no HTTP requests are counted).
    pub fn install_secretsync_crds(&self) -> Result<(), TestkitError> {
        for (_, yaml) in secretsync_api::crd::crd_files()? {
            self.apply_yaml(&yaml)?;
        }
        Ok(())
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.resume();
        self.close_watches();
        self.task.abort();
    }
}

/// A kubeconfig for a plain-HTTP server URL with the admin token.
pub fn kubeconfig_for(url: &str) -> String {
    kubeconfig_with_token(url, crate::rbac::ADMIN_TOKEN)
}

/// A kubeconfig for a plain-HTTP server URL authenticating with `token`.
pub fn kubeconfig_with_token(url: &str, token: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: secretsync-fake
  cluster:
    server: {url}
users:
- name: secretsync-fake
  user:
    token: {token}
contexts:
- name: secretsync-fake
  context:
    cluster: secretsync-fake
    user: secretsync-fake
    namespace: default
current-context: secretsync-fake
"
    )
}
