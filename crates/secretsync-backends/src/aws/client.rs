//! Building the SDK configuration both AWS services share: validation of region, endpoint
//! and role ARN, static keys from the credential Secret, and AssumeRole on top.

use aws_config::sts::AssumeRoleProvider;
use aws_config::{BehaviorVersion, ConfigLoader, SdkConfig};
use aws_sdk_secretsmanager::config::retry::RetryConfig;
use aws_sdk_secretsmanager::config::timeout::TimeoutConfig;
use aws_sdk_secretsmanager::config::{
    Credentials as AwsCredentials, Region, SharedCredentialsProvider,
};
use secretsync_api::{AwsSecretRef, AwsService, AwsSource};

use super::AwsOptions;
use crate::{BackendError, CredentialRef, Credentials, Reason};

/// `RoleSessionName` of AssumeRole calls; shows up in CloudTrail as the caller.
const STS_SESSION_NAME: &str = "secretsync";

/// The SDK client of one AWS service, which [`AwsServiceBackend`](super::AwsServiceBackend)
/// is built around. Implemented for the Secrets Manager and the SSM client only.
pub trait ServiceClient {
    /// The `spec.aws.service` the client serves.
    const SERVICE: AwsService;
    /// What errors call the backend.
    const BACKEND: &'static str;
    /// The client on a loaded configuration.
    fn from_config(config: &SdkConfig) -> Self;
}

impl ServiceClient for aws_sdk_secretsmanager::Client {
    const SERVICE: AwsService = AwsService::SecretsManager;
    const BACKEND: &'static str = "Secrets Manager";
    fn from_config(config: &SdkConfig) -> Self {
        Self::new(config)
    }
}

impl ServiceClient for aws_sdk_ssm::Client {
    const SERVICE: AwsService = AwsService::ParameterStore;
    const BACKEND: &'static str = "Parameter Store";
    fn from_config(config: &SdkConfig) -> Self {
        Self::new(config)
    }
}

/// The SDK configuration `spec` describes, for the client of `spec.service`. Makes no
/// network call: credentials are resolved (and roles assumed) lazily on the first request,
/// and cached by the SDK.
pub(super) async fn load_config(
    spec: &AwsSource,
    credentials: &dyn Credentials,
    options: &AwsOptions,
) -> Result<SdkConfig, BackendError> {
    let region = parse_region(&spec.region)?;
    let endpoint = match spec.endpoint.as_deref().map(str::trim) {
        Some(e) if !e.is_empty() => Some(parse_endpoint(e)?),
        _ => None,
    };
    let auth = spec.auth.as_ref();
    let static_creds = match auth.and_then(|a| a.secret_ref.as_ref()) {
        Some(r) => Some(static_credentials(r, credentials).await?),
        None => None,
    };
    let role_arn = match auth.and_then(|a| a.role_arn.as_deref()).map(str::trim) {
        Some(arn) if !arn.is_empty() => Some(parse_role_arn(arn)?),
        _ => None,
    };

    let timeouts = TimeoutConfig::builder()
        .connect_timeout(options.connect_timeout)
        .operation_attempt_timeout(options.attempt_timeout)
        .operation_timeout(options.operation_timeout)
        .build();
    let retry = RetryConfig::standard()
        .with_max_attempts(options.max_attempts.max(1))
        .with_initial_backoff(options.initial_backoff);
    let loader = || {
        aws_config::defaults(BehaviorVersion::latest())
            .region(region.clone())
            .timeout_config(timeouts.clone())
            .retry_config(retry.clone())
    };

    let provider = match role_arn {
        Some(arn) => {
            Some(assume_role(loader(), arn, static_creds.as_ref(), endpoint.as_deref()).await)
        }
        None => static_creds.map(SharedCredentialsProvider::new),
    };
    let mut service = loader();
    if let Some(p) = provider {
        service = service.credentials_provider(p);
    }
    if let Some(ep) = &endpoint {
        service = service.endpoint_url(ep);
    }
    let config = service.load().await;
    tracing::debug!(
        backend = "aws",
        operation = "connect",
        service = spec.service.display_name(),
        region = %spec.region,
        endpoint = endpoint.as_deref().unwrap_or(""),
        static_credentials = auth.is_some_and(|a| a.secret_ref.is_some()),
        assume_role = role_arn.is_some(),
        "AWS client configured"
    );
    Ok(config)
}

/// A provider assuming `arn` with the static keys (or the default chain) as the base.
async fn assume_role(
    mut sts: ConfigLoader,
    arn: &str,
    static_creds: Option<&AwsCredentials>,
    endpoint: Option<&str>,
) -> SharedCredentialsProvider {
    if let Some(c) = static_creds {
        sts = sts.credentials_provider(c.clone());
    }
    // Emulators serve every service on one endpoint; an AWS-hosted override (a VPC
    // endpoint) is the service's own (Secrets Manager or SSM), so STS keeps its default.
    if let Some(ep) = endpoint.filter(|ep| !is_aws_hosted(ep)) {
        sts = sts.endpoint_url(ep);
    }
    let base = sts.load().await;
    let assume = AssumeRoleProvider::builder(arn)
        .session_name(STS_SESSION_NAME)
        .configure(&base)
        .build()
        .await;
    SharedCredentialsProvider::new(assume)
}

fn parse_region(region: &str) -> Result<Region, BackendError> {
    let r = region.trim();
    let valid = !r.is_empty()
        && r.len() <= 64
        && !r.starts_with('-')
        && !r.ends_with('-')
        && r.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        return Err(BackendError::invalid_config(format!(
            "spec.aws.region {region:?} is not a valid AWS region name"
        )));
    }
    Ok(Region::new(r.to_string()))
}

fn parse_endpoint(endpoint: &str) -> Result<String, BackendError> {
    let rest = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"));
    let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or(""));
    match host {
        // User info is never used by the SDK; refusing it keeps passwords out of logs.
        Some(h) if h.contains('@') => Err(BackendError::invalid_config(
            "spec.aws.endpoint must not contain user info (user:password@)",
        )),
        Some(h) if !h.is_empty() && !h.contains(char::is_whitespace) => Ok(endpoint.to_string()),
        _ => Err(BackendError::invalid_config(
            "spec.aws.endpoint must be an http:// or https:// URL with a host",
        )),
    }
}

fn parse_role_arn(arn: &str) -> Result<&str, BackendError> {
    if arn.starts_with("arn:") && arn.contains(":role/") {
        Ok(arn)
    } else {
        Err(BackendError::invalid_config(format!(
            "spec.aws.auth.roleArn {arn:?} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"
        )))
    }
}

/// Whether an endpoint URL points at an AWS-operated host (as VPC endpoints do).
pub(super) fn is_aws_hosted(endpoint: &str) -> bool {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, h)| h)
        .split(':')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    ["amazonaws.com", "amazonaws.com.cn", "api.aws"]
        .iter()
        .any(|d| host == *d || host.ends_with(&format!(".{d}")))
}

/// Static keys from the credential Secret. A missing Secret or key is a configuration
/// problem of the source, not a missing remote secret.
async fn static_credentials(
    r: &AwsSecretRef,
    credentials: &dyn Credentials,
) -> Result<AwsCredentials, BackendError> {
    let access_key_id = credential_string(credentials, r, &r.access_key_id_key).await?;
    let secret_access_key = credential_string(credentials, r, &r.secret_access_key_key).await?;
    let session_token = match r.session_token_key.as_deref() {
        Some(k) if !k.is_empty() => Some(credential_string(credentials, r, k).await?),
        _ => None,
    };
    Ok(AwsCredentials::new(
        access_key_id,
        secret_access_key,
        session_token,
        None,
        "secretsync-secret-ref",
    ))
}

async fn credential_string(
    credentials: &dyn Credentials,
    r: &AwsSecretRef,
    key: &str,
) -> Result<String, BackendError> {
    let value = credentials
        .secret_value(CredentialRef {
            namespace: r.namespace.as_deref(),
            name: &r.name,
            key,
        })
        .await
        .map_err(|e| {
            let e = if e.reason == Reason::SecretNotFound {
                BackendError::invalid_config(e.message)
            } else {
                e
            };
            e.context("AWS credentials (spec.aws.auth.secretRef)")
        })?;
    let text = value.as_str().map(str::trim).ok_or_else(|| {
        BackendError::invalid_config(format!(
            "AWS credentials: key {key:?} of Secret {:?} is not UTF-8",
            r.name
        ))
    })?;
    if text.is_empty() {
        return Err(BackendError::invalid_config(format!(
            "AWS credentials: key {key:?} of Secret {:?} is empty",
            r.name
        )));
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation() {
        assert!(parse_region("eu-west-1").is_ok());
        assert!(parse_region("").is_err());
        assert!(parse_region("EU west").is_err());
        assert!(parse_endpoint("http://127.0.0.1:5000").is_ok());
        assert!(
            parse_endpoint("https://vpce-1.secretsmanager.eu-west-1.vpce.amazonaws.com").is_ok()
        );
        assert!(parse_endpoint("127.0.0.1:5000").is_err());
        assert!(parse_endpoint("http://").is_err());
        assert!(parse_endpoint("http://user:pw@127.0.0.1:5000").is_err());
        assert!(parse_role_arn("arn:aws:iam::123456789012:role/reader").is_ok());
        assert!(parse_role_arn("reader").is_err());
    }

    #[test]
    fn aws_hosted_endpoints() {
        assert!(is_aws_hosted(
            "https://vpce-1.secretsmanager.eu-west-1.vpce.amazonaws.com"
        ));
        assert!(is_aws_hosted(
            "https://secretsmanager.cn-north-1.amazonaws.com.cn/"
        ));
        assert!(!is_aws_hosted("http://127.0.0.1:5000"));
        assert!(!is_aws_hosted("http://localstack:4566"));
        assert!(!is_aws_hosted("https://notamazonaws.com"));
    }
}
