//! Change events instead of polling: something tells the operator that remote keys of a
//! source changed, and every binding reading them reads again now, through the source's
//! cache (which forgets the keys first), so twenty bindings sharing a key cost one read.
//!
//! - [`webhook`]: `POST /v1/refresh`, signed with an HMAC key from a Secret;
//! - [`sqs`]: the SQS queues of `aws` sources (`spec.aws.events.sqsQueueUrl`);
//! - [`requests`]: the read requests, with tickets an event can wait on.
//!
//! Only the leader acts on events: the webhook answers 503 on a standby and the queues
//! are read only within a leadership term.

pub mod requests;
pub mod sqs;
pub mod webhook;

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock, Weak};

use secretsync_backends::resolve::reads_key;

use crate::context::Ctx;
use crate::runtime::{ObjKey, Priority};
pub use requests::{Finish, ReadRequests, Ticket, TicketState};

/// What an event did (label `result` of `secretsync_events_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventResult {
    /// Webhook: signed, known source; the readers were asked to read.
    Accepted,
    /// Webhook: signature missing or wrong.
    Unauthorized,
    /// Webhook: body over the limit.
    TooLarge,
    /// Webhook: the body is not a refresh request.
    BadRequest,
    /// Webhook: no such source.
    UnknownSource,
    /// Webhook: this process is not the leader (or not synced yet); the caller retries.
    NotLeader,
    /// Webhook: the key Secret is missing or unusable.
    Unconfigured,
    /// Queue: every reader synced the change; the message was deleted.
    Applied,
    /// Queue: nothing here reads what the message names; deleted.
    Ignored,
    /// Queue: the message is not a change event; deleted.
    Malformed,
    /// Queue: a reader could not sync yet; the message stays and comes back.
    Failed,
    /// Queue: receiving failed (retried with backoff).
    QueueError,
}

impl EventResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            EventResult::Accepted => "accepted",
            EventResult::Unauthorized => "unauthorized",
            EventResult::TooLarge => "too_large",
            EventResult::BadRequest => "bad_request",
            EventResult::UnknownSource => "unknown_source",
            EventResult::NotLeader => "not_leader",
            EventResult::Unconfigured => "unconfigured",
            EventResult::Applied => "applied",
            EventResult::Ignored => "ignored",
            EventResult::Malformed => "malformed",
            EventResult::Failed => "failed",
            EventResult::QueueError => "queue_error",
        }
    }
}

/// Where events came from (label `source` of `secretsync_events_total`; never a source's
/// name, so cardinality stays flat).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventOrigin {
    /// `POST /v1/refresh`.
    Webhook,
    /// An `aws` source's SQS queue.
    Sqs,
}

impl EventOrigin {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            EventOrigin::Webhook => "webhook",
            EventOrigin::Sqs => "sqs",
        }
    }
}

/// Drops `keys` from source `src`'s cache and asks every binding of `src` that reads one
/// of them to read again now. The ticket tells when they did.
pub async fn refresh_keys(ctx: &Ctx, src: &ObjKey, keys: &[String]) -> Ticket {
    if let Some(entry) = ctx.registry.current(src).await
        && let Ok(cache) = &entry.cache
    {
        for k in keys {
            cache.invalidate_key(k);
        }
    }
    let readers: BTreeSet<ObjKey> = ctx
        .bindings_of_source(src)
        .into_iter()
        .filter(|(_, b)| keys.iter().any(|k| reads_key(&b.spec, k)))
        .map(|(k, _)| k)
        .collect();
    tracing::debug!(source = %src, keys = keys.len(), bindings = readers.len(), "remote keys changed; reading again");
    let ticket = ctx.reads.request_all(readers.iter().cloned());
    for b in readers {
        ctx.binding_queue.add(b, Priority::Urgent);
    }
    ticket
}

/// The current leadership term's context, for event receivers that outlive terms (the
/// webhook server runs on standbys too).
#[derive(Default)]
pub struct Leadership {
    ctx: RwLock<Option<Weak<Ctx>>>,
}

impl Leadership {
    /// The leading term's context, once its caches are synced.
    pub fn current(&self) -> Option<Arc<Ctx>> {
        self.ctx
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(Weak::upgrade)
    }

    /// Publishes `ctx` until the guard is dropped (the term ends or is aborted).
    pub fn publish(self: &Arc<Self>, ctx: &Arc<Ctx>) -> Published {
        *self.ctx.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::downgrade(ctx));
        Published(self.clone())
    }
}

/// Withdraws the published context when dropped.
pub struct Published(Arc<Leadership>);

impl Drop for Published {
    fn drop(&mut self) {
        *self.0.ctx.write().unwrap_or_else(|p| p.into_inner()) = None;
    }
}
