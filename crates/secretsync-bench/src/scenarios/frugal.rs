//! The runs with what users get by default: sources without `spec.cache` and the
//! operator's default flags (nocache), the same with `--status-heartbeat 0` (heartbeat0,
//! run right after it so the two steady CPU figures are side by side), keys shared across
//! namespaces through separate sources (shared), a cold start against an API server whose
//! writes are slow (latency), `--status-heartbeat 1h` (heartbeat1h), and the shared keys
//! read through one ClusterSecretSource (cluster). Then the
//! side-by-side tables of every cold start and steady window of the bench.

use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};

use super::Bench;
use super::steady::{SteadyKind, Window};
use crate::config::{Layout, WRITE_VERBS, parse_dur};
use crate::report::secs;
use crate::world;

const NOCACHE: &str = "6. No cache configured, operator defaults";
const HEARTBEAT0: &str = "7. No cache configured, --status-heartbeat 0";
const SHARED: &str = "8. Keys shared across namespaces (separate sources, no cache)";
const LATENCY: &str = "9. Cold start with API write latency (no cache, operator defaults)";
const HEARTBEAT1H: &str = "10. No cache configured, --status-heartbeat 1h";
const CLUSTER: &str =
    "11. Keys shared across namespaces through one ClusterSecretSource (no cache)";

/// One run of this module: what it is called and how it is set up.
struct Run<'a> {
    scenario: &'a str,
    /// Its name in results and the operator log's file name.
    name: &'a str,
    kind: SteadyKind,
    layout: Layout,
    flags: Vec<String>,
    window: Duration,
}

/// A fresh fake with `run`'s objects, the operator with its flags: cold start, settle,
/// steady window. Writes the operator's log to `operator-NAME.log`.
async fn cold_then_steady(b: &mut Bench, run: Run<'_>) -> Result<Value> {
    let server = b.fake().await?;
    b.populate(&server, &run.layout, false, false)?;
    let mut op = b.spawn_operator(&server, run.name, &run.flags)?;
    let cold = b
        .cold_start(run.scenario, run.name, &server, &run.layout, &mut op)
        .await?;
    let settled = b.settle(run.scenario, &server, &op).await?;
    let window = Window {
        scenario: run.scenario,
        run: run.name,
        kind: run.kind,
        length: run.window,
    };
    let steady = b.steady(window, &server, &run.layout, &op).await?;
    let log = op.stop();
    std::fs::write(
        b.args.out_dir.join(format!("operator-{}.log", run.name)),
        log,
    )?;
    Ok(json!({"cold": cold, "settled": settled, "steady": steady}))
}

/// The main run's layout, sources without `spec.cache`, operator defaults.
pub async fn run_nocache(b: &mut Bench, layout: Layout) -> Result<()> {
    println!(
        "\n== {} bindings, no cache configured, operator defaults: cold start, steady state",
        layout.bindings()
    );
    let run = Run {
        scenario: NOCACHE,
        name: "nocache",
        kind: SteadyKind::Defaults,
        layout: layout.without_cache(),
        flags: b.args.default_flags(),
        window: parse_dur(&b.args.nocache_steady)?,
    };
    let v = cold_then_steady(b, run).await?;
    b.results.insert("nocache".into(), v);
    Ok(())
}

/// As [`run_nocache`], with `--status-heartbeat 0` (`lastSyncTime` on every refresh), and
/// the ratio of the two runs' steady CPU.
pub async fn run_heartbeat0(b: &mut Bench, layout: Layout) -> Result<()> {
    println!(
        "\n== {} bindings, no cache configured, --status-heartbeat 0: cold start, steady state",
        layout.bindings()
    );
    let mut flags = b.args.default_flags();
    flags.extend(["--status-heartbeat".to_string(), "0".to_string()]);
    let run = Run {
        scenario: HEARTBEAT0,
        name: "heartbeat0",
        kind: SteadyKind::Heartbeat0,
        layout: layout.without_cache(),
        flags,
        window: parse_dur(&b.args.nocache_steady)?,
    };
    let v = cold_then_steady(b, run).await?;
    b.results.insert("heartbeat0".into(), v);
    let cpu = |run: &str| {
        b.steadies
            .iter()
            .rev()
            .find(|(r, _)| r == run)
            .map(|(_, s)| s.cpu_per_min)
    };
    if let (Some(defaults), Some(zero)) = (cpu("nocache"), cpu("heartbeat0"))
        && zero > 0.0
    {
        let ratio = defaults / zero;
        b.report.row(
            HEARTBEAT0,
            "steady CPU with defaults ÷ with --status-heartbeat 0 (runs 6 and 7)",
            format!("{ratio:.2} ({defaults:.2} ÷ {zero:.2} s/min)"),
            "≤ 0.5",
        );
        b.results.insert(
            "steady_cpu_ratio_defaults_to_heartbeat0".into(),
            json!(ratio),
        );
    }
    Ok(())
}

/// As [`run_nocache`], with `--status-heartbeat 1h`: the steady status writes of a
/// longer heartbeat (each binding's slot is 66 min, so a window sees its share of them).
pub async fn run_heartbeat1h(b: &mut Bench, layout: Layout) -> Result<()> {
    println!(
        "\n== {} bindings, no cache configured, --status-heartbeat 1h: cold start, steady state",
        layout.bindings()
    );
    let mut flags = b.args.default_flags();
    flags.extend(["--status-heartbeat".to_string(), "1h".to_string()]);
    let run = Run {
        scenario: HEARTBEAT1H,
        name: "heartbeat1h",
        kind: SteadyKind::Heartbeat1h,
        layout: layout.without_cache(),
        flags,
        window: parse_dur(&b.args.nocache_steady)?,
    };
    let v = cold_then_steady(b, run).await?;
    b.results.insert("heartbeat1h".into(), v);
    Ok(())
}

/// Every namespace reads the same remote keys through its own source (no cache).
pub async fn run_shared(b: &mut Bench, layout: Layout) -> Result<()> {
    shared_keys_run(
        b,
        layout.sharing_keys(),
        SHARED,
        "shared",
        "separate sources",
    )
    .await
}

/// The shared layout's bindings reading through one ClusterSecretSource admitting all
/// namespaces: one cache for all, so each remote key is read once per interval.
pub async fn run_cluster(b: &mut Bench, layout: Layout) -> Result<()> {
    let layout = layout.through_cluster_source();
    shared_keys_run(b, layout, CLUSTER, "cluster", "one ClusterSecretSource").await
}

/// Cold start and steady state of a layout whose namespaces all read the same remote
/// keys, `through` the sources it names.
async fn shared_keys_run(
    b: &mut Bench,
    layout: Layout,
    scenario: &'static str,
    name: &'static str,
    through: &str,
) -> Result<()> {
    println!(
        "\n== {} bindings in {} namespaces sharing {} remote keys through {through}: cold start, steady state",
        layout.bindings(),
        layout.namespaces,
        layout.remote_keys()
    );
    for r in 0..world::KEYS_PER_NAMESPACE {
        world::bao_put(
            &b.bao_admin,
            &world::shared_key(r),
            &world::remote_value(r, 1),
        )
        .await?;
    }
    let run = Run {
        scenario,
        name,
        kind: SteadyKind::Shared,
        layout,
        flags: b.args.default_flags(),
        window: parse_dur(&b.args.shared_steady)?,
    };
    let v = cold_then_steady(b, run).await?;
    b.results.insert(name.into(), v);
    Ok(())
}

/// Cold start of the nocache layout, operator defaults, with every API write delayed by
/// `--write-latency`.
pub async fn run_latency(b: &mut Bench, layout: Layout) -> Result<()> {
    let layout = layout.without_cache();
    let delay = parse_dur(&b.args.write_latency)?;
    println!(
        "\n== cold start, {} bindings, no cache configured, every API write delayed by {} ms",
        layout.bindings(),
        delay.as_millis()
    );
    let server = b.fake().await?;
    for verb in WRITE_VERBS {
        server.add_latency(verb, "*", delay, None);
    }
    b.populate(&server, &layout, false, false)?;
    let mut op = b.spawn_operator(&server, "latency", &b.args.default_flags())?;
    b.report.row(
        LATENCY,
        "API write latency (added by the fake to every request)",
        format!("{} ms on {}", delay.as_millis(), WRITE_VERBS.join(", ")),
        "",
    );
    let cold = b
        .cold_start(LATENCY, "latency", &server, &layout, &mut op)
        .await?;
    if let Some((_, c)) = b.cold_starts.last()
        && c.all_ready_s > 0.0
    {
        let writes = c.writes.total() as f64;
        b.report.row(
            LATENCY,
            "mean API writes in flight (writes × latency ÷ time until all Ready)",
            format!("{:.1}", writes * delay.as_secs_f64() / c.all_ready_s),
            "",
        );
        b.report.row(
            LATENCY,
            "write-bound time at that latency, one write at a time (writes × latency)",
            secs(writes * delay.as_secs_f64()),
            "",
        );
    }
    let settled = b.settle(LATENCY, &server, &op).await?;
    let log = op.stop();
    std::fs::write(b.args.out_dir.join("operator-latency.log"), log)?;
    b.results.insert(
        "latency".into(),
        json!({
            "write_latency_ms": delay.as_secs_f64() * 1000.0,
            "write_verbs": WRITE_VERBS,
            "cold": cold,
            "settled": settled,
        }),
    );
    Ok(())
}

/// The side-by-side tables of every cold start and steady window measured.
pub fn comparison_tables(b: &mut Bench) {
    if !b.cold_starts.is_empty() {
        let rows: Vec<Vec<String>> = b
            .cold_starts
            .iter()
            .map(|(run, c)| {
                vec![
                    run.clone(),
                    c.bindings.to_string(),
                    if c.missing == 0 {
                        secs(c.all_ready_s)
                    } else {
                        format!("{} not Ready", c.missing)
                    },
                    format!("{} ({})", c.kv_reads, c.backend_requests),
                    format!("{} ({})", c.writes.total(), c.api_requests),
                    c.writes.slashed(),
                    format!("{:.2}", c.writes_per_binding_besides_events()),
                    format!("{} / {}; {}", c.events.0, c.events.1, c.events.2),
                    secs(c.cpu_s),
                    format!("{:.1} MiB", c.hwm_mib),
                ]
            })
            .collect();
        b.report.table(
            "Cold starts side by side",
            &[
                "run",
                "bindings",
                "all Ready",
                "KV reads (backend requests)",
                "API writes (requests)",
                "writes: status / Secret / Events / other",
                "writes per binding besides Events",
                "Events: events.k8s.io create / patch; core v1",
                "operator CPU",
                "peak RSS",
            ],
            &rows,
        );
    }
    if !b.steadies.is_empty() {
        let rows: Vec<Vec<String>> = b
            .steadies
            .iter()
            .map(|(run, s)| {
                vec![
                    run.clone(),
                    format!("{:.0} s = {:.1} cycles", s.window_s, s.cycles),
                    format!(
                        "{:.0} ({:.2} per pair, {:.1} per remote key)",
                        s.reads_per_cycle,
                        s.reads_per_cycle / s.pairs as f64,
                        s.reads_per_cycle / s.remote_keys as f64
                    ),
                    s.writes.slashed_per(s.cycles),
                    format!(
                        "{:.2} s/min = {:.1}%",
                        s.cpu_per_min,
                        s.cpu_per_min / 60.0 * 100.0
                    ),
                    format!("{:.1} / {:.1} MiB", s.rss_mean_mib, s.rss_max_mib),
                ]
            })
            .collect();
        b.report.table(
            "Steady state side by side (per 60 s refresh cycle)",
            &[
                "run",
                "window",
                "KV reads per cycle",
                "API writes per cycle: status / Secret / Events / other",
                "operator CPU (% of one core)",
                "RSS mean / peak",
            ],
            &rows,
        );
    }
}
