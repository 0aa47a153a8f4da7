//! KV v1 and v2 reads, and turning a secret's field map into a [`SecretValue`] without
//! leaving copies of it behind.

use vaultrs::api::kv1::requests::GetSecretRequest;
use vaultrs::api::kv2::requests::ReadSecretRequest;
use zeroize::Zeroize;

use super::VaultBackend;
use super::error::Op;
use crate::{BackendError, ReadRequest, Reason, SecretValue};

impl VaultBackend {
    /// `<prefix><key>`, refusing paths that would address something other than one secret
    /// below the mount (empty or `.`/`..` segments).
    pub(super) fn remote_path(&self, key: &str) -> Result<String, BackendError> {
        let path = format!("{}{}", self.prefix, key);
        let dots = |s: &str| s == "." || s == "..";
        if key.is_empty()
            || key.split('/').any(dots)
            || path.split('/').any(|s| s.is_empty() || dots(s))
        {
            return Err(BackendError::invalid_config(format!(
                "remote key {key:?} is not a valid Vault secret path (empty, '.' or '..' segments)"
            )));
        }
        Ok(path)
    }

    /// `GET <mount>/data/<path>`, optionally at a pinned version.
    pub(super) async fn read_v2(
        &self,
        req: &ReadRequest,
        path: String,
    ) -> Result<SecretValue, BackendError> {
        let key = req.key.as_str();
        let version = kv2_version(key, req.version.as_deref())?;
        let what = match version {
            Some(v) => format!(
                "remote key {key:?} version {v} ({}/data/{path})",
                self.mount
            ),
            None => format!("remote key {key:?} ({}/data/{path})", self.mount),
        };
        let response = self
            .call(Op::Read, key, &what, |session| {
                let endpoint = ReadSecretRequest {
                    mount: self.mount.clone(),
                    path: path.clone(),
                    version,
                };
                async move { vaultrs::api::exec_with_result(session.as_ref(), endpoint).await }
            })
            .await?;
        // A deleted or destroyed version has no data (Vault usually answers 404,
        // but some versions answer 200 with `data: null`).
        if response.data.is_null() || response.metadata.destroyed {
            let mut data = response.data;
            scrub(&mut data);
            return Err(BackendError::new(
                Reason::SecretNotFound,
                format!("{what} is deleted or destroyed"),
            ));
        }
        into_secret(response.data, &what)
    }

    /// `GET <mount>/<path>`; KV v1 has no versions, so a pin is a configuration error.
    pub(super) async fn read_v1(
        &self,
        req: &ReadRequest,
        path: String,
    ) -> Result<SecretValue, BackendError> {
        let key = req.key.as_str();
        if let Some(v) = req.version.as_deref().filter(|v| !v.trim().is_empty()) {
            return Err(BackendError::invalid_config(format!(
                "remote key {key:?}: version {v:?} given, but KV v1 has no versions"
            )));
        }
        let what = format!("remote key {key:?} ({}/{path})", self.mount);
        let response = self
            .call(Op::Read, key, &what, |session| {
                let endpoint = GetSecretRequest {
                    mount: self.mount.clone(),
                    path: path.clone(),
                };
                async move { vaultrs::api::exec_with_no_result(session.as_ref(), endpoint).await }
            })
            .await?;
        into_secret(response.data, &what)
    }
}

/// The KV v2 version a read pins, if any.
fn kv2_version(key: &str, version: Option<&str>) -> Result<Option<u64>, BackendError> {
    match version.map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => match v.parse::<u64>() {
            // Vault reads version 0 as "latest": refuse it so a pin never silently floats.
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(BackendError::invalid_config(format!(
                "remote key {key:?}: version {v:?} is not a KV v2 version number (1, 2, ...)"
            ))),
        },
    }
}

/// The JSON text of a secret's field map, serialised straight into its final buffer (no
/// reallocation copies left behind) and with the parsed strings wiped afterwards.
fn into_secret(mut data: serde_json::Value, what: &str) -> Result<SecretValue, BackendError> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let result = serde_json::to_writer(&mut count, &data).and_then(|()| {
        let mut buf = Vec::with_capacity(count.0);
        serde_json::to_writer(&mut buf, &data).map(|()| buf)
    });
    scrub(&mut data);
    result.map(SecretValue::new).map_err(|_| {
        // Serialising a parsed JSON value cannot fail in practice; the error text is
        // dropped because serde_json may quote data in it.
        BackendError::unavailable(format!("{what}: the response could not be re-encoded"))
    })
}

/// Zeroes every string in a parsed response before it is dropped.
fn scrub(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => s.zeroize(),
        serde_json::Value::Array(items) => items.iter_mut().for_each(scrub),
        serde_json::Value::Object(map) => map.values_mut().for_each(scrub),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn into_secret_is_exact_json() {
        let v = serde_json::json!({"username": "u", "password": "p"});
        let s = into_secret(v, "k").unwrap();
        assert_eq!(s.as_str(), Some(r#"{"password":"p","username":"u"}"#));
    }
}
