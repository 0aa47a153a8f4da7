//! Custom resource types of secretsync (`secretsync.dev/v1alpha1`): [`SecretSource`],
//! [`SecretBinding`], their cluster-scoped counterparts [`ClusterSecretSource`] and
//! [`ClusterSecretBinding`], the label/annotation names the operator uses, and CRD
//! generation.

pub mod binding;
pub mod cluster;
pub mod constants;
pub mod crd;
pub mod duration;
pub mod manifest;
pub mod reason;
mod schema;
pub mod selector;
pub mod source;

pub use binding::*;
pub use cluster::*;
pub use constants::*;
pub use duration::{DurationError, parse_duration};
pub use reason::ConditionReason;
pub use source::*;

/// Condition type used by both kinds.
pub const CONDITION_READY: &str = "Ready";

/// Re-export of the Kubernetes condition type used in status.
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
