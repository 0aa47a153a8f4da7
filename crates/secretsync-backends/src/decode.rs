//! Base64 decoding for `decodingStrategy` and the `b64decode` template function.
//!
//! Both alphabets accept values with or without padding: stores and tools disagree on
//! padding, and whether it is there says nothing about what the value means. Explicit
//! strategies also skip ASCII whitespace, since wrapped base64 (76 columns, PEM style) is
//! common; `Auto` does not, so a plain value with spaces is never taken for base64.

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use secretsync_api::DecodingStrategy;
use zeroize::Zeroizing;

use crate::SecretValue;

const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

/// A value that is not what its decoding strategy says. It carries nothing of the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the value is not valid {}", alphabet_name(*.0))]
pub struct NotBase64(pub DecodingStrategy);

fn alphabet_name(s: DecodingStrategy) -> &'static str {
    match s {
        DecodingStrategy::Base64Url => "URL-safe base64",
        _ => "base64",
    }
}

/// Standard base64, whitespace skipped (the `b64decode` template function).
pub fn base64_standard(input: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    decode_with(&STANDARD, input, true)
}

fn decode_with(
    engine: &GeneralPurpose,
    input: &[u8],
    skip_whitespace: bool,
) -> Option<Zeroizing<Vec<u8>>> {
    let compact: Zeroizing<Vec<u8>>;
    let input = if skip_whitespace && input.iter().any(u8::is_ascii_whitespace) {
        compact = Zeroizing::new(
            input
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect(),
        );
        compact.as_slice()
    } else {
        input
    };
    let mut out = Zeroizing::new(Vec::new());
    engine.decode_vec(input, &mut out).ok()?;
    Some(out)
}

/// Decodes `value` as `strategy` says. `None` and an `Auto` value that is not base64 come
/// back unchanged.
pub fn decode(strategy: DecodingStrategy, value: &SecretValue) -> Result<SecretValue, NotBase64> {
    let bytes = value.as_bytes();
    let decoded = match strategy {
        DecodingStrategy::None => return Ok(value.clone()),
        DecodingStrategy::Base64 => decode_with(&STANDARD, bytes, true),
        DecodingStrategy::Base64Url => decode_with(&URL_SAFE, bytes, true),
        DecodingStrategy::Auto => {
            match decode_with(&STANDARD, bytes, false)
                .or_else(|| decode_with(&URL_SAFE, bytes, false))
            {
                Some(d) => Some(d),
                None => return Ok(value.clone()),
            }
        }
    };
    decoded
        .map(|d| SecretValue::new(d.to_vec()))
        .ok_or(NotBase64(strategy))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(s: DecodingStrategy, v: &[u8]) -> Result<Vec<u8>, NotBase64> {
        decode(s, &SecretValue::new(v.to_vec())).map(|d| d.as_bytes().to_vec())
    }

    #[test]
    fn none_keeps_the_value() {
        assert_eq!(run(DecodingStrategy::None, b"aGk=").unwrap(), b"aGk=");
        assert_eq!(run(DecodingStrategy::None, &[0xff]).unwrap(), [0xff]);
    }

    #[test]
    fn base64_with_or_without_padding_and_line_breaks() {
        assert_eq!(run(DecodingStrategy::Base64, b"aGk=").unwrap(), b"hi");
        assert_eq!(run(DecodingStrategy::Base64, b"aGk").unwrap(), b"hi");
        assert_eq!(
            run(DecodingStrategy::Base64, b"aGVs\nbG8=\n").unwrap(),
            b"hello"
        );
        // Binary output is kept byte for byte.
        assert_eq!(
            run(DecodingStrategy::Base64, b"/wA+").unwrap(),
            [0xff, 0x00, 0x3e]
        );
        // URL-safe characters are not standard base64.
        assert_eq!(
            run(DecodingStrategy::Base64, b"_wA-"),
            Err(NotBase64(DecodingStrategy::Base64))
        );
        assert!(run(DecodingStrategy::Base64, b"not base64!").is_err());
    }

    #[test]
    fn base64url() {
        assert_eq!(
            run(DecodingStrategy::Base64Url, b"_wA-").unwrap(),
            [0xff, 0x00, 0x3e]
        );
        assert_eq!(run(DecodingStrategy::Base64Url, b"aGk").unwrap(), b"hi");
        let e = run(DecodingStrategy::Base64Url, b"/wA+").unwrap_err();
        assert_eq!(e.to_string(), "the value is not valid URL-safe base64");
    }

    #[test]
    fn auto_decodes_what_decodes_and_keeps_the_rest() {
        assert_eq!(run(DecodingStrategy::Auto, b"aGk=").unwrap(), b"hi");
        assert_eq!(
            run(DecodingStrategy::Auto, b"_wA-").unwrap(),
            [0xff, 0x00, 0x3e]
        );
        assert_eq!(
            run(DecodingStrategy::Auto, b"postgres://u:p@db").unwrap(),
            b"postgres://u:p@db"
        );
        // Spaces make a value plain text for Auto.
        assert_eq!(
            run(DecodingStrategy::Auto, b"aGVs bG8=").unwrap(),
            b"aGVs bG8="
        );
        // A wrong length is not base64 either.
        assert_eq!(run(DecodingStrategy::Auto, b"abcde").unwrap(), b"abcde");
    }

    #[test]
    fn errors_carry_nothing_of_the_value() {
        let e = run(DecodingStrategy::Base64, b"CANARY-value!").unwrap_err();
        assert!(!format!("{e} {e:?}").contains("CANARY"));
    }
}
