//! AWS Secrets Manager backend.
//!
//! Remote key `K` with prefix `P` is the secret named `P + K`. The SDK client (and with it
//! the HTTP connection pool and the credential cache) is built once in [`AwsBackend::connect`]
//! and shared by every read of the source generation.
//!
//! Credentials: `auth.secretRef` gives static keys read through [`Credentials`]; without it
//! aws-config's default chain is used (environment, web identity / IRSA, container / pod
//! identity, profile files, IMDS). aws-config is built without its `sso` and
//! `credentials-process` features, so profiles that rely on those cannot be used.
//! `auth.roleArn` assumes that role (session name `secretsync`) on top of either.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::sts::AssumeRoleProvider;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::config::retry::RetryConfig;
use aws_sdk_secretsmanager::config::timeout::TimeoutConfig;
use aws_sdk_secretsmanager::config::{
    Credentials as AwsCredentials, Region, SharedCredentialsProvider,
};
use aws_sdk_secretsmanager::error::{ConnectorError, ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::primitives::Blob;
use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};
use futures::StreamExt;
use secretsync_api::{AwsSecretRef, AwsSource, BackendKind};

use crate::{Backend, BackendError, Credentials, ReadRequest, Reason, SecretValue};

/// `BatchGetSecretValue` accepts at most this many secret ids per call.
const BATCH_LIMIT: usize = 20;
/// How many batch calls of one `read_batch` run at once.
const BATCH_CONCURRENCY: usize = 4;
/// `RoleSessionName` of AssumeRole calls; shows up in CloudTrail as the caller.
const STS_SESSION_NAME: &str = "secretsync";
/// Longest upstream text (service message, connection error) copied into an error.
const MAX_DETAIL: usize = 300;
/// Page size of `ListSecrets` (the API maximum).
const LIST_PAGE_SIZE: i32 = 100;
/// Guards against a server that keeps handing out next-page tokens.
const MAX_PAGES: usize = 10_000;
/// The `name` filter of `ListSecrets` accepts at most this many characters.
const MAX_FILTER_LEN: usize = 512;

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
                let mut sts = loader();
                if let Some(c) = &static_creds {
                    sts = sts.credentials_provider(c.clone());
                }
                // Emulators serve every service on one endpoint; an AWS-hosted override
                // (a VPC endpoint) is Secrets Manager's only, so STS keeps its default.
                if let Some(ep) = endpoint.as_deref().filter(|ep| !is_aws_hosted(ep)) {
                    sts = sts.endpoint_url(ep);
                }
                let base = sts.load().await;
                let assume = AssumeRoleProvider::builder(arn)
                    .session_name(STS_SESSION_NAME)
                    .configure(&base)
                    .build()
                    .await;
                Some(SharedCredentialsProvider::new(assume))
            }
            None => static_creds.map(SharedCredentialsProvider::new),
        };

        let mut sm = loader();
        if let Some(p) = provider {
            sm = sm.credentials_provider(p);
        }
        if let Some(ep) = &endpoint {
            sm = sm.endpoint_url(ep);
        }
        let client = Client::new(&sm.load().await);
        tracing::debug!(
            backend = "aws",
            operation = "connect",
            region = %spec.region,
            endpoint = endpoint.as_deref().unwrap_or(""),
            static_credentials = auth.is_some_and(|a| a.secret_ref.is_some()),
            assume_role = role_arn.is_some(),
            "AWS Secrets Manager client built"
        );
        Ok(AwsBackend {
            client,
            prefix,
            batch_denied: AtomicBool::new(false),
        })
    }

    fn name(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    /// Reads up to [`BATCH_LIMIT`] distinct unversioned keys; one result per key, in order.
    async fn read_chunk(&self, keys: &[String]) -> Vec<Result<SecretValue, BackendError>> {
        if keys.len() < 2 || self.batch_denied.load(Ordering::Relaxed) {
            return self.read_each(keys).await;
        }
        let names: Vec<String> = keys.iter().map(|k| self.name(k)).collect();
        tracing::debug!(
            backend = "aws",
            operation = "BatchGetSecretValue",
            keys = keys.len(),
            "reading secrets"
        );
        let mut found: HashMap<String, Result<SecretValue, BackendError>> = HashMap::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let res = self
                .client
                .batch_get_secret_value()
                .set_secret_id_list(Some(names.clone()))
                .set_next_token(token.take())
                .send()
                .await;
            let out = match res {
                Ok(out) => out,
                Err(e) => {
                    let what = format!("{} AWS secrets", names.len());
                    let err = map_sdk_error(&e, "BatchGetSecretValue", &what);
                    tracing::debug!(
                        backend = "aws",
                        operation = "BatchGetSecretValue",
                        reason = %err.reason,
                        "batch read failed"
                    );
                    if e.code() == Some("AccessDeniedException") {
                        // Authenticated but not allowed to batch: GetSecretValue may still
                        // be allowed for each secret.
                        self.batch_denied.store(true, Ordering::Relaxed);
                        return self.read_each(keys).await;
                    }
                    return match err.reason {
                        // One unreadable or invalid name must not fail its neighbours.
                        Reason::InvalidConfig | Reason::SecretNotFound => {
                            self.read_each(keys).await
                        }
                        _ => keys.iter().map(|_| Err(err.clone())).collect(),
                    };
                }
            };
            for entry in out.secret_values.unwrap_or_default() {
                if let Some(name) = entry.name {
                    let value = secret_value(entry.secret_string, entry.secret_binary)
                        .ok_or_else(|| no_value(&name));
                    found.insert(name, value);
                }
            }
            for e in out.errors.unwrap_or_default() {
                if let Some(id) = e.secret_id {
                    let code = e.error_code.as_deref().unwrap_or("");
                    let message = e.message.as_deref().unwrap_or("");
                    let err = service_error(
                        "BatchGetSecretValue",
                        &format!("AWS secret {id:?}"),
                        code,
                        message,
                        None,
                    );
                    found.insert(id, Err(err));
                }
            }
            token = out.next_token.filter(|t| !t.is_empty());
            if token.is_none() {
                break;
            }
        }

        let mut results: Vec<Option<Result<SecretValue, BackendError>>> =
            names.iter().map(|n| found.remove(n)).collect();
        // Whatever the answer left out (e.g. a key that is an ARN, so the returned name
        // differs) is read on its own.
        let missing: Vec<usize> = (0..keys.len()).filter(|&i| results[i].is_none()).collect();
        if !missing.is_empty() {
            let missing_keys: Vec<String> = missing.iter().map(|&i| keys[i].clone()).collect();
            for (i, r) in missing.into_iter().zip(self.read_each(&missing_keys).await) {
                results[i] = Some(r);
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(BackendError::unavailable("AWS read lost"))))
            .collect()
    }

    async fn read_each(&self, keys: &[String]) -> Vec<Result<SecretValue, BackendError>> {
        futures::future::join_all(
            keys.iter()
                .map(|k| async move { self.read(&ReadRequest::latest(k.as_str())).await }),
        )
        .await
    }
}

#[async_trait]
impl Backend for AwsBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Aws
    }

    async fn read(&self, req: &ReadRequest) -> Result<SecretValue, BackendError> {
        let name = self.name(&req.key);
        let version = req
            .version
            .as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty());
        let mut call = self.client.get_secret_value().secret_id(&name);
        let what = match version {
            Some(v) if is_version_stage(v) => {
                call = call.version_stage(v);
                format!("AWS secret {name:?} (version stage {v})")
            }
            Some(v) => {
                call = call.version_id(v);
                format!("AWS secret {name:?} (version id {v})")
            }
            None => format!("AWS secret {name:?}"),
        };
        tracing::debug!(
            backend = "aws",
            operation = "GetSecretValue",
            key = %req.key,
            version = version.unwrap_or(""),
            "reading secret"
        );
        match call.send().await {
            Ok(out) => {
                secret_value(out.secret_string, out.secret_binary).ok_or_else(|| no_value(&name))
            }
            Err(e) => {
                let err = map_sdk_error(&e, "GetSecretValue", &what);
                tracing::debug!(
                    backend = "aws",
                    operation = "GetSecretValue",
                    key = %req.key,
                    reason = %err.reason,
                    "read failed"
                );
                Err(err)
            }
        }
    }

    async fn read_batch(&self, reqs: &[ReadRequest]) -> Vec<Result<SecretValue, BackendError>> {
        // Unversioned keys, deduplicated in first-seen order, go through the batch API;
        // versioned reads cannot be batched.
        let mut slot_of: HashMap<&str, usize> = HashMap::new();
        let mut unique: Vec<&str> = Vec::new();
        let mut versioned: Vec<usize> = Vec::new();
        for (i, r) in reqs.iter().enumerate() {
            if r.version.as_deref().is_some_and(|v| !v.trim().is_empty()) {
                versioned.push(i);
            } else if !slot_of.contains_key(r.key.as_str()) {
                slot_of.insert(r.key.as_str(), unique.len());
                unique.push(r.key.as_str());
            }
        }

        let direct = futures::future::join_all(versioned.iter().map(|&i| self.read(&reqs[i])));
        // Owned chunks keep the stream's closure free of borrowed arguments, which the
        // `Send` bound of the async trait method cannot express.
        let chunks: Vec<Vec<String>> = unique
            .chunks(BATCH_LIMIT)
            .map(|c| c.iter().map(|k| k.to_string()).collect())
            .collect();
        let batched = futures::stream::iter(chunks)
            .map(|chunk| async move { self.read_chunk(&chunk).await })
            .buffered(BATCH_CONCURRENCY)
            .collect::<Vec<_>>();
        let (direct, batched) = futures::join!(direct, batched);
        let batched: Vec<Result<SecretValue, BackendError>> =
            batched.into_iter().flatten().collect();

        let mut direct: HashMap<usize, Result<SecretValue, BackendError>> =
            versioned.into_iter().zip(direct).collect();
        reqs.iter()
            .enumerate()
            .map(|(i, r)| match direct.remove(&i) {
                Some(res) => res,
                None => slot_of
                    .get(r.key.as_str())
                    .and_then(|&s| batched.get(s).cloned())
                    .unwrap_or_else(|| Err(BackendError::unavailable("AWS read lost"))),
            })
            .collect()
    }

    async fn list(&self, under: &str) -> Result<Vec<String>, BackendError> {
        let wanted = format!("{}{}", self.prefix, under);
        let filter = list_filter_value(&wanted);
        tracing::debug!(
            backend = "aws",
            operation = "ListSecrets",
            key = under,
            "listing secrets"
        );
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut call = self
                .client
                .list_secrets()
                .max_results(LIST_PAGE_SIZE)
                .set_next_token(token.take());
            if !filter.is_empty() {
                call = call.filters(
                    Filter::builder()
                        .key(FilterNameStringType::Name)
                        .values(filter.as_str())
                        .build(),
                );
            }
            let out = call.send().await.map_err(|e| {
                let err =
                    map_sdk_error(&e, "ListSecrets", &format!("AWS secrets under {wanted:?}"));
                tracing::debug!(
                    backend = "aws",
                    operation = "ListSecrets",
                    key = under,
                    reason = %err.reason,
                    "list failed"
                );
                err
            })?;
            // The name filter is documented as a case-sensitive prefix match, but it only
            // narrows (the value may have been cut, emulators differ): keep only names that
            // really start with the literal prefix.
            keys.extend(
                out.secret_list
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|s| s.name)
                    .filter(|n| n.starts_with(&wanted))
                    .filter_map(|n| n.strip_prefix(self.prefix.as_str()).map(str::to_string)),
            );
            token = out.next_token.filter(|t| !t.is_empty());
            pages += 1;
            if token.is_none() {
                break;
            }
            if pages >= MAX_PAGES {
                return Err(BackendError::unavailable(format!(
                    "ListSecrets of AWS secrets under {wanted:?} did not finish after {MAX_PAGES} pages"
                )));
            }
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
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

/// A version pin that looks like a staging label (`AWSCURRENT`, `AWSPREVIOUS`, custom
/// upper-case labels) rather than a version id (a UUID or client token).
fn is_version_stage(v: &str) -> bool {
    let mut chars = v.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The value of a secret version: the string's bytes, else the raw binary.
fn secret_value(string: Option<String>, binary: Option<Blob>) -> Option<SecretValue> {
    match (string, binary) {
        (Some(s), _) => Some(SecretValue::from_string(s)),
        (None, Some(b)) => Some(SecretValue::new(b.into_inner())),
        (None, None) => None,
    }
}

fn no_value(name: &str) -> BackendError {
    BackendError::new(
        Reason::SecretNotFound,
        format!("AWS secret {name:?} has neither SecretString nor SecretBinary"),
    )
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
fn is_aws_hosted(endpoint: &str) -> bool {
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
    let access_key_id = credential_string(credentials, &r.name, &r.access_key_id_key).await?;
    let secret_access_key =
        credential_string(credentials, &r.name, &r.secret_access_key_key).await?;
    let session_token = match r.session_token_key.as_deref() {
        Some(k) if !k.is_empty() => Some(credential_string(credentials, &r.name, k).await?),
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
    name: &str,
    key: &str,
) -> Result<String, BackendError> {
    let value = credentials.secret_value(name, key).await.map_err(|e| {
        let e = if e.reason == Reason::SecretNotFound {
            BackendError::invalid_config(e.message)
        } else {
            e
        };
        e.context("AWS credentials (spec.aws.auth.secretRef)")
    })?;
    let text = value.as_str().map(str::trim).ok_or_else(|| {
        BackendError::invalid_config(format!(
            "AWS credentials: key {key:?} of Secret {name:?} is not UTF-8"
        ))
    })?;
    if text.is_empty() {
        return Err(BackendError::invalid_config(format!(
            "AWS credentials: key {key:?} of Secret {name:?} is empty"
        )));
    }
    Ok(text.to_string())
}

/// Characters the `ListSecrets` name filter accepts. The filter is only a server-side
/// narrowing: cutting the value at the first other character still lists a superset.
fn list_filter_value(prefix: &str) -> String {
    prefix
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || "/_+=.@-:".contains(*c))
        .take(MAX_FILTER_LEN)
        .collect()
}

/// Maps an SDK failure to the taxonomy. Uses only the service's error code and message,
/// the HTTP status and the kind of transport failure: never the SDK's Debug output,
/// which can be long and carry request data.
fn map_sdk_error<E>(err: &SdkError<E, HttpResponse>, op: &str, what: &str) -> BackendError
where
    E: ProvideErrorMetadata + StdError + 'static,
{
    match err {
        SdkError::ServiceError(se) => service_error(
            op,
            what,
            se.err().code().unwrap_or(""),
            se.err().message().unwrap_or(""),
            Some(se.raw().status().as_u16()),
        ),
        SdkError::TimeoutError(_) => {
            BackendError::unavailable(format!("{op} of {what}: timed out"))
        }
        SdkError::DispatchFailure(df) => {
            if let Some(ce) = find_source::<CredentialsError>(err) {
                return credentials_error(ce, op, what);
            }
            let chain = df
                .as_connector_error()
                .map(|c| error_chain(c))
                .unwrap_or_default();
            if df.is_user() {
                BackendError::invalid_config(format!("{op} of {what}: request rejected: {chain}"))
            } else if df.is_timeout() {
                BackendError::unavailable(format!("{op} of {what}: connection timed out: {chain}"))
            } else if df.is_io() {
                BackendError::unavailable(format!("{op} of {what}: connection failed: {chain}"))
            } else {
                BackendError::unavailable(format!("{op} of {what}: request failed: {chain}"))
            }
        }
        // The body did not parse; its text may hold secret data, so only the status is
        // reported.
        SdkError::ResponseError(re) => BackendError::unavailable(format!(
            "{op} of {what}: unexpected response from AWS Secrets Manager (HTTP {})",
            re.raw().status().as_u16()
        )),
        SdkError::ConstructionFailure(_) => BackendError::invalid_config(format!(
            "{op} of {what}: request could not be built: {}",
            error_chain(err)
        )),
        _ => BackendError::unavailable(format!("{op} of {what}: request failed")),
    }
}

/// Credential resolution failed before anything reached Secrets Manager.
fn credentials_error(ce: &CredentialsError, op: &str, what: &str) -> BackendError {
    let chain = error_chain(ce);
    let transport = find_source::<ConnectorError>(ce);
    match ce {
        CredentialsError::CredentialsNotLoaded(_) => BackendError::invalid_config(format!(
            "{op} of {what}: no AWS credentials found (set spec.aws.auth.secretRef or give the operator IRSA / pod identity): {chain}"
        )),
        CredentialsError::InvalidConfiguration(_) => BackendError::invalid_config(format!(
            "{op} of {what}: invalid AWS credential configuration: {chain}"
        )),
        CredentialsError::ProviderTimedOut(_) => BackendError::unavailable(format!(
            "{op} of {what}: loading AWS credentials timed out: {chain}"
        )),
        // AssumeRole and web-identity exchanges: a transport problem is transient, a
        // refusal is not.
        CredentialsError::ProviderError(_) if transport.is_none() => BackendError::access_denied(
            format!("{op} of {what}: loading AWS credentials failed: {chain}"),
        ),
        _ => BackendError::unavailable(format!(
            "{op} of {what}: loading AWS credentials failed: {chain}"
        )),
    }
}

/// Builds the error for a service error code (also used for per-secret batch errors).
fn service_error(
    op: &str,
    what: &str,
    code: &str,
    message: &str,
    status: Option<u16>,
) -> BackendError {
    let reason = classify(code, message, status);
    let message = clip(message);
    let code = if code.is_empty() {
        status.map_or_else(|| "error".to_string(), |s| format!("HTTP {s}"))
    } else {
        code.to_string()
    };
    if reason == Reason::SecretNotFound {
        BackendError::new(reason, format!("{what} not found ({code}: {message})"))
    } else {
        BackendError::new(reason, format!("{op} of {what}: {code}: {message}"))
    }
}

fn classify(code: &str, message: &str, status: Option<u16>) -> Reason {
    match code {
        "ResourceNotFoundException" => Reason::SecretNotFound,
        // A secret scheduled for deletion can no longer be read: to a binding it is gone.
        // (AWS says "marked for deletion", moto "marked deleted".)
        "InvalidRequestException"
            if message.contains("marked for deletion") || message.contains("marked deleted") =>
        {
            Reason::SecretNotFound
        }
        "AccessDeniedException"
        | "AccessDenied"
        | "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "InvalidSignatureException"
        | "SignatureDoesNotMatch"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "MissingAuthenticationTokenException"
        | "ExpiredToken"
        | "ExpiredTokenException"
        | "RequestExpired"
        | "DecryptionFailure"
        | "KMSAccessDeniedException" => Reason::AccessDenied,
        "ThrottlingException"
        | "Throttling"
        | "TooManyRequestsException"
        | "RequestLimitExceeded"
        | "InternalServiceError"
        | "InternalFailure"
        | "ServiceUnavailable"
        | "ServiceUnavailableException"
        | "RequestTimeout"
        | "RequestTimeoutException" => Reason::BackendUnavailable,
        "InvalidParameterException"
        | "InvalidRequestException"
        | "InvalidNextTokenException"
        | "ValidationException"
        | "ValidationError" => Reason::InvalidConfig,
        _ => match status {
            Some(401 | 403) => Reason::AccessDenied,
            Some(404) => Reason::SecretNotFound,
            Some(429) => Reason::BackendUnavailable,
            Some(400..=499) => Reason::InvalidConfig,
            _ => Reason::BackendUnavailable,
        },
    }
}

/// The first error of type `T` in `err`'s source chain (`err` included).
fn find_source<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        cur = e.source();
    }
    None
}

/// `Display` of an error and its sources, joined and clipped. Used only for errors that
/// cannot carry secret data (transport, credential and request-building failures).
fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        let text = e.to_string();
        // Wrappers often repeat their source's text; keep each piece once.
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = e.source();
    }
    clip(&parts.join(": "))
}

/// Upstream text made single-line (whitespace runs collapsed) and short.
fn clip(text: &str) -> String {
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect();
    let joined = words.join(" ");
    let mut out: String = joined.chars().take(MAX_DETAIL).collect();
    if joined.chars().count() > MAX_DETAIL {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_stage_or_id() {
        assert!(is_version_stage("AWSCURRENT"));
        assert!(is_version_stage("AWSPREVIOUS"));
        assert!(is_version_stage("MY_STAGE2"));
        assert!(!is_version_stage("3f1c0e6a-8a9f-4c1e-9d0e-1b2c3d4e5f60"));
        assert!(!is_version_stage("3F1C0E6A-8A9F"));
        assert!(!is_version_stage("1"));
        assert!(!is_version_stage("awscurrent"));
        assert!(!is_version_stage(""));
    }

    #[test]
    fn classifies_codes() {
        assert_eq!(
            classify("ResourceNotFoundException", "", Some(400)),
            Reason::SecretNotFound
        );
        assert_eq!(
            classify("UnrecognizedClientException", "", Some(400)),
            Reason::AccessDenied
        );
        assert_eq!(
            classify("DecryptionFailure", "", Some(400)),
            Reason::AccessDenied
        );
        assert_eq!(
            classify("ThrottlingException", "", Some(400)),
            Reason::BackendUnavailable
        );
        assert_eq!(
            classify("InvalidParameterException", "", Some(400)),
            Reason::InvalidConfig
        );
        assert_eq!(
            classify(
                "InvalidRequestException",
                "You can't perform this operation on the secret because it was marked for deletion.",
                Some(400)
            ),
            Reason::SecretNotFound
        );
        assert_eq!(classify("", "", Some(503)), Reason::BackendUnavailable);
        assert_eq!(classify("Weird", "", Some(403)), Reason::AccessDenied);
        assert_eq!(classify("Weird", "", None), Reason::BackendUnavailable);
    }

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

    #[test]
    fn filter_value_is_cut_at_unsupported_chars() {
        assert_eq!(list_filter_value("apps/shop/db_"), "apps/shop/db_");
        assert_eq!(list_filter_value("apps/sh op"), "apps/sh");
        assert_eq!(list_filter_value(&"a".repeat(600)).len(), MAX_FILTER_LEN);
    }

    #[test]
    fn clip_is_single_line_and_short() {
        assert_eq!(clip("You tried to \n      perform"), "You tried to perform");
        let long = format!("a\nb{}", "x".repeat(1000));
        let c = clip(&long);
        assert!(!c.contains('\n'));
        assert!(c.chars().count() <= MAX_DETAIL + 1);
    }
}
