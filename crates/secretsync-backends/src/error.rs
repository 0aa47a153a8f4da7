//! The error taxonomy every backend maps to. Messages name keys, never values.

use std::fmt;

use secretsync_api::ConditionReason;

/// Condition reason of a backend failure (the subset of [`ConditionReason`] a backend can
/// cause), as surfaced in `Ready=False` conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The remote key (or version, or property) does not exist.
    SecretNotFound,
    /// The backend refused the credentials or the key is not allowed.
    AccessDenied,
    /// `property` or `extract` used on a value that is not a JSON object.
    InvalidJson,
    /// Network error, 5xx, throttling, sealed Vault: retried with backoff.
    BackendUnavailable,
    /// The source or binding configuration is wrong.
    InvalidConfig,
    /// Two remote keys map to one Secret key after sanitising.
    KeyCollision,
    /// A template does not parse or fails to render.
    InvalidTemplate,
}

impl From<Reason> for ConditionReason {
    fn from(r: Reason) -> Self {
        match r {
            Reason::SecretNotFound => ConditionReason::SecretNotFound,
            Reason::AccessDenied => ConditionReason::AccessDenied,
            Reason::InvalidJson => ConditionReason::InvalidJson,
            Reason::BackendUnavailable => ConditionReason::BackendUnavailable,
            Reason::InvalidConfig => ConditionReason::InvalidConfig,
            Reason::KeyCollision => ConditionReason::KeyCollision,
            Reason::InvalidTemplate => ConditionReason::InvalidTemplate,
        }
    }
}

impl Reason {
    /// The condition reason string.
    pub fn as_str(self) -> &'static str {
        ConditionReason::from(self).as_str()
    }

    /// Whether retrying soon may help (as opposed to waiting for a config change).
    pub fn is_transient(self) -> bool {
        matches!(self, Reason::BackendUnavailable)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A backend failure. `detail` strings are written by this crate and must never contain
/// secret values; upstream error texts are only included when they cannot carry values
/// (HTTP status lines, connection errors).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct BackendError {
    /// Taxonomy reason.
    pub reason: Reason,
    /// Human-readable description naming the key, never a value.
    pub message: String,
}

impl BackendError {
    /// Builds an error.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        BackendError {
            reason,
            message: message.into(),
        }
    }

    /// `SecretNotFound` for a key.
    pub fn not_found(key: &str) -> Self {
        Self::new(
            Reason::SecretNotFound,
            format!("remote key {key:?} not found"),
        )
    }

    /// `AccessDenied` with a detail.
    pub fn access_denied(detail: impl Into<String>) -> Self {
        Self::new(Reason::AccessDenied, detail)
    }

    /// `InvalidJson` with a detail.
    pub fn invalid_json(detail: impl Into<String>) -> Self {
        Self::new(Reason::InvalidJson, detail)
    }

    /// `BackendUnavailable` with a detail.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(Reason::BackendUnavailable, detail)
    }

    /// `InvalidConfig` with a detail.
    pub fn invalid_config(detail: impl Into<String>) -> Self {
        Self::new(Reason::InvalidConfig, detail)
    }

    /// Prefixes the message with context (e.g. the binding key being resolved).
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.message = format!("{ctx}: {}", self.message);
        self
    }
}
