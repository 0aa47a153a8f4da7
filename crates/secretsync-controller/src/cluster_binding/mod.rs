//! The ClusterSecretBinding reconciler: keep exactly one SecretBinding (named like the
//! ClusterSecretBinding, owned by it, labelled `secretsync.dev/cluster-binding`) in every
//! namespace it selects, remove it where it no longer applies, revert edits to it, and
//! report where it is provisioned.
//!
//! - [`plan`]: what each namespace needs and the status, pure;
//! - [`reconcile`]: the writes;
//! - [`index`]: the ClusterSecretBinding and Namespace watches' indexes.

pub mod index;
pub mod plan;
pub mod reconcile;

pub use reconcile::reconcile;
