//! Names and settings tests share: a fresh name per call, and the environment variables
//! `scripts/test-servers.sh` exports.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A name no other test (or earlier run against the same servers) uses: `TAG-PID-TIME-N`.
pub fn unique(tag: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{tag}-{}-{:x}-{}",
        std::process::id(),
        nanos & 0xffff_ffff,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// An environment variable a test needs; panics with instructions when unset, so tests
/// never pass silently without their servers.
pub fn required_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().to_owned(),
        _ => panic!(
            "{name} is not set: run the tests with `make test` (or under \
             `scripts/test-servers.sh`, which starts OpenBao and moto and exports it)"
        ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn unique_names_differ() {
        assert_ne!(super::unique("a"), super::unique("a"));
    }
}
