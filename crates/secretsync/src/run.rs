//! `secretsync run`: flags (also read from `SECRETSYNC_*`), logging, signals, and the call
//! into `secretsync_controller::run`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

/// `User-Agent` of every Kubernetes API request.
pub const USER_AGENT: &str = concat!("secretsync/", env!("CARGO_PKG_VERSION"));

/// Flags of `secretsync run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Namespace of the leader Lease and the HMAC key Secret. Default: POD_NAMESPACE, else
    /// the service account's namespace file, else `default`.
    #[arg(long, env = "SECRETSYNC_OPERATOR_NAMESPACE")]
    operator_namespace: Option<String>,
    /// Namespace to watch (repeatable). Default: all namespaces.
    #[arg(
        long = "namespace",
        env = "SECRETSYNC_NAMESPACE",
        value_delimiter = ','
    )]
    namespaces: Vec<String>,
    /// Bindings reconciled in parallel.
    #[arg(long, env = "SECRETSYNC_CONCURRENCY", default_value_t = 16)]
    concurrency: usize,
    /// Address of `/metrics`.
    #[arg(long, env = "SECRETSYNC_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Address of `/healthz` and `/readyz`.
    #[arg(long, env = "SECRETSYNC_HEALTH_ADDR", default_value = "0.0.0.0:8081")]
    health_addr: SocketAddr,
    /// Leader election through the `secretsync-leader` Lease.
    #[arg(long, env = "SECRETSYNC_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Globs of environment variables env sources may read (repeatable).
    #[arg(long, env = "SECRETSYNC_ENV_ALLOW", value_delimiter = ',')]
    env_allow: Vec<String>,
    /// Root folder the file backend is confined to.
    #[arg(long, env = "SECRETSYNC_FILE_ROOT", default_value = secretsync_api::DEFAULT_FILE_ROOT)]
    file_root: PathBuf,
    /// Rotations within this window give one workload restart.
    #[arg(long, env = "SECRETSYNC_RESTART_DEBOUNCE", default_value = "10s")]
    restart_debounce: String,
    /// While nothing else in a binding's status changes, `lastSyncTime` is rewritten at
    /// most this often; `0` writes it on every refresh.
    #[arg(long, env = "SECRETSYNC_STATUS_HEARTBEAT", default_value = "10m")]
    status_heartbeat: String,
    /// Workload restarts allowed across the cluster in any 60 s window; restarts over the
    /// budget wait in order (Event `RolloutDelayed`), none is dropped. `0`: no limit.
    #[arg(long, env = "SECRETSYNC_MAX_RESTARTS_PER_MINUTE", default_value_t = 0)]
    max_restarts_per_minute: usize,
    /// Serve `POST /v1/refresh` on this address (e.g. `0.0.0.0:8443`): a call signed with
    /// the `--webhook-secret` key makes the bindings reading the keys it names read them
    /// now. Off when not set.
    #[arg(long, env = "SECRETSYNC_WEBHOOK_ADDR")]
    webhook_addr: Option<SocketAddr>,
    /// The Secret holding the webhook's HMAC-SHA256 key under `key`, as `NAMESPACE/NAME`
    /// (watched: a new key applies within seconds). Default: `secretsync-webhook` in the
    /// operator namespace.
    #[arg(long, env = "SECRETSYNC_WEBHOOK_SECRET")]
    webhook_secret: Option<String>,
    /// Log format.
    #[arg(long, env = "SECRETSYNC_LOG_FORMAT", default_value = "json", value_parser = ["json", "text"])]
    log_format: String,
}

fn operator_namespace(flag: Option<String>) -> String {
    flag.or_else(|| {
        std::env::var("POD_NAMESPACE")
            .ok()
            .filter(|s| !s.is_empty())
    })
    .or_else(|| {
        std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    })
    .unwrap_or_else(|| "default".to_string())
}

/// Where the webhook key is: `NAMESPACE/NAME`, or the default Secret of the operator
/// namespace.
fn webhook_secret(
    flag: Option<&str>,
    operator_namespace: &str,
) -> Result<secretsync_controller::changes::webhook::KeySecret> {
    use secretsync_controller::changes::webhook::KeySecret;
    match flag.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(KeySecret {
            namespace: operator_namespace.to_string(),
            name: "secretsync-webhook".to_string(),
        }),
        Some(s) => match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(KeySecret {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                })
            }
            _ => anyhow::bail!("--webhook-secret: expected NAMESPACE/NAME, got {s:?}"),
        },
    }
}

fn identity() -> String {
    std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "secretsync".to_string());
            format!("{host}-{}", std::process::id())
        })
}

fn init_logging(format: &str) {
    let filter = crate::log_filter("info");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Runs the controller until SIGTERM/SIGINT.
pub fn main(args: RunArgs, huge_pages: crate::huge_pages::HugePages) -> Result<()> {
    init_logging(&args.log_format);
    match huge_pages {
        crate::huge_pages::HugePages::Failed(e) => tracing::warn!(
            error = %e,
            "could not turn transparent huge pages off; resident memory may be higher"
        ),
        other => tracing::debug!(huge_pages = ?other, "transparent huge pages"),
    }
    let restart_debounce: Duration =
        secretsync_api::parse_duration(&args.restart_debounce).context("--restart-debounce")?;
    let status_heartbeat: Duration =
        secretsync_api::parse_duration(&args.status_heartbeat).context("--status-heartbeat")?;
    let operator_namespace = operator_namespace(args.operator_namespace);
    if args.webhook_addr.is_none() && args.webhook_secret.is_some() {
        anyhow::bail!("--webhook-secret needs --webhook-addr (the webhook is off without it)");
    }
    let webhook = match args.webhook_addr {
        None => None,
        Some(addr) => Some(secretsync_controller::WebhookConfig {
            addr,
            secret: webhook_secret(args.webhook_secret.as_deref(), &operator_namespace)?,
            pod: std::env::var("POD_NAME")
                .ok()
                .filter(|s| !s.is_empty())
                .map(|name| secretsync_controller::changes::webhook::OwnPod {
                    namespace: operator_namespace.clone(),
                    name,
                }),
        }),
    };
    let config = secretsync_controller::Config {
        operator_namespace,
        namespaces: args.namespaces,
        concurrency: args.concurrency,
        metrics_addr: args.metrics_addr,
        health_addr: args.health_addr,
        leader_elect: args.leader_elect,
        env_allow: args.env_allow,
        file_root: args.file_root,
        restart_debounce,
        status_heartbeat,
        max_restarts_per_minute: args.max_restarts_per_minute,
        identity: identity(),
        webhook,
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // One worker by default: the work is I/O-bound, and at 10,000 bindings a second worker
    // cost a quarter more CPU in wake-ups and work stealing than it saved (BENCHMARKS.md).
    // `TOKIO_WORKER_THREADS` still overrides it (tokio reads it when none is set here).
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(1);
    }
    let runtime = builder.enable_all().build()?;
    runtime.block_on(async move {
        let mut kube_config = kube::Config::infer()
            .await
            .context("loading the Kubernetes API config (kubeconfig or in-cluster)")?;
        // Identifies the operator in API server audit logs and request metrics.
        kube_config.headers.push((
            http::header::USER_AGENT,
            http::HeaderValue::from_static(USER_AGENT),
        ));
        // No retries inside the client: its default retries 429/503/504 up to 15 times with
        // a backoff growing towards minutes, which hid an outage from the watches and kept
        // the operator away from an API server that was back. The controller's runtime
        // retries itself: watches within seconds, reconciles with their own backoff, and
        // at once when the watches see the API server again.
        kube_config.default_retry = false;
        let client =
            kube::Client::try_from(kube_config).context("connecting to the Kubernetes API")?;
        secretsync_controller::run(client, config, shutdown_signal()).await?;
        Ok(())
    })
}
