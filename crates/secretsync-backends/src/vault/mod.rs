//! HashiCorp Vault / OpenBao KV v1 and v2 backend.
//!
//! [`VaultBackend::connect`] builds one reqwest client (timeouts, the source's CA bundle,
//! same-origin redirects only) and logs in. Requests use vaultrs's endpoint definitions,
//! executed through a session that implements vaultrs's `Client` trait: the session
//! holds the token, so a re-login swaps the session and never rebuilds the HTTP client.
//!
//! Response bodies are never formatted: rustify keeps the raw body inside some error
//! variants (`ResponseParseError::content`), and a KV body is the secret itself. Errors are
//! therefore mapped by variant and status code, plus Vault's own `errors` strings, which
//! describe the failure ("permission denied") and never echo data.
//!
//! Layout: `conn` (HTTP client and session), `auth` (login per auth method), `renewal`
//! (token refresh and retry after 403), `kv` (reads), `list` (listing for `find`),
//! `error` (error mapping).

mod auth;
mod conn;
mod error;
mod kv;
mod list;
mod renewal;

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use secretsync_api::{BackendKind, VaultSource};
use tracing::debug;
use vaultrs::api::token::requests::LookupTokenSelfRequest;

use self::auth::{AuthMethod, CredentialSource, login};
use self::conn::{Conn, build_conn, clean_mount};
use self::error::Op;
use self::renewal::AuthState;
use crate::{Backend, BackendError, Credentials, ReadRequest, SecretValue};

/// Vault / OpenBao KV backend. Built once per source generation and shared by every
/// binding; holds one HTTP client and the current token.
pub struct VaultBackend {
    prefix: String,
    mount: String,
    kv: KvVersion,
    conn: Arc<Conn>,
    auth: AuthMethod,
    credentials: CredentialSource,
    state: RwLock<AuthState>,
    /// Serialises logins, so many concurrent reads that find the token due for refresh
    /// (or refused) cause one login, not one each.
    login_lock: tokio::sync::Mutex<()>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum KvVersion {
    V1,
    V2,
}

impl VaultBackend {
    /// Builds the client and logs in. Credentials are fetched once here; re-logins (when a
    /// login token nears expiry or is refused) reuse them. Prefer
    /// [`VaultBackend::connect_shared`] where an owned provider is at hand.
    pub async fn connect(
        prefix: String,
        spec: &VaultSource,
        credentials: &dyn Credentials,
    ) -> Result<Self, BackendError> {
        Self::connect_inner(prefix, spec, credentials, None).await
    }

    /// Like [`VaultBackend::connect`], but keeps the provider and asks it again on every
    /// re-login, so a rotated token/secret-ID Secret or an expired service-account token
    /// does not break a long-lived backend.
    pub async fn connect_shared(
        prefix: String,
        spec: &VaultSource,
        credentials: Arc<dyn Credentials>,
    ) -> Result<Self, BackendError> {
        let live = credentials.clone();
        Self::connect_inner(prefix, spec, credentials.as_ref(), Some(live)).await
    }

    async fn connect_inner(
        prefix: String,
        spec: &VaultSource,
        credentials: &dyn Credentials,
        live: Option<Arc<dyn Credentials>>,
    ) -> Result<Self, BackendError> {
        let kv = match spec.kv_version {
            1 => KvVersion::V1,
            2 => KvVersion::V2,
            other => {
                return Err(BackendError::invalid_config(format!(
                    "spec.vault.kvVersion must be 1 or 2, not {other}"
                )));
            }
        };
        let mount = clean_mount(&spec.mount, "spec.vault.mount")?;
        if prefix.starts_with('/') {
            return Err(BackendError::invalid_config(format!(
                "spec.prefix {prefix:?} must not start with '/' for a Vault source"
            )));
        }
        let auth = AuthMethod::from_spec(&spec.auth)?;
        let conn = Arc::new(build_conn(spec)?);
        let material = auth.fetch_material(credentials).await?;
        let login = login(&conn, &auth, &material).await?;
        let credentials = match live {
            Some(provider) => CredentialSource::Live(provider),
            None => CredentialSource::Snapshot(material),
        };
        debug!(
            backend = "vault",
            operation = "connect",
            server = %conn.server,
            mount = %mount,
            auth = auth.name(),
            "vault backend connected"
        );
        Ok(VaultBackend {
            prefix,
            mount,
            kv,
            conn,
            auth,
            credentials,
            state: RwLock::new(AuthState::from_login(login, 0)),
            login_lock: tokio::sync::Mutex::new(()),
        })
    }
}

#[async_trait]
impl Backend for VaultBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Vault
    }

    async fn read(&self, req: &ReadRequest) -> Result<SecretValue, BackendError> {
        let path = self.remote_path(&req.key)?;
        match self.kv {
            KvVersion::V2 => self.read_v2(req, path).await,
            KvVersion::V1 => self.read_v1(req, path).await,
        }
    }

    async fn list(&self, under: &str) -> Result<Vec<String>, BackendError> {
        self.list_keys(under).await
    }

    async fn validate(&self) -> Result<(), BackendError> {
        let what = format!("token lookup at {}", self.conn.server);
        self.call(Op::Validate, "", &what, |session| async move {
            // Only the status matters; the body (token details) is not parsed.
            vaultrs::api::exec_with_empty(session.as_ref(), LookupTokenSelfRequest::default()).await
        })
        .await
    }
}
