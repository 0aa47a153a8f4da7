//! AWS Secrets Manager backend.

use async_trait::async_trait;
use secretsync_api::{AwsSource, BackendKind};

use crate::{Backend, BackendError, Credentials, ReadRequest, SecretValue};

/// AWS Secrets Manager backend.
pub struct AwsBackend {}

impl AwsBackend {
    /// Builds the client.
    pub async fn connect(
        _prefix: String,
        _spec: &AwsSource,
        _credentials: &dyn Credentials,
    ) -> Result<Self, BackendError> {
        Err(BackendError::invalid_config(
            "the aws backend is not built yet",
        ))
    }
}

#[async_trait]
impl Backend for AwsBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Aws
    }
    async fn read(&self, _req: &ReadRequest) -> Result<SecretValue, BackendError> {
        Err(BackendError::invalid_config(
            "the aws backend is not built yet",
        ))
    }
    async fn list(&self, _under: &str) -> Result<Vec<String>, BackendError> {
        Err(BackendError::invalid_config(
            "the aws backend is not built yet",
        ))
    }
    async fn validate(&self) -> Result<(), BackendError> {
        Err(BackendError::invalid_config(
            "the aws backend is not built yet",
        ))
    }
}
