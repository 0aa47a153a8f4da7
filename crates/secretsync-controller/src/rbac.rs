//! Every Kubernetes API call the operator makes, as one table. The Helm chart's RBAC rules
//! are checked against it (a test fails when the chart grants less, or more), and the
//! end-to-end tests check that the requests the operator really sends are all listed here.
//!
//! Verbs are the ones the API server authorizes, which are not always the HTTP verb: a
//! server-side apply is a `patch`, and when the object does not exist yet the server also
//! checks `create` for it. Every apply that may create an object lists both.

/// Where a permission is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// In every watched namespace (cluster-wide in all-namespace mode).
    Watched,
    /// Only in the operator's own namespace.
    Operator,
    /// Only in the operator's own namespace, and only with the refresh webhook on (the
    /// chart's `webhook.enabled`; its key Secret lives there).
    OperatorWebhook,
    /// In watched namespaces, and only when Vault Kubernetes auth is used.
    WatchedVaultKubernetesAuth,
    /// Cluster-wide, and only in all-namespace installs: the cluster kinds
    /// (ClusterSecretSource, ClusterSecretBinding) and what serves them.
    Cluster,
}

/// One API permission: group, resource (with subresource), verbs, and why.
#[derive(Debug, Clone, Copy)]
pub struct Access {
    /// API group (`""` for core).
    pub group: &'static str,
    /// Resource, or `resource/subresource`.
    pub resource: &'static str,
    /// Verbs used.
    pub verbs: &'static [&'static str],
    /// Where.
    pub scope: Scope,
    /// Why the operator needs it.
    pub reason: &'static str,
}

/// The operator's API calls.
pub const API_ACCESS: &[Access] = &[
    Access {
        group: "secretsync.dev",
        resource: "secretsources",
        verbs: &["get", "list", "watch"],
        scope: Scope::Watched,
        reason: "watch sources to build backend clients",
    },
    Access {
        group: "secretsync.dev",
        resource: "secretsources/status",
        verbs: &["patch"],
        scope: Scope::Watched,
        reason: "report source readiness (server-side apply of status; never creates)",
    },
    Access {
        group: "secretsync.dev",
        resource: "secretbindings",
        verbs: &["get", "list", "watch", "patch"],
        scope: Scope::Watched,
        reason: "watch bindings; add and remove the Merge cleanup finalizer",
    },
    Access {
        group: "secretsync.dev",
        resource: "secretbindings/status",
        verbs: &["patch"],
        scope: Scope::Watched,
        reason: "report binding sync state and restarted workloads (apply / merge patch of status; never creates)",
    },
    Access {
        group: "",
        resource: "secrets",
        verbs: &["get", "list", "watch", "create", "patch"],
        scope: Scope::Watched,
        reason: "read credential Secrets, server-side apply managed Secrets (create + patch: an apply of a Secret that does not exist yet is authorized as create), watch managed Secrets (metadata only) for drift; the kubernetes backend reads the Secrets its sources name (get), lists them for find and watches their namespace (metadata only) for changes",
    },
    Access {
        group: "",
        resource: "secrets",
        verbs: &["get", "create"],
        scope: Scope::Operator,
        reason: "read the HMAC key Secret by name; create it (POST) at start-up when absent",
    },
    Access {
        group: "",
        resource: "secrets",
        verbs: &["get", "list", "watch"],
        scope: Scope::OperatorWebhook,
        reason: "watch the refresh webhook's key Secret by name (--webhook-secret)",
    },
    Access {
        group: "",
        resource: "pods",
        verbs: &["patch"],
        scope: Scope::OperatorWebhook,
        reason: "label the operator's own pod while it leads, so the webhook Service routes to the leader",
    },
    Access {
        group: "",
        resource: "serviceaccounts/token",
        verbs: &["create"],
        scope: Scope::WatchedVaultKubernetesAuth,
        reason: "request service-account tokens to log in to Vault",
    },
    Access {
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
        scope: Scope::Watched,
        reason: "record Synced, Rotated, SyncFailed and rollout events (create; patch bumps a repeated event's series)",
    },
    Access {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "create", "update"],
        scope: Scope::Operator,
        reason: "leader election (create when absent; get and update by name, never apply)",
    },
    Access {
        group: "secretsync.dev",
        resource: "clustersecretsources",
        verbs: &["get", "list", "watch"],
        scope: Scope::Cluster,
        reason: "watch cluster sources to build backend clients",
    },
    Access {
        group: "secretsync.dev",
        resource: "clustersecretsources/status",
        verbs: &["patch"],
        scope: Scope::Cluster,
        reason: "report cluster source readiness (server-side apply of status; never creates)",
    },
    Access {
        group: "secretsync.dev",
        resource: "clustersecretbindings",
        verbs: &["get", "list", "watch"],
        scope: Scope::Cluster,
        reason: "watch cluster bindings to stamp their SecretBindings into namespaces",
    },
    Access {
        group: "secretsync.dev",
        resource: "clustersecretbindings/status",
        verbs: &["patch"],
        scope: Scope::Cluster,
        reason: "report where a cluster binding is provisioned (server-side apply of status; never creates)",
    },
    Access {
        group: "secretsync.dev",
        resource: "secretbindings",
        verbs: &["create", "update", "delete"],
        scope: Scope::Cluster,
        reason: "create, repair (replace) and remove the SecretBindings a ClusterSecretBinding generates",
    },
    Access {
        group: "",
        resource: "namespaces",
        verbs: &["get", "list", "watch"],
        scope: Scope::Cluster,
        reason: "namespace labels (metadata-only watch) decide cluster-source admission and cluster-binding selection",
    },
    Access {
        group: "apps",
        resource: "deployments",
        verbs: &["get", "list", "watch", "patch"],
        scope: Scope::Watched,
        reason: "restart opted-in workloads when their Secrets rotate",
    },
    Access {
        group: "apps",
        resource: "statefulsets",
        verbs: &["get", "list", "watch", "patch"],
        scope: Scope::Watched,
        reason: "restart opted-in workloads when their Secrets rotate",
    },
    Access {
        group: "apps",
        resource: "daemonsets",
        verbs: &["get", "list", "watch", "patch"],
        scope: Scope::Watched,
        reason: "restart opted-in workloads when their Secrets rotate",
    },
    Access {
        group: "batch",
        resource: "cronjobs",
        verbs: &["get", "list", "watch", "patch"],
        scope: Scope::Watched,
        reason: "restart opted-in CronJobs (their job template) when their triggers change",
    },
    Access {
        group: "argoproj.io",
        resource: "rollouts",
        verbs: &["get", "list", "watch", "patch"],
        scope: Scope::Watched,
        reason: "restart opted-in Argo Rollouts (spec.restartAt) when their triggers change, while the Rollout kind is installed",
    },
    Access {
        group: "",
        resource: "configmaps",
        verbs: &["get", "list", "watch"],
        scope: Scope::Watched,
        reason: "watch ConfigMaps labelled secretsync.dev/watch=true (label selector: no other ConfigMap is seen) as restart triggers; read the ConfigMaps bindings name in templateFrom (get) and watch their namespace (metadata only) while one is referenced",
    },
];

/// Whether `verb` on `group`/`resource` is listed in any scope.
pub fn is_listed(group: &str, resource: &str, verb: &str) -> bool {
    API_ACCESS
        .iter()
        .any(|a| a.group == group && a.resource == resource && a.verbs.contains(&verb))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        assert!(is_listed("", "secrets", "patch"));
        // Applying a Secret that does not exist yet is authorized as create.
        assert!(API_ACCESS.iter().any(|a| a.resource == "secrets"
            && a.scope == Scope::Watched
            && a.verbs.contains(&"create")));
        assert!(is_listed("coordination.k8s.io", "leases", "update"));
        assert!(!is_listed("", "secrets", "delete"));
        assert!(is_listed("secretsync.dev", "secretbindings", "delete"));
        // templateFrom reads the ConfigMaps it names.
        assert!(is_listed("", "configmaps", "get"));
        assert!(is_listed("", "configmaps", "watch"));
        assert!(is_listed("batch", "cronjobs", "patch"));
    }
}
