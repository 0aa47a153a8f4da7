//! Credential lookups for backends, answered by the API server in the source's own
//! namespace: Secret keys (tokens, AppRole secret IDs, AWS keys) and service-account
//! tokens for Vault Kubernetes auth.

use async_trait::async_trait;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::PostParams;
use kube::{Api, Client};
use secretsync_api::SecretSourceSpec;
use secretsync_backends::{BackendError, Credentials, SecretValue};

/// Where a pod's own service-account token is mounted.
const OWN_TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// Credential lookups for one namespace, answered by the API server.
pub struct ApiCredentials {
    client: Client,
    namespace: String,
}

impl ApiCredentials {
    /// Lookups in `namespace` (the source's; nothing crosses namespaces).
    pub fn new(client: Client, namespace: &str) -> Self {
        ApiCredentials {
            client,
            namespace: namespace.to_string(),
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
    async fn secret_value(&self, name: &str, key: &str) -> Result<SecretValue, BackendError> {
        let what = format!("Secret {name:?} in namespace {:?}", self.namespace);
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
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
        let what = format!("ServiceAccount {sa:?} in namespace {:?}", self.namespace);
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.namespace);
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

/// Names of the Secrets (source namespace) a source's credentials come from.
pub fn credential_secret_names(spec: &SecretSourceSpec) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(v) = &spec.vault {
        if let Some(t) = &v.auth.token {
            names.push(t.secret_ref.name.clone());
        }
        if let Some(a) = &v.auth.app_role {
            names.push(a.secret_ref.name.clone());
        }
    }
    if let Some(r) = spec
        .aws
        .as_ref()
        .and_then(|a| a.auth.as_ref())
        .and_then(|a| a.secret_ref.as_ref())
    {
        names.push(r.name.clone());
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
            credential_secret_names(&spec),
            vec!["aws".to_string(), "vt".to_string()]
        );
        assert!(credential_secret_names(&SecretSourceSpec::default()).is_empty());
    }
}
