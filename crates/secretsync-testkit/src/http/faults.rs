//! Fault injection: rules that fail or delay the next matching resource requests, set
//! through [`crate::FakeApiServer`] or `/_testkit/faults` and `/_testkit/latency`.

use std::time::Duration;

use axum::response::Response;

use super::response::error_response;
use super::{Shared, lock};
use crate::status::ApiError;

/// A rule failing the next `remaining` matching requests.
#[derive(Debug, Clone)]
pub(crate) struct FailRule {
    pub verb: Option<String>,
    pub resource: Option<String>,
    pub remaining: u32,
    pub code: u16,
    pub message: String,
}

/// A rule delaying matching requests.
#[derive(Debug, Clone)]
pub(crate) struct LatencyRule {
    pub verb: Option<String>,
    pub resource: Option<String>,
    pub delay: Duration,
    pub remaining: Option<u32>,
}

#[derive(Debug, Default)]
pub(crate) struct Faults {
    pub fail: Vec<FailRule>,
    pub latency: Vec<LatencyRule>,
}

fn matches_rule(rv: &Option<String>, rr: &Option<String>, verb: &str, resource: &str) -> bool {
    rv.as_deref().is_none_or(|v| v == "*" || v == verb)
        && rr.as_deref().is_none_or(|r| r == "*" || r == resource)
}

impl Faults {
    /// Takes what applies to one request: the failure (code, message) of the first
    /// matching fail rule, and the sum of the matching delays. Used-up rules are dropped.
    fn take(&mut self, verb: &str, resource: &str) -> (Option<(u16, String)>, Duration) {
        let mut fail = None;
        if let Some(rule) = self
            .fail
            .iter_mut()
            .find(|r| r.remaining > 0 && matches_rule(&r.verb, &r.resource, verb, resource))
        {
            rule.remaining -= 1;
            fail = Some((rule.code, rule.message.clone()));
        }
        self.fail.retain(|r| r.remaining > 0);
        let mut delay = Duration::ZERO;
        for rule in self.latency.iter_mut() {
            if rule.remaining != Some(0) && matches_rule(&rule.verb, &rule.resource, verb, resource)
            {
                delay += rule.delay;
                if let Some(n) = rule.remaining.as_mut() {
                    *n -= 1;
                }
            }
        }
        self.latency.retain(|r| r.remaining != Some(0));
        (fail, delay)
    }
}

/// Applies the fault rules to a request: waits out its delay, and returns the injected
/// error response if a rule fails it. Called before the handler takes the store lock, and
/// the faults guard is a temporary of the first statement, so the delay holds no lock:
/// other requests are served meanwhile and concurrent delays overlap, as on a real server
/// whose writes are slow (tested in `tests/basic.rs`).
pub(super) async fn inject(sh: &Shared, verb: &str, resource: &str) -> Option<Response> {
    let (fail, delay) = lock(&sh.faults).take(verb, resource);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (code, message) = fail?;
    let mut e = ApiError::new(code, ApiError::reason_for_code(code), message);
    if code == 429 || code == 503 {
        e.details.retry_after = Some(1);
    }
    Some(error_response(&e))
}
