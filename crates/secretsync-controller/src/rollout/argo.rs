//! Argo Rollouts (`argoproj.io/v1alpha1` `Rollout`), restarted through `spec.restartAt`.
//! Served only while the API server has the kind: the operator looks when a term starts and
//! every [`RECHECK`] after, starting or stopping the Rollout watch to match, and logs
//! nothing above debug while the kind is absent.

use std::time::Duration;

use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// API group of Argo Rollouts.
pub const GROUP: &str = "argoproj.io";
/// Resource (plural) of a Rollout.
pub const PLURAL: &str = "rollouts";
/// How often the operator looks whether the Rollout kind appeared or went away.
pub const RECHECK: Duration = Duration::from_secs(60);

/// The part of a Rollout the operator needs: only its metadata is watched, and the pod
/// template is read from the object fetched when a restart is decided.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default)]
#[kube(
    group = "argoproj.io",
    version = "v1alpha1",
    kind = "Rollout",
    plural = "rollouts",
    namespaced,
    schema = "disabled"
)]
pub struct RolloutSpec {}

/// Whether the API server serves Argo Rollouts (discovery; no RBAC needed).
pub async fn served(client: &kube::Client) -> bool {
    match kube::discovery::group(client, GROUP).await {
        Ok(group) => group
            .recommended_resources()
            .iter()
            .any(|(ar, _)| ar.plural == PLURAL),
        Err(e) => {
            // Absent is the common case: a 404 from discovery. Not worth a warning.
            tracing::debug!(error = %e, "Argo Rollouts not served");
            false
        }
    }
}
