//! `secretsync-bench`: runs the real `secretsync run` binary (a separate process, so its
//! CPU and memory are measured alone) against the in-process fake API server and a real
//! OpenBao dev server, and reports the scenarios of the benchmark issue as a table and as
//! JSON. `make bench` runs it at full scale; `--scale 0.1` is a quick run.
//!
//! Measurements: operator CPU and memory from `/proc/<pid>/stat` and `/proc/<pid>/status`,
//! API requests from the fake's request counters, backend requests from OpenBao's file
//! audit device, restarts from the Deployments themselves and the operator's metrics.
//!
//! Layout: [`config`] (command line, fixed parameters, object counts), [`scenarios`] (the
//! runs and what they measure), [`report`] (the printed rows and tables), [`process`] (the
//! operator and OpenBao processes), [`probe`] (/proc, audit log, metrics) and [`world`]
//! (the objects and remote keys).

mod config;
mod probe;
mod process;
mod report;
mod scenarios;
mod world;

use std::time::Instant;

use anyhow::{Result, bail};
use clap::Parser;
use futures::StreamExt;
use secretsync_testkit::bao::BaoAdmin;
use secretsync_testkit::harness::{BAO_BIN_ENV, find_binary};
use serde_json::json;

use crate::config::{Args, Layout};
use crate::probe::AuditCounter;
use crate::report::{Report, mib};
use crate::scenarios::{
    Bench, comparison_tables, run_cluster, run_cold_small, run_heartbeat0, run_heartbeat1h,
    run_idle, run_latency, run_main, run_nocache, run_shared, run_triggers, run_unrelated,
    run_webhook,
};

fn main() -> Result<()> {
    let mut args = Args::parse();
    if !args.operator.is_file() {
        bail!(
            "operator binary {} not found: cargo build --release -p secretsync",
            args.operator.display()
        );
    }
    args.operator = args.operator.canonicalize()?;
    args.validate()?;
    // `make bench` runs under scripts/test-servers.sh, which exports the bao binary.
    if find_binary(BAO_BIN_ENV, "bao").is_none() {
        bail!("no bao binary: set {BAO_BIN_ENV} or run through `make bench`");
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench(args))
}

async fn bench(args: Args) -> Result<()> {
    std::fs::create_dir_all(&args.out_dir)?;
    let started = Instant::now();
    let s = args.scale;
    let (large, small) = Layout::at_scale(s);
    let machine = probe::machine();
    println!("secretsync-bench: scale {s}, machine {machine}");
    let dir = tempfile::tempdir()?;
    let (bao, audit_path) = process::start_bao(dir.path()).await?;
    let bao_admin = bao.admin();
    write_remote_keys(&bao_admin, &large).await?;
    let size = std::fs::metadata(&args.operator)?.len();
    let mut b = Bench {
        tck: probe::clk_tck(),
        audit: AuditCounter::new(&audit_path),
        bao_admin,
        bao,
        dir,
        report: Report::default(),
        results: serde_json::Map::new(),
        cold_starts: Vec::new(),
        steadies: Vec::new(),
        args: args.clone(),
    };
    b.report.row(
        "0. Binary and idle operator",
        "release binary size",
        format!("{:.1} MiB", mib(size / 1024)),
        "",
    );
    b.results.insert("binary_size_bytes".into(), json!(size));
    // A failed run is reported and the next one still runs: one missing flag in the
    // operator must not throw away twenty minutes of figures.
    let mut failed = Vec::new();
    for run in &args.runs {
        let done = match run.as_str() {
            "idle" => run_idle(&mut b).await,
            "cold-small" => run_cold_small(&mut b, small).await,
            "main" => run_main(&mut b, large).await,
            "unrelated" => run_unrelated(&mut b, large).await,
            "nocache" => run_nocache(&mut b, large).await,
            "heartbeat0" => run_heartbeat0(&mut b, large).await,
            "shared" => run_shared(&mut b, large).await,
            "cluster" => run_cluster(&mut b, large).await,
            "latency" => run_latency(&mut b, large).await,
            "heartbeat1h" => run_heartbeat1h(&mut b, large).await,
            "webhook" => run_webhook(&mut b, large).await,
            "triggers" => run_triggers(&mut b, large).await,
            other => Err(anyhow::anyhow!("unknown run {other:?}")),
        };
        if let Err(e) = done {
            b.report.row("Failed runs", run, format!("{e:#}"), "");
            failed.push(run.clone());
        }
    }
    comparison_tables(&mut b);
    let md = b.report.markdown();
    println!("\n# secretsync benchmark (scale {s})\n{md}");
    let out = json!({
        "scale": s,
        "machine": machine,
        "load_average_at_end": probe::load_average(),
        "duration_s": started.elapsed().as_secs_f64(),
        "args": format!("{args:?}"),
        "failed_runs": failed,
        "results": b.results,
    });
    let json_path = args.out_dir.join("results.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&out)?)?;
    std::fs::write(args.out_dir.join("results.md"), md)?;
    println!(
        "wrote {} and results.md ({:.0} s in all; OpenBao pid {})",
        json_path.display(),
        started.elapsed().as_secs_f64(),
        b.bao.process.id()
    );
    if !failed.is_empty() {
        bail!("runs failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Writes every remote key of `layout` to OpenBao (16 writes at a time).
async fn write_remote_keys(bao: &BaoAdmin, layout: &Layout) -> Result<()> {
    let t = Instant::now();
    let puts: Vec<Result<()>> = futures::stream::iter(
        (0..layout.namespaces).flat_map(|i| (0..world::KEYS_PER_NAMESPACE).map(move |r| (i, r))),
    )
    .map(|(i, r)| async move {
        world::bao_put(
            bao,
            &world::remote_key(i, r),
            &world::remote_value(i * world::KEYS_PER_NAMESPACE + r, 1),
        )
        .await
    })
    .buffer_unordered(16)
    .collect()
    .await;
    puts.into_iter().collect::<Result<Vec<()>>>()?;
    println!(
        "  wrote {} remote keys to OpenBao in {:.1} s",
        layout.remote_keys(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
