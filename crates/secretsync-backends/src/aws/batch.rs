//! Batched reads, shared by both services: unversioned keys, deduplicated, go through the
//! service's batch call in chunks; pinned keys, and whatever a batch cannot answer, are
//! read one by one.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::future::Future;
use std::sync::atomic::Ordering;

use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use futures::StreamExt;

use super::AwsServiceBackend;
use super::error::map_sdk_error;
use crate::{BackendError, ReadRequest, Reason, SecretValue};

/// How many batch calls of one `read_batch` run at once.
const BATCH_CONCURRENCY: usize = 4;

pub type ReadResult = Result<SecretValue, BackendError>;

/// Why a batch call failed as a whole, as far as it tells whether batching is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// Not a permission refusal.
    None,
    /// The batch operation itself is not allowed: stop batching.
    OfBatching,
    /// Refused, but perhaps only for one of the names: stop batching only if every single
    /// read of the chunk then succeeds.
    Unclear,
}

/// A batch call that failed as a whole.
pub struct BatchFailure {
    /// The failure, as it would be for every key of the chunk.
    pub error: BackendError,
    /// What it tells about batching.
    pub denial: Denial,
}

/// The reads one service provides to the shared batching.
pub trait BatchRead: Sync {
    /// The batch operation, for logs.
    const BATCH_OPERATION: &'static str;
    /// Most names one batch call accepts.
    const BATCH_LIMIT: usize;
    /// The service's short name in errors (`AWS`, `SSM`).
    const SHORT_NAME: &'static str;

    /// One read, pinned or not.
    fn read_one(&self, req: &ReadRequest) -> impl Future<Output = ReadResult> + Send;

    /// One batch call for the remote names of at least two distinct unversioned keys: per
    /// name, in order, its result, or `None` where the answer does not mention it.
    fn batch_call(
        &self,
        names: &[String],
    ) -> impl Future<Output = Result<Vec<Option<ReadResult>>, BatchFailure>> + Send;
}

impl<C: Sync> AwsServiceBackend<C> {
    /// Many reads; one result per request, in order.
    pub(super) async fn read_many(&self, reqs: &[ReadRequest]) -> Vec<ReadResult>
    where
        Self: BatchRead,
    {
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
            .chunks(Self::BATCH_LIMIT)
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
                    .unwrap_or_else(|| Err(lost::<Self>())),
            })
            .collect()
    }

    /// Reads up to `BATCH_LIMIT` distinct unversioned keys; one result per key, in order.
    async fn read_chunk(&self, keys: &[String]) -> Vec<ReadResult>
    where
        Self: BatchRead,
    {
        if keys.len() < 2 || self.batch_denied.load(Ordering::Relaxed) {
            return self.read_each(keys).await;
        }
        let names: Vec<String> = keys.iter().map(|k| self.name(k)).collect();
        tracing::debug!(
            backend = "aws",
            operation = Self::BATCH_OPERATION,
            keys = keys.len(),
            "batch read"
        );
        let mut results = match self.batch_call(&names).await {
            Ok(results) => results,
            Err(failure) => return self.after_failed_batch(keys, failure).await,
        };
        results.resize_with(keys.len(), || None);
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
            .map(|r| r.unwrap_or_else(|| Err(lost::<Self>())))
            .collect()
    }

    /// The results of a chunk whose batch call failed as a whole.
    async fn after_failed_batch(&self, keys: &[String], failure: BatchFailure) -> Vec<ReadResult>
    where
        Self: BatchRead,
    {
        let BatchFailure { error, denial } = failure;
        tracing::debug!(
            backend = "aws",
            operation = Self::BATCH_OPERATION,
            reason = %error.reason,
            "batch read failed"
        );
        match denial {
            Denial::OfBatching => {
                self.batch_denied.store(true, Ordering::Relaxed);
                self.read_each(keys).await
            }
            Denial::Unclear => {
                let each = self.read_each(keys).await;
                if each.iter().all(Result::is_ok) {
                    self.batch_denied.store(true, Ordering::Relaxed);
                }
                each
            }
            Denial::None => match error.reason {
                // One unreadable or invalid name must not fail its neighbours.
                Reason::InvalidConfig | Reason::SecretNotFound => self.read_each(keys).await,
                _ => keys.iter().map(|_| Err(error.clone())).collect(),
            },
        }
    }

    async fn read_each(&self, keys: &[String]) -> Vec<ReadResult>
    where
        Self: BatchRead,
    {
        futures::future::join_all(
            keys.iter()
                .map(|k| async move { self.read_one(&ReadRequest::latest(k.as_str())).await }),
        )
        .await
    }
}

/// Maps and logs the failure of single read `op` of `req` (`what` names it in errors).
pub(super) fn read_failed<E>(
    e: &SdkError<E, HttpResponse>,
    op: &'static str,
    what: &str,
    req: &ReadRequest,
) -> BackendError
where
    E: ProvideErrorMetadata + StdError + 'static,
{
    let err = map_sdk_error(e, op, what);
    tracing::debug!(
        backend = "aws",
        operation = op,
        key = %req.key,
        reason = %err.reason,
        "read failed"
    );
    err
}

/// A result that went missing between the calls and the answer; a bug, not a remote state.
fn lost<B: BatchRead>() -> BackendError {
    BackendError::unavailable(format!("{} read lost", B::SHORT_NAME))
}
