//! Helpers for tests against the real moto server started by `scripts/test-servers.sh`
//! (`make test`). Include from a test file with `mod moto_support;`.
//!
//! - [`moto_endpoint`]: the server address; panics with instructions when unset, so tests
//!   never pass silently without a server.
//! - [`unique_prefix`]: a fresh secret-name prefix per test, so tests share one server.
//! - [`admin_client`]: an SDK client with dummy static credentials to create test data.
//! - [`MotoRequestCounter`]: counts the Secrets Manager requests moto received for a set of
//!   secret names (via moto's request recorder), e.g. to prove reads were coalesced.
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
    let authority = endpoint
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("moto endpoint {endpoint:?} is not http://HOST:PORT"))
        .trim_end_matches('/');
    let mut stream = TcpStream::connect(authority)
        .await
        .unwrap_or_else(|e| panic!("connecting to moto at {authority}: {e}"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
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
