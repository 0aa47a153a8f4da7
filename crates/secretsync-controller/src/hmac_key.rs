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

use crate::Error;

/// Key length in bytes.
pub const KEY_LEN: usize = 32;

/// Extracts and checks the key from the Secret.
pub fn key_from_secret(secret: &Secret) -> Result<HmacKey, Error> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(HMAC_SECRET_KEY))
        .map(|b| b.0.clone())
        .ok_or_else(|| {
            Error::HmacKey(format!(
                "Secret {HMAC_SECRET_NAME} has no key {HMAC_SECRET_KEY:?}"
            ))
        })?;
    if bytes.len() < 16 {
        return Err(Error::HmacKey(format!(
            "Secret {HMAC_SECRET_NAME} key {HMAC_SECRET_KEY:?} is shorter than 16 bytes"
        )));
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
pub async fn ensure_hmac_key(client: Client, namespace: &str) -> Result<HmacKey, Error> {
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
        getrandom::fill(&mut buf).map_err(|e| Error::HmacKey(format!("OS random source: {e}")))?;
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
    Err(Error::HmacKey(format!(
        "could not read or create Secret {HMAC_SECRET_NAME}"
    )))
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
