//! YAML of the secretsync objects the tests apply, so each test states only what differs:
//! a source's spec, a binding's source, extra spec fields and data entries. Documents end
//! in a newline; join several with [`stream`].

use std::fmt::Display;

/// A YAML stream of `docs`, separated by `---`.
pub fn stream<D: AsRef<str>>(docs: &[D]) -> String {
    let docs: Vec<&str> = docs.iter().map(AsRef::as_ref).collect();
    docs.join("---\n")
}

/// `metadata` of object `name`, in namespace `ns` when given (else the environment's).
fn metadata(name: &str, ns: Option<&str>) -> String {
    match ns {
        Some(ns) => format!("metadata: {{name: {name}, namespace: {ns}}}"),
        None => format!("metadata: {{name: {name}}}"),
    }
}

/// A SecretSource `name` whose spec is `spec`, a YAML flow mapping's content
/// (e.g. `env: {}` or `prefix: X_, env: {}`).
pub fn source(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: secretsync.dev/v1alpha1\nkind: SecretSource\n{}\nspec: {{{spec}}}\n",
        metadata(name, None)
    )
}

/// A SecretSource `name` reading file `path` in `format` (`Dir`, `Dotenv`, `Yaml`, `Json`).
pub fn file_source(name: &str, path: impl Display, format: &str) -> String {
    source(
        name,
        &format!("file: {{path: \"{path}\", format: {format}}}"),
    )
}

/// A Namespace `name` with `labels` (YAML flow mapping content, may be empty).
pub fn namespace_manifest(name: &str, labels: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {{{labels}}}}}\n")
}

/// A Secret `name` whose `data` is the YAML flow mapping `data` (base64 values).
pub fn secret(name: &str, data: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\n{}\ndata: {data}\n",
        metadata(name, None)
    )
}

/// A Deployment `name` opted in to restarts, whose container reads `key` of Secret
/// `secret` into an environment variable.
pub fn deployment_reading(name: &str, secret: &str, key: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\n\
         metadata: {{name: {name}, annotations: {{secretsync.dev/restart-on-rotation: \"true\"}}}}\n\
         spec:\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    \
         metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers:\n        \
         - {{name: app, image: \"app:1\", env: [{{name: VALUE, valueFrom: {{secretKeyRef: {{name: {secret}, key: {key}}}}}}}]}}\n"
    )
}

/// A SecretBinding under construction; [`Binding::yaml`] writes it.
#[derive(Debug, Clone)]
pub struct Binding {
    name: String,
    namespace: Option<String>,
    source: String,
    cluster_source: bool,
    spec: Vec<String>,
    data: Vec<String>,
}

/// A SecretBinding `name` reading source `source`.
pub fn binding(name: &str, source: &str) -> Binding {
    Binding {
        name: name.to_string(),
        namespace: None,
        source: source.to_string(),
        cluster_source: false,
        spec: Vec::new(),
        data: Vec::new(),
    }
}

impl Binding {
    /// In namespace `ns` instead of the environment's.
    pub fn namespace(mut self, ns: &str) -> Self {
        self.namespace = Some(ns.to_string());
        self
    }

    /// Reading a ClusterSecretSource (`sourceRef.kind`) instead of a SecretSource.
    pub fn cluster_source(mut self) -> Self {
        self.cluster_source = true;
        self
    }

    /// A further spec field, as YAML below `spec:` without its indentation: one line
    /// (`refreshInterval: 1s`, `dataFrom: [{extract: {key: db}}]`) or a block of them.
    pub fn spec(mut self, field: &str) -> Self {
        self.spec.push(field.to_string());
        self
    }

    /// `refreshInterval` (quoted, so `"0"` stays a string).
    pub fn refresh(self, interval: &str) -> Self {
        self.spec(&format!("refreshInterval: \"{interval}\""))
    }

    /// A data entry: Secret key `secret_key` from remote key `key`.
    pub fn key(mut self, secret_key: &str, key: &str) -> Self {
        self.data.push(format!(
            "{{secretKey: {secret_key}, remoteRef: {{key: {key}}}}}"
        ));
        self
    }

    /// A data entry: Secret key `secret_key` from `property` of remote key `key`.
    pub fn property(mut self, secret_key: &str, key: &str, property: &str) -> Self {
        self.data.push(format!(
            "{{secretKey: {secret_key}, remoteRef: {{key: {key}, property: {property}}}}}"
        ));
        self
    }

    /// An `optional` data entry: Secret key `secret_key` from `property` of remote key
    /// `key`, left out while the backend does not have it.
    pub fn optional_property(mut self, secret_key: &str, key: &str, property: &str) -> Self {
        self.data.push(format!(
            "{{secretKey: {secret_key}, remoteRef: {{key: {key}, property: {property}}}, optional: true}}"
        ));
        self
    }

    /// The binding's YAML document.
    pub fn yaml(&self) -> String {
        let kind = match self.cluster_source {
            true => "kind: ClusterSecretSource, ",
            false => "",
        };
        let mut out = format!(
            "apiVersion: secretsync.dev/v1alpha1\nkind: SecretBinding\n{}\nspec:\n  sourceRef: {{{kind}name: {}}}\n",
            metadata(&self.name, self.namespace.as_deref()),
            self.source
        );
        for field in &self.spec {
            for line in field.lines() {
                out.push_str(&format!("  {line}\n"));
            }
        }
        if !self.data.is_empty() {
            out.push_str("  data:\n");
            for entry in &self.data {
                out.push_str(&format!("    - {entry}\n"));
            }
        }
        out
    }
}
