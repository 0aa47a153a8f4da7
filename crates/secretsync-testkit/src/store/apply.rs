//! Server-side apply: the checks of an apply configuration, field-manager conflicts, and
//! the merge into the stored object (or into an empty one, which creates it).

use serde_json::{Value, json};

use super::write::{check_kind, merge_scope, scope_of, set_namespace};
use super::{Inner, WriteOpts, WriteTarget};
use crate::managed;
use crate::resources::ResourceDef;
use crate::status::{ApiError, Cause};
use crate::util::{meta_mut, meta_str};

impl Inner {
    /// Server-side apply. Returns the object and whether the apply created it.
    pub fn apply(
        &mut self,
        at: WriteTarget<'_>,
        mut body: Value,
        opts: &WriteOpts,
    ) -> Result<(Value, bool), ApiError> {
        let (def, version, ns, name, status) = at.parts();
        check_apply_config(def, version, &mut body, name, opts)?;
        let scope = scope_of(def, status);
        let mut applied = managed::scoped_config(&body, scope);
        if let Some(meta) = applied.get_mut("metadata").and_then(Value::as_object_mut) {
            set_namespace(meta, ns);
        }
        let schema = Self::schema(def, version);
        let av = def.api_version(version);
        let merge = |base: &Value| {
            managed::apply(
                base,
                &applied,
                &schema,
                &opts.manager,
                opts.force,
                scope,
                &av,
            )
            .map_err(|c| conflict_error(def, name, &av, &c))
        };
        match self.get(def, ns, name).cloned() {
            Some(old) => {
                let merged = merge(&old)?;
                let new = merge_scope(def, version, &old, merged, status);
                let out = self.commit(def, version, ns, name, old, new, scope, opts, false)?;
                Ok((out, false))
            }
            None => {
                if status {
                    return Err(ApiError::not_found(&def.group, &def.plural, name));
                }
                let mut base =
                    json!({"apiVersion": av, "kind": def.kind, "metadata": {"name": name}});
                if let Some(ns) = ns {
                    base["metadata"]["namespace"] = json!(ns);
                }
                let merged = merge(&base)?;
                let out = self.create_inner(def, version, ns, merged, opts, true)?;
                Ok((out, true))
            }
        }
    }
}

/// What an apply configuration must be: from a named field manager, an object with
/// `apiVersion` and `kind` of this resource, named like the URL (a nameless one gets the
/// URL's name).
fn check_apply_config(
    def: &ResourceDef,
    version: &str,
    body: &mut Value,
    name: &str,
    opts: &WriteOpts,
) -> Result<(), ApiError> {
    if opts.manager.is_empty() {
        return Err(ApiError::bad_request(
            "PATCH, application/apply-patch+yaml requires fieldManager to be set",
        ));
    }
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be an object",
        ));
    }
    if body
        .get("apiVersion")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
        || body
            .get("kind")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        return Err(ApiError::bad_request(
            "invalid object type: apiVersion and kind must be set in an apply configuration",
        ));
    }
    check_kind(def, version, body)?;
    let body_name = meta_str(body, "name").unwrap_or_default().to_owned();
    if body_name.is_empty() {
        // an apply configuration without a name applies to the object on the URL
        meta_mut(body).insert("name".into(), json!(name));
    } else if body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    Ok(())
}

/// The `409 Conflict` of an apply that would take fields from other managers.
fn conflict_error(def: &ResourceDef, name: &str, av: &str, c: &[managed::Conflict]) -> ApiError {
    let causes: Vec<Cause> = c
        .iter()
        .map(|c| Cause {
            reason: "FieldManagerConflict".into(),
            message: format!("conflict with {:?} using {av}", c.manager),
            field: c.path.clone(),
        })
        .collect();
    let detail: Vec<String> = c
        .iter()
        .map(|c| format!("conflict with {:?} using {av}: {}", c.manager, c.path))
        .collect();
    let n = c.len();
    let mut e = ApiError::conflict(&def.group, &def.plural, name, "");
    e.message = format!(
        "Apply failed with {n} conflict{}: {}",
        if n == 1 { "" } else { "s" },
        detail.join("\n")
    );
    e.details.causes = causes;
    e
}
