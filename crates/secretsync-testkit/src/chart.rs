//! The project's Helm chart, rendered and linted by Helm's own engine: the `helm-python-sdk`
//! package (Helm's Go engine as a library), run by the test venv's Python
//! (`SECRETSYNC_TEST_PYTHON`, exported by `scripts/test-servers.sh`).

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::TestkitError;

/// Environment variable naming a Python that can `import helm_python`.
pub const PYTHON_ENV: &str = "SECRETSYNC_TEST_PYTHON";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `charts/secretsync`.
pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/secretsync")
}

/// The chart's objects for one set of values.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Every object, with the template it came from.
    pub objects: Vec<(String, Value)>,
    /// `NOTES.txt`.
    pub notes: String,
}

impl Rendered {
    /// Objects of `kind`.
    pub fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.objects
            .iter()
            .map(|(_, o)| o)
            .filter(|o| o["kind"] == kind)
            .collect()
    }

    /// The one object of `kind` named `name`.
    pub fn get(&self, kind: &str, name: &str) -> Option<&Value> {
        self.of_kind(kind)
            .into_iter()
            .find(|o| o["metadata"]["name"] == name)
    }

    /// Objects of the given kinds as one YAML stream (e.g. the RBAC objects to apply).
    pub fn yaml_of(&self, kinds: &[&str]) -> Result<String, TestkitError> {
        let mut out = String::new();
        for (_, o) in &self.objects {
            if kinds.iter().any(|k| o["kind"] == *k) {
                out.push_str("---\n");
                out.push_str(&serde_yaml::to_string(o)?);
            }
        }
        Ok(out)
    }
}

/// One message of `helm lint`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct LintMessage {
    /// 1 info, 2 warning, 3 error (Helm's `support.Severity`).
    pub severity: u8,
    /// The file it is about.
    pub path: String,
    /// The message.
    pub error: String,
}

fn helm(args: &[&str]) -> Result<Value, TestkitError> {
    let python = std::env::var_os(PYTHON_ENV)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            TestkitError::Unsupported(format!(
                "{PYTHON_ENV} is not set: the chart is rendered by Helm's engine from the test \
                 venv; run under scripts/test-servers.sh (make test does)"
            ))
        })?;
    let out = Command::new(python)
        .arg(repo_root().join("scripts/helm-chart.py"))
        .args(args)
        .output()?;
    if !out.status.success() {
        return Err(TestkitError::Other(format!(
            "helm-chart.py {}: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| TestkitError::Other(format!("helm-chart.py printed no JSON: {e}")))
}

/// Renders the chart as `helm install RELEASE -n NAMESPACE` would with `values`.
pub fn render(values: &Value, release: &str, namespace: &str) -> Result<Rendered, TestkitError> {
    let dir = chart_dir();
    let result = helm(&[
        "render",
        &dir.to_string_lossy(),
        &values.to_string(),
        release,
        namespace,
    ])?;
    let mut rendered = Rendered {
        objects: Vec::new(),
        notes: String::new(),
    };
    let Some(manifests) = result["manifests"].as_object() else {
        return Err(TestkitError::Other("render printed no manifests".into()));
    };
    for (template, text) in manifests {
        let text = text.as_str().unwrap_or_default();
        if template.ends_with("NOTES.txt") {
            rendered.notes = text.to_owned();
            continue;
        }
        for doc in serde_yaml::Deserializer::from_str(text) {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(doc)?;
            let v = serde_json::to_value(v)
                .map_err(|e| TestkitError::Other(format!("{template}: {e}")))?;
            if !v.is_null() {
                rendered.objects.push((template.clone(), v));
            }
        }
    }
    Ok(rendered)
}

/// `helm lint` of the chart with `values`.
pub fn lint(values: &Value) -> Result<Vec<LintMessage>, TestkitError> {
    let dir = chart_dir();
    let result = helm(&["lint", &dir.to_string_lossy(), &values.to_string()])?;
    let messages = result["messages"].clone();
    serde_json::from_value(if messages.is_null() {
        Value::Array(vec![])
    } else {
        messages
    })
    .map_err(|e| TestkitError::Other(format!("lint result: {e}")))
}
