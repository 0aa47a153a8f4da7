//! The secretsync controller: source, binding, ClusterSecretBinding and rollout reconcilers on a
//! small generic runtime, leader election, metrics and health endpoints. The binary calls
//! [`run`]; ARCHITECTURE.md walks through the flow.
//!
//! - [`runtime`]: watch → index/store → queue → dispatch, readiness, leader election;
//! - [`binding`], [`source`], [`rollout`], [`cluster_binding`]: one module per
//!   reconciler, each a pure `plan` and its I/O;
//! - [`context`]: what one leadership term shares; [`managed`]: the managed-Secret index;
//! - [`outcome`]: what reconciles return; [`term`]: one leadership term;
//! - [`changes`]: change events (webhook, SQS) that make bindings read now.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use runtime::{wait_false, wait_true};

pub mod binding;
pub mod changes;
pub mod cluster_binding;
pub mod context;
pub mod events;
pub mod hmac_key;
pub mod http;
pub mod managed;
pub mod metrics;
pub mod outcome;
pub mod rbac;
pub mod rollout;
pub mod runtime;
pub mod source;
pub mod term;

/// Operator settings (the `run` subcommand's flags).
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the Lease and the HMAC key Secret live.
    pub operator_namespace: String,
    /// Namespaces to watch; empty = all.
    pub namespaces: Vec<String>,
    /// Bindings reconciled in parallel (default 16).
    pub concurrency: usize,
    /// `/metrics` listen address.
    pub metrics_addr: SocketAddr,
    /// `/healthz`, `/readyz` listen address.
    pub health_addr: SocketAddr,
    /// Run leader election (only the leader reconciles).
    pub leader_elect: bool,
    /// Globs of environment variables env sources may read.
    pub env_allow: Vec<String>,
    /// Root the file backend is confined to.
    pub file_root: PathBuf,
    /// Debounce of rollout restarts (rollout reconciler).
    pub restart_debounce: Duration,
    /// A binding whose status has nothing new rewrites `lastSyncTime` at most this often
    /// (zero: on every refresh).
    pub status_heartbeat: Duration,
    /// Restarts allowed across the cluster in any 60 s window (0 = no limit).
    pub max_restarts_per_minute: usize,
    /// Leader-election holder identity (pod name, or hostname + pid).
    pub identity: String,
    /// `POST /v1/refresh` (off when `None`).
    pub webhook: Option<WebhookConfig>,
}

/// Where the refresh webhook listens and where its key is.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Listen address (`--webhook-addr`).
    pub addr: SocketAddr,
    /// The Secret holding the signing key (`--webhook-secret`).
    pub secret: changes::webhook::KeySecret,
    /// The operator's own pod (`POD_NAME` in the operator namespace), labelled while it
    /// leads so the webhook Service routes to the leader.
    pub pod: Option<changes::webhook::OwnPod>,
}

/// Fatal errors of [`run`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The HMAC key could not be read or created.
    #[error("HMAC key: {0}")]
    HmacKey(#[from] hmac_key::HmacKeyError),
    /// An HTTP listener could not bind.
    #[error("binding {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    /// `--concurrency 0`.
    #[error("--concurrency must be at least 1")]
    ZeroConcurrency,
    /// An `--env-allow` glob does not parse.
    #[error("--env-allow: {}", .0.message)]
    EnvAllow(secretsync_backends::BackendError),
}

/// Drops `managedFields` before an object is cached: nothing reads them from the stores,
/// and at 10,000 bindings they were a quarter of the operator's heap (BENCHMARKS.md).
pub(crate) fn without_managed_fields<K: kube::Resource>(mut obj: K) -> K {
    obj.meta_mut().managed_fields = None;
    obj
}

/// How long shutdown waits for in-flight reconciles.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Runs the operator until `shutdown` completes: HMAC key, HTTP endpoints, leader election
/// and, while leading, the reconcilers. On shutdown in-flight reconciles finish, the lease
/// is released and `Ok(())` is returned.
pub async fn run(
    client: kube::Client,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    if config.concurrency == 0 {
        return Err(Error::ZeroConcurrency);
    }
    let env_allow = secretsync_backends::env::EnvPolicy::from_globs(&config.env_allow)
        .map_err(Error::EnvAllow)?;
    let config = Arc::new(config);
    let metrics = Arc::new(metrics::Metrics::new());
    let health = Arc::new(http::Health::default());

    let (http_stop_tx, http_stop_rx) = watch::channel(false);
    let metrics_srv = http::serve(
        config.metrics_addr,
        http::metrics_router(metrics.clone()),
        http_stop_rx.clone(),
    )
    .await?;
    let health_srv = http::serve(
        config.health_addr,
        http::health_router(health.clone()),
        http_stop_rx.clone(),
    )
    .await?;

    let leadership = Arc::new(changes::Leadership::default());
    let mut background = tokio::task::JoinSet::new();
    let webhook_srv = match &config.webhook {
        None => None,
        Some(w) => {
            let key = Arc::new(changes::webhook::SigningKey::default());
            background.spawn(changes::webhook::watch_key(
                client.clone(),
                w.secret.clone(),
                key.clone(),
            ));
            let state = Arc::new(changes::webhook::WebhookState {
                key,
                leadership: leadership.clone(),
                metrics: metrics.clone(),
            });
            Some(
                http::serve(
                    w.addr,
                    changes::webhook::router(state),
                    http_stop_rx.clone(),
                )
                .await?,
            )
        }
    };

    let hmac = hmac_key::ensure_hmac_key(client.clone(), &config.operator_namespace).await?;

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutdown requested");
        stop_tx.send_replace(true);
    });

    let term = term::Term {
        client: client.clone(),
        config: config.clone(),
        hmac,
        metrics,
        health: health.clone(),
        env_allow,
        leadership,
    };

    if config.leader_elect {
        leading(term, stop_rx).await;
    } else {
        health.set_ready(false);
        term.run(stop_rx).await;
        term_ended(&client, &config).await;
    }

    http_stop_tx.send_replace(true);
    background.abort_all();
    let _ = metrics_srv.await;
    let _ = health_srv.await;
    if let Some(w) = webhook_srv {
        let _ = w.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// After a term (and before the first): the pod no longer leads, so the webhook Service
/// stops sending it calls.
async fn term_ended(client: &kube::Client, config: &Config) {
    if let Some(pod) = config.webhook.as_ref().and_then(|w| w.pod.as_ref()) {
        // A dead API server must not hold up shutdown or the next election.
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            changes::webhook::mark_leader(client, pod, false),
        )
        .await;
    }
}

/// Runs reconcilers only while holding the lease. Losing it aborts them at once; shutdown
/// drains them first and releases the lease last, so two processes never write together.
async fn leading(term: term::Term, mut stop: watch::Receiver<bool>) {
    let (leader_tx, mut leader_rx) = watch::channel(false);
    let (elector_stop_tx, elector_stop_rx) = watch::channel(false);
    let elector = runtime::leader::Elector::new(
        term.client.clone(),
        &term.config.operator_namespace,
        &term.config.identity,
    );
    let elector_task = tokio::spawn(async move { elector.run(leader_tx, elector_stop_rx).await });

    // A container restarted in the same pod may still carry the label of its last term.
    term_ended(&term.client, &term.config).await;
    loop {
        // Standby: ready (nothing to sync), waiting for the lease or shutdown.
        term.health.set_ready(true);
        tokio::select! {
            _ = wait_true(&mut leader_rx) => {}
            _ = wait_true(&mut stop) => break,
        }
        term.health.set_ready(false);
        tracing::info!(identity = %term.config.identity, "leading: starting reconcilers");
        let (term_stop_tx, term_stop_rx) = watch::channel(false);
        let t = term.clone();
        let mut task = tokio::spawn(async move { t.run(term_stop_rx).await });
        tokio::select! {
            _ = wait_false(&mut leader_rx) => {
                // Lost the lease: stop writing immediately, no draining.
                task.abort();
                let _ = task.await;
                // The elector has said why (deadline missed, or another holder).
                tracing::info!("lost leadership: reconcilers stopped");
                term_ended(&term.client, &term.config).await;
            }
            _ = wait_true(&mut stop) => {
                term_stop_tx.send_replace(true);
                let _ = task.await;
                term_ended(&term.client, &term.config).await;
                break;
            }
            _ = &mut task => {
                tracing::error!("reconcilers ended unexpectedly; restarting");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    elector_stop_tx.send_replace(true);
    let _ = elector_task.await;
}
