//! Condition reasons: the `reason` of a `Ready` condition on bindings and sources. They are
//! part of the API (users alert on them, the README explains each), so each is spelled
//! exactly once, here.

use std::fmt;

/// Why `Ready` is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConditionReason {
    /// Binding: the Secret holds the backend's current data.
    Synced,
    /// Source: the configuration and credentials were checked against the backend.
    Valid,
    /// Binding: `spec.sourceRef` names no source the binding can see.
    SourceNotFound,
    /// Binding: its source could not be built or validated.
    SourceNotReady,
    /// The remote key (or version, or property) does not exist.
    SecretNotFound,
    /// The backend refused the credentials, or the key is not allowed.
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
    /// A `templateFrom` ConfigMap, or a key in it, does not exist.
    TemplateNotFound,
    /// An `Owner`/`Orphan` target exists and belongs to someone else.
    TargetConflict,
    /// A `Merge` target does not exist.
    TargetNotFound,
    /// Writing the Secret failed.
    WriteFailed,
    /// Binding: its ClusterSecretSource does not admit the binding's namespace (or the
    /// operator watches only some namespaces and serves no cluster kinds).
    SourceNotAllowed,
    /// ClusterSecretBinding: every selected namespace holds its SecretBinding.
    Provisioned,
    /// ClusterSecretBinding: some selected namespaces could not get their SecretBinding
    /// (`status.failedNamespaces` says why).
    ProvisionFailed,
}

impl ConditionReason {
    /// Every reason, for documentation checks.
    pub const ALL: [ConditionReason; 18] = [
        ConditionReason::Synced,
        ConditionReason::Valid,
        ConditionReason::SourceNotFound,
        ConditionReason::SourceNotReady,
        ConditionReason::SecretNotFound,
        ConditionReason::AccessDenied,
        ConditionReason::InvalidJson,
        ConditionReason::BackendUnavailable,
        ConditionReason::InvalidConfig,
        ConditionReason::KeyCollision,
        ConditionReason::InvalidTemplate,
        ConditionReason::TemplateNotFound,
        ConditionReason::TargetConflict,
        ConditionReason::TargetNotFound,
        ConditionReason::WriteFailed,
        ConditionReason::SourceNotAllowed,
        ConditionReason::Provisioned,
        ConditionReason::ProvisionFailed,
    ];

    /// The reason as written into conditions.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConditionReason::Synced => "Synced",
            ConditionReason::Valid => "Valid",
            ConditionReason::SourceNotFound => "SourceNotFound",
            ConditionReason::SourceNotReady => "SourceNotReady",
            ConditionReason::SecretNotFound => "SecretNotFound",
            ConditionReason::AccessDenied => "AccessDenied",
            ConditionReason::InvalidJson => "InvalidJson",
            ConditionReason::BackendUnavailable => "BackendUnavailable",
            ConditionReason::InvalidConfig => "InvalidConfig",
            ConditionReason::KeyCollision => "KeyCollision",
            ConditionReason::InvalidTemplate => "InvalidTemplate",
            ConditionReason::TemplateNotFound => "TemplateNotFound",
            ConditionReason::TargetConflict => "TargetConflict",
            ConditionReason::TargetNotFound => "TargetNotFound",
            ConditionReason::WriteFailed => "WriteFailed",
            ConditionReason::SourceNotAllowed => "SourceNotAllowed",
            ConditionReason::Provisioned => "Provisioned",
            ConditionReason::ProvisionFailed => "ProvisionFailed",
        }
    }

    /// The reason of a condition read back from the cluster, if it is one of ours.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether retrying soon may help (as opposed to waiting for a config change).
    pub const fn is_transient(self) -> bool {
        matches!(self, ConditionReason::BackendUnavailable)
    }

    /// Whether `Ready` is `True` with this reason.
    pub const fn is_ready(self) -> bool {
        matches!(
            self,
            ConditionReason::Synced | ConditionReason::Valid | ConditionReason::Provisioned
        )
    }
}

impl fmt::Display for ConditionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_round_trips_and_is_spelled_once() {
        let mut seen = std::collections::BTreeSet::new();
        for r in ConditionReason::ALL {
            assert_eq!(ConditionReason::parse(r.as_str()), Some(r));
            assert!(seen.insert(r.as_str()), "{r} twice");
        }
        assert_eq!(ConditionReason::parse("Nope"), None);
        assert!(ConditionReason::Synced.is_ready() && !ConditionReason::WriteFailed.is_ready());
    }
}
