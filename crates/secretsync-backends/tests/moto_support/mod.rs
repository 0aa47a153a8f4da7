//! Helpers for tests against the real moto server started by `scripts/test-servers.sh`
//! (`make test`). Include from a test file with `mod moto_support;`.
//!
//! - [`moto_endpoint`]: the server address; panics with instructions when unset, so tests
//!   never pass silently without a server.
//! - [`unique_prefix`]: a fresh secret-name prefix per test, so tests share one server.
//! - [`admin_client`]: an SDK client with dummy static credentials to create test data.
//! - [`MapCredentials`], [`static_keys_source`], [`fast_fail`]: backends under test with
//!   static keys from a credential Secret.
//! - [`MotoRequestCounter`]: counts the Secrets Manager requests moto received for a set of
//!   secret names (via moto's request recorder), e.g. to prove reads were coalesced;
//!   [`MotoRequestCounter::count_ssm`] does the same for Parameter Store requests.
//! - [`ssm_admin_client`], [`put_parameter`], [`label_version`]: Parameter Store test data.
//! - [`reset_auth`], [`iam_action`]: switch on moto's IAM checks on a server of the test's
//!   own (never the shared one) and create users and policies while they are still off.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;
use base64::Engine as _;
use secretsync_api::{AwsAuth, AwsSecretRef, AwsService, AwsSource};
use secretsync_backends::aws::AwsOptions;
use secretsync_backends::{
    Backend, BackendError, CredentialRef, Credentials, ReadRequest, Reason, SecretValue,
};
use secretsync_testkit::aws::emulator_config;
use secretsync_testkit::harness::free_port;
use secretsync_testkit::names::{required_env, unique};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Environment variable `scripts/test-servers.sh` exports with moto's address.
pub const MOTO_ENDPOINT_VAR: &str = "SECRETSYNC_TEST_MOTO_ENDPOINT";
/// Region every test uses.
pub const REGION: &str = "us-east-1";
/// The credential Secret of [`MapCredentials::keys`].
pub const CREDS_SECRET: &str = "aws-creds";
/// Dummy keys of [`admin_client`] (moto accepts any credentials).
pub const ADMIN_ACCESS_KEY_ID: &str = "AKIDSECRETSYNCADMIN";

/// moto's base URL, e.g. `http://127.0.0.1:41234`.
pub fn moto_endpoint() -> String {
    required_env(MOTO_ENDPOINT_VAR)
        .trim_end_matches('/')
        .to_string()
}

/// A secret-name prefix no other test (or test run) uses, ending in `/`.
pub fn unique_prefix(test: &str) -> String {
    format!("secretsync-test/{}/", unique(test))
}

/// A client for creating test data (static dummy credentials, [`REGION`]).
pub fn admin_client(endpoint: &str) -> Client {
    Client::new(&emulator_config(endpoint, REGION, ADMIN_ACCESS_KEY_ID))
}

/// A Parameter Store client for creating test data (same dummy credentials).
pub fn ssm_admin_client(endpoint: &str) -> aws_sdk_ssm::Client {
    aws_sdk_ssm::Client::new(&emulator_config(endpoint, REGION, ADMIN_ACCESS_KEY_ID))
}

/// `Credentials` answering from a map of (Secret name, key) → value.
#[derive(Default, Clone)]
pub struct MapCredentials(HashMap<(String, String), String>);

impl MapCredentials {
    pub fn with(mut self, name: &str, key: &str, value: &str) -> Self {
        self.0
            .insert((name.to_string(), key.to_string()), value.to_string());
        self
    }

    /// Static keys under [`CREDS_SECRET`] / `access-key-id`, `secret-access-key`.
    pub fn keys(access_key_id: &str, secret_access_key: &str) -> Self {
        MapCredentials::default()
            .with(CREDS_SECRET, "access-key-id", access_key_id)
            .with(CREDS_SECRET, "secret-access-key", secret_access_key)
    }
}

#[async_trait]
impl Credentials for MapCredentials {
    async fn secret_value(&self, at: CredentialRef<'_>) -> Result<SecretValue, BackendError> {
        let (name, key) = (at.name, at.key);
        self.0
            .get(&(name.to_string(), key.to_string()))
            .map(|v| SecretValue::from(v.as_str()))
            .ok_or_else(|| {
                BackendError::new(
                    Reason::SecretNotFound,
                    format!("Secret {name:?} has no key {key:?}"),
                )
            })
    }
}

/// The reference to the static keys of [`MapCredentials::keys`].
pub fn secret_ref() -> AwsSecretRef {
    AwsSecretRef {
        name: CREDS_SECRET.to_string(),
        namespace: None,
        access_key_id_key: "access-key-id".to_string(),
        secret_access_key_key: "secret-access-key".to_string(),
        session_token_key: None,
    }
}

/// A source of `service` at `endpoint` with static keys from [`MapCredentials::keys`].
pub fn static_keys_source(service: AwsService, endpoint: &str) -> AwsSource {
    AwsSource {
        service,
        region: REGION.to_string(),
        endpoint: Some(endpoint.to_string()),
        auth: Some(AwsAuth {
            secret_ref: Some(secret_ref()),
            role_arn: None,
        }),
        events: None,
    }
}

/// Options that give up quickly, for unreachable endpoints.
pub fn fast_fail() -> AwsOptions {
    AwsOptions {
        operation_timeout: Duration::from_secs(3),
        attempt_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_millis(500),
        max_attempts: 2,
        initial_backoff: Duration::from_millis(10),
    }
}

/// An address nothing listens on: a port that was free a moment ago.
pub fn closed_port_endpoint() -> String {
    format!("http://127.0.0.1:{}", free_port().expect("free port"))
}

/// Every call of `b` (a backend under `prefix` whose server cannot be reached) fails as
/// `BackendUnavailable`; a read names the remote name.
pub async fn assert_unavailable(b: &dyn Backend, prefix: &str) {
    let unavailable =
        |r: Option<&BackendError>| r.map(|e| e.reason) == Some(Reason::BackendUnavailable);
    let err = b.read(&ReadRequest::latest("k")).await.expect_err("read");
    assert!(unavailable(Some(&err)), "{err}");
    assert!(err.message.contains(&format!("{prefix}k")), "{err}");
    let list = b.list("").await;
    assert!(unavailable(list.as_ref().err()), "{list:?}");
    let validate = b.validate().await;
    assert!(unavailable(validate.as_ref().err()), "{validate:?}");
    let batch = b
        .read_batch(&[ReadRequest::latest("a"), ReadRequest::latest("b")])
        .await;
    assert!(
        batch.iter().all(|r| unavailable(r.as_ref().err())),
        "{batch:?}"
    );
}

pub fn text(v: &SecretValue) -> &str {
    v.as_str().expect("utf-8 value")
}

/// Attaches `label` to `version` of a parameter.
pub async fn label_version(client: &aws_sdk_ssm::Client, name: &str, version: i64, label: &str) {
    client
        .label_parameter_version()
        .name(name)
        .parameter_version(version)
        .labels(label)
        .send()
        .await
        .unwrap_or_else(|e| panic!("LabelParameterVersion {name}: {e:?}"));
}

/// Sets moto's IAM checks: the next `free_actions` requests are not checked, every later
/// one is. Global to the server: only for a server the test started itself.
pub async fn reset_auth(endpoint: &str, free_actions: u32) {
    let body = http_with_body(
        endpoint,
        "POST",
        "/moto-api/reset-auth",
        &[],
        &free_actions.to_string(),
    )
    .await;
    assert!(body.contains("ok"), "moto did not reset auth: {body:?}");
}

/// One IAM query-API action (`Action=...&Version=2010-05-08`), sent while moto's checks
/// are still off (the signature is not verified then; the credential scope routes it).
/// Returns the XML answer.
pub async fn iam_action(endpoint: &str, params: &[(&str, &str)]) -> String {
    let mut body: String = params
        .iter()
        .map(|(k, v)| format!("{k}={}", percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    body.push_str("&Version=2010-05-08");
    let headers = [
        (
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDSETUP/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0",
        ),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    http_with_body(endpoint, "POST", "/", &headers, &body).await
}

/// The text of the first `<tag>...</tag>` in `xml`.
pub fn xml_field(xml: &str, tag: &str) -> Option<String> {
    let start = xml.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(xml[start..end].to_string())
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Creates a string secret and returns its version id.
pub async fn create_string(client: &Client, name: &str, value: &str) -> String {
    created(client.create_secret().name(name).secret_string(value), name).await
}

/// Creates a binary secret and returns its version id.
pub async fn create_binary(client: &Client, name: &str, value: &[u8]) -> String {
    let blob = aws_sdk_secretsmanager::primitives::Blob::new(value.to_vec());
    created(client.create_secret().name(name).secret_binary(blob), name).await
}

async fn created(
    call: aws_sdk_secretsmanager::operation::create_secret::builders::CreateSecretFluentBuilder,
    name: &str,
) -> String {
    let out = call.send().await;
    let out = out.unwrap_or_else(|e| panic!("CreateSecret {name}: {e:?}"));
    out.version_id.expect("CreateSecret returns a version id")
}

/// Stores a new current string value (the old one becomes `AWSPREVIOUS`); returns its
/// version id.
pub async fn put_string(client: &Client, name: &str, value: &str) -> String {
    let call = client
        .put_secret_value()
        .secret_id(name)
        .secret_string(value);
    let out = call.send().await;
    let out = out.unwrap_or_else(|e| panic!("PutSecretValue {name}: {e:?}"));
    out.version_id.expect("PutSecretValue returns a version id")
}

/// One request moto recorded.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// `GetSecretValue`, `BatchGetSecretValue`, `AssumeRole`, ... (from `X-Amz-Target` for
    /// JSON APIs, from `Action=` for query APIs such as STS).
    pub operation: String,
    /// Request headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The decoded request body.
    pub body: String,
}

impl RecordedRequest {
    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The secret names a Secrets Manager request is about (`SecretId`, `SecretIdList`).
    pub fn secret_ids(&self) -> Vec<String> {
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&self.body) else {
            return Vec::new();
        };
        let mut ids: Vec<String> = Vec::new();
        if let Some(id) = json.get("SecretId").and_then(|v| v.as_str()) {
            ids.push(id.to_string());
        }
        if let Some(list) = json.get("SecretIdList").and_then(|v| v.as_array()) {
            ids.extend(list.iter().filter_map(|v| v.as_str()).map(str::to_string));
        }
        ids
    }

    /// The parameter names (selectors included) a Parameter Store request is about
    /// (`Name`, `Names`, `Path`).
    pub fn parameter_names(&self) -> Vec<String> {
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&self.body) else {
            return Vec::new();
        };
        let mut names: Vec<String> = Vec::new();
        for field in ["Name", "Path"] {
            if let Some(n) = json.get(field).and_then(|v| v.as_str()) {
                names.push(n.to_string());
            }
        }
        if let Some(list) = json.get("Names").and_then(|v| v.as_array()) {
            names.extend(list.iter().filter_map(|v| v.as_str()).map(str::to_string));
        }
        names
    }

    /// The access key id in the SigV4 `Authorization` header.
    pub fn access_key_id(&self) -> Option<String> {
        let auth = self.header("authorization")?;
        let cred = auth.split("Credential=").nth(1)?;
        cred.split('/').next().map(str::to_string)
    }

    /// A form field of a query-protocol body (STS), URL-decoded.
    pub fn form_field(&self, field: &str) -> Option<String> {
        form_urlencoded_pairs(&self.body)
            .into_iter()
            .find(|(k, _)| k == field)
            .map(|(_, v)| v)
    }
}

/// Counts requests moto received, using its request recorder
/// (`/moto-api/recorder/start-recording`, `/moto-api/recorder/download-recording`).
///
/// The recorder is global to the server and shared by tests running in parallel, so the
/// counter never resets it: it filters by secret-name prefix instead. Give each test its
/// own [`unique_prefix`] and count with it. Recording is only switched on by
/// [`MotoRequestCounter::start`]: requests sent before that are not counted.
pub struct MotoRequestCounter {
    endpoint: String,
}

impl MotoRequestCounter {
    /// Switches moto's recorder on (idempotent).
    pub async fn start(endpoint: &str) -> Self {
        let body = http(endpoint, "POST", "/moto-api/recorder/start-recording").await;
        assert!(
            body.contains("True"),
            "moto did not confirm recording: {body:?}"
        );
        MotoRequestCounter {
            endpoint: endpoint.to_string(),
        }
    }

    /// Every request recorded so far (all tests, all services).
    pub async fn requests(&self) -> Vec<RecordedRequest> {
        let text = http(
            &self.endpoint,
            "GET",
            "/moto-api/recorder/download-recording",
        )
        .await;
        // A line being written concurrently may be cut off: skip what does not parse.
        text.lines().filter_map(parse_recorded).collect()
    }

    /// Recorded requests of `operation` about at least one secret whose name starts with
    /// `name_prefix`.
    pub async fn matching(&self, operation: &str, name_prefix: &str) -> Vec<RecordedRequest> {
        self.requests()
            .await
            .into_iter()
            .filter(|r| r.operation == operation)
            .filter(|r| r.secret_ids().iter().any(|id| id.starts_with(name_prefix)))
            .collect()
    }

    /// How many `operation` requests (e.g. `GetSecretValue`, `BatchGetSecretValue`) moto
    /// received about secrets whose names start with `name_prefix`. A batch request counts
    /// once, however many of its ids match.
    pub async fn count(&self, operation: &str, name_prefix: &str) -> usize {
        self.matching(operation, name_prefix).await.len()
    }

    /// Recorded Parameter Store requests of `operation` (`GetParameter`, `GetParameters`,
    /// `GetParametersByPath`, ...) about at least one parameter or path starting with
    /// `name_prefix`.
    pub async fn matching_ssm(&self, operation: &str, name_prefix: &str) -> Vec<RecordedRequest> {
        self.requests()
            .await
            .into_iter()
            .filter(|r| r.operation == operation)
            .filter(|r| {
                r.headers
                    .iter()
                    .any(|(k, v)| k == "x-amz-target" && v.starts_with("AmazonSSM."))
            })
            .filter(|r| {
                r.parameter_names()
                    .iter()
                    .any(|n| n.starts_with(name_prefix))
            })
            .collect()
    }

    /// How many Parameter Store `operation` requests moto received about parameters
    /// starting with `name_prefix`; a `GetParameters` call counts once.
    pub async fn count_ssm(&self, operation: &str, name_prefix: &str) -> usize {
        self.matching_ssm(operation, name_prefix).await.len()
    }

    /// `GetSecretValue` plus `BatchGetSecretValue` requests about `name_prefix`: every
    /// backend round trip that reads values.
    pub async fn count_reads(&self, name_prefix: &str) -> usize {
        let reqs = self.requests().await;
        reqs.iter()
            .filter(|r| r.operation == "GetSecretValue" || r.operation == "BatchGetSecretValue")
            .filter(|r| r.secret_ids().iter().any(|id| id.starts_with(name_prefix)))
            .count()
    }
}

fn parse_recorded(line: &str) -> Option<RecordedRequest> {
    let json: serde_json::Value = serde_json::from_str(line).ok()?;
    let headers: Vec<(String, String)> = json
        .get("headers")
        .and_then(|h| h.as_object())
        .map(|h| {
            h.iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    let raw = json.get("body").and_then(|b| b.as_str()).unwrap_or("");
    let body = if json.get("body_encoded").and_then(|b| b.as_bool()) == Some(true) {
        let bytes = base64::engine::general_purpose::STANDARD.decode(raw).ok()?;
        String::from_utf8_lossy(&bytes).into_owned()
    } else {
        raw.to_string()
    };
    let target = headers
        .iter()
        .find(|(k, _)| k == "x-amz-target")
        .map(|(_, v)| v.clone());
    let operation = match target {
        // `secretsmanager.GetSecretValue`
        Some(t) => t.rsplit('.').next().unwrap_or("").to_string(),
        None => form_urlencoded_pairs(&body)
            .into_iter()
            .find(|(k, _)| k == "Action")
            .map(|(_, v)| v)
            .unwrap_or_default(),
    };
    Some(RecordedRequest {
        operation,
        headers,
        body,
    })
}

fn form_urlencoded_pairs(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A minimal HTTP/1.1 request to moto's management API (no extra client dependency).
async fn http(endpoint: &str, method: &str, path: &str) -> String {
    http_with_body(endpoint, method, path, &[], "").await
}

/// [`http`] with extra headers and a body.
async fn http_with_body(
    endpoint: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> String {
    let authority = endpoint
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("moto endpoint {endpoint:?} is not http://HOST:PORT"))
        .trim_end_matches('/');
    let mut stream = TcpStream::connect(authority)
        .await
        .unwrap_or_else(|e| panic!("connecting to moto at {authority}: {e}"));
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("writing to moto");
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .await
        .expect("reading from moto");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("malformed HTTP response from moto: {text:?}"));
    let status_ok = head
        .lines()
        .next()
        .is_some_and(|l| l.split_whitespace().nth(1) == Some("200"));
    assert!(status_ok, "moto {method} {path} failed: {head}");
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size =
            usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].strip_prefix("\r\n").unwrap_or(&rest[size..]);
    }
    out
}
