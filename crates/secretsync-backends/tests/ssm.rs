//! AWS Systems Manager Parameter Store backend (`aws.service: ParameterStore`) against a
//! real moto server.
//!
//! Run with `make test` or `scripts/test-servers.sh cargo test -p secretsync-backends --test ssm`;
//! without `SECRETSYNC_TEST_MOTO_ENDPOINT` the tests fail with that instruction.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod moto_support;

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_ssm::types::ParameterType;
use moto_support::{
    MapCredentials, MotoRequestCounter, assert_unavailable, closed_port_endpoint, fast_fail,
    iam_action, label_version, moto_endpoint, reset_auth, ssm_admin_client, static_keys_source,
    text, unique_prefix, xml_field,
};
use secretsync_api::{AwsService, AwsSource, SecretSourceSpec};
use secretsync_backends::aws::ParameterStoreBackend;
use secretsync_backends::cache::NoopObserver;
use secretsync_backends::env::EnvPolicy;
use secretsync_backends::{
    Backend, BuildContext, ReadOptions, ReadRequest, Reason, SourceCache, build_backend,
};
use secretsync_testkit::aws::put_parameter;
use secretsync_testkit::harness::MotoServer;
use secretsync_testkit::names::unique;

/// A Parameter Store source at `endpoint` with static keys from [`MapCredentials::keys`].
fn source(endpoint: &str) -> AwsSource {
    static_keys_source(AwsService::ParameterStore, endpoint)
}

/// A hierarchy no other test uses, e.g. `/secretsync-test/read-1234-abcd-0/`.
fn unique_path(test: &str) -> String {
    format!("/{}", unique_prefix(test))
}

async fn backend(prefix: &str) -> ParameterStoreBackend {
    ParameterStoreBackend::connect(
        prefix.to_string(),
        &source(&moto_endpoint()),
        &MapCredentials::keys("AKIDSECRETSYNCSSM", "x"),
    )
    .await
    .expect("connect")
}

fn at(key: &str, version: &str) -> ReadRequest {
    ReadRequest {
        key: key.to_string(),
        version: Some(version.to_string()),
    }
}

#[tokio::test]
async fn reads_string_string_list_and_decrypted_secure_string() {
    let endpoint = moto_endpoint();
    let admin = ssm_admin_client(&endpoint);
    let prefix = unique_path("types");
    let canary = unique("SECURE");
    put_parameter(
        &admin,
        &format!("{prefix}db/url"),
        ParameterType::String,
        "postgres://db:5432/shop",
    )
    .await;
    put_parameter(
        &admin,
        &format!("{prefix}hosts"),
        ParameterType::StringList,
        "a.example,b.example",
    )
    .await;
    put_parameter(
        &admin,
        &format!("{prefix}db/password"),
        ParameterType::SecureString,
        &canary,
    )
    .await;

    let b = backend(&prefix).await;
    let url = b.read(&ReadRequest::latest("db/url")).await.unwrap();
    assert_eq!(text(&url), "postgres://db:5432/shop");
    let hosts = b.read(&ReadRequest::latest("hosts")).await.unwrap();
    assert_eq!(text(&hosts), "a.example,b.example");
    let pw = b.read(&ReadRequest::latest("db/password")).await.unwrap();
    assert_eq!(text(&pw), canary, "SecureString is read decrypted");
    assert!(!format!("{pw:?}").contains(&canary), "Debug redacts");

    // The same through the batch call.
    let all = b
        .read_batch(&[
            ReadRequest::latest("db/url"),
            ReadRequest::latest("hosts"),
            ReadRequest::latest("db/password"),
        ])
        .await;
    let values: Vec<&str> = all.iter().map(|r| text(r.as_ref().unwrap())).collect();
    assert_eq!(
        values,
        [
            "postgres://db:5432/shop",
            "a.example,b.example",
            canary.as_str()
        ]
    );
    b.validate().await.expect("validate");
}

#[tokio::test]
async fn version_numbers_and_labels_pin_reads() {
    let endpoint = moto_endpoint();
    let admin = ssm_admin_client(&endpoint);
    let prefix = unique_path("versions");
    let name = format!("{prefix}api/token");
    let v1 = put_parameter(&admin, &name, ParameterType::SecureString, "first").await;
    let v2 = put_parameter(&admin, &name, ParameterType::SecureString, "second").await;
    let v3 = put_parameter(&admin, &name, ParameterType::SecureString, "third").await;
    assert_eq!((v1, v2, v3), (1, 2, 3));
    label_version(&admin, &name, v1, "stable").await;
    label_version(&admin, &name, v2, "canary.b-2").await;

    let b = backend(&prefix).await;
    let read = |r: ReadRequest| {
        let b = &b;
        async move { b.read(&r).await }
    };
    assert_eq!(
        text(&read(ReadRequest::latest("api/token")).await.unwrap()),
        "third"
    );
    assert_eq!(text(&read(at("api/token", "1")).await.unwrap()), "first");
    assert_eq!(text(&read(at("api/token", "2")).await.unwrap()), "second");
    assert_eq!(
        text(&read(at("api/token", "stable")).await.unwrap()),
        "first"
    );
    assert_eq!(
        text(&read(at("api/token", "canary.b-2")).await.unwrap()),
        "second"
    );

    let err = read(at("api/token", "9"))
        .await
        .expect_err("unknown version");
    assert_eq!(err.reason, Reason::SecretNotFound, "{err}");
    assert!(err.message.contains("version 9"), "{err}");
    let err = read(at("api/token", "nolabel"))
        .await
        .expect_err("unknown label");
    assert_eq!(err.reason, Reason::SecretNotFound, "{err}");
    let err = read(at("api/token", "3x")).await.expect_err("bad pin");
    assert_eq!(err.reason, Reason::InvalidConfig, "{err}");

    // Pins inside a batch are read one by one, next to the batched latest read.
    let counter = MotoRequestCounter::start(&endpoint).await;
    let res = b
        .read_batch(&[
            ReadRequest::latest("api/token"),
            at("api/token", "stable"),
            at("api/token", "2"),
        ])
        .await;
    let values: Vec<&str> = res.iter().map(|r| text(r.as_ref().unwrap())).collect();
    assert_eq!(values, ["third", "first", "second"]);
    let pinned: Vec<Vec<String>> = counter
        .matching_ssm("GetParameter", &prefix)
        .await
        .iter()
        .map(|r| r.parameter_names())
        .collect();
    assert!(
        pinned.contains(&vec![format!("{name}:stable")]),
        "{pinned:?}"
    );
    assert!(pinned.contains(&vec![format!("{name}:2")]), "{pinned:?}");
}

#[tokio::test]
async fn find_lists_recursively_across_pages() {
    let endpoint = moto_endpoint();
    let admin = ssm_admin_client(&endpoint);
    let prefix = unique_path("find");
    // 57 parameters: more than one page (10) and more than 50.
    let mut expected: Vec<String> = (0..50).map(|i| format!("app/k{i:02}")).collect();
    expected.extend((0..5).map(|i| format!("app/nested/deep/n{i}")));
    expected.extend(["db/user".to_string(), "db/password".to_string()]);
    let futs = expected.iter().map(|key| {
        let admin = admin.clone();
        let name = format!("{prefix}{key}");
        async move { put_parameter(&admin, &name, ParameterType::SecureString, "v").await }
    });
    futures::future::join_all(futs).await;
    // A neighbour sharing the prefix's first characters.
    let neighbour = format!("{}x/app/k00", prefix.trim_end_matches('/'));
    put_parameter(&admin, &neighbour, ParameterType::String, "v").await;
    expected.sort();

    let counter = MotoRequestCounter::start(&endpoint).await;
    let b = backend(&prefix).await;
    assert_eq!(b.list("").await.expect("list all"), expected);
    // The searched path is the prefix without its trailing `/`.
    let path = prefix.trim_end_matches('/');
    let pages = counter.count_ssm("GetParametersByPath", path).await;
    assert!(
        pages >= 6,
        "57 parameters take at least 6 pages of 10, saw {pages}"
    );
    assert!(
        counter
            .matching_ssm("GetParametersByPath", path)
            .await
            .iter()
            .all(|r| r.body.contains("\"Recursive\":true")),
        "listing is recursive"
    );

    let app: Vec<String> = expected
        .iter()
        .filter(|k| k.starts_with("app/"))
        .cloned()
        .collect();
    assert_eq!(b.list("app/").await.expect("list app/"), app);
    assert_eq!(
        b.list("d").await.expect("list d"),
        ["db/password", "db/user"]
    );
    assert!(b.list("nothing/").await.expect("list none").is_empty());

    // Without a source prefix the names come back whole.
    let whole = backend("")
        .await
        .list(&format!("{prefix}db/"))
        .await
        .unwrap();
    assert_eq!(
        whole,
        [format!("{prefix}db/password"), format!("{prefix}db/user")]
    );
}

#[tokio::test]
async fn read_batch_uses_get_parameters_ten_names_a_call() {
    let endpoint = moto_endpoint();
    let admin = ssm_admin_client(&endpoint);
    let prefix = unique_path("batch");
    let keys: Vec<String> = (0..25).map(|i| format!("k{i:02}")).collect();
    let missing = "k13";
    for key in keys.iter().filter(|k| *k != missing) {
        let kind = if key.ends_with('0') {
            ParameterType::SecureString
        } else {
            ParameterType::String
        };
        put_parameter(
            &admin,
            &format!("{prefix}{key}"),
            kind,
            &format!("value-{key}"),
        )
        .await;
    }
    let counter = MotoRequestCounter::start(&endpoint).await;

    let b = backend(&prefix).await;
    let mut reqs: Vec<ReadRequest> = keys.iter().map(ReadRequest::latest).collect();
    reqs.push(ReadRequest::latest("k00")); // a duplicate rides along
    let results = b.read_batch(&reqs).await;
    assert_eq!(results.len(), reqs.len());
    for (req, res) in reqs.iter().zip(&results) {
        if req.key == missing {
            let err = res.as_ref().expect_err("missing");
            assert_eq!(err.reason, Reason::SecretNotFound, "{err}");
            assert!(err.message.contains(&format!("{prefix}{missing}")), "{err}");
        } else {
            let v = res.as_ref().unwrap_or_else(|e| panic!("{}: {e}", req.key));
            assert_eq!(text(v), format!("value-{}", req.key));
        }
    }

    // 25 distinct keys = 3 GetParameters calls (10 + 10 + 5), the missing key answered
    // from InvalidParameters: no single read at all.
    let calls = counter.matching_ssm("GetParameters", &prefix).await;
    let sizes: Vec<usize> = calls.iter().map(|r| r.parameter_names().len()).collect();
    let mut sorted = sizes.clone();
    sorted.sort();
    assert_eq!(sorted, [5, 10, 10], "{sizes:?}");
    assert!(
        calls
            .iter()
            .all(|r| r.body.contains("\"WithDecryption\":true")),
        "batched reads decrypt"
    );
    assert_eq!(counter.count_ssm("GetParameter", &prefix).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cache_coalesces_through_build_backend() {
    let endpoint = moto_endpoint();
    let admin = ssm_admin_client(&endpoint);
    let prefix = unique_path("coalesce");
    for k in ["a", "b", "c"] {
        put_parameter(&admin, &format!("{prefix}{k}"), ParameterType::String, k).await;
    }
    let counter = MotoRequestCounter::start(&endpoint).await;
    let spec = SecretSourceSpec {
        prefix: Some(prefix.clone()),
        aws: Some(source(&endpoint)),
        ..Default::default()
    };
    let ctx = BuildContext {
        env_allow: EnvPolicy::deny_all(),
        file_root: std::env::temp_dir(),
        credentials: Arc::new(MapCredentials::keys("AKIDCOALESCE", "x")),
        namespace: None,
        cluster_secrets: Arc::new(secretsync_backends::kubernetes::NoClusterSecrets),
    };
    let backend = build_backend(&spec, &ctx).await.expect("build");
    let cache = Arc::new(SourceCache::new(
        backend,
        Duration::from_secs(300),
        Arc::new(NoopObserver),
    ));
    let reqs: Vec<ReadRequest> = ["a", "b", "c"]
        .into_iter()
        .map(ReadRequest::latest)
        .collect();
    // Many bindings asking for the same three keys at once.
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let cache = cache.clone();
            let reqs = reqs.clone();
            tokio::spawn(async move {
                cache
                    .get_many(&reqs, ReadOptions::within(Duration::from_secs(300)))
                    .await
            })
        })
        .collect();
    for t in tasks {
        let out = t.await.unwrap();
        let values: Vec<&str> = out
            .iter()
            .map(|r| text(&r.as_ref().unwrap().value))
            .collect();
        assert_eq!(values, ["a", "b", "c"]);
    }
    assert_eq!(counter.count_ssm("GetParameter", &prefix).await, 0);
    assert_eq!(counter.count_ssm("GetParameters", &prefix).await, 1);
    assert_eq!(cache.stats().backend_calls, 1);
}

#[tokio::test]
async fn unreachable_endpoint_is_backend_unavailable() {
    let endpoint = closed_port_endpoint();
    let b = ParameterStoreBackend::connect_with(
        "/p/".to_string(),
        &source(&endpoint),
        &MapCredentials::keys("AKIDSECRETSYNCSSM", "x"),
        &fast_fail(),
    )
    .await
    .expect("connect makes no network call");
    assert_unavailable(&b, "/p/").await;
}

#[tokio::test]
async fn a_secrets_manager_spec_is_refused() {
    let spec = AwsSource {
        service: AwsService::SecretsManager,
        ..source("http://127.0.0.1:1")
    };
    let err = ParameterStoreBackend::connect(String::new(), &spec, &MapCredentials::keys("A", "x"))
        .await
        .err()
        .expect("refused");
    assert_eq!(err.reason, Reason::InvalidConfig, "{err}");
}

/// moto with its IAM checks on (a server of this test's own): a user whose policy allows
/// only `ssm:GetParameter`. Reads work, batches fall back to single reads, listing and
/// validate are AccessDenied, and so is every call with keys moto's IAM does not know.
#[tokio::test]
async fn access_denied_is_mapped_and_batches_fall_back() {
    let moto = MotoServer::start().await.expect("own moto server");
    let endpoint = moto.endpoint.clone();
    let prefix = unique_path("denied");
    // Setup actions moto lets through unchecked: 3 IAM calls, 3 PutParameter.
    reset_auth(&endpoint, 6).await;
    let user = unique("reader");
    iam_action(&endpoint, &[("Action", "CreateUser"), ("UserName", &user)]).await;
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ssm:GetParameter","Resource":"*"}]}"#;
    iam_action(
        &endpoint,
        &[
            ("Action", "PutUserPolicy"),
            ("UserName", &user),
            ("PolicyName", "get-parameter-only"),
            ("PolicyDocument", policy),
        ],
    )
    .await;
    let key = iam_action(
        &endpoint,
        &[("Action", "CreateAccessKey"), ("UserName", &user)],
    )
    .await;
    let access_key_id = xml_field(&key, "AccessKeyId").expect("AccessKeyId");
    let secret_access_key = xml_field(&key, "SecretAccessKey").expect("SecretAccessKey");
    let admin = ssm_admin_client(&endpoint);
    for k in ["a", "b", "c"] {
        put_parameter(&admin, &format!("{prefix}{k}"), ParameterType::String, k).await;
    }

    let creds = MapCredentials::keys(&access_key_id, &secret_access_key);
    let b = ParameterStoreBackend::connect_with(
        prefix.clone(),
        &source(&endpoint),
        &creds,
        &fast_fail(),
    )
    .await
    .unwrap();
    assert_eq!(text(&b.read(&ReadRequest::latest("a")).await.unwrap()), "a");
    let batch = b
        .read_batch(&[
            ReadRequest::latest("a"),
            ReadRequest::latest("b"),
            ReadRequest::latest("c"),
        ])
        .await;
    let values: Vec<&str> = batch.iter().map(|r| text(r.as_ref().unwrap())).collect();
    assert_eq!(
        values,
        ["a", "b", "c"],
        "GetParameters refused: single reads"
    );
    let err = b
        .list("")
        .await
        .expect_err("GetParametersByPath is not allowed");
    assert_eq!(err.reason, Reason::AccessDenied, "{err}");
    // AWS answers a policy denial with the JSON code AccessDeniedException, which validate
    // accepts (unit-tested). moto answers IAM denials of JSON APIs with an XML body the
    // SDK cannot read, so only the HTTP status is known: an unreadable 403 is AccessDenied.
    let err = b
        .validate()
        .await
        .expect_err("DescribeParameters is not allowed");
    assert_eq!(err.reason, Reason::AccessDenied, "{err}");

    // Keys moto's IAM does not know.
    let stranger = ParameterStoreBackend::connect_with(
        prefix.clone(),
        &source(&endpoint),
        &MapCredentials::keys("AKIDUNKNOWN0000000000", "nope"),
        &fast_fail(),
    )
    .await
    .unwrap();
    let err = stranger
        .read(&ReadRequest::latest("a"))
        .await
        .expect_err("unknown keys");
    assert_eq!(err.reason, Reason::AccessDenied, "{err}");
    let err = stranger.validate().await.expect_err("unknown keys");
    assert_eq!(err.reason, Reason::AccessDenied, "{err}");
    let batch = stranger
        .read_batch(&[ReadRequest::latest("a"), ReadRequest::latest("b")])
        .await;
    assert!(
        batch
            .iter()
            .all(|r| r.as_ref().err().map(|e| e.reason) == Some(Reason::AccessDenied)),
        "{batch:?}"
    );
}
