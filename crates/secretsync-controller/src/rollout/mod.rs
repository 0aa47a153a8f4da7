//! The rollout reconciler: restarts opted-in Deployments, StatefulSets and DaemonSets when
//! managed Secrets they depend on rotate, exactly once per change, debounced.
//!
//! - [`plan`]: the decisions (opt-in, dependencies, revision, debounce), pure;
//! - [`state`]: what is remembered per opted-in workload;
//! - [`index`]: fed by the metadata-only workload watches;
//! - [`reconcile`]: fetches the one workload being decided, writes the decision.
//!
//! Memory stays proportional to what is involved: workloads are watched metadata-only and
//! only opted-in ones are remembered; the full object (pod template, `spec.paused`) is
//! fetched when a decision is due. What the managed Secrets hold comes from
//! [`crate::managed`].

pub mod index;
pub mod plan;
pub mod reconcile;
pub mod state;

pub use reconcile::reconcile;
pub use state::{RolloutState, WorkloadKey};
