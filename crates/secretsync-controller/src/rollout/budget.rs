//! The cluster-wide restart budget (`--max-restarts-per-minute`): at most N restarts in
//! any 60 s window; restarts over it wait in the order they were first asked for, and none
//! is dropped. Pure: time is passed in.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// The window the budget counts restarts in.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Restarts granted in the last window and the workloads waiting for one.
#[derive(Debug)]
pub struct Budget<K: Ord + Clone + std::hash::Hash + Eq> {
    per_window: usize,
    granted: VecDeque<Instant>,
    /// Waiting workloads by (first asked, sequence): the order they are granted in.
    waiting: BTreeSet<(Instant, u64, K)>,
    asked: HashMap<K, (Instant, u64)>,
    seq: u64,
}

/// The answer to a request for a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Restart now.
    Now,
    /// Ask again at this instant. `first` is true the first time this workload waits (the
    /// moment for a `RolloutDelayed` event).
    Wait {
        /// When to ask again.
        until: Instant,
        /// Whether this is the first refusal for the workload.
        first: bool,
    },
}

impl<K: Ord + Clone + std::hash::Hash + Eq> Default for Budget<K> {
    /// Unlimited.
    fn default() -> Self {
        Self::new(0)
    }
}

impl<K: Ord + Clone + std::hash::Hash + Eq> Budget<K> {
    /// A budget of `per_window` restarts a minute; 0 = unlimited.
    pub fn new(per_window: usize) -> Self {
        Budget {
            per_window,
            granted: VecDeque::new(),
            waiting: BTreeSet::new(),
            asked: HashMap::new(),
            seq: 0,
        }
    }

    /// Asks for a restart of `key` at `now`. Granted only when the window has room and no
    /// workload that asked earlier is still waiting.
    pub fn ask(&mut self, key: &K, now: Instant) -> Grant {
        if self.per_window == 0 {
            return Grant::Now;
        }
        while self
            .granted
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            self.granted.pop_front();
        }
        let first = !self.asked.contains_key(key);
        let (at, seq) = *self.asked.entry(key.clone()).or_insert_with(|| {
            self.seq += 1;
            (now, self.seq)
        });
        self.waiting.insert((at, seq, key.clone()));
        let head = self.waiting.iter().next().map(|(_, _, k)| k);
        if self.granted.len() < self.per_window && head == Some(key) {
            self.waiting.remove(&(at, seq, key.clone()));
            self.asked.remove(key);
            self.granted.push_back(now);
            return Grant::Now;
        }
        // The window frees a slot when its oldest restart turns 60 s old; a workload behind
        // others asks again then too and waits its turn.
        let until = match self.granted.front() {
            Some(oldest) if self.granted.len() >= self.per_window => *oldest + WINDOW,
            _ => now + Duration::from_millis(200),
        };
        Grant::Wait { until, first }
    }

    /// A waiting workload no longer needs its restart (it was deleted, or its revision
    /// was recorded another way).
    pub fn forget(&mut self, key: &K) {
        if let Some((at, seq)) = self.asked.remove(key) {
            self.waiting.remove(&(at, seq, key.clone()));
        }
    }

    /// Workloads waiting for a restart.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_grants_everything() {
        let mut b = Budget::new(0);
        let now = Instant::now();
        for i in 0..100 {
            assert_eq!(b.ask(&i, now), Grant::Now);
        }
        assert_eq!(b.waiting(), 0);
    }

    #[test]
    fn never_more_than_the_budget_in_any_window_and_in_order() {
        let mut b = Budget::new(5);
        let t0 = Instant::now();
        let mut granted: Vec<(u32, Instant)> = Vec::new();
        let mut now = t0;
        let mut pending: Vec<u32> = (0..12).collect();
        // Everyone asks at t0 (in order), then again whenever told to.
        let mut next: HashMap<u32, Instant> = pending.iter().map(|k| (*k, t0)).collect();
        while !pending.is_empty() {
            let at = pending.iter().map(|k| next[k]).min().unwrap();
            now = now.max(at);
            for k in pending.clone() {
                if next[&k] <= now {
                    match b.ask(&k, now) {
                        Grant::Now => {
                            granted.push((k, now));
                            pending.retain(|p| *p != k);
                        }
                        Grant::Wait { until, .. } => {
                            assert!(until > now);
                            next.insert(k, until);
                        }
                    }
                }
            }
        }
        assert_eq!(
            granted.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            (0..12).collect::<Vec<_>>(),
            "granted in the order asked, each once"
        );
        for (i, (_, t)) in granted.iter().enumerate() {
            let in_window = granted
                .iter()
                .filter(|(_, u)| *u >= *t && u.duration_since(*t) < WINDOW)
                .count();
            assert!(in_window <= 5, "restart {i}: {in_window} within 60 s");
        }
        assert_eq!(granted[5].1.duration_since(t0), WINDOW);
        assert_eq!(b.waiting(), 0);
    }

    #[test]
    fn the_first_refusal_is_flagged_once_and_forgetting_frees_the_line() {
        let mut b = Budget::new(1);
        let now = Instant::now();
        assert_eq!(b.ask(&"a", now), Grant::Now);
        assert!(matches!(b.ask(&"b", now), Grant::Wait { first: true, .. }));
        assert!(matches!(b.ask(&"b", now), Grant::Wait { first: false, .. }));
        assert!(matches!(b.ask(&"c", now), Grant::Wait { first: true, .. }));
        assert_eq!(b.waiting(), 2);
        b.forget(&"b");
        assert_eq!(
            b.ask(&"c", now + WINDOW),
            Grant::Now,
            "c is first in line now"
        );
    }
}
