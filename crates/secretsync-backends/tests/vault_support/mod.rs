//! Helpers for tests against the real OpenBao dev server started by
//! `scripts/test-servers.sh` (`make test`). Include from a test file with
//! `mod vault_support;`.
//!
//! Server access, test data and request counting come from `secretsync_testkit::bao`
//! (`BaoAdmin`, `count_audit_requests`, `shared_audit_log`) and private servers from
//! `secretsync_testkit::BaoServer`; this module adds what only the Vault backend
//! tests need:
//!
//! - [`bao_addr`], [`root_token`]: the shared server; they panic with instructions when
//!   unset, so tests never pass silently without a server.
//! - [`MapCredentials`]: a `Credentials` provider answering from a map.
//! - [`source`], [`token_auth`], [`approle_auth`]: `VaultSource` builders.
#![allow(dead_code)]

use std::collections::HashMap;

use async_trait::async_trait;
use secretsync_api::{SecretKeySelector, VaultAppRoleAuth, VaultAuth, VaultSource, VaultTokenAuth};
use secretsync_backends::{BackendError, CredentialRef, Credentials, SecretValue};
use secretsync_testkit::names::required_env;

pub fn bao_addr() -> String {
    required_env("SECRETSYNC_TEST_BAO_ADDR")
}

pub fn root_token() -> String {
    required_env("SECRETSYNC_TEST_BAO_TOKEN")
}

/// Credentials answered from a map of (Secret name, key) → value.
#[derive(Default)]
pub struct MapCredentials {
    pub secrets: HashMap<(String, String), String>,
    pub vault_token: Option<String>,
}

impl MapCredentials {
    pub fn with(name: &str, key: &str, value: &str) -> Self {
        let mut c = MapCredentials::default();
        c.secrets
            .insert((name.to_string(), key.to_string()), value.to_string());
        c
    }
}

#[async_trait]
impl Credentials for MapCredentials {
    async fn secret_value(&self, at: CredentialRef<'_>) -> Result<SecretValue, BackendError> {
        self.secrets
            .get(&(at.name.to_string(), at.key.to_string()))
            .map(|v| SecretValue::from(v.as_str()))
            .ok_or_else(|| BackendError::invalid_config(format!("{at:?} not found")))
    }

    async fn vault_token_fallback(&self) -> Option<SecretValue> {
        self.vault_token.as_deref().map(SecretValue::from)
    }
}

pub fn token_auth() -> VaultAuth {
    VaultAuth {
        token: Some(VaultTokenAuth {
            secret_ref: SecretKeySelector {
                namespace: None,
                name: "vault-token".into(),
                key: "token".into(),
            },
        }),
        ..Default::default()
    }
}

pub fn source(server: &str, mount: &str, kv_version: u8, auth: VaultAuth) -> VaultSource {
    VaultSource {
        server: server.to_string(),
        namespace: None,
        mount: mount.to_string(),
        kv_version,
        ca_bundle: None,
        auth,
    }
}

pub fn approle_auth(mount: &str, role_id: &str) -> VaultAuth {
    VaultAuth {
        app_role: Some(VaultAppRoleAuth {
            role_id: role_id.to_string(),
            secret_ref: SecretKeySelector {
                namespace: None,
                name: "approle".into(),
                key: "secret-id".into(),
            },
            mount_path: mount.to_string(),
        }),
        ..Default::default()
    }
}
