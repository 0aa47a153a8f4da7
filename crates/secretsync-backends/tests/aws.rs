//! AWS Secrets Manager backend against a real moto server.
//!
//! Run with `make test` or `scripts/test-servers.sh cargo test -p secretsync-backends --test aws`;
//! without `SECRETSYNC_TEST_MOTO_ENDPOINT` the tests fail with that instruction.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod moto_support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moto_support::{
    ADMIN_ACCESS_KEY_ID, CREDS_SECRET, MapCredentials, MotoRequestCounter, admin_client,
    assert_unavailable, closed_port_endpoint, create_binary, create_string, fast_fail,
    moto_endpoint, put_string, secret_ref, static_keys_source, text, unique_prefix,
};
use secretsync_api::{AwsAuth, AwsSecretRef, AwsService, AwsSource};
use secretsync_backends::aws::AwsBackend;
use secretsync_backends::{Backend, BackendError, ReadRequest, Reason};
use secretsync_testkit::names::unique;

/// What [`MapCredentials::keys`] pairs with each test's access key id.
const SECRET_ACCESS_KEY: &str = "test-secret-access-key";

/// A Secrets Manager source at `endpoint` with static keys from [`MapCredentials::keys`].
fn source(endpoint: &str) -> AwsSource {
    static_keys_source(AwsService::SecretsManager, endpoint)
}

async fn backend(prefix: &str) -> AwsBackend {
    AwsBackend::connect(
        prefix.to_string(),
        &source(&moto_endpoint()),
        &MapCredentials::keys("AKIDSECRETSYNCTEST", SECRET_ACCESS_KEY),
    )
    .await
    .expect("connect")
}

fn reason<T: std::fmt::Debug>(r: &Result<T, BackendError>) -> Reason {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.reason,
    }
}

#[tokio::test]
async fn reads_string_and_binary_secrets_under_the_prefix() {
    let endpoint = moto_endpoint();
    let admin = admin_client(&endpoint);
    let prefix = unique_prefix("read");
    let binary = [0u8, 159, 146, 150, 255, b'\n'];
    create_string(
        &admin,
        &format!("{prefix}db/url"),
        "postgres://db:5432/shop",
    )
    .await;
    create_binary(&admin, &format!("{prefix}tls/key"), &binary).await;
    // Same key without the prefix: must not be what the backend reads.
    let bare = format!("{}db/url", unique_prefix("read-bare"));
    create_string(&admin, &bare, "wrong").await;

    let b = backend(&prefix).await;
    let url = b
        .read(&ReadRequest::latest("db/url"))
        .await
        .expect("string");
    assert_eq!(text(&url), "postgres://db:5432/shop");
    let key = b
        .read(&ReadRequest::latest("tls/key"))
        .await
        .expect("binary");
    assert_eq!(key.as_bytes(), &binary);
    b.validate().await.expect("validate");
}

/// Both services, through `aws::connect`: a missing key is `SecretNotFound`, and the
/// message names the remote name.
#[tokio::test]
async fn missing_key_is_secret_not_found_in_both_services() {
    let creds = MapCredentials::keys("AKIDSECRETSYNCTEST", SECRET_ACCESS_KEY);
    for (service, prefix) in [
        (AwsService::SecretsManager, unique_prefix("missing")),
        (
            AwsService::ParameterStore,
            format!("/{}", unique_prefix("missing")),
        ),
    ] {
        let spec = static_keys_source(service, &moto_endpoint());
        let b = secretsync_backends::aws::connect(prefix.clone(), &spec, &creds)
            .await
            .expect("connect");
        let err = b
            .read(&ReadRequest::latest("does/not/exist"))
            .await
            .expect_err("missing");
        assert_eq!(err.reason, Reason::SecretNotFound, "{service:?}: {err}");
        assert!(
            err.message.contains(&format!("{prefix}does/not/exist")),
            "{service:?}: message names the remote name: {err}"
        );
    }
}

#[tokio::test]
async fn version_stages_and_ids_after_rotation() {
    let endpoint = moto_endpoint();
    let admin = admin_client(&endpoint);
    let prefix = unique_prefix("versions");
    let name = format!("{prefix}api/token");
    let v1 = create_string(&admin, &name, "first").await;
    let v2 = put_string(&admin, &name, "second").await;
    assert_ne!(v1, v2);

    let b = backend(&prefix).await;
    let at = |version: &str| ReadRequest {
        key: "api/token".to_string(),
        version: Some(version.to_string()),
    };
    let read = |r: ReadRequest| {
        let b = &b;
        async move { b.read(&r).await }
    };
    assert_eq!(text(&read(at("AWSPREVIOUS")).await.unwrap()), "first");
    assert_eq!(text(&read(at("AWSCURRENT")).await.unwrap()), "second");
    assert_eq!(
        text(&read(ReadRequest::latest("api/token")).await.unwrap()),
        "second"
    );
    assert_eq!(text(&read(at(&v1)).await.unwrap()), "first");
    assert_eq!(text(&read(at(&v2)).await.unwrap()), "second");

    let err = read(at("NO_SUCH_STAGE")).await.expect_err("unknown stage");
    assert_eq!(err.reason, Reason::SecretNotFound, "{err}");
    let err = read(at("00000000-0000-0000-0000-000000000000"))
        .await
        .expect_err("unknown version id");
    assert_eq!(err.reason, Reason::SecretNotFound, "{err}");
}

#[tokio::test]
async fn list_returns_keys_under_the_literal_prefix() {
    let endpoint = moto_endpoint();
    let admin = admin_client(&endpoint);
    let prefix = unique_prefix("list");
    for key in [
        "db/user",
        "db/password",
        "db/nested/deep",
        "dbx",
        "api/token",
    ] {
        create_string(&admin, &format!("{prefix}{key}"), "v").await;
    }
    // A neighbour whose name shares the first characters of the prefix.
    let neighbour = format!("{}db/user", prefix.trim_end_matches('/'));
    create_string(&admin, &neighbour, "v").await;

    let b = backend(&prefix).await;
    assert_eq!(
        b.list("").await.expect("list all"),
        [
            "api/token",
            "db/nested/deep",
            "db/password",
            "db/user",
            "dbx"
        ]
    );
    assert_eq!(
        b.list("db/").await.expect("list db/"),
        ["db/nested/deep", "db/password", "db/user"]
    );
    assert_eq!(
        b.list("db").await.expect("list db"),
        ["db/nested/deep", "db/password", "db/user", "dbx"]
    );
    assert!(b.list("nothing/").await.expect("list none").is_empty());

    // Without a source prefix the names come back whole.
    let unprefixed = backend("").await;
    let all = unprefixed.list(&prefix).await.expect("list unprefixed");
    assert_eq!(all.len(), 5);
    assert!(all.iter().all(|k| k.starts_with(&prefix)), "{all:?}");
}

#[tokio::test]
async fn list_follows_pagination() {
    let endpoint = moto_endpoint();
    let admin = admin_client(&endpoint);
    let prefix = unique_prefix("list-pages");
    // ListSecrets returns at most 100 per page.
    let futs = (0..105).map(|i| {
        let admin = admin.clone();
        let name = format!("{prefix}k{i:03}");
        async move { create_string(&admin, &name, "v").await }
    });
    futures::future::join_all(futs).await;
    let keys = backend(&prefix).await.list("").await.expect("list");
    let expected: Vec<String> = (0..105).map(|i| format!("k{i:03}")).collect();
    assert_eq!(keys, expected);
}

#[tokio::test]
async fn read_batch_uses_batch_api_with_per_key_results() {
    let endpoint = moto_endpoint();
    let admin = admin_client(&endpoint);
    let counter = MotoRequestCounter::start(&endpoint).await;
    let prefix = unique_prefix("batch");
    let keys: Vec<String> = (0..25).map(|i| format!("k{i:02}")).collect();
    let missing = "k13";
    for key in keys.iter().filter(|k| *k != missing) {
        create_string(&admin, &format!("{prefix}{key}"), &format!("value-{key}")).await;
    }
    let versioned_name = format!("{prefix}rotated");
    create_string(&admin, &versioned_name, "old").await;
    put_string(&admin, &versioned_name, "new").await;

    let b = backend(&prefix).await;
    let mut reqs: Vec<ReadRequest> = keys.iter().map(ReadRequest::latest).collect();
    // A duplicate and a versioned read ride along.
    reqs.push(ReadRequest::latest("k00"));
    reqs.push(ReadRequest {
        key: "rotated".to_string(),
        version: Some("AWSPREVIOUS".to_string()),
    });
    let results = b.read_batch(&reqs).await;
    assert_eq!(results.len(), reqs.len());
    for (req, res) in reqs.iter().zip(&results).take(25) {
        if req.key == missing {
            assert_eq!(reason(res), Reason::SecretNotFound);
            let err = res.as_ref().unwrap_err();
            assert!(err.message.contains(&format!("{prefix}{missing}")), "{err}");
        } else {
            let v = res.as_ref().unwrap_or_else(|e| panic!("{}: {e}", req.key));
            assert_eq!(text(v), format!("value-{}", req.key));
        }
    }
    assert_eq!(text(results[25].as_ref().unwrap()), "value-k00");
    assert_eq!(text(results[26].as_ref().unwrap()), "old");

    // 25 distinct unversioned keys = 2 batch calls (20 + 5); only the versioned read used
    // GetSecretValue.
    assert_eq!(counter.count("BatchGetSecretValue", &prefix).await, 2);
    assert_eq!(counter.count("GetSecretValue", &prefix).await, 1);
    assert_eq!(counter.count_reads(&prefix).await, 3);
}

#[tokio::test]
async fn request_counter_counts_reads_of_this_test_only() {
    let endpoint = moto_endpoint();
    let admin = admin_client(&endpoint);
    let counter = MotoRequestCounter::start(&endpoint).await;
    let prefix = unique_prefix("count");
    create_string(&admin, &format!("{prefix}a"), "1").await;
    create_string(&admin, &format!("{prefix}b"), "2").await;
    let b = backend(&prefix).await;
    assert_eq!(counter.count_reads(&prefix).await, 0);

    for _ in 0..3 {
        b.read(&ReadRequest::latest("a")).await.expect("read");
    }
    assert_eq!(counter.count("GetSecretValue", &prefix).await, 3);
    assert_eq!(counter.count("BatchGetSecretValue", &prefix).await, 0);

    let res = b
        .read_batch(&[ReadRequest::latest("a"), ReadRequest::latest("b")])
        .await;
    assert!(res.iter().all(Result::is_ok), "{res:?}");
    assert_eq!(counter.count("GetSecretValue", &prefix).await, 3);
    assert_eq!(counter.count("BatchGetSecretValue", &prefix).await, 1);
    assert_eq!(counter.count_reads(&prefix).await, 4);

    // A second test's prefix sees none of these.
    assert_eq!(counter.count_reads(&unique_prefix("count")).await, 0);
}

#[tokio::test]
async fn static_credentials_come_from_the_credentials_secret() {
    let endpoint = moto_endpoint();
    let admin = admin_client(&endpoint);
    let counter = MotoRequestCounter::start(&endpoint).await;
    let prefix = unique_prefix("static");
    create_string(&admin, &format!("{prefix}k"), "v").await;
    let access_key_id = unique("AKID").to_uppercase();
    let creds = MapCredentials::keys(&access_key_id, SECRET_ACCESS_KEY).with(
        CREDS_SECRET,
        "session-token",
        "tok",
    );
    let mut spec = source(&endpoint);
    if let Some(auth) = spec.auth.as_mut()
        && let Some(r) = auth.secret_ref.as_mut()
    {
        r.session_token_key = Some("session-token".to_string());
    }

    let b = AwsBackend::connect(prefix.clone(), &spec, &creds)
        .await
        .expect("connect");
    assert_eq!(text(&b.read(&ReadRequest::latest("k")).await.unwrap()), "v");
    let reqs = counter.matching("GetSecretValue", &prefix).await;
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0].access_key_id().as_deref(),
        Some(access_key_id.as_str())
    );
    assert_eq!(reqs[0].header("x-amz-security-token"), Some("tok"));

    // A missing credential Secret key is a configuration error of the source.
    let err = AwsBackend::connect(
        prefix.clone(),
        &spec,
        &MapCredentials::keys("AKID", SECRET_ACCESS_KEY),
    )
    .await
    .err()
    .expect("missing session token key");
    assert_eq!(err.reason, Reason::InvalidConfig, "{err}");
    assert!(err.message.contains("session-token"), "{err}");
}

#[tokio::test]
async fn assume_role_reads_through_the_assumed_role() {
    let endpoint = moto_endpoint();
    let admin = admin_client(&endpoint);
    let counter = MotoRequestCounter::start(&endpoint).await;
    let prefix = unique_prefix("assume");
    create_string(&admin, &format!("{prefix}k"), "through-role").await;
    let base_key = unique("AKID").to_uppercase();
    let role_arn = format!("arn:aws:iam::123456789012:role/{}", unique("reader"));
    let mut spec = source(&endpoint);
    if let Some(auth) = spec.auth.as_mut() {
        auth.role_arn = Some(role_arn.clone());
    }

    let b = AwsBackend::connect(
        prefix.clone(),
        &spec,
        &MapCredentials::keys(&base_key, SECRET_ACCESS_KEY),
    )
    .await
    .expect("connect");
    assert_eq!(
        text(&b.read(&ReadRequest::latest("k")).await.unwrap()),
        "through-role"
    );
    // Credentials are cached: a second read does not assume the role again.
    b.read(&ReadRequest::latest("k")).await.unwrap();

    let all = counter.requests().await;
    let assumes: Vec<_> = all
        .iter()
        .filter(|r| r.operation == "AssumeRole")
        .filter(|r| r.form_field("RoleArn").as_deref() == Some(role_arn.as_str()))
        .collect();
    assert_eq!(assumes.len(), 1, "one AssumeRole for {role_arn}");
    assert_eq!(
        assumes[0].form_field("RoleSessionName").as_deref(),
        Some("secretsync")
    );
    assert_eq!(
        assumes[0].access_key_id().as_deref(),
        Some(base_key.as_str())
    );
    let reads = counter.matching("GetSecretValue", &prefix).await;
    assert_eq!(reads.len(), 2);
    for r in reads {
        let key = r.access_key_id().expect("signed");
        assert_ne!(key, base_key, "reads use the assumed role's keys");
        assert_ne!(key, ADMIN_ACCESS_KEY_ID);
        assert!(r.header("x-amz-security-token").is_some());
    }
}

#[tokio::test]
async fn unreachable_backend_is_backend_unavailable() {
    let endpoint = closed_port_endpoint();
    let creds = MapCredentials::keys("AKIDSECRETSYNCTEST", SECRET_ACCESS_KEY);
    let started = Instant::now();
    let b = AwsBackend::connect_with("p/".to_string(), &source(&endpoint), &creds, &fast_fail())
        .await
        .expect("connect makes no network call");

    assert_unavailable(&b, "p/").await;

    // With a role to assume, the STS call fails first: still transient.
    let mut spec = source(&endpoint);
    if let Some(auth) = spec.auth.as_mut() {
        auth.role_arn = Some("arn:aws:iam::123456789012:role/reader".to_string());
    }
    let b = AwsBackend::connect_with("p/".to_string(), &spec, &creds, &fast_fail())
        .await
        .expect("connect");
    let err = b.read(&ReadRequest::latest("k")).await.expect_err("read");
    assert_eq!(err.reason, Reason::BackendUnavailable, "{err}");
    assert!(err.message.contains("loading AWS credentials"), "{err}");

    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn invalid_configuration_is_rejected_at_connect() {
    let creds = MapCredentials::keys("AKIDSECRETSYNCTEST", SECRET_ACCESS_KEY);
    let cases = [
        AwsSource {
            region: "".to_string(),
            ..source("http://127.0.0.1:1")
        },
        AwsSource {
            region: "EU West".to_string(),
            ..source("http://127.0.0.1:1")
        },
        source("127.0.0.1:5000"),
        AwsSource {
            auth: Some(AwsAuth {
                secret_ref: None,
                role_arn: Some("reader".to_string()),
            }),
            ..source("http://127.0.0.1:1")
        },
        AwsSource {
            auth: Some(AwsAuth {
                secret_ref: Some(AwsSecretRef {
                    name: "other".to_string(),
                    ..secret_ref()
                }),
                role_arn: None,
            }),
            ..source("http://127.0.0.1:1")
        },
    ];
    for spec in cases {
        let err = AwsBackend::connect(String::new(), &spec, &creds)
            .await
            .err()
            .unwrap_or_else(|| panic!("{spec:?} should be rejected"));
        assert_eq!(err.reason, Reason::InvalidConfig, "{spec:?}: {err}");
    }
}

/// Collects formatted tracing output.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

// current_thread runtime: the thread-local subscriber sees every event of the test.
#[tokio::test(flavor = "current_thread")]
async fn canary_value_never_appears_in_errors_or_logs() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // tracing caches each callsite's interest process-wide: a sibling test thread without
    // a subscriber would cache "never" and hide events from this thread-local capture. A
    // global do-nothing registry keeps every callsite interesting.
    let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry());
    let _guard = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();

    let endpoint = moto_endpoint();
    let admin = admin_client(&endpoint);
    let prefix = unique_prefix("canary");
    let canary = unique("CANARY");
    let name = format!("{prefix}secret");
    create_string(&admin, &name, &canary).await;
    put_string(&admin, &name, &format!("{canary}-v2")).await;
    create_string(
        &admin,
        &format!("{prefix}json"),
        &format!("{{\"p\":\"{canary}\"}}"),
    )
    .await;

    let b = backend(&prefix).await;
    // The value itself is read fine (and must not be logged while being read).
    let v = b.read(&ReadRequest::latest("secret")).await.expect("read");
    assert!(!format!("{v:?}").contains(&canary));

    let mut errors: Vec<BackendError> = Vec::new();
    let at = |version: &str| ReadRequest {
        key: "secret".to_string(),
        version: Some(version.to_string()),
    };
    for req in [
        at("NO_SUCH_STAGE"),
        at("00000000-0000-0000-0000-000000000000"),
        ReadRequest::latest("missing"),
    ] {
        errors.push(b.read(&req).await.expect_err("error path"));
    }
    let batch = b
        .read_batch(&[
            ReadRequest::latest("secret"),
            ReadRequest::latest("json"),
            ReadRequest::latest("missing"),
            at("NOPE"),
        ])
        .await;
    errors.extend(batch.into_iter().filter_map(Result::err));

    // A secret scheduled for deletion.
    admin
        .delete_secret()
        .secret_id(&name)
        .recovery_window_in_days(7)
        .send()
        .await
        .expect("delete");
    let err = b
        .read(&ReadRequest::latest("secret"))
        .await
        .expect_err("deleted");
    assert_eq!(err.reason, Reason::SecretNotFound, "{err}");
    errors.push(err);
    let batch = b
        .read_batch(&[ReadRequest::latest("secret"), ReadRequest::latest("json")])
        .await;
    assert_eq!(reason(&batch[0]), Reason::SecretNotFound);
    errors.extend(batch.into_iter().filter_map(Result::err));

    // Unreachable backend, with the canary as the secret access key (the SDK logs the
    // access key id at debug level, which is not a secret; the secret key must not show).
    let down = AwsBackend::connect_with(
        prefix.clone(),
        &source(&closed_port_endpoint()),
        &MapCredentials::keys("AKIDSECRETSYNCTEST", SECRET_ACCESS_KEY).with(
            CREDS_SECRET,
            "secret-access-key",
            &canary,
        ),
        &fast_fail(),
    )
    .await
    .expect("connect");
    errors.push(
        down.read(&ReadRequest::latest("secret"))
            .await
            .expect_err("down"),
    );
    errors.push(down.list("").await.expect_err("down"));

    assert!(errors.len() >= 8, "{errors:?}");
    for e in &errors {
        assert!(!e.to_string().contains(&canary), "Display leaks: {e}");
        assert!(!format!("{e:?}").contains(&canary), "Debug leaks: {e:?}");
        assert!(!e.message.contains("CANARY"), "{e}");
    }
    let logged = logs.text();
    assert!(
        logged.contains("GetSecretValue"),
        "debug events were captured"
    );
    assert!(!logged.contains("CANARY"), "logs leak the value:\n{logged}");
}

/// Bytes end to end through a binding: a `SecretBinary` and a base64 `SecretString` decoded
/// by `decodingStrategy` reach the resolved data byte for byte; a template passes the
/// binary through `b64encode` and fails with InvalidTemplate when it writes it out raw.
#[tokio::test]
async fn binary_values_reach_the_binding_data_unchanged() {
    use secretsync_api::{
        DataItem, DecodingStrategy, MergePolicy, RemoteRef, SecretBindingSpec, TemplateSpec,
    };
    use secretsync_backends::SourceCache;
    use secretsync_backends::cache::NoopObserver;
    use secretsync_backends::resolve::resolve;

    let endpoint = moto_endpoint();
    let admin = admin_client(&endpoint);
    let prefix = unique_prefix("bytes");
    let binary = [0u8, 159, 146, 150, 255, b'\n'];
    create_binary(&admin, &format!("{prefix}keystore"), &binary).await;
    // The same bytes stored as base64 text, as many tools do.
    create_string(&admin, &format!("{prefix}keystore-b64"), "AJ+Slv8K").await;
    let cache = SourceCache::new(
        Arc::new(backend(&prefix).await),
        Duration::ZERO,
        Arc::new(NoopObserver),
    );
    let entry = |secret_key: &str, key: &str, decoding_strategy| DataItem {
        secret_key: secret_key.into(),
        remote_ref: RemoteRef {
            key: key.into(),
            decoding_strategy,
            ..Default::default()
        },
        optional: false,
    };
    let mut spec = SecretBindingSpec {
        data: vec![
            entry("raw", "keystore", DecodingStrategy::None),
            entry("decoded", "keystore-b64", DecodingStrategy::Base64),
        ],
        ..Default::default()
    };
    let data = resolve(&spec, &cache, false, None).await.unwrap();
    assert_eq!(data["raw"].as_bytes(), &binary);
    assert_eq!(data["decoded"].as_bytes(), &binary);

    let template = |src: &str| {
        Some(TemplateSpec {
            merge_policy: MergePolicy::Merge,
            data: [("keystore.b64".to_string(), src.to_string())].into(),
            ..Default::default()
        })
    };
    spec.target.template = template("{{ raw | b64encode }}");
    let data = resolve(&spec, &cache, false, None).await.unwrap();
    assert_eq!(data["keystore.b64"].as_str(), Some("AJ+Slv8K"));
    assert_eq!(
        data["raw"].as_bytes(),
        &binary,
        "Merge keeps the bytes as read"
    );

    spec.target.template = template("{{ raw }}");
    let err = resolve(&spec, &cache, false, None).await.unwrap_err();
    assert_eq!(err.reason, Reason::InvalidTemplate, "{err}");
    assert!(
        err.message
            .contains(r#"spec.target.template.data["keystore.b64"]"#),
        "{err}"
    );
}
