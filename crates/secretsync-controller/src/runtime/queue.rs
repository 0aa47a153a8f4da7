//! Work queue with two priorities, delayed entries, de-duplication and "dirty while
//! running" tracking.
//!
//! Why not kube-runtime's `Controller` scheduler: it has one FIFO of due items, so when
//! 10,000 periodic refreshes come due at once a newly created binding waits behind all of
//! them. Here due refreshes go to the `Normal` lane and new or changed objects to the
//! `Urgent` lane, which is always served first; the dispatcher pops only when a worker slot
//! is free, so an urgent key waits at most for one in-flight reconcile to finish.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Lane of a queued key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Periodic refreshes, retries, resyncs.
    Normal,
    /// Never-synced or changed objects, drift, force-sync.
    Urgent,
}

/// The pure queue state. Time is passed in by the caller.
#[derive(Debug)]
pub struct WorkQueue<K: Clone + Eq + Hash + Ord> {
    urgent: VecDeque<K>,
    normal: VecDeque<K>,
    /// Keys waiting in a lane, with the lane they are (effectively) in. A key promoted from
    /// `Normal` to `Urgent` stays in the normal deque as a stale entry, skipped on pop.
    queued: HashMap<K, Priority>,
    delayed: BTreeSet<(Instant, u64, K)>,
    delayed_at: HashMap<K, (Instant, u64, Priority)>,
    running: HashMap<K, Option<Priority>>,
    seq: u64,
    shut: bool,
}

impl<K: Clone + Eq + Hash + Ord> Default for WorkQueue<K> {
    fn default() -> Self {
        WorkQueue {
            urgent: VecDeque::new(),
            normal: VecDeque::new(),
            queued: HashMap::new(),
            delayed: BTreeSet::new(),
            delayed_at: HashMap::new(),
            running: HashMap::new(),
            seq: 0,
            shut: false,
        }
    }
}

impl<K: Clone + Eq + Hash + Ord> WorkQueue<K> {
    /// Makes `key` due now. A key being processed is marked dirty and re-queued when done;
    /// a queued key keeps its place (or is promoted to the urgent lane).
    pub fn add(&mut self, key: K, prio: Priority) {
        if let Some(dirty) = self.running.get_mut(&key) {
            *dirty = Some(dirty.map_or(prio, |p| p.max(prio)));
            return;
        }
        self.cancel_delayed(&key);
        match self.queued.get(&key).copied() {
            Some(p) if p >= prio => {}
            Some(_) => {
                // Promotion: the normal-lane entry becomes stale.
                self.queued.insert(key.clone(), prio);
                self.urgent.push_back(key);
            }
            None => {
                self.queued.insert(key.clone(), prio);
                match prio {
                    Priority::Urgent => self.urgent.push_back(key),
                    Priority::Normal => self.normal.push_back(key),
                }
            }
        }
    }

    /// Makes `key` due at `at` unless it is already due or scheduled earlier. A key being
    /// processed gets its schedule recorded for after it is done.
    /// Returns whether `key` is now the earliest scheduled one (a sleeping consumer must
    /// wake sooner than it planned).
    pub fn add_at(&mut self, key: K, at: Instant, prio: Priority) -> bool {
        if self.queued.contains_key(&key) {
            return false;
        }
        if let Some(&(cur, _, _)) = self.delayed_at.get(&key)
            && cur <= at
        {
            return false;
        }
        self.cancel_delayed(&key);
        self.seq += 1;
        let seq = self.seq;
        self.delayed.insert((at, seq, key.clone()));
        self.delayed_at.insert(key, (at, seq, prio));
        self.delayed.first().is_some_and(|(_, s, _)| *s == seq)
    }

    /// Forgets any schedule for `key` (e.g. the object was deleted).
    pub fn forget(&mut self, key: &K) {
        self.cancel_delayed(key);
    }

    fn cancel_delayed(&mut self, key: &K) {
        if let Some((at, seq, _)) = self.delayed_at.remove(key) {
            self.delayed.remove(&(at, seq, key.clone()));
        }
    }

    fn promote_due(&mut self, now: Instant) {
        while let Some((at, _, _)) = self.delayed.first() {
            if *at > now {
                break;
            }
            let Some((_, _, key)) = self.delayed.pop_first() else {
                break;
            };
            if let Some((_, _, prio)) = self.delayed_at.remove(&key) {
                self.add(key, prio);
            }
        }
    }

    /// Takes the next due key (urgent lane first) and marks it running.
    pub fn pop(&mut self, now: Instant) -> Option<K> {
        if self.shut {
            return None;
        }
        self.promote_due(now);
        let key = loop {
            if let Some(k) = self.urgent.pop_front() {
                if self.queued.get(&k) == Some(&Priority::Urgent) {
                    break k;
                }
                continue;
            }
            let k = self.normal.pop_front()?;
            if self.queued.get(&k) == Some(&Priority::Normal) {
                break k;
            }
        };
        self.queued.remove(&key);
        self.running.insert(key.clone(), None);
        Some(key)
    }

    /// Marks `key` finished; if it changed while running it is queued again (and `true` is
    /// returned).
    pub fn done(&mut self, key: &K) -> bool {
        match self.running.remove(key) {
            Some(Some(prio)) => {
                self.add(key.clone(), prio);
                true
            }
            _ => false,
        }
    }

    /// When the earliest delayed key comes due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.delayed.first().map(|(at, _, _)| *at)
    }

    /// Keys waiting now (both lanes).
    pub fn len_ready(&self) -> usize {
        self.queued.len()
    }

    /// Stops handing out keys.
    pub fn shutdown(&mut self) {
        self.shut = true;
    }
}

/// How late a scheduled key may be handed out. The consumer sleeps until the earliest
/// deadline plus this, so the refreshes coming due within it cost one timer wake-up
/// instead of one each: 10,000 bindings refreshing every minute come due about 170 times
/// a second, and waking for each one (timer, epoll, context switch) took about a fifth
/// of the operator's CPU in a profile of that steady state. Keys added to be due now (new objects, drift, events) are
/// not delayed: [`Queue::add`] wakes the consumer at once.
pub const TIMER_SLACK: Duration = Duration::from_millis(50);

/// Thread-safe queue shared by event handlers (producers) and one dispatcher (consumer).
pub struct Queue<K: Clone + Eq + Hash + Ord> {
    inner: Mutex<WorkQueue<K>>,
    notify: Notify,
}

impl<K: Clone + Eq + Hash + Ord> Default for Queue<K> {
    fn default() -> Self {
        Queue {
            inner: Mutex::new(WorkQueue::default()),
            notify: Notify::new(),
        }
    }
}

impl<K: Clone + Eq + Hash + Ord> Queue<K> {
    fn lock(&self) -> std::sync::MutexGuard<'_, WorkQueue<K>> {
        // Every mutation is a few collection operations that leave the state consistent
        // even if a panic interrupted a caller, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// See [`WorkQueue::add`].
    pub fn add(&self, key: K, prio: Priority) {
        self.lock().add(key, prio);
        self.notify.notify_one();
    }

    /// See [`WorkQueue::add_at`]; `after` from now. The consumer is woken only when this
    /// is the new earliest deadline: otherwise it already sleeps until an earlier one (most
    /// calls, since a refresh reschedules its binding a whole interval ahead).
    pub fn add_after(&self, key: K, after: Duration, prio: Priority) {
        if self.lock().add_at(key, Instant::now() + after, prio) {
            self.notify.notify_one();
        }
    }

    /// See [`WorkQueue::forget`].
    pub fn forget(&self, key: &K) {
        self.lock().forget(key);
    }

    /// See [`WorkQueue::done`].
    pub fn done(&self, key: &K) {
        if self.lock().done(key) {
            self.notify.notify_one();
        }
    }

    /// Stops handing out keys and wakes the consumer.
    pub fn shutdown(&self) {
        self.lock().shutdown();
        self.notify.notify_one();
    }

    /// Waits for the next due key; `None` once shut down. Scheduled keys are handed out
    /// up to [`TIMER_SLACK`] late, several per wake-up.
    pub async fn next(&self) -> Option<K> {
        loop {
            let deadline = {
                let mut q = self.lock();
                if q.shut {
                    return None;
                }
                if let Some(k) = q.pop(Instant::now()) {
                    return Some(k);
                }
                q.next_deadline()
            };
            match deadline {
                Some(at) => {
                    tokio::select! {
                        _ = self.notify.notified() => {}
                        _ = tokio::time::sleep_until(at + TIMER_SLACK) => {}
                    }
                }
                None => self.notify.notified().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(q: &mut WorkQueue<u32>, now: Instant) -> Vec<u32> {
        let mut out = vec![];
        while let Some(k) = q.pop(now) {
            q.done(&k);
            out.push(k);
        }
        out
    }

    #[test]
    fn urgent_overtakes_ten_thousand_due_refreshes() {
        let mut q = WorkQueue::default();
        let now = Instant::now();
        for k in 0..10_000 {
            q.add_at(k, now, Priority::Normal);
        }
        q.add(99_999, Priority::Urgent);
        assert_eq!(q.pop(now), Some(99_999));
        assert_eq!(q.pop(now), Some(0));
        // A new binding arriving mid-way still goes next.
        q.add(77_777, Priority::Urgent);
        assert_eq!(q.pop(now), Some(77_777));
    }

    #[test]
    fn dedup_and_promotion() {
        let mut q = WorkQueue::default();
        let now = Instant::now();
        q.add(1, Priority::Normal);
        q.add(2, Priority::Normal);
        q.add(1, Priority::Normal);
        q.add(2, Priority::Urgent);
        assert_eq!(q.len_ready(), 2);
        assert_eq!(drain(&mut q, now), vec![2, 1]);
    }

    #[test]
    fn dirty_while_running_requeues_once() {
        let mut q = WorkQueue::default();
        let now = Instant::now();
        q.add(1, Priority::Normal);
        assert_eq!(q.pop(now), Some(1));
        q.add(1, Priority::Normal);
        q.add(1, Priority::Urgent);
        // Not handed out twice concurrently.
        assert_eq!(q.pop(now), None);
        q.done(&1);
        assert_eq!(q.pop(now), Some(1));
        q.done(&1);
        assert_eq!(q.pop(now), None);
    }

    #[test]
    fn delayed_keys_keep_the_earliest_time() {
        let mut q = WorkQueue::default();
        let now = Instant::now();
        let s = Duration::from_secs(1);
        q.add_at(1, now + 10 * s, Priority::Normal);
        q.add_at(1, now + 5 * s, Priority::Normal);
        q.add_at(1, now + 20 * s, Priority::Normal);
        assert_eq!(q.next_deadline(), Some(now + 5 * s));
        assert_eq!(q.pop(now + 4 * s), None);
        assert_eq!(q.pop(now + 5 * s), Some(1));
        q.done(&1);
        assert_eq!(q.next_deadline(), None);
        // Adding now cancels a pending schedule.
        q.add_at(2, now + 5 * s, Priority::Normal);
        q.add(2, Priority::Urgent);
        assert_eq!(q.next_deadline(), None);
        q.forget(&2);
        assert_eq!(q.pop(now), Some(2));
    }

    #[test]
    fn shutdown_stops_handing_out() {
        let mut q = WorkQueue::default();
        q.add(1, Priority::Urgent);
        q.shutdown();
        assert_eq!(q.pop(Instant::now()), None);
    }

    #[test]
    fn only_a_new_earliest_deadline_needs_a_wake_up() {
        let mut q = WorkQueue::default();
        let now = Instant::now();
        let s = Duration::from_secs(1);
        assert!(q.add_at(1, now + 10 * s, Priority::Normal));
        // Later than what the consumer sleeps on: no need to wake it.
        assert!(!q.add_at(2, now + 20 * s, Priority::Normal));
        assert!(q.add_at(3, now + 5 * s, Priority::Normal));
        // Moving a key earlier, past the earliest.
        assert!(q.add_at(2, now + s, Priority::Normal));
        // Not moved at all (a later schedule never replaces an earlier one).
        assert!(!q.add_at(2, now + 30 * s, Priority::Normal));
        // A finished key is queued again only if it changed while running.
        q.add(4, Priority::Normal);
        assert_eq!(q.pop(now), Some(4));
        assert!(!q.done(&4));
        q.add(5, Priority::Normal);
        assert_eq!(q.pop(now), Some(5));
        q.add(5, Priority::Urgent);
        assert!(q.done(&5));
    }

    #[tokio::test]
    async fn a_sleeping_consumer_wakes_for_an_earlier_key() {
        let q = std::sync::Arc::new(Queue::default());
        q.add_after(1u32, Duration::from_secs(600), Priority::Normal);
        let consumer = tokio::spawn({
            let q = q.clone();
            async move { q.next().await }
        });
        // The test runtime has one thread: this lets the consumer go to sleep on the
        // 600 s deadline before an earlier key is scheduled.
        tokio::task::yield_now().await;
        q.add_after(2, Duration::from_millis(20), Priority::Normal);
        let got = tokio::time::timeout(Duration::from_secs(5), consumer).await;
        assert_eq!(got.ok().and_then(|r| r.ok()).flatten(), Some(2));
    }

    #[tokio::test]
    async fn async_queue_wakes_on_deadline() {
        let q = Queue::default();
        q.add_after(5u32, Duration::from_millis(30), Priority::Normal);
        let got = tokio::time::timeout(Duration::from_secs(2), q.next()).await;
        assert_eq!(got.ok().flatten(), Some(5));
    }
}
