//! Resolving a binding's `data`, `dataFrom` and `template` into the Secret's data. Shared by
//! `secretsync render` and the controller, so both write the same bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use secretsync_api::{DecodingStrategy, MergePolicy, SecretBindingSpec};

use crate::decode::decode;
use crate::keys::{KeyGlob, extract_all, extract_property, insert_sanitized, is_valid_secret_key};
use crate::template::{TemplatedMetadata, Templates};
use crate::template_from::TemplateSet;
use crate::{BackendError, ReadOptions, ReadRequest, Reason, SecretValue, SourceCache};

/// The Secret data a binding resolves to.
pub type SecretData = BTreeMap<String, SecretValue>;

enum Planned {
    Data { index: usize, req: ReadRequest },
    Extract { index: usize, req: ReadRequest },
    Found { index: usize, req: ReadRequest },
}

impl Planned {
    fn req(&self) -> &ReadRequest {
        match self {
            Planned::Data { req, .. }
            | Planned::Extract { req, .. }
            | Planned::Found { req, .. } => req,
        }
    }
}

/// Values read in one batch, by request.
type Values = BTreeMap<ReadRequest, Result<SecretValue, BackendError>>;

fn value_of<'a>(values: &'a Values, req: &ReadRequest) -> Result<&'a SecretValue, BackendError> {
    match values.get(req) {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(e.clone()),
        None => Err(BackendError::unavailable("value missing from batch")),
    }
}

/// The Secret a binding writes: it must never be one of its own inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnSecret<'a> {
    /// The binding's namespace.
    pub namespace: &'a str,
    /// Its target Secret's name.
    pub name: &'a str,
}

/// Whether a binding with `spec` reads remote key `key` (through `data`, `dataFrom.extract`
/// or a `dataFrom.find` glob that matches it): who must read again when the key changes.
pub fn reads_key(spec: &SecretBindingSpec, key: &str) -> bool {
    spec.data.iter().any(|d| d.remote_ref.key == key)
        || spec.data_from.iter().any(|d| {
            d.extract.as_ref().is_some_and(|e| e.key == key)
                || d.find
                    .as_ref()
                    .is_some_and(|f| KeyGlob::new(&f.name).is_ok_and(|g| g.is_match(key)))
        })
}

/// A binding's data as resolved, with the timing the reads imply.
#[derive(Debug)]
pub struct Resolution {
    /// The Secret data, or the first failure (naming the field and key at fault).
    pub data: Result<SecretData, BackendError>,
    /// Labels and annotations rendered from `target.template.metadata` (empty when `data`
    /// is an error).
    pub metadata: TemplatedMetadata,
    /// Remote keys of `optional` data entries that were not found, sorted: `KEY`, or
    /// `KEY#PROPERTY` when the key exists without that property (empty when `data` is an
    /// error).
    pub missing_keys: Vec<String>,
    /// When the oldest value used was fetched from the backend (`None` if none was read).
    pub oldest_read: Option<Instant>,
    /// When the failed keys are retried: the latest retry time among them (`None` if no
    /// key read failed, e.g. an invalid spec or a template error).
    pub retry_at: Option<Instant>,
}

/// Reads every remote key the binding needs (one batch through the shared cache) and
/// builds the Secret data, rendering `templates` (the binding's, with its `templateFrom`
/// ConfigMaps loaded: [`TemplateSet::load`]). Errors name the field and key at fault, never
/// a value.
pub async fn resolve_with(
    spec: &SecretBindingSpec,
    templates: &TemplateSet,
    cache: &SourceCache,
    opts: ReadOptions,
    own: Option<OwnSecret<'_>>,
) -> Resolution {
    match read_inputs(spec, cache, opts, own).await {
        Ok(inputs) => inputs.build(spec, templates),
        Err(e) => Resolution::failed(e),
    }
}

/// The values a binding's reads returned, before anything is built from them.
pub struct Inputs {
    plan: Vec<Planned>,
    values: Values,
    /// When the oldest value used was fetched from the backend (`None` if none was read).
    pub oldest_read: Option<Instant>,
    /// When the failed keys are retried: the latest retry time among them (`None` if no
    /// key read failed).
    pub retry_at: Option<Instant>,
    stamp: Option<InputStamp>,
}

/// Which values, with what content, a binding's reads returned (the cache's content
/// serials, [`crate::cache::Read::serial`]). Under the same binding generation and
/// templates, equal stamps build the same Secret data, so a refresh that finds the stamp of
/// its last build need not build again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputStamp(Box<[u64]>);

impl InputStamp {
    /// A stamp of these content serials, in the order of the binding's sorted requests.
    pub fn new(serials: Vec<u64>) -> Self {
        InputStamp(serials.into_boxed_slice())
    }
}

/// Plans and performs the binding's reads; fails only when the spec cannot be planned
/// (an invalid `find` glob, a listing error, a binding reading its own Secret).
pub async fn read_inputs(
    spec: &SecretBindingSpec,
    cache: &SourceCache,
    opts: ReadOptions,
    own: Option<OwnSecret<'_>>,
) -> Result<Inputs, BackendError> {
    let plan = plan_reads(spec, cache, own).await?;
    let unique: Vec<ReadRequest> = plan
        .iter()
        .map(|p| p.req().clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut oldest_read: Option<Instant> = None;
    let mut retry_at: Option<Instant> = None;
    // A `find` listing can change without any value changing, so only plans without one
    // are identified by their values alone.
    let mut serials = (!plan.iter().any(|p| matches!(p, Planned::Found { .. })))
        .then(|| Vec::with_capacity(unique.len()));
    let values: Values = unique
        .iter()
        .cloned()
        .zip(cache.get_many(&unique, opts).await)
        .map(|(req, r)| match r {
            Ok(read) => {
                oldest_read = Some(oldest_read.map_or(read.fetched_at, |o| o.min(read.fetched_at)));
                if let Some(s) = serials.as_mut() {
                    s.push(read.serial);
                }
                (req, Ok(read.value))
            }
            Err(failed) => {
                serials = None;
                retry_at = Some(retry_at.map_or(failed.retry_at, |t| t.max(failed.retry_at)));
                // "Not found" is an answer like a value (an optional key is left out on
                // it): the next refresh must come no later than its age allows, so the
                // key is asked again and synced if it appeared.
                if failed.error.reason == Reason::SecretNotFound {
                    oldest_read =
                        Some(oldest_read.map_or(failed.failed_at, |o| o.min(failed.failed_at)));
                }
                (req, Err(failed.error))
            }
        })
        .collect();
    Ok(Inputs {
        plan,
        values,
        oldest_read,
        retry_at,
        stamp: serials.map(InputStamp::new),
    })
}

impl Inputs {
    /// The stamp of these inputs; `None` when a read failed or a `find` was listed (such
    /// inputs are always built).
    pub fn stamp(&self) -> Option<&InputStamp> {
        self.stamp.as_ref()
    }

    /// The Secret data built from these inputs with `templates`.
    pub fn build(&self, spec: &SecretBindingSpec, templates: &TemplateSet) -> Resolution {
        match build(spec, templates, &self.plan, &self.values) {
            Ok(built) => Resolution {
                data: Ok(built.data),
                metadata: built.metadata,
                missing_keys: built.missing,
                oldest_read: self.oldest_read,
                retry_at: self.retry_at,
            },
            Err(e) => Resolution {
                oldest_read: self.oldest_read,
                retry_at: self.retry_at,
                ..Resolution::failed(e)
            },
        }
    }
}

impl Resolution {
    /// A failure before anything was read.
    fn failed(e: BackendError) -> Self {
        Resolution {
            data: Err(e),
            metadata: TemplatedMetadata::default(),
            missing_keys: Vec::new(),
            oldest_read: None,
            retry_at: None,
        }
    }
}

/// [`resolve_with`] for one-off callers: only the data, inline templates only (a
/// `templateFrom` fails with `TemplateNotFound`); `bypass` skips cached values.
pub async fn resolve(
    spec: &SecretBindingSpec,
    cache: &SourceCache,
    bypass: bool,
    own: Option<OwnSecret<'_>>,
) -> Result<SecretData, BackendError> {
    let opts = if bypass {
        ReadOptions::bypass()
    } else {
        ReadOptions::within(Duration::MAX)
    };
    let templates = TemplateSet::inline(spec.target.template.as_ref())?;
    resolve_with(spec, &templates, cache, opts, own).await.data
}

/// What [`build`] makes of the values read.
struct Built {
    data: SecretData,
    metadata: TemplatedMetadata,
    missing: Vec<String>,
}

/// The Secret data from the values read: dataFrom first, then explicit data, which wins
/// over dataFrom for the same key, then the templates.
fn build(
    spec: &SecretBindingSpec,
    templates: &TemplateSet,
    plan: &[Planned],
    values: &Values,
) -> Result<Built, BackendError> {
    let mut data = data_from(spec, plan, values)?;
    let missing = explicit_data(spec, plan, values, &mut data)?;
    let Some(t) = &spec.target.template else {
        return Ok(Built {
            data,
            metadata: TemplatedMetadata::default(),
            missing,
        });
    };
    let env = Templates::new(&data);
    let metadata = env.render_metadata(&t.metadata)?;
    // A template with only metadata leaves the data as resolved.
    if !templates.is_empty() {
        let rendered = templates.render(&env)?;
        match t.merge_policy {
            MergePolicy::Replace => data = rendered,
            MergePolicy::Merge => data.extend(rendered),
        }
    }
    Ok(Built {
        data,
        metadata,
        missing,
    })
}

/// `value` decoded as `strategy` says; the error names `ctx` and the strategy.
fn decoded(
    value: &SecretValue,
    strategy: DecodingStrategy,
    ctx: impl FnOnce() -> String,
) -> Result<SecretValue, BackendError> {
    decode(strategy, value).map_err(|e| {
        BackendError::invalid_config(format!(
            "{}: decodingStrategy {}: {e}",
            ctx(),
            strategy.as_str()
        ))
    })
}

/// The error for a binding that names its own target Secret as an input.
fn reads_itself(field: &str, key: &str, own: OwnSecret<'_>) -> BackendError {
    BackendError::invalid_config(format!(
        "{field} {key:?} is this binding's own target Secret {}/{}: a binding cannot read the Secret it writes",
        own.namespace, own.name
    ))
}

/// Every read the binding needs: its `data` entries, `dataFrom.extract` keys, and the keys
/// `dataFrom.find` globs match (listed through the cache). The remote key of the binding's
/// own target (kubernetes sources only) is refused by name and left out of `find`.
async fn plan_reads(
    spec: &SecretBindingSpec,
    cache: &SourceCache,
    own: Option<OwnSecret<'_>>,
) -> Result<Vec<Planned>, BackendError> {
    let own_key = own.and_then(|o| cache.backend().secret_key(o.namespace, o.name));
    let is_own = |k: &str| own_key.as_deref() == Some(k);
    let mut plan = Vec::new();
    for (index, item) in spec.data.iter().enumerate() {
        if let Some(o) = own.filter(|_| is_own(&item.remote_ref.key)) {
            return Err(reads_itself(
                &format!("spec.data[{index}].remoteRef.key"),
                &item.remote_ref.key,
                o,
            ));
        }
        plan.push(Planned::Data {
            index,
            req: ReadRequest {
                key: item.remote_ref.key.clone(),
                version: item.remote_ref.version.clone(),
            },
        });
    }
    for (index, item) in spec.data_from.iter().enumerate() {
        match (&item.extract, &item.find) {
            (Some(ext), None) if is_own(&ext.key) => {
                if let Some(o) = own {
                    return Err(reads_itself(
                        &format!("spec.dataFrom[{index}].extract.key"),
                        &ext.key,
                        o,
                    ));
                }
            }
            (Some(ext), None) => plan.push(Planned::Extract {
                index,
                req: ReadRequest {
                    key: ext.key.clone(),
                    version: ext.version.clone(),
                },
            }),
            (None, Some(find)) => {
                let ctx = || format!("spec.dataFrom[{index}].find {:?}", find.name);
                let glob = KeyGlob::new(&find.name).map_err(|e| e.context(ctx()))?;
                let keys = cache
                    .list(glob.literal_prefix())
                    .await
                    .map_err(|e| e.context(ctx()))?;
                for key in keys.into_iter().filter(|k| glob.is_match(k) && !is_own(k)) {
                    plan.push(Planned::Found {
                        index,
                        req: ReadRequest::latest(key),
                    });
                }
            }
            _ => {
                return Err(BackendError::invalid_config(format!(
                    "spec.dataFrom[{index}] needs exactly one of extract or find"
                )));
            }
        }
    }
    Ok(plan)
}

/// The keys `dataFrom` contributes: every field of extracted values, every found key,
/// decoded, sanitised, collisions refused.
fn data_from(
    spec: &SecretBindingSpec,
    plan: &[Planned],
    values: &Values,
) -> Result<SecretData, BackendError> {
    let mut from: BTreeMap<String, (String, SecretValue)> = BTreeMap::new();
    for p in plan {
        match p {
            Planned::Extract { index, req } => {
                let ctx = format!("spec.dataFrom[{index}].extract (remote key {:?})", req.key);
                let strategy = spec.data_from[*index]
                    .extract
                    .as_ref()
                    .map_or(DecodingStrategy::None, |e| e.decoding_strategy);
                let v = value_of(values, req).map_err(|e| e.context(&ctx))?;
                for (field, fv) in extract_all(v, &req.key).map_err(|e| e.context(&ctx))? {
                    let fv = decoded(&fv, strategy, || format!("{ctx}, field {field:?}"))?;
                    let origin = format!("{}:{field}", req.key);
                    insert_sanitized(&mut from, &field, &origin, fv)
                        .map_err(|e| e.context(&ctx))?;
                }
            }
            Planned::Found { index, req } => {
                let ctx = format!("spec.dataFrom[{index}].find (remote key {:?})", req.key);
                let strategy = spec.data_from[*index]
                    .find
                    .as_ref()
                    .map_or(DecodingStrategy::None, |f| f.decoding_strategy);
                let v = value_of(values, req).map_err(|e| e.context(&ctx))?;
                let v = decoded(v, strategy, || ctx.clone())?;
                insert_sanitized(&mut from, &req.key, &req.key, v).map_err(|e| e.context(&ctx))?;
            }
            Planned::Data { .. } => {}
        }
    }
    Ok(from.into_iter().map(|(k, (_, v))| (k, v)).collect())
}

/// Adds the explicit `data` entries (each key once, `property` picked, decoded), over
/// `dataFrom`. Returns the optional entries' remote keys that were not found, sorted.
fn explicit_data(
    spec: &SecretBindingSpec,
    plan: &[Planned],
    values: &Values,
    data: &mut SecretData,
) -> Result<Vec<String>, BackendError> {
    let mut explicit = BTreeSet::new();
    let mut missing = BTreeSet::new();
    for p in plan {
        let Planned::Data { index, req } = p else {
            continue;
        };
        let item = &spec.data[*index];
        // Only an error needs it, and this runs for every entry on every refresh.
        let ctx = || {
            format!(
                "spec.data[{index}] (secretKey {:?}, remote key {:?})",
                item.secret_key, req.key
            )
        };
        if !is_valid_secret_key(&item.secret_key) {
            return Err(BackendError::invalid_config(format!(
                "{}: secretKey must consist of alphanumerics, '-', '_' or '.'",
                ctx()
            )));
        }
        if !explicit.insert(item.secret_key.clone()) {
            return Err(BackendError::new(
                Reason::KeyCollision,
                format!(
                    "{}: secretKey is used by more than one spec.data entry",
                    ctx()
                ),
            ));
        }
        let not_found = |e: &BackendError| item.optional && e.reason == Reason::SecretNotFound;
        let v = match value_of(values, req) {
            Ok(v) => v,
            Err(e) if not_found(&e) => {
                missing.insert(req.key.clone());
                continue;
            }
            Err(e) => return Err(e.context(ctx())),
        };
        let v = match &item.remote_ref.property {
            Some(prop) => match extract_property(v, &req.key, prop) {
                Ok(v) => v,
                Err(e) if not_found(&e) => {
                    missing.insert(format!("{}#{prop}", req.key));
                    continue;
                }
                Err(e) => return Err(e.context(ctx())),
            },
            None => v.clone(),
        };
        let v = decoded(&v, item.remote_ref.decoding_strategy, ctx)?;
        data.insert(item.secret_key.clone(), v);
    }
    Ok(missing.into_iter().collect())
}

/// Renders `spec.target.template.data` with the resolved keys as variables.
pub fn render_templates(
    templates: &BTreeMap<String, String>,
    data: &SecretData,
) -> Result<SecretData, BackendError> {
    let spec = secretsync_api::TemplateSpec {
        data: templates.clone(),
        ..Default::default()
    };
    TemplateSet::inline(Some(&spec))?.render(&Templates::new(data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::NoopObserver;
    use crate::{Backend, file::FileBackend};
    use secretsync_api::{
        DataFromItem, DataItem, DecodingStrategy, FileFormat, FileSource, FindSpec, RemoteRef,
        SecretBindingSpec, TemplateSpec,
    };
    use std::sync::Arc;
    use std::time::Duration;

    fn cache_over(dir: &std::path::Path, root: &std::path::Path) -> SourceCache {
        let b: Arc<dyn Backend> = Arc::new(
            FileBackend::new(
                String::new(),
                &FileSource {
                    path: dir.display().to_string(),
                    format: FileFormat::Dir,
                },
                root,
            )
            .unwrap(),
        );
        SourceCache::new(b, Duration::ZERO, Arc::new(NoopObserver))
    }

    fn item(secret_key: &str, key: &str, property: Option<&str>) -> DataItem {
        DataItem {
            secret_key: secret_key.into(),
            remote_ref: RemoteRef {
                key: key.into(),
                property: property.map(Into::into),
                ..Default::default()
            },
            optional: false,
        }
    }

    #[tokio::test]
    async fn the_stamp_identifies_the_values_read() {
        let (root, dir) = fixture();
        // ttl zero: every read below goes to the files again.
        let cache = cache_over(&dir, root.path());
        let spec = SecretBindingSpec {
            data: vec![
                item("user", "db/creds", Some("username")),
                item("pass", "db/creds", Some("password")),
                item("host", "db/host", None),
            ],
            ..Default::default()
        };
        let opts = ReadOptions::within(Duration::from_secs(60));
        let stamp = || async {
            read_inputs(&spec, &cache, opts, None)
                .await
                .unwrap()
                .stamp()
                .cloned()
        };
        let first = stamp().await.expect("identifiable");
        assert_eq!(stamp().await.as_ref(), Some(&first), "re-read, same bytes");
        std::fs::write(dir.join("db/host"), "db2.internal").unwrap();
        let moved = stamp().await.expect("identifiable");
        assert_ne!(moved, first, "one value changed");
        // A failed read or a `find` listing: not identifiable, always built.
        std::fs::remove_file(dir.join("db/host")).unwrap();
        assert_eq!(stamp().await, None);
        let find = SecretBindingSpec {
            data_from: vec![DataFromItem {
                extract: None,
                find: Some(FindSpec {
                    name: "db/*".into(),
                    ..Default::default()
                }),
            }],
            ..Default::default()
        };
        let inputs = read_inputs(&find, &cache, opts, None).await.unwrap();
        assert_eq!(inputs.stamp(), None);
    }

    fn fixture() -> (tempfile::TempDir, std::path::PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("d");
        std::fs::create_dir_all(dir.join("db")).unwrap();
        std::fs::write(
            dir.join("db/creds"),
            r#"{"username":"shop","password":"s3cret"}"#,
        )
        .unwrap();
        std::fs::write(dir.join("db/host"), "db.internal").unwrap();
        std::fs::write(dir.join("db_port"), "5432").unwrap();
        std::fs::write(dir.join("db:port"), "5433").unwrap();
        std::fs::write(dir.join("api_token"), "tok").unwrap();
        (root, dir)
    }

    #[tokio::test]
    async fn data_extract_find_and_template() {
        let (root, dir) = fixture();
        let cache = cache_over(&dir, root.path());
        let mut spec = SecretBindingSpec {
            data: vec![item("pw", "db/creds", Some("password"))],
            data_from: vec![
                DataFromItem {
                    extract: Some(RemoteRef {
                        key: "db/creds".into(),
                        ..Default::default()
                    }),
                    find: None,
                },
                DataFromItem {
                    extract: None,
                    find: Some(FindSpec {
                        name: "db/h*".into(),
                        ..Default::default()
                    }),
                },
            ],
            ..Default::default()
        };
        let data = resolve(&spec, &cache, false, None).await.unwrap();
        let keys: Vec<_> = data.keys().cloned().collect();
        assert_eq!(keys, vec!["db_host", "password", "pw", "username"]);
        assert_eq!(data["db_host"].as_str(), Some("db.internal"));
        assert_eq!(data["pw"].as_str(), Some("s3cret"));

        spec.target.template = Some(TemplateSpec {
            merge_policy: MergePolicy::Replace,
            data: [(
                "DATABASE_URL".to_string(),
                "postgres://{{ username }}:{{ password }}@{{ db_host }}:5432/shop".to_string(),
            )]
            .into(),
            ..Default::default()
        });
        let data = resolve(&spec, &cache, false, None).await.unwrap();
        assert_eq!(data.len(), 1);
        assert_eq!(
            data["DATABASE_URL"].as_str(),
            Some("postgres://shop:s3cret@db.internal:5432/shop")
        );
        spec.target.template.as_mut().unwrap().merge_policy = MergePolicy::Merge;
        assert_eq!(resolve(&spec, &cache, false, None).await.unwrap().len(), 5);
    }

    #[tokio::test]
    async fn collisions_and_errors_name_the_field() {
        let (root, dir) = fixture();
        let cache = cache_over(&dir, root.path());
        let spec = SecretBindingSpec {
            data_from: vec![DataFromItem {
                extract: None,
                find: Some(FindSpec {
                    name: "db?port".into(),
                    ..Default::default()
                }),
            }],
            ..Default::default()
        };
        let err = resolve(&spec, &cache, false, None).await.unwrap_err();
        assert_eq!(err.reason, Reason::KeyCollision, "{err}");
        assert!(err.message.contains("spec.dataFrom[0]"), "{err}");

        let spec = SecretBindingSpec {
            data: vec![item("a", "missing", None)],
            ..Default::default()
        };
        let err = resolve(&spec, &cache, false, None).await.unwrap_err();
        assert_eq!(err.reason, Reason::SecretNotFound);
        assert!(err.message.contains("spec.data[0]"), "{err}");

        let spec = SecretBindingSpec {
            data: vec![item("a", "db/host", Some("x"))],
            ..Default::default()
        };
        let err = resolve(&spec, &cache, false, None).await.unwrap_err();
        assert_eq!(err.reason, Reason::InvalidJson);
        assert!(!err.to_string().contains("db.internal"));

        let spec = SecretBindingSpec {
            data: vec![item("a", "db/host", None), item("a", "api_token", None)],
            ..Default::default()
        };
        assert_eq!(
            resolve(&spec, &cache, false, None)
                .await
                .unwrap_err()
                .reason,
            Reason::KeyCollision
        );
    }

    /// Secrets of namespace `shop`, all named `team-*`.
    struct ShopSecrets;

    #[async_trait::async_trait]
    impl crate::kubernetes::ClusterSecrets for ShopSecrets {
        async fn get(
            &self,
            _ns: &str,
            name: &str,
        ) -> Result<Option<Arc<crate::kubernetes::SecretDataMap>>, BackendError> {
            let data = [("v".to_string(), SecretValue::from(name))].into();
            Ok(Some(Arc::new(data)))
        }
        async fn names(&self, _ns: &str) -> Result<Vec<String>, BackendError> {
            Ok(vec!["team-a".into(), "team-out".into()])
        }
    }

    #[tokio::test]
    async fn a_binding_never_reads_its_own_target() {
        let backend = crate::kubernetes::KubernetesBackend::new(
            "shop".into(),
            "team-".into(),
            Arc::new(ShopSecrets),
        );
        let cache = SourceCache::new(Arc::new(backend), Duration::ZERO, Arc::new(NoopObserver));
        let own = Some(OwnSecret {
            namespace: "shop",
            name: "team-out",
        });
        let spec = SecretBindingSpec {
            data: vec![item("x", "out", Some("v"))],
            ..Default::default()
        };
        let e = resolve(&spec, &cache, false, own).await.unwrap_err();
        assert_eq!(e.reason, Reason::InvalidConfig);
        assert!(e.message.contains("spec.data[0].remoteRef.key"), "{e}");
        assert!(e.message.contains("shop/team-out"), "{e}");
        // Another namespace's Secret of that name is someone else's.
        let other = Some(OwnSecret {
            namespace: "infra",
            name: "team-out",
        });
        assert!(resolve(&spec, &cache, false, other).await.is_ok());
        let extract = SecretBindingSpec {
            data_from: vec![DataFromItem {
                extract: Some(RemoteRef {
                    key: "out".into(),
                    ..Default::default()
                }),
                find: None,
            }],
            ..Default::default()
        };
        let e = resolve(&extract, &cache, false, own).await.unwrap_err();
        assert!(e.message.contains("spec.dataFrom[0].extract.key"), "{e}");
        // `find` leaves the target out instead of failing.
        let find = SecretBindingSpec {
            data_from: vec![DataFromItem {
                extract: None,
                find: Some(FindSpec {
                    name: "*".into(),
                    ..Default::default()
                }),
            }],
            ..Default::default()
        };
        let data = resolve(&find, &cache, false, own).await.unwrap();
        assert_eq!(data.keys().collect::<Vec<_>>(), ["a"]);
    }

    #[test]
    fn which_bindings_read_a_key() {
        let spec = SecretBindingSpec {
            data: vec![item("x", "db", None)],
            data_from: vec![
                DataFromItem {
                    extract: Some(RemoteRef {
                        key: "ca".into(),
                        ..Default::default()
                    }),
                    find: None,
                },
                DataFromItem {
                    extract: None,
                    find: Some(FindSpec {
                        name: "app/*".into(),
                        ..Default::default()
                    }),
                },
            ],
            ..Default::default()
        };
        for k in ["db", "ca", "app/one"] {
            assert!(reads_key(&spec, k), "{k}");
        }
        for k in ["dbx", "app/one/two", "other"] {
            assert!(!reads_key(&spec, k), "{k}");
        }
    }

    fn with_strategy(mut d: DataItem, s: DecodingStrategy) -> DataItem {
        d.remote_ref.decoding_strategy = s;
        d
    }

    fn optional(mut d: DataItem) -> DataItem {
        d.optional = true;
        d
    }

    async fn resolved(spec: &SecretBindingSpec, cache: &SourceCache) -> Resolution {
        let templates = TemplateSet::inline(spec.target.template.as_ref()).unwrap();
        resolve_with(
            spec,
            &templates,
            cache,
            ReadOptions::within(Duration::MAX),
            None,
        )
        .await
    }

    #[tokio::test]
    async fn values_are_decoded_as_each_entry_says() {
        let (root, dir) = fixture();
        std::fs::write(dir.join("b64"), "aGk=").unwrap();
        std::fs::write(dir.join("b64url"), "_wA-").unwrap();
        std::fs::write(dir.join("bundle"), r#"{"crt":"Y2VydA==","key":"a2V5"}"#).unwrap();
        std::fs::create_dir_all(dir.join("enc")).unwrap();
        std::fs::write(dir.join("enc/one"), "b25l").unwrap();
        std::fs::write(dir.join("enc/two"), "dHdv").unwrap();
        let cache = cache_over(&dir, root.path());
        let spec = SecretBindingSpec {
            data: vec![
                with_strategy(item("hi", "b64", None), DecodingStrategy::Base64),
                with_strategy(item("bin", "b64url", None), DecodingStrategy::Base64Url),
                with_strategy(item("auto", "b64", None), DecodingStrategy::Auto),
                with_strategy(item("plain", "db/host", None), DecodingStrategy::Auto),
                item("raw", "b64", None),
                with_strategy(
                    item("crt_only", "bundle", Some("crt")),
                    DecodingStrategy::Base64,
                ),
            ],
            data_from: vec![
                DataFromItem {
                    extract: Some(RemoteRef {
                        key: "bundle".into(),
                        decoding_strategy: DecodingStrategy::Base64,
                        ..Default::default()
                    }),
                    find: None,
                },
                DataFromItem {
                    extract: None,
                    find: Some(FindSpec {
                        name: "enc/*".into(),
                        decoding_strategy: DecodingStrategy::Base64,
                    }),
                },
            ],
            ..Default::default()
        };
        let data = resolve(&spec, &cache, false, None).await.unwrap();
        let bytes = |k: &str| data[k].as_bytes().to_vec();
        assert_eq!(bytes("hi"), b"hi");
        assert_eq!(
            bytes("bin"),
            [0xff, 0x00, 0x3e],
            "binary reaches the data unchanged"
        );
        assert_eq!(bytes("auto"), b"hi");
        assert_eq!(bytes("plain"), b"db.internal");
        assert_eq!(bytes("raw"), b"aGk=");
        assert_eq!(bytes("crt_only"), b"cert");
        assert_eq!(bytes("crt"), b"cert");
        assert_eq!(bytes("key"), b"key");
        assert_eq!(bytes("enc_one"), b"one");
        assert_eq!(bytes("enc_two"), b"two");
    }

    #[tokio::test]
    async fn values_that_do_not_decode_name_the_field_not_the_value() {
        let (root, dir) = fixture();
        std::fs::write(dir.join("junk"), "CANARY not base64!").unwrap();
        std::fs::write(dir.join("bundle"), r#"{"ok":"aGk=","bad":"CANARY!"}"#).unwrap();
        let cache = cache_over(&dir, root.path());
        let spec = SecretBindingSpec {
            data: vec![with_strategy(
                item("x", "junk", None),
                DecodingStrategy::Base64,
            )],
            ..Default::default()
        };
        let e = resolve(&spec, &cache, false, None).await.unwrap_err();
        assert_eq!(e.reason, Reason::InvalidConfig);
        assert!(
            e.message
                .contains(r#"spec.data[0] (secretKey "x", remote key "junk")"#),
            "{e}"
        );
        assert!(e.message.contains("decodingStrategy Base64"), "{e}");
        assert!(!format!("{e} {e:?}").contains("CANARY"), "{e}");
        let spec = SecretBindingSpec {
            data_from: vec![DataFromItem {
                extract: Some(RemoteRef {
                    key: "bundle".into(),
                    decoding_strategy: DecodingStrategy::Base64Url,
                    ..Default::default()
                }),
                find: None,
            }],
            ..Default::default()
        };
        let e = resolve(&spec, &cache, false, None).await.unwrap_err();
        assert!(e.message.contains("spec.dataFrom[0].extract"), "{e}");
        assert!(e.message.contains(r#"field "bad""#), "{e}");
        assert!(e.message.contains("URL-safe base64"), "{e}");
        assert!(!format!("{e} {e:?}").contains("CANARY"), "{e}");
    }

    #[tokio::test]
    async fn binary_values_pass_through_and_templates_need_b64encode() {
        let (root, dir) = fixture();
        std::fs::write(dir.join("bin"), [0xff, 0x00, 0xfe]).unwrap();
        let cache = cache_over(&dir, root.path());
        let template = |merge_policy, src: &str| TemplateSpec {
            merge_policy,
            data: [("out".to_string(), src.to_string())].into(),
            ..Default::default()
        };
        let mut spec = SecretBindingSpec {
            data: vec![item("bin", "bin", None), item("host", "db/host", None)],
            ..Default::default()
        };
        spec.target.template = Some(template(MergePolicy::Merge, "{{ bin | b64encode }}"));
        let data = resolve(&spec, &cache, false, None).await.unwrap();
        assert_eq!(data["bin"].as_bytes(), [0xff, 0x00, 0xfe]);
        assert_eq!(data["out"].as_str(), Some("/wD+"));
        spec.target.template = Some(template(MergePolicy::Replace, "{{ host }}:{{ bin }}"));
        let e = resolve(&spec, &cache, false, None).await.unwrap_err();
        assert_eq!(e.reason, Reason::InvalidTemplate);
        assert!(
            e.message.contains(r#"spec.target.template.data["out"]"#),
            "{e}"
        );
        assert!(e.message.contains("b64encode"), "{e}");
    }

    #[tokio::test]
    async fn optional_keys_are_left_out_listed_and_picked_up_later() {
        let (root, dir) = fixture();
        let cache = cache_over(&dir, root.path());
        let spec = SecretBindingSpec {
            data: vec![
                item("host", "db/host", None),
                optional(item("ca", "tls/ca", None)),
                optional(item("pw2", "db/creds", Some("nope"))),
                optional(item("user", "db/creds", Some("username"))),
            ],
            ..Default::default()
        };
        let r = resolved(&spec, &cache).await;
        let data = r.data.unwrap();
        assert_eq!(data.keys().collect::<Vec<_>>(), ["host", "user"]);
        assert_eq!(r.missing_keys, ["db/creds#nope", "tls/ca"]);
        assert!(r.oldest_read.is_some());

        // Created later: the next read finds it.
        std::fs::create_dir_all(dir.join("tls")).unwrap();
        std::fs::write(dir.join("tls/ca"), "ca-pem").unwrap();
        let r = resolved(&spec, &cache).await;
        assert_eq!(r.data.unwrap()["ca"].as_str(), Some("ca-pem"));
        assert_eq!(r.missing_keys, ["db/creds#nope"]);

        // Only "not found" is forgiven.
        for (bad, reason) in [
            (
                optional(item("x", "../outside", None)),
                Reason::AccessDenied,
            ),
            (
                optional(item("x", "db/host", Some("p"))),
                Reason::InvalidJson,
            ),
        ] {
            let spec = SecretBindingSpec {
                data: vec![bad],
                ..Default::default()
            };
            let r = resolved(&spec, &cache).await;
            assert_eq!(r.data.unwrap_err().reason, reason);
            assert!(r.missing_keys.is_empty());
        }
        // A template may test for a missing optional key.
        let mut spec = SecretBindingSpec {
            data: vec![optional(item("ca2", "tls/none", None))],
            ..Default::default()
        };
        spec.target.template = Some(TemplateSpec {
            data: [(
                "has".to_string(),
                "{% if ca2 is defined %}yes{% else %}no{% endif %}/{{ ca2 | default('none') }}"
                    .to_string(),
            )]
            .into(),
            ..Default::default()
        });
        let r = resolved(&spec, &cache).await;
        assert_eq!(r.data.unwrap()["has"].as_str(), Some("no/none"));
        assert_eq!(r.missing_keys, ["tls/none"]);
    }

    #[tokio::test]
    async fn templates_from_config_maps_render_over_the_resolved_keys() {
        use crate::template_from::ConfigMapData;
        use secretsync_api::{TemplateConfigMap, TemplateFrom, TemplateItem};
        let (root, dir) = fixture();
        let cache = cache_over(&dir, root.path());
        let config_maps: BTreeMap<String, ConfigMapData> = [(
            "db-templates".to_string(),
            [
                (
                    "url".to_string(),
                    "postgres://{{ user }}@{{ host }}".to_string(),
                ),
                ("host_only".to_string(), "{{ host }}".to_string()),
            ]
            .into(),
        )]
        .into();
        let mut spec = SecretBindingSpec {
            data: vec![
                item("user", "db/creds", Some("username")),
                item("host", "db/host", None),
            ],
            ..Default::default()
        };
        let mut template = TemplateSpec {
            template_from: vec![TemplateFrom {
                config_map: TemplateConfigMap {
                    name: "db-templates".into(),
                    items: vec![
                        TemplateItem { key: "url".into() },
                        TemplateItem {
                            key: "host_only".into(),
                        },
                    ],
                },
            }],
            data: [("host_only".to_string(), "inline:{{ host }}".to_string())].into(),
            ..Default::default()
        };
        let run = |spec: SecretBindingSpec| {
            let cache = &cache;
            let config_maps = &config_maps;
            async move {
                let templates = TemplateSet::load(spec.target.template.as_ref(), "shop", |n| {
                    config_maps.get(n)
                })
                .unwrap();
                resolve_with(
                    &spec,
                    &templates,
                    cache,
                    ReadOptions::within(Duration::MAX),
                    None,
                )
                .await
                .data
                .unwrap()
            }
        };
        spec.target.template = Some(template.clone());
        let data = run(spec.clone()).await;
        assert_eq!(data.keys().collect::<Vec<_>>(), ["host_only", "url"]);
        assert_eq!(data["url"].as_str(), Some("postgres://shop@db.internal"));
        assert_eq!(
            data["host_only"].as_str(),
            Some("inline:db.internal"),
            "the inline template wins"
        );
        template.merge_policy = MergePolicy::Merge;
        spec.target.template = Some(template);
        let data = run(spec).await;
        assert_eq!(
            data.keys().collect::<Vec<_>>(),
            ["host", "host_only", "url", "user"]
        );
        // The one-off resolve has no ConfigMaps: a clear error, not a silent skip.
        let mut spec = SecretBindingSpec {
            data: vec![item("host", "db/host", None)],
            ..Default::default()
        };
        spec.target.template = Some(TemplateSpec {
            template_from: vec![TemplateFrom {
                config_map: TemplateConfigMap {
                    name: "db-templates".into(),
                    items: vec![TemplateItem { key: "url".into() }],
                },
            }],
            ..Default::default()
        });
        let e = resolve(&spec, &cache, false, None).await.unwrap_err();
        assert_eq!(e.reason, Reason::TemplateNotFound);
    }

    #[tokio::test]
    async fn templated_metadata_comes_with_the_data() {
        let (root, dir) = fixture();
        let cache = cache_over(&dir, root.path());
        let mut spec = SecretBindingSpec {
            data_from: vec![DataFromItem {
                extract: Some(RemoteRef {
                    key: "db/creds".into(),
                    ..Default::default()
                }),
                find: None,
            }],
            ..Default::default()
        };
        spec.target.template = Some(TemplateSpec {
            metadata: secretsync_api::TemplateMetadata {
                labels: [("user".to_string(), "{{ username }}".to_string())].into(),
                annotations: [(
                    "example.com/pw-sha256".to_string(),
                    "{{ password | sha256 }}".to_string(),
                )]
                .into(),
            },
            ..Default::default()
        });
        let r = resolved(&spec, &cache).await;
        // Metadata alone leaves the data as resolved.
        assert_eq!(
            r.data.unwrap().keys().collect::<Vec<_>>(),
            ["password", "username"]
        );
        assert_eq!(r.metadata.labels["user"], "shop");
        assert_eq!(r.metadata.annotations["example.com/pw-sha256"].len(), 64);
        // An invalid rendered label fails like any template, and carries no metadata.
        if let Some(t) = spec.target.template.as_mut() {
            t.metadata
                .labels
                .insert("bad".into(), "{{ username }} x".into());
        }
        let r = resolved(&spec, &cache).await;
        assert_eq!(r.data.unwrap_err().reason, Reason::InvalidTemplate);
        assert!(r.metadata.labels.is_empty());
    }

    #[test]
    fn template_errors_hide_values() {
        let data: SecretData = [("password".to_string(), SecretValue::from("CANARY-x"))].into();
        let t = |src: &str| -> BTreeMap<String, String> {
            [("out".to_string(), src.to_string())].into()
        };
        let err = render_templates(&t("{{ nope }}"), &data).unwrap_err();
        assert_eq!(err.reason, Reason::InvalidTemplate);
        assert!(err.message.contains("out"));
        let err = render_templates(&t("{{ password | int }}"), &data).unwrap_err();
        assert!(!err.message.contains("CANARY"), "{err}");
        let err = render_templates(&t("{% if %}"), &data).unwrap_err();
        assert!(err.message.contains("syntax"), "{err}");
        let err = render_templates(&t("{{ password + 1 }}"), &data).unwrap_err();
        assert!(!format!("{err} {err:?}").contains("CANARY"), "{err}");
        let bad_key: BTreeMap<String, String> = [("a/b".to_string(), "x".to_string())].into();
        assert_eq!(
            render_templates(&bad_key, &data).unwrap_err().reason,
            Reason::InvalidConfig
        );
    }
}
