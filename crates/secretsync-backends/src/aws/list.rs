//! Listing for `find`: paged `ListSecrets` with the literal prefix as the server-side name
//! filter, and the same prefix checked again on every returned name.

use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};

use super::error::map_sdk_error;
use super::{AwsBackend, MAX_PAGES};
use crate::BackendError;

/// Page size of `ListSecrets` (the API maximum).
const LIST_PAGE_SIZE: i32 = 100;
/// The `name` filter of `ListSecrets` accepts at most this many characters.
const MAX_FILTER_LEN: usize = 512;

impl AwsBackend {
    /// Keys (relative to the prefix) starting with `under`, sorted.
    pub(super) async fn list_keys(&self, under: &str) -> Result<Vec<String>, BackendError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_value_is_cut_at_unsupported_chars() {
        assert_eq!(list_filter_value("apps/shop/db_"), "apps/shop/db_");
        assert_eq!(list_filter_value("apps/sh op"), "apps/sh");
        assert_eq!(list_filter_value(&"a".repeat(600)).len(), MAX_FILTER_LEN);
    }
}
