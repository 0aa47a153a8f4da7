//! The scenarios of the benchmark and the state they share. Each run starts its own fake
//! API server and operator: idle, a small cold start, the main run (large cold start,
//! steady state, new bindings, rotation) and the run with unrelated objects, all with
//! cached sources; then the runs with the defaults users get ([`frugal`]: no cache
//! configured, keys shared across namespaces, API write latency); then restart triggers
//! beyond managed Secrets ([`triggers`]).

mod cold;
mod events;
mod frugal;
mod rotation;
mod steady;
mod triggers;

pub use events::run_webhook;
pub use frugal::{
    comparison_tables, run_cluster, run_heartbeat0, run_heartbeat1h, run_latency, run_nocache,
    run_shared,
};
pub use triggers::run_triggers;

use std::time::{Duration, Instant};

use anyhow::Result;
use secretsync_testkit::BaoServer;
use secretsync_testkit::bao::BaoAdmin;
use secretsync_testkit::{FakeApiServer, Options};
use serde_json::{Value, json};

use crate::config::{Args, Layout, REFRESH, ROTATION_BINDINGS, ROTATION_DEPLOYMENTS, parse_dur};
use crate::probe::AuditCounter;
use crate::process::Operator;
use crate::report::{Report, mib};
use crate::world;
use steady::{SteadyKind, Window};

/// Shared state of the whole benchmark.
pub struct Bench {
    pub args: Args,
    /// Clock ticks per second of `/proc/<pid>/stat`.
    pub tck: f64,
    pub bao: BaoServer,
    /// Admin client of `bao` (root token).
    pub bao_admin: BaoAdmin,
    /// Request counts from the audit log of `bao`.
    pub audit: AuditCounter,
    /// Kubeconfigs and OpenBao's files.
    pub dir: tempfile::TempDir,
    pub report: Report,
    /// What goes into `results.json`.
    pub results: serde_json::Map<String, Value>,
    /// Cold starts and steady windows measured so far, for the side-by-side tables.
    pub cold_starts: Vec<(String, cold::ColdSummary)>,
    pub steadies: Vec<(String, steady::SteadySummary)>,
}

impl Bench {
    /// A fresh fake API server with the secretsync CRDs.
    async fn fake(&self) -> Result<FakeApiServer> {
        let server = FakeApiServer::start_with(Options {
            // Generous watch history: relists caused by the fake's small default would be
            // an artefact of the fake, not of the operator.
            history_limit: 200_000,
            ..Options::default()
        })
        .await?;
        server.install_secretsync_crds()?;
        Ok(server)
    }

    /// Sources and bindings of `layout`, plus the rotation Deployments when asked.
    fn populate(
        &self,
        server: &FakeApiServer,
        layout: &Layout,
        rotation: bool,
        unrelated: bool,
    ) -> Result<()> {
        let t = Instant::now();
        let cache_ttl = layout.cached.then_some(self.args.cache_ttl.as_str());
        if layout.cluster_source {
            for o in world::cluster_source_objects(&world::ns_name(0), &self.bao.address) {
                world::put(server, &o)?;
            }
        }
        for i in 0..layout.namespaces {
            let ns = world::ns_name(i);
            if !layout.cluster_source {
                for o in world::source_objects(&ns, &self.bao.address, cache_ttl) {
                    world::put(server, &o)?;
                }
            }
            for j in 0..layout.per_namespace {
                let name = world::binding_name(j);
                let b = world::binding(layout.keys, i, &name, REFRESH, layout.cluster_source);
                world::put(server, &b)?;
            }
        }
        if rotation {
            let ns = world::ns_name(0);
            for d in 0..ROTATION_DEPLOYMENTS {
                let secrets: Vec<String> = (0..ROTATION_BINDINGS / ROTATION_DEPLOYMENTS)
                    .map(|k| {
                        world::binding_name(d * (ROTATION_BINDINGS / ROTATION_DEPLOYMENTS) + k)
                    })
                    .collect();
                world::put(
                    server,
                    &world::deployment(&ns, &format!("app-{d:02}"), &secrets, true),
                )?;
            }
        }
        if unrelated {
            for n in 0..layout.unrelated_secrets {
                let ns = world::ns_name(n % layout.namespaces);
                world::put(server, &world::unrelated_secret(&ns, n))?;
            }
            for n in 0..layout.unrelated_deployments {
                let ns = world::ns_name(n % layout.namespaces);
                world::put(
                    server,
                    &world::deployment(&ns, &format!("other-{n:05}"), &[], false),
                )?;
            }
        }
        println!(
            "  created {} bindings{}{} in {:.1} s (in-process)",
            layout.bindings(),
            if rotation {
                " + 50 opted-in Deployments"
            } else {
                ""
            },
            if unrelated {
                format!(
                    " + {} unrelated Secrets + {} unrelated Deployments",
                    layout.unrelated_secrets, layout.unrelated_deployments
                )
            } else {
                String::new()
            },
            t.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Starts the operator against `server` (kubeconfig `NAME.kubeconfig`) with `flags`
    /// besides the addresses ([`Args::main_flags`] or [`Args::default_flags`]).
    fn spawn_operator(
        &self,
        server: &FakeApiServer,
        name: &str,
        flags: &[String],
    ) -> Result<Operator> {
        let kubeconfig = self.dir.path().join(format!("{name}.kubeconfig"));
        server.write_kubeconfig(&kubeconfig)?;
        Operator::spawn(&self.args.operator, flags, &kubeconfig, self.tck)
    }

    /// Polls the fake until every binding in `pending` is Ready; returns seconds from each
    /// binding's start instant to first seen Ready, and how many never became Ready. Fails
    /// at once if the operator exits meanwhile.
    async fn wait_ready(
        server: &FakeApiServer,
        op: &mut Operator,
        mut pending: Vec<(String, String, Instant)>,
        poll: Duration,
        timeout: Duration,
    ) -> Result<(Vec<f64>, usize)> {
        let deadline = Instant::now() + timeout;
        let mut lat = Vec::with_capacity(pending.len());
        while !pending.is_empty() && Instant::now() < deadline {
            if let Some(how) = op.exited() {
                anyhow::bail!("the operator exited while bindings were pending: {how}");
            }
            let mut still = Vec::with_capacity(pending.len());
            for (n, (ns, name, since)) in pending.into_iter().enumerate() {
                let ready = server
                    .inspect("secretsync.dev", "secretbindings", Some(&ns), &name, |o| {
                        world::is_ready(o)
                    })
                    .unwrap_or(false);
                if ready {
                    lat.push(since.elapsed().as_secs_f64());
                } else {
                    still.push((ns, name, since));
                }
                if n % 256 == 255 {
                    tokio::task::yield_now().await;
                }
            }
            pending = still;
            if !pending.is_empty() {
                tokio::time::sleep(poll).await;
            }
        }
        lat.sort_by(f64::total_cmp);
        Ok((lat, pending.len()))
    }
}

/// Idle operator: its memory 15 s after start, with no objects.
pub async fn run_idle(b: &mut Bench) -> Result<()> {
    println!("\n== idle operator");
    let server = b.fake().await?;
    let op = b.spawn_operator(&server, "idle", &b.args.main_flags())?;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let p = op.now(b.tck)?;
    b.report.row(
        "0. Binary and idle operator",
        "idle operator RSS / peak RSS (15 s, no objects)",
        format!("{:.1} / {:.1} MiB", mib(p.rss_kib), mib(p.hwm_kib)),
        "",
    );
    b.results.insert(
        "idle".into(),
        json!({"rss_mib": mib(p.rss_kib), "hwm_mib": mib(p.hwm_kib), "cpu_s": p.cpu_s}),
    );
    op.stop();
    Ok(())
}

/// Cold start of the small layout (10 bindings per namespace).
pub async fn run_cold_small(b: &mut Bench, layout: Layout) -> Result<()> {
    println!("\n== cold start, {} bindings", layout.bindings());
    let server = b.fake().await?;
    b.populate(&server, &layout, false, false)?;
    let mut op = b.spawn_operator(&server, "cold-small", &b.args.main_flags())?;
    let v = b
        .cold_start(
            "1a. Cold start (small)",
            "cold-small",
            &server,
            &layout,
            &mut op,
        )
        .await?;
    b.results.insert("cold_small".into(), v);
    op.stop();
    Ok(())
}

/// The main run: cold start of the large layout, settle, steady state, new bindings and
/// rotation, all against one operator.
pub async fn run_main(b: &mut Bench, layout: Layout) -> Result<()> {
    println!(
        "\n== cold start, {} bindings, then steady state, new bindings, rotation",
        layout.bindings()
    );
    let server = b.fake().await?;
    b.populate(&server, &layout, true, false)?;
    let mut op = b.spawn_operator(&server, "main", &b.args.main_flags())?;
    let cold = b
        .cold_start("1b. Cold start (large)", "main", &server, &layout, &mut op)
        .await?;
    b.results.insert("cold_large".into(), cold);
    let settled = b.settle("1b. Cold start (large)", &server, &op).await?;
    b.results
        .insert("settled_without_unrelated".into(), settled);
    let window = Window {
        scenario: "3. Steady state",
        run: "main",
        kind: SteadyKind::Main,
        length: parse_dur(&b.args.steady)?,
    };
    let steady = b.steady(window, &server, &layout, &op).await?;
    b.results.insert("steady".into(), steady);
    let new = b.new_bindings(&server, &layout, &mut op).await?;
    b.results.insert("new_bindings".into(), new);
    let rot = b.rotation(&server, &op).await?;
    b.results.insert("rotation".into(), rot);
    let log = op.stop();
    std::fs::write(b.args.out_dir.join("operator-main.log"), log)?;
    Ok(())
}

/// The large layout plus unrelated Secrets and Deployments: memory next to the main run.
pub async fn run_unrelated(b: &mut Bench, layout: Layout) -> Result<()> {
    println!(
        "\n== {} bindings plus {} unrelated Secrets and {} unrelated Deployments",
        layout.bindings(),
        layout.unrelated_secrets,
        layout.unrelated_deployments
    );
    let scenario = "5. Memory vs unrelated objects";
    let server = b.fake().await?;
    b.populate(&server, &layout, true, true)?;
    let mut op = b.spawn_operator(&server, "unrelated", &b.args.main_flags())?;
    let cold = b
        .cold_start(scenario, "unrelated", &server, &layout, &mut op)
        .await?;
    let settled = b.settle(scenario, &server, &op).await?;
    if let Some(base) = b.results.get("settled_without_unrelated") {
        let with = settled["rss_mean_mib"].as_f64().unwrap_or(0.0);
        let without = base["rss_mean_mib"].as_f64().unwrap_or(0.0);
        let hwm_with = settled["hwm_mib"].as_f64().unwrap_or(0.0);
        let hwm_without = base["hwm_mib"].as_f64().unwrap_or(0.0);
        b.report.row(
            scenario,
            "RSS without / with unrelated objects (growth); VmHWM without / with",
            format!(
                "{without:.1} / {with:.1} MiB ({:+.1} MiB); {hwm_without:.1} / {hwm_with:.1} MiB",
                with - without
            ),
            "growth < 10 MiB",
        );
    }
    b.results.insert(
        "unrelated".into(),
        json!({"cold": cold, "settled": settled, "layout": layout.json()}),
    );
    op.stop();
    Ok(())
}
