//! The source status: pure, from a readiness result.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use secretsync_api::{BackendKind, ConditionReason, SecretSourceStatus};
use secretsync_backends::BackendError;

use crate::binding::plan::with_ready;

/// The source status for a readiness result.
pub fn source_status(
    previous: Option<&SecretSourceStatus>,
    generation: Option<i64>,
    kind: Option<BackendKind>,
    readiness: Result<(), &BackendError>,
    now: &Time,
) -> SecretSourceStatus {
    let prev_conditions = previous.map(|p| p.conditions.as_slice()).unwrap_or(&[]);
    let (reason, message) = match readiness {
        Ok(()) => (
            ConditionReason::Valid,
            format!(
                "{} backend configuration and credentials are valid",
                kind.map_or("the", |k| k.as_str())
            ),
        ),
        Err(e) => (e.reason, e.message.clone()),
    };
    let conditions = with_ready(prev_conditions, reason, &message, generation, now);
    SecretSourceStatus {
        observed_generation: generation,
        backend: kind.map(|k| k.as_str().to_string()),
        conditions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    #[test]
    fn status_for_readiness() {
        let now = Time(Timestamp::from_second(10).unwrap());
        let ok = source_status(None, Some(3), Some(BackendKind::File), Ok(()), &now);
        assert_eq!(ok.observed_generation, Some(3));
        assert_eq!(ok.backend.as_deref(), Some("file"));
        assert_eq!(ok.conditions[0].reason, "Valid");
        assert_eq!(ok.conditions[0].status, "True");
        let later = Time(Timestamp::from_second(20).unwrap());
        assert_eq!(
            source_status(Some(&ok), Some(3), Some(BackendKind::File), Ok(()), &later),
            ok
        );
        let err = BackendError::access_denied("env variable not allowed");
        let bad = source_status(
            Some(&ok),
            Some(3),
            Some(BackendKind::Env),
            Err(&err),
            &later,
        );
        assert_eq!(bad.conditions.len(), 1);
        assert_eq!(bad.conditions[0].reason, "AccessDenied");
        assert_eq!(bad.conditions[0].last_transition_time, later);
    }
}
