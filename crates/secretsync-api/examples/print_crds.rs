//! Prints the CRDs as YAML (what `secretsync crds` prints).

fn main() -> Result<(), secretsync_api::crd::CrdError> {
    print!("{}", secretsync_api::crd::crds_yaml()?);
    Ok(())
}
