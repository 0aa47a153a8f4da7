//! Reads: `GetSecretValue` for one key (optionally at a version stage or id), and batched
//! `BatchGetSecretValue` for many unversioned keys, falling back to single reads where the
//! batch cannot answer.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::operation::batch_get_secret_value::BatchGetSecretValueError;
use aws_sdk_secretsmanager::primitives::Blob;
use futures::StreamExt;

use super::error::{map_sdk_error, service_error};
use super::{AwsBackend, MAX_PAGES};
use crate::{BackendError, ReadRequest, Reason, SecretValue};

/// `BatchGetSecretValue` accepts at most this many secret ids per call.
const BATCH_LIMIT: usize = 20;
/// How many batch calls of one `read_batch` run at once.
const BATCH_CONCURRENCY: usize = 4;

type ReadResult = Result<SecretValue, BackendError>;

impl AwsBackend {
    fn name(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    /// One `GetSecretValue`.
    pub(super) async fn read_one(&self, req: &ReadRequest) -> ReadResult {
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

    /// Many reads; one result per request, in order.
    pub(super) async fn read_many(&self, reqs: &[ReadRequest]) -> Vec<ReadResult> {
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

        let direct = futures::future::join_all(versioned.iter().map(|&i| self.read_one(&reqs[i])));
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
        let batched: Vec<ReadResult> = batched.into_iter().flatten().collect();

        let mut direct: HashMap<usize, ReadResult> = versioned.into_iter().zip(direct).collect();
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

    /// Reads up to [`BATCH_LIMIT`] distinct unversioned keys; one result per key, in order.
    async fn read_chunk(&self, keys: &[String]) -> Vec<ReadResult> {
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
        let mut found = match self.batch_get(&names).await {
            Ok(found) => found,
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
                    Reason::InvalidConfig | Reason::SecretNotFound => self.read_each(keys).await,
                    _ => keys.iter().map(|_| Err(err.clone())).collect(),
                };
            }
        };

        let mut results: Vec<Option<ReadResult>> = names.iter().map(|n| found.remove(n)).collect();
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

    async fn read_each(&self, keys: &[String]) -> Vec<ReadResult> {
        futures::future::join_all(
            keys.iter()
                .map(|k| async move { self.read_one(&ReadRequest::latest(k.as_str())).await }),
        )
        .await
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
