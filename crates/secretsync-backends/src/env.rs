//! Environment-variable backend, confined to the operator's `--env-allow` globs.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::sync::Arc;

use async_trait::async_trait;
use globset::{Glob, GlobSet, GlobSetBuilder};
use secretsync_api::BackendKind;

use crate::keys::env_var_name;
use crate::{Backend, BackendError, ReadRequest, SecretValue};

/// Which variables the env backend may read.
#[derive(Clone, Debug)]
pub struct EnvPolicy {
    set: GlobSet,
    patterns: Vec<String>,
    allow_all: bool,
}

impl EnvPolicy {
    /// Nothing is allowed (the operator's default).
    pub fn deny_all() -> Self {
        EnvPolicy {
            set: GlobSet::empty(),
            patterns: Vec::new(),
            allow_all: false,
        }
    }

    /// Everything is allowed (`render` on a developer machine).
    pub fn allow_all() -> Self {
        EnvPolicy {
            allow_all: true,
            ..Self::deny_all()
        }
    }

    /// Variables matching any of the globs are allowed.
    pub fn from_globs<S: AsRef<str>>(globs: &[S]) -> Result<Self, BackendError> {
        let mut builder = GlobSetBuilder::new();
        let mut patterns = Vec::new();
        for g in globs {
            let g = g.as_ref().trim();
            if g.is_empty() {
                continue;
            }
            builder.add(Glob::new(g).map_err(|e| {
                BackendError::invalid_config(format!("invalid --env-allow glob {g:?}: {e}"))
            })?);
            patterns.push(g.to_string());
        }
        let set = builder
            .build()
            .map_err(|e| BackendError::invalid_config(format!("invalid --env-allow globs: {e}")))?;
        Ok(EnvPolicy {
            set,
            patterns,
            allow_all: false,
        })
    }

    /// Whether variable `name` may be read.
    pub fn allows(&self, name: &str) -> bool {
        self.allow_all || self.set.is_match(name)
    }
}

/// Where an env backend finds variables.
#[derive(Clone, Default)]
pub enum Environment {
    /// The operator process's environment.
    #[default]
    Process,
    /// A fixed set of variables (tests: the process environment cannot be changed safely
    /// while other threads run).
    Fixed(Arc<BTreeMap<String, OsString>>),
}

impl Environment {
    fn var(&self, name: &str) -> Option<OsString> {
        match self {
            Environment::Process => std::env::var_os(name),
            Environment::Fixed(vars) => vars.get(name).cloned(),
        }
    }

    fn names(&self) -> Vec<String> {
        match self {
            Environment::Process => std::env::vars_os()
                .filter_map(|(k, _)| k.into_string().ok())
                .collect(),
            Environment::Fixed(vars) => vars.keys().cloned().collect(),
        }
    }
}

/// Reads the operator's environment.
pub struct EnvBackend {
    prefix: String,
    policy: EnvPolicy,
    environment: Environment,
}

impl EnvBackend {
    /// A backend reading variables `prefix + NAME` of the process environment.
    pub fn new(prefix: String, policy: EnvPolicy) -> Self {
        Self::with_environment(prefix, policy, Environment::Process)
    }

    /// A backend reading variables `prefix + NAME` of `environment`.
    pub fn with_environment(prefix: String, policy: EnvPolicy, environment: Environment) -> Self {
        EnvBackend {
            prefix,
            policy,
            environment,
        }
    }
}

#[async_trait]
impl Backend for EnvBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Env
    }

    async fn read(&self, req: &ReadRequest) -> Result<SecretValue, BackendError> {
        req.unversioned(self.kind())?;
        let name = env_var_name(&self.prefix, &req.key);
        if !self.policy.allows(&name) {
            return Err(BackendError::access_denied(format!(
                "environment variable {name:?} (remote key {:?}) is not allowed by the operator's --env-allow",
                req.key
            )));
        }
        match self.environment.var(&name) {
            Some(v) => Ok(SecretValue::new(v.into_encoded_bytes())),
            None => Err(BackendError::new(
                crate::Reason::SecretNotFound,
                format!(
                    "environment variable {name:?} (remote key {:?}) is not set",
                    req.key
                ),
            )),
        }
    }

    async fn list(&self, _under: &str) -> Result<Vec<String>, BackendError> {
        // Keys are the variable names after the prefix; the glob is matched against them.
        let allowed = self
            .environment
            .names()
            .into_iter()
            .filter(|k| self.policy.allows(k));
        Ok(crate::keys_after_prefix(&self.prefix, allowed))
    }

    async fn validate(&self) -> Result<(), BackendError> {
        if !self.policy.allow_all && self.policy.patterns.is_empty() {
            return Err(BackendError::access_denied(
                "the operator allows no environment variables (configure --env-allow)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn allow_list_is_enforced() {
        let vars = Environment::Fixed(Arc::new(
            [
                ("SSYNC_T1_DATABASE_URL", "postgres://x"),
                ("SSYNC_T1_OTHER", "o"),
                ("SSYNC_T1X_SECRET", "no"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect(),
        ));
        let b = EnvBackend::with_environment(
            "SSYNC_T1_".into(),
            EnvPolicy::from_globs(&["SSYNC_T1_DATABASE_*"]).unwrap(),
            vars.clone(),
        );
        let v = b.read(&ReadRequest::latest("database/url")).await.unwrap();
        assert_eq!(v.as_str(), Some("postgres://x"));
        let denied = b.read(&ReadRequest::latest("other")).await.unwrap_err();
        assert_eq!(denied.reason, crate::Reason::AccessDenied);
        let missing = b
            .read(&ReadRequest::latest("database/nope"))
            .await
            .unwrap_err();
        assert_eq!(missing.reason, crate::Reason::SecretNotFound);
        assert_eq!(b.list("").await.unwrap(), vec!["DATABASE_URL".to_string()]);

        let none =
            EnvBackend::with_environment("SSYNC_T1_".into(), EnvPolicy::deny_all(), vars.clone());
        assert_eq!(
            none.read(&ReadRequest::latest("database/url"))
                .await
                .unwrap_err()
                .reason,
            crate::Reason::AccessDenied
        );
        assert_eq!(
            none.validate().await.unwrap_err().reason,
            crate::Reason::AccessDenied
        );
        assert!(none.list("").await.unwrap().is_empty());

        let all = EnvBackend::with_environment("SSYNC_T1".into(), EnvPolicy::allow_all(), vars);
        assert_eq!(
            all.list("").await.unwrap(),
            vec![
                "X_SECRET".to_string(),
                "_DATABASE_URL".into(),
                "_OTHER".into()
            ]
        );
    }
}
