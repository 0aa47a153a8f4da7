//! Listing for `find`: a recursive walk of LIST calls (KV v2 metadata, KV v1 paths) that
//! descends only into folders that can hold keys under the requested prefix.

use vaultrs::api::kv1::requests::ListSecretRequest;
use vaultrs::api::kv2::requests::ListSecretsRequest;

use super::error::Op;
use super::{KvVersion, VaultBackend};
use crate::{BackendError, Reason};

impl VaultBackend {
    /// Keys (relative to the prefix) starting with `under`, sorted.
    pub(super) async fn list_keys(&self, under: &str) -> Result<Vec<String>, BackendError> {
        // Work on mount-relative paths: the prefix need not end in '/', so the deepest
        // folder is taken from prefix + under together.
        let target = format!("{}{}", self.prefix, under);
        // A `..` segment could make Vault list a folder outside the prefix.
        if under.split('/').any(|s| s == "." || s == "..") {
            return Err(BackendError::invalid_config(format!(
                "cannot list {under:?}: '.' and '..' segments are not allowed"
            )));
        }
        let start = match target.rfind('/') {
            Some(i) => target[..=i].to_string(),
            None => String::new(),
        };
        let mut keys = Vec::new();
        let mut folders = vec![start];
        while let Some(folder) = folders.pop() {
            for entry in self.list_folder(&folder).await? {
                let full = format!("{folder}{entry}");
                if entry.ends_with('/') {
                    // Descend only into folders that can hold matching keys.
                    if full.starts_with(&target) || target.starts_with(&full) {
                        folders.push(full);
                    }
                } else if full.starts_with(&target) {
                    keys.push(full[self.prefix.len()..].to_string());
                }
            }
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// One LIST call; `folder` is relative to the mount and empty or ending in `/`.
    async fn list_folder(&self, folder: &str) -> Result<Vec<String>, BackendError> {
        let what = match self.kv {
            KvVersion::V2 => format!("listing {}/metadata/{folder}", self.mount),
            KvVersion::V1 => format!("listing {}/{folder}", self.mount),
        };
        let result = match self.kv {
            KvVersion::V2 => {
                self.call(Op::List, folder, &what, |session| {
                    let endpoint = ListSecretsRequest {
                        mount: self.mount.clone(),
                        path: folder.to_string(),
                    };
                    async move {
                        vaultrs::api::exec_with_result(session.as_ref(), endpoint)
                            .await
                            .map(|r| r.keys)
                    }
                })
                .await
            }
            KvVersion::V1 => {
                self.call(Op::List, folder, &what, |session| {
                    let endpoint = ListSecretRequest {
                        mount: self.mount.clone(),
                        path: folder.to_string(),
                    };
                    async move {
                        vaultrs::api::exec_with_no_result(session.as_ref(), endpoint)
                            .await
                            .map(|r| r.data.keys)
                    }
                })
                .await
            }
        };
        match result {
            // A folder with nothing below it does not exist for Vault.
            Err(err) if err.reason == Reason::SecretNotFound => Ok(Vec::new()),
            other => other,
        }
    }
}
