//! Leader election with a coordination.k8s.io/v1 Lease (`secretsync-leader`).
//!
//! Timing follows client-go: lease duration 15s, a leader renews every retry period (2s)
//! and steps down if it could not renew for the renew deadline (10s); a standby takes the
//! lease once it has seen no change of the lease record for a whole lease duration. Expiry
//! is judged by the local clock from when a record was *observed*, not from the
//! `renewTime` written by another machine, so clock skew cannot cause two leaders.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use secretsync_api::LEADER_LEASE_NAME;
use tokio::sync::watch;
use tokio::time::Instant;

/// How long a lease is valid without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// A leader that could not renew for this long stops reconciling.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// Interval between attempts to acquire or renew.
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// What to do with the current lease record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// No Lease object exists: create it holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it over.
    Acquire,
    /// Someone else holds a live lease.
    Standby,
}

/// The parts of a lease record whose change proves the holder is alive.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    holder: Option<String>,
    renew: Option<String>,
    transitions: Option<i32>,
}

impl Record {
    fn of(spec: Option<&LeaseSpec>) -> Self {
        Record {
            holder: spec.and_then(|s| s.holder_identity.clone()),
            renew: spec.and_then(|s| s.renew_time.as_ref().map(|t| t.0.to_string())),
            transitions: spec.and_then(|s| s.lease_transitions),
        }
    }
}

/// Decides from the lease (None = absent), who we are, and when the current record was
/// first observed locally.
pub fn decide(
    lease: Option<&LeaseSpec>,
    identity: &str,
    observed_at: Instant,
    now: Instant,
) -> Decision {
    let Some(spec) = lease else {
        return Decision::Create;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == identity {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::Acquire;
    }
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .unwrap_or(LEASE_DURATION);
    if now.saturating_duration_since(observed_at) > duration {
        Decision::Acquire
    } else {
        Decision::Standby
    }
}

/// The spec to write for `decision` on top of the current one.
pub fn next_spec(
    current: Option<&LeaseSpec>,
    decision: Decision,
    identity: &str,
    now: Timestamp,
) -> LeaseSpec {
    let mut spec = current.cloned().unwrap_or_default();
    let now = MicroTime(now);
    match decision {
        Decision::Renew => spec.renew_time = Some(now),
        Decision::Create | Decision::Acquire => {
            let was_other = spec
                .holder_identity
                .as_deref()
                .is_some_and(|h| !h.is_empty() && h != identity);
            spec.holder_identity = Some(identity.to_string());
            spec.acquire_time = Some(now.clone());
            spec.renew_time = Some(now);
            spec.lease_duration_seconds = Some(LEASE_DURATION.as_secs() as i32);
            if decision == Decision::Acquire && was_other {
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            } else if spec.lease_transitions.is_none() {
                spec.lease_transitions = Some(0);
            }
        }
        Decision::Standby => {}
    }
    spec
}

/// The spec written on release: no holder and a 1s duration so a standby takes over at its
/// next attempt instead of waiting for expiry.
pub fn released_spec(current: &LeaseSpec, now: Timestamp) -> LeaseSpec {
    let mut spec = current.clone();
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(MicroTime(now));
    spec
}

/// Runs the election loop until `stop` fires, publishing leadership on `leader`.
pub struct Elector {
    api: Api<Lease>,
    identity: String,
    namespace: String,
}

impl Elector {
    /// An elector for the Lease in `namespace`.
    pub fn new(client: Client, namespace: &str, identity: &str) -> Self {
        Elector {
            api: Api::namespaced(client, namespace),
            identity: identity.to_string(),
            namespace: namespace.to_string(),
        }
    }

    /// Loops until `stop` turns true. `leader` is set true while we hold the lease and false
    /// as soon as the renew deadline passes without a successful renewal.
    pub async fn run(&self, leader: watch::Sender<bool>, mut stop: watch::Receiver<bool>) {
        let mut observed: (Record, Instant) = (Record::default(), Instant::now());
        let mut last_renew: Option<Instant> = None;
        // Consecutive failed attempts: the first is a warning, the rest of an outage are
        // debug lines, and the end of it one info line.
        let mut failures = 0u32;
        loop {
            if *stop.borrow() {
                break;
            }
            let call = tokio::time::timeout(RETRY_PERIOD, self.attempt(&mut observed));
            let result = call.await;
            if result.as_ref().is_ok_and(|r| r.is_ok()) && failures > 0 {
                tracing::info!(failures, "leader election reaches the API server again");
                failures = 0;
            }
            match result {
                Ok(Ok(true)) => {
                    if last_renew.is_none() {
                        tracing::info!(identity = %self.identity, lease = LEADER_LEASE_NAME, namespace = %self.namespace, "acquired leadership");
                    }
                    last_renew = Some(Instant::now());
                    leader.send_replace(true);
                }
                Ok(Ok(false)) => {
                    if last_renew.take().is_some() {
                        tracing::warn!(identity = %self.identity, "lease taken by another holder; stopping reconcilers");
                    }
                    leader.send_replace(false);
                }
                Ok(Err(e)) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(error = %e, "leader election attempt failed; retrying every {}s", RETRY_PERIOD.as_secs());
                    } else {
                        tracing::debug!(error = %e, failures, "leader election attempt failed");
                    }
                }
                Err(_) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(
                            "leader election attempt timed out; retrying every {}s",
                            RETRY_PERIOD.as_secs()
                        );
                    } else {
                        tracing::debug!(failures, "leader election attempt timed out");
                    }
                }
            }
            if let Some(at) = last_renew
                && at.elapsed() > RENEW_DEADLINE
            {
                tracing::error!(identity = %self.identity, "could not renew the lease before the deadline; stopping reconcilers");
                last_renew = None;
                leader.send_replace(false);
            }
            tokio::select! {
                _ = tokio::time::sleep(RETRY_PERIOD) => {}
                _ = stop.changed() => {}
            }
        }
        if last_renew.is_some() || *leader.borrow() {
            leader.send_replace(false);
            self.release().await;
        }
    }

    /// One acquire/renew attempt; `Ok(true)` when we hold the lease afterwards.
    async fn attempt(&self, observed: &mut (Record, Instant)) -> Result<bool, kube::Error> {
        let current = self.api.get_opt(LEADER_LEASE_NAME).await?;
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        let record = Record::of(spec);
        let now = Instant::now();
        if record != observed.0 {
            *observed = (record, now);
        }
        let decision = decide(
            current
                .as_ref()
                .map(|l| l.spec.clone().unwrap_or_default())
                .as_ref(),
            &self.identity,
            observed.1,
            now,
        );
        let new_spec = next_spec(spec, decision, &self.identity, Timestamp::now());
        let pp = PostParams {
            field_manager: Some(secretsync_api::FIELD_MANAGER.to_string()),
            ..Default::default()
        };
        let result = match (decision, current) {
            (Decision::Standby, _) => return Ok(false),
            (Decision::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(LEADER_LEASE_NAME.to_string()),
                        namespace: Some(self.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(new_spec),
                };
                self.api.create(&pp, &lease).await
            }
            (_, Some(mut lease)) => {
                // replace carries metadata.resourceVersion: a concurrent writer makes this
                // fail with 409 instead of both believing they lead.
                lease.spec = Some(new_spec);
                self.api.replace(LEADER_LEASE_NAME, &pp, &lease).await
            }
            (_, None) => return Ok(false),
        };
        match result {
            Ok(lease) => {
                *observed = (Record::of(lease.spec.as_ref()), Instant::now());
                Ok(true)
            }
            Err(kube::Error::Api(ae)) if ae.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up if we still hold it.
    async fn release(&self) {
        let res = async {
            let Some(mut lease) = self.api.get_opt(LEADER_LEASE_NAME).await? else {
                return Ok::<_, kube::Error>(());
            };
            let Some(spec) = lease.spec.as_ref() else {
                return Ok(());
            };
            if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return Ok(());
            }
            lease.spec = Some(released_spec(spec, Timestamp::now()));
            let pp = PostParams {
                field_manager: Some(secretsync_api::FIELD_MANAGER.to_string()),
                ..Default::default()
            };
            self.api.replace(LEADER_LEASE_NAME, &pp, &lease).await?;
            Ok(())
        };
        match tokio::time::timeout(Duration::from_secs(5), res).await {
            Ok(Ok(())) => tracing::info!(identity = %self.identity, "released the leader lease"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not release the leader lease"),
            Err(_) => tracing::warn!("releasing the leader lease timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, secs: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(Into::into),
            lease_duration_seconds: Some(secs),
            ..Default::default()
        }
    }

    #[test]
    fn decisions() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        assert_eq!(decide(None, "me", t0, t0), Decision::Create);
        assert_eq!(
            decide(Some(&spec(Some("me"), 15)), "me", t0, t0),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&spec(None, 15)), "me", t0, t0),
            Decision::Acquire
        );
        assert_eq!(
            decide(Some(&spec(Some(""), 15)), "me", t0, t0),
            Decision::Acquire
        );
        let other = spec(Some("other"), 15);
        assert_eq!(
            decide(Some(&other), "me", t0, t0 + 14 * s),
            Decision::Standby
        );
        assert_eq!(
            decide(Some(&other), "me", t0, t0 + 16 * s),
            Decision::Acquire
        );
        // Released leases say 1s.
        assert_eq!(
            decide(Some(&spec(Some("other"), 1)), "me", t0, t0 + 2 * s),
            Decision::Acquire
        );
    }

    #[test]
    fn specs_written() {
        let now = Timestamp::now();
        let other = spec(Some("other"), 15);
        let taken = next_spec(Some(&other), Decision::Acquire, "me", now);
        assert_eq!(taken.holder_identity.as_deref(), Some("me"));
        assert_eq!(taken.lease_transitions, Some(1));
        assert_eq!(taken.lease_duration_seconds, Some(15));
        let renewed = next_spec(Some(&taken), Decision::Renew, "me", now);
        assert_eq!(renewed.lease_transitions, Some(1));
        assert!(renewed.renew_time.is_some());
        let created = next_spec(None, Decision::Create, "me", now);
        assert_eq!(created.lease_transitions, Some(0));
        let released = released_spec(&renewed, now);
        assert_eq!(released.holder_identity, None);
        assert_eq!(released.lease_duration_seconds, Some(1));
    }

    #[test]
    fn record_changes_on_renew() {
        let a = spec(Some("x"), 15);
        let b = next_spec(Some(&a), Decision::Renew, "x", Timestamp::now());
        assert_ne!(Record::of(Some(&a)), Record::of(Some(&b)));
    }
}
