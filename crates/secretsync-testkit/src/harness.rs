//! End-to-end harness: child processes that are always killed (even when a test panics)
//! and capture their output, polling helpers and the moto launcher. The test environment
//! (fake API server or real cluster) is in the `env` module, OpenBao in `bao`.

use std::future::Future;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::server::TestkitError;

/// Environment variable overriding the `bao` binary.
pub const BAO_BIN_ENV: &str = "SECRETSYNC_BAO_BIN";
/// Environment variable overriding the `moto_server` binary.
pub const MOTO_BIN_ENV: &str = "SECRETSYNC_MOTO_BIN";

const POLL: Duration = Duration::from_millis(25);

/// Poll `cond` until it returns true; `Err(Timeout)` after `timeout`.
pub async fn wait_for<F, Fut>(timeout: Duration, mut cond: F) -> Result<(), TestkitError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_until(timeout, || {
        let fut = cond();
        async move { fut.await.then_some(()) }
    })
    .await
}

/// Poll `f` until it returns `Some(value)`; `Err(Timeout)` after `timeout`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, mut f: F) -> Result<T, TestkitError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(TestkitError::Timeout(format!(
                "condition not met within {timeout:?}"
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A free TCP port on 127.0.0.1 (bound then released; good enough for tests).
pub fn free_port() -> Result<u16, TestkitError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// `GET path` over plain HTTP/1.1; the status code, or `None` if nothing answered.
pub async fn http_status(addr: &str, path: &str) -> Option<u16> {
    let connect = tokio::net::TcpStream::connect(addr);
    let mut s = tokio::time::timeout(Duration::from_secs(2), connect)
        .await
        .ok()?
        .ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace().nth(1)?.parse().ok()
}

/// A child process killed (and reaped) on drop, with stdout and stderr captured.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

fn pump(mut from: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => into
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&buf[..n]),
            }
        }
    });
}

impl ChildProcess {
    /// Spawn `cmd` (stdin closed, stdout/stderr captured).
    pub fn spawn(mut cmd: Command) -> Result<Self, TestkitError> {
        let name = cmd.get_program().to_string_lossy().into_owned();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| TestkitError::Other(format!("spawning {name}: {e}")))?;
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(o) = child.stdout.take() {
            pump(o, stdout.clone());
        }
        if let Some(e) = child.stderr.take() {
            pump(e, stderr.clone());
        }
        Ok(Self {
            name,
            child,
            stdout,
            stderr,
        })
    }

    /// Process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Captured stdout so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// Captured stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// stdout followed by stderr.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout(), self.stderr())
    }

    /// The exit status if the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_wait().is_none()
    }

    /// Wait until the output contains `needle`.
    pub async fn wait_for_output(
        &mut self,
        needle: &str,
        timeout: Duration,
    ) -> Result<(), TestkitError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.output().contains(needle) {
                return Ok(());
            }
            if let Some(st) = self.try_wait() {
                // the pumps may still be draining
                tokio::time::sleep(POLL).await;
                if self.output().contains(needle) {
                    return Ok(());
                }
                return Err(TestkitError::Other(format!(
                    "{} exited ({st}) before printing {needle:?}; output:\n{}",
                    self.name,
                    self.output()
                )));
            }
            if Instant::now() >= deadline {
                return Err(TestkitError::Timeout(format!(
                    "{} did not print {needle:?} within {timeout:?}; output:\n{}",
                    self.name,
                    self.output()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Kill now and reap.
    pub fn kill(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Find a program: `env_var` if set, else the first `name` on `PATH`.
pub fn find_binary(env_var: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env_var).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A moto server (AWS emulator), killed on drop.
#[derive(Debug)]
pub struct MotoServer {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The process.
    pub process: ChildProcess,
}

impl MotoServer {
    /// Start on a free port and wait until it answers HTTP.
    /// `Err(Unsupported)` when no `moto_server` binary is available.
    pub async fn start() -> Result<Self, TestkitError> {
        let bin = find_binary(MOTO_BIN_ENV, "moto_server").ok_or_else(|| {
            TestkitError::Unsupported(format!(
                "no moto_server binary (set {MOTO_BIN_ENV} or put it on PATH)"
            ))
        })?;
        let port = free_port()?;
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(bin);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let mut process = ChildProcess::spawn(cmd)?;
        let ready = wait_until(Duration::from_secs(30), || {
            let listen = listen.clone();
            async move { http_status(&listen, "/moto-api/").await.map(|_| ()) }
        })
        .await;
        if ready.is_err() || !process.is_running() {
            return Err(TestkitError::Other(format!(
                "moto_server did not become ready; output:\n{}",
                process.output()
            )));
        }
        Ok(Self {
            endpoint: format!("http://{listen}"),
            process,
        })
    }
}
