//! The one HTTP client of a backend ([`Conn`]) and the token-carrying [`Session`] that
//! vaultrs's endpoint functions run against, plus validation of the values that end up in
//! URLs and headers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use vaultrs::api::EndpointMiddleware;
use vaultrs::client::VaultClientSettings;
use zeroize::Zeroize;

use super::error::error_chain;
use crate::BackendError;

/// Whole-request deadline: a hung Vault must surface as `BackendUnavailable`, not a stuck
/// reconcile.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_REDIRECTS: usize = 5;

/// Per-backend connection data shared by every session.
pub(super) struct Conn {
    /// Server URL without credentials, for messages.
    pub(super) server: String,
    http: rustify::clients::reqwest::Client,
    settings: VaultClientSettings,
    namespace: Option<String>,
}

/// A token plus the shared connection; what vaultrs's API functions run against.
pub(super) struct Session {
    conn: Arc<Conn>,
    middle: EndpointMiddleware,
}

impl Session {
    pub(super) fn new(conn: Arc<Conn>, token: String) -> Self {
        let middle = EndpointMiddleware {
            token,
            version: "v1".to_string(),
            wrap: None,
            namespace: conn.namespace.clone(),
        };
        Session { conn, middle }
    }

    /// A session without a token, for login requests.
    pub(super) fn anonymous(conn: Arc<Conn>) -> Self {
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

/// Validates the server URL, CA bundle and namespace and builds the one HTTP client.
pub(super) fn build_conn(spec: &secretsync_api::VaultSource) -> Result<Conn, BackendError> {
    let raw = spec.server.trim();
    let url = parse_server(raw)?;
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
    let client = shared_http_client(raw, &url, spec.ca_bundle.as_deref())?;

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

/// `spec.vault.server` (trimmed) as a URL: http(s), no credentials, no path.
fn parse_server(raw: &str) -> Result<reqwest::Url, BackendError> {
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
    Ok(url)
}

/// What a Vault HTTP client trusts; sources that trust the same share one client.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Trust {
    /// The system roots (https without `caBundle`).
    System,
    /// No roots at all (plain http without `caBundle`).
    PlainHttp,
    /// Exactly this PEM bundle.
    Bundle(String),
}

/// More distinct trust settings than this and the table starts over (clients in use live
/// on in their backends); it only bounds a table that edits of `caBundle` could grow.
const MAX_SHARED_CLIENTS: usize = 64;

/// The HTTP client for `url` with `ca_bundle`, shared by every Vault source with the same
/// trust: one connection pool per Vault server instead of one per source (100 sources on
/// one server held 231 sockets with a client each). Tokens and namespaces travel per
/// request, so sharing the pool shares nothing else.
fn shared_http_client(
    raw: &str,
    url: &reqwest::Url,
    ca_bundle: Option<&str>,
) -> Result<reqwest::Client, BackendError> {
    static CLIENTS: OnceLock<Mutex<HashMap<Trust, reqwest::Client>>> = OnceLock::new();
    let trust = match ca_bundle.map(str::trim) {
        Some(pem) if !pem.is_empty() => Trust::Bundle(pem.to_string()),
        _ if url.scheme() == "http" => Trust::PlainHttp,
        _ => Trust::System,
    };
    let clients = CLIENTS.get_or_init(Default::default);
    // A panic while holding the lock cannot leave the map inconsistent (one insert).
    let mut clients = clients.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = clients.get(&trust) {
        return Ok(c.clone());
    }
    let client = http_client(raw, url, ca_bundle)?;
    if clients.len() >= MAX_SHARED_CLIENTS {
        clients.clear();
    }
    clients.insert(trust, client.clone());
    Ok(client)
}

/// The reqwest client: timeouts, same-origin redirects, and the CA bundle as the only
/// trust roots when one is given. `raw` is the server as configured, for messages.
fn http_client(
    raw: &str,
    url: &reqwest::Url,
    ca_bundle: Option<&str>,
) -> Result<reqwest::Client, BackendError> {
    let mut builder = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!("secretsync/", env!("CARGO_PKG_VERSION")))
        .redirect(same_origin_redirects());
    match ca_bundle.map(str::trim) {
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
    builder.build().map_err(|e| {
        BackendError::invalid_config(format!(
            "cannot build the HTTP client for {raw} (check spec.vault.caBundle): {}",
            error_chain(&e)
        ))
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

/// A mount path without surrounding slashes; empty, `.` and `..` segments are refused.
pub(super) fn clean_mount(mount: &str, field: &str) -> Result<String, BackendError> {
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
pub(super) fn check_header_safe(value: &str, what: &str) -> Result<(), BackendError> {
    if value.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(BackendError::invalid_config(format!(
            "{what} contains characters that are not allowed in an HTTP header"
        )))
    }
}
