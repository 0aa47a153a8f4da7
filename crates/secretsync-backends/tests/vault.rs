//! Vault backend against a real OpenBao dev server.
//!
//! Run via `make test` or `scripts/test-servers.sh cargo test -p secretsync-backends --test
//! vault`: the script starts OpenBao (root token, file audit device) and exports its
//! address. Every test works on its own random mounts/keys, so they run in parallel on one
//! server. Tests that stop or seal a server start a private one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod vault_support;

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secretsync_api::{VaultAuth, VaultSource};
use secretsync_backends::vault::VaultBackend;
use secretsync_backends::{Backend, BackendError, ReadRequest, Reason, SecretValue, keys};
use secretsync_testkit::BaoServer;
use secretsync_testkit::bao::{BaoAdmin, count_audit_requests, shared_audit_log};
use secretsync_testkit::names::unique;
use serde_json::{Value, json};
use vault_support::{MapCredentials, approle_auth, bao_addr, root_token, source, token_auth};

/// A token-auth backend on the shared server.
async fn connect_token(prefix: &str, mount: &str, kv_version: u8, token: &str) -> VaultBackend {
    VaultBackend::connect(
        prefix.to_string(),
        &source(&bao_addr(), mount, kv_version, token_auth()),
        &MapCredentials::with("vault-token", "token", token),
    )
    .await
    .unwrap()
}

fn json_of(value: &SecretValue) -> Value {
    serde_json::from_slice(value.as_bytes()).unwrap()
}

fn text(value: &SecretValue) -> &str {
    value.as_str().unwrap()
}

fn versioned(key: &str, version: &str) -> ReadRequest {
    ReadRequest {
        key: key.to_string(),
        version: Some(version.to_string()),
    }
}

async fn read_err(backend: &VaultBackend, req: ReadRequest) -> BackendError {
    match backend.read(&req).await {
        Ok(v) => panic!("read of {req:?} succeeded unexpectedly ({v:?})"),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn kv2_read_returns_the_field_map_as_json() {
    let admin = BaoAdmin::shared();
    let mount = unique("kv2");
    admin.enable_kv(&mount, 2).await;
    admin
        .put_v2(
            &mount,
            "database/creds",
            json!({"username": "shop", "password": "s3cret", "port": 5432, "opts": {"ssl": true}}),
        )
        .await;

    let backend = connect_token("", &mount, 2, &root_token()).await;
    backend.validate().await.unwrap();
    let value = backend
        .read(&ReadRequest::latest("database/creds"))
        .await
        .unwrap();
    assert_eq!(
        json_of(&value),
        json!({"username": "shop", "password": "s3cret", "port": 5432, "opts": {"ssl": true}})
    );

    // property and extract are applied by the caller on the returned JSON.
    let password = keys::extract_property(&value, "database/creds", "password").unwrap();
    assert_eq!(text(&password), "s3cret");
    let port = keys::extract_property(&value, "database/creds", "port").unwrap();
    assert_eq!(text(&port), "5432");
    let opts = keys::extract_property(&value, "database/creds", "opts").unwrap();
    assert_eq!(json_of(&opts), json!({"ssl": true}));
    let missing = keys::extract_property(&value, "database/creds", "nope").unwrap_err();
    assert_eq!(missing.reason, Reason::SecretNotFound);

    let all = keys::extract_all(&value, "database/creds").unwrap();
    assert_eq!(
        all.keys().map(String::as_str).collect::<Vec<_>>(),
        ["opts", "password", "port", "username"]
    );
    assert_eq!(text(&all["username"]), "shop");
}

#[tokio::test]
async fn kv1_read_and_version_is_refused() {
    let admin = BaoAdmin::shared();
    let mount = unique("kv1");
    admin.enable_kv(&mount, 1).await;
    admin
        .put_v1(
            &mount,
            "app/config",
            json!({"url": "https://x", "token": "t0k"}),
        )
        .await;

    let backend = connect_token("", &mount, 1, &root_token()).await;
    let value = backend
        .read(&ReadRequest::latest("app/config"))
        .await
        .unwrap();
    assert_eq!(json_of(&value), json!({"url": "https://x", "token": "t0k"}));
    let token = keys::extract_property(&value, "app/config", "token").unwrap();
    assert_eq!(text(&token), "t0k");

    let err = read_err(&backend, versioned("app/config", "1")).await;
    assert_eq!(err.reason, Reason::InvalidConfig, "{err}");
    assert!(err.message.contains("app/config"), "{err}");

    let err = read_err(&backend, ReadRequest::latest("app/missing")).await;
    assert_eq!(err.reason, Reason::SecretNotFound, "{err}");
}

#[tokio::test]
async fn kv2_version_pins() {
    let admin = BaoAdmin::shared();
    let mount = unique("kv2v");
    admin.enable_kv(&mount, 2).await;
    assert_eq!(
        admin.put_v2(&mount, "db", json!({"password": "one"})).await,
        1
    );
    assert_eq!(
        admin.put_v2(&mount, "db", json!({"password": "two"})).await,
        2
    );

    let backend = connect_token("", &mount, 2, &root_token()).await;
    let latest = backend.read(&ReadRequest::latest("db")).await.unwrap();
    assert_eq!(json_of(&latest), json!({"password": "two"}));
    let v1 = backend.read(&versioned("db", "1")).await.unwrap();
    assert_eq!(json_of(&v1), json!({"password": "one"}));
    let v2 = backend.read(&versioned("db", "2")).await.unwrap();
    assert_eq!(json_of(&v2), json!({"password": "two"}));

    for bad in ["abc", "-1", "0", "1.5"] {
        let err = read_err(&backend, versioned("db", bad)).await;
        assert_eq!(err.reason, Reason::InvalidConfig, "{bad}: {err}");
        assert!(err.message.contains("\"db\""), "names the key: {err}");
    }

    let err = read_err(&backend, versioned("db", "7")).await;
    assert_eq!(err.reason, Reason::SecretNotFound, "{err}");

    // Soft-deleted and destroyed versions are not found.
    admin
        .ok(
            "POST",
            &format!("{mount}/delete/db"),
            Some(json!({"versions": [1]})),
        )
        .await;
    let err = read_err(&backend, versioned("db", "1")).await;
    assert_eq!(err.reason, Reason::SecretNotFound, "{err}");
    admin
        .ok(
            "PUT",
            &format!("{mount}/destroy/db"),
            Some(json!({"versions": [2]})),
        )
        .await;
    let err = read_err(&backend, versioned("db", "2")).await;
    assert_eq!(err.reason, Reason::SecretNotFound, "{err}");
    let err = read_err(&backend, ReadRequest::latest("db")).await;
    assert_eq!(err.reason, Reason::SecretNotFound, "{err}");
}

#[tokio::test]
async fn prefix_is_prepended_and_invisible() {
    let admin = BaoAdmin::shared();
    let mount = unique("kvp");
    admin.enable_kv(&mount, 2).await;
    admin
        .put_v2(
            &mount,
            "apps/shop/database",
            json!({"url": "postgres://db"}),
        )
        .await;
    admin
        .put_v2(&mount, "apps/shopfront", json!({"url": "https://front"}))
        .await;

    let backend = connect_token("apps/shop/", &mount, 2, &root_token()).await;
    let value = backend
        .read(&ReadRequest::latest("database"))
        .await
        .unwrap();
    assert_eq!(json_of(&value), json!({"url": "postgres://db"}));
    assert_eq!(backend.list("").await.unwrap(), ["database"]);

    // The prefix is literal: without a trailing slash it is a name prefix.
    let backend = connect_token("apps/shop", &mount, 2, &root_token()).await;
    let value = backend.read(&ReadRequest::latest("front")).await.unwrap();
    assert_eq!(json_of(&value), json!({"url": "https://front"}));
    assert_eq!(backend.list("").await.unwrap(), ["/database", "front"]);

    // Keys and listings cannot climb out of the prefix.
    let err = backend.list("../").await.unwrap_err();
    assert_eq!(err.reason, Reason::InvalidConfig, "{err}");
    for bad in ["../other", "a//b", "./x", ""] {
        let err = read_err(&backend, ReadRequest::latest(bad)).await;
        assert_eq!(err.reason, Reason::InvalidConfig, "{bad:?}: {err}");
    }
}

// ---------------------------------------------------------------------------------------
// Listing (find)
// ---------------------------------------------------------------------------------------

async fn seed_tree(admin: &BaoAdmin, mount: &str, version: u8) {
    for key in [
        "apps/shop/db",
        "apps/shop/api/key",
        "apps/shop/api/deep/er/most",
        "apps/other/x",
        "apps",
        "top",
    ] {
        let data = json!({ "k": key });
        if version == 2 {
            admin.put_v2(mount, key, data).await;
        } else {
            admin.put_v1(mount, key, data).await;
        }
    }
}

async fn check_listing(backend: &VaultBackend) {
    assert_eq!(
        backend.list("").await.unwrap(),
        [
            "apps",
            "apps/other/x",
            "apps/shop/api/deep/er/most",
            "apps/shop/api/key",
            "apps/shop/db",
            "top"
        ]
    );
    assert_eq!(
        backend.list("apps/").await.unwrap(),
        [
            "apps/other/x",
            "apps/shop/api/deep/er/most",
            "apps/shop/api/key",
            "apps/shop/db"
        ]
    );
    assert_eq!(
        backend.list("apps/sh").await.unwrap(),
        [
            "apps/shop/api/deep/er/most",
            "apps/shop/api/key",
            "apps/shop/db"
        ]
    );
    assert_eq!(backend.list("t").await.unwrap(), ["top"]);
    assert!(backend.list("nothing/here/").await.unwrap().is_empty());
}

#[tokio::test]
async fn kv2_list_is_recursive() {
    let admin = BaoAdmin::shared();
    let mount = unique("kv2l");
    admin.enable_kv(&mount, 2).await;
    let backend = connect_token("", &mount, 2, &root_token()).await;
    assert!(backend.list("").await.unwrap().is_empty(), "empty mount");
    seed_tree(&admin, &mount, 2).await;
    check_listing(&backend).await;

    let prefixed = connect_token("apps/", &mount, 2, &root_token()).await;
    assert_eq!(
        prefixed.list("").await.unwrap(),
        [
            "other/x",
            "shop/api/deep/er/most",
            "shop/api/key",
            "shop/db"
        ]
    );
    assert_eq!(
        prefixed.list("shop/api/").await.unwrap(),
        ["shop/api/deep/er/most", "shop/api/key"]
    );
}

#[tokio::test]
async fn kv1_list_is_recursive() {
    let admin = BaoAdmin::shared();
    let mount = unique("kv1l");
    admin.enable_kv(&mount, 1).await;
    let backend = connect_token("", &mount, 1, &root_token()).await;
    assert!(backend.list("").await.unwrap().is_empty(), "empty mount");
    seed_tree(&admin, &mount, 1).await;
    check_listing(&backend).await;
}

// ---------------------------------------------------------------------------------------
// Auth
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn token_auth_with_policy() {
    let admin = BaoAdmin::shared();
    let mount = unique("kvt");
    admin.enable_kv(&mount, 2).await;
    admin.put_v2(&mount, "allowed/a", json!({"v": "1"})).await;
    admin.put_v2(&mount, "denied/b", json!({"v": "2"})).await;
    let policy = unique("pol");
    admin
        .policy(
            &policy,
            &format!(
                "path \"{mount}/data/allowed/*\" {{ capabilities = [\"read\"] }}\n\
                 path \"{mount}/metadata/*\" {{ capabilities = [\"list\"] }}\n"
            ),
        )
        .await;
    let token = admin.token_with_policy(&policy).await;

    let backend = connect_token("", &mount, 2, &token).await;
    backend.validate().await.unwrap();
    let value = backend
        .read(&ReadRequest::latest("allowed/a"))
        .await
        .unwrap();
    assert_eq!(json_of(&value), json!({"v": "1"}));
    let err = read_err(&backend, ReadRequest::latest("denied/b")).await;
    assert_eq!(err.reason, Reason::AccessDenied, "{err}");
    assert!(err.message.contains("denied/b"), "{err}");
    assert_eq!(backend.list("").await.unwrap(), ["allowed/a", "denied/b"]);
}

#[tokio::test]
async fn token_falls_back_to_vault_token_env_only_when_secret_is_missing() {
    let admin = BaoAdmin::shared();
    let mount = unique("kvf");
    admin.enable_kv(&mount, 2).await;
    admin.put_v2(&mount, "k", json!({"v": "1"})).await;
    let spec = source(&bao_addr(), &mount, 2, token_auth());

    let creds = MapCredentials {
        vault_token: Some(root_token()),
        ..Default::default()
    };
    let backend = VaultBackend::connect(String::new(), &spec, &creds)
        .await
        .unwrap();
    backend.read(&ReadRequest::latest("k")).await.unwrap();

    // The Secret wins over the fallback.
    let mut creds = MapCredentials::with("vault-token", "token", "wrong-token");
    creds.vault_token = Some(root_token());
    let backend = VaultBackend::connect(String::new(), &spec, &creds)
        .await
        .unwrap();
    let err = read_err(&backend, ReadRequest::latest("k")).await;
    assert_eq!(err.reason, Reason::AccessDenied, "{err}");

    // Neither: InvalidConfig naming the Secret.
    let err = VaultBackend::connect(String::new(), &spec, &MapCredentials::default())
        .await
        .err()
        .expect("connect without credentials must fail");
    assert_eq!(err.reason, Reason::InvalidConfig, "{err}");
    assert!(err.message.contains("vault-token"), "{err}");
}

#[tokio::test]
async fn wrong_token_is_access_denied() {
    let admin = BaoAdmin::shared();
    let mount = unique("kvw");
    admin.enable_kv(&mount, 2).await;
    admin.put_v2(&mount, "k", json!({"v": "1"})).await;
    let backend = connect_token("", &mount, 2, "not-a-real-token").await;
    let err = read_err(&backend, ReadRequest::latest("k")).await;
    assert_eq!(err.reason, Reason::AccessDenied, "{err}");
    let err = backend.validate().await.unwrap_err();
    assert_eq!(err.reason, Reason::AccessDenied, "{err}");
    let err = backend.list("").await.unwrap_err();
    assert_eq!(err.reason, Reason::AccessDenied, "{err}");
}

#[tokio::test]
async fn missing_key_is_not_found() {
    let admin = BaoAdmin::shared();
    let mount = unique("kvm");
    admin.enable_kv(&mount, 2).await;
    let backend = connect_token("", &mount, 2, &root_token()).await;
    let err = read_err(&backend, ReadRequest::latest("no/such/key")).await;
    assert_eq!(err.reason, Reason::SecretNotFound, "{err}");
    assert!(err.message.contains("no/such/key"), "{err}");
}

/// An AppRole on the shared server: role `role` at a fresh auth mount, whose tokens live
/// `ttl` and may read `<mount>/data/<read_path>`; a source and credentials using it, and a
/// backend connected with them.
struct AppRole {
    auth_mount: String,
    role_id: String,
    spec: VaultSource,
    creds: MapCredentials,
    backend: VaultBackend,
}

async fn approle(admin: &BaoAdmin, mount: &str, read_path: &str, role: &str, ttl: &str) -> AppRole {
    let policy = unique("pol");
    admin
        .policy(
            &policy,
            &format!("path \"{mount}/data/{read_path}\" {{ capabilities = [\"read\"] }}"),
        )
        .await;
    let auth_mount = unique("approle");
    let (role_id, secret_id) = admin.approle(&auth_mount, role, &policy, ttl).await;
    let spec = source(&bao_addr(), mount, 2, approle_auth(&auth_mount, &role_id));
    let creds = MapCredentials::with("approle", "secret-id", &secret_id);
    let backend = VaultBackend::connect(String::new(), &spec, &creds)
        .await
        .unwrap();
    AppRole {
        auth_mount,
        role_id,
        spec,
        creds,
        backend,
    }
}

#[tokio::test]
async fn approle_auth_reads_within_its_policy() {
    let admin = BaoAdmin::shared();
    let mount = unique("kva");
    admin.enable_kv(&mount, 2).await;
    admin
        .put_v2(&mount, "shop/db", json!({"password": "pw"}))
        .await;
    admin
        .put_v2(&mount, "other/db", json!({"password": "no"}))
        .await;
    let AppRole {
        role_id,
        spec,
        creds,
        backend,
        ..
    } = approle(&admin, &mount, "shop/*", "shop", "1h").await;

    backend.validate().await.unwrap();
    let value = backend.read(&ReadRequest::latest("shop/db")).await.unwrap();
    assert_eq!(json_of(&value), json!({"password": "pw"}));
    let err = read_err(&backend, ReadRequest::latest("other/db")).await;
    assert_eq!(err.reason, Reason::AccessDenied, "{err}");

    // A wrong secret ID fails at connect with AccessDenied.
    let wrong = MapCredentials::with(
        "approle",
        "secret-id",
        "00000000-0000-0000-0000-000000000000",
    );
    let err = VaultBackend::connect(String::new(), &spec, &wrong)
        .await
        .err()
        .expect("wrong secret id must fail");
    assert_eq!(err.reason, Reason::AccessDenied, "{err}");

    // An auth mount that does not exist is a configuration error.
    let spec = source(
        &bao_addr(),
        &mount,
        2,
        approle_auth("no-such-approle", &role_id),
    );
    let err = VaultBackend::connect(String::new(), &spec, &creds)
        .await
        .err()
        .expect("missing auth mount must fail");
    assert!(
        matches!(err.reason, Reason::InvalidConfig | Reason::AccessDenied),
        "{err}"
    );
}

#[tokio::test]
async fn approle_token_is_renewed_before_expiry() {
    let admin = BaoAdmin::shared();
    let mount = unique("kvr");
    admin.enable_kv(&mount, 2).await;
    admin.put_v2(&mount, "k", json!({"v": "1"})).await;
    // Tokens live 3 s and cannot be renewed past that: reads after 3 s only work if the
    // backend logged in again.
    let role = approle(&admin, &mount, "*", "r", "3s").await;
    let backend = role.backend;
    let login_path = format!("auth/{}/login", role.auth_mount);
    for _ in 0..4 {
        backend.read(&ReadRequest::latest("k")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    backend.read(&ReadRequest::latest("k")).await.unwrap();
    let logins = count_audit_requests(&shared_audit_log(), &login_path);
    assert!(logins >= 2, "expected re-logins, saw {logins}");
}

#[tokio::test]
async fn approle_relogs_in_once_after_403() {
    let admin = BaoAdmin::shared();
    let mount = unique("kv403");
    admin.enable_kv(&mount, 2).await;
    admin.put_v2(&mount, "k", json!({"v": "1"})).await;
    let role = approle(&admin, &mount, "k", "r", "1h").await;
    let (auth_mount, backend) = (role.auth_mount, role.backend);
    backend.read(&ReadRequest::latest("k")).await.unwrap();

    // Revoke every token issued by this AppRole mount (as if it had been revoked or
    // expired early), after the minimum re-login interval.
    tokio::time::sleep(Duration::from_secs(11)).await;
    admin
        .ok(
            "PUT",
            &format!("sys/leases/revoke-prefix/auth/{auth_mount}"),
            None,
        )
        .await;
    let login_path = format!("auth/{auth_mount}/login");
    let log = shared_audit_log();
    let before = count_audit_requests(&log, &login_path);
    backend.read(&ReadRequest::latest("k")).await.unwrap();
    assert_eq!(count_audit_requests(&log, &login_path), before + 1);
    // A policy denial on a fresh token does not trigger another login.
    admin.put_v2(&mount, "denied", json!({"v": "2"})).await;
    let err = read_err(&backend, ReadRequest::latest("denied")).await;
    assert_eq!(err.reason, Reason::AccessDenied, "{err}");
    assert_eq!(count_audit_requests(&log, &login_path), before + 1);
}

// ---------------------------------------------------------------------------------------
// Configuration errors
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn bad_configuration_is_invalid_config() {
    let creds = MapCredentials::with("vault-token", "token", "t");
    let cases = [
        ("not a url", None),
        ("ftp://127.0.0.1:1", None),
        ("http://127.0.0.1:1/vault", None),
        ("https://127.0.0.1:1", Some("not a pem")),
        (
            "https://127.0.0.1:1",
            Some("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
        ),
    ];
    for (server, ca) in cases {
        let mut spec = source(server, "secret", 2, token_auth());
        spec.ca_bundle = ca.map(str::to_string);
        let err = VaultBackend::connect(String::new(), &spec, &creds)
            .await
            .err()
            .unwrap_or_else(|| panic!("{server} / {ca:?} must fail"));
        assert_eq!(err.reason, Reason::InvalidConfig, "{server} {ca:?}: {err}");
    }

    let mut spec = source(&bao_addr(), "secret", 3, token_auth());
    let err = VaultBackend::connect(String::new(), &spec, &creds)
        .await
        .err()
        .unwrap();
    assert_eq!(err.reason, Reason::InvalidConfig, "{err}");

    spec.kv_version = 2;
    spec.auth = VaultAuth::default();
    let err = VaultBackend::connect(String::new(), &spec, &creds)
        .await
        .err()
        .unwrap();
    assert_eq!(err.reason, Reason::InvalidConfig, "{err}");

    let mut both = token_auth();
    both.app_role = approle_auth("approle", "r").app_role;
    spec.auth = both;
    let err = VaultBackend::connect(String::new(), &spec, &creds)
        .await
        .err()
        .unwrap();
    assert_eq!(err.reason, Reason::InvalidConfig, "{err}");

    // A token that cannot be sent as a header is refused, without echoing it.
    let spec = source(&bao_addr(), "secret", 2, token_auth());
    let bad = MapCredentials::with("vault-token", "token", "abc\u{1}def");
    let err = VaultBackend::connect(String::new(), &spec, &bad)
        .await
        .err()
        .unwrap();
    assert_eq!(err.reason, Reason::InvalidConfig, "{err}");
    assert!(!err.message.contains("abc"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Outages (private servers)
// ---------------------------------------------------------------------------------------

/// A private server holding `secret/k`, and a token-auth backend that has read it once.
async fn private_server_with_backend() -> (BaoServer, VaultBackend) {
    let bao = BaoServer::start().await.unwrap();
    bao.admin().put_v2("secret", "k", json!({"v": "1"})).await;
    let spec = source(&bao.address, "secret", 2, token_auth());
    let backend = VaultBackend::connect(
        String::new(),
        &spec,
        &MapCredentials::with("vault-token", "token", "root"),
    )
    .await
    .unwrap();
    backend.read(&ReadRequest::latest("k")).await.unwrap();
    (bao, backend)
}

#[tokio::test]
async fn stopped_server_is_backend_unavailable() {
    let (mut bao, backend) = private_server_with_backend().await;

    bao.process.kill();
    let err = read_err(&backend, ReadRequest::latest("k")).await;
    assert_eq!(err.reason, Reason::BackendUnavailable, "{err}");
    assert!(err.message.contains("\"k\""), "{err}");
    let err = backend.list("").await.unwrap_err();
    assert_eq!(err.reason, Reason::BackendUnavailable, "{err}");
    let err = backend.validate().await.unwrap_err();
    assert_eq!(err.reason, Reason::BackendUnavailable, "{err}");
}

#[tokio::test]
async fn sealed_server_is_backend_unavailable() {
    let (bao, backend) = private_server_with_backend().await;

    bao.seal().await;
    let err = read_err(&backend, ReadRequest::latest("k")).await;
    assert_eq!(err.reason, Reason::BackendUnavailable, "{err}");
    let err = backend.validate().await.unwrap_err();
    assert_eq!(err.reason, Reason::BackendUnavailable, "{err}");
}

#[tokio::test]
async fn tls_with_ca_bundle() {
    let bao = BaoServer::start_tls().await.unwrap();
    let ca = bao.ca_pem().unwrap().to_string();
    let creds = MapCredentials::with("vault-token", "token", "root");
    let mut spec = source(&bao.address, "secret", 2, token_auth());
    spec.ca_bundle = Some(ca.clone());
    let backend = VaultBackend::connect(String::new(), &spec, &creds)
        .await
        .unwrap();
    backend.validate().await.unwrap();
    let err = read_err(&backend, ReadRequest::latest("missing")).await;
    assert_eq!(err.reason, Reason::SecretNotFound, "{err}");

    // Without the CA the server's certificate is not trusted.
    spec.ca_bundle = None;
    let backend = VaultBackend::connect(String::new(), &spec, &creds)
        .await
        .unwrap();
    let err = backend.validate().await.unwrap_err();
    assert_eq!(err.reason, Reason::BackendUnavailable, "{err}");
    assert!(err.message.to_lowercase().contains("certificate"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Namespaces
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn namespaces_are_sent_as_header() {
    let admin = BaoAdmin::shared();
    let ns = unique("ns");
    let (status, body) = admin
        .call("POST", &format!("sys/namespaces/{ns}"), None)
        .await;
    assert!(
        (200..300).contains(&status),
        "this OpenBao does not support namespaces ({status}: {body})"
    );
    let in_ns = admin.in_namespace(&ns);
    in_ns.enable_kv("kv", 2).await;
    in_ns
        .put_v2("kv", "app/db", json!({"password": "ns-pw"}))
        .await;

    let mut spec = source(&bao_addr(), "kv", 2, token_auth());
    spec.namespace = Some(ns.clone());
    let creds = MapCredentials::with("vault-token", "token", &root_token());
    let backend = VaultBackend::connect(String::new(), &spec, &creds)
        .await
        .unwrap();
    backend.validate().await.unwrap();
    let value = backend.read(&ReadRequest::latest("app/db")).await.unwrap();
    assert_eq!(json_of(&value), json!({"password": "ns-pw"}));
    assert_eq!(backend.list("").await.unwrap(), ["app/db"]);

    // Without the namespace the mount does not exist.
    spec.namespace = None;
    let backend = VaultBackend::connect(String::new(), &spec, &creds)
        .await
        .unwrap();
    let err = read_err(&backend, ReadRequest::latest("app/db")).await;
    assert_ne!(err.reason, Reason::BackendUnavailable, "{err}");
}

// ---------------------------------------------------------------------------------------
// Request counting (audit log) and secret hygiene
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn audit_log_counts_every_read() {
    let admin = BaoAdmin::shared();
    let mount = unique("kvc");
    admin.enable_kv(&mount, 2).await;
    let key = unique("counted");
    admin.put_v2(&mount, &key, json!({"v": "1"})).await;
    let path = format!("{mount}/data/{key}");
    let log = shared_audit_log();
    assert_eq!(count_audit_requests(&log, &path), 1, "the write");

    let backend = connect_token("", &mount, 2, &root_token()).await;
    for _ in 0..100 {
        backend
            .read(&ReadRequest::latest(key.as_str()))
            .await
            .unwrap();
    }
    assert_eq!(count_audit_requests(&log, &path), 101);
}

/// Captures every tracing event (all levels, all crates) into a buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn canary_never_appears_in_errors_or_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let canary = format!("CANARY-{}", unique("c"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let messages = tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(canary_scenario(&canary))
    });
    assert!(messages.len() >= 6, "{messages:?}");
    for m in &messages {
        assert!(!m.contains(&canary), "canary leaked into an error: {m}");
    }
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("vault request"), "debug events are emitted");
    assert!(!logs.contains(&canary), "canary leaked into logs");
    assert!(!logs.contains("CANARY"), "canary leaked into logs");
}

/// Drives error paths around a planted canary value; returns every error's Display and
/// Debug text.
async fn canary_scenario(canary: &str) -> Vec<String> {
    let admin = BaoAdmin::shared();
    let mount = unique("kvcan");
    admin.enable_kv(&mount, 2).await;
    admin
        .put_v2(
            &mount,
            "app",
            json!({"password": canary, "nested": {"inner": canary}, "list": [canary]}),
        )
        .await;
    let mut errors: Vec<BackendError> = Vec::new();

    let good = connect_token("", &mount, 2, &root_token()).await;
    let value = good.read(&ReadRequest::latest("app")).await.unwrap();
    assert!(!format!("{value:?}").contains(canary));
    let all = keys::extract_all(&value, "app").unwrap();
    assert!(!format!("{all:?}").contains(canary));
    // Missing property.
    errors.push(keys::extract_property(&value, "app", "missing").unwrap_err());
    // A property on a value that is not JSON (the canary string itself).
    let password = keys::extract_property(&value, "app", "password").unwrap();
    errors.push(keys::extract_property(&password, "app", "x").unwrap_err());
    errors.push(keys::extract_all(&password, "app").unwrap_err());
    // Wrong token.
    let bad = connect_token("", &mount, 2, "wrong-token").await;
    errors.push(bad.read(&ReadRequest::latest("app")).await.unwrap_err());
    errors.push(bad.list("").await.unwrap_err());
    // Missing and deleted versions.
    errors.push(good.read(&versioned("app", "9")).await.unwrap_err());
    admin
        .ok(
            "POST",
            &format!("{mount}/delete/app"),
            Some(json!({"versions": [1]})),
        )
        .await;
    errors.push(good.read(&versioned("app", "1")).await.unwrap_err());
    // A KV v1 read of a v2 mount (wrong kvVersion) answers with a different body shape.
    let v1 = connect_token("", &mount, 1, &root_token()).await;
    if let Err(e) = v1.read(&ReadRequest::latest("app")).await {
        errors.push(e);
    }

    let mut out = Vec::new();
    for e in errors {
        out.push(e.to_string());
        out.push(format!("{e:?}"));
    }
    let _ = std::io::stderr().flush();
    out
}
