//! The environment an end-to-end test runs in: the fake API server, or the real cluster
//! named by `SECRETSYNC_E2E_KUBECONFIG`. Everything a test sets up goes through the
//! client (server-side apply of any kind, resolved by discovery), so the same test runs
//! unchanged on both; only fault injection and request counters need the fake.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::discovery::Scope;
use serde_json::{Value, json};

use crate::harness::{ChildProcess, wait_for};
use crate::server::{FakeApiServer, TestkitError};

/// Environment variable naming a kubeconfig of a real cluster to run against instead.
pub const E2E_KUBECONFIG_ENV: &str = "SECRETSYNC_E2E_KUBECONFIG";

/// Label on every namespace (and cluster-scoped object) a test creates.
pub const E2E_LABEL: &str = "secretsync.dev/e2e";

/// Which namespaces an operator under test watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchScope {
    /// Only the test's namespace: the chart's `watchNamespaces` mode (Roles).
    Namespace,
    /// Every namespace: the chart's default mode (a ClusterRole).
    AllNamespaces,
}

/// A service account installed with the chart's RBAC, and a kubeconfig that
/// authenticates as it.
#[derive(Debug, Clone)]
pub struct OperatorIdentity {
    /// Kubeconfig with a token of the service account.
    pub kubeconfig: PathBuf,
    /// `system:serviceaccount:NS:NAME`.
    pub user: String,
    /// The Helm release the RBAC was rendered for.
    pub release: String,
}

/// A test environment: the fake API server (or the real cluster named by
/// `SECRETSYNC_E2E_KUBECONFIG`), a kubeconfig file, an admin client and a fresh namespace.
/// On a real cluster, dropping it deletes the namespace and the cluster-scoped objects
/// the test applied.
pub struct TestEnv {
    /// The fake server; `None` against a real cluster.
    pub server: Option<FakeApiServer>,
    /// Admin client for the environment.
    pub client: kube::Client,
    /// Admin kubeconfig file for child processes.
    pub kubeconfig: PathBuf,
    /// The test namespace (random, created at start).
    pub namespace: String,
    kinds: Mutex<HashMap<String, (ApiResource, bool)>>,
    cluster_objects: Mutex<Vec<(ApiResource, String)>>,
    identities: AtomicU32,
    exclusive: bool,
    dir: tempfile::TempDir,
    /// Held for the environment's lifetime on a real cluster (see [`TestEnv::start_exclusive`]).
    _cluster_lock: Option<std::fs::File>,
}

impl std::fmt::Debug for TestEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestEnv")
            .field("fake", &self.server.is_some())
            .field("kubeconfig", &self.kubeconfig)
            .field("namespace", &self.namespace)
            .finish()
    }
}

fn other(e: impl std::fmt::Display) -> TestkitError {
    TestkitError::Other(e.to_string())
}

async fn client_from(path: &Path) -> Result<kube::Client, TestkitError> {
    let kc = kube::config::Kubeconfig::read_from(path)?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    Ok(kube::Client::try_from(config)?)
}

/// Takes the lock that keeps tests on one real cluster apart: shared by ordinary tests,
/// exclusive for a test whose operator watches every namespace.
async fn cluster_lock(exclusive: bool) -> Result<std::fs::File, TestkitError> {
    let path = std::env::temp_dir().join("secretsync-e2e-cluster.lock");
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        if exclusive {
            file.lock()?;
        } else {
            file.lock_shared()?;
        }
        Ok(file)
    })
    .await
    .map_err(other)?
}

impl TestEnv {
    /// Start the environment.
    pub async fn start() -> Result<Self, TestkitError> {
        Self::start_with(false).await
    }

    /// Start an environment whose operators may watch every namespace. On a real cluster
    /// such an operator would act on every other test's objects (and rewrite their Secrets
    /// with its own HMAC key), so this waits until no other test runs and keeps them out
    /// until dropped. On the fake every test has a server of its own.
    pub async fn start_exclusive() -> Result<Self, TestkitError> {
        Self::start_with(true).await
    }

    /// Whether this environment was started with [`TestEnv::start_exclusive`].
    pub fn is_exclusive(&self) -> bool {
        self.exclusive
    }

    async fn start_with(exclusive: bool) -> Result<Self, TestkitError> {
        let real = std::env::var_os(E2E_KUBECONFIG_ENV).is_some_and(|p| !p.is_empty());
        let cluster_lock = match real {
            true => Some(cluster_lock(exclusive).await?),
            false => None,
        };
        let dir = tempfile::tempdir()?;
        let (server, client, kubeconfig) =
            match std::env::var_os(E2E_KUBECONFIG_ENV).filter(|p| !p.is_empty()) {
                Some(path) => {
                    let path = PathBuf::from(path);
                    (None, client_from(&path).await?, path)
                }
                None => {
                    let server = FakeApiServer::start().await?;
                    let path = dir.path().join("kubeconfig");
                    server.write_kubeconfig(&path)?;
                    let client = server.client().await?;
                    (Some(server), client, path)
                }
            };
        let namespace = format!("e2e-{}", crate::util::random_hex(8));
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {"name": namespace, "labels": {E2E_LABEL: "true"}}
        }))
        .map_err(other)?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        Ok(Self {
            server,
            client,
            kubeconfig,
            namespace,
            kinds: Mutex::new(HashMap::new()),
            cluster_objects: Mutex::new(Vec::new()),
            identities: AtomicU32::new(0),
            exclusive,
            dir,
            _cluster_lock: cluster_lock,
        })
    }

    /// Whether this runs against the fake.
    pub fn is_fake(&self) -> bool {
        self.server.is_some()
    }

    /// The fake server, or `Unsupported` against a real cluster (fault injection,
    /// request counts).
    pub fn fake(&self) -> Result<&FakeApiServer, TestkitError> {
        self.server.as_ref().ok_or_else(|| {
            TestkitError::Unsupported("fault injection needs the fake API server".into())
        })
    }

    /// Fail the next `n` matching requests (see [`FakeApiServer::fail_next`]);
    /// `Unsupported` against a real cluster.
    pub fn fail_next(
        &self,
        verb: &str,
        resource: &str,
        n: u32,
        code: u16,
    ) -> Result<(), TestkitError> {
        self.fake()?.fail_next(verb, resource, n, code);
        Ok(())
    }

    /// End every open watch; `Unsupported` against a real cluster.
    pub fn close_watches(&self) -> Result<(), TestkitError> {
        self.fake()?.close_watches();
        Ok(())
    }

    /// Requests seen for a verb and resource; `Unsupported` against a real cluster.
    pub fn count(&self, verb: &str, resource: &str) -> Result<u64, TestkitError> {
        Ok(self.fake()?.count(verb, resource))
    }

    /// A scratch directory removed with the environment.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The API resource of `apiVersion`/`kind` and whether it is namespaced, from discovery.
    pub async fn resource(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<(ApiResource, bool), TestkitError> {
        let key = format!("{api_version}/{kind}");
        if let Some(found) = crate::http::lock(&self.kinds).get(&key) {
            return Ok(found.clone());
        }
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (ar, caps) = kube::discovery::pinned_kind(&self.client, &gvk).await?;
        let found = (ar, caps.scope == Scope::Namespaced);
        crate::http::lock(&self.kinds).insert(key, found.clone());
        Ok(found)
    }

    /// An API for objects of `apiVersion`/`kind`, in `ns` (default: the test's namespace)
    /// when namespaced.
    pub async fn api(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
    ) -> Result<Api<DynamicObject>, TestkitError> {
        let (ar, namespaced) = self.resource(api_version, kind).await?;
        Ok(if namespaced {
            Api::namespaced_with(self.client.clone(), ns.unwrap_or(&self.namespace), &ar)
        } else {
            Api::all_with(self.client.clone(), &ar)
        })
    }

    /// Server-side applies (manager `e2e`, forced) every document of a YAML stream, of any
    /// kind the server serves; namespaced objects without a namespace land in the test's.
    pub async fn apply(&self, yaml: &str) -> Result<Vec<DynamicObject>, TestkitError> {
        self.apply_as("e2e", yaml).await
    }

    /// [`TestEnv::apply`] with a chosen field manager.
    pub async fn apply_as(
        &self,
        manager: &str,
        yaml: &str,
    ) -> Result<Vec<DynamicObject>, TestkitError> {
        let mut out = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(yaml) {
            let v: Value = serde::Deserialize::deserialize(doc)?;
            if !v.is_null() {
                out.push(self.apply_value(manager, v).await?);
            }
        }
        Ok(out)
    }

    /// Server-side applies one object.
    pub async fn apply_value(
        &self,
        manager: &str,
        mut obj: Value,
    ) -> Result<DynamicObject, TestkitError> {
        let field = |k: &str| {
            obj.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let (api_version, kind) = (field("apiVersion"), field("kind"));
        let name = obj["metadata"]["name"]
            .as_str()
            .ok_or_else(|| other(format!("apply: a {kind} without metadata.name")))?
            .to_owned();
        let (ar, namespaced) = self.resource(&api_version, &kind).await?;
        let api: Api<DynamicObject> = if namespaced {
            let ns = obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or(&self.namespace)
                .to_owned();
            obj["metadata"]["namespace"] = json!(ns);
            Api::namespaced_with(self.client.clone(), &ns, &ar)
        } else {
            if !self.is_fake() {
                obj["metadata"]["labels"][E2E_LABEL] = json!("true");
                crate::http::lock(&self.cluster_objects).push((ar.clone(), name.clone()));
            }
            Api::all_with(self.client.clone(), &ar)
        };
        api.patch(
            &name,
            &PatchParams::apply(manager).force(),
            &Patch::Apply(&obj),
        )
        .await
        .map_err(|e| other(format!("applying {kind} {name}: {e}")))
    }

    /// Install (server-side apply) the secretsync CRDs and wait until they are established.
    pub async fn install_crds(&self) -> Result<(), TestkitError> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let pp = PatchParams::apply("secretsync-testkit").force();
        let mut names = Vec::new();
        for crd in secretsync_api::crd::crds() {
            let name = crd.metadata.name.clone().unwrap_or_default();
            api.patch(&name, &pp, &Patch::Apply(&crd)).await?;
            names.push(name);
        }
        for name in names {
            let api = api.clone();
            wait_for(Duration::from_secs(30), || {
                let api = api.clone();
                let name = name.clone();
                async move {
                    api.get_opt(&name).await.ok().flatten().is_some_and(|c| {
                        c.status
                            .and_then(|s| s.conditions)
                            .unwrap_or_default()
                            .iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                    })
                }
            })
            .await?;
        }
        Ok(())
    }

    /// Where the operator is installed (its Lease, HMAC key and ServiceAccount): a
    /// namespace of its own beside the test's, as in a real installation, so nothing the
    /// chart grants only there can make a write in the test's namespace pass.
    pub fn operator_namespace(&self) -> String {
        format!("{}-op", self.namespace)
    }

    /// Installs the operator's ServiceAccount, RBAC and admission policy exactly as the
    /// Helm chart renders them (Helm's engine, release in [`TestEnv::operator_namespace`],
    /// `values` on top of the scope's), and returns a kubeconfig holding a token of that
    /// ServiceAccount. On a real cluster the cluster-scoped ones are deleted with the
    /// environment, like everything it applies.
    pub async fn operator_identity(
        &self,
        scope: WatchScope,
        values: &Value,
    ) -> Result<OperatorIdentity, TestkitError> {
        let op_ns = self.operator_namespace();
        self.apply_value(
            "e2e",
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": op_ns, "labels": {E2E_LABEL: "true"}}}),
        )
        .await?;
        let suffix = self.namespace.trim_start_matches("e2e-");
        let release = format!("ss-{suffix}");
        let mut all = match scope {
            WatchScope::Namespace => json!({"watchNamespaces": [self.namespace]}),
            WatchScope::AllNamespaces => json!({}),
        };
        merge(&mut all, values);
        let rendered = crate::chart::render(&all, &release, &op_ns)?;
        let installed = rendered.yaml_of(&[
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "ClusterRole",
            "ClusterRoleBinding",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ])?;
        self.apply_as("helm", &installed).await?;
        let sa = rendered
            .of_kind("ServiceAccount")
            .first()
            .and_then(|o| o["metadata"]["name"].as_str())
            .map(str::to_owned)
            .ok_or_else(|| other("the chart rendered no ServiceAccount"))?;
        let req: TokenRequest =
            serde_json::from_value(json!({"spec": {"expirationSeconds": 7200}})).map_err(other)?;
        let token = Api::<ServiceAccount>::namespaced(self.client.clone(), &op_ns)
            .create_token_request(&sa, &PostParams::default(), &req)
            .await?
            .status
            .and_then(|s| s.token)
            .ok_or_else(|| other("TokenRequest answered without a token"))?;
        let n = self.identities.fetch_add(1, Ordering::Relaxed);
        let kubeconfig = self.dir().join(format!("operator-{n}.kubeconfig"));
        std::fs::write(&kubeconfig, self.kubeconfig_with_token(&token)?)?;
        Ok(OperatorIdentity {
            kubeconfig,
            user: format!("system:serviceaccount:{op_ns}:{sa}"),
            release,
        })
    }

    /// The admin kubeconfig's current cluster, authenticating with `token` instead.
    fn kubeconfig_with_token(&self, token: &str) -> Result<String, TestkitError> {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let ctx_name = kc.current_context.clone().unwrap_or_default();
        let cluster_name = kc
            .contexts
            .iter()
            .find(|c| c.name == ctx_name)
            .and_then(|c| c.context.as_ref())
            .map(|c| c.cluster.clone())
            .ok_or_else(|| other("kubeconfig: no current context"))?;
        let cluster = kc
            .clusters
            .iter()
            .find(|c| c.name == cluster_name)
            .ok_or_else(|| other(format!("kubeconfig: no cluster {cluster_name}")))?;
        let doc = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [serde_json::to_value(cluster).map_err(other)?],
            "users": [{"name": "operator", "user": {"token": token}}],
            "contexts": [{"name": "operator", "context": {"cluster": cluster_name, "user": "operator", "namespace": self.namespace}}],
            "current-context": "operator",
        });
        Ok(serde_yaml::to_string(&doc)?)
    }

    /// Spawn `program` with `KUBECONFIG` pointing at this environment.
    pub fn spawn(&self, program: &Path, args: &[&str]) -> Result<ChildProcess, TestkitError> {
        let mut cmd = Command::new(program);
        cmd.args(args).env("KUBECONFIG", &self.kubeconfig);
        ChildProcess::spawn(cmd)
    }

    /// Delete the test namespace and the cluster-scoped objects it applied.
    pub async fn cleanup(&self) -> Result<(), TestkitError> {
        let objects = crate::http::lock(&self.cluster_objects).clone();
        cleanup(&self.client, &self.namespace, &objects).await
    }
}

async fn cleanup(
    client: &kube::Client,
    namespace: &str,
    cluster_objects: &[(ApiResource, String)],
) -> Result<(), TestkitError> {
    // The test's operator is gone: nobody would remove the cleanup finalizer of a Merge
    // binding, and the namespace would never finish terminating.
    let bindings: Api<secretsync_api::SecretBinding> = Api::namespaced(client.clone(), namespace);
    if let Ok(list) = bindings.list(&Default::default()).await {
        for b in list
            .items
            .iter()
            .filter(|b| b.metadata.finalizers.is_some())
        {
            let name = b.metadata.name.clone().unwrap_or_default();
            let patch = json!({"metadata": {"finalizers": null}});
            let _ = bindings
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
        }
    }
    for (ar, name) in cluster_objects {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), ar);
        let _ = api.delete(name, &DeleteParams::default()).await;
    }
    match Api::<Namespace>::all(client.clone())
        .delete(namespace, &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

impl Drop for TestEnv {
    /// On a real cluster nothing else removes what a test made. The test's runtime is
    /// blocked here, so the deletes run on a thread of their own with a fresh client.
    fn drop(&mut self) {
        if self.is_fake() {
            return;
        }
        let kubeconfig = self.kubeconfig.clone();
        let namespace = self.namespace.clone();
        let objects = crate::http::lock(&self.cluster_objects).clone();
        let done = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(client) = client_from(&kubeconfig).await {
                    let _ = cleanup(&client, &namespace, &objects).await;
                }
            });
        });
        let _ = done.join();
    }
}

/// Deep-merges `patch` into `base` (objects merge, everything else replaces).
fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_merge_deeply() {
        let mut v = json!({"watchNamespaces": ["a"], "rbac": {"create": true}});
        merge(
            &mut v,
            &json!({"rbac": {"vaultKubernetesAuth": true}, "watchNamespaces": ["b"]}),
        );
        assert_eq!(
            v,
            json!({"watchNamespaces": ["b"], "rbac": {"create": true, "vaultKubernetesAuth": true}})
        );
    }
}
