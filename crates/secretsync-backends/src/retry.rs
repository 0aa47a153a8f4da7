//! Retry timing shared by the cache (per remote key) and the controller (per object):
//! exponential backoff with jitter. The functions take the random draw as an argument
//! (`r` in `[0, 1)`) so they stay pure; [`random_unit`] supplies it in production.

use std::time::Duration;

/// First retry delay after a failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(5);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Delay before retry number `attempt` (0 = first retry): `5s · 2^attempt`, capped at 5m,
/// scaled by a jitter factor in `[0.8, 1.2)` (and still capped) so things failing together
/// do not retry in lockstep.
pub fn backoff(attempt: u32, r: f64) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX));
    let base = exp.min(BACKOFF_MAX);
    base.mul_f64(0.8 + 0.4 * r.clamp(0.0, 1.0)).min(BACKOFF_MAX)
}

/// A uniform draw from `[0, 1)` taken from the OS random source. Jitter does not need a
/// CSPRNG, but the OS source is always there and avoids another dependency; if it fails
/// the midpoint (no jitter) is a safe answer.
pub fn random_unit() -> f64 {
    match getrandom::u64() {
        Ok(v) => unit_of(v),
        Err(_) => 0.5,
    }
}

/// `v` mapped uniformly onto `[0, 1)` (its top 53 bits, a double's precision).
pub fn unit_of(v: u64) -> f64 {
    (v >> 11) as f64 / (1u64 << 53) as f64
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
    fn random_unit_in_range() {
        for _ in 0..100 {
            let r = random_unit();
            assert!((0.0..1.0).contains(&r));
        }
    }
}
