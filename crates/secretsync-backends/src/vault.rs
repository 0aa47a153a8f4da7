//! HashiCorp Vault / OpenBao KV v1 and v2 backend.

use async_trait::async_trait;
use secretsync_api::{BackendKind, VaultSource};

use crate::{Backend, BackendError, Credentials, ReadRequest, SecretValue};

/// Vault / OpenBao KV backend.
pub struct VaultBackend {}

impl VaultBackend {
    /// Builds the client and logs in.
    pub async fn connect(
        _prefix: String,
        _spec: &VaultSource,
        _credentials: &dyn Credentials,
    ) -> Result<Self, BackendError> {
        Err(BackendError::invalid_config(
            "the vault backend is not built yet",
        ))
    }
}

#[async_trait]
impl Backend for VaultBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Vault
    }
    async fn read(&self, _req: &ReadRequest) -> Result<SecretValue, BackendError> {
        Err(BackendError::invalid_config(
            "the vault backend is not built yet",
        ))
    }
    async fn list(&self, _under: &str) -> Result<Vec<String>, BackendError> {
        Err(BackendError::invalid_config(
            "the vault backend is not built yet",
        ))
    }
    async fn validate(&self) -> Result<(), BackendError> {
        Err(BackendError::invalid_config(
            "the vault backend is not built yet",
        ))
    }
}
