//! The ClusterSecretBinding reconciler's I/O: create, repair and delete the generated
//! SecretBindings the [`super::plan`] asks for, then report the outcome in status.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};
use secretsync_api::{ClusterSecretBinding, FailedNamespace, SecretBinding};

use super::plan::{Action, desired_binding, generated_by, plan, repaired, status};
use crate::context::{Ctx, NamespaceLabels};
use crate::outcome::{ReconcileResult as R, Reconciled};
use crate::runtime::ObjKey;
use crate::source::apply_status;

/// How soon a ClusterSecretBinding with failed namespaces is looked at again (they may
/// resolve without an event: a conflicting binding deleted, RBAC granted).
const RETRY_FAILED: Duration = Duration::from_secs(30);

/// Reconciles one ClusterSecretBinding (key with an empty namespace).
pub async fn reconcile(ctx: &Ctx, key: &ObjKey) -> Reconciled {
    let Some(csb) = ctx.cluster_bindings.get(key) else {
        // Gone: the garbage collector removes what it owned on a real cluster; deleting
        // here as well makes that prompt and independent of it.
        return match delete_generated(ctx, &key.name).await {
            Ok(()) => Reconciled::done(R::Deleted),
            Err(e) => {
                ctx.api_failure("deleting generated SecretBindings failed", &key.name, &e);
                Reconciled::api_error(RETRY_FAILED)
            }
        };
    };
    if csb.metadata.deletion_timestamp.is_some() {
        return Reconciled::done(R::Deleted);
    }
    let namespaces: BTreeMap<String, NamespaceLabels> = ctx
        .namespaces
        .filter(|_, _| true)
        .into_iter()
        .map(|(k, labels)| (k.name, (*labels).clone()))
        .collect();
    let held = ctx.bindings.filter(|k, _| k.name == key.name);
    let bindings: BTreeMap<String, &SecretBinding> = held
        .iter()
        .map(|(k, b)| (k.namespace.clone(), b.as_ref()))
        .collect();
    let p = plan(&csb, &namespaces, &bindings);
    let mut provisioned = p.in_sync.clone();
    let mut failed = p.failed.clone();
    let mut api_down = None;
    let mut wrote = false;
    for action in &p.actions {
        let (ns, result) = match action {
            Action::Create(ns) => (ns, create(ctx, &csb, ns).await),
            Action::Repair(ns) => (ns, repair(ctx, &csb, bindings[ns.as_str()]).await),
            Action::Delete(ns) => (ns, delete(ctx, ns, &key.name).await.map(|()| false)),
        };
        match result {
            Ok(held) => {
                wrote = true;
                if held {
                    provisioned.push(ns.clone());
                }
                tracing::info!(cluster_binding = %key, namespace = %ns, action = ?action, "generated SecretBinding written");
            }
            Err(e) => {
                ctx.api_failure("writing a generated SecretBinding failed", ns, &e);
                failed.push(FailedNamespace {
                    namespace: ns.clone(),
                    message: write_failure(&e),
                });
                if !matches!(&e, kube::Error::Api(s) if s.code < 500) {
                    api_down = Some(e);
                }
            }
        }
    }
    failed.sort_by(|a, b| a.namespace.cmp(&b.namespace));
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let next = status(
        csb.status.as_ref(),
        csb.metadata.generation,
        provisioned,
        failed,
        &now,
    );
    let retry = !next.failed_namespaces.is_empty();
    if csb.status.as_ref() != Some(&next) {
        let api: Api<ClusterSecretBinding> = Api::all(ctx.client.clone());
        if let Err(e) = apply_status(&api, &key.name, &next).await {
            ctx.api_failure("writing ClusterSecretBinding status failed", &key.name, &e);
            return Reconciled::api_error(RETRY_FAILED);
        }
    }
    if api_down.is_some() {
        return Reconciled::api_error(RETRY_FAILED);
    }
    let result = if retry {
        R::Error
    } else if wrote {
        R::Written
    } else {
        R::Unchanged
    };
    if retry {
        Reconciled::after(result, RETRY_FAILED)
    } else {
        Reconciled::done(result)
    }
}

/// A failed write, for `status.failedNamespaces` (the API server's message names fields,
/// never values: a SecretBinding holds none).
fn write_failure(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => {
            format!("writing the SecretBinding failed: {} {}", s.code, s.message)
        }
        _ => "writing the SecretBinding failed: API server unreachable".to_string(),
    }
}

fn bindings_in(ctx: &Ctx, ns: &str) -> Api<SecretBinding> {
    Api::namespaced(ctx.client.clone(), ns)
}

/// Creates the generated SecretBinding; returns whether it now exists.
async fn create(ctx: &Ctx, csb: &ClusterSecretBinding, ns: &str) -> Result<bool, kube::Error> {
    let pp = PostParams {
        field_manager: Some(secretsync_api::FIELD_MANAGER.to_string()),
        ..Default::default()
    };
    bindings_in(ctx, ns)
        .create(&pp, &desired_binding(csb, ns))
        .await
        .map(|_| true)
}

/// Puts the generated SecretBinding back as desired (a replace: fields someone else added
/// to its spec go too). A conflict means it changed meanwhile; its watch event brings
/// the ClusterSecretBinding back.
async fn repair(
    ctx: &Ctx,
    csb: &ClusterSecretBinding,
    existing: &SecretBinding,
) -> Result<bool, kube::Error> {
    let ns = existing.namespace().unwrap_or_default();
    let pp = PostParams {
        field_manager: Some(secretsync_api::FIELD_MANAGER.to_string()),
        ..Default::default()
    };
    bindings_in(ctx, &ns)
        .replace(&existing.name_any(), &pp, &repaired(existing, csb))
        .await
        .map(|_| true)
}

async fn delete(ctx: &Ctx, ns: &str, name: &str) -> Result<(), kube::Error> {
    match bindings_in(ctx, ns)
        .delete(name, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes every SecretBinding generated by the ClusterSecretBinding `name`.
async fn delete_generated(ctx: &Ctx, name: &str) -> Result<(), kube::Error> {
    let generated = ctx
        .bindings
        .filter(|k, b| k.name == name && generated_by(b, name));
    for (k, _) in generated {
        delete(ctx, &k.namespace, name).await?;
        tracing::info!(cluster_binding = %name, namespace = %k.namespace, "generated SecretBinding deleted with its ClusterSecretBinding");
    }
    Ok(())
}
