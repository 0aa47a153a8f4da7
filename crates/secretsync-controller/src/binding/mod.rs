//! The SecretBinding reconciler: resolve a binding's keys through its source's shared
//! cache, HMAC the data, server-side apply the Secret only when it differs, write status
//! only when it changes, and never touch a working Secret on failure.
//!
//! - [`plan`]: the decisions (ownership, desired Secret, drift, read timing, status), pure;
//! - [`state`]: what is remembered per binding between reconciles;
//! - [`index`]: fed by the binding and managed-Secret watches;
//! - [`templates`]: the `templateFrom` ConfigMaps, held while referenced;
//! - [`reconcile`], [`finalizer`], [`status`]: the I/O.

pub mod finalizer;
pub mod index;
pub mod plan;
pub mod reconcile;
pub mod state;
pub mod status;
pub mod templates;

pub use reconcile::reconcile;
pub use state::{BindingState, BindingStates, Verified};
