//! Mapping of SDK failures to the error taxonomy.
//!
//! Only the service's error code and message, the HTTP status and the kind of transport
//! failure are used: never the SDK's Debug output, which can be long and carry request
//! data, nor a response body that did not parse.

use std::error::Error as StdError;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::{ConnectorError, ProvideErrorMetadata, SdkError};

use crate::{BackendError, Reason};

/// Longest upstream text (service message, connection error) copied into an error.
const MAX_DETAIL: usize = 300;

/// Maps an SDK failure of `op` (the API operation) on `what` to the taxonomy.
pub(super) fn map_sdk_error<E>(
    err: &SdkError<E, HttpResponse>,
    op: &str,
    what: &str,
) -> BackendError
where
    E: ProvideErrorMetadata + StdError + 'static,
{
    match err {
        SdkError::ServiceError(se) => service_error(
            op,
            what,
            se.err().code().unwrap_or(""),
            se.err().message().unwrap_or(""),
            Some(se.raw().status().as_u16()),
        ),
        SdkError::TimeoutError(_) => {
            BackendError::unavailable(format!("{op} of {what}: timed out"))
        }
        SdkError::DispatchFailure(df) => {
            if let Some(ce) = find_source::<CredentialsError>(err) {
                return credentials_error(ce, op, what);
            }
            let chain = df
                .as_connector_error()
                .map(|c| error_chain(c))
                .unwrap_or_default();
            if df.is_user() {
                BackendError::invalid_config(format!("{op} of {what}: request rejected: {chain}"))
            } else if df.is_timeout() {
                BackendError::unavailable(format!("{op} of {what}: connection timed out: {chain}"))
            } else if df.is_io() {
                BackendError::unavailable(format!("{op} of {what}: connection failed: {chain}"))
            } else {
                BackendError::unavailable(format!("{op} of {what}: request failed: {chain}"))
            }
        }
        // The body did not parse; its text may hold secret data, so only the status is
        // reported. A refusal stays a refusal (moto, for one, answers IAM denials of JSON
        // APIs with an XML body the SDK cannot read).
        SdkError::ResponseError(re) => {
            let status = re.raw().status().as_u16();
            let message = format!("{op} of {what}: unexpected response from AWS (HTTP {status})");
            match status {
                401 | 403 => BackendError::access_denied(message),
                _ => BackendError::unavailable(message),
            }
        }
        SdkError::ConstructionFailure(_) => BackendError::invalid_config(format!(
            "{op} of {what}: request could not be built: {}",
            error_chain(err)
        )),
        _ => BackendError::unavailable(format!("{op} of {what}: request failed")),
    }
}

/// Credential resolution failed before anything reached the service.
fn credentials_error(ce: &CredentialsError, op: &str, what: &str) -> BackendError {
    let chain = error_chain(ce);
    let transport = find_source::<ConnectorError>(ce);
    match ce {
        CredentialsError::CredentialsNotLoaded(_) => BackendError::invalid_config(format!(
            "{op} of {what}: no AWS credentials found (set spec.aws.auth.secretRef or give the operator IRSA / pod identity): {chain}"
        )),
        CredentialsError::InvalidConfiguration(_) => BackendError::invalid_config(format!(
            "{op} of {what}: invalid AWS credential configuration: {chain}"
        )),
        CredentialsError::ProviderTimedOut(_) => BackendError::unavailable(format!(
            "{op} of {what}: loading AWS credentials timed out: {chain}"
        )),
        // AssumeRole and web-identity exchanges: a transport problem is transient, a
        // refusal is not.
        CredentialsError::ProviderError(_) if transport.is_none() => BackendError::access_denied(
            format!("{op} of {what}: loading AWS credentials failed: {chain}"),
        ),
        _ => BackendError::unavailable(format!(
            "{op} of {what}: loading AWS credentials failed: {chain}"
        )),
    }
}

/// Builds the error for a service error code (also used for per-secret batch errors).
pub(super) fn service_error(
    op: &str,
    what: &str,
    code: &str,
    message: &str,
    status: Option<u16>,
) -> BackendError {
    let reason = classify(code, message, status);
    let message = clip(message);
    let code = if code.is_empty() {
        status.map_or_else(|| "error".to_string(), |s| format!("HTTP {s}"))
    } else {
        code.to_string()
    };
    if reason == Reason::SecretNotFound {
        BackendError::new(reason, format!("{what} not found ({code}: {message})"))
    } else {
        BackendError::new(reason, format!("{op} of {what}: {code}: {message}"))
    }
}

fn classify(code: &str, message: &str, status: Option<u16>) -> Reason {
    match code {
        // Parameter Store: an unknown name, or a version or label the parameter lacks.
        "ResourceNotFoundException" | "ParameterNotFound" | "ParameterVersionNotFound" => {
            Reason::SecretNotFound
        }
        // A secret scheduled for deletion can no longer be read: to a binding it is gone.
        // (AWS says "marked for deletion", moto "marked deleted".)
        "InvalidRequestException"
            if message.contains("marked for deletion") || message.contains("marked deleted") =>
        {
            Reason::SecretNotFound
        }
        "AccessDeniedException"
        | "AccessDenied"
        | "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "InvalidSignatureException"
        | "SignatureDoesNotMatch"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "MissingAuthenticationTokenException"
        | "ExpiredToken"
        | "ExpiredTokenException"
        | "RequestExpired"
        | "DecryptionFailure"
        | "KMSAccessDeniedException"
        // A SecureString whose KMS key is disabled, deleted or not usable by the caller:
        // the value cannot be decrypted, as with a KMS refusal.
        | "InvalidKeyId" => Reason::AccessDenied,
        "ThrottlingException"
        | "Throttling"
        | "TooManyRequestsException"
        | "RequestLimitExceeded"
        | "InternalServiceError"
        | "InternalServerError"
        | "InternalFailure"
        | "ServiceUnavailable"
        | "ServiceUnavailableException"
        | "RequestTimeout"
        | "RequestTimeoutException" => Reason::BackendUnavailable,
        "InvalidParameterException"
        | "InvalidRequestException"
        | "InvalidNextTokenException"
        | "InvalidNextToken"
        | "InvalidFilterKey"
        | "InvalidFilterOption"
        | "InvalidFilterValue"
        | "ValidationException"
        | "ValidationError" => Reason::InvalidConfig,
        _ => match status {
            Some(401 | 403) => Reason::AccessDenied,
            Some(404) => Reason::SecretNotFound,
            Some(429) => Reason::BackendUnavailable,
            Some(400..=499) => Reason::InvalidConfig,
            _ => Reason::BackendUnavailable,
        },
    }
}

/// The first error of type `T` in `err`'s source chain (`err` included).
fn find_source<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        cur = e.source();
    }
    None
}

/// `Display` of an error and its sources, joined and clipped. Used only for errors that
/// cannot carry secret data (transport, credential and request-building failures).
fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        let text = e.to_string();
        // Wrappers often repeat their source's text; keep each piece once.
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = e.source();
    }
    clip(&parts.join(": "))
}

/// Upstream text made single-line (whitespace runs collapsed) and short.
fn clip(text: &str) -> String {
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect();
    let joined = words.join(" ");
    let mut out: String = joined.chars().take(MAX_DETAIL).collect();
    if joined.chars().count() > MAX_DETAIL {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_codes() {
        assert_eq!(
            classify("ResourceNotFoundException", "", Some(400)),
            Reason::SecretNotFound
        );
        assert_eq!(
            classify("UnrecognizedClientException", "", Some(400)),
            Reason::AccessDenied
        );
        assert_eq!(
            classify("DecryptionFailure", "", Some(400)),
            Reason::AccessDenied
        );
        assert_eq!(
            classify("ThrottlingException", "", Some(400)),
            Reason::BackendUnavailable
        );
        assert_eq!(
            classify("InvalidParameterException", "", Some(400)),
            Reason::InvalidConfig
        );
        assert_eq!(
            classify(
                "InvalidRequestException",
                "You can't perform this operation on the secret because it was marked for deletion.",
                Some(400)
            ),
            Reason::SecretNotFound
        );
        assert_eq!(classify("", "", Some(503)), Reason::BackendUnavailable);
        // Parameter Store codes.
        for code in ["ParameterNotFound", "ParameterVersionNotFound"] {
            assert_eq!(
                classify(code, "", Some(400)),
                Reason::SecretNotFound,
                "{code}"
            );
        }
        assert_eq!(
            classify("AccessDeniedException", "", Some(400)),
            Reason::AccessDenied
        );
        assert_eq!(
            classify("InvalidKeyId", "", Some(400)),
            Reason::AccessDenied
        );
        assert_eq!(
            classify("InternalServerError", "", Some(500)),
            Reason::BackendUnavailable
        );
        assert_eq!(
            classify("InvalidNextToken", "", Some(400)),
            Reason::InvalidConfig
        );
        assert_eq!(
            classify("InvalidFilterKey", "", Some(400)),
            Reason::InvalidConfig
        );
        assert_eq!(classify("Weird", "", Some(403)), Reason::AccessDenied);
        assert_eq!(classify("Weird", "", None), Reason::BackendUnavailable);
    }

    #[test]
    fn clip_is_single_line_and_short() {
        assert_eq!(clip("You tried to \n      perform"), "You tried to perform");
        let long = format!("a\nb{}", "x".repeat(1000));
        let c = clip(&long);
        assert!(!c.contains('\n'));
        assert!(c.chars().count() <= MAX_DETAIL + 1);
    }
}
