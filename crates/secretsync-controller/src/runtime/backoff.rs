//! Retry and refresh timing: exponential backoff with jitter, and jittered refreshes.
//!
//! The functions take the random draw as an argument (`r` in `[0, 1)`) so they stay pure
//! and testable; [`random_unit`] supplies it in production.

use std::time::Duration;

pub use secretsync_backends::retry::{BACKOFF_BASE, BACKOFF_MAX, backoff, random_unit};

/// First pause before a failed watch retries.
pub const WATCH_RETRY_BASE: Duration = Duration::from_millis(250);
/// Longest pause between watch retries: an API server that comes back is seen within a
/// few seconds, and a dead one costs one cheap request per watch this often.
pub const WATCH_RETRY_MAX: Duration = Duration::from_secs(3);

/// Pause before watch retry number `attempt` (0 = first): `250ms · 2^attempt`, capped at
/// 3s, scaled by a jitter factor in `[0.75, 1.25)` so the watches of many operators (and
/// of one operator) do not reconnect in lockstep.
pub fn watch_retry(attempt: u32, r: f64) -> Duration {
    let exp =
        WATCH_RETRY_BASE.saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX));
    exp.min(WATCH_RETRY_MAX)
        .mul_f64(0.75 + 0.5 * r.clamp(0.0, 1.0))
}

/// `interval` scaled by a factor in `[0.9, 1.1)`: refreshes of bindings created together
/// spread out instead of polling together.
pub fn jittered(interval: Duration, r: f64) -> Duration {
    interval.mul_f64(0.9 + 0.2 * r.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_retries_stay_within_a_few_seconds() {
        assert_eq!(watch_retry(0, 0.5), Duration::from_millis(250));
        assert_eq!(watch_retry(2, 0.5), Duration::from_secs(1));
        assert_eq!(watch_retry(4, 0.5), WATCH_RETRY_MAX);
        assert_eq!(watch_retry(u32::MAX, 0.5), WATCH_RETRY_MAX);
        assert!(watch_retry(30, 0.999) < Duration::from_millis(3750));
        assert!(watch_retry(30, 0.0) >= Duration::from_millis(2250));
    }

    #[test]
    fn refresh_jitter_is_ten_percent() {
        let h = Duration::from_secs(3600);
        assert_eq!(jittered(h, 0.0), Duration::from_secs(3240));
        assert_eq!(jittered(h, 0.5), h);
        assert!(jittered(h, 0.9999) < Duration::from_secs(3960));
    }
}
