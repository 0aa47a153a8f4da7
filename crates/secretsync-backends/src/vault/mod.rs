//! HashiCorp Vault / OpenBao KV v1 and v2 backend.
//!
//! [`VaultBackend::connect`] builds one reqwest client (timeouts, the source's CA bundle,
//! same-origin redirects only) and logs in. Requests use vaultrs's endpoint definitions,
//! executed through a [`Session`] that implements vaultrs's `Client` trait: the session
//! holds the token, so a re-login swaps the session and never rebuilds the HTTP client.
//!
//! Response bodies are never formatted: rustify keeps the raw body inside some error
//! variants (`ResponseParseError::content`), and a KV body is the secret itself. Errors are
//! therefore mapped by variant and status code, plus Vault's own `errors` strings, which
//! describe the failure ("permission denied") and never echo data.

use std::future::Future;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use secretsync_api::{BackendKind, SecretKeySelector, VaultAuth, VaultSource};
use tracing::{debug, warn};
use vaultrs::api::EndpointMiddleware;
use vaultrs::api::kv1::requests::{GetSecretRequest, ListSecretRequest};
use vaultrs::api::kv2::requests::{ListSecretsRequest, ReadSecretRequest};
use vaultrs::api::token::requests::LookupTokenSelfRequest;
use vaultrs::client::VaultClientSettings;
use vaultrs::error::ClientError;
use zeroize::Zeroize;

use crate::{Backend, BackendError, Credentials, ReadRequest, Reason, SecretValue};

/// Whole-request deadline: a hung Vault must surface as `BackendUnavailable`, not a stuck
/// reconcile.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A 403 triggers a re-login only when the token is at least this old: a fresh token that
/// is refused means the policy says no, and logging in again would only add load.
const MIN_RELOGIN_INTERVAL: Duration = Duration::from_secs(10);
/// After a failed early refresh (the old token is still valid) wait this long before the
/// next attempt, so a broken auth backend is not hammered on every read.
const REFRESH_RETRY: Duration = Duration::from_secs(5);
const MAX_REDIRECTS: usize = 5;
/// Vault error strings are short; anything longer is cut so a status stays readable.
const MAX_ERROR_DETAIL: usize = 300;

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

/// What a request was doing, for error mapping and traces.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Read,
    List,
    Login,
    Validate,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::List => "list",
            Op::Login => "login",
            Op::Validate => "validate",
        }
    }
}

enum AuthMethod {
    Token {
        secret: SecretKeySelector,
    },
    Kubernetes {
        mount: String,
        role: String,
        service_account: Option<String>,
        audiences: Vec<String>,
    },
    AppRole {
        mount: String,
        role_id: String,
        secret: SecretKeySelector,
    },
}

impl AuthMethod {
    fn from_spec(auth: &VaultAuth) -> Result<Self, BackendError> {
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

    fn name(&self) -> &'static str {
        match self {
            AuthMethod::Token { .. } => "token",
            AuthMethod::Kubernetes { .. } => "kubernetes",
            AuthMethod::AppRole { .. } => "approle",
        }
    }

    /// Fetches the credential a login needs: the token, the service-account JWT or the
    /// AppRole secret ID.
    async fn fetch_material(
        &self,
        credentials: &dyn Credentials,
    ) -> Result<SecretValue, BackendError> {
        match self {
            AuthMethod::Token { secret } => {
                match credentials.secret_value(&secret.name, &secret.key).await {
                    Ok(token) => Ok(token),
                    // `render` may supply VAULT_TOKEN instead of the Secret.
                    Err(err) => credentials.vault_token_fallback().await.ok_or(err),
                }
            }
            AuthMethod::Kubernetes {
                service_account,
                audiences,
                ..
            } => {
                credentials
                    .service_account_token(service_account.as_deref(), audiences)
                    .await
            }
            AuthMethod::AppRole { secret, .. } => {
                credentials.secret_value(&secret.name, &secret.key).await
            }
        }
    }
}

/// Where re-logins get their credential from.
enum CredentialSource {
    /// Fetched once in `connect` (the caller only lends the provider).
    Snapshot(SecretValue),
    /// Asked again on every login, so rotated Secrets and fresh service-account tokens
    /// are picked up.
    Live(Arc<dyn Credentials>),
}

/// Per-backend connection data shared by every session.
struct Conn {
    /// Server URL without credentials, for messages.
    server: String,
    http: rustify::clients::reqwest::Client,
    settings: VaultClientSettings,
    namespace: Option<String>,
}

/// A token plus the shared connection; what vaultrs's API functions run against.
struct Session {
    conn: Arc<Conn>,
    middle: EndpointMiddleware,
}

impl Session {
    fn new(conn: Arc<Conn>, token: String) -> Self {
        let middle = EndpointMiddleware {
            token,
            version: "v1".to_string(),
            wrap: None,
            namespace: conn.namespace.clone(),
        };
        Session { conn, middle }
    }

    /// A session without a token, for login requests.
    fn anonymous(conn: Arc<Conn>) -> Self {
        Session::new(conn, String::new())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.middle.token.zeroize();
    }
}

impl vaultrs::client::Client for Session {
    fn http(&self) -> &rustify::clients::reqwest::Client {
        &self.conn.http
    }

    fn middle(&self) -> &EndpointMiddleware {
        &self.middle
    }

    fn settings(&self) -> &VaultClientSettings {
        &self.conn.settings
    }

    fn set_token(&mut self, token: &str) {
        self.middle.token.zeroize();
        self.middle.token = token.to_string();
    }
}

struct AuthState {
    session: Arc<Session>,
    /// Bumped on every login, so a task that saw a refused token can tell whether someone
    /// else already logged in again.
    generation: u64,
    logged_in_at: Instant,
    /// When to log in again early; `None` for tokens without a known expiry.
    refresh_at: Option<Instant>,
    expires_at: Option<Instant>,
}

/// A successful login.
struct Login {
    session: Session,
    ttl: Option<Duration>,
}

impl AuthState {
    fn from_login(login: Login, generation: u64) -> Self {
        let now = Instant::now();
        AuthState {
            session: Arc::new(login.session),
            generation,
            logged_in_at: now,
            // Log in again once less than a third of the TTL remains.
            refresh_at: login.ttl.map(|ttl| now + ttl * 2 / 3),
            expires_at: login.ttl.map(|ttl| now + ttl),
        }
    }
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

    // The lock is only held for field copies, which cannot panic; recovering from a
    // poisoned lock is still safer than propagating a panic into every reconcile.
    fn state(&self) -> RwLockReadGuard<'_, AuthState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn state_mut(&self) -> RwLockWriteGuard<'_, AuthState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn current(&self) -> (Arc<Session>, u64) {
        let st = self.state();
        (st.session.clone(), st.generation)
    }

    /// Logs in again and installs the new token. The caller holds `login_lock`.
    async fn relogin(&self) -> Result<(), BackendError> {
        let material = match &self.credentials {
            CredentialSource::Snapshot(material) => material.clone(),
            CredentialSource::Live(provider) => self.auth.fetch_material(provider.as_ref()).await?,
        };
        let login = login(&self.conn, &self.auth, &material).await?;
        let mut st = self.state_mut();
        let generation = st.generation + 1;
        *st = AuthState::from_login(login, generation);
        Ok(())
    }

    /// The session to use now, refreshing the token first when it is due.
    async fn session(&self) -> Result<(Arc<Session>, u64), BackendError> {
        let now = Instant::now();
        let (session, generation, due, expired) = {
            let st = self.state();
            (
                st.session.clone(),
                st.generation,
                st.refresh_at.is_some_and(|t| now >= t),
                st.expires_at.is_some_and(|t| now >= t),
            )
        };
        if !due {
            return Ok((session, generation));
        }
        // One task refreshes; while the old token is still valid the others keep using it
        // instead of queueing behind the login.
        let _guard = if expired {
            self.login_lock.lock().await
        } else {
            match self.login_lock.try_lock() {
                Ok(guard) => guard,
                Err(_) => return Ok((session, generation)),
            }
        };
        {
            let st = self.state();
            if st.generation != generation {
                return Ok((st.session.clone(), st.generation));
            }
        }
        match self.relogin().await {
            Ok(()) => Ok(self.current()),
            Err(err) if !expired => {
                warn!(
                    backend = "vault",
                    operation = "login",
                    auth = self.auth.name(),
                    error = %err,
                    "refreshing the Vault token failed; using the current token until it expires"
                );
                self.state_mut().refresh_at = Some(Instant::now() + REFRESH_RETRY);
                Ok((session, generation))
            }
            Err(err) => Err(err),
        }
    }

    /// After a 403: logs in again (at most once per [`MIN_RELOGIN_INTERVAL`]) and returns
    /// the session to retry with, or `None` when a retry cannot help.
    async fn relogin_after_denied(&self, failed_generation: u64) -> Option<Arc<Session>> {
        if matches!(
            (&self.auth, &self.credentials),
            (AuthMethod::Token { .. }, CredentialSource::Snapshot(_))
        ) {
            // The same token again would be refused again.
            return None;
        }
        let _guard = self.login_lock.lock().await;
        {
            let st = self.state();
            if st.generation != failed_generation {
                return Some(st.session.clone());
            }
            if st.logged_in_at.elapsed() < MIN_RELOGIN_INTERVAL {
                return None;
            }
        }
        match self.relogin().await {
            Ok(()) => Some(self.current().0),
            Err(err) => {
                warn!(
                    backend = "vault",
                    operation = "login",
                    auth = self.auth.name(),
                    error = %err,
                    "logging in again after a refused request failed"
                );
                None
            }
        }
    }

    /// Runs one request with the current token; on 401/403 logs in again once and retries.
    async fn call<T, F, Fut>(&self, op: Op, key: &str, what: &str, f: F) -> Result<T, BackendError>
    where
        F: Fn(Arc<Session>) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let (session, generation) = self.session().await?;
        let started = Instant::now();
        let first = f(session).await;
        trace_request(op, key, &first, started);
        match first {
            Err(err) if is_denied(&err) => match self.relogin_after_denied(generation).await {
                Some(session) => {
                    let started = Instant::now();
                    let second = f(session).await;
                    trace_request(op, key, &second, started);
                    second.map_err(|e| map_error(&e, op, what))
                }
                None => Err(map_error(&err, op, what)),
            },
            other => other.map_err(|e| map_error(&e, op, what)),
        }
    }

    /// `<prefix><key>`, refusing paths that would address something other than one secret
    /// below the mount (empty or `.`/`..` segments).
    fn remote_path(&self, key: &str) -> Result<String, BackendError> {
        let path = format!("{}{}", self.prefix, key);
        let dots = |s: &str| s == "." || s == "..";
        if key.is_empty()
            || key.split('/').any(dots)
            || path.split('/').any(|s| s.is_empty() || dots(s))
        {
            return Err(BackendError::invalid_config(format!(
                "remote key {key:?} is not a valid Vault secret path (empty, '.' or '..' segments)"
            )));
        }
        Ok(path)
    }

    /// One LIST call; `folder` is relative to the mount and empty or ending in `/`.
    async fn list_folder(&self, folder: &str) -> Result<Vec<String>, BackendError> {
        let what = match self.kv {
            KvVersion::V2 => format!("listing {}/metadata/{folder}", self.mount),
            KvVersion::V1 => format!("listing {}/{folder}", self.mount),
        };
        let result = match self.kv {
            KvVersion::V2 => {
                self.call(Op::List, folder, &what, |session| {
                    let endpoint = ListSecretsRequest {
                        mount: self.mount.clone(),
                        path: folder.to_string(),
                    };
                    async move {
                        vaultrs::api::exec_with_result(session.as_ref(), endpoint)
                            .await
                            .map(|r| r.keys)
                    }
                })
                .await
            }
            KvVersion::V1 => {
                self.call(Op::List, folder, &what, |session| {
                    let endpoint = ListSecretRequest {
                        mount: self.mount.clone(),
                        path: folder.to_string(),
                    };
                    async move {
                        vaultrs::api::exec_with_no_result(session.as_ref(), endpoint)
                            .await
                            .map(|r| r.data.keys)
                    }
                })
                .await
            }
        };
        match result {
            // A folder with nothing below it does not exist for Vault.
            Err(err) if err.reason == Reason::SecretNotFound => Ok(Vec::new()),
            other => other,
        }
    }
}

#[async_trait]
impl Backend for VaultBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Vault
    }

    async fn read(&self, req: &ReadRequest) -> Result<SecretValue, BackendError> {
        let path = self.remote_path(&req.key)?;
        let key = req.key.as_str();
        match self.kv {
            KvVersion::V2 => {
                let version = match req.version.as_deref().map(str::trim) {
                    None | Some("") => None,
                    Some(v) => match v.parse::<u64>() {
                        // Vault reads version 0 as "latest": refuse it so a pin never
                        // silently floats.
                        Ok(n) if n > 0 => Some(n),
                        _ => {
                            return Err(BackendError::invalid_config(format!(
                                "remote key {key:?}: version {v:?} is not a KV v2 version \
                                 number (1, 2, ...)"
                            )));
                        }
                    },
                };
                let what = match version {
                    Some(v) => format!(
                        "remote key {key:?} version {v} ({}/data/{path})",
                        self.mount
                    ),
                    None => format!("remote key {key:?} ({}/data/{path})", self.mount),
                };
                let response = self
                    .call(Op::Read, key, &what, |session| {
                        let endpoint = ReadSecretRequest {
                            mount: self.mount.clone(),
                            path: path.clone(),
                            version,
                        };
                        async move { vaultrs::api::exec_with_result(session.as_ref(), endpoint).await }
                    })
                    .await?;
                // A deleted or destroyed version has no data (Vault usually answers 404,
                // but some versions answer 200 with `data: null`).
                if response.data.is_null() || response.metadata.destroyed {
                    let mut data = response.data;
                    scrub(&mut data);
                    return Err(BackendError::new(
                        Reason::SecretNotFound,
                        format!("{what} is deleted or destroyed"),
                    ));
                }
                into_secret(response.data, &what)
            }
            KvVersion::V1 => {
                if let Some(v) = req.version.as_deref().filter(|v| !v.trim().is_empty()) {
                    return Err(BackendError::invalid_config(format!(
                        "remote key {key:?}: version {v:?} given, but KV v1 has no versions"
                    )));
                }
                let what = format!("remote key {key:?} ({}/{path})", self.mount);
                let response = self
                    .call(Op::Read, key, &what, |session| {
                        let endpoint = GetSecretRequest {
                            mount: self.mount.clone(),
                            path: path.clone(),
                        };
                        async move {
                            vaultrs::api::exec_with_no_result(session.as_ref(), endpoint).await
                        }
                    })
                    .await?;
                into_secret(response.data, &what)
            }
        }
    }

    async fn list(&self, under: &str) -> Result<Vec<String>, BackendError> {
        // Work on mount-relative paths: the prefix need not end in '/', so the deepest
        // folder is taken from prefix + under together.
        let target = format!("{}{}", self.prefix, under);
        // A `..` segment could make Vault list a folder outside the prefix.
        if under.split('/').any(|s| s == "." || s == "..") {
            return Err(BackendError::invalid_config(format!(
                "cannot list {under:?}: '.' and '..' segments are not allowed"
            )));
        }
        let start = match target.rfind('/') {
            Some(i) => target[..=i].to_string(),
            None => String::new(),
        };
        let mut keys = Vec::new();
        let mut folders = vec![start];
        while let Some(folder) = folders.pop() {
            for entry in self.list_folder(&folder).await? {
                let full = format!("{folder}{entry}");
                if entry.ends_with('/') {
                    // Descend only into folders that can hold matching keys.
                    if full.starts_with(&target) || target.starts_with(&full) {
                        folders.push(full);
                    }
                } else if full.starts_with(&target) {
                    keys.push(full[self.prefix.len()..].to_string());
                }
            }
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
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

/// Logs in with `material` (for token auth: uses it as the token).
async fn login(
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

/// Validates the server URL, CA bundle and namespace and builds the one HTTP client.
fn build_conn(spec: &VaultSource) -> Result<Conn, BackendError> {
    let raw = spec.server.trim();
    let url = reqwest::Url::parse(raw).map_err(|e| {
        BackendError::invalid_config(format!("spec.vault.server {raw:?} is not a valid URL: {e}"))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(BackendError::invalid_config(format!(
            "spec.vault.server {raw:?} must be an http:// or https:// URL"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(BackendError::invalid_config(
            "spec.vault.server must not contain credentials",
        ));
    }
    // vaultrs puts the API version in front of the whole URL path, so a base path would
    // end up behind /v1/ and address the wrong endpoint.
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(BackendError::invalid_config(format!(
            "spec.vault.server {raw:?} must be scheme://host[:port] without a path"
        )));
    }
    let namespace = match spec
        .namespace
        .as_deref()
        .map(|n| n.trim().trim_matches('/'))
    {
        None | Some("") => None,
        Some(ns) => {
            check_header_safe(ns, "spec.vault.namespace")?;
            Some(ns.to_string())
        }
    };

    let mut builder = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!("secretsync/", env!("CARGO_PKG_VERSION")))
        .redirect(same_origin_redirects());
    match spec.ca_bundle.as_deref().map(str::trim) {
        Some(pem) if !pem.is_empty() => {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| {
                BackendError::invalid_config(format!(
                    "spec.vault.caBundle is not a valid PEM bundle: {e}"
                ))
            })?;
            if certs.is_empty() {
                return Err(BackendError::invalid_config(
                    "spec.vault.caBundle contains no PEM certificate",
                ));
            }
            // The bundle replaces the system roots: the source names exactly whom it trusts.
            builder = builder.tls_certs_only(certs);
        }
        // Plain HTTP needs no roots; skipping the platform verifier also avoids a client
        // build failure on hosts without a system trust store (reqwest#2988).
        _ if url.scheme() == "http" => builder = builder.tls_certs_only(Vec::new()),
        _ => {}
    }
    let client = builder.build().map_err(|e| {
        BackendError::invalid_config(format!(
            "cannot build the HTTP client for {raw} (check spec.vault.caBundle): {}",
            error_chain(&e)
        ))
    })?;

    // Built by hand rather than with the settings builder, which reads VAULT_* variables
    // and panics on a bad URL; only these fields are ever consulted.
    let settings = VaultClientSettings {
        address: url.clone(),
        ca_certs: Vec::new(),
        identity: None,
        timeout: Some(REQUEST_TIMEOUT),
        token: String::new(),
        verify: true,
        version: 1,
        wrapping: false,
        namespace: namespace.clone(),
        proxy: None,
    };
    Ok(Conn {
        server: url.as_str().trim_end_matches('/').to_string(),
        http: rustify::clients::reqwest::Client::new(url.as_str(), client),
        settings,
        namespace,
    })
}

/// Follows redirects only to the same scheme, host and port: the token header travels
/// with the request and must not reach another server.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let Some(first) = attempt.previous().first() else {
            return attempt.stop();
        };
        let same = attempt.url().scheme() == first.scheme()
            && attempt.url().host_str() == first.host_str()
            && attempt.url().port_or_known_default() == first.port_or_known_default();
        if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else if same {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

fn clean_mount(mount: &str, field: &str) -> Result<String, BackendError> {
    let mount = mount.trim().trim_matches('/');
    if mount.is_empty()
        || mount
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(BackendError::invalid_config(format!(
            "{field} {mount:?} is not a valid mount path"
        )));
    }
    Ok(mount.to_string())
}

/// Header values must be visible ASCII; vaultrs's middleware panics on anything else.
/// The message names the field, never the value.
fn check_header_safe(value: &str, what: &str) -> Result<(), BackendError> {
    if value.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(BackendError::invalid_config(format!(
            "{what} contains characters that are not allowed in an HTTP header"
        )))
    }
}

/// The JSON text of a secret's field map, serialised straight into its final buffer (no
/// reallocation copies left behind) and with the parsed strings wiped afterwards.
fn into_secret(mut data: serde_json::Value, what: &str) -> Result<SecretValue, BackendError> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let result = serde_json::to_writer(&mut count, &data).and_then(|()| {
        let mut buf = Vec::with_capacity(count.0);
        serde_json::to_writer(&mut buf, &data).map(|()| buf)
    });
    scrub(&mut data);
    result.map(SecretValue::new).map_err(|_| {
        // Serialising a parsed JSON value cannot fail in practice; the error text is
        // dropped because serde_json may quote data in it.
        BackendError::unavailable(format!("{what}: the response could not be re-encoded"))
    })
}

/// Zeroes every string in a parsed response before it is dropped.
fn scrub(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => s.zeroize(),
        serde_json::Value::Array(items) => items.iter_mut().for_each(scrub),
        serde_json::Value::Object(map) => map.values_mut().for_each(scrub),
        _ => {}
    }
}

fn status_code(err: &ClientError) -> Option<u16> {
    match err {
        ClientError::APIError { code, .. } => Some(*code),
        ClientError::RestClientError {
            source: rustify::errors::ClientError::ServerResponseError { code, .. },
        } => Some(*code),
        _ => None,
    }
}

fn is_denied(err: &ClientError) -> bool {
    matches!(status_code(err), Some(401 | 403))
}

fn trace_request<T>(op: Op, key: &str, result: &Result<T, ClientError>, started: Instant) {
    let status = match result {
        Ok(_) => "ok".to_string(),
        Err(err) => match status_code(err) {
            Some(code) => code.to_string(),
            None => "error".to_string(),
        },
    };
    debug!(
        backend = "vault",
        operation = op.as_str(),
        key = %key,
        status = %status,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "vault request"
    );
}

/// Maps a vaultrs error to the taxonomy. `what` names the key/path being accessed.
fn map_error(err: &ClientError, op: Op, what: &str) -> BackendError {
    use rustify::errors::ClientError as Rest;
    match err {
        ClientError::APIError { code, errors } => from_status(*code, errors, op, what),
        ClientError::RestClientError { source } => match source {
            Rest::ServerResponseError { code, .. } => from_status(*code, &[], op, what),
            Rest::RequestError { source, .. } => {
                let inner: &(dyn std::error::Error + 'static) = source.as_ref();
                let kind = match inner.downcast_ref::<reqwest::Error>() {
                    Some(e) if e.is_timeout() => "timed out",
                    Some(e) if e.is_connect() => "connection failed",
                    _ => "request failed",
                };
                BackendError::unavailable(format!(
                    "{what}: cannot reach Vault: {kind}: {}",
                    error_chain(inner)
                ))
            }
            Rest::ResponseError { .. } => {
                BackendError::unavailable(format!("{what}: reading the response failed"))
            }
            // The raw body sits in these variants; it is never shown.
            Rest::ResponseParseError { .. } | Rest::ResponseConversionError { .. } => {
                BackendError::unavailable(format!("{what}: unexpected response from Vault"))
            }
            // Request-building failures; their Display texts are static.
            other => BackendError::invalid_config(format!("{what}: {other}")),
        },
        ClientError::ResponseEmptyError | ClientError::ResponseDataEmptyError => match op {
            Op::Read | Op::List => {
                BackendError::new(Reason::SecretNotFound, format!("{what}: no data"))
            }
            _ => BackendError::unavailable(format!("{what}: empty response from Vault")),
        },
        // vaultrs's own Display texts carry no response content.
        other => BackendError::unavailable(format!("{what}: {other}")),
    }
}

fn from_status(code: u16, errors: &[String], op: Op, what: &str) -> BackendError {
    let detail = vault_errors(errors);
    match code {
        404 => match op {
            Op::Read | Op::List => {
                BackendError::new(Reason::SecretNotFound, format!("{what} not found"))
            }
            _ => BackendError::invalid_config(format!(
                "{what}: not found (HTTP 404; is the auth method mounted there?){detail}"
            )),
        },
        401 | 403 => {
            BackendError::access_denied(format!("{what}: permission denied (HTTP {code}){detail}"))
        }
        // Vault answers 400 to a wrong role ID / secret ID / JWT.
        400 if op == Op::Login => {
            BackendError::access_denied(format!("{what}: login refused (HTTP 400){detail}"))
        }
        // 503 = sealed or standby without an active node; 412 = replication lag.
        412 | 429 | 500..=599 => {
            BackendError::unavailable(format!("{what}: Vault answered HTTP {code}{detail}"))
        }
        _ => BackendError::invalid_config(format!("{what}: Vault answered HTTP {code}{detail}")),
    }
}

/// Vault's `errors` strings, whitespace-collapsed and bounded. They describe the failure
/// ("permission denied", "Vault is sealed"); read and login requests carry no values Vault
/// could echo.
fn vault_errors(errors: &[String]) -> String {
    let mut text = errors
        .iter()
        .map(|e| {
            e.split_whitespace()
                .filter(|w| *w != "*")
                .collect::<Vec<_>>()
                .join(" ")
        })
        .map(|e| {
            e.strip_prefix("1 error occurred: ")
                .map(str::to_string)
                .unwrap_or(e)
        })
        .filter(|e| !e.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    if text.is_empty() {
        return text;
    }
    if text.len() > MAX_ERROR_DETAIL {
        let mut cut = MAX_ERROR_DETAIL;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    format!(" (vault: {text})")
}

/// An error and its causes, joined; repeated texts are dropped. Used for transport errors
/// only (connection refused, TLS failures), which carry no response content.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_errors_are_cleaned() {
        let errs = vec!["1 error occurred:\n\t* permission denied\n\n".to_string()];
        assert_eq!(vault_errors(&errs), " (vault: permission denied)");
        assert_eq!(vault_errors(&[]), "");
        let long = vec!["é".repeat(400)];
        assert!(vault_errors(&long).len() < 2 * MAX_ERROR_DETAIL);
    }

    #[test]
    fn status_mapping() {
        let r = |code, op| from_status(code, &[], op, "k").reason;
        assert_eq!(r(404, Op::Read), Reason::SecretNotFound);
        assert_eq!(r(404, Op::Login), Reason::InvalidConfig);
        assert_eq!(r(403, Op::Read), Reason::AccessDenied);
        assert_eq!(r(401, Op::Validate), Reason::AccessDenied);
        assert_eq!(r(400, Op::Login), Reason::AccessDenied);
        assert_eq!(r(400, Op::Read), Reason::InvalidConfig);
        assert_eq!(r(503, Op::Read), Reason::BackendUnavailable);
        assert_eq!(r(429, Op::List), Reason::BackendUnavailable);
    }

    #[test]
    fn into_secret_is_exact_json() {
        let v = serde_json::json!({"username": "u", "password": "p"});
        let s = into_secret(v, "k").unwrap();
        assert_eq!(s.as_str(), Some(r#"{"password":"p","username":"u"}"#));
    }
}
