//! Reads: `GetParameter` for one key (optionally at a version or label), and
//! `GetParameters` (10 names a call) as the batch call of the shared batching
//! (`crate::aws::batch`).

use std::collections::HashMap;

use aws_sdk_ssm::config::http::HttpResponse;
use aws_sdk_ssm::error::SdkError;
use aws_sdk_ssm::operation::get_parameters::{GetParametersError, GetParametersOutput};
use aws_sdk_ssm::types::Parameter;

use super::ParameterStoreBackend;
use crate::aws::batch::{BatchFailure, BatchRead, Denial, ReadResult, read_failed};
use crate::aws::error::map_sdk_error;
use crate::{BackendError, ReadRequest, Reason, SecretValue};

/// `GetParameters` accepts at most this many names per call.
const BATCH_LIMIT: usize = 10;
/// Longest parameter label SSM accepts.
const MAX_LABEL_LEN: usize = 100;

/// A `version` pin: a version number or a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pin<'a> {
    Version(&'a str),
    Label(&'a str),
}

/// Parses a `version` pin. Digits are a version number; anything else must be a label SSM
/// could have attached (letters, digits, `.`, `-`, `_`; not starting with a digit, `aws`
/// or `ssm`), so a typo is a configuration error instead of a silent "not found".
fn parse_pin(version: Option<&str>) -> Result<Option<Pin<'_>>, BackendError> {
    let Some(v) = version.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if v.chars().all(|c| c.is_ascii_digit()) {
        return Ok(Some(Pin::Version(v)));
    }
    let lower = v.to_ascii_lowercase();
    let valid_label = v.len() <= MAX_LABEL_LEN
        && !v.starts_with(|c: char| c.is_ascii_digit())
        && !lower.starts_with("aws")
        && !lower.starts_with("ssm")
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if valid_label {
        Ok(Some(Pin::Label(v)))
    } else {
        Err(BackendError::invalid_config(format!(
            "version {v:?} is neither a Parameter Store version number nor a valid label \
             (letters, digits, '.', '-', '_'; not starting with a digit, \"aws\" or \"ssm\")"
        )))
    }
}

/// The `Name` argument SSM reads `name` at `pin` with (`name:3`, `name:label`).
fn selector(name: &str, pin: Option<Pin<'_>>) -> String {
    match pin {
        None => name.to_string(),
        Some(Pin::Version(v) | Pin::Label(v)) => format!("{name}:{v}"),
    }
}

/// How a read names its parameter in errors.
fn describe(name: &str, pin: Option<Pin<'_>>) -> String {
    match pin {
        None => format!("SSM parameter {name:?}"),
        Some(Pin::Version(v)) => format!("SSM parameter {name:?} (version {v})"),
        Some(Pin::Label(l)) => format!("SSM parameter {name:?} (label {l})"),
    }
}

/// SSM stores a one-level name the same with or without its leading `/` (`/db` is `db`)
/// and answers with its own spelling: compare names in this form.
fn normalized(name: &str) -> &str {
    match name.strip_prefix('/') {
        Some(rest) if !rest.contains('/') => rest,
        _ => name,
    }
}

fn parameter_value(p: Parameter, name: &str) -> ReadResult {
    p.value
        .map(SecretValue::from_string)
        .ok_or_else(|| no_value(name))
}

fn no_value(name: &str) -> BackendError {
    BackendError::new(
        Reason::SecretNotFound,
        format!("SSM parameter {name:?} has no value"),
    )
}

impl BatchRead for ParameterStoreBackend {
    const BATCH_OPERATION: &'static str = "GetParameters";
    // Pinned reads are not batched: GetParameters does accept selectors, but an answer is
    // matched to its request by name, and two pins of one name would collide.
    const BATCH_LIMIT: usize = BATCH_LIMIT;
    const SHORT_NAME: &'static str = "SSM";

    /// One `GetParameter` with decryption.
    async fn read_one(&self, req: &ReadRequest) -> ReadResult {
        let name = self.name(&req.key);
        let pin = parse_pin(req.version.as_deref())
            .map_err(|e| e.context(format!("SSM parameter {name:?}")))?;
        let what = describe(&name, pin);
        tracing::debug!(
            backend = "aws",
            operation = "GetParameter",
            key = %req.key,
            version = req.version.as_deref().unwrap_or(""),
            "reading parameter"
        );
        let out = self
            .client
            .get_parameter()
            .name(selector(&name, pin))
            .with_decryption(true)
            .send()
            .await;
        match out {
            Ok(out) => match out.parameter {
                Some(p) => parameter_value(p, &name),
                None => Err(no_value(&name)),
            },
            Err(e) => Err(read_failed(&e, "GetParameter", &what, req)),
        }
    }

    async fn batch_call(&self, names: &[String]) -> Result<Vec<Option<ReadResult>>, BatchFailure> {
        match self.get_parameters(names).await {
            Ok(out) => Ok(batch_results(names, out)),
            Err(e) => {
                let what = format!("{} SSM parameters", names.len());
                let error = map_sdk_error(&e, "GetParameters", &what);
                // SSM refuses the whole call when the policy lacks ssm:GetParameters or
                // denies one of the names: single reads tell the two apart, key by key.
                // (Rejected credentials fail the single reads too, and leave batching on.)
                let denial = if error.reason == Reason::AccessDenied {
                    Denial::Unclear
                } else {
                    Denial::None
                };
                Err(BatchFailure { error, denial })
            }
        }
    }
}

impl ParameterStoreBackend {
    async fn get_parameters(
        &self,
        names: &[String],
    ) -> Result<GetParametersOutput, SdkError<GetParametersError, HttpResponse>> {
        self.client
            .get_parameters()
            .set_names(Some(names.to_vec()))
            .with_decryption(true)
            .send()
            .await
    }
}

/// Matches a `GetParameters` answer to the requested `names`: a value, `SecretNotFound`
/// for a name listed as invalid, `None` for a name the answer does not mention.
fn batch_results(names: &[String], out: GetParametersOutput) -> Vec<Option<ReadResult>> {
    let mut found: HashMap<String, Parameter> = HashMap::new();
    for p in out.parameters.unwrap_or_default() {
        if let Some(n) = p.name.as_deref() {
            found.insert(normalized(n).to_string(), p);
        }
    }
    let invalid: Vec<String> = out.invalid_parameters.unwrap_or_default();
    names
        .iter()
        .map(|name| {
            if let Some(p) = found.remove(normalized(name)) {
                Some(parameter_value(p, name))
            } else if invalid.iter().any(|i| normalized(i) == normalized(name)) {
                Some(Err(BackendError::new(
                    Reason::SecretNotFound,
                    format!("SSM parameter {name:?} not found (GetParameters: invalid parameter)"),
                )))
            } else {
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_versions_or_labels() {
        assert_eq!(parse_pin(None).unwrap(), None);
        assert_eq!(parse_pin(Some("  ")).unwrap(), None);
        assert_eq!(parse_pin(Some("3")).unwrap(), Some(Pin::Version("3")));
        assert_eq!(parse_pin(Some(" 12 ")).unwrap(), Some(Pin::Version("12")));
        assert_eq!(parse_pin(Some("prod")).unwrap(), Some(Pin::Label("prod")));
        assert_eq!(
            parse_pin(Some("release-1.2_b")).unwrap(),
            Some(Pin::Label("release-1.2_b"))
        );
        for bad in ["3a", "aws-x", "SSMlabel", "with space", "a:b", "a/b"] {
            let err = parse_pin(Some(bad)).expect_err(bad);
            assert_eq!(err.reason, Reason::InvalidConfig, "{bad}");
        }
        assert!(parse_pin(Some(&"l".repeat(MAX_LABEL_LEN + 1))).is_err());
    }

    #[test]
    fn selectors_use_ssm_syntax() {
        assert_eq!(selector("/shop/db/password", None), "/shop/db/password");
        assert_eq!(
            selector("/shop/db/password", Some(Pin::Version("3"))),
            "/shop/db/password:3"
        );
        assert_eq!(selector("token", Some(Pin::Label("prod"))), "token:prod");
        assert_eq!(
            describe("/a", Some(Pin::Label("prod"))),
            "SSM parameter \"/a\" (label prod)"
        );
    }

    #[test]
    fn one_level_names_compare_without_the_slash() {
        assert_eq!(normalized("/db"), "db");
        assert_eq!(normalized("db"), "db");
        assert_eq!(normalized("/shop/db"), "/shop/db");
        assert_eq!(normalized("/"), "");
    }

    #[test]
    fn batch_answers_map_to_each_name() {
        let out = GetParametersOutput::builder()
            .parameters(Parameter::builder().name("/p/a").value("va").build())
            .parameters(Parameter::builder().name("one").value("v1").build())
            .invalid_parameters("/p/missing")
            .build();
        let names: Vec<String> = ["/p/a", "/p/missing", "/one", "/p/unmentioned"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let r = batch_results(&names, out);
        assert_eq!(
            r[0].as_ref().unwrap().as_ref().unwrap().as_str(),
            Some("va")
        );
        let missing = r[1].as_ref().unwrap().as_ref().unwrap_err();
        assert_eq!(missing.reason, Reason::SecretNotFound);
        assert!(missing.message.contains("/p/missing"), "{missing}");
        assert_eq!(
            r[2].as_ref().unwrap().as_ref().unwrap().as_str(),
            Some("v1")
        );
        assert!(r[3].is_none());
    }
}
