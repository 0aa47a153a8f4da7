//! Helpers for tests against the real moto server started by `scripts/test-servers.sh`
//! (`make test`). Include from a test file with `mod moto_support;`.
//!
//! - [`moto_endpoint`]: the server address; panics with instructions when unset, so tests
//!   never pass silently without a server.
//! - [`unique_prefix`]: a fresh secret-name prefix per test, so tests share one server.
//! - [`admin_client`]: an SDK client with dummy static credentials to create test data.
//! - [`MotoRequestCounter`]: counts the Secrets Manager requests moto received for a set of
//!   secret names (via moto's request recorder), e.g. to prove reads were coalesced;
//!   [`MotoRequestCounter::count_ssm`] does the same for Parameter Store requests.
//! - [`ssm_admin_client`], [`put_parameter`], [`label_version`]: Parameter Store test data.
//! - [`reset_auth`], [`iam_action`]: switch on moto's IAM checks on a server of the test's
//!   own (never the shared one) and create users and policies while they are still off.
#![allow(dead_code)]

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
use base64::Engine as _;
use secretsync_testkit::names::{required_env, unique};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Environment variable `scripts/test-servers.sh` exports with moto's address.
pub const MOTO_ENDPOINT_VAR: &str = "SECRETSYNC_TEST_MOTO_ENDPOINT";
/// Region every test uses.
pub const REGION: &str = "us-east-1";
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
    let conf = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(
            ADMIN_ACCESS_KEY_ID,
            "admin-secret-key",
            None,
            None,
            "secretsync-tests",
        ))
        .build();
    Client::from_conf(conf)
}

/// A Parameter Store client for creating test data (same dummy credentials).
pub fn ssm_admin_client(endpoint: &str) -> aws_sdk_ssm::Client {
    let conf = aws_sdk_ssm::Config::builder()
        .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
        .region(aws_sdk_ssm::config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_ssm::config::Credentials::new(
            ADMIN_ACCESS_KEY_ID,
            "admin-secret-key",
            None,
            None,
            "secretsync-tests",
        ))
        .build();
    aws_sdk_ssm::Client::from_conf(conf)
}

/// Creates or overwrites a parameter and returns its new version.
pub async fn put_parameter(
    client: &aws_sdk_ssm::Client,
    name: &str,
    kind: aws_sdk_ssm::types::ParameterType,
    value: &str,
) -> i64 {
    client
        .put_parameter()
        .name(name)
        .r#type(kind)
        .value(value)
        .overwrite(true)
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutParameter {name}: {e:?}"))
        .version
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
    let out = client
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateSecret {name}: {e:?}"));
    out.version_id.expect("CreateSecret returns a version id")
}

/// Creates a binary secret and returns its version id.
pub async fn create_binary(client: &Client, name: &str, value: &[u8]) -> String {
    let out = client
        .create_secret()
        .name(name)
        .secret_binary(aws_sdk_secretsmanager::primitives::Blob::new(
            value.to_vec(),
        ))
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateSecret {name}: {e:?}"));
    out.version_id.expect("CreateSecret returns a version id")
}

/// Stores a new current string value (the old one becomes `AWSPREVIOUS`); returns its
/// version id.
pub async fn put_string(client: &Client, name: &str, value: &str) -> String {
    let out = client
        .put_secret_value()
        .secret_id(name)
        .secret_string(value)
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutSecretValue {name}: {e:?}"));
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
