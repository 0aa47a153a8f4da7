//! The Secrets kubernetes sources read, served from memory while a namespace-scoped,
//! metadata-only watch shows them unchanged ([`crate::runtime::held`]).
//!
//! A namespace is watched from the first read of one of its Secrets until the term ends.
//! Only Secrets a binding asked for are held (their data, fetched with one GET); every
//! other Secret of the namespace passes through the watch as metadata and is dropped, so
//! memory does not grow with unrelated Secrets. When the watch shows a held Secret changed
//! (or created, or deleted), the held copy is dropped and the change is sent on: the
//! controller invalidates the key in every source's cache and re-queues the bindings that
//! read it, without waiting for their refresh interval.

use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use kube::{Api, Client};
use secretsync_api::SecretSourceSpec;
use secretsync_backends::kubernetes::{ClusterSecrets, SecretDataMap, source_namespace};
use secretsync_backends::{BackendError, SecretValue};
use tokio::sync::mpsc;

use crate::context::Ctx;
use crate::runtime::ObjKey;
use crate::runtime::held::{Change, Held, HeldKind};

/// A Secret read by a kubernetes source changed (or appeared, or went away).
pub type SecretChange = Change;

impl HeldKind for Secret {
    type Content = SecretDataMap;

    fn take_content(obj: &mut Self) -> SecretDataMap {
        secret_data(obj)
    }
}

/// The kubernetes backend's view of the cluster's Secrets (see the module docs).
pub struct KubeSecrets {
    client: Client,
    held: Held<Secret>,
}

impl KubeSecrets {
    /// A provider reading through `client`; changes arrive on the receiver.
    pub fn new(client: Client) -> (Self, mpsc::UnboundedReceiver<SecretChange>) {
        let (held, rx) = Held::new(client.clone(), "kubernetes source");
        (KubeSecrets { client, held }, rx)
    }

    /// How many Secrets are tracked (asked for by a binding), over all namespaces.
    pub fn held_len(&self) -> usize {
        self.held.held_len()
    }

    /// Namespaces watched so far.
    pub fn watched_namespaces(&self) -> Vec<String> {
        self.held.watched_namespaces()
    }
}

/// A Secret's data, moved out of the object (no copies of the bytes left behind);
/// `stringData` is only ever in input files, never in what the API server returns.
pub fn secret_data(secret: &mut Secret) -> SecretDataMap {
    let mut out: SecretDataMap = secret
        .data
        .take()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, SecretValue::new(v.0)))
        .collect();
    for (k, v) in secret.string_data.take().unwrap_or_default() {
        out.insert(k, SecretValue::from_string(v));
    }
    out
}

fn api_error(ns: &str, what: &str, e: kube::Error) -> BackendError {
    match &e {
        kube::Error::Api(s) if s.code == 403 => BackendError::access_denied(format!(
            "the operator may not {what} in namespace {ns:?} (RBAC: secrets get, list and watch)"
        )),
        kube::Error::Api(s) => BackendError::unavailable(format!(
            "{what} in namespace {ns:?}: API server answered {}",
            s.code
        )),
        // A response that does not parse may quote the Secret's body in the error text.
        kube::Error::SerdeError(_) => BackendError::unavailable(format!(
            "{what} in namespace {ns:?}: the API server's answer did not parse"
        )),
        _ => BackendError::unavailable(format!("{what} in namespace {ns:?}: {e}")),
    }
}

#[async_trait]
impl ClusterSecrets for KubeSecrets {
    async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<SecretDataMap>>, BackendError> {
        self.held
            .get(namespace, name)
            .await
            .map_err(|e| api_error(namespace, "read Secrets", e))
    }

    async fn names(&self, namespace: &str) -> Result<Vec<String>, BackendError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let mut names = Vec::new();
        let mut params = ListParams::default().limit(500);
        loop {
            let page = api
                .list_metadata(&params)
                .await
                .map_err(|e| api_error(namespace, "list Secrets", e))?;
            names.extend(page.items.into_iter().filter_map(|m| m.metadata.name));
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        Ok(names)
    }

    async fn check(&self, namespace: &str) -> Result<(), BackendError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        api.list_metadata(&ListParams::default().limit(1))
            .await
            .map(|_| ())
            .map_err(|e| api_error(namespace, "list Secrets", e))
    }
}

/// The sources whose kubernetes backend reads namespace `ns`, with their specs.
fn sources_reading(ctx: &Ctx, ns: &str) -> Vec<(ObjKey, SecretSourceSpec)> {
    let reads = |spec: &SecretSourceSpec, own: Option<&str>| {
        spec.kubernetes
            .as_ref()
            .and_then(|k| source_namespace(k, own).ok())
            .is_some_and(|n| n == ns)
    };
    let mut out: Vec<(ObjKey, SecretSourceSpec)> = ctx
        .sources
        .filter(|k, s| reads(&s.spec, Some(k.namespace.as_str())))
        .into_iter()
        .map(|(k, s)| (k, s.spec.clone()))
        .collect();
    out.extend(
        ctx.cluster_sources
            .filter(|_, s| reads(&s.spec.backend, None))
            .into_iter()
            .map(|(k, s)| (k, s.spec.source_spec())),
    );
    out
}

/// Routes one change: the key is dropped from each reading source's cache and its readers
/// read again now.
pub async fn route_change(ctx: &Ctx, change: &SecretChange) {
    for (src, spec) in sources_reading(ctx, &change.namespace) {
        let Some(key) = change
            .name
            .strip_prefix(spec.prefix())
            .filter(|k| !k.is_empty())
        else {
            continue;
        };
        crate::changes::refresh_keys(ctx, &src, &[key.to_string()]).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_moves_out_of_the_object() {
        let mut s: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db"},
            "data": {"user": "YXBw"},
            "stringData": {"password": "pw"}
        }))
        .unwrap();
        let d = secret_data(&mut s);
        assert_eq!(d["user"].as_str(), Some("app"));
        assert_eq!(d["password"].as_str(), Some("pw"));
        assert!(s.data.is_none() && s.string_data.is_none());
    }
}
