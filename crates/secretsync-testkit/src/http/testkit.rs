//! The `/_testkit/...` control endpoints (never paused, never counted): request counters,
//! fault and latency rules, closing watches, pausing, expiring resource versions and the
//! watch history limit.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::Method;
use axum::response::Response;
use serde_json::{Value, json};

use super::faults::{FailRule, LatencyRule};
use super::response::{empty_ok, json_response, not_found_path, parse_body};
use super::{Shared, lock};

/// Serves `/_testkit/{rest}`.
pub(super) fn serve(sh: &Shared, method: &Method, rest: &str, bytes: &[u8]) -> Response {
    let body = parse_body(bytes, true).unwrap_or(Value::Null);
    match (method.as_str(), rest.trim_end_matches('/')) {
        ("GET", "counts") => json_response(200, &counts_json(&lock(&sh.counts))),
        ("POST", "counts/reset") => {
            lock(&sh.counts).clear();
            lock(&sh.group_counts).clear();
            lock(&sh.agent_calls).clear();
            empty_ok()
        }
        ("POST", "faults") => {
            lock(&sh.faults).fail.push(fail_rule(&body));
            empty_ok()
        }
        ("POST", "latency") => {
            lock(&sh.faults).latency.push(latency_rule(&body));
            empty_ok()
        }
        ("DELETE", "faults") => {
            let mut f = lock(&sh.faults);
            f.fail.clear();
            f.latency.clear();
            empty_ok()
        }
        ("POST", "watches/close") => {
            sh.close_epoch.send_modify(|e| *e += 1);
            empty_ok()
        }
        ("POST", "pause") => {
            sh.paused.send_replace(true);
            empty_ok()
        }
        ("POST", "resume") => {
            sh.paused.send_replace(false);
            empty_ok()
        }
        ("POST", "expire") => {
            lock(&sh.inner).expire_all();
            empty_ok()
        }
        ("POST", "history-limit") => {
            let n = body.get("limit").and_then(Value::as_u64).unwrap_or(1000) as usize;
            lock(&sh.inner).set_history_limit(n);
            empty_ok()
        }
        _ => not_found_path(),
    }
}

fn string(body: &Value, k: &str) -> Option<String> {
    body.get(k).and_then(Value::as_str).map(str::to_owned)
}

/// `{"verb", "resource", "count", "code", "message"}`.
fn fail_rule(body: &Value) -> FailRule {
    FailRule {
        verb: string(body, "verb"),
        resource: string(body, "resource"),
        remaining: body.get("count").and_then(Value::as_u64).unwrap_or(1) as u32,
        code: body.get("code").and_then(Value::as_u64).unwrap_or(500) as u16,
        message: string(body, "message").unwrap_or_else(|| "injected fault".into()),
    }
}

/// `{"verb", "resource", "delayMs", "count"}`.
fn latency_rule(body: &Value) -> LatencyRule {
    LatencyRule {
        verb: string(body, "verb"),
        resource: string(body, "resource"),
        delay: Duration::from_millis(body.get("delayMs").and_then(Value::as_u64).unwrap_or(0)),
        remaining: body.get("count").and_then(Value::as_u64).map(|c| c as u32),
    }
}

fn counts_json(c: &BTreeMap<(String, String), u64>) -> Value {
    json!({"counts": c.iter().map(|((v, r), n)| json!({"verb": v, "resource": r, "count": n})).collect::<Vec<_>>()})
}
