//! Auth methods (token, Kubernetes, AppRole): what each needs from the cluster and how it
//! turns that into a Vault token.

use std::sync::Arc;
use std::time::{Duration, Instant};

use secretsync_api::{SecretKeySelector, VaultAuth};

use super::conn::{Conn, Session, check_header_safe, clean_mount};
use super::error::{Op, map_error, trace_request};
use crate::{BackendError, Credentials, SecretValue};

/// A source's `spec.vault.auth`, validated.
pub(super) enum AuthMethod {
    Token {
        secret: SecretKeySelector,
    },
    Kubernetes {
        mount: String,
        role: String,
        service_account: Option<String>,
        service_account_namespace: Option<String>,
        audiences: Vec<String>,
    },
    AppRole {
        mount: String,
        role_id: String,
        secret: SecretKeySelector,
    },
}

impl AuthMethod {
    pub(super) fn from_spec(auth: &VaultAuth) -> Result<Self, BackendError> {
        let set = auth.token.is_some() as u8
            + auth.kubernetes.is_some() as u8
            + auth.app_role.is_some() as u8;
        if set != 1 {
            return Err(BackendError::invalid_config(
                "exactly one of spec.vault.auth.token, spec.vault.auth.kubernetes or \
                 spec.vault.auth.appRole must be set",
            ));
        }
        if let Some(token) = &auth.token {
            return Ok(AuthMethod::Token {
                secret: token.secret_ref.clone(),
            });
        }
        if let Some(k8s) = &auth.kubernetes {
            if k8s.role.trim().is_empty() {
                return Err(BackendError::invalid_config(
                    "spec.vault.auth.kubernetes.role must not be empty",
                ));
            }
            return Ok(AuthMethod::Kubernetes {
                mount: clean_mount(&k8s.mount_path, "spec.vault.auth.kubernetes.mountPath")?,
                role: k8s.role.clone(),
                service_account: k8s.service_account_name.clone(),
                service_account_namespace: k8s.service_account_namespace.clone(),
                audiences: k8s.audiences.clone(),
            });
        }
        if let Some(approle) = &auth.app_role {
            if approle.role_id.trim().is_empty() {
                return Err(BackendError::invalid_config(
                    "spec.vault.auth.appRole.roleId must not be empty",
                ));
            }
            return Ok(AuthMethod::AppRole {
                mount: clean_mount(&approle.mount_path, "spec.vault.auth.appRole.mountPath")?,
                role_id: approle.role_id.trim().to_string(),
                secret: approle.secret_ref.clone(),
            });
        }
        // Unreachable: exactly one of the three is set (checked above).
        Err(BackendError::invalid_config("no Vault auth method set"))
    }

    pub(super) fn name(&self) -> &'static str {
        match self {
            AuthMethod::Token { .. } => "token",
            AuthMethod::Kubernetes { .. } => "kubernetes",
            AuthMethod::AppRole { .. } => "approle",
        }
    }

    /// Fetches the credential a login needs: the token, the service-account JWT or the
    /// AppRole secret ID.
    pub(super) async fn fetch_material(
        &self,
        credentials: &dyn Credentials,
    ) -> Result<SecretValue, BackendError> {
        match self {
            AuthMethod::Token { secret } => {
                match credentials.secret_value(secret.into()).await {
                    Ok(token) => Ok(token),
                    // `render` may supply VAULT_TOKEN instead of the Secret.
                    Err(err) => credentials.vault_token_fallback().await.ok_or(err),
                }
            }
            AuthMethod::Kubernetes {
                service_account,
                service_account_namespace,
                audiences,
                ..
            } => {
                let ns = service_account_namespace.as_deref();
                credentials
                    .service_account_token(ns, service_account.as_deref(), audiences)
                    .await
            }
            AuthMethod::AppRole { secret, .. } => credentials.secret_value(secret.into()).await,
        }
    }
}

/// Where re-logins get their credential from.
pub(super) enum CredentialSource {
    /// Fetched once in `connect` (the caller only lends the provider).
    Snapshot(SecretValue),
    /// Asked again on every login, so rotated Secrets and fresh service-account tokens
    /// are picked up.
    Live(Arc<dyn Credentials>),
}

/// A successful login.
pub(super) struct Login {
    pub(super) session: Session,
    pub(super) ttl: Option<Duration>,
}

/// Logs in with `material` (for token auth: uses it as the token).
pub(super) async fn login(
    conn: &Arc<Conn>,
    auth: &AuthMethod,
    material: &SecretValue,
) -> Result<Login, BackendError> {
    let credential_name = match auth {
        AuthMethod::Token { .. } => "the Vault token",
        AuthMethod::Kubernetes { .. } => "the service account token",
        AuthMethod::AppRole { .. } => "the AppRole secret ID",
    };
    let secret = material.as_str().map(str::trim).ok_or_else(|| {
        BackendError::invalid_config(format!("{credential_name} is not valid UTF-8"))
    })?;
    if secret.is_empty() {
        return Err(BackendError::invalid_config(format!(
            "{credential_name} is empty"
        )));
    }
    let started = Instant::now();
    let (result, what) = match auth {
        AuthMethod::Token { .. } => {
            check_header_safe(secret, credential_name)?;
            return Ok(Login {
                session: Session::new(conn.clone(), secret.to_string()),
                ttl: None,
            });
        }
        AuthMethod::Kubernetes { mount, role, .. } => {
            let anonymous = Session::anonymous(conn.clone());
            (
                vaultrs::auth::kubernetes::login(&anonymous, mount, role, secret).await,
                format!("kubernetes login as role {role:?} at auth/{mount}/login"),
            )
        }
        AuthMethod::AppRole { mount, role_id, .. } => {
            let anonymous = Session::anonymous(conn.clone());
            (
                vaultrs::auth::approle::login(&anonymous, mount, role_id, secret).await,
                format!("AppRole login at auth/{mount}/login"),
            )
        }
    };
    trace_request(Op::Login, "", &result, started);
    let mut info = result.map_err(|e| map_error(&e, Op::Login, &what))?;
    let token = std::mem::take(&mut info.client_token);
    // The token goes into an HTTP header; vaultrs would panic on an invalid one.
    check_header_safe(&token, "the token returned by the login")?;
    let ttl = (info.lease_duration > 0).then(|| Duration::from_secs(info.lease_duration));
    Ok(Login {
        session: Session::new(conn.clone(), token),
        ttl,
    })
}
