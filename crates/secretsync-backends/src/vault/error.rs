//! Mapping of vaultrs / rustify errors to the error taxonomy, and request traces.
//!
//! Only variants, status codes and Vault's own `errors` strings are used: some rustify
//! variants carry the raw response body, which for a KV read is the secret itself.

use std::time::Instant;

use tracing::debug;
use vaultrs::error::ClientError;

use crate::{BackendError, Reason};

/// Vault error strings are short; anything longer is cut so a status stays readable.
const MAX_ERROR_DETAIL: usize = 300;

/// What a request was doing, for error mapping and traces.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Read,
    List,
    Login,
    Validate,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::List => "list",
            Op::Login => "login",
            Op::Validate => "validate",
        }
    }
}

fn status_code(err: &ClientError) -> Option<u16> {
    match err {
        ClientError::APIError { code, .. } => Some(*code),
        ClientError::RestClientError {
            source: rustify::errors::ClientError::ServerResponseError { code, .. },
        } => Some(*code),
        _ => None,
    }
}

pub(super) fn is_denied(err: &ClientError) -> bool {
    matches!(status_code(err), Some(401 | 403))
}

pub(super) fn trace_request<T>(
    op: Op,
    key: &str,
    result: &Result<T, ClientError>,
    started: Instant,
) {
    let status = match result {
        Ok(_) => "ok".to_string(),
        Err(err) => match status_code(err) {
            Some(code) => code.to_string(),
            None => "error".to_string(),
        },
    };
    debug!(
        backend = "vault",
        operation = op.as_str(),
        key = %key,
        status = %status,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "vault request"
    );
}

/// Maps a vaultrs error to the taxonomy. `what` names the key/path being accessed.
pub(super) fn map_error(err: &ClientError, op: Op, what: &str) -> BackendError {
    use rustify::errors::ClientError as Rest;
    match err {
        ClientError::APIError { code, errors } => from_status(*code, errors, op, what),
        ClientError::RestClientError { source } => match source {
            Rest::ServerResponseError { code, .. } => from_status(*code, &[], op, what),
            Rest::RequestError { source, .. } => {
                let inner: &(dyn std::error::Error + 'static) = source.as_ref();
                let kind = match inner.downcast_ref::<reqwest::Error>() {
                    Some(e) if e.is_timeout() => "timed out",
                    Some(e) if e.is_connect() => "connection failed",
                    _ => "request failed",
                };
                BackendError::unavailable(format!(
                    "{what}: cannot reach Vault: {kind}: {}",
                    error_chain(inner)
                ))
            }
            Rest::ResponseError { .. } => {
                BackendError::unavailable(format!("{what}: reading the response failed"))
            }
            // The raw body sits in these variants; it is never shown.
            Rest::ResponseParseError { .. } | Rest::ResponseConversionError { .. } => {
                BackendError::unavailable(format!("{what}: unexpected response from Vault"))
            }
            // Request-building failures; their Display texts are static.
            other => BackendError::invalid_config(format!("{what}: {other}")),
        },
        ClientError::ResponseEmptyError | ClientError::ResponseDataEmptyError => match op {
            Op::Read | Op::List => {
                BackendError::new(Reason::SecretNotFound, format!("{what}: no data"))
            }
            _ => BackendError::unavailable(format!("{what}: empty response from Vault")),
        },
        // vaultrs's own Display texts carry no response content.
        other => BackendError::unavailable(format!("{what}: {other}")),
    }
}

fn from_status(code: u16, errors: &[String], op: Op, what: &str) -> BackendError {
    let detail = vault_errors(errors);
    match code {
        404 => match op {
            Op::Read | Op::List => {
                BackendError::new(Reason::SecretNotFound, format!("{what} not found"))
            }
            _ => BackendError::invalid_config(format!(
                "{what}: not found (HTTP 404; is the auth method mounted there?){detail}"
            )),
        },
        401 | 403 => {
            BackendError::access_denied(format!("{what}: permission denied (HTTP {code}){detail}"))
        }
        // Vault answers 400 to a wrong role ID / secret ID / JWT.
        400 if op == Op::Login => {
            BackendError::access_denied(format!("{what}: login refused (HTTP 400){detail}"))
        }
        // 503 = sealed or standby without an active node; 412 = replication lag.
        412 | 429 | 500..=599 => {
            BackendError::unavailable(format!("{what}: Vault answered HTTP {code}{detail}"))
        }
        _ => BackendError::invalid_config(format!("{what}: Vault answered HTTP {code}{detail}")),
    }
}

/// Vault's `errors` strings, whitespace-collapsed and bounded. They describe the failure
/// ("permission denied", "Vault is sealed"); read and login requests carry no values Vault
/// could echo.
fn vault_errors(errors: &[String]) -> String {
    let mut text = errors
        .iter()
        .map(|e| {
            e.split_whitespace()
                .filter(|w| *w != "*")
                .collect::<Vec<_>>()
                .join(" ")
        })
        .map(|e| {
            e.strip_prefix("1 error occurred: ")
                .map(str::to_string)
                .unwrap_or(e)
        })
        .filter(|e| !e.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    if text.is_empty() {
        return text;
    }
    if text.len() > MAX_ERROR_DETAIL {
        let mut cut = MAX_ERROR_DETAIL;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    format!(" (vault: {text})")
}

/// An error and its causes, joined; repeated texts are dropped. Used for transport errors
/// only (connection refused, TLS failures), which carry no response content.
pub(super) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_errors_are_cleaned() {
        let errs = vec!["1 error occurred:\n\t* permission denied\n\n".to_string()];
        assert_eq!(vault_errors(&errs), " (vault: permission denied)");
        assert_eq!(vault_errors(&[]), "");
        let long = vec!["é".repeat(400)];
        assert!(vault_errors(&long).len() < 2 * MAX_ERROR_DETAIL);
    }

    #[test]
    fn status_mapping() {
        let r = |code, op| from_status(code, &[], op, "k").reason;
        assert_eq!(r(404, Op::Read), Reason::SecretNotFound);
        assert_eq!(r(404, Op::Login), Reason::InvalidConfig);
        assert_eq!(r(403, Op::Read), Reason::AccessDenied);
        assert_eq!(r(401, Op::Validate), Reason::AccessDenied);
        assert_eq!(r(400, Op::Login), Reason::AccessDenied);
        assert_eq!(r(400, Op::Read), Reason::InvalidConfig);
        assert_eq!(r(503, Op::Read), Reason::BackendUnavailable);
        assert_eq!(r(429, Op::List), Reason::BackendUnavailable);
    }
}
