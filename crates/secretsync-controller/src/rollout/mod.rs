//! The rollout reconciler: restarts opted-in Deployments, StatefulSets, DaemonSets,
//! CronJobs and Argo Rollouts ([`argo`], when installed) when managed Secrets, or Secrets and ConfigMaps labelled
//! `secretsync.dev/watch: "true"`, that they depend on change, exactly once per change,
//! debounced, within the cluster-wide restart budget.
//!
//! - [`plan`]: the decisions (opt-in, dependencies, revision, debounce), pure;
//! - [`budget`]: `--max-restarts-per-minute`, pure;
//! - [`triggers`]: the labelled Secrets and ConfigMaps (their data HMACs only);
//! - [`state`]: what is remembered per opted-in workload;
//! - [`index`]: fed by the metadata-only workload watches;
//! - [`reconcile`]: fetches the one workload being decided, writes the decision.
//!
//! Memory stays proportional to what is involved: workloads are watched metadata-only and
//! only opted-in ones are remembered; the full object (pod template, `spec.paused`) is
//! fetched when a decision is due. What the managed Secrets hold comes from
//! [`crate::managed`].

pub mod argo;
pub mod budget;
pub mod index;
pub mod plan;
pub mod reconcile;
pub mod state;
pub mod triggers;

pub use reconcile::reconcile;
pub use state::{RolloutState, WorkloadKey};
