//! The SQS change queues of `aws` sources (`spec.aws.events.sqsQueueUrl`), read by the
//! leader only: one long-polling consumer per built source, restarted when the source is
//! rebuilt and stopped when it goes, all within the leadership term (a standby never
//! receives, so it never deletes).
//!
//! A message is deleted once every binding reading a key it names has synced it, or right
//! away when nothing here reads those keys or it is not a change event (counted as
//! `malformed`). A transient failure leaves it in the queue: it becomes visible again after
//! the visibility timeout and is tried once more.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use secretsync_api::AwsService;
use secretsync_backends::aws::events::{EventQueue, Notice, QueueMessage, parse_notice};
use tokio::task::JoinSet;

use super::{EventOrigin, EventResult, TicketState, refresh_keys};
use crate::context::Ctx;
use crate::runtime::ObjKey;
use crate::runtime::backoff::{backoff, random_unit};

/// How long a received message stays hidden from other receivers while it is handled.
pub const VISIBILITY: Duration = Duration::from_secs(90);
/// How long a message waits for its bindings to sync before it is left for redelivery
/// (shorter than [`VISIBILITY`], so it is never handled twice at once).
pub const APPLY_LIMIT: Duration = Duration::from_secs(60);
/// Messages handled at once per queue; more wait before the next receive.
const IN_FLIGHT: usize = 40;
/// Shortest time between two receives that found nothing.
const MIN_POLL: Duration = Duration::from_secs(1);
/// How often the consumers are compared with the built sources even without a wake-up.
const RECHECK: Duration = Duration::from_secs(30);

/// A built source's change queue, with what reading it needs.
pub struct EventFeed {
    /// The queue.
    pub queue: Arc<EventQueue>,
    /// The service the source reads (events of the other one are ignored).
    pub service: AwsService,
    /// The source's `prefix`, removed from the names events carry.
    pub prefix: String,
}

/// Which consumers to start and stop: `running` and `wanted` map sources to the build
/// epoch their consumer reads for.
pub fn plan(
    running: &HashMap<ObjKey, u64>,
    wanted: &HashMap<ObjKey, u64>,
) -> (Vec<ObjKey>, Vec<ObjKey>) {
    let mut start: Vec<ObjKey> = wanted
        .iter()
        .filter(|(k, e)| running.get(*k) != Some(*e))
        .map(|(k, _)| k.clone())
        .collect();
    let mut stop: Vec<ObjKey> = running
        .iter()
        .filter(|(k, e)| wanted.get(*k) != Some(*e))
        .map(|(k, _)| k.clone())
        .collect();
    start.sort();
    stop.sort();
    (start, stop)
}

/// The remote keys a notice names for a source with `prefix` reading `service`.
pub fn keys_for(notice: &Notice, service: AwsService, prefix: &str) -> Vec<String> {
    match notice {
        Notice::Changed { service: s, names } if *s == service => names
            .iter()
            .filter_map(|n| n.strip_prefix(prefix))
            .filter(|k| !k.is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// Runs the consumers of the term until it ends: wakes when a source is built or removed
/// (and every [`RECHECK`]), and makes the running consumers match the built sources.
pub async fn supervise(ctx: Arc<Ctx>) {
    let mut running: HashMap<ObjKey, (u64, tokio::task::AbortHandle)> = HashMap::new();
    // Dropping the set (term over) aborts every consumer.
    let mut tasks = JoinSet::new();
    loop {
        let mut wanted: HashMap<ObjKey, u64> = HashMap::new();
        let mut feeds: HashMap<ObjKey, Arc<EventFeed>> = HashMap::new();
        for key in ctx.event_source_keys() {
            if let Some(entry) = ctx.registry.current(&key).await
                && let Some(feed) = entry.events.clone()
            {
                wanted.insert(key.clone(), entry.epoch);
                feeds.insert(key, feed);
            }
        }
        let epochs: HashMap<ObjKey, u64> =
            running.iter().map(|(k, (e, _))| (k.clone(), *e)).collect();
        let (start, stop) = plan(&epochs, &wanted);
        for k in stop {
            if let Some((_, h)) = running.remove(&k) {
                h.abort();
                tracing::info!(source = %k, "change queue: stopped reading");
            }
        }
        for k in start {
            let (Some(feed), Some(epoch)) = (feeds.remove(&k), wanted.get(&k)) else {
                continue;
            };
            if let Some((_, h)) = running.remove(&k) {
                h.abort();
            }
            tracing::info!(source = %k, queue = %feed.queue.url(), "change queue: reading");
            let h = tasks.spawn(consume(ctx.clone(), k.clone(), feed));
            running.insert(k, (*epoch, h));
        }
        while tasks.try_join_next().is_some() {}
        tokio::select! {
            _ = ctx.registry.changed() => {}
            _ = tokio::time::sleep(RECHECK) => {}
        }
    }
}

/// Reads one queue until aborted.
async fn consume(ctx: Arc<Ctx>, src: ObjKey, feed: Arc<EventFeed>) {
    let mut failures = 0u32;
    let mut handling = JoinSet::new();
    loop {
        while handling.len() >= IN_FLIGHT {
            handling.join_next().await;
        }
        let polled = tokio::time::Instant::now();
        match feed.queue.receive().await {
            Ok(messages) => {
                if failures > 0 {
                    tracing::info!(source = %src, "change queue readable again");
                }
                failures = 0;
                // SQS holds an empty long poll for its whole wait; a queue (or emulator)
                // that answers at once must not turn this into a busy loop.
                if messages.is_empty() && polled.elapsed() < MIN_POLL {
                    tokio::time::sleep_until(polled + MIN_POLL).await;
                }
                for m in messages {
                    handling.spawn(handle(ctx.clone(), src.clone(), feed.clone(), m));
                }
            }
            Err(e) => {
                ctx.metrics.event(EventOrigin::Sqs, EventResult::QueueError);
                if failures == 0 {
                    tracing::warn!(source = %src, reason = %e.reason, error = %e.message, "change queue: receiving failed; retrying with backoff (refreshIntervals still apply)");
                } else {
                    tracing::debug!(source = %src, error = %e.message, "change queue: receiving failed again");
                }
                let pause = backoff(failures, random_unit());
                failures = failures.saturating_add(1);
                tokio::time::sleep(pause).await;
            }
        }
        while handling.try_join_next().is_some() {}
    }
}

/// Handles one message: refresh what it names, then delete it unless a reader could not
/// sync yet.
async fn handle(ctx: Arc<Ctx>, src: ObjKey, feed: Arc<EventFeed>, m: QueueMessage) {
    let result = match parse_notice(&m.body) {
        Err(e) => {
            tracing::warn!(source = %src, problem = %e, "change queue: deleting a message that is not a change event");
            EventResult::Malformed
        }
        Ok(notice) => {
            let keys = keys_for(&notice, feed.service, &feed.prefix);
            let ticket = if keys.is_empty() {
                None
            } else {
                Some(refresh_keys(&ctx, &src, &keys).await)
            };
            match ticket {
                None => EventResult::Ignored,
                Some(t) if t.is_empty() => EventResult::Ignored,
                Some(t) => match ctx.reads.wait(&t, APPLY_LIMIT).await {
                    TicketState::Applied => {
                        tracing::debug!(source = %src, keys = keys.len(), bindings = t.len(), "change queue: change applied");
                        EventResult::Applied
                    }
                    state => {
                        tracing::info!(source = %src, keys = keys.len(), bindings = t.len(), ?state, "change queue: change not applied yet; the message comes back after its visibility timeout");
                        EventResult::Failed
                    }
                },
            }
        }
    };
    ctx.metrics.event(EventOrigin::Sqs, result);
    if result != EventResult::Failed
        && let Err(e) = feed.queue.delete(&m.receipt).await
    {
        // It comes back and is handled again: harmless, reads coalesce.
        tracing::debug!(source = %src, error = %e.message, "change queue: deleting a handled message failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(n: &str) -> ObjKey {
        ObjKey::new("ns", n)
    }

    #[test]
    fn consumers_follow_builds() {
        let running: HashMap<ObjKey, u64> =
            [(k("same"), 1), (k("rebuilt"), 2), (k("gone"), 3)].into();
        let wanted: HashMap<ObjKey, u64> =
            [(k("same"), 1), (k("rebuilt"), 5), (k("new"), 6)].into();
        let (start, stop) = plan(&running, &wanted);
        assert_eq!(start, vec![k("new"), k("rebuilt")]);
        assert_eq!(stop, vec![k("gone"), k("rebuilt")]);
        assert_eq!(plan(&wanted, &wanted), (vec![], vec![]));
    }

    #[test]
    fn keys_are_names_without_the_prefix_for_the_right_service() {
        let n = Notice::Changed {
            service: AwsService::SecretsManager,
            names: vec!["prod/db".into(), "other/x".into(), "prod/".into()],
        };
        assert_eq!(
            keys_for(&n, AwsService::SecretsManager, "prod/"),
            vec!["db"]
        );
        assert_eq!(
            keys_for(&n, AwsService::SecretsManager, ""),
            vec!["prod/db", "other/x", "prod/"]
        );
        assert!(keys_for(&n, AwsService::ParameterStore, "").is_empty());
        assert!(keys_for(&Notice::Unrelated, AwsService::SecretsManager, "").is_empty());
    }
}
