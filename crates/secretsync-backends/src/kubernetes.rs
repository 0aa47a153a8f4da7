//! Kubernetes Secrets backend: a remote key is the name of a Secret in one namespace.
//!
//! The backend only shapes values; where the Secrets come from is a [`ClusterSecrets`]
//! provider. The controller's provider serves reads from a namespace-scoped watch (so a
//! change reaches bindings at once), `render` answers from its input files.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use secretsync_api::{BackendKind, KubernetesSource};

use crate::{Backend, BackendError, ReadRequest, SecretValue, keys_after_prefix};

/// The data of one Secret: data key → bytes.
pub type SecretDataMap = BTreeMap<String, SecretValue>;

/// Where a Kubernetes backend reads Secrets.
#[async_trait]
pub trait ClusterSecrets: Send + Sync {
    /// The data of Secret `name` in `namespace`; `None` when it does not exist.
    async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<SecretDataMap>>, BackendError>;

    /// The names of the Secrets in `namespace`.
    async fn names(&self, namespace: &str) -> Result<Vec<String>, BackendError>;

    /// One cheap call proving Secrets of `namespace` can be read.
    async fn check(&self, namespace: &str) -> Result<(), BackendError> {
        self.names(namespace).await.map(|_| ())
    }
}

/// A provider without a cluster: every read is `InvalidConfig`.
pub struct NoClusterSecrets;

#[async_trait]
impl ClusterSecrets for NoClusterSecrets {
    async fn get(
        &self,
        namespace: &str,
        _name: &str,
    ) -> Result<Option<Arc<SecretDataMap>>, BackendError> {
        Err(no_cluster(namespace))
    }

    async fn names(&self, namespace: &str) -> Result<Vec<String>, BackendError> {
        Err(no_cluster(namespace))
    }
}

fn no_cluster(namespace: &str) -> BackendError {
    BackendError::invalid_config(format!(
        "the kubernetes backend needs Secrets of namespace {namespace:?}, and none are available here"
    ))
}

/// The namespace a kubernetes source reads: the spec's, checked against the SecretSource's
/// own namespace (`own`; `None` for a ClusterSecretSource, which must name one).
pub fn source_namespace(
    spec: &KubernetesSource,
    own: Option<&str>,
) -> Result<String, BackendError> {
    match (spec.namespace.as_deref(), own) {
        (Some(ns), Some(own)) if ns != own => Err(BackendError::invalid_config(format!(
            "spec.kubernetes.namespace {ns:?} is not this SecretSource's namespace {own:?}: a SecretSource reads Secrets only where it lives (use a ClusterSecretSource to read another namespace)"
        ))),
        (Some(ns), _) if !is_dns_label(ns) => Err(BackendError::invalid_config(format!(
            "spec.kubernetes.namespace {ns:?} is not a valid namespace name"
        ))),
        (Some(ns), _) => Ok(ns.to_string()),
        (None, Some(own)) => Ok(own.to_string()),
        (None, None) => Err(BackendError::invalid_config(
            "spec.kubernetes.namespace is required in a ClusterSecretSource",
        )),
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Whether `s` can be a Secret name (a DNS subdomain).
fn is_secret_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// The value of a whole Secret: the JSON object of its data keys, each value a string.
/// Binary data cannot be a JSON string: the error names the data key, never the bytes.
pub fn secret_json(
    namespace: &str,
    name: &str,
    data: &SecretDataMap,
) -> Result<SecretValue, BackendError> {
    // Written straight into one zeroed-on-drop buffer: a serde_json::Value would leave
    // copies of the values in ordinary heap memory.
    let room: usize = data.iter().map(|(k, v)| k.len() + 2 * v.len() + 6).sum();
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(room + 2));
    out.push(b'{');
    for (i, (k, v)) in data.iter().enumerate() {
        let Some(text) = v.as_str() else {
            return Err(BackendError::invalid_json(format!(
                "Secret {namespace}/{name}: data key {k:?} is not UTF-8 text, so the Secret cannot be read as a JSON object of strings"
            )));
        };
        if i > 0 {
            out.push(b',');
        }
        // Writing JSON strings into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, k);
        out.push(b':');
        let _ = serde_json::to_writer(&mut *out, text);
    }
    out.push(b'}');
    Ok(SecretValue::new(std::mem::take(&mut *out)))
}

/// Reads Secrets of one namespace.
pub struct KubernetesBackend {
    namespace: String,
    prefix: String,
    secrets: Arc<dyn ClusterSecrets>,
}

impl KubernetesBackend {
    /// A backend reading Secrets named `prefix + key` in `namespace`.
    pub fn new(namespace: String, prefix: String, secrets: Arc<dyn ClusterSecrets>) -> Self {
        KubernetesBackend {
            namespace,
            prefix,
            secrets,
        }
    }

    /// The namespace it reads.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}

#[async_trait]
impl Backend for KubernetesBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Kubernetes
    }

    async fn read(&self, req: &ReadRequest) -> Result<SecretValue, BackendError> {
        req.unversioned(BackendKind::Kubernetes)?;
        let name = format!("{}{}", self.prefix, req.key);
        if !is_secret_name(&name) {
            return Err(BackendError::invalid_config(format!(
                "remote key {:?}: Secret name {name:?} is not a valid Kubernetes name (lower-case letters, digits, '-' and '.')",
                req.key
            )));
        }
        match self.secrets.get(&self.namespace, &name).await? {
            Some(data) => secret_json(&self.namespace, &name, &data),
            None => Err(BackendError::new(
                crate::Reason::SecretNotFound,
                format!(
                    "remote key {:?}: Secret {}/{name} not found",
                    req.key, self.namespace
                ),
            )),
        }
    }

    async fn list(&self, under: &str) -> Result<Vec<String>, BackendError> {
        let names = self.secrets.names(&self.namespace).await?;
        let mut keys = keys_after_prefix(&self.prefix, names);
        keys.retain(|k| k.starts_with(under));
        Ok(keys)
    }

    async fn validate(&self) -> Result<(), BackendError> {
        self.secrets.check(&self.namespace).await
    }

    fn secret_key(&self, namespace: &str, secret: &str) -> Option<String> {
        (namespace == self.namespace)
            .then(|| secret.strip_prefix(self.prefix.as_str()))
            .flatten()
            .filter(|k| !k.is_empty())
            .map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Fixed(Mutex<BTreeMap<(String, String), Arc<SecretDataMap>>>);

    impl Fixed {
        fn put(&self, ns: &str, name: &str, data: &[(&str, &[u8])]) {
            let map = data
                .iter()
                .map(|(k, v)| (k.to_string(), SecretValue::new(v.to_vec())))
                .collect();
            self.0
                .lock()
                .unwrap()
                .insert((ns.into(), name.into()), Arc::new(map));
        }
    }

    #[async_trait]
    impl ClusterSecrets for Fixed {
        async fn get(
            &self,
            ns: &str,
            name: &str,
        ) -> Result<Option<Arc<SecretDataMap>>, BackendError> {
            Ok(self
                .0
                .lock()
                .unwrap()
                .get(&(ns.into(), name.into()))
                .cloned())
        }
        async fn names(&self, ns: &str) -> Result<Vec<String>, BackendError> {
            Ok(self
                .0
                .lock()
                .unwrap()
                .keys()
                .filter(|(n, _)| n == ns)
                .map(|(_, name)| name.clone())
                .collect())
        }
    }

    fn backend(prefix: &str) -> (Arc<Fixed>, KubernetesBackend) {
        let f = Arc::new(Fixed::default());
        let b = KubernetesBackend::new("infra".into(), prefix.into(), f.clone());
        (f, b)
    }

    #[tokio::test]
    async fn a_secret_reads_as_the_json_of_its_keys() {
        let (f, b) = backend("");
        f.put("infra", "db", &[("user", b"app"), ("password", b"s3cr\"t")]);
        let v = b.read(&ReadRequest::latest("db")).await.unwrap();
        let json: serde_json::Value = serde_json::from_slice(v.as_bytes()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"user": "app", "password": "s3cr\"t"})
        );
    }

    #[tokio::test]
    async fn binary_data_is_an_error_naming_the_key_only() {
        let (f, b) = backend("");
        f.put("infra", "ca", &[("bundle.p12", &[0xff, 0xfe, 0x00])]);
        let e = b.read(&ReadRequest::latest("ca")).await.unwrap_err();
        assert_eq!(e.reason, crate::Reason::InvalidJson);
        assert!(e.message.contains("\"bundle.p12\""), "{}", e.message);
        assert!(e.message.contains("infra/ca"), "{}", e.message);
    }

    #[tokio::test]
    async fn missing_secrets_versions_and_bad_names() {
        let (_, b) = backend("team-");
        let e = b.read(&ReadRequest::latest("db")).await.unwrap_err();
        assert_eq!(e.reason, crate::Reason::SecretNotFound);
        assert!(e.message.contains("infra/team-db"), "{}", e.message);
        let pinned = ReadRequest {
            key: "db".into(),
            version: Some("2".into()),
        };
        assert_eq!(
            b.read(&pinned).await.unwrap_err().reason,
            crate::Reason::InvalidConfig
        );
        let e = b.read(&ReadRequest::latest("DB/x")).await.unwrap_err();
        assert_eq!(e.reason, crate::Reason::InvalidConfig);
        assert!(e.message.contains("\"DB/x\""), "{}", e.message);
    }

    #[tokio::test]
    async fn listing_strips_the_prefix_and_filters() {
        let (f, b) = backend("team-");
        for n in ["team-a", "team-b", "other", "team-"] {
            f.put("infra", n, &[("k", b"v")]);
        }
        f.put("elsewhere", "team-c", &[("k", b"v")]);
        assert_eq!(b.list("").await.unwrap(), ["a", "b"]);
        assert_eq!(b.list("b").await.unwrap(), ["b"]);
    }

    #[test]
    fn the_secret_key_of_a_target() {
        let (_, b) = backend("team-");
        assert_eq!(b.secret_key("infra", "team-db"), Some("db".into()));
        assert_eq!(b.secret_key("shop", "team-db"), None);
        assert_eq!(b.secret_key("infra", "db"), None);
        assert_eq!(b.secret_key("infra", "team-"), None);
    }

    #[test]
    fn namespaces_of_each_kind_of_source() {
        let spec = |ns: Option<&str>| KubernetesSource {
            namespace: ns.map(Into::into),
        };
        assert_eq!(source_namespace(&spec(None), Some("shop")).unwrap(), "shop");
        assert_eq!(
            source_namespace(&spec(Some("shop")), Some("shop")).unwrap(),
            "shop"
        );
        let e = source_namespace(&spec(Some("infra")), Some("shop")).unwrap_err();
        assert!(e.message.contains("\"infra\""), "{}", e.message);
        assert_eq!(
            source_namespace(&spec(Some("infra")), None).unwrap(),
            "infra"
        );
        assert!(source_namespace(&spec(None), None).is_err());
        assert!(source_namespace(&spec(Some("Bad_NS")), None).is_err());
    }
}
