//! `secretsync render`: resolve bindings from manifests locally and print the Secrets the
//! controller would write. No cluster is needed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use secretsync_api::manifest::{Manifest, parse_stream};
use secretsync_api::{
    ClusterSecretBinding, ClusterSecretSource, SecretBinding, SecretSource, SecretSourceSpec,
    SourceKind, parse_duration,
};
use secretsync_backends::cache::NoopObserver;
use secretsync_backends::env::EnvPolicy;
use secretsync_backends::hash::HmacKey;
use secretsync_backends::kubernetes::{ClusterSecrets, SecretDataMap};
use secretsync_backends::template_from::{ConfigMapData, TemplateSet};
use secretsync_backends::{
    BackendError, BuildContext, CredentialRef, Credentials, ReadOptions, SecretValue, SourceCache,
    build_backend, resolve,
};
use secretsync_controller::cluster_binding::plan::desired_binding;
use secretsync_controller::source::kubernetes::secret_data;

/// Inputs of one render.
pub struct RenderOptions {
    /// Files or folders (searched recursively for `.yaml`, `.yml`, `.json`).
    pub inputs: Vec<PathBuf>,
    /// Namespace for objects that have none.
    pub namespace: String,
    /// Root the file backend is confined to.
    pub file_root: PathBuf,
    /// HMAC key for the data-hash annotation.
    pub hmac_key: HmacKey,
}

/// What a render produced: Secret manifests and per-binding failures.
pub struct RenderOutput {
    /// Rendered Secrets, in input order.
    pub secrets: Vec<Secret>,
    /// `namespace/name: error` for every binding that failed.
    pub errors: Vec<String>,
    /// `namespace/name: …` for bindings that rendered without some optional keys.
    pub notes: Vec<String>,
}

fn collect_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for input in inputs {
        let meta =
            std::fs::metadata(input).with_context(|| format!("cannot read {}", input.display()))?;
        if meta.is_dir() {
            let mut found = Vec::new();
            walk(input, &mut found)?;
            found.sort();
            out.extend(found);
        } else {
            out.push(input.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

/// Credentials answered from Secret manifests given to `render`, with `VAULT_TOKEN` as a
/// fallback for Vault token auth.
struct ManifestCredentials {
    /// A SecretSource's namespace; `None` for a cluster source (references name theirs).
    namespace: Option<String>,
    secrets: Arc<BTreeMap<(String, String), Secret>>,
}

#[async_trait]
impl Credentials for ManifestCredentials {
    async fn secret_value(&self, at: CredentialRef<'_>) -> Result<SecretValue, BackendError> {
        let (namespace, name, key) = (at.namespace, at.name, at.key);
        let Some(ns) = namespace.or(self.namespace.as_deref()).map(str::to_string) else {
            return Err(BackendError::invalid_config(format!(
                "credential Secret {name:?} names no namespace; a ClusterSecretSource must name it"
            )));
        };
        let secret = self
            .secrets
            .get(&(ns.clone(), name.to_string()))
            .ok_or_else(|| {
                BackendError::invalid_config(format!(
                    "credential Secret {name:?} was not among the manifests given to render (namespace {ns:?})"
                ))
            })?;
        if let Some(v) = secret.data.as_ref().and_then(|d| d.get(key)) {
            return Ok(SecretValue::new(v.0.clone()));
        }
        if let Some(v) = secret.string_data.as_ref().and_then(|d| d.get(key)) {
            return Ok(SecretValue::new(v.as_bytes().to_vec()));
        }
        Err(BackendError::invalid_config(format!(
            "credential Secret {name:?} has no key {key:?}"
        )))
    }

    async fn vault_token_fallback(&self) -> Option<SecretValue> {
        std::env::var("VAULT_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .map(SecretValue::from_string)
    }
}

/// Secrets for the kubernetes backend, from the input files.
struct ManifestSecrets(Arc<BTreeMap<(String, String), Secret>>);

#[async_trait]
impl ClusterSecrets for ManifestSecrets {
    async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<SecretDataMap>>, BackendError> {
        Ok(self
            .0
            .get(&(namespace.to_string(), name.to_string()))
            .map(|s| Arc::new(secret_data(&mut s.clone()))))
    }

    async fn names(&self, namespace: &str) -> Result<Vec<String>, BackendError> {
        Ok(self
            .0
            .keys()
            .filter(|(ns, _)| ns == namespace)
            .map(|(_, name)| name.clone())
            .collect())
    }
}

fn ns_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    default: &str,
) -> String {
    meta.namespace
        .clone()
        .unwrap_or_else(|| default.to_string())
}

/// The objects of the input manifests, by kind.
#[derive(Default)]
struct Inputs {
    sources: BTreeMap<(String, String), SecretSource>,
    cluster_sources: BTreeMap<String, ClusterSecretSource>,
    secrets: BTreeMap<(String, String), Secret>,
    /// ConfigMaps' `data`, for `templateFrom`.
    config_maps: BTreeMap<(String, String), ConfigMapData>,
    bindings: Vec<SecretBinding>,
    cluster_bindings: Vec<ClusterSecretBinding>,
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
}

impl Inputs {
    fn read(files: &[PathBuf], default_ns: &str) -> Result<Self> {
        let mut i = Inputs::default();
        let name = |m: &ObjectMeta| m.name.clone().unwrap_or_default();
        for file in files {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let docs = parse_stream(&text).with_context(|| format!("{}", file.display()))?;
            for doc in docs {
                match doc {
                    Manifest::Source(s) => {
                        let key = (ns_of(&s.metadata, default_ns), name(&s.metadata));
                        i.sources.insert(key, *s);
                    }
                    Manifest::ClusterSource(s) => {
                        i.cluster_sources.insert(name(&s.metadata), *s);
                    }
                    Manifest::Secret(s) => {
                        let key = (ns_of(&s.metadata, default_ns), name(&s.metadata));
                        i.secrets.insert(key, *s);
                    }
                    Manifest::ConfigMap(c) => {
                        let key = (ns_of(&c.metadata, default_ns), name(&c.metadata));
                        i.config_maps.insert(key, c.data.unwrap_or_default());
                    }
                    Manifest::Binding(mut b) => {
                        b.metadata.namespace = Some(ns_of(&b.metadata, default_ns));
                        i.bindings.push(*b);
                    }
                    Manifest::ClusterBinding(b) => i.cluster_bindings.push(*b),
                    Manifest::Namespace(n) => {
                        let labels = n.metadata.labels.clone().unwrap_or_default();
                        i.namespaces.insert(name(&n.metadata), labels);
                    }
                    Manifest::Other { .. } => {}
                }
            }
        }
        // Each ClusterSecretBinding stamps its SecretBinding into the Namespace manifests
        // its selector matches and the namespaces it lists by name, as `run` would.
        for csb in &i.cluster_bindings {
            let mut targets: BTreeSet<String> = i
                .namespaces
                .iter()
                .filter(|(n, labels)| csb.spec.selects(n, labels))
                .map(|(n, _)| n.clone())
                .collect();
            targets.extend(csb.spec.selected.namespaces.iter().cloned());
            for ns in targets {
                i.bindings.push(desired_binding(csb, &ns));
            }
        }
        Ok(i)
    }

    fn labels(&self, ns: &str) -> BTreeMap<String, String> {
        self.namespaces.get(ns).cloned().unwrap_or_default()
    }
}

/// A binding's source: its spec, credential namespace and cache key.
type Found<'a> = (&'a SecretSourceSpec, Option<String>, (String, String));

/// The source a binding reads: its spec, the namespace its credential references resolve
/// in (`None` for a cluster source), and its key among the built caches; or why not.
fn source_for<'a>(
    inputs: &'a Inputs,
    binding: &SecretBinding,
    cluster_specs: &'a BTreeMap<String, SecretSourceSpec>,
) -> Result<Found<'a>, String> {
    let ns = binding.metadata.namespace.clone().unwrap_or_default();
    let src = &binding.spec.source_ref.name;
    match binding.spec.source_ref.kind {
        SourceKind::SecretSource => {
            let key = (ns.clone(), src.clone());
            let s = inputs.sources.get(&key).ok_or_else(|| {
                format!("SourceNotFound: SecretSource {src:?} is not among the manifests (namespace {ns:?})")
            })?;
            Ok((&s.spec, Some(ns), key))
        }
        SourceKind::ClusterSecretSource => {
            let s = inputs.cluster_sources.get(src).ok_or_else(|| {
                format!("SourceNotFound: ClusterSecretSource {src:?} is not among the manifests")
            })?;
            if !s.spec.admits(&ns, &inputs.labels(&ns)) {
                return Err(format!(
                    "SourceNotAllowed: ClusterSecretSource {src:?} does not admit namespace {ns:?} (labels from the Namespace manifests given, if any)"
                ));
            }
            let spec = cluster_specs
                .get(src)
                .ok_or_else(|| format!("ClusterSecretSource {src:?} is not among the manifests"))?;
            // Cluster sources are keyed apart from any namespace's sources.
            Ok((spec, None, (String::new(), src.clone())))
        }
    }
}

/// Runs a render.
pub async fn render(opts: &RenderOptions) -> Result<RenderOutput> {
    let files = collect_files(&opts.inputs)?;
    if files.is_empty() {
        bail!("no .yaml, .yml or .json files found in the given paths");
    }
    let mut inputs = Inputs::read(&files, &opts.namespace)?;
    let secrets = Arc::new(std::mem::take(&mut inputs.secrets));
    let cluster_specs: BTreeMap<String, SecretSourceSpec> = inputs
        .cluster_sources
        .iter()
        .map(|(n, s)| (n.clone(), s.spec.source_spec()))
        .collect();

    let mut caches: BTreeMap<(String, String), Result<Arc<SourceCache>, BackendError>> =
        BTreeMap::new();
    let mut out = RenderOutput {
        secrets: Vec::new(),
        errors: Vec::new(),
        notes: Vec::new(),
    };
    for binding in &inputs.bindings {
        let ns = binding.metadata.namespace.clone().unwrap_or_default();
        let name = binding.metadata.name.clone().unwrap_or_default();
        let kind = binding.spec.source_ref.kind.as_str();
        let src_name = &binding.spec.source_ref.name;
        let (spec, cred_ns, source_key) = match source_for(&inputs, binding, &cluster_specs) {
            Ok(found) => found,
            Err(e) => {
                out.errors.push(format!("SecretBinding {ns}/{name}: {e}"));
                continue;
            }
        };
        if !caches.contains_key(&source_key) {
            let built = build_cache(spec, cred_ns, opts, secrets.clone()).await;
            caches.insert(source_key.clone(), built);
        }
        let cache = match &caches[&source_key] {
            Ok(c) => c.clone(),
            Err(e) => {
                out.errors.push(format!(
                    "SecretBinding {ns}/{name}: {kind} {src_name:?}: {e}"
                ));
                continue;
            }
        };
        // templateFrom ConfigMaps come from the input files, like credential Secrets.
        let templates = TemplateSet::load(binding.spec.target.template.as_ref(), &ns, |cm| {
            inputs.config_maps.get(&(ns.clone(), cm.to_string()))
        });
        let templates = match templates {
            Ok(t) => t,
            Err(e) => {
                let hint = match e.reason {
                    secretsync_backends::Reason::TemplateNotFound => {
                        " (render reads ConfigMaps from the manifests given with -f)"
                    }
                    _ => "",
                };
                out.errors
                    .push(format!("SecretBinding {ns}/{name}: {e}{hint}"));
                continue;
            }
        };
        let target = binding.target_name();
        let own = resolve::OwnSecret {
            namespace: &ns,
            name: &target,
        };
        let resolved = resolve::resolve_with(
            &binding.spec,
            &templates,
            &cache,
            ReadOptions::within(Duration::MAX),
            Some(own),
        )
        .await;
        match resolved.data {
            Ok(data) => {
                // The same Secret object the controller server-side applies.
                let hash = opts.hmac_key.data_hash(&data);
                let desired = secretsync_controller::binding::plan::desired_secret(
                    binding,
                    &hash,
                    &resolved.metadata,
                );
                out.secrets
                    .push(secretsync_controller::binding::plan::apply_object(
                        &desired, &data,
                    ));
                if !resolved.missing_keys.is_empty() {
                    out.notes.push(format!(
                        "SecretBinding {ns}/{name}: optional keys not found (left out): {}",
                        resolved.missing_keys.join(", ")
                    ));
                }
            }
            Err(e) => out.errors.push(format!("SecretBinding {ns}/{name}: {e}")),
        }
    }
    Ok(out)
}

async fn build_cache(
    spec: &SecretSourceSpec,
    namespace: Option<String>,
    opts: &RenderOptions,
    secrets: Arc<BTreeMap<(String, String), Secret>>,
) -> Result<Arc<SourceCache>, BackendError> {
    let ctx = BuildContext {
        env_allow: EnvPolicy::allow_all(),
        file_root: opts.file_root.clone(),
        cluster_secrets: Arc::new(ManifestSecrets(secrets.clone())),
        credentials: Arc::new(ManifestCredentials {
            namespace: namespace.clone(),
            secrets,
        }),
        namespace,
    };
    let ttl = match spec.cache.as_ref().and_then(|c| c.ttl.as_deref()) {
        Some(t) => parse_duration(t)
            .map_err(|e| BackendError::invalid_config(format!("spec.cache.ttl: {e}")))?,
        None => Duration::ZERO,
    };
    let backend = build_backend(spec, &ctx).await?;
    Ok(Arc::new(SourceCache::new(
        backend,
        ttl,
        Arc::new(NoopObserver),
    )))
}

/// Serialises Secrets as a multi-document YAML stream.
pub fn to_yaml(secrets: &[Secret]) -> Result<String> {
    let mut out = String::new();
    for s in secrets {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(s)?);
    }
    Ok(out)
}
