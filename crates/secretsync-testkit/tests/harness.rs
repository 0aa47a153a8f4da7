//! The e2e harness: environments, child processes, polling, launchers, the standalone binary.

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ListParams};
use secretsync_testkit::TestkitError;
use secretsync_testkit::harness::{ChildProcess, MotoServer, http_status, wait_for, wait_until};
use secretsync_testkit::{BaoServer, TestEnv};

#[tokio::test]
async fn wait_for_times_out_and_succeeds() {
    let err = wait_for(Duration::from_millis(100), || async { false })
        .await
        .unwrap_err();
    assert!(matches!(err, TestkitError::Timeout(_)));
    let mut n = 0;
    let v = wait_until(Duration::from_secs(5), || {
        n += 1;
        let n = n;
        async move { (n >= 3).then_some(n) }
    })
    .await
    .unwrap();
    assert_eq!(v, 3);
}

#[tokio::test]
async fn child_process_captures_output_and_is_killed_on_drop() {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "echo hello; echo oops >&2; exec sleep 600"]);
    let mut child = ChildProcess::spawn(cmd).unwrap();
    child
        .wait_for_output("hello", Duration::from_secs(10))
        .await
        .unwrap();
    child
        .wait_for_output("oops", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(child.stdout().contains("hello"));
    assert!(child.stderr().contains("oops"));
    assert!(child.is_running());
    let pid = child.id();
    drop(child);
    // the process is gone (killed and reaped)
    let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
    assert!(!alive, "process {pid} still exists after drop");
}

#[tokio::test]
async fn child_process_reports_early_exit() {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "echo bye; exit 3"]);
    let mut child = ChildProcess::spawn(cmd).unwrap();
    let err = child
        .wait_for_output("never printed", Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("bye"), "{err}");
}

#[tokio::test]
async fn test_env_on_the_fake() {
    let env = TestEnv::start().await.unwrap();
    assert!(env.is_fake());
    assert!(env.kubeconfig.exists());
    let ns = Api::<Namespace>::all(env.client.clone())
        .get(&env.namespace)
        .await
        .unwrap();
    assert_eq!(ns.metadata.name.as_deref(), Some(env.namespace.as_str()));
    env.install_crds().await.unwrap();
    // fault injection is available on the fake
    env.fake().unwrap().fail_next("list", "secrets", 1, 500);
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.namespace);
    assert!(secrets.list(&ListParams::default()).await.is_err());
    assert!(secrets.list(&ListParams::default()).await.is_ok());
    // a child process gets KUBECONFIG
    let mut child = env
        .spawn(std::path::Path::new("sh"), &["-c", "echo $KUBECONFIG"])
        .unwrap();
    child
        .wait_for_output(&env.kubeconfig.to_string_lossy(), Duration::from_secs(10))
        .await
        .unwrap();
    env.cleanup().await.unwrap();
}

#[tokio::test]
async fn standalone_binary_serves_with_crds() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_secretsync-fake-apiserver"));
    cmd.arg("--kubeconfig-out")
        .arg(&kc)
        .arg("--secretsync-crds");
    let mut child = ChildProcess::spawn(cmd).unwrap();
    child
        .wait_for_output("listening on http://", Duration::from_secs(20))
        .await
        .unwrap();
    let out = child.stdout();
    let url = out.trim().trim_start_matches("listening on ");
    let addr = url.trim_start_matches("http://");
    assert_eq!(http_status(addr, "/version").await, Some(200));
    // No credentials: the admin, as on the old insecure port (kubectl sends no token
    // over plain HTTP).
    assert_eq!(
        http_status(addr, "/apis/secretsync.dev/v1alpha1").await,
        Some(200)
    );
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kc).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let v = client.apiserver_version().await.unwrap();
    assert_eq!(v.major, "1");
    let resources = client
        .list_api_group_resources("secretsync.dev/v1alpha1")
        .await
        .unwrap();
    assert!(
        resources
            .resources
            .iter()
            .any(|r| r.name == "secretbindings"),
        "{resources:?}"
    );
}

#[tokio::test]
async fn moto_launcher() {
    let moto = match MotoServer::start().await {
        Ok(m) => m,
        Err(TestkitError::Unsupported(why)) => {
            println!("skipping: {why}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let addr = moto.endpoint.trim_start_matches("http://").to_owned();
    assert!(http_status(&addr, "/moto-api/").await.is_some());
    let pid = moto.process.id();
    drop(moto);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

#[tokio::test]
async fn bao_launcher() {
    let bao = match BaoServer::start().await {
        Ok(b) => b,
        Err(TestkitError::Unsupported(why)) => {
            println!("skipping: {why}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let addr = bao.address.trim_start_matches("http://").to_owned();
    assert_eq!(http_status(&addr, "/v1/sys/health").await, Some(200));
    assert_eq!(bao.root_token, "root");
}

#[tokio::test]
async fn bao_tls_launcher() {
    let bao = match BaoServer::start_tls().await {
        Ok(b) => b,
        Err(TestkitError::Unsupported(why)) => {
            println!("skipping: {why}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    assert!(
        bao.address.starts_with("https://127.0.0.1:"),
        "{}",
        bao.address
    );
    let ca = bao.ca_pem().expect("a TLS server exposes its CA");
    assert!(ca.contains("BEGIN CERTIFICATE"), "{ca}");
    // The admin client trusts the generated CA.
    let (status, _) = bao.admin().call("GET", "sys/health", None).await;
    assert_eq!(status, 200);
}
