//! Secret bytes held in memory: redacted in `Debug`, zeroed on drop.

use std::fmt;

use zeroize::Zeroizing;

/// A secret value. Its `Debug` output shows only the length, and its memory is wiped when
/// dropped. There is deliberately no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    /// Wraps bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretValue(Zeroizing::new(bytes))
    }

    /// Wraps a string's bytes.
    pub fn from_string(s: String) -> Self {
        SecretValue::new(s.into_bytes())
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The value as UTF-8, if it is.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue(<redacted, {} bytes>)", self.0.len())
    }
}

impl From<&str> for SecretValue {
    fn from(s: &str) -> Self {
        SecretValue::new(s.as_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts() {
        let v = SecretValue::from("hunter2-CANARY");
        let dbg = format!("{v:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("14 bytes"));
    }
}
