//! Whether the API server is reachable, as the watches see it. A watch that fails marks
//! it down; when every failed watch has reconnected it is up again and waiters are woken,
//! so work parked on API errors is retried at once instead of at the end of its backoff.

use std::collections::BTreeSet;
use std::sync::Mutex;

use tokio::sync::watch;

/// Shared view of API reachability.
pub struct ApiHealth {
    failing: Mutex<BTreeSet<String>>,
    /// Incremented each time the last failing watch recovers.
    recoveries: watch::Sender<u64>,
}

impl Default for ApiHealth {
    fn default() -> Self {
        ApiHealth {
            failing: Mutex::new(BTreeSet::new()),
            recoveries: watch::channel(0).0,
        }
    }
}

impl ApiHealth {
    fn failing(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        // Set insertions and removals only; a poisoned lock holds a usable set.
        self.failing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A watch (named `watch`) lost the API server.
    pub fn watch_failed(&self, watch: &str) {
        self.failing().insert(watch.to_owned());
    }

    /// A watch reconnected; when it was the last failing one, wakes the waiters.
    pub fn watch_recovered(&self, watch: &str) {
        let all_back = {
            let mut failing = self.failing();
            failing.remove(watch) && failing.is_empty()
        };
        if all_back {
            self.recoveries.send_modify(|n| *n += 1);
        }
    }

    /// Whether some watch currently cannot reach the API server: errors of API calls are
    /// then expected and reported by the watch once, not by every caller.
    pub fn is_down(&self) -> bool {
        !self.failing().is_empty()
    }

    /// A receiver that changes whenever the API server is back.
    pub fn recoveries(&self) -> watch::Receiver<u64> {
        self.recoveries.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_is_announced_when_the_last_watch_is_back() {
        let h = ApiHealth::default();
        let rx = h.recoveries();
        h.watch_failed("a");
        h.watch_failed("b");
        assert!(h.is_down());
        h.watch_recovered("a");
        assert!(h.is_down());
        assert!(!rx.has_changed().unwrap());
        h.watch_recovered("b");
        assert!(!h.is_down());
        assert!(rx.has_changed().unwrap());
        // A watch that never failed recovering announces nothing.
        let mut rx = h.recoveries();
        rx.borrow_and_update();
        h.watch_recovered("c");
        assert!(!rx.has_changed().unwrap());
    }
}
