//! AWS backends: Secrets Manager ([`AwsBackend`]) and, with `service: ParameterStore`,
//! Systems Manager Parameter Store ([`ParameterStoreBackend`]); [`connect`] picks one.
//!
//! Secrets Manager: remote key `K` with prefix `P` is the secret named `P + K`. The SDK
//! client (and with it the HTTP connection pool and the credential cache) is built once in
//! [`AwsBackend::connect`] and shared by every read of the source generation.
//!
//! Credentials: `auth.secretRef` gives static keys read through [`Credentials`]; without it
//! aws-config's default chain is used (environment, web identity / IRSA, container / pod
//! identity, profile files, IMDS). aws-config is built without its `sso` and
//! `credentials-process` features, so profiles that rely on those cannot be used.
//! `auth.roleArn` assumes that role (session name `secretsync`) on top of either.
//!
//! Both services share the credential handling above and the error mapping.
//!
//! Layout: `client` (SDK configuration and credentials, shared), `error` (error mapping,
//! shared), `read` (single and batched reads), `list` (listing for `find`), `ssm` (the
//! Parameter Store backend).

mod client;
mod error;
mod list;
mod read;
mod ssm;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use secretsync_api::{AwsService, AwsSource, BackendKind};

pub use self::ssm::ParameterStoreBackend;

use self::error::map_sdk_error;
use crate::{Backend, BackendError, Credentials, ReadRequest, SecretValue};

/// Guards against a server that keeps handing out next-page tokens.
const MAX_PAGES: usize = 10_000;

/// Timeouts and retries of the SDK client. The defaults suit the controller; tests shorten
/// them to fail fast against an unreachable endpoint.
#[derive(Debug, Clone)]
pub struct AwsOptions {
    /// Whole operation, retries included.
    pub operation_timeout: Duration,
    /// One attempt.
    pub attempt_timeout: Duration,
    /// TCP/TLS connect.
    pub connect_timeout: Duration,
    /// Attempts per operation (standard retry mode: throttling, 5xx, I/O errors).
    pub max_attempts: u32,
    /// First retry backoff (exponential with jitter afterwards).
    pub initial_backoff: Duration,
}

impl Default for AwsOptions {
    fn default() -> Self {
        AwsOptions {
            operation_timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            max_attempts: 3,
            initial_backoff: Duration::from_secs(1),
        }
    }
}

/// The backend of `spec.service`, with default timeouts. Makes no network call.
pub async fn connect(
    prefix: String,
    spec: &AwsSource,
    credentials: &dyn Credentials,
) -> Result<Arc<dyn Backend>, BackendError> {
    Ok(match spec.service {
        AwsService::SecretsManager => {
            Arc::new(AwsBackend::connect(prefix, spec, credentials).await?)
        }
        AwsService::ParameterStore => {
            Arc::new(ParameterStoreBackend::connect(prefix, spec, credentials).await?)
        }
    })
}

/// AWS Secrets Manager backend.
pub struct AwsBackend {
    client: Client,
    prefix: String,
    /// Set once `BatchGetSecretValue` was refused for lack of permission (policies often
    /// grant only `GetSecretValue`): later batches go straight to `GetSecretValue`.
    batch_denied: AtomicBool,
}

impl AwsBackend {
    /// Builds the client with default timeouts. Makes no network call: credentials are
    /// resolved (and roles assumed) lazily on the first request, and cached by the SDK.
    pub async fn connect(
        prefix: String,
        spec: &AwsSource,
        credentials: &dyn Credentials,
    ) -> Result<Self, BackendError> {
        Self::connect_with(prefix, spec, credentials, &AwsOptions::default()).await
    }

    /// Builds the client with explicit timeouts and retries.
    pub async fn connect_with(
        prefix: String,
        spec: &AwsSource,
        credentials: &dyn Credentials,
        options: &AwsOptions,
    ) -> Result<Self, BackendError> {
        if spec.service != AwsService::SecretsManager {
            return Err(BackendError::invalid_config(format!(
                "spec.aws.service is {:?}; the Secrets Manager backend cannot read it",
                spec.service
            )));
        }
        Ok(AwsBackend {
            client: Client::new(&client::load_config(spec, credentials, options).await?),
            prefix,
            batch_denied: AtomicBool::new(false),
        })
    }
}

#[async_trait]
impl Backend for AwsBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Aws
    }

    async fn read(&self, req: &ReadRequest) -> Result<SecretValue, BackendError> {
        self.read_one(req).await
    }

    async fn read_batch(&self, reqs: &[ReadRequest]) -> Vec<Result<SecretValue, BackendError>> {
        self.read_many(reqs).await
    }

    async fn list(&self, under: &str) -> Result<Vec<String>, BackendError> {
        self.list_keys(under).await
    }

    async fn validate(&self) -> Result<(), BackendError> {
        tracing::debug!(backend = "aws", operation = "ListSecrets", "validating");
        match self.client.list_secrets().max_results(1).send().await {
            Ok(_) => Ok(()),
            // The request was authenticated; the policy just lacks ListSecrets, which only
            // `find` needs. Reads may well be allowed.
            Err(e) if e.code() == Some("AccessDeniedException") => {
                tracing::debug!(
                    backend = "aws",
                    operation = "ListSecrets",
                    "credentials accepted but ListSecrets is not allowed; find will fail"
                );
                Ok(())
            }
            Err(e) => Err(map_sdk_error(&e, "ListSecrets", "AWS Secrets Manager")),
        }
    }
}
