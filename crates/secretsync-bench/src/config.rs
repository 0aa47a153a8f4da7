//! The command line, the fixed parameters of the scenarios, and the object layout at a
//! scale.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use serde_json::{Value, json};

use crate::world;

/// Benchmarks of the secretsync operator (see BENCHMARKS.md).
#[derive(Parser, Debug, Clone)]
#[command(name = "secretsync-bench")]
pub struct Args {
    /// Scale of every object count: 1.0 = 100 namespaces, 10,000 bindings, 50,000
    /// unrelated Secrets; 0.1 = a quick run. Rotation always uses 100 bindings and 50
    /// Deployments.
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Length of the steady-state window.
    #[arg(long, default_value = "5m")]
    pub steady: String,
    /// Settling time after a cold start before memory is read.
    #[arg(long, default_value = "30s")]
    pub settle: String,
    /// The operator binary.
    #[arg(long, default_value = "target/release/secretsync")]
    pub operator: PathBuf,
    /// Where results.json and results.md go.
    #[arg(long, default_value = "target/bench")]
    pub out_dir: PathBuf,
    /// `--restart-debounce` of the operator.
    #[arg(long, default_value = "1s")]
    pub restart_debounce: String,
    /// `--concurrency` of the operator.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// `spec.cache.ttl` of every SecretSource.
    #[arg(long, default_value = "60s")]
    pub cache_ttl: String,
    /// Runs to do (comma-separated): idle, cold-small, main, unrelated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "idle,cold-small,main,unrelated"
    )]
    pub runs: Vec<String>,
}

/// `refreshInterval` of every binding.
pub const REFRESH: &str = "60s";
/// How long a cold start may take before the bindings still pending are reported.
pub const READY_TIMEOUT: Duration = Duration::from_secs(900);
/// Bindings whose Secrets the rotation Deployments read (all in the first namespace).
pub const ROTATION_BINDINGS: usize = 100;
/// Opted-in Deployments of the rotation scenario.
pub const ROTATION_DEPLOYMENTS: usize = 50;
/// Bindings created in a burst by the new-bindings scenario.
pub const NEW_BINDINGS: usize = 100;

/// Object counts at a scale.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub namespaces: usize,
    pub per_namespace: usize,
    pub unrelated_secrets: usize,
    pub unrelated_deployments: usize,
}

impl Layout {
    /// The main layout at `scale` (100 bindings per namespace) and the small one of the
    /// first cold start (10 per namespace, same namespaces).
    pub fn at_scale(scale: f64) -> (Layout, Layout) {
        let scaled = |n: f64| ((n * scale).round() as usize).max(1);
        let large = Layout {
            namespaces: scaled(100.0),
            per_namespace: 100,
            unrelated_secrets: scaled(50_000.0),
            unrelated_deployments: scaled(5_000.0),
        };
        let small = Layout {
            per_namespace: 10,
            ..large
        };
        (large, small)
    }

    pub fn bindings(&self) -> usize {
        self.namespaces * self.per_namespace
    }
    pub fn remote_keys(&self) -> usize {
        self.namespaces * world::KEYS_PER_NAMESPACE
    }
    pub fn json(&self) -> Value {
        json!({
            "namespaces": self.namespaces,
            "bindings_per_namespace": self.per_namespace,
            "bindings": self.bindings(),
            "secret_keys_per_binding": world::KEYS_PER_NAMESPACE * world::PROPERTIES.len(),
            "remote_keys_per_binding": world::KEYS_PER_NAMESPACE,
            "distinct_remote_keys": self.remote_keys(),
            "sources": self.namespaces,
            "unrelated_secrets": self.unrelated_secrets,
            "unrelated_deployments": self.unrelated_deployments,
        })
    }
}

/// A Kubernetes-style duration (`30s`, `5m`).
pub fn parse_dur(s: &str) -> Result<Duration> {
    secretsync_api::parse_duration(s).map_err(|e| anyhow::anyhow!("{s}: {e}"))
}
