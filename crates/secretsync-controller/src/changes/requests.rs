//! Read requests of bindings whose inputs changed, with tickets to wait on: a change event
//! asks each reading binding to read again and, for a queue, waits until they did before
//! the message is deleted.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

use crate::runtime::ObjKey;

/// How a binding's read after a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// Read and written (or found unchanged).
    Synced,
    /// The binding cannot use the value however often it is asked (its own condition says
    /// why), or it is gone: asking again would not help.
    Settled,
    /// A transient failure (backend unavailable, API error): the change is not applied yet.
    Retry,
}

/// Where a set of requests stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketState {
    /// Some binding has not read yet.
    Pending,
    /// Every binding has read (or cannot use the value).
    Applied,
    /// Some binding's read failed transiently.
    Failed,
}

/// The requests one event made: binding and request number.
#[derive(Debug, Clone, Default)]
pub struct Ticket(Vec<(ObjKey, u64)>);

impl Ticket {
    /// How many bindings were asked.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no binding was asked.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Default)]
struct Inner {
    next: u64,
    /// Binding → the newest request not yet taken by a reconcile.
    pending: HashMap<ObjKey, u64>,
    /// Binding → the request a running reconcile took.
    in_flight: HashMap<ObjKey, u64>,
    /// Binding → the newest request a reconcile finished, and how.
    done: HashMap<ObjKey, (u64, Finish)>,
}

/// Read requests by binding.
#[derive(Default)]
pub struct ReadRequests {
    inner: Mutex<Inner>,
    finished: Notify,
}

impl ReadRequests {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks binding `key`'s next reconcile to read again; returns the request number.
    pub fn request(&self, key: &ObjKey) -> u64 {
        let mut g = self.lock();
        g.next += 1;
        let n = g.next;
        g.pending.insert(key.clone(), n);
        n
    }

    /// Asks every binding in `keys`; the ticket waits for all of them.
    pub fn request_all(&self, keys: impl IntoIterator<Item = ObjKey>) -> Ticket {
        Ticket(
            keys.into_iter()
                .map(|k| {
                    let n = self.request(&k);
                    (k, n)
                })
                .collect(),
        )
    }

    /// The newest request for `key` not yet taken (the reconcile that reads takes it).
    pub fn take(&self, key: &ObjKey) -> Option<u64> {
        let mut g = self.lock();
        let n = g.pending.remove(key)?;
        g.in_flight.insert(key.clone(), n);
        Some(n)
    }

    /// Records how the read for request `n` ended.
    pub fn finish(&self, key: &ObjKey, n: u64, how: Finish) {
        {
            let mut g = self.lock();
            if g.in_flight.get(key) == Some(&n) {
                g.in_flight.remove(key);
            }
            let newer = g.done.get(key).is_some_and(|(m, _)| *m > n);
            if !newer {
                g.done.insert(key.clone(), (n, how));
            }
        }
        self.finished.notify_waiters();
    }

    /// A deleted binding: whatever it was asked is settled.
    pub fn forget(&self, key: &ObjKey) {
        {
            let mut g = self.lock();
            g.pending.remove(key);
            g.in_flight.remove(key);
            g.done.remove(key);
        }
        self.finished.notify_waiters();
    }

    /// Where `ticket` stands now.
    pub fn state(&self, ticket: &Ticket) -> TicketState {
        let g = self.lock();
        let mut pending = false;
        for (key, n) in &ticket.0 {
            match g.done.get(key) {
                Some((m, Finish::Retry)) if m >= n => return TicketState::Failed,
                Some((m, _)) if m >= n => {}
                _ if g.pending.contains_key(key) || g.in_flight.contains_key(key) => pending = true,
                // Neither asked nor answered: forgotten (deleted) while the ticket was
                // out, so nothing is left to apply.
                _ => {}
            }
        }
        if pending {
            TicketState::Pending
        } else {
            TicketState::Applied
        }
    }

    /// Waits until `ticket` is applied or failed, at most `limit` (then `Pending`).
    pub async fn wait(&self, ticket: &Ticket, limit: Duration) -> TicketState {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.finished.notified();
            tokio::pin!(notified);
            // Registered before looking, so a finish in between is not missed.
            notified.as_mut().enable();
            match self.state(ticket) {
                TicketState::Pending => {}
                done => return done,
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => return self.state(ticket),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(n: &str) -> ObjKey {
        ObjKey::new("ns", n)
    }

    #[test]
    fn a_ticket_is_applied_when_every_binding_synced() {
        let r = ReadRequests::default();
        let t = r.request_all([k("a"), k("b")]);
        assert_eq!(r.state(&t), TicketState::Pending);
        let n = r.take(&k("a")).unwrap();
        r.finish(&k("a"), n, Finish::Synced);
        assert_eq!(r.state(&t), TicketState::Pending);
        let n = r.take(&k("b")).unwrap();
        r.finish(&k("b"), n, Finish::Settled);
        assert_eq!(r.state(&t), TicketState::Applied);
    }

    #[test]
    fn a_transient_failure_fails_the_ticket() {
        let r = ReadRequests::default();
        let t = r.request_all([k("a"), k("b")]);
        let n = r.take(&k("a")).unwrap();
        r.finish(&k("a"), n, Finish::Retry);
        assert_eq!(r.state(&t), TicketState::Failed);
    }

    #[test]
    fn an_older_finish_does_not_answer_a_newer_request() {
        let r = ReadRequests::default();
        let first = r.request(&k("a"));
        let old = r.take(&k("a")).unwrap();
        assert_eq!(old, first);
        // A second event arrives while the first read is in flight.
        let t = r.request_all([k("a")]);
        r.finish(&k("a"), old, Finish::Synced);
        assert_eq!(r.state(&t), TicketState::Pending);
        let n = r.take(&k("a")).unwrap();
        r.finish(&k("a"), n, Finish::Synced);
        assert_eq!(r.state(&t), TicketState::Applied);
    }

    #[test]
    fn requests_coalesce_per_binding() {
        let r = ReadRequests::default();
        let t1 = r.request_all([k("a")]);
        let t2 = r.request_all([k("a")]);
        let n = r.take(&k("a")).unwrap();
        assert_eq!(r.take(&k("a")), None, "one read answers both");
        r.finish(&k("a"), n, Finish::Synced);
        assert_eq!(r.state(&t1), TicketState::Applied);
        assert_eq!(r.state(&t2), TicketState::Applied);
    }

    #[test]
    fn a_read_in_flight_is_pending() {
        let r = ReadRequests::default();
        let t = r.request_all([k("a")]);
        let n = r.take(&k("a")).unwrap();
        assert_eq!(r.state(&t), TicketState::Pending);
        r.finish(&k("a"), n, Finish::Synced);
        assert_eq!(r.state(&t), TicketState::Applied);
    }

    #[test]
    fn a_deleted_binding_settles_its_requests() {
        let r = ReadRequests::default();
        let t = r.request_all([k("a")]);
        r.forget(&k("a"));
        assert_eq!(r.state(&t), TicketState::Applied);
    }

    #[tokio::test]
    async fn waiting_wakes_on_finish_and_gives_up_at_the_limit() {
        let r = std::sync::Arc::new(ReadRequests::default());
        let t = r.request_all([k("a")]);
        assert_eq!(
            r.wait(&t, Duration::from_millis(20)).await,
            TicketState::Pending
        );
        let r2 = r.clone();
        let done = tokio::spawn(async move {
            let n = r2.take(&k("a")).unwrap();
            r2.finish(&k("a"), n, Finish::Synced);
        });
        assert_eq!(
            r.wait(&t, Duration::from_secs(10)).await,
            TicketState::Applied
        );
        done.await.unwrap();
    }
}
