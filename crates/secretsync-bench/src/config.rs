//! The command line, the fixed parameters of the scenarios, and the object layout at a
//! scale.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use serde_json::{Value, json};

use crate::world::{self, Keys};

/// Benchmarks of the secretsync operator (see BENCHMARKS.md).
#[derive(Parser, Debug, Clone)]
#[command(name = "secretsync-bench")]
pub struct Args {
    /// Scale of every object count: 1.0 = 100 namespaces, 10,000 bindings, 50,000
    /// unrelated Secrets (and, in the triggers run, 50,000 unlabelled ConfigMaps and 1,000
    /// labelled ConfigMaps with their Deployments); 0.1 = a quick run. Rotation always uses
    /// 100 bindings and 50 Deployments.
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
    /// `--concurrency` of the operator: 16 when not given in the idle, cold-small, main
    /// and unrelated runs; the runs with the operator's defaults (nocache, heartbeat0,
    /// shared, latency) pass it only when given.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// `spec.cache.ttl` of every SecretSource in the idle, cold-small, main and unrelated
    /// runs (the other runs' sources have no `spec.cache`).
    #[arg(long, default_value = "60s")]
    pub cache_ttl: String,
    /// Length of the steady-state window of the nocache, heartbeat0 and heartbeat1h runs
    /// each.
    #[arg(long, default_value = "3m")]
    pub nocache_steady: String,
    /// Length of the steady-state window of the shared and cluster runs.
    #[arg(long, default_value = "3m")]
    pub shared_steady: String,
    /// Delay the fake API server adds to every write (create, update, patch, delete) in
    /// the latency run.
    #[arg(long, default_value = "25ms")]
    pub write_latency: String,
    /// Runs to do (comma-separated), in this order: idle, cold-small, main, unrelated,
    /// nocache, heartbeat0, shared, cluster, latency, heartbeat1h, webhook, triggers.
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_RUNS)]
    pub runs: Vec<String>,
}

/// Every run, in the order `make bench` does them.
pub const DEFAULT_RUNS: &str = "idle,cold-small,main,unrelated,nocache,heartbeat0,shared,cluster,latency,heartbeat1h,webhook,triggers";

impl Args {
    /// Checks the durations and run names before anything starts, so a typo does not
    /// surface twenty minutes into a run.
    pub fn validate(&self) -> Result<()> {
        for d in [
            &self.steady,
            &self.settle,
            &self.restart_debounce,
            &self.cache_ttl,
            &self.nocache_steady,
            &self.shared_steady,
            &self.write_latency,
        ] {
            parse_dur(d)?;
        }
        let known: Vec<&str> = DEFAULT_RUNS.split(',').collect();
        if let Some(bad) = self.runs.iter().find(|r| !known.contains(&r.as_str())) {
            anyhow::bail!("unknown run {bad:?} (runs: {DEFAULT_RUNS})");
        }
        Ok(())
    }

    /// Flags of the runs that keep the original bench's settings: restart debounce and
    /// concurrency (16 unless `--concurrency` says otherwise).
    pub fn main_flags(&self) -> Vec<String> {
        vec![
            "--restart-debounce".into(),
            self.restart_debounce.clone(),
            "--concurrency".into(),
            self.concurrency.unwrap_or(MAIN_CONCURRENCY).to_string(),
        ]
    }

    /// Flags of the runs with the operator's defaults: none, apart from `--concurrency`
    /// when it was given to the bench.
    pub fn default_flags(&self) -> Vec<String> {
        match self.concurrency {
            Some(c) => vec!["--concurrency".into(), c.to_string()],
            None => Vec::new(),
        }
    }
}

/// `--concurrency` of the main runs when the bench is not given one.
pub const MAIN_CONCURRENCY: usize = 16;
/// Write verbs the latency run delays.
pub const WRITE_VERBS: [&str; 4] = ["create", "update", "patch", "delete"];

/// `refreshInterval` of every binding.
pub const REFRESH: &str = "60s";
/// How long a cold start may take before the bindings still pending are reported.
pub const READY_TIMEOUT: Duration = Duration::from_secs(900);
/// Bindings whose Secrets the rotation Deployments read (all in the first namespace).
pub const ROTATION_BINDINGS: usize = 100;
/// Opted-in Deployments of the rotation scenario.
pub const ROTATION_DEPLOYMENTS: usize = 50;
/// Rotations of the webhook run.
pub const WEBHOOK_ROTATIONS: usize = 100;
/// Bindings created in a burst by the new-bindings scenario.
pub const NEW_BINDINGS: usize = 100;
/// Labelled ConfigMaps the triggers run changes, one after the other.
pub const TRIGGER_CHANGES: usize = 5;
/// How long the triggers run samples RSS (every 250 ms) for each of its memory readings,
/// after the settle time: the reading is the median of those samples.
pub const RSS_WINDOW: Duration = Duration::from_secs(10);

/// Object counts at a scale, which keys the bindings read, and whether the sources
/// cache.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub namespaces: usize,
    pub per_namespace: usize,
    pub unrelated_secrets: usize,
    pub unrelated_deployments: usize,
    /// ConfigMaps without the watch label (the triggers run; it also creates
    /// `unrelated_secrets` Secrets without it).
    pub unlabelled_configmaps: usize,
    /// Labelled ConfigMaps, each read by one opted-in Deployment (the triggers run).
    pub trigger_pairs: usize,
    pub keys: Keys,
    /// Whether every SecretSource has `spec.cache.ttl` (= `--cache-ttl`).
    pub cached: bool,
    /// One ClusterSecretSource for every namespace instead of a SecretSource each.
    pub cluster_source: bool,
}

impl Layout {
    /// The main layout at `scale` (100 bindings per namespace) and the small one of the
    /// first cold start (10 per namespace, same namespaces); both with disjoint keys per
    /// namespace and cached sources.
    pub fn at_scale(scale: f64) -> (Layout, Layout) {
        let scaled = |n: f64| ((n * scale).round() as usize).max(1);
        let large = Layout {
            namespaces: scaled(100.0),
            per_namespace: 100,
            unrelated_secrets: scaled(50_000.0),
            unrelated_deployments: scaled(5_000.0),
            unlabelled_configmaps: scaled(50_000.0),
            trigger_pairs: scaled(1_000.0),
            keys: Keys::PerNamespace,
            cached: true,
            cluster_source: false,
        };
        let small = Layout {
            per_namespace: 10,
            ..large
        };
        (large, small)
    }

    /// The same layout with sources that have no `spec.cache`.
    pub fn without_cache(self) -> Layout {
        Layout {
            cached: false,
            ..self
        }
    }

    /// The same layout, without cache, with every namespace reading the same keys.
    pub fn sharing_keys(self) -> Layout {
        Layout {
            keys: Keys::Shared,
            ..self.without_cache()
        }
    }

    /// The shared-keys layout read through one ClusterSecretSource admitting every
    /// namespace.
    pub fn through_cluster_source(self) -> Layout {
        Layout {
            cluster_source: true,
            ..self.sharing_keys()
        }
    }

    pub fn bindings(&self) -> usize {
        self.namespaces * self.per_namespace
    }
    /// Distinct remote keys (paths in OpenBao) the bindings read.
    pub fn remote_keys(&self) -> usize {
        match self.keys {
            Keys::PerNamespace => self.namespaces * world::KEYS_PER_NAMESPACE,
            Keys::Shared => world::KEYS_PER_NAMESPACE,
        }
    }
    /// Distinct (source, remote key) pairs: the most per-source caches can coalesce to.
    pub fn source_key_pairs(&self) -> usize {
        if self.cluster_source {
            world::KEYS_PER_NAMESPACE
        } else {
            self.namespaces * world::KEYS_PER_NAMESPACE
        }
    }
    /// How the bindings, sources and keys are laid out, in words.
    pub fn describe(&self, cache_ttl: &str) -> String {
        let keys = match self.keys {
            Keys::PerNamespace => "namespaces read disjoint keys".to_string(),
            Keys::Shared => format!(
                "every namespace reads the same {} keys: {} (source, key) pairs",
                world::KEYS_PER_NAMESPACE,
                self.source_key_pairs()
            ),
        };
        let cache = if self.cached {
            format!("cache ttl {cache_ttl}")
        } else {
            "no spec.cache".to_string()
        };
        format!(
            "{} / {} / {} (one SecretSource per namespace, {keys}; {cache}, refresh {REFRESH})",
            self.bindings(),
            self.namespaces,
            self.remote_keys()
        )
    }
    pub fn json(&self) -> Value {
        json!({
            "namespaces": self.namespaces,
            "bindings_per_namespace": self.per_namespace,
            "bindings": self.bindings(),
            "secret_keys_per_binding": world::KEYS_PER_NAMESPACE * world::PROPERTIES.len(),
            "remote_keys_per_binding": world::KEYS_PER_NAMESPACE,
            "keys": match self.keys {
                Keys::PerNamespace => "per-namespace",
                Keys::Shared => "shared",
            },
            "distinct_remote_keys": self.remote_keys(),
            "distinct_source_key_pairs": self.source_key_pairs(),
            "sources": self.namespaces,
            "sources_have_cache": self.cached,
            "unrelated_secrets": self.unrelated_secrets,
            "unrelated_deployments": self.unrelated_deployments,
            "unlabelled_configmaps": self.unlabelled_configmaps,
            "trigger_pairs": self.trigger_pairs,
        })
    }
}

/// A Kubernetes-style duration (`30s`, `5m`).
pub fn parse_dur(s: &str) -> Result<Duration> {
    secretsync_api::parse_duration(s).map_err(|e| anyhow::anyhow!("{s}: {e}"))
}
