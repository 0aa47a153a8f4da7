//! The `secretsync` binary: `run` (the controller), `crds` and `render`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

mod huge_pages;
mod render;
mod run;

/// mimalloc instead of the C library's allocator: the operator allocates and frees a JSON
/// document per API response, where glibc malloc spent a quarter of the CPU and fragmented
/// memory (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sync secrets from env, files, Vault/OpenBao and AWS Secrets Manager into Kubernetes
/// Secrets, and restart workloads when they rotate.
#[derive(Parser)]
#[command(name = "secretsync", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (flags also read from SECRETSYNC_* environment variables).
    Run(Box<run::RunArgs>),
    /// Print both CRDs as YAML.
    Crds,
    /// Resolve bindings from manifests locally and print the Secret manifests.
    Render(RenderArgs),
}

#[derive(clap::Args)]
struct RenderArgs {
    /// Manifest files or folders (SecretSource, SecretBinding and credential Secrets).
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    files: Vec<PathBuf>,
    /// Namespace for manifests that name none.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Root folder the file backend may read (relative `spec.file.path`s resolve against it).
    #[arg(long, env = "SECRETSYNC_FILE_ROOT", default_value = secretsync_api::DEFAULT_FILE_ROOT)]
    file_root: PathBuf,
    /// File holding the HMAC key for the data-hash annotation. Default: an all-zero key, so
    /// the printed hash differs from the cluster's.
    #[arg(long)]
    hmac_key_file: Option<PathBuf>,
}

fn main() -> Result<()> {
    // Before the heap grows: pages faulted in as huge ones stay so.
    let huge_pages = huge_pages::limit();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            install_crypto_provider();
            run::main(*args, huge_pages)
        }
        Command::Crds => {
            print!("{}", secretsync_api::crd::crds_yaml()?);
            Ok(())
        }
        Command::Render(args) => {
            init_stderr_logging();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(run_render(args))
        }
    }
}

/// Log directives always appended to the user's filter. The AWS SDK logs whole HTTP
/// responses (secret values included) at TRACE, vaultrs/rustify log every 404 as an
/// ERROR, and kube's client logs every failed API request as an ERROR of its own (the
/// operator reports each failure once, with the object it concerns, and an API outage as
/// one line per watch), so these targets are capped whatever `RUST_LOG` says.
const LOG_CAPS: &[&str] = &[
    "kube_client::client::builder=off",
    "aws_smithy_runtime=info",
    "aws_smithy_runtime_api=info",
    "aws_smithy_http_client=info",
    "hyper=info",
    "hyper_util=info",
    "reqwest=info",
    "rustify=off",
    "vaultrs=off",
];

pub(crate) fn log_filter(default: &str) -> tracing_subscriber::EnvFilter {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    for cap in LOG_CAPS {
        if let Ok(d) = cap.parse() {
            filter = filter.add_directive(d);
        }
    }
    filter
}

fn init_stderr_logging() {
    let filter = log_filter("warn");
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn run_render(args: RenderArgs) -> Result<()> {
    install_crypto_provider();
    let hmac_key = match &args.hmac_key_file {
        Some(p) => secretsync_backends::hash::HmacKey::new(
            std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?,
        ),
        None => secretsync_backends::hash::HmacKey::new(vec![0; 32]),
    };
    let opts = render::RenderOptions {
        inputs: args.files,
        namespace: args.namespace,
        file_root: args.file_root,
        hmac_key,
    };
    let out = render::render(&opts).await?;
    print!("{}", render::to_yaml(&out.secrets)?);
    for n in &out.notes {
        eprintln!("note: {n}");
    }
    for e in &out.errors {
        eprintln!("error: {e}");
    }
    if !out.errors.is_empty() {
        anyhow::bail!("{} binding(s) failed to render", out.errors.len());
    }
    Ok(())
}

/// kube, vaultrs and the AWS SDK all use rustls; pin the process-wide provider to
/// aws-lc-rs so no library has to guess (guessing panics when two providers are linked).
fn install_crypto_provider() {
    // Err only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
