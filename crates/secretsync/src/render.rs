//! `secretsync render`: resolve bindings from manifests locally and print the Secrets the
//! controller would write. No cluster is needed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use k8s_openapi::api::core::v1::Secret;
use secretsync_api::manifest::{Manifest, parse_stream};
use secretsync_api::{SecretBinding, SecretSource, parse_duration};
use secretsync_backends::cache::NoopObserver;
use secretsync_backends::env::EnvPolicy;
use secretsync_backends::hash::HmacKey;
use secretsync_backends::{
    BackendError, BuildContext, Credentials, SecretValue, SourceCache, build_backend, resolve,
};

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
    namespace: String,
    secrets: Arc<BTreeMap<(String, String), Secret>>,
}

#[async_trait]
impl Credentials for ManifestCredentials {
    async fn secret_value(&self, name: &str, key: &str) -> Result<SecretValue, BackendError> {
        let secret = self
            .secrets
            .get(&(self.namespace.clone(), name.to_string()))
            .ok_or_else(|| {
                BackendError::invalid_config(format!(
                    "credential Secret {name:?} was not among the manifests given to render (namespace {:?})",
                    self.namespace
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

fn ns_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    default: &str,
) -> String {
    meta.namespace
        .clone()
        .unwrap_or_else(|| default.to_string())
}

/// Runs a render.
pub async fn render(opts: &RenderOptions) -> Result<RenderOutput> {
    let files = collect_files(&opts.inputs)?;
    if files.is_empty() {
        bail!("no .yaml, .yml or .json files found in the given paths");
    }
    let mut sources: BTreeMap<(String, String), SecretSource> = BTreeMap::new();
    let mut secrets: BTreeMap<(String, String), Secret> = BTreeMap::new();
    let mut bindings: Vec<SecretBinding> = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let docs = parse_stream(&text).with_context(|| format!("{}", file.display()))?;
        for doc in docs {
            match doc {
                Manifest::Source(s) => {
                    let key = (
                        ns_of(&s.metadata, &opts.namespace),
                        s.metadata.name.clone().unwrap_or_default(),
                    );
                    sources.insert(key, *s);
                }
                Manifest::Secret(s) => {
                    let key = (
                        ns_of(&s.metadata, &opts.namespace),
                        s.metadata.name.clone().unwrap_or_default(),
                    );
                    secrets.insert(key, *s);
                }
                Manifest::Binding(mut b) => {
                    b.metadata.namespace = Some(ns_of(&b.metadata, &opts.namespace));
                    bindings.push(*b);
                }
                Manifest::Other { .. } => {}
            }
        }
    }
    let secrets = Arc::new(secrets);

    let mut caches: BTreeMap<(String, String), Result<Arc<SourceCache>, BackendError>> =
        BTreeMap::new();
    let mut out = RenderOutput {
        secrets: Vec::new(),
        errors: Vec::new(),
    };
    for binding in &bindings {
        let ns = binding.metadata.namespace.clone().unwrap_or_default();
        let name = binding.metadata.name.clone().unwrap_or_default();
        let source_key = (ns.clone(), binding.spec.source_ref.name.clone());
        let Some(source) = sources.get(&source_key) else {
            out.errors.push(format!(
                "SecretBinding {ns}/{name}: SourceNotFound: SecretSource {:?} is not among the manifests (namespace {ns:?})",
                binding.spec.source_ref.name
            ));
            continue;
        };
        if !caches.contains_key(&source_key) {
            let built = build_cache(source, &ns, opts, secrets.clone()).await;
            caches.insert(source_key.clone(), built);
        }
        let cache = match &caches[&source_key] {
            Ok(c) => c.clone(),
            Err(e) => {
                out.errors.push(format!(
                    "SecretBinding {ns}/{name}: SecretSource {:?}: {e}",
                    binding.spec.source_ref.name
                ));
                continue;
            }
        };
        match resolve::resolve(&binding.spec, &cache, false).await {
            Ok(data) => {
                // The same Secret object the controller server-side applies.
                let hash = opts.hmac_key.data_hash(&data);
                let desired = secretsync_controller::binding::plan::desired_secret(binding, &hash);
                out.secrets
                    .push(secretsync_controller::binding::plan::apply_object(
                        &desired, &data,
                    ));
            }
            Err(e) => out.errors.push(format!("SecretBinding {ns}/{name}: {e}")),
        }
    }
    Ok(out)
}

async fn build_cache(
    source: &SecretSource,
    ns: &str,
    opts: &RenderOptions,
    secrets: Arc<BTreeMap<(String, String), Secret>>,
) -> Result<Arc<SourceCache>, BackendError> {
    let ctx = BuildContext {
        env_allow: EnvPolicy::allow_all(),
        file_root: opts.file_root.clone(),
        credentials: Arc::new(ManifestCredentials {
            namespace: ns.to_string(),
            secrets,
        }),
    };
    let ttl = match source.spec.cache.as_ref().and_then(|c| c.ttl.as_deref()) {
        Some(t) => parse_duration(t)
            .map_err(|e| BackendError::invalid_config(format!("spec.cache.ttl: {e}")))?,
        None => Duration::ZERO,
    };
    let backend = build_backend(&source.spec, &ctx).await?;
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
