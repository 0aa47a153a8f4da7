//! Reads: `GetSecretValue` for one key (optionally at a version stage or id), and
//! `BatchGetSecretValue` as the batch call of the shared batching (`super::batch`).

use std::collections::HashMap;

use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::operation::batch_get_secret_value::BatchGetSecretValueError;
use aws_sdk_secretsmanager::primitives::Blob;

use super::batch::{BatchFailure, BatchRead, Denial, ReadResult, read_failed};
use super::error::{map_sdk_error, service_error};
use super::{AwsBackend, MAX_PAGES};
use crate::{BackendError, ReadRequest, Reason, SecretValue};

/// `BatchGetSecretValue` accepts at most this many secret ids per call.
const BATCH_LIMIT: usize = 20;

impl BatchRead for AwsBackend {
    const BATCH_OPERATION: &'static str = "BatchGetSecretValue";
    const BATCH_LIMIT: usize = BATCH_LIMIT;
    const SHORT_NAME: &'static str = "AWS";

    /// One `GetSecretValue`.
    async fn read_one(&self, req: &ReadRequest) -> ReadResult {
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
            Err(e) => Err(read_failed(&e, "GetSecretValue", &what, req)),
        }
    }

    async fn batch_call(&self, names: &[String]) -> Result<Vec<Option<ReadResult>>, BatchFailure> {
        match self.batch_get(names).await {
            Ok(mut found) => Ok(names.iter().map(|n| found.remove(n)).collect()),
            Err(e) => Err(BatchFailure {
                error: map_sdk_error(
                    &e,
                    "BatchGetSecretValue",
                    &format!("{} AWS secrets", names.len()),
                ),
                // Authenticated but not allowed to batch: GetSecretValue may still be
                // allowed for each secret.
                denial: if e.code() == Some("AccessDeniedException") {
                    Denial::OfBatching
                } else {
                    Denial::None
                },
            }),
        }
    }
}

impl AwsBackend {
    /// Every page of one `BatchGetSecretValue`: values and per-secret errors by name.
    async fn batch_get(
        &self,
        names: &[String],
    ) -> Result<HashMap<String, ReadResult>, SdkError<BatchGetSecretValueError, HttpResponse>> {
        let mut found: HashMap<String, ReadResult> = HashMap::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let out = self
                .client
                .batch_get_secret_value()
                .set_secret_id_list(Some(names.to_vec()))
                .set_next_token(token.take())
                .send()
                .await?;
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
        Ok(found)
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
}
