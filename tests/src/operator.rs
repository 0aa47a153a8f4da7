//! The operator under test: the real `secretsync run` binary, authenticated as the
//! ServiceAccount the Helm chart installs and authorized by the chart's RBAC only.

use std::path::PathBuf;
use std::sync::OnceLock;

use secretsync_testkit::harness::{ChildProcess, free_port, wait_until};
use secretsync_testkit::{OperatorIdentity, TestEnv, WatchScope};
use serde_json::{Value, json};

use crate::{WAIT, http_get};

/// The operator binary: `SECRETSYNC_BIN`, else the workspace's debug build (built once per
/// test binary, on demand).
pub fn binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("SECRETSYNC_BIN") {
            return PathBuf::from(p);
        }
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "secretsync", "--bin", "secretsync"])
            .current_dir(&root)
            .status()
            .expect("cargo build");
        assert!(status.success(), "building the operator failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        target.join("debug").join("secretsync")
    })
    .clone()
}

/// How to start an operator process.
#[derive(Debug, Clone)]
pub struct OperatorOpts {
    /// Leader-election identity (`POD_NAME`).
    pub identity: String,
    /// Which namespaces it watches, with the chart's RBAC for that mode.
    pub scope: WatchScope,
    /// Helm values on top of the scope's (e.g. `rbac.vaultKubernetesAuth`).
    pub chart_values: Value,
    /// `--file-root`.
    pub file_root: Option<PathBuf>,
    /// Extra arguments of `secretsync run`.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub envs: Vec<(String, String)>,
    /// `RUST_LOG`.
    pub rust_log: String,
}

impl Default for OperatorOpts {
    fn default() -> Self {
        OperatorOpts {
            identity: "op-1".into(),
            scope: WatchScope::Namespace,
            chart_values: json!({}),
            file_root: None,
            args: Vec::new(),
            envs: Vec::new(),
            rust_log: "info".into(),
        }
    }
}

/// A running `secretsync run`, killed on drop.
pub struct Operator {
    /// The process (captured output).
    pub process: ChildProcess,
    /// `127.0.0.1:PORT` of `/metrics`.
    pub metrics_addr: String,
    /// `127.0.0.1:PORT` of `/healthz`, `/readyz`.
    pub health_addr: String,
    /// Who it authenticates as.
    pub identity: OperatorIdentity,
}

impl Operator {
    /// [`Operator::start`] with default options, watching every namespace.
    pub async fn all_namespaces(env: &TestEnv) -> Operator {
        Operator::start(
            env,
            &OperatorOpts {
                scope: WatchScope::AllNamespaces,
                ..Default::default()
            },
        )
        .await
    }

    /// Installs the chart's ServiceAccount and RBAC for `opts.scope` and starts the
    /// operator with a token of that ServiceAccount. Its operator namespace (Lease, HMAC
    /// key) is [`TestEnv::operator_namespace`], apart from the test's.
    pub async fn start(env: &TestEnv, opts: &OperatorOpts) -> Operator {
        assert!(
            opts.scope == WatchScope::Namespace || env.is_exclusive(),
            "an all-namespaces operator needs an environment of its own on a real cluster: \
             start the test with env_all_namespaces()"
        );
        let identity = env
            .operator_identity(opts.scope, &opts.chart_values)
            .await
            .unwrap_or_else(|e| panic!("installing the chart's RBAC: {e}"));
        let metrics = free_port().expect("free port");
        let health = free_port().expect("free port");
        let mut cmd = std::process::Command::new(binary());
        cmd.args(["run", "--log-format", "text", "--operator-namespace"])
            .arg(env.operator_namespace());
        if opts.scope == WatchScope::Namespace {
            cmd.args(["--namespace", &env.namespace]);
        }
        cmd.arg(format!("--metrics-addr=127.0.0.1:{metrics}"))
            .arg(format!("--health-addr=127.0.0.1:{health}"))
            .args(&opts.args)
            .env("KUBECONFIG", &identity.kubeconfig)
            .env("POD_NAME", &opts.identity)
            .env("RUST_LOG", &opts.rust_log)
            .env("NO_COLOR", "1");
        if let Some(root) = &opts.file_root {
            cmd.arg(format!("--file-root={}", root.display()));
        }
        for (k, v) in &opts.envs {
            cmd.env(k, v);
        }
        Operator {
            process: ChildProcess::spawn(cmd).expect("starting the operator"),
            metrics_addr: format!("127.0.0.1:{metrics}"),
            health_addr: format!("127.0.0.1:{health}"),
            identity,
        }
    }

    /// Captured output so far.
    pub fn output(&self) -> String {
        self.process.output()
    }

    /// The `/metrics` text (empty when it does not answer).
    pub async fn metrics(&self) -> String {
        http_get(&format!("http://{}/metrics", self.metrics_addr))
            .await
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// The value of one metric series (its exact text before the value), 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Whether the kernel may give the operator process transparent huge pages
    /// (`THP_enabled` in `/proc/<pid>/status`); `None` where the kernel does not say.
    pub fn thp_enabled(&self) -> Option<bool> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.process.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("THP_enabled:"))
            .map(|v| v.trim() != "0")
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.process.id().to_string()])
            .status();
    }

    /// Waits for the process to exit; its status.
    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let p = &mut self.process;
        wait_until(WAIT, || {
            let st = p.try_wait();
            async move { st }
        })
        .await
        .expect("the operator did not exit")
    }

    /// Fake API server only: every (verb, resource) the operator requested — told apart
    /// from the test's own client by its `User-Agent` — is listed in `rbac::API_ACCESS`,
    /// the table the chart's RBAC is checked against, and every request was made as the
    /// chart's ServiceAccount.
    pub fn assert_calls_in_rbac_table(&self, env: &TestEnv) {
        if crate::skip_assertions_without_fake(
            env,
            "every operator call is in rbac::API_ACCESS, made as its ServiceAccount",
        ) {
            return;
        }
        let Ok(fake) = env.fake() else {
            return;
        };
        let calls = fake.calls_by_agent("secretsync/");
        assert!(
            !calls.is_empty(),
            "no request carried the operator's User-Agent"
        );
        let missing: Vec<_> = calls
            .iter()
            .filter(|(verb, resource)| {
                !secretsync_controller::rbac::API_ACCESS
                    .iter()
                    .any(|a| a.resource == resource && a.verbs.contains(&verb.as_str()))
            })
            .collect();
        assert!(
            missing.is_empty(),
            "operator API calls missing from rbac::API_ACCESS (and so from the chart's RBAC): {missing:?}; all calls: {calls:?}"
        );
        let users = fake.users_by_agent("secretsync/");
        assert_eq!(
            users.into_iter().collect::<Vec<_>>(),
            vec![self.identity.user.clone()],
            "the operator authenticated as the chart's ServiceAccount only"
        );
    }
}
