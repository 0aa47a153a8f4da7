//! AWS backends: Secrets Manager ([`AwsBackend`]) and, with `service: ParameterStore`,
//! Systems Manager Parameter Store ([`ParameterStoreBackend`]); [`connect`] picks one.
//!
//! Secrets Manager: remote key `K` with prefix `P` is the secret named `P + K`. The SDK
//! client (and with it the HTTP connection pool and the credential cache) is built once in
//! [`AwsServiceBackend::connect`] and shared by every read of the source generation.
//!
//! Credentials: `auth.secretRef` gives static keys read through [`Credentials`]; without it
//! aws-config's default chain is used (environment, web identity / IRSA, container / pod
//! identity, profile files, IMDS). aws-config is built without its `sso` and
//! `credentials-process` features, so profiles that rely on those cannot be used.
//! `auth.roleArn` assumes that role (session name `secretsync`) on top of either.
//!
//! Both services share the credential handling above, the error mapping, the batching of
//! reads and the paging of listings.
//!
//! Layout, shared: `client` (SDK configuration and credentials), `error` (error mapping),
//! `events` (the SQS change queue and its messages),
//! `batch` (batched reads with single-read fallback), `paging` (listing for `find`).
//! Secrets Manager: `read`, `list`. `ssm`: the Parameter Store backend.

mod batch;
mod client;
mod error;
pub mod events;
mod list;
mod paging;
mod read;
mod ssm;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;
use secretsync_api::{AwsService, AwsSource, BackendKind};

pub use self::ssm::ParameterStoreBackend;

use self::batch::BatchRead;
use self::client::ServiceClient;
use self::paging::Listing;
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

/// A backend of one AWS service, [`AwsBackend`] or [`ParameterStoreBackend`]. The SDK
/// client is built once in [`connect`](Self::connect) and shared by every read of the
/// source generation.
pub struct AwsServiceBackend<C> {
    client: C,
    prefix: String,
    /// Set once the batch read was refused for lack of permission (policies often grant
    /// only the single read): later batches go straight to single reads.
    batch_denied: AtomicBool,
}

/// AWS Secrets Manager backend.
pub type AwsBackend = AwsServiceBackend<Client>;

impl<C: ServiceClient> AwsServiceBackend<C> {
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
        if spec.service != C::SERVICE {
            return Err(BackendError::invalid_config(format!(
                "spec.aws.service is {:?}; the {} backend cannot read it",
                spec.service,
                C::BACKEND
            )));
        }
        Ok(AwsServiceBackend {
            client: C::from_config(&client::load_config(spec, credentials, options).await?),
            prefix,
            batch_denied: AtomicBool::new(false),
        })
    }
}

impl<C> AwsServiceBackend<C> {
    /// The remote name of `key`.
    fn name(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }
}

#[async_trait]
impl<C: Send + Sync + 'static> Backend for AwsServiceBackend<C>
where
    Self: BatchRead + Listing,
{
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
        Listing::validate(self).await
    }
}
