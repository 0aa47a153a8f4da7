//! Listing for `find`, shared by both services: every page of a listing call, the names
//! turned into keys where they are wanted, sorted.

use std::error::Error as StdError;
use std::future::Future;

use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};

use super::MAX_PAGES;
use super::error::map_sdk_error;
use crate::BackendError;

/// The listing calls of one service: the listing for `find`, and the one-item listing
/// `validate` signs a request with.
pub trait Listing {
    /// Keys (relative to the prefix) starting with `under`, sorted.
    fn list_keys(
        &self,
        under: &str,
    ) -> impl Future<Output = Result<Vec<String>, BackendError>> + Send;

    /// Proves the credentials with the cheapest signed call.
    fn validate(&self) -> impl Future<Output = Result<(), BackendError>> + Send;
}

/// One page of a listing.
pub(super) struct Page {
    pub(super) names: Vec<String>,
    pub(super) next_token: Option<String>,
}

/// The keys of every page `page` fetches (given the token of the previous page; `what`
/// names the listing in errors), each name mapped by `key_of`, sorted and deduplicated.
pub(super) async fn collect_keys<E, Fut>(
    operation: &'static str,
    under: &str,
    what: &str,
    mut page: impl FnMut(Option<String>) -> Fut,
    key_of: impl Fn(&str) -> Option<String>,
) -> Result<Vec<String>, BackendError>
where
    Fut: Future<Output = Result<Page, SdkError<E, HttpResponse>>>,
    E: ProvideErrorMetadata + StdError + 'static,
{
    tracing::debug!(backend = "aws", operation, key = under, "listing");
    let mut keys = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let out = page(token.take()).await.map_err(|e| {
            let err = map_sdk_error(&e, operation, what);
            tracing::debug!(
                backend = "aws",
                operation,
                key = under,
                reason = %err.reason,
                "list failed"
            );
            err
        })?;
        keys.extend(out.names.iter().filter_map(|n| key_of(n)));
        token = out.next_token.filter(|t| !t.is_empty());
        pages += 1;
        if token.is_none() {
            break;
        }
        if pages >= MAX_PAGES {
            return Err(BackendError::unavailable(format!(
                "{operation} of {what} did not finish after {MAX_PAGES} pages"
            )));
        }
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}
