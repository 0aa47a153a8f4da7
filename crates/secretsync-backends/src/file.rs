//! File backend: a folder of files (`Dir`) or one dotenv/YAML/JSON file, confined to the
//! operator's `--file-root`.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use secretsync_api::{BackendKind, FileFormat, FileSource};

use crate::{Backend, BackendError, ReadRequest, SecretValue};

/// Reads files under a confined root.
pub struct FileBackend {
    prefix: String,
    format: FileFormat,
    /// `spec.file.path`, resolved against the root (not canonicalised: it may not exist yet).
    path: PathBuf,
    root: PathBuf,
}

/// Lexical check that `p` has no `..`, root or prefix components.
fn is_plain_relative(p: &Path) -> bool {
    p.components().all(|c| matches!(c, Component::Normal(_)))
}

impl FileBackend {
    /// Validates `spec.file.path` against `root` and builds the backend.
    pub fn new(prefix: String, spec: &FileSource, root: &Path) -> Result<Self, BackendError> {
        let raw = Path::new(&spec.path);
        let path = if raw.is_absolute() {
            let rel = raw.strip_prefix(root).map_err(|_| {
                BackendError::access_denied(format!(
                    "spec.file.path {:?} is outside the operator's --file-root {:?}",
                    spec.path,
                    root.display().to_string()
                ))
            })?;
            if !rel.as_os_str().is_empty() && !is_plain_relative(rel) {
                return Err(BackendError::access_denied(format!(
                    "spec.file.path {:?} must not contain '..'",
                    spec.path
                )));
            }
            raw.to_path_buf()
        } else {
            if !is_plain_relative(raw) {
                return Err(BackendError::access_denied(format!(
                    "spec.file.path {:?} must not contain '..'",
                    spec.path
                )));
            }
            root.join(raw)
        };
        Ok(FileBackend {
            prefix,
            format: spec.format,
            path,
            root: root.to_path_buf(),
        })
    }

    /// Resolves symlinks and checks the result is still inside the root.
    async fn confined(&self, p: &Path, what: &str) -> Result<PathBuf, BackendError> {
        let root = tokio::fs::canonicalize(&self.root).await.map_err(|e| {
            BackendError::invalid_config(format!(
                "--file-root {:?} is not readable: {}",
                self.root.display().to_string(),
                e.kind()
            ))
        })?;
        let real = match tokio::fs::canonicalize(p).await {
            Ok(real) => real,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BackendError::not_found(what));
            }
            Err(e) => {
                return Err(BackendError::access_denied(format!(
                    "{what:?} cannot be read: {}",
                    e.kind()
                )));
            }
        };
        if !real.starts_with(&root) {
            return Err(BackendError::access_denied(format!(
                "{what:?} resolves outside the operator's --file-root"
            )));
        }
        Ok(real)
    }

    async fn read_file(&self, p: &Path, what: &str) -> Result<Vec<u8>, BackendError> {
        let real = self.confined(p, what).await?;
        tokio::fs::read(&real).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => BackendError::not_found(what),
            std::io::ErrorKind::IsADirectory => BackendError::not_found(what),
            kind => BackendError::access_denied(format!("{what:?} cannot be read: {kind}")),
        })
    }

    /// All top-level entries of the single structured file.
    async fn entries(&self) -> Result<BTreeMap<String, SecretValue>, BackendError> {
        let what = self.path.display().to_string();
        let bytes = zeroize::Zeroizing::new(self.read_file(&self.path, &what).await?);
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| BackendError::invalid_config(format!("file {what:?} is not UTF-8")))?;
        match self.format {
            FileFormat::Dotenv => crate::dotenv::parse(text),
            FileFormat::Json => {
                let v: serde_json::Value = serde_json::from_str(text).map_err(|e| {
                    BackendError::invalid_config(format!(
                        "file {what:?} is not valid JSON (line {})",
                        e.line()
                    ))
                })?;
                top_level(v, &what)
            }
            FileFormat::Yaml => {
                let v: serde_json::Value = serde_yaml::from_str(text).map_err(|e| {
                    let line = e.location().map(|l| l.line()).unwrap_or(0);
                    BackendError::invalid_config(format!(
                        "file {what:?} is not valid YAML (line {line})"
                    ))
                })?;
                top_level(v, &what)
            }
            FileFormat::Dir => Err(BackendError::invalid_config("Dir has no entries")),
        }
    }

    fn key_path(&self, key: &str) -> Result<PathBuf, BackendError> {
        let full = format!("{}{}", self.prefix, key);
        let rel = Path::new(&full);
        if full.is_empty() || !is_plain_relative(rel) {
            return Err(BackendError::access_denied(format!(
                "remote key {key:?} must be a relative path without '..'"
            )));
        }
        Ok(self.path.join(rel))
    }
}

fn top_level(
    v: serde_json::Value,
    what: &str,
) -> Result<BTreeMap<String, SecretValue>, BackendError> {
    match v {
        serde_json::Value::Object(map) => Ok(map
            .into_iter()
            .map(|(k, v)| {
                let bytes = match v {
                    serde_json::Value::String(s) => s.into_bytes(),
                    other => other.to_string().into_bytes(),
                };
                (k, SecretValue::new(bytes))
            })
            .collect()),
        _ => Err(BackendError::invalid_config(format!(
            "file {what:?} must hold a mapping at the top level"
        ))),
    }
}

#[async_trait]
impl Backend for FileBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::File
    }

    async fn read(&self, req: &ReadRequest) -> Result<SecretValue, BackendError> {
        req.unversioned(self.kind())?;
        match self.format {
            FileFormat::Dir => {
                let p = self.key_path(&req.key)?;
                Ok(SecretValue::new(self.read_file(&p, &req.key).await?))
            }
            _ => {
                let full = format!("{}{}", self.prefix, req.key);
                let mut entries = self.entries().await?;
                entries
                    .remove(&full)
                    .ok_or_else(|| BackendError::not_found(&req.key))
            }
        }
    }

    async fn list(&self, _under: &str) -> Result<Vec<String>, BackendError> {
        let keys = match self.format {
            FileFormat::Dir => {
                let base = self
                    .confined(&self.path, &self.path.display().to_string())
                    .await?;
                let root = tokio::fs::canonicalize(&self.root).await.map_err(|e| {
                    BackendError::invalid_config(format!("--file-root unreadable: {}", e.kind()))
                })?;
                let mut out = Vec::new();
                let mut stack = vec![(base.clone(), String::new())];
                while let Some((dir, rel)) = stack.pop() {
                    let mut rd = tokio::fs::read_dir(&dir).await.map_err(|e| {
                        BackendError::access_denied(format!("cannot list folder: {}", e.kind()))
                    })?;
                    while let Some(entry) = rd.next_entry().await.map_err(|e| {
                        BackendError::access_denied(format!("cannot list folder: {}", e.kind()))
                    })? {
                        let name = entry.file_name().to_string_lossy().into_owned();
                        // Skip Kubernetes volume internals (`..data`, `..2024_...`).
                        if name.starts_with("..") {
                            continue;
                        }
                        let key = if rel.is_empty() {
                            name.clone()
                        } else {
                            format!("{rel}/{name}")
                        };
                        let Ok(real) = tokio::fs::canonicalize(entry.path()).await else {
                            continue;
                        };
                        if !real.starts_with(&root) {
                            continue;
                        }
                        if real.is_dir() {
                            stack.push((entry.path(), key));
                        } else {
                            out.push(key);
                        }
                    }
                }
                out
            }
            _ => self.entries().await?.into_keys().collect(),
        };
        Ok(crate::keys_after_prefix(&self.prefix, keys))
    }

    async fn validate(&self) -> Result<(), BackendError> {
        let what = self.path.display().to_string();
        match self.format {
            FileFormat::Dir => {
                let real = self.confined(&self.path, &what).await?;
                if !real.is_dir() {
                    return Err(BackendError::invalid_config(format!(
                        "spec.file.path {what:?} must be a folder for format Dir"
                    )));
                }
                Ok(())
            }
            _ => self.entries().await.map(|_| ()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: &Path, format: FileFormat) -> FileSource {
        FileSource {
            path: path.display().to_string(),
            format,
        }
    }

    #[tokio::test]
    async fn dir_reads_nested_keys_and_lists() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("shop");
        std::fs::create_dir_all(dir.join("app/database")).unwrap();
        std::fs::write(dir.join("app/database/url"), "postgres://db").unwrap();
        std::fs::write(dir.join("app/token"), "t").unwrap();
        std::fs::write(dir.join("other"), "o").unwrap();
        let b = FileBackend::new("app/".into(), &spec(&dir, FileFormat::Dir), root.path()).unwrap();
        b.validate().await.unwrap();
        let v = b.read(&ReadRequest::latest("database/url")).await.unwrap();
        assert_eq!(v.as_str(), Some("postgres://db"));
        assert_eq!(b.list("").await.unwrap(), vec!["database/url", "token"]);
        let missing = b.read(&ReadRequest::latest("nope")).await.unwrap_err();
        assert_eq!(missing.reason, crate::Reason::SecretNotFound);
    }

    #[tokio::test]
    async fn confinement() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "CANARY-OUTSIDE").unwrap();
        let dir = root.path().join("d");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(root.path().join("sibling"), "s").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.join("escape")).unwrap();
        std::os::unix::fs::symlink(root.path().join("sibling"), dir.join("inside-link")).unwrap();

        // spec.file.path outside the root, or with `..`.
        assert_eq!(
            FileBackend::new(
                String::new(),
                &spec(outside.path(), FileFormat::Dir),
                root.path()
            )
            .err()
            .unwrap()
            .reason,
            crate::Reason::AccessDenied
        );
        let dotdot = root.path().join("d/../../etc");
        assert!(
            FileBackend::new(String::new(), &spec(&dotdot, FileFormat::Dir), root.path()).is_err()
        );

        let b = FileBackend::new(String::new(), &spec(&dir, FileFormat::Dir), root.path()).unwrap();
        for bad in ["../sibling", "/etc/passwd", "a/../../sibling"] {
            let err = b.read(&ReadRequest::latest(bad)).await.unwrap_err();
            assert_eq!(err.reason, crate::Reason::AccessDenied, "{bad}: {err}");
        }
        let err = b.read(&ReadRequest::latest("escape")).await.unwrap_err();
        assert_eq!(err.reason, crate::Reason::AccessDenied, "{err}");
        assert!(!format!("{err} {err:?}").contains("CANARY"));
        // A symlink that stays inside the root is fine.
        let ok = b.read(&ReadRequest::latest("inside-link")).await.unwrap();
        assert_eq!(ok.as_str(), Some("s"));
        // Listing skips the escaping link.
        assert_eq!(b.list("").await.unwrap(), vec!["inside-link"]);

        // A relative prefix with `..` cannot escape either.
        let p = FileBackend::new("../".into(), &spec(&dir, FileFormat::Dir), root.path()).unwrap();
        assert_eq!(
            p.read(&ReadRequest::latest("sibling"))
                .await
                .unwrap_err()
                .reason,
            crate::Reason::AccessDenied
        );
    }

    #[tokio::test]
    async fn structured_formats() {
        let root = tempfile::tempdir().unwrap();
        let env = root.path().join("a.env");
        std::fs::write(&env, "export APP_USER=u\nAPP_PASS='p w'\nOTHER=x\n").unwrap();
        let b =
            FileBackend::new("APP_".into(), &spec(&env, FileFormat::Dotenv), root.path()).unwrap();
        assert_eq!(
            b.read(&ReadRequest::latest("PASS")).await.unwrap().as_str(),
            Some("p w")
        );
        assert_eq!(b.list("").await.unwrap(), vec!["PASS", "USER"]);

        let yaml = root.path().join("a.yaml");
        std::fs::write(&yaml, "user: u\nport: 5432\ntls: true\nnested: {a: 1}\n").unwrap();
        let b =
            FileBackend::new(String::new(), &spec(&yaml, FileFormat::Yaml), root.path()).unwrap();
        assert_eq!(
            b.read(&ReadRequest::latest("port")).await.unwrap().as_str(),
            Some("5432")
        );
        assert_eq!(
            b.read(&ReadRequest::latest("tls")).await.unwrap().as_str(),
            Some("true")
        );
        assert_eq!(
            b.read(&ReadRequest::latest("nested"))
                .await
                .unwrap()
                .as_str(),
            Some(r#"{"a":1}"#)
        );

        let json = root.path().join("a.json");
        std::fs::write(&json, r#"{"user":"u","n":null}"#).unwrap();
        let b =
            FileBackend::new(String::new(), &spec(&json, FileFormat::Json), root.path()).unwrap();
        assert_eq!(
            b.read(&ReadRequest::latest("user")).await.unwrap().as_str(),
            Some("u")
        );
        assert_eq!(
            b.read(&ReadRequest::latest("n")).await.unwrap().as_str(),
            Some("null")
        );
        assert_eq!(
            b.read(&ReadRequest::latest("x")).await.unwrap_err().reason,
            crate::Reason::SecretNotFound
        );

        std::fs::write(&json, r#"{"broken": "CANARY"#).unwrap();
        let err = b.read(&ReadRequest::latest("user")).await.unwrap_err();
        assert_eq!(err.reason, crate::Reason::InvalidConfig);
        assert!(!err.to_string().contains("CANARY"));
    }
}
