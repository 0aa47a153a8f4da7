//! The error taxonomy every backend maps to. Messages name keys, never values.

use std::fmt;

use secretsync_api::ConditionReason;

/// Condition reason of a backend failure, as surfaced in `Ready=False` conditions. Backends
/// use the taxonomy's subset: `SecretNotFound`, `AccessDenied`, `InvalidJson`,
/// `BackendUnavailable`, `InvalidConfig`, `KeyCollision`, `InvalidTemplate`.
pub type Reason = ConditionReason;

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
