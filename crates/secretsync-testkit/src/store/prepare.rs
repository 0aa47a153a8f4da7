//! What happens to an object before it is stored: built-in defaults (Secret `stringData`
//! and `type`, workload `replicas`, admission policy defaults), validation, CRD schema
//! defaulting, pruning and strict field checks, the status and registration of
//! CustomResourceDefinitions, and, last, the ValidatingAdmissionPolicies.

use std::sync::Arc;

use base64::Engine;
use serde_json::{Value, json};

use super::{Inner, WriteOpts, WriteTarget};
use crate::admission::{self, Attributes, Operation};
use crate::resources::{self, ResourceDef, Special};
use crate::status::{ApiError, Cause};
use crate::util::{meta_str, now_rfc3339};
use crate::validation;

impl Inner {
    pub(super) fn schema(def: &ResourceDef, version: &str) -> Value {
        resources::combined_schema(def, version)
    }

    /// Normalise, default and validate an object before storing.
    pub(super) fn prepare(
        &self,
        def: &ResourceDef,
        version: &str,
        obj: &mut Value,
        strict: bool,
    ) -> Result<(), ApiError> {
        let name = meta_str(obj, "name").unwrap_or_default().to_owned();
        builtin_defaults(def, obj);
        let mut causes: Vec<Cause> = validation::validate(def, obj);
        if def.is_custom()
            && let Some(schema) = def.schemas.get(version)
        {
            if strict {
                strict_fields(schema, obj)?;
            }
            validation::default_and_prune(schema, obj);
            causes.extend(validation::validate_schema(schema, obj));
        }
        if def.special == Special::Crd {
            causes.extend(crd_causes(obj, &name));
        }
        if def.group == admission::GROUP {
            causes.extend(admission::object_causes(&def.plural, obj));
        }
        if causes.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(&def.group, &def.kind, &name, causes))
        }
    }

    /// Runs the ValidatingAdmissionPolicies on a write of `obj` to `at` that passed
    /// validation (`old` = the stored object of an update). The server's own writes
    /// (`opts.user` unset) are not admitted.
    pub(super) fn admit(
        &self,
        at: WriteTarget<'_>,
        operation: Operation,
        obj: &Value,
        old: Option<&Value>,
        opts: &WriteOpts,
    ) -> Result<(), ApiError> {
        let Some(user) = &opts.user else {
            return Ok(());
        };
        let listed = |plural: &str| {
            self.find(admission::GROUP, "v1", plural)
                .map(|d| self.list(&d, None))
                .unwrap_or_default()
        };
        let policies = listed(admission::POLICIES);
        if policies.is_empty() {
            return Ok(());
        }
        let bindings = listed(admission::BINDINGS);
        let namespace_object = at.ns.and_then(|ns| {
            let def = self.find("", "v1", "namespaces")?;
            self.get(&def, None, ns)
        });
        let attrs = Attributes {
            operation,
            group: &at.def.group,
            version: at.version,
            resource: &at.def.plural,
            subresource: if at.status { "status" } else { "" },
            kind: &at.def.kind,
            namespace: at.ns,
            name: at.name,
            user,
            dry_run: opts.dry_run,
            namespace_object,
        };
        // Warn results would be `Warning` headers, which the fake does not send.
        admission::admit(&policies, &bindings, &attrs, obj, old).map(|_| ())
    }

    pub(super) fn crd_status(obj: &mut Value) {
        let Ok(rd) = resources::from_crd(obj) else {
            return;
        };
        let now = now_rfc3339();
        let names = obj["spec"]["names"].clone();
        obj["status"] = json!({
            "acceptedNames": names,
            "storedVersions": [rd.versions[0]],
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                 "message": "no conflicts found", "lastTransitionTime": now},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted", "lastTransitionTime": now},
            ],
        });
    }

    pub(super) fn register_crd(&mut self, obj: &Value) {
        if let Ok(rd) = resources::from_crd(obj) {
            let key = rd.storage_key();
            self.registry.retain(|d| d.storage_key() != key);
            self.registry.push(Arc::new(rd));
        }
    }
}

/// The defaults a real API server fills in for built-in kinds.
fn builtin_defaults(def: &ResourceDef, obj: &mut Value) {
    if def.group.is_empty() && def.plural == "secrets" {
        if let Some(sd) = obj.as_object_mut().and_then(|m| m.remove("stringData"))
            && let Some(sd) = sd.as_object()
        {
            let data = obj
                .as_object_mut()
                .map(|m| m.entry("data").or_insert_with(|| json!({})));
            if let Some(Value::Object(data)) = data {
                for (k, v) in sd {
                    let s = v
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| v.to_string());
                    data.insert(
                        k.clone(),
                        json!(base64::engine::general_purpose::STANDARD.encode(s)),
                    );
                }
            }
        }
        if obj.get("type").is_none() {
            obj["type"] = json!("Opaque");
        }
    }
    if def.group == "apps"
        && (def.plural == "deployments" || def.plural == "statefulsets")
        && let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut)
    {
        // the one built-in default operators commonly read or patch
        spec.entry("replicas").or_insert(json!(1));
    }
    if def.group == admission::GROUP {
        admission::defaults(&def.plural, obj);
    }
}

/// `fieldValidation=Strict`: fields the schema does not know are a `400`.
fn strict_fields(schema: &Value, obj: &Value) -> Result<(), ApiError> {
    let unknown = validation::unknown_fields(schema, obj);
    if unknown.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field {f:?}"))
        .collect();
    Err(ApiError::bad_request(format!(
        "strict decoding error: {}",
        list.join(", ")
    )))
}

/// What is wrong with a CustomResourceDefinition: rules a real server's CEL compiler
/// refuses, a name other than `plural.group`.
fn crd_causes(obj: &Value, name: &str) -> Vec<Cause> {
    match resources::from_crd(obj) {
        Ok(rd) => {
            let mut causes = validation::crd_rule_causes(obj);
            let want = format!("{}.{}", rd.plural, rd.group);
            if name != want {
                causes.push(Cause {
                    reason: "FieldValueInvalid".into(),
                    message: format!(
                        "Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"
                    ),
                    field: "metadata.name".into(),
                });
            }
            causes
        }
        Err(e) => {
            let (field, msg) = e.split_once(": ").unwrap_or(("spec", e.as_str()));
            vec![Cause {
                reason: "FieldValueRequired".into(),
                message: msg.to_owned(),
                field: field.to_owned(),
            }]
        }
    }
}
