//! Standalone fake Kubernetes API server for benchmarks and manual runs of the operator.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use secretsync_testkit::{FakeApiServer, Options};

/// Serve an in-memory fake Kubernetes API over plain HTTP.
#[derive(Debug, Parser)]
#[command(name = "secretsync-fake-apiserver", version)]
struct Args {
    /// Address to listen on (port 0 = random).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Write a kubeconfig pointing at the server to this file.
    #[arg(long)]
    kubeconfig_out: Option<PathBuf>,
    /// Preload every `*.yaml`/`*.yml` file of this folder (CRDs and other objects).
    #[arg(long)]
    crds: Option<PathBuf>,
    /// Also install the secretsync CRDs compiled into this binary.
    #[arg(long)]
    secretsync_crds: bool,
    /// Watch events kept per resource before older resource versions get 410 Gone.
    #[arg(long, default_value_t = 1000)]
    history_limit: usize,
    /// Seconds between BOOKMARK events on watches that allow them.
    #[arg(long, default_value_t = 5)]
    bookmark_interval: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let server = FakeApiServer::start_with(Options {
        listen: args.listen,
        history_limit: args.history_limit,
        bookmark_interval: Duration::from_secs(args.bookmark_interval.max(1)),
    })
    .await
    .context("starting the server")?;
    if args.secretsync_crds {
        server
            .install_secretsync_crds()
            .context("installing the secretsync CRDs")?;
    }
    if let Some(dir) = &args.crds {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        files.sort();
        for f in files {
            let yaml =
                std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
            server
                .apply_yaml(&yaml)
                .with_context(|| format!("loading {}", f.display()))?;
        }
    }
    if let Some(path) = &args.kubeconfig_out {
        server
            .write_kubeconfig(path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!("listening on {}", server.url());
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}
