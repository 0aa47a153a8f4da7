//! Keyed hashes (HMAC-SHA256) of synced data and of workload revisions. Keyed, so a hash in
//! status or an annotation reveals nothing about low-entropy values.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::SecretValue;

type HmacSha256 = Hmac<Sha256>;

/// The operator's HMAC key (32 random bytes from Secret `secretsync-hmac-key`).
#[derive(Clone)]
pub struct HmacKey(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacKey(<redacted>)")
    }
}

impl HmacKey {
    /// Wraps key bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        HmacKey(Zeroizing::new(bytes))
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        #[allow(clippy::expect_used)]
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }

    /// Hex HMAC of a Secret's data. Keys and values are length-prefixed so that no two
    /// different maps hash alike.
    pub fn data_hash(&self, data: &BTreeMap<String, SecretValue>) -> String {
        let mut mac = self.mac();
        for (k, v) in data {
            mac.update(&(k.len() as u64).to_be_bytes());
            mac.update(k.as_bytes());
            mac.update(&(v.len() as u64).to_be_bytes());
            mac.update(v.as_bytes());
        }
        hex::encode(mac.finalize().into_bytes())
    }

    /// Hex HMAC over sorted `(secret name, data hash)` pairs: a workload's secret revision.
    pub fn revision<'a>(&self, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
        let mut sorted: Vec<(&str, &str)> = pairs.into_iter().collect();
        sorted.sort();
        let mut mac = self.mac();
        for (name, hash) in sorted {
            mac.update(&(name.len() as u64).to_be_bytes());
            mac.update(name.as_bytes());
            mac.update(&(hash.len() as u64).to_be_bytes());
            mac.update(hash.as_bytes());
        }
        hex::encode(mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, SecretValue> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), SecretValue::from(*v)))
            .collect()
    }

    #[test]
    fn data_hash_is_keyed_and_unambiguous() {
        let k1 = HmacKey::new(vec![1; 32]);
        let k2 = HmacKey::new(vec![2; 32]);
        let a = map(&[("a", "bc")]);
        let b = map(&[("ab", "c")]);
        assert_ne!(k1.data_hash(&a), k1.data_hash(&b));
        assert_ne!(k1.data_hash(&a), k2.data_hash(&a));
        assert_eq!(k1.data_hash(&a), k1.data_hash(&map(&[("a", "bc")])));
        assert_eq!(k1.data_hash(&a).len(), 64);
        assert!(!format!("{k1:?}").contains('1'));
    }

    #[test]
    fn revision_is_order_independent() {
        let k = HmacKey::new(vec![7; 32]);
        let r1 = k.revision([("a", "h1"), ("b", "h2")]);
        let r2 = k.revision([("b", "h2"), ("a", "h1")]);
        assert_eq!(r1, r2);
        assert_ne!(r1, k.revision([("a", "h1"), ("b", "h3")]));
    }
}
