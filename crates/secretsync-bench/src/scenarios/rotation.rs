//! Rotation to rolling restart: one remote key changes, its bindings are force-synced, and
//! the opted-in Deployments reading their Secrets must each be restarted exactly once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures::StreamExt;
use kube::Api;
use kube::api::{Patch, PatchParams};
use secretsync_api::{ANNOTATION_RESTARTED_AT, ANNOTATION_SECRET_REVISION, SecretBinding};
use secretsync_testkit::FakeApiServer;
use secretsync_testkit::harness::wait_for;
use serde_json::{Value, json};

use super::Bench;
use crate::config::{ROTATION_BINDINGS, ROTATION_DEPLOYMENTS, parse_dur};
use crate::probe;
use crate::process::Operator;
use crate::report::{count_diff, get, secs};
use crate::world;

const SCENARIO: &str = "4. Rotation to restart";

/// What a rotation measured; times in seconds from the start of the backend write.
struct Rotation {
    t_write: f64,
    t_forced: f64,
    t_all: f64,
    all_patched: bool,
    restarted: usize,
    restarts_metric: f64,
    deployment_patches: u64,
    counts: BTreeMap<String, u64>,
}

impl Bench {
    /// Rotation: the restarts one rotated remote key causes, and how long they take.
    pub async fn rotation(&mut self, server: &FakeApiServer, op: &Operator) -> Result<Value> {
        let debounce = parse_dur(&self.args.restart_debounce)?;
        self.report.row(
            SCENARIO,
            "parameters",
            format!(
                "remote key {} read by {ROTATION_BINDINGS} bindings of {}; {ROTATION_DEPLOYMENTS} opted-in Deployments (env secretKeyRef to 2 of those Secrets each); --restart-debounce {}",
                world::remote_key(0, 0),
                world::ns_name(0),
                self.args.restart_debounce
            ),
            "",
        );
        // The operator records a revision on each workload it sees first (no restart).
        let recorded = wait_for(Duration::from_secs(60), || async {
            deployments_with(server, false, ANNOTATION_SECRET_REVISION) == ROTATION_DEPLOYMENTS
        })
        .await;
        if recorded.is_err() {
            let n = deployments_with(server, false, ANNOTATION_SECRET_REVISION);
            self.report.row(
                SCENARIO,
                "time to all Deployments patched",
                format!(
                    "not measurable: only {n}/{ROTATION_DEPLOYMENTS} Deployments got a recorded revision"
                ),
                "< 2 s",
            );
            return Ok(json!({"measurable": false, "recorded": n}));
        }
        let m = self.rotate(server, op, debounce).await?;
        self.report_rotation(&m);
        Ok(json!({
            "measurable": true,
            "t_backend_write_s": m.t_write,
            "t_force_sync_done_s": m.t_forced,
            "t_all_patched_s": m.t_all,
            "all_patched": m.all_patched,
            "deployments_restarted": m.restarted,
            "restarts_metric": m.restarts_metric,
            "deployment_patches": m.deployment_patches,
            "restart_debounce": self.args.restart_debounce,
            "api_counts": m.counts,
        }))
    }

    /// Writes a new value to the rotated key, force-syncs its bindings, and waits for the
    /// restarts (and then 3 debounces + 5 s for any second restart, which must not come).
    async fn rotate(
        &mut self,
        server: &FakeApiServer,
        op: &Operator,
        debounce: Duration,
    ) -> Result<Rotation> {
        let client = server.client().await?;
        let api: Api<SecretBinding> = Api::namespaced(client, &world::ns_name(0));
        let c0 = server.counts();
        let m0 = op.metrics().await;
        let before = deployments_with(server, true, ANNOTATION_RESTARTED_AT);
        let t0 = Instant::now();
        world::bao_put(
            &self.bao_admin,
            &world::remote_key(0, 0),
            &world::remote_value(0, 2),
        )
        .await?;
        let t_write = t0.elapsed().as_secs_f64();
        force_sync(&api).await?;
        let t_forced = t0.elapsed().as_secs_f64();
        let all = wait_for(Duration::from_secs(60), || async {
            deployments_with(server, true, ANNOTATION_RESTARTED_AT) - before >= ROTATION_DEPLOYMENTS
        })
        .await;
        let t_all = t0.elapsed().as_secs_f64();
        // Leave time for any second restart to show up.
        tokio::time::sleep(debounce * 3 + Duration::from_secs(5)).await;
        let restarted = deployments_with(server, true, ANNOTATION_RESTARTED_AT) - before;
        let counts = count_diff(&c0, &server.counts());
        let m1 = op.metrics().await;
        let restarts_metric = probe::metric_sum(&m1, "secretsync_rollout_restarts_total")
            - probe::metric_sum(&m0, "secretsync_rollout_restarts_total");
        Ok(Rotation {
            t_write,
            t_forced,
            t_all,
            all_patched: all.is_ok(),
            restarted,
            restarts_metric,
            deployment_patches: get(&counts, "patch deployments"),
            counts,
        })
    }

    fn report_rotation(&mut self, m: &Rotation) {
        let r = &mut self.report;
        if m.all_patched {
            r.row(
                SCENARIO,
                "time to all Deployments patched, from the backend write (from the last force-sync patch)",
                format!("{} ({})", secs(m.t_all), secs(m.t_all - m.t_forced)),
                "< 2 s",
            );
        } else {
            r.row(
                SCENARIO,
                "time to all Deployments patched",
                format!(
                    "only {}/{ROTATION_DEPLOYMENTS} restarted within 60 s",
                    m.restarted
                ),
                "< 2 s",
            );
        }
        r.row(
            SCENARIO,
            "backend write / 100 force-sync annotations done at",
            format!("{} / {}", secs(m.t_write), secs(m.t_forced)),
            "",
        );
        r.row(
            SCENARIO,
            "restarts: Deployments restarted / restart metric / Deployment patches",
            format!(
                "{} / {:.0} / {}",
                m.restarted, m.restarts_metric, m.deployment_patches
            ),
            "exactly 50",
        );
    }
}

/// Annotates every rotation binding with a new force-sync value (16 merge patches at a
/// time over HTTP).
async fn force_sync(api: &Api<SecretBinding>) -> Result<()> {
    let stamp = format!("bench-{}", jiff::Timestamp::now().as_millisecond());
    let patch = world::force_sync_patch(&stamp);
    let results: Vec<Result<SecretBinding, kube::Error>> =
        futures::stream::iter((0..ROTATION_BINDINGS).map(|j| {
            let api = api.clone();
            let patch = patch.clone();
            async move {
                api.patch(
                    &world::binding_name(j),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            }
        }))
        .buffer_unordered(16)
        .collect()
        .await;
    if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
        bail!("force-sync patch failed: {e}");
    }
    Ok(())
}

/// How many rotation Deployments carry `annotation` on the pod template (`template`) or
/// on the Deployment itself.
fn deployments_with(server: &FakeApiServer, template: bool, annotation: &str) -> usize {
    let ns = world::ns_name(0);
    (0..ROTATION_DEPLOYMENTS)
        .filter(|d| {
            server
                .inspect(
                    "apps",
                    "deployments",
                    Some(&ns),
                    &format!("app-{d:02}"),
                    |o| {
                        let meta = if template {
                            &o["spec"]["template"]["metadata"]
                        } else {
                            &o["metadata"]
                        };
                        meta["annotations"].get(annotation).is_some()
                    },
                )
                .unwrap_or(false)
        })
        .count()
}
