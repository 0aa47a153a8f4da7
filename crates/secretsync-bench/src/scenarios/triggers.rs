//! Restart triggers beyond managed Secrets (the design's "Restarts beyond managed
//! Secrets"): the operator's memory next to ConfigMaps and Secrets without the watch label,
//! what labelled ConfigMaps read by opted-in Deployments cost, and the time from a
//! ConfigMap change to its Deployment's restart, with every write it causes.
//!
//! One operator over the main layout's bindings, in steps: bindings synced and steady
//! (two memory readings, the second 1, to show the drift with nothing added); unlabelled
//! ConfigMaps and Secrets added (reading 2: the growth is theirs alone, nothing else
//! changed in between); labelled ConfigMaps and their
//! Deployments added, every revision recorded (reading 3); then one ConfigMap changed at a
//! time. A memory reading is the median of the 250 ms VmRSS samples over [`RSS_WINDOW`],
//! taken after the settle time.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use secretsync_api::{ANNOTATION_RESTARTED_AT, ANNOTATION_SECRET_REVISION};
use secretsync_testkit::FakeApiServer;
use serde_json::{Value, json};

use super::Bench;
use crate::config::{Layout, REFRESH, RSS_WINDOW, TRIGGER_CHANGES, parse_dur};
use crate::probe::{self, percentile};
use crate::process::Operator;
use crate::report::{by_count, count_diff, get, mib, secs};
use crate::world;

const SCENARIO: &str = "12. Restart triggers: unlabelled objects, labelled ConfigMaps";

/// How long all trigger Deployments may take to get their revision recorded.
const RECORD_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a changed ConfigMap's Deployment may take to be restarted.
const RESTART_TIMEOUT: Duration = Duration::from_secs(30);

/// One memory reading: VmRSS samples over [`RSS_WINDOW`].
#[derive(Debug, Clone, Copy)]
struct RssReading {
    median_kib: f64,
    min_kib: u64,
    max_kib: u64,
    samples: usize,
    hwm_kib: u64,
}

impl RssReading {
    fn text(&self) -> String {
        format!(
            "{:.1} MiB (median of {} samples; {:.1}–{:.1} MiB; VmHWM {:.1} MiB)",
            self.median_kib / 1024.0,
            self.samples,
            mib(self.min_kib),
            mib(self.max_kib),
            mib(self.hwm_kib)
        )
    }

    fn json(&self) -> Value {
        json!({
            "rss_median_mib": self.median_kib / 1024.0,
            "rss_min_mib": mib(self.min_kib),
            "rss_max_mib": mib(self.max_kib),
            "samples": self.samples,
            "hwm_mib": mib(self.hwm_kib),
        })
    }
}

/// What one ConfigMap change caused.
struct Change {
    configmap: String,
    namespace: String,
    /// Seconds from the ConfigMap write to its Deployment's new `restartedAt`; `None` when
    /// it did not come within [`RESTART_TIMEOUT`].
    restart_s: Option<f64>,
    /// The window the writes were counted in, seconds.
    window_s: f64,
    /// Trigger Deployments whose resourceVersion changed, by index.
    deployments_changed: Vec<usize>,
    /// Labelled ConfigMaps whose resourceVersion changed besides the one changed.
    other_configmaps_changed: usize,
    /// Deployment patch requests in the window.
    deployment_patches: u64,
    /// Writes in the window besides the background ones, by `verb resource`.
    caused: BTreeMap<String, u64>,
    /// Binding status and Lease writes in the window (the heartbeat and leader election,
    /// which go on whatever changes).
    background: u64,
}

impl Change {
    /// Whether the change did what the target asks: its Deployment, and nothing else,
    /// patched.
    fn only_its_deployment(&self, pair: usize) -> bool {
        self.restart_s.is_some()
            && self.deployments_changed == [pair]
            && self.deployment_patches == 1
            && self.other_configmaps_changed == 0
    }
}

/// Writes that go on whatever changes: binding status (heartbeat) and the Lease.
fn is_background(resource: &str) -> bool {
    matches!(resource, "secretbindings/status" | "leases")
}

/// The pair whose ConfigMap change `k` changes: spread over the pairs and namespaces.
fn changed_pair(k: usize, pairs: usize) -> usize {
    (k * pairs / TRIGGER_CHANGES + k) % pairs.max(1)
}

/// Namespace of trigger pair `n`.
fn pair_ns(layout: &Layout, n: usize) -> String {
    world::ns_name(n % layout.namespaces)
}

/// The large layout's bindings, then unlabelled objects, then labelled ConfigMaps with
/// their Deployments, then ConfigMap changes; one operator throughout.
pub async fn run_triggers(b: &mut Bench, layout: Layout) -> Result<()> {
    println!(
        "\n== {} bindings, then {} unlabelled ConfigMaps and {} unlabelled Secrets, then {} labelled ConfigMaps read by opted-in Deployments",
        layout.bindings(),
        layout.unlabelled_configmaps,
        layout.unrelated_secrets,
        layout.trigger_pairs
    );
    let server = b.fake().await?;
    b.populate(&server, &layout, false, false)?;
    let mut op = b.spawn_operator(&server, "triggers", &b.args.main_flags())?;
    let cold = b
        .cold_start(SCENARIO, "triggers", &server, &layout, &mut op)
        .await?;
    let settle = parse_dur(&b.args.settle)?;
    let settled = b.settle(SCENARIO, &server, &op).await?;
    let outcome = b.triggers(&server, &layout, &op, settle).await;
    let log = op.stop();
    std::fs::write(b.args.out_dir.join("operator-triggers.log"), log)?;
    let mut v = outcome?;
    v["cold"] = cold;
    v["settled"] = settled;
    v["layout"] = layout.json();
    b.results.insert("triggers".into(), v);
    Ok(())
}

impl Bench {
    /// The steps after the cold start and its settle time.
    async fn triggers(
        &mut self,
        server: &FakeApiServer,
        layout: &Layout,
        op: &Operator,
        settle: Duration,
    ) -> Result<Value> {
        let debounce = parse_dur(&self.args.restart_debounce)?;
        self.report.row(
            SCENARIO,
            "parameters",
            format!(
                "{} bindings in {} namespaces; then {} ConfigMaps and {} Secrets without the {} label (~300 bytes of data each); then {} ConfigMaps labelled {}=true, each read (envFrom) by one Deployment annotated restart-on-rotation \"true\"; {TRIGGER_CHANGES} ConfigMap changes; memory = median of the 250 ms VmRSS samples over {} s after a {} s settle; operator flags: {}",
                layout.bindings(),
                layout.namespaces,
                layout.unlabelled_configmaps,
                layout.unrelated_secrets,
                world::LABEL_WATCH,
                layout.trigger_pairs,
                world::LABEL_WATCH,
                RSS_WINDOW.as_secs(),
                settle.as_secs(),
                op.flags_text()
            ),
            "",
        );

        // 1. Bindings synced and steady: one whole refresh interval after the settle time,
        // so that every binding has refreshed once. Two readings as far apart as step 2's
        // show how much RSS moves with nothing added.
        tokio::time::sleep(parse_dur(REFRESH)?).await;
        let control = rss_reading(op, self.tck).await?;
        tokio::time::sleep(settle).await;
        let base = rss_reading(op, self.tck).await?;
        let drift = (base.median_kib - control.median_kib) / 1024.0;
        self.report.row(
            SCENARIO,
            &format!(
                "1. RSS with the bindings synced and steady ({REFRESH} refresh interval after the settle time), two readings {} s apart",
                (settle + RSS_WINDOW).as_secs()
            ),
            format!("{}; {}", control.text(), base.text()),
            "",
        );
        self.report.row(
            SCENARIO,
            "1. RSS drift with nothing added (second reading − first)",
            format!("{drift:+.1} MiB"),
            "",
        );

        // 2. Unlabelled ConfigMaps and Secrets.
        let c0 = server.counts();
        let t = Instant::now();
        for n in 0..layout.unlabelled_configmaps {
            let ns = world::ns_name(n % layout.namespaces);
            world::put(server, &world::unlabelled_configmap(&ns, n))?;
            if n % 1000 == 999 {
                tokio::task::yield_now().await;
            }
        }
        for n in 0..layout.unrelated_secrets {
            let ns = world::ns_name(n % layout.namespaces);
            world::put(server, &world::unrelated_secret(&ns, n))?;
            if n % 1000 == 999 {
                tokio::task::yield_now().await;
            }
        }
        let setup_unlabelled = t.elapsed().as_secs_f64();
        tokio::time::sleep(settle).await;
        let unlabelled = rss_reading(op, self.tck).await?;
        let c = count_diff(&c0, &server.counts());
        let touching: BTreeMap<String, u64> = c
            .into_iter()
            .filter(|(k, _)| k.ends_with(" configmaps") || k.ends_with(" secrets"))
            .collect();
        let growth_unlabelled = (unlabelled.median_kib - base.median_kib) / 1024.0;
        self.report.row(
            SCENARIO,
            "2. unlabelled objects written into the fake (in-process)",
            format!(
                "{} ConfigMaps + {} Secrets in {}",
                layout.unlabelled_configmaps,
                layout.unrelated_secrets,
                secs(setup_unlabelled)
            ),
            "",
        );
        self.report
            .row(SCENARIO, "2. RSS with them, settled", unlabelled.text(), "");
        self.report.row(
            SCENARIO,
            "2. **RSS growth from the unlabelled objects** (reading 2 − reading 1)",
            format!("{growth_unlabelled:+.1} MiB"),
            "< 10 MiB",
        );
        self.report.row(
            SCENARIO,
            "2. operator requests on ConfigMaps and Secrets meanwhile (a get of secrets is a source's 60 s recheck of its credential Secret, by name)",
            if touching.is_empty() {
                "none".to_string()
            } else {
                by_count(&touching)
            },
            "",
        );

        // 3. Labelled ConfigMaps and their Deployments.
        let pairs = layout.trigger_pairs;
        let patches0 = server.count("patch", "deployments");
        let t = Instant::now();
        for n in 0..pairs {
            world::put(server, &world::watched_configmap(&pair_ns(layout, n), n, 1))?;
        }
        for n in 0..pairs {
            world::put(server, &world::configmap_deployment(&pair_ns(layout, n), n))?;
        }
        let recorded = wait_recorded(server, layout, RECORD_TIMEOUT).await;
        let t_recorded = t.elapsed().as_secs_f64();
        let quiet = wait_quiet(server, Duration::from_secs(3), Duration::from_secs(60)).await;
        let record_patches = server.count("patch", "deployments") - patches0;
        let restarted_in_setup = trigger_deployments(server, layout, |o| {
            o["spec"]["template"]["metadata"]["annotations"]
                .get(ANNOTATION_RESTARTED_AT)
                .is_some()
        })
        .len();
        self.report.row(
            SCENARIO,
            "3. all Deployments' secret-revision recorded (from the first write) / Deployment patches / restarts meanwhile",
            format!(
                "{} / {record_patches} / {restarted_in_setup}",
                if recorded == pairs {
                    secs(t_recorded)
                } else {
                    format!(
                        "only {recorded}/{pairs} after {}",
                        secs(RECORD_TIMEOUT.as_secs_f64())
                    )
                },
            ),
            &format!("{pairs} patches, 0 restarts"),
        );
        tokio::time::sleep(settle).await;
        let with_pairs = rss_reading(op, self.tck).await?;
        let growth_pairs_kib = with_pairs.median_kib - unlabelled.median_kib;
        self.report.row(
            SCENARIO,
            "3. RSS with the labelled ConfigMaps and opted-in Deployments, settled",
            with_pairs.text(),
            "",
        );
        self.report.row(
            SCENARIO,
            "3. RSS growth from them (reading 3 − reading 2) / per ConfigMap + Deployment pair",
            format!(
                "{:+.1} MiB / {:.1} KiB",
                growth_pairs_kib / 1024.0,
                growth_pairs_kib / pairs.max(1) as f64
            ),
            "",
        );

        // 4. One ConfigMap changed at a time.
        let mut changes = Vec::new();
        if recorded == pairs && quiet {
            for k in 0..TRIGGER_CHANGES {
                let n = changed_pair(k, pairs);
                let ch = change_one(server, layout, n, k as u32 + 2, debounce).await?;
                changes.push((n, ch));
            }
            self.report_changes(&changes);
        } else {
            self.report.row(
                SCENARIO,
                "4. ConfigMap change → its Deployment patched",
                format!(
                    "not measured: {recorded}/{pairs} revisions recorded, Deployment patches {} at the end",
                    if quiet { "quiet" } else { "still going" }
                ),
                "< 2 s",
            );
        }
        let mut times: Vec<f64> = changes.iter().filter_map(|(_, c)| c.restart_s).collect();
        times.sort_by(f64::total_cmp);
        Ok(json!({
            "rss_window_s": RSS_WINDOW.as_secs_f64(),
            "settle_s": settle.as_secs_f64(),
            "bindings_steady_first": control.json(),
            "bindings_steady": base.json(),
            "rss_drift_with_nothing_added_mib": drift,
            "unlabelled": {
                "configmaps": layout.unlabelled_configmaps,
                "secrets": layout.unrelated_secrets,
                "setup_s": setup_unlabelled,
                "reading": unlabelled.json(),
                "rss_growth_mib": growth_unlabelled,
                "operator_requests_on_configmaps_and_secrets": touching,
            },
            "pairs": {
                "count": pairs,
                "recorded": recorded,
                "recorded_after_s": t_recorded,
                "deployment_patches": record_patches,
                "restarts_during_setup": restarted_in_setup,
                "reading": with_pairs.json(),
                "rss_growth_mib": growth_pairs_kib / 1024.0,
                "rss_growth_per_pair_kib": growth_pairs_kib / pairs.max(1) as f64,
            },
            "changes": changes.iter().map(|(n, c)| json!({
                "pair": n,
                "configmap": c.configmap,
                "namespace": c.namespace,
                "restart_s": c.restart_s,
                "window_s": c.window_s,
                "deployments_changed": c.deployments_changed,
                "other_configmaps_changed": c.other_configmaps_changed,
                "deployment_patches": c.deployment_patches,
                "writes_besides_background": c.caused,
                "background_writes": c.background,
                "only_its_deployment_patched": c.only_its_deployment(*n),
            })).collect::<Vec<_>>(),
            "restart_p50_s": percentile(&times, 50.0),
            "restart_max_s": times.last().copied(),
            "restart_debounce": self.args.restart_debounce,
        }))
    }

    fn report_changes(&mut self, changes: &[(usize, Change)]) {
        let mut times: Vec<f64> = changes.iter().filter_map(|(_, c)| c.restart_s).collect();
        times.sort_by(f64::total_cmp);
        let missed = changes.len() - times.len();
        self.report.row(
            SCENARIO,
            &format!(
                "4. **ConfigMap change → its Deployment patched (restartedAt)**, p50 / max of {} changes",
                changes.len()
            ),
            format!(
                "{} / {}{}",
                secs(percentile(&times, 50.0)),
                secs(times.last().copied().unwrap_or(0.0)),
                if missed > 0 {
                    format!(
                        " ({missed} not restarted within {})",
                        secs(RESTART_TIMEOUT.as_secs_f64())
                    )
                } else {
                    String::new()
                }
            ),
            &format!("< 2 s (--restart-debounce {})", self.args.restart_debounce),
        );
        self.report.row(
            SCENARIO,
            "4. each change: ConfigMap, time",
            changes
                .iter()
                .map(|(_, c)| {
                    format!(
                        "{}/{} {}",
                        c.namespace,
                        c.configmap,
                        c.restart_s.map_or("not restarted".to_string(), secs)
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
            "",
        );
        let only = changes
            .iter()
            .filter(|(n, c)| c.only_its_deployment(*n))
            .count();
        self.report.row(
            SCENARIO,
            "4. **changes after which exactly its Deployment, and no other Deployment or ConfigMap, was patched** (resourceVersions of all of them compared; Deployment patch requests)",
            format!(
                "{only} of {} (Deployments changed per change: {}; patch requests: {})",
                changes.len(),
                changes
                    .iter()
                    .map(|(_, c)| c.deployments_changed.len().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                changes
                    .iter()
                    .map(|(_, c)| c.deployment_patches.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "all",
        );
        let mut caused: BTreeMap<String, u64> = BTreeMap::new();
        for (_, c) in changes {
            for (k, v) in &c.caused {
                *caused.entry(k.clone()).or_default() += v;
            }
        }
        let window: f64 = changes.iter().map(|(_, c)| c.window_s).sum();
        self.report.row(
            SCENARIO,
            "4. API writes in the windows (change to restart + 3 debounces + 5 s), all changes together, besides binding status and Lease",
            by_count(&caused),
            &format!(
                "{} Deployment patches (+ one Event each), nothing else",
                changes.len()
            ),
        );
        self.report.row(
            SCENARIO,
            "4. binding status and Lease writes in those windows (the heartbeat and leader election, not caused by the changes)",
            format!(
                "{} in {} ({:.1}/s)",
                changes.iter().map(|(_, c)| c.background).sum::<u64>(),
                secs(window),
                changes.iter().map(|(_, c)| c.background).sum::<u64>() as f64 / window.max(1e-9)
            ),
            "",
        );
    }
}

/// Samples over [`RSS_WINDOW`] from now on.
async fn rss_reading(op: &Operator, tck: f64) -> Result<RssReading> {
    let from = op.started.elapsed().as_secs_f64();
    tokio::time::sleep(RSS_WINDOW).await;
    let to = op.started.elapsed().as_secs_f64();
    let samples = op.rss_samples(from, to);
    let now = op.now(tck)?;
    Ok(RssReading {
        median_kib: probe::median(&samples),
        min_kib: samples.first().copied().unwrap_or(0),
        max_kib: samples.last().copied().unwrap_or(0),
        samples: samples.len(),
        hwm_kib: now.hwm_kib,
    })
}

/// Indexes of the trigger Deployments for which `f` holds.
fn trigger_deployments(
    server: &FakeApiServer,
    layout: &Layout,
    f: impl Fn(&Value) -> bool,
) -> Vec<usize> {
    (0..layout.trigger_pairs)
        .filter(|&n| {
            server
                .inspect(
                    "apps",
                    "deployments",
                    Some(&pair_ns(layout, n)),
                    &world::configmap_deployment_name(n),
                    &f,
                )
                .unwrap_or(false)
        })
        .collect()
}

/// Polls until every trigger Deployment carries a recorded revision; how many do.
async fn wait_recorded(server: &FakeApiServer, layout: &Layout, timeout: Duration) -> usize {
    let has_revision = |o: &Value| {
        o["metadata"]["annotations"]
            .get(ANNOTATION_SECRET_REVISION)
            .is_some()
    };
    let deadline = Instant::now() + timeout;
    loop {
        let n = trigger_deployments(server, layout, has_revision).len();
        if n == layout.trigger_pairs || Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until no Deployment patch came for `quiet`; false when that took over `timeout`.
async fn wait_quiet(server: &FakeApiServer, quiet: Duration, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut last = server.count("patch", "deployments");
    while Instant::now() < deadline {
        tokio::time::sleep(quiet).await;
        let now = server.count("patch", "deployments");
        if now == last {
            return true;
        }
        last = now;
    }
    false
}

/// resourceVersions of every trigger Deployment and labelled ConfigMap, by pair.
fn versions(server: &FakeApiServer, layout: &Layout) -> Vec<(Option<String>, Option<String>)> {
    let rv = |o: &Value| {
        o["metadata"]["resourceVersion"]
            .as_str()
            .map(str::to_string)
    };
    (0..layout.trigger_pairs)
        .map(|n| {
            let ns = pair_ns(layout, n);
            let d = server
                .inspect(
                    "apps",
                    "deployments",
                    Some(&ns),
                    &world::configmap_deployment_name(n),
                    rv,
                )
                .flatten();
            let c = server
                .inspect(
                    "",
                    "configmaps",
                    Some(&ns),
                    &world::watched_configmap_name(n),
                    rv,
                )
                .flatten();
            (d, c)
        })
        .collect()
}

/// The pod template's `restartedAt` of trigger Deployment `n`.
fn restarted_at(server: &FakeApiServer, layout: &Layout, n: usize) -> Option<String> {
    server
        .inspect(
            "apps",
            "deployments",
            Some(&pair_ns(layout, n)),
            &world::configmap_deployment_name(n),
            |o| {
                o["spec"]["template"]["metadata"]["annotations"][ANNOTATION_RESTARTED_AT]
                    .as_str()
                    .map(str::to_string)
            },
        )
        .flatten()
}

/// Changes labelled ConfigMap `n` (in-process, so the write is not among the counted
/// requests) to data `revision`, waits for its Deployment's restart, then 3 debounces + 5 s
/// for anything else, and compares every trigger object's resourceVersion.
async fn change_one(
    server: &FakeApiServer,
    layout: &Layout,
    n: usize,
    revision: u32,
    debounce: Duration,
) -> Result<Change> {
    let ns = pair_ns(layout, n);
    let before = versions(server, layout);
    let restarted_before = restarted_at(server, layout, n);
    let c0 = server.counts();
    let t0 = Instant::now();
    world::put(server, &world::watched_configmap(&ns, n, revision))?;
    let mut restart_s = None;
    while t0.elapsed() < RESTART_TIMEOUT {
        if restarted_at(server, layout, n) != restarted_before {
            restart_s = Some(t0.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(debounce * 3 + Duration::from_secs(5)).await;
    let counts = count_diff(&c0, &server.counts());
    let window_s = t0.elapsed().as_secs_f64();
    let after = versions(server, layout);
    let deployments_changed: Vec<usize> = (0..before.len())
        .filter(|&i| before[i].0 != after[i].0)
        .collect();
    let other_configmaps_changed = (0..before.len())
        .filter(|&i| i != n && before[i].1 != after[i].1)
        .count();
    let mut caused = BTreeMap::new();
    let mut background = 0;
    for (k, v) in &counts {
        let Some((verb, resource)) = k.split_once(' ') else {
            continue;
        };
        if !["create", "update", "patch", "delete"].contains(&verb) {
            continue;
        }
        if is_background(resource) {
            background += v;
        } else {
            caused.insert(k.clone(), *v);
        }
    }
    let ch = Change {
        configmap: world::watched_configmap_name(n),
        namespace: ns,
        restart_s,
        window_s,
        deployments_changed,
        other_configmaps_changed,
        deployment_patches: get(&counts, "patch deployments"),
        caused,
        background,
    };
    println!(
        "  change of {}/{}: restart after {}, Deployments changed {:?}, writes besides background {}",
        ch.namespace,
        ch.configmap,
        ch.restart_s.map_or("none".to_string(), secs),
        ch.deployments_changed,
        by_count(&ch.caused)
    );
    Ok(ch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_writes_are_status_and_lease() {
        assert!(is_background("secretbindings/status"));
        assert!(is_background("leases"));
        assert!(!is_background("deployments"));
        assert!(!is_background("events"));
        assert!(!is_background("configmaps"));
    }

    #[test]
    fn changes_pick_distinct_configmaps() {
        let pick = |pairs: usize| -> Vec<usize> {
            (0..TRIGGER_CHANGES)
                .map(|k| changed_pair(k, pairs))
                .collect()
        };
        assert_eq!(pick(1000), [0, 201, 402, 603, 804]);
        assert_eq!(pick(100), [0, 21, 42, 63, 84]);
        assert_eq!(pick(1), [0, 0, 0, 0, 0]);
    }
}
