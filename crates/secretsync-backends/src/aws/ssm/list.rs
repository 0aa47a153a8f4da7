//! Listing for `find`: paged, recursive `GetParametersByPath` on the deepest hierarchy
//! level the literal prefix names, and the prefix checked again on every returned name.

use super::{ParameterStoreBackend, SERVICE};
use crate::BackendError;
use crate::aws::MAX_PAGES;
use crate::aws::error::map_sdk_error;

/// Page size of `GetParametersByPath` (the API maximum).
const LIST_PAGE_SIZE: i32 = 10;

impl ParameterStoreBackend {
    /// Keys (relative to the prefix) starting with `under`, sorted.
    pub(super) async fn list_keys(&self, under: &str) -> Result<Vec<String>, BackendError> {
        let wanted = format!("{}{}", self.prefix, under);
        let path = search_path(&wanted);
        tracing::debug!(
            backend = "aws",
            operation = "GetParametersByPath",
            key = under,
            "listing parameters"
        );
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        let mut pages = 0;
        loop {
            // Without decryption: only names are used, so listing needs no KMS access and
            // SecureString plaintexts never reach this process.
            let out = self
                .client
                .get_parameters_by_path()
                .path(&path)
                .recursive(true)
                .with_decryption(false)
                .max_results(LIST_PAGE_SIZE)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| {
                    let err = map_sdk_error(
                        &e,
                        "GetParametersByPath",
                        &format!("SSM parameters under {wanted:?}"),
                    );
                    tracing::debug!(
                        backend = "aws",
                        operation = "GetParametersByPath",
                        key = under,
                        reason = %err.reason,
                        "list failed"
                    );
                    err
                })?;
            keys.extend(
                out.parameters
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|p| p.name)
                    .filter_map(|n| key_of(&n, &wanted, &self.prefix)),
            );
            token = out.next_token.filter(|t| !t.is_empty());
            pages += 1;
            if token.is_none() {
                break;
            }
            if pages >= MAX_PAGES {
                return Err(BackendError::unavailable(format!(
                    "GetParametersByPath of {SERVICE} under {wanted:?} did not finish after {MAX_PAGES} pages"
                )));
            }
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }
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
}
