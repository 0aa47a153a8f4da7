//! Kubernetes-style durations (`30s`, `5m`, `1h30m`, `250ms`, `0`).

use std::time::Duration;

/// Regular expression (also used in the CRD's CEL rules) accepted by [`parse_duration`].
pub const DURATION_PATTERN: &str = r"^(0|([0-9]+(ms|s|m|h))+)$";

/// A duration string that does not follow the Kubernetes style.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: expected e.g. 30s, 5m, 1h30m or 0")]
pub struct DurationError {
    /// The rejected input.
    pub input: String,
}

/// Parses a Kubernetes-style duration made of `<number><unit>` groups (`h`, `m`, `s`, `ms`),
/// or a bare `0`.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let err = || DurationError {
        input: input.to_string(),
    };
    let s = input;
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(err());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else {
            return Err(err());
        };
        rest = &rest[len..];
        let part = unit.checked_mul(u32::try_from(n).map_err(|_| err())?);
        total = part.and_then(|p| total.checked_add(p)).ok_or_else(err)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_style() {
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1h0m5s").unwrap(), Duration::from_secs(3605));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "s", "5", "1d", "-5s", "1.5h", "5m ", "h1", "1hh"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
