//! CRD generation: the YAML that `secretsync crds` prints and `crds/` holds.

use kube::CustomResourceExt;

use crate::{SecretBinding, SecretSource};

/// Error rendering the CRDs.
#[derive(Debug, thiserror::Error)]
#[error("rendering CRD YAML: {0}")]
pub struct CrdError(#[from] serde_yaml::Error);

/// File name in `crds/` and the YAML of each CRD, in a stable order.
pub fn crd_files() -> Result<Vec<(&'static str, String)>, CrdError> {
    Ok(vec![
        (
            "secretsync.dev_secretsources.yaml",
            serde_yaml::to_string(&SecretSource::crd())?,
        ),
        (
            "secretsync.dev_secretbindings.yaml",
            serde_yaml::to_string(&SecretBinding::crd())?,
        ),
    ])
}

/// Both CRDs as one multi-document YAML stream.
pub fn crds_yaml() -> Result<String, CrdError> {
    let mut out = String::new();
    for (_, doc) in crd_files()? {
        out.push_str("---\n");
        out.push_str(&doc);
    }
    Ok(out)
}
