//! Every label, annotation, finalizer and well-known name the operator reads or writes.

/// API group of both kinds.
pub const API_GROUP: &str = "secretsync.dev";
/// API version of both kinds.
pub const API_VERSION: &str = "v1alpha1";
/// Field manager for every write the operator makes.
pub const FIELD_MANAGER: &str = "secretsync";

/// Label set on every Secret the operator manages.
pub const LABEL_MANAGED: &str = "secretsync.dev/managed";
/// Annotation on a managed Secret naming the binding that writes it.
pub const ANNOTATION_BINDING: &str = "secretsync.dev/binding";
/// Annotation on a managed Secret holding the HMAC of its synced data.
pub const ANNOTATION_DATA_HASH: &str = "secretsync.dev/data-hash";
/// Annotation on a binding; any new value forces an immediate, cache-bypassing read.
pub const ANNOTATION_FORCE_SYNC: &str = "secretsync.dev/force-sync";
/// Workload opt-in: `"true"` or a comma-separated list of Secret names.
pub const ANNOTATION_RESTART_ON_ROTATION: &str = "secretsync.dev/restart-on-rotation";
/// Pod-template annotation written by a restart.
pub const ANNOTATION_RESTARTED_AT: &str = "secretsync.dev/restartedAt";
/// Workload annotation recording the revision of the Secrets it was last restarted for.
pub const ANNOTATION_SECRET_REVISION: &str = "secretsync.dev/secret-revision";
/// Finalizer on `Merge` bindings, removing their keys from the Secret on deletion.
pub const FINALIZER_CLEANUP: &str = "secretsync.dev/cleanup";

/// Secret (operator namespace) holding the HMAC key.
pub const HMAC_SECRET_NAME: &str = "secretsync-hmac-key";
/// Key inside [`HMAC_SECRET_NAME`].
pub const HMAC_SECRET_KEY: &str = "key";
/// Lease (operator namespace) used for leader election.
pub const LEADER_LEASE_NAME: &str = "secretsync-leader";

/// Default Vault KV mount.
pub const DEFAULT_VAULT_MOUNT: &str = "secret";
/// Default Vault Kubernetes auth mount path.
pub const DEFAULT_VAULT_KUBERNETES_MOUNT: &str = "kubernetes";
/// Default Vault AppRole auth mount path.
pub const DEFAULT_VAULT_APPROLE_MOUNT: &str = "approle";
/// Default binding refresh interval.
pub const DEFAULT_REFRESH_INTERVAL: &str = "1h";
/// Default root under which the file backend may read.
pub const DEFAULT_FILE_ROOT: &str = "/etc/secretsync/files";
