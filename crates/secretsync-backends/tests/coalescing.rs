//! The shared cache coalesces concurrent reads: 100 concurrent reads of one key cause
//! exactly one request, counted at the real server (OpenBao's audit log, moto's recorder).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod moto_support;
mod vault_support;

use std::sync::Arc;
use std::time::Duration;

use secretsync_api::{AwsAuth, AwsSecretRef, AwsService, AwsSource, SecretSourceSpec};
use secretsync_backends::cache::NoopObserver;
use secretsync_backends::env::EnvPolicy;
use secretsync_backends::{
    Backend, BackendError, BuildContext, ReadOptions, ReadRequest, SecretValue, SourceCache,
    build_backend,
};
use secretsync_testkit::bao::{BaoAdmin, shared_audit_log};
use secretsync_testkit::names::unique;
use serde_json::json;

fn context(creds: vault_support::MapCredentials) -> BuildContext {
    BuildContext {
        env_allow: EnvPolicy::deny_all(),
        file_root: std::env::temp_dir(),
        credentials: Arc::new(creds),
        namespace: None,
        cluster_secrets: Arc::new(secretsync_backends::kubernetes::NoClusterSecrets),
    }
}

/// Delays every read until the test opens the gate, so the test controls when the first
/// request can finish. It only delays: requests still go to the real server, which counts
/// them.
struct Gated {
    inner: Arc<dyn Backend>,
    open: tokio::sync::watch::Receiver<bool>,
}

#[async_trait::async_trait]
impl Backend for Gated {
    fn kind(&self) -> secretsync_api::BackendKind {
        self.inner.kind()
    }
    async fn read(&self, req: &ReadRequest) -> Result<SecretValue, BackendError> {
        let mut open = self.open.clone();
        open.wait_for(|o| *o).await.unwrap();
        self.inner.read(req).await
    }
    async fn list(&self, under: &str) -> Result<Vec<String>, BackendError> {
        self.inner.list(under).await
    }
    async fn validate(&self) -> Result<(), BackendError> {
        self.inner.validate().await
    }
}

/// 100 reads of one key from 100 tasks, all asking before any response can arrive (the
/// gate opens only once the cache has seen all 100). With ttl zero only sharing of the
/// in-flight request can explain a single backend request.
async fn hundred_concurrent_reads(backend: Arc<dyn Backend>, key: &str) -> Arc<SourceCache> {
    let (open_tx, open_rx) = tokio::sync::watch::channel(false);
    let gated: Arc<dyn Backend> = Arc::new(Gated {
        inner: backend,
        open: open_rx,
    });
    let cache = Arc::new(SourceCache::new(
        gated,
        Duration::ZERO,
        Arc::new(NoopObserver),
    ));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let cache = cache.clone();
            let req = ReadRequest::latest(key);
            tokio::spawn(async move { cache.get(&req, ReadOptions::within(Duration::ZERO)).await })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = cache.stats();
        if s.hits + s.misses == 100 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reads did not start: {s:?}"
        );
        tokio::task::yield_now().await;
    }
    open_tx.send(true).unwrap();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    cache
}

/// Read requests the audit log holds for `path`, polled until at least `expected` are
/// visible (the audit file is appended asynchronously to answering) or 10 s pass.
async fn audited_reads(log: &std::path::Path, path: &str, expected: usize) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| {
                e["type"] == "request"
                    && e["request"]["operation"] == "read"
                    && e["request"]["path"].as_str() == Some(path)
            })
            .count();
        if n >= expected || tokio::time::Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn vault_hundred_concurrent_reads_make_one_request() {
    let admin = BaoAdmin::shared();
    let mount = unique("coalesce");
    admin.enable_kv(&mount, 2).await;
    admin
        .put_v2(&mount, "app/db", json!({"password": "p"}))
        .await;
    let spec = SecretSourceSpec {
        vault: Some(vault_support::source(
            &vault_support::bao_addr(),
            &mount,
            2,
            vault_support::token_auth(),
        )),
        ..Default::default()
    };
    let creds =
        vault_support::MapCredentials::with("vault-token", "token", &vault_support::root_token());
    let backend = build_backend(&spec, &context(creds)).await.unwrap();
    let path = format!("{mount}/data/app/db");
    let log = shared_audit_log();
    let cache = hundred_concurrent_reads(backend.clone(), "app/db").await;
    assert_eq!(audited_reads(&log, &path, 1).await, 1);
    assert_eq!(cache.stats().backend_calls, 1);

    // With a ttl, later sequential reads are served from memory: one more request in all.
    let cached = SourceCache::new(backend, Duration::from_secs(300), Arc::new(NoopObserver));
    for _ in 0..100 {
        cached
            .get(
                &ReadRequest::latest("app/db"),
                ReadOptions::within(Duration::ZERO),
            )
            .await
            .unwrap();
    }
    assert_eq!(audited_reads(&log, &path, 2).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aws_hundred_concurrent_reads_make_one_request() {
    let endpoint = moto_support::moto_endpoint();
    let counter = moto_support::MotoRequestCounter::start(&endpoint).await;
    let admin = moto_support::admin_client(&endpoint);
    let prefix = moto_support::unique_prefix("coalesce");
    moto_support::create_string(&admin, &format!("{prefix}db"), "v").await;
    let spec = SecretSourceSpec {
        prefix: Some(prefix.clone()),
        aws: Some(AwsSource {
            service: AwsService::SecretsManager,
            region: moto_support::REGION.to_string(),
            endpoint: Some(endpoint.clone()),
            // Static keys from a Secret (moto accepts any), so the test does not depend on
            // the process environment.
            auth: Some(AwsAuth {
                secret_ref: Some(AwsSecretRef {
                    name: "aws".into(),
                    namespace: None,
                    access_key_id_key: "id".into(),
                    secret_access_key_key: "secret".into(),
                    session_token_key: None,
                }),
                role_arn: None,
            }),
            events: None,
        }),
        ..Default::default()
    };
    let mut creds = vault_support::MapCredentials::with("aws", "id", "AKIDCOALESCE");
    creds
        .secrets
        .insert(("aws".into(), "secret".into()), "dummy".into());
    let backend = build_backend(&spec, &context(creds)).await.unwrap();
    let cache = hundred_concurrent_reads(backend, "db").await;
    assert_eq!(counter.count_reads(&prefix).await, 1);
    assert_eq!(cache.stats().backend_calls, 1);
}
