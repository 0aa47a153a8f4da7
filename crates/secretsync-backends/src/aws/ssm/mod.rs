//! AWS Systems Manager Parameter Store backend (`aws.service: ParameterStore`).
//!
//! Remote key `K` with prefix `P` is the parameter named `P + K` (e.g. `/shop/db/password`).
//! String, StringList (the comma-separated text as stored) and SecureString parameters are
//! read with `WithDecryption=true`; `version` pins a version number (`3`) or a label
//! (`prod`), sent as SSM's selector `name:3` / `name:prod`. Credentials, endpoint and
//! timeouts are the Secrets Manager backend's (see the parent module), so one `aws` block
//! configures either service.
//!
//! Layout: `read` (single and batched reads, version selectors), `list` (listing for
//! `find`).

mod list;
mod read;

use std::sync::atomic::AtomicBool;

use async_trait::async_trait;
use aws_sdk_ssm::Client;
use aws_sdk_ssm::error::ProvideErrorMetadata;
use secretsync_api::{AwsService, AwsSource, BackendKind};

use super::error::map_sdk_error;
use super::{AwsOptions, client};
use crate::{Backend, BackendError, Credentials, ReadRequest, SecretValue};

/// What errors and logs call the service.
const SERVICE: &str = "AWS Systems Manager Parameter Store";

/// AWS Systems Manager Parameter Store backend.
pub struct ParameterStoreBackend {
    client: Client,
    prefix: String,
    /// Set once `GetParameters` was refused while `GetParameter` worked for every key of
    /// that batch (policies often grant only `ssm:GetParameter`): later batches go
    /// straight to single reads.
    batch_denied: AtomicBool,
}

impl ParameterStoreBackend {
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
        if spec.service != AwsService::ParameterStore {
            return Err(BackendError::invalid_config(format!(
                "spec.aws.service is {:?}; the Parameter Store backend cannot read it",
                spec.service
            )));
        }
        Ok(ParameterStoreBackend {
            client: Client::new(&client::load_config(spec, credentials, options).await?),
            prefix,
            batch_denied: AtomicBool::new(false),
        })
    }
}

/// Whether a refused `DescribeParameters` still proves the credentials: a policy denial
/// (as opposed to unknown keys or a bad signature, which have their own codes) comes only
/// after the request was authenticated. An answer whose code could not be read proves
/// nothing.
fn refusal_proves_credentials(code: Option<&str>) -> bool {
    matches!(code, Some("AccessDeniedException" | "AccessDenied"))
}

#[async_trait]
impl Backend for ParameterStoreBackend {
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
        // DescribeParameters returns metadata only, never a value: the cheapest signed call.
        tracing::debug!(
            backend = "aws",
            operation = "DescribeParameters",
            "validating"
        );
        match self
            .client
            .describe_parameters()
            .max_results(1)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // The request was authenticated; the policy just lacks DescribeParameters,
            // which no read or `find` needs.
            Err(e) if refusal_proves_credentials(e.code()) => {
                tracing::debug!(
                    backend = "aws",
                    operation = "DescribeParameters",
                    "credentials accepted but DescribeParameters is not allowed"
                );
                Ok(())
            }
            Err(e) => Err(map_sdk_error(&e, "DescribeParameters", SERVICE)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_policy_denial_passes_validation() {
        assert!(refusal_proves_credentials(Some("AccessDeniedException")));
        assert!(refusal_proves_credentials(Some("AccessDenied")));
        for code in [
            Some("UnrecognizedClientException"),
            Some("InvalidSignatureException"),
            Some("ExpiredTokenException"),
            None,
        ] {
            assert!(!refusal_proves_credentials(code), "{code:?}");
        }
    }
}
