//! Listing for `find`: `ListSecrets` with the literal prefix as the server-side name
//! filter, and the same prefix checked again on every returned name. `validate` lists one
//! secret.

use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};

use super::AwsBackend;
use super::error::map_sdk_error;
use super::paging::{Listing, Page, collect_keys};
use crate::BackendError;

/// Page size of `ListSecrets` (the API maximum).
const LIST_PAGE_SIZE: i32 = 100;
/// The `name` filter of `ListSecrets` accepts at most this many characters.
const MAX_FILTER_LEN: usize = 512;

impl Listing for AwsBackend {
    async fn list_keys(&self, under: &str) -> Result<Vec<String>, BackendError> {
        let wanted = format!("{}{}", self.prefix, under);
        let filter = list_filter_value(&wanted);
        let page = |token: Option<String>| {
            let mut call = self
                .client
                .list_secrets()
                .max_results(LIST_PAGE_SIZE)
                .set_next_token(token);
            if !filter.is_empty() {
                call = call.filters(
                    Filter::builder()
                        .key(FilterNameStringType::Name)
                        .values(filter.as_str())
                        .build(),
                );
            }
            async move {
                let out = call.send().await?;
                Ok(Page {
                    names: out
                        .secret_list
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|s| s.name)
                        .collect(),
                    next_token: out.next_token,
                })
            }
        };
        // The name filter is documented as a case-sensitive prefix match, but it only
        // narrows (the value may have been cut, emulators differ): keep only names that
        // really start with the literal prefix.
        let key_of = |name: &str| {
            name.strip_prefix(self.prefix.as_str())
                .filter(|_| name.starts_with(&wanted))
                .map(str::to_string)
        };
        let what = format!("AWS secrets under {wanted:?}");
        collect_keys("ListSecrets", under, &what, page, key_of).await
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
