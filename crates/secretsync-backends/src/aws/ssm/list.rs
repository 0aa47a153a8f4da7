//! Listing for `find`: recursive `GetParametersByPath` on the deepest hierarchy
//! level the literal prefix names, and the prefix checked again on every returned name.
//! `validate` describes one parameter.

use aws_sdk_ssm::error::ProvideErrorMetadata;

use super::{ParameterStoreBackend, SERVICE};
use crate::BackendError;
use crate::aws::error::map_sdk_error;
use crate::aws::paging::{Listing, Page, collect_keys};

/// Page size of `GetParametersByPath` (the API maximum).
const LIST_PAGE_SIZE: i32 = 10;

impl Listing for ParameterStoreBackend {
    async fn list_keys(&self, under: &str) -> Result<Vec<String>, BackendError> {
        let wanted = format!("{}{}", self.prefix, under);
        let path = search_path(&wanted);
        let page = |token: Option<String>| {
            // Without decryption: only names are used, so listing needs no KMS access and
            // SecureString plaintexts never reach this process.
            let call = self
                .client
                .get_parameters_by_path()
                .path(&path)
                .recursive(true)
                .with_decryption(false)
                .max_results(LIST_PAGE_SIZE)
                .set_next_token(token);
            async move {
                let out = call.send().await?;
                Ok(Page {
                    names: out
                        .parameters
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|p| p.name)
                        .collect(),
                    next_token: out.next_token,
                })
            }
        };
        let what = format!("SSM parameters under {wanted:?}");
        let key = |name: &str| key_of(name, &wanted, &self.prefix);
        collect_keys("GetParametersByPath", under, &what, page, key).await
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

/// Whether a refused `DescribeParameters` still proves the credentials: a policy denial
/// (as opposed to unknown keys or a bad signature, which have their own codes) comes only
/// after the request was authenticated. An answer whose code could not be read proves
/// nothing.
fn refusal_proves_credentials(code: Option<&str>) -> bool {
    matches!(code, Some("AccessDeniedException" | "AccessDenied"))
}

/// The hierarchy `GetParametersByPath` searches for names starting with `wanted`: its part
/// up to the last `/`, always absolute (one-level names such as `db` live under `/`).
fn search_path(wanted: &str) -> String {
    let absolute = if wanted.starts_with('/') {
        wanted.to_string()
    } else {
        format!("/{wanted}")
    };
    let dir = match absolute.rfind('/') {
        Some(i) => &absolute[..i],
        None => "",
    };
    if dir.is_empty() {
        "/".to_string()
    } else {
        dir.to_string()
    }
}

/// The key of parameter `name` if it starts with `wanted` (prefix + the listed part),
/// relative to `prefix`. A one-level name may come back with or without its leading `/`,
/// so both spellings are tried.
fn key_of(name: &str, wanted: &str, prefix: &str) -> Option<String> {
    let slashed = (!name.starts_with('/')).then(|| format!("/{name}"));
    [Some(name.to_string()), slashed]
        .into_iter()
        .flatten()
        .find(|n| n.starts_with(wanted))
        .and_then(|n| n.strip_prefix(prefix).map(str::to_string))
        .filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_paths_are_the_deepest_literal_level() {
        assert_eq!(search_path(""), "/");
        assert_eq!(search_path("/"), "/");
        assert_eq!(search_path("db"), "/");
        assert_eq!(search_path("/shop/"), "/shop");
        assert_eq!(search_path("/shop/db/pa"), "/shop/db");
        assert_eq!(search_path("/shop/db/"), "/shop/db");
        assert_eq!(search_path("shop/db/x"), "/shop/db");
    }

    #[test]
    fn keys_are_relative_to_the_prefix() {
        assert_eq!(
            key_of("/shop/db/password", "/shop/db/", "/shop/").as_deref(),
            Some("db/password")
        );
        assert_eq!(key_of("/shop/dbx", "/shop/db/", "/shop/"), None);
        assert_eq!(key_of("/shopping/a", "/shop/", "/shop/"), None);
        assert_eq!(key_of("db", "", "").as_deref(), Some("db"));
        assert_eq!(key_of("db", "/d", "/").as_deref(), Some("db"));
        assert_eq!(key_of("/shop/", "/shop/", "/shop/"), None);
    }

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
