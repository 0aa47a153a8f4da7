//! The operator's HMAC key: Secret `secretsync-hmac-key` in the operator namespace, created
//! with 32 random bytes at start-up if absent. Every replica ends up with the same key.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client, ResourceExt};
use secretsync_api::{FIELD_MANAGER, HMAC_SECRET_KEY, HMAC_SECRET_NAME, LABEL_MANAGED};
use secretsync_backends::hash::HmacKey;
use zeroize::Zeroizing;

/// Why the HMAC key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum HmacKeyError {
    /// The key Secret exists but lacks the `key` entry.
    #[error("Secret {HMAC_SECRET_NAME} has no key {HMAC_SECRET_KEY:?}")]
    Missing,
    /// The key is too short to be a key.
    #[error(
        "Secret {HMAC_SECRET_NAME} key {HMAC_SECRET_KEY:?} is {len} bytes; at least 16 are needed"
    )]
    TooShort {
        /// Its length.
        len: usize,
    },
    /// The OS random source failed.
    #[error("OS random source: {0}")]
    Random(getrandom::Error),
    /// Created by someone else and gone again, three times in a row.
    #[error("could not read or create Secret {HMAC_SECRET_NAME}")]
    Contended,
    /// The API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// Key length in bytes.
pub const KEY_LEN: usize = 32;

/// Extracts and checks the key from the Secret.
pub fn key_from_secret(secret: &Secret) -> Result<HmacKey, HmacKeyError> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(HMAC_SECRET_KEY))
        .map(|b| b.0.clone())
        .ok_or(HmacKeyError::Missing)?;
    if bytes.len() < 16 {
        return Err(HmacKeyError::TooShort { len: bytes.len() });
    }
    Ok(HmacKey::new(bytes))
}

/// The Secret to create, holding `key`.
pub fn key_secret(namespace: &str, key: &[u8]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(HMAC_SECRET_NAME.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/name".to_string(),
                "secretsync".to_string(),
            )])),
            ..Default::default()
        },
        type_: Some("Opaque".to_string()),
        data: Some(BTreeMap::from([(
            HMAC_SECRET_KEY.to_string(),
            ByteString(key.to_vec()),
        )])),
        ..Default::default()
    }
}

/// Reads the key, creating it if absent. Two replicas starting together both try to create:
/// the loser gets 409 and reads the winner's key.
pub async fn ensure_hmac_key(client: Client, namespace: &str) -> Result<HmacKey, HmacKeyError> {
    // The key Secret must not carry the managed label (it is not a synced Secret).
    debug_assert!(
        !key_secret(namespace, &[0])
            .labels()
            .contains_key(LABEL_MANAGED)
    );
    let api: Api<Secret> = Api::namespaced(client, namespace);
    for _ in 0..3 {
        if let Some(s) = api.get_opt(HMAC_SECRET_NAME).await? {
            return key_from_secret(&s);
        }
        let mut buf = Zeroizing::new(vec![0u8; KEY_LEN]);
        getrandom::fill(&mut buf).map_err(HmacKeyError::Random)?;
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..Default::default()
        };
        match api.create(&pp, &key_secret(namespace, &buf)).await {
            Ok(s) => {
                tracing::info!(
                    namespace,
                    secret = HMAC_SECRET_NAME,
                    "created the HMAC key Secret"
                );
                return key_from_secret(&s);
            }
            Err(kube::Error::Api(ae)) if ae.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(HmacKeyError::Contended)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trip_and_validation() {
        let s = key_secret("ops", &[7u8; 32]);
        assert_eq!(s.metadata.name.as_deref(), Some(HMAC_SECRET_NAME));
        let k = key_from_secret(&s).unwrap();
        let d = BTreeMap::new();
        assert_eq!(k.data_hash(&d), HmacKey::new(vec![7u8; 32]).data_hash(&d));
        assert!(key_from_secret(&key_secret("ops", &[1u8; 4])).is_err());
        assert!(key_from_secret(&Secret::default()).is_err());
    }
}
