//! Retry and refresh timing: exponential backoff with jitter, and jittered refreshes.
//!
//! The functions take the random draw as an argument (`r` in `[0, 1)`) so they stay pure
//! and testable; [`random_unit`] supplies it in production.

use std::time::Duration;

/// First retry delay after a failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(5);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Delay before retry number `attempt` (0 = first retry): `5s · 2^attempt`, capped at 5m,
/// scaled by a jitter factor in `[0.8, 1.2)` (and still capped) so bindings failing together
/// do not retry in lockstep.
pub fn backoff(attempt: u32, r: f64) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX));
    let base = exp.min(BACKOFF_MAX);
    base.mul_f64(0.8 + 0.4 * r.clamp(0.0, 1.0)).min(BACKOFF_MAX)
}

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

/// A uniform draw from `[0, 1)` taken from the OS random source. Jitter does not need a
/// CSPRNG, but the OS source is always there and avoids another dependency; if it fails
/// the midpoint (no jitter) is a safe answer.
pub fn random_unit() -> f64 {
    match getrandom::u64() {
        Ok(v) => (v >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(0, 0.5), Duration::from_secs(5));
        assert_eq!(backoff(1, 0.5), Duration::from_secs(10));
        assert_eq!(backoff(3, 0.5), Duration::from_secs(40));
        assert_eq!(backoff(10, 0.5), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX, 0.99), BACKOFF_MAX);
        assert_eq!(backoff(0, 0.0), Duration::from_secs(4));
        assert!(backoff(0, 0.999) < Duration::from_secs(6));
        assert!(backoff(0, 0.999) > Duration::from_millis(5900));
    }

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

    #[test]
    fn random_unit_in_range() {
        for _ in 0..100 {
            let r = random_unit();
            assert!((0.0..1.0).contains(&r));
        }
    }
}
