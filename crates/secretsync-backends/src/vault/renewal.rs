//! Token lifecycle: logging in again before a login token expires, and once after a
//! refused request, with one login at a time however many reads ask for it.

use std::future::Future;
use std::sync::{Arc, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use tracing::warn;
use vaultrs::error::ClientError;

use super::VaultBackend;
use super::auth::{AuthMethod, CredentialSource, Login, login};
use super::conn::Session;
use super::error::{Op, is_denied, map_error, trace_request};
use crate::BackendError;

/// A 403 triggers a re-login only when the token is at least this old: a fresh token that
/// is refused means the policy says no, and logging in again would only add load.
const MIN_RELOGIN_INTERVAL: Duration = Duration::from_secs(10);
/// After a failed early refresh (the old token is still valid) wait this long before the
/// next attempt, so a broken auth backend is not hammered on every read.
const REFRESH_RETRY: Duration = Duration::from_secs(5);

/// The current token and when to replace it.
pub(super) struct AuthState {
    session: Arc<Session>,
    /// Bumped on every login, so a task that saw a refused token can tell whether someone
    /// else already logged in again.
    generation: u64,
    logged_in_at: Instant,
    /// When to log in again early; `None` for tokens without a known expiry.
    refresh_at: Option<Instant>,
    expires_at: Option<Instant>,
}

impl AuthState {
    pub(super) fn from_login(login: Login, generation: u64) -> Self {
        let now = Instant::now();
        AuthState {
            session: Arc::new(login.session),
            generation,
            logged_in_at: now,
            // Log in again once less than a third of the TTL remains.
            refresh_at: login.ttl.map(|ttl| now + ttl * 2 / 3),
            expires_at: login.ttl.map(|ttl| now + ttl),
        }
    }
}

impl VaultBackend {
    // The lock is only held for field copies, which cannot panic; recovering from a
    // poisoned lock is still safer than propagating a panic into every reconcile.
    fn state(&self) -> RwLockReadGuard<'_, AuthState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn state_mut(&self) -> RwLockWriteGuard<'_, AuthState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn current(&self) -> (Arc<Session>, u64) {
        let st = self.state();
        (st.session.clone(), st.generation)
    }

    /// Logs in again and installs the new token. The caller holds `login_lock`.
    async fn relogin(&self) -> Result<(), BackendError> {
        let material = match &self.credentials {
            CredentialSource::Snapshot(material) => material.clone(),
            CredentialSource::Live(provider) => self.auth.fetch_material(provider.as_ref()).await?,
        };
        let login = login(&self.conn, &self.auth, &material).await?;
        let mut st = self.state_mut();
        let generation = st.generation + 1;
        *st = AuthState::from_login(login, generation);
        Ok(())
    }

    /// The session to use now, refreshing the token first when it is due.
    async fn session(&self) -> Result<(Arc<Session>, u64), BackendError> {
        let now = Instant::now();
        let (session, generation, due, expired) = {
            let st = self.state();
            (
                st.session.clone(),
                st.generation,
                st.refresh_at.is_some_and(|t| now >= t),
                st.expires_at.is_some_and(|t| now >= t),
            )
        };
        if !due {
            return Ok((session, generation));
        }
        // One task refreshes; while the old token is still valid the others keep using it
        // instead of queueing behind the login.
        let _guard = if expired {
            self.login_lock.lock().await
        } else {
            match self.login_lock.try_lock() {
                Ok(guard) => guard,
                Err(_) => return Ok((session, generation)),
            }
        };
        {
            let st = self.state();
            if st.generation != generation {
                return Ok((st.session.clone(), st.generation));
            }
        }
        match self.relogin().await {
            Ok(()) => Ok(self.current()),
            Err(err) if !expired => {
                warn!(
                    backend = "vault",
                    operation = "login",
                    auth = self.auth.name(),
                    error = %err,
                    "refreshing the Vault token failed; using the current token until it expires"
                );
                self.state_mut().refresh_at = Some(Instant::now() + REFRESH_RETRY);
                Ok((session, generation))
            }
            Err(err) => Err(err),
        }
    }

    /// After a 403: logs in again (at most once per [`MIN_RELOGIN_INTERVAL`]) and returns
    /// the session to retry with, or `None` when a retry cannot help.
    async fn relogin_after_denied(&self, failed_generation: u64) -> Option<Arc<Session>> {
        if matches!(
            (&self.auth, &self.credentials),
            (AuthMethod::Token { .. }, CredentialSource::Snapshot(_))
        ) {
            // The same token again would be refused again.
            return None;
        }
        let _guard = self.login_lock.lock().await;
        {
            let st = self.state();
            if st.generation != failed_generation {
                return Some(st.session.clone());
            }
            if st.logged_in_at.elapsed() < MIN_RELOGIN_INTERVAL {
                return None;
            }
        }
        match self.relogin().await {
            Ok(()) => Some(self.current().0),
            Err(err) => {
                warn!(
                    backend = "vault",
                    operation = "login",
                    auth = self.auth.name(),
                    error = %err,
                    "logging in again after a refused request failed"
                );
                None
            }
        }
    }

    /// Runs one request with the current token; on 401/403 logs in again once and retries.
    pub(super) async fn call<T, F, Fut>(
        &self,
        op: Op,
        key: &str,
        what: &str,
        f: F,
    ) -> Result<T, BackendError>
    where
        F: Fn(Arc<Session>) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let (session, generation) = self.session().await?;
        let started = Instant::now();
        let first = f(session).await;
        trace_request(op, key, &first, started);
        match first {
            Err(err) if is_denied(&err) => match self.relogin_after_denied(generation).await {
                Some(session) => {
                    let started = Instant::now();
                    let second = f(session).await;
                    trace_request(op, key, &second, started);
                    second.map_err(|e| map_error(&e, op, what))
                }
                None => Err(map_error(&err, op, what)),
            },
            other => other.map_err(|e| map_error(&e, op, what)),
        }
    }
}
