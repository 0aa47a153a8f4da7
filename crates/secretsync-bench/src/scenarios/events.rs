//! Change events: a signed `POST /v1/refresh` for one remote key, and the time until every
//! Secret of the bindings reading it holds the new value, over many rotations, with the
//! operator's defaults (sources without `spec.cache`, 60 s refreshes running meanwhile).

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use base64::Engine;
use hmac::{Hmac, Mac};
use secretsync_testkit::FakeApiServer;
use secretsync_testkit::harness::free_port;
use serde_json::{Value, json};
use sha2::Sha256;

use super::Bench;
use crate::config::{Layout, WEBHOOK_ROTATIONS};
use crate::probe::percentile;
use crate::world::{self, KEYS_PER_NAMESPACE};

const SCENARIO: &str = "9. Change events: webhook to Secret";
const KEY: &[u8] = b"bench-webhook-key-0123456789abcdef";
const KEY_SECRET: &str = "secretsync-webhook";
const OPERATOR_NS: &str = "secretsync-system";

fn sign(body: &str) -> String {
    // Any key length is valid for HMAC.
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY).unwrap_or_else(|_| unreachable!());
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Seconds as milliseconds.
fn ms(s: f64) -> String {
    format!("{:.0} ms", s * 1000.0)
}

/// One signed call: the HTTP status.
async fn call(client: &reqwest::Client, addr: &str, body: &str) -> Result<u16> {
    let resp = client
        .post(format!("http://{addr}/v1/refresh"))
        .header("Content-Type", "application/json")
        .header("X-Secretsync-Signature", sign(body))
        .body(body.to_string())
        .send()
        .await?;
    Ok(resp.status().as_u16())
}

/// How many of namespace `i`'s Secrets hold `password` under `k{r}-password`.
fn holding(server: &FakeApiServer, layout: &Layout, i: usize, r: usize, password: &str) -> usize {
    let ns = world::ns_name(i);
    let want = base64::engine::general_purpose::STANDARD.encode(password);
    let field = format!("k{r}-password");
    (0..layout.per_namespace)
        .filter(|j| {
            server
                .inspect("", "secrets", Some(&ns), &world::binding_name(*j), |o| {
                    o["data"][field.as_str()].as_str() == Some(want.as_str())
                })
                .unwrap_or(false)
        })
        .count()
}

/// The webhook run: the large layout without cache, the operator with `--webhook-addr`,
/// then one rotation after another, each a backend write and one signed call.
pub async fn run_webhook(b: &mut Bench, layout: Layout) -> Result<()> {
    let layout = layout.without_cache();
    println!(
        "\n== webhook: {} bindings, {WEBHOOK_ROTATIONS} rotations by signed call",
        layout.bindings()
    );
    let server = b.fake().await?;
    b.populate(&server, &layout, false, false)?;
    world::put(
        &server,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NS}}),
    )?;
    world::put(
        &server,
        &json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": KEY_SECRET, "namespace": OPERATOR_NS},
            "data": {"key": base64::engine::general_purpose::STANDARD.encode(KEY)},
        }),
    )?;
    let addr = format!("127.0.0.1:{}", free_port()?);
    let mut flags = b.args.default_flags();
    flags.extend([
        "--webhook-addr".to_string(),
        addr.clone(),
        "--webhook-secret".to_string(),
        format!("{OPERATOR_NS}/{KEY_SECRET}"),
    ]);
    let mut op = b.spawn_operator(&server, "webhook", &flags)?;
    let cold = b
        .cold_start(SCENARIO, "webhook", &server, &layout, &mut op)
        .await?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut all = Vec::with_capacity(WEBHOOK_ROTATIONS);
    let mut first = Vec::with_capacity(WEBHOOK_ROTATIONS);
    let mut reads = Vec::with_capacity(WEBHOOK_ROTATIONS);
    let mut missed = 0usize;
    for n in 0..WEBHOOK_ROTATIONS {
        let i = n % layout.namespaces;
        let r = (n / layout.namespaces) % KEYS_PER_NAMESPACE;
        let key = world::remote_key(i, r);
        let path = format!("secret/data/{key}");
        let value = world::remote_value(i * KEYS_PER_NAMESPACE + r, 10 + n as u32);
        let password = value["password"].as_str().unwrap_or_default().to_string();
        world::bao_put(&b.bao_admin, &key, &value).await?;
        let reads0 = b.audit.reads_of(&path)?;
        let body =
            json!({"source": format!("{}/{}", world::ns_name(i), world::SOURCE), "keys": [key]})
                .to_string();
        let t0 = Instant::now();
        let status = call(&client, &addr, &body).await?;
        if status != 202 {
            bail!("rotation {n}: the webhook answered {status}");
        }
        let mut t_first = None;
        let deadline = t0 + Duration::from_secs(30);
        let done = loop {
            let h = holding(&server, &layout, i, r, &password);
            if h > 0 && t_first.is_none() {
                t_first = Some(t0.elapsed().as_secs_f64());
            }
            if h == layout.per_namespace {
                break Some(t0.elapsed().as_secs_f64());
            }
            if Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        match done {
            Some(t) => all.push(t),
            None => missed += 1,
        }
        if let Some(t) = t_first {
            first.push(t);
        }
        // The audit device writes after answering: give it a moment to catch up.
        let settle = Instant::now() + Duration::from_secs(2);
        while b.audit.reads_of(&path)? == reads0 && Instant::now() < settle {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        reads.push(b.audit.reads_of(&path)? - reads0);
    }
    all.sort_by(f64::total_cmp);
    first.sort_by(f64::total_cmp);
    let total_reads: u64 = reads.iter().sum();
    let metrics = op.metrics().await;
    let accepted = crate::probe::metric_sum(&metrics, "secretsync_events_total");
    let r = &mut b.report;
    r.row(
        SCENARIO,
        "parameters",
        format!(
            "{} bindings, sources without spec.cache, refreshInterval 60s; each rotation writes one key (read by the {} bindings of its namespace) and POSTs one signed call",
            layout.bindings(),
            layout.per_namespace
        ),
        "",
    );
    r.row(
        SCENARIO,
        &format!("call → all {} Secrets of the key updated: p50 / p99 / max ({WEBHOOK_ROTATIONS} rotations)", layout.per_namespace),
        format!(
            "{} / {} / {}",
            ms(percentile(&all, 50.0)),
            ms(percentile(&all, 99.0)),
            ms(all.last().copied().unwrap_or(0.0))
        ),
        "",
    );
    r.row(
        SCENARIO,
        "call → first Secret updated: p50 / p99",
        format!(
            "{} / {}",
            ms(percentile(&first, 50.0)),
            ms(percentile(&first, 99.0))
        ),
        "",
    );
    r.row(
        SCENARIO,
        "OpenBao reads of the rotated key per call (total / calls; a refresh due at the same moment adds one)",
        format!("{total_reads} / {WEBHOOK_ROTATIONS}"),
        "1 per call",
    );
    r.row(
        SCENARIO,
        "rotations not complete within 30 s / events counted",
        format!("{missed} / {accepted:.0}"),
        "0",
    );
    let v: Value = json!({
        "cold": cold,
        "rotations": WEBHOOK_ROTATIONS,
        "all_updated_s": {"p50": percentile(&all, 50.0), "p99": percentile(&all, 99.0), "max": all.last()},
        "first_updated_s": {"p50": percentile(&first, 50.0), "p99": percentile(&first, 99.0)},
        "reads_of_rotated_key": total_reads,
        "missed": missed,
        "layout": layout.json(),
    });
    b.results.insert("webhook".into(), v);
    let log = op.stop();
    std::fs::write(b.args.out_dir.join("operator-webhook.log"), log)?;
    Ok(())
}
