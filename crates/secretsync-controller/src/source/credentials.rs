//! Credential lookups for backends, answered by the API server: Secret keys (tokens,
//! AppRole secret IDs, AWS keys) and service-account tokens for Vault Kubernetes auth, in
//! a SecretSource's own namespace or in the namespace a ClusterSecretSource names.

use async_trait::async_trait;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::PostParams;
use kube::{Api, Client};
use secretsync_api::SecretSourceSpec;
use secretsync_backends::{BackendError, CredentialRef, Credentials, SecretValue};

/// Where a pod's own service-account token is mounted.
const OWN_TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// Credential lookups of one source, answered by the API server.
pub struct ApiCredentials {
    client: Client,
    /// A SecretSource's namespace; `None` for a ClusterSecretSource, whose references
    /// each name their namespace.
    namespace: Option<String>,
}

impl ApiCredentials {
    /// Lookups of a source in `namespace` (a SecretSource's: nothing crosses namespaces),
    /// or of a cluster source (`None`).
    pub fn new(client: Client, namespace: Option<&str>) -> Self {
        ApiCredentials {
            client,
            namespace: namespace.map(str::to_string),
        }
    }

    /// The namespace a reference resolves in. A SecretSource ignores nothing here: the
    /// CRD forbids `namespace` in its references, and a reference that still names
    /// another namespace is refused rather than followed.
    fn namespace_for(&self, named: Option<&str>, what: &str) -> Result<String, BackendError> {
        match (&self.namespace, named) {
            (Some(own), None) => Ok(own.clone()),
            (Some(own), Some(ns)) if ns == own => Ok(own.clone()),
            (Some(own), Some(ns)) => Err(BackendError::invalid_config(format!(
                "{what} names namespace {ns:?}; a SecretSource in {own:?} may only use its own namespace"
            ))),
            (None, Some(ns)) => Ok(ns.to_string()),
            (None, None) => Err(BackendError::invalid_config(format!(
                "{what} names no namespace; a ClusterSecretSource must name it"
            ))),
        }
    }
}

fn api_error(what: &str, e: kube::Error) -> BackendError {
    match e {
        kube::Error::Api(ae) if ae.code == 404 => {
            BackendError::invalid_config(format!("{what} not found"))
        }
        kube::Error::Api(ae) if ae.code == 403 || ae.code == 401 => BackendError::access_denied(
            format!("reading {what}: the operator is not allowed ({})", ae.code),
        ),
        kube::Error::Api(ae) => BackendError::unavailable(format!(
            "reading {what}: API server answered {} {}",
            ae.code, ae.reason
        )),
        _ => BackendError::unavailable(format!("reading {what}: API server unreachable")),
    }
}

#[async_trait]
impl Credentials for ApiCredentials {
    async fn secret_value(&self, at: CredentialRef<'_>) -> Result<SecretValue, BackendError> {
        let (namespace, name, key) = (at.namespace, at.name, at.key);
        let ns = self.namespace_for(namespace, &format!("credential Secret {name:?}"))?;
        let what = format!("Secret {name:?} in namespace {ns:?}");
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
        let secret = api.get(name).await.map_err(|e| api_error(&what, e))?;
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| SecretValue::new(b.0.clone()))
            .ok_or_else(|| BackendError::invalid_config(format!("{what} has no key {key:?}")))
    }

    async fn service_account_token(
        &self,
        namespace: Option<&str>,
        service_account: Option<&str>,
        audiences: &[String],
    ) -> Result<SecretValue, BackendError> {
        let Some(sa) = service_account else {
            // The operator's own projected token, as mounted by the kubelet.
            return tokio::fs::read(OWN_TOKEN_PATH)
                .await
                .map(SecretValue::new)
                .map_err(|_| BackendError::invalid_config("the operator's service account token is not mounted; set serviceAccountName"));
        };
        let ns = self.namespace_for(namespace, &format!("ServiceAccount {sa:?}"))?;
        let what = format!("ServiceAccount {sa:?} in namespace {ns:?}");
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &ns);
        let req = TokenRequest {
            spec: Some(TokenRequestSpec {
                // Empty = the API server's default audiences.
                audiences: (!audiences.is_empty()).then(|| audiences.to_vec()),
                expiration_seconds: Some(600),
                ..Default::default()
            }),
            ..Default::default()
        };
        let resp: TokenRequest = api
            .create_subresource("token", sa, &PostParams::default(), &req)
            .await
            .map_err(|e| api_error(&what, e))?;
        resp.status
            .and_then(|s| s.token)
            .map(SecretValue::from_string)
            .ok_or_else(|| {
                BackendError::unavailable(format!("TokenRequest for {what} returned no token"))
            })
    }
}

/// The Secrets a source's credentials come from, as (namespace, name): the namespace a
/// reference names, else `own` (a SecretSource's namespace; empty for a cluster source,
/// whose references all name one).
pub fn credential_secrets(spec: &SecretSourceSpec, own: &str) -> Vec<(String, String)> {
    let at = |ns: &Option<String>, name: &str| {
        (
            ns.clone().unwrap_or_else(|| own.to_string()),
            name.to_string(),
        )
    };
    let mut names = Vec::new();
    if let Some(v) = &spec.vault {
        if let Some(t) = &v.auth.token {
            names.push(at(&t.secret_ref.namespace, &t.secret_ref.name));
        }
        if let Some(a) = &v.auth.app_role {
            names.push(at(&a.secret_ref.namespace, &a.secret_ref.name));
        }
    }
    if let Some(r) = spec
        .aws
        .as_ref()
        .and_then(|a| a.auth.as_ref())
        .and_then(|a| a.secret_ref.as_ref())
    {
        names.push(at(&r.namespace, &r.name));
    }
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use secretsync_api::{
        AwsAuth, AwsSecretRef, AwsSource, SecretKeySelector, VaultAuth, VaultSource, VaultTokenAuth,
    };

    #[test]
    fn credential_secrets_of_a_spec() {
        let spec = SecretSourceSpec {
            vault: Some(VaultSource {
                auth: VaultAuth {
                    token: Some(VaultTokenAuth {
                        secret_ref: SecretKeySelector {
                            name: "vt".into(),
                            key: "token".into(),
                            namespace: Some("vault".into()),
                        },
                    }),
                    ..Default::default()
                },
                ..Default::default()
            }),
            aws: Some(AwsSource {
                auth: Some(AwsAuth {
                    secret_ref: Some(AwsSecretRef {
                        name: "aws".into(),
                        ..Default::default()
                    }),
                    role_arn: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            credential_secrets(&spec, "shop"),
            vec![
                ("shop".to_string(), "aws".to_string()),
                ("vault".to_string(), "vt".to_string())
            ]
        );
        assert!(credential_secrets(&SecretSourceSpec::default(), "shop").is_empty());
    }
}
