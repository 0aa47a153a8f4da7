//! Test kit of secretsync: an in-process fake Kubernetes API server faithful enough for
//! `kube::Client`, kube-runtime watchers and `kubectl`, plus an end-to-end harness that
//! starts processes (the operator, OpenBao, moto) and cleans them up.
//!
//! ```no_run
//! # async fn demo() -> Result<(), secretsync_testkit::TestkitError> {
//! let server = secretsync_testkit::FakeApiServer::start().await?;
//! server.install_secretsync_crds()?;
//! let client = server.client().await?;
//! # let _ = client; Ok(()) }
//! ```

mod admission;
pub mod aws;
pub mod bao;
mod cel;
pub mod chart;
mod discovery;
pub mod env;
pub mod harness;
mod http;
mod managed;
pub mod names;
mod patch;
mod rbac;
mod request_info;
mod resources;
pub mod selectors;
mod server;
mod status;
mod store;
mod util;
mod validation;

pub use bao::BaoServer;
pub use env::{E2E_KUBECONFIG_ENV, OperatorIdentity, TestEnv, WatchScope};
pub use rbac::ADMIN_TOKEN;
pub use server::{FakeApiServer, Options, TestkitError, kubeconfig_for, kubeconfig_with_token};
pub use status::{ApiError, Cause, Details};
pub use store::DEFAULT_AUDIENCE;
