//! Change notices of AWS sources (`spec.aws.events.sqsQueueUrl`): the SQS queue an
//! EventBridge rule fills, and the pure reading of its messages.
//!
//! A message is an EventBridge event, either as EventBridge delivers it to SQS or wrapped
//! in an SNS notification. Secrets Manager changes arrive as CloudTrail API calls
//! (`PutSecretValue`, `UpdateSecretVersionStage`, …) or service events
//! (`RotationSucceeded`); Parameter Store ones as `Parameter Store Change`. Nothing of a
//! message body reaches an error: a body that does not parse is reported by what was
//! missing, never quoted.

use std::time::Duration;

use aws_sdk_sqs::Client;
use secretsync_api::{AwsService, AwsSource};
use serde_json::Value;

use super::AwsOptions;
use super::error::map_sdk_error;
use crate::{BackendError, Credentials};

/// Secrets Manager API calls that change what a read returns.
const SECRETS_MANAGER_CHANGES: &[&str] = &[
    "PutSecretValue",
    "UpdateSecret",
    "RotateSecret",
    "UpdateSecretVersionStage",
    "DeleteSecret",
    "RestoreSecret",
    "RotationSucceeded",
];

/// What one queue message says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// These remote names (full names, before the source's prefix is removed) changed in
    /// `service`. A Secrets Manager ARN is given both as the ARN and as the secret name.
    Changed {
        /// The service the event came from.
        service: AwsService,
        /// Changed names, deduplicated.
        names: Vec<String>,
    },
    /// A well-formed event that changes no value (a read, a tag edit, another service).
    Unrelated,
}

/// Why a message could not be read, without any of its text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed change event: {0}")]
pub struct Malformed(pub &'static str);

/// Reads one message body.
pub fn parse_notice(body: &str) -> Result<Notice, Malformed> {
    let v: Value = serde_json::from_str(body).map_err(|_| Malformed("body is not JSON"))?;
    let event = unwrap_sns(v)?;
    let source = event
        .get("source")
        .and_then(Value::as_str)
        .ok_or(Malformed("no \"source\" field"))?;
    let detail_type = event
        .get("detail-type")
        .and_then(Value::as_str)
        .ok_or(Malformed("no \"detail-type\" field"))?;
    let detail = event
        .get("detail")
        .filter(|d| d.is_object())
        .ok_or(Malformed("no \"detail\" object"))?;
    match source {
        "aws.secretsmanager" => secrets_manager(detail),
        "aws.ssm" if detail_type == "Parameter Store Change" => parameter_store(detail),
        _ => Ok(Notice::Unrelated),
    }
}

/// An SNS notification carries the event as a JSON string in `Message`.
fn unwrap_sns(v: Value) -> Result<Value, Malformed> {
    if v.get("Type").and_then(Value::as_str) != Some("Notification") {
        return Ok(v);
    }
    let inner = v
        .get("Message")
        .and_then(Value::as_str)
        .ok_or(Malformed("SNS notification without a \"Message\" string"))?;
    serde_json::from_str(inner).map_err(|_| Malformed("SNS \"Message\" is not JSON"))
}

fn secrets_manager(detail: &Value) -> Result<Notice, Malformed> {
    let Some(name) = detail.get("eventName").and_then(Value::as_str) else {
        return Err(Malformed(
            "Secrets Manager event without \"detail.eventName\"",
        ));
    };
    if !SECRETS_MANAGER_CHANGES.contains(&name) {
        return Ok(Notice::Unrelated);
    }
    let at = |path: &[&str]| -> Option<&str> {
        path.iter()
            .try_fold(detail, |v, k| v.get(*k))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let ids = [
        at(&["requestParameters", "secretId"]),
        at(&["responseElements", "arn"]),
        at(&["responseElements", "name"]),
        at(&["additionalEventData", "SecretId"]),
    ];
    let mut names = Vec::new();
    for id in ids.into_iter().flatten() {
        push_unique(&mut names, id);
        if let Some(n) = name_of_arn(id) {
            push_unique(&mut names, n);
        }
    }
    if names.is_empty() {
        return Err(Malformed("Secrets Manager event names no secret"));
    }
    Ok(Notice::Changed {
        service: AwsService::SecretsManager,
        names,
    })
}

fn parameter_store(detail: &Value) -> Result<Notice, Malformed> {
    let name = detail
        .get("name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(Malformed("Parameter Store Change without \"detail.name\""))?;
    Ok(Notice::Changed {
        service: AwsService::ParameterStore,
        names: vec![name.to_string()],
    })
}

fn push_unique(names: &mut Vec<String>, n: &str) {
    if !names.iter().any(|x| x == n) {
        names.push(n.to_string());
    }
}

/// The secret name in a Secrets Manager ARN
/// (`arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-AbCdEf`): AWS appends a dash and six
/// random characters to the name, which are dropped.
pub fn name_of_arn(arn: &str) -> Option<&str> {
    let rest = arn.strip_prefix("arn:")?;
    let (_, after) = rest.split_once(":secret:")?;
    let (name, suffix) = after.rsplit_once('-')?;
    (suffix.len() == 6 && suffix.chars().all(|c| c.is_ascii_alphanumeric()) && !name.is_empty())
        .then_some(name)
}

/// One received message: its body and the handle that deletes it.
pub struct QueueMessage {
    /// The body (an event: no secret values, but not logged either).
    pub body: String,
    /// The receipt handle for [`EventQueue::delete`].
    pub receipt: String,
}

impl std::fmt::Debug for QueueMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueMessage")
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// An SQS queue of change events, read with the source's region, endpoint and
/// credentials.
pub struct EventQueue {
    client: Client,
    url: String,
    wait: Duration,
    visibility: Duration,
}

/// Longest SQS long poll.
pub const LONG_POLL: Duration = Duration::from_secs(20);

impl EventQueue {
    /// The queue `spec.events.sqsQueueUrl` names, long-polling for `wait` (at most 20 s)
    /// and hiding received messages for `visibility` while they are handled. Makes no
    /// network call.
    pub async fn connect(
        spec: &AwsSource,
        credentials: &dyn Credentials,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Self, BackendError> {
        let url = match spec.events.as_ref().map(|e| e.sqs_queue_url.trim()) {
            Some(u) if !u.is_empty() => u.to_string(),
            _ => {
                return Err(BackendError::invalid_config(
                    "spec.aws.events.sqsQueueUrl is empty",
                ));
            }
        };
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(BackendError::invalid_config(format!(
                "spec.aws.events.sqsQueueUrl {url:?} is not an http(s) URL"
            )));
        }
        let wait = wait.min(LONG_POLL);
        // A long poll must fit in one attempt.
        let options = AwsOptions {
            operation_timeout: wait + Duration::from_secs(15),
            attempt_timeout: wait + Duration::from_secs(10),
            ..AwsOptions::default()
        };
        // An endpoint under an AWS domain is the service's VPC endpoint, not SQS's: the
        // queue is reached through SQS's own endpoint for the region. Any other host (an
        // emulator) serves SQS too.
        let spec = match spec.endpoint.as_deref() {
            Some(e) if super::client::is_aws_hosted(e) => &AwsSource {
                endpoint: None,
                ..spec.clone()
            },
            _ => spec,
        };
        let config = super::client::load_config(spec, credentials, &options).await?;
        Ok(EventQueue {
            client: Client::new(&config),
            url,
            wait,
            visibility,
        })
    }

    /// The queue URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// One long poll: up to ten messages, or none when the wait ends first.
    pub async fn receive(&self) -> Result<Vec<QueueMessage>, BackendError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(10)
            .wait_time_seconds(self.wait.as_secs() as i32)
            .visibility_timeout(self.visibility.as_secs().min(43_200) as i32)
            .send()
            .await
            .map_err(|e| map_sdk_error(&e, "ReceiveMessage", "the change queue"))?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                Some(QueueMessage {
                    receipt: m.receipt_handle?,
                    body: m.body.unwrap_or_default(),
                })
            })
            .collect())
    }

    /// Deletes a handled message.
    pub async fn delete(&self, receipt: &str) -> Result<(), BackendError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| map_sdk_error(&e, "DeleteMessage", "a change event"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cloudtrail(event_name: &str, request: Value, response: Value) -> String {
        json!({
            "version": "0",
            "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
            "detail-type": "AWS API Call via CloudTrail",
            "source": "aws.secretsmanager",
            "account": "123456789012",
            "region": "eu-west-1",
            "detail": {
                "eventSource": "secretsmanager.amazonaws.com",
                "eventName": event_name,
                "requestParameters": request,
                "responseElements": response,
            }
        })
        .to_string()
    }

    fn changed(names: &[&str]) -> Notice {
        Notice::Changed {
            service: AwsService::SecretsManager,
            names: names.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn secrets_manager_calls_name_the_secret() {
        for call in [
            "PutSecretValue",
            "UpdateSecret",
            "RotateSecret",
            "UpdateSecretVersionStage",
            "DeleteSecret",
        ] {
            let body = cloudtrail(call, json!({"secretId": "shop/db"}), Value::Null);
            assert_eq!(parse_notice(&body), Ok(changed(&["shop/db"])), "{call}");
        }
    }

    #[test]
    fn an_arn_gives_the_name_too() {
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:shop/db-AbC123";
        let body = cloudtrail(
            "PutSecretValue",
            json!({"secretId": arn}),
            json!({"arn": arn, "versionId": "v2"}),
        );
        assert_eq!(parse_notice(&body), Ok(changed(&[arn, "shop/db"])));
        assert_eq!(
            name_of_arn("arn:aws:secretsmanager:r:1:secret:a-b-cdefgh"),
            Some("a-b")
        );
        assert_eq!(
            name_of_arn("arn:aws:secretsmanager:r:1:secret:short-abc"),
            None
        );
        assert_eq!(name_of_arn("shop/db-AbC123"), None);
    }

    #[test]
    fn rotation_service_events_count() {
        let body = json!({
            "source": "aws.secretsmanager",
            "detail-type": "AWS Service Event via CloudTrail",
            "detail": {"eventName": "RotationSucceeded", "additionalEventData": {"SecretId": "shop/db"}}
        })
        .to_string();
        assert_eq!(parse_notice(&body), Ok(changed(&["shop/db"])));
    }

    #[test]
    fn reads_and_other_services_are_unrelated() {
        let read = cloudtrail(
            "GetSecretValue",
            json!({"secretId": "shop/db"}),
            Value::Null,
        );
        assert_eq!(parse_notice(&read), Ok(Notice::Unrelated));
        let ec2 = json!({"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification", "detail": {}}).to_string();
        assert_eq!(parse_notice(&ec2), Ok(Notice::Unrelated));
    }

    #[test]
    fn parameter_store_changes() {
        let body = json!({
            "source": "aws.ssm",
            "detail-type": "Parameter Store Change",
            "detail": {"operation": "Update", "name": "/shop/db/password", "type": "SecureString"}
        })
        .to_string();
        assert_eq!(
            parse_notice(&body),
            Ok(Notice::Changed {
                service: AwsService::ParameterStore,
                names: vec!["/shop/db/password".into()],
            })
        );
    }

    #[test]
    fn sns_wrapped_events_are_unwrapped() {
        let inner = cloudtrail(
            "PutSecretValue",
            json!({"secretId": "shop/db"}),
            Value::Null,
        );
        let body = json!({"Type": "Notification", "MessageId": "1", "Message": inner}).to_string();
        assert_eq!(parse_notice(&body), Ok(changed(&["shop/db"])));
    }

    #[test]
    fn malformed_bodies_are_named_not_quoted() {
        let cases = [
            "hunter2-not-json",
            r#"{"detail-type": "x", "detail": {}}"#,
            r#"{"source": "aws.secretsmanager", "detail": {}}"#,
            r#"{"source": "aws.secretsmanager", "detail-type": "x"}"#,
            r#"{"source": "aws.secretsmanager", "detail-type": "x", "detail": {"requestParameters": {}}}"#,
            r#"{"source": "aws.secretsmanager", "detail-type": "x", "detail": {"eventName": "PutSecretValue", "requestParameters": {"secretString": "hunter2"}}}"#,
            r#"{"source": "aws.ssm", "detail-type": "Parameter Store Change", "detail": {"operation": "Update"}}"#,
            r#"{"Type": "Notification", "Message": "hunter2"}"#,
        ];
        for body in cases {
            let err = parse_notice(body).expect_err(body);
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn a_message_debug_shows_no_body() {
        let m = QueueMessage {
            body: "hunter2".into(),
            receipt: "r".into(),
        };
        assert!(!format!("{m:?}").contains("hunter2"));
    }
}
