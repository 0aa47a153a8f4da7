//! Schema helpers for fields schemars cannot describe on its own.

use schemars::{Schema, SchemaGenerator, json_schema};

use crate::Condition;

/// `conditions` as a map-list keyed on `type`, so server-side apply merges per condition.
pub(crate) fn conditions(generator: &mut SchemaGenerator) -> Schema {
    let item = generator.subschema_for::<Condition>();
    json_schema!({
        "description": "Standard conditions; `Ready` tells whether the object is working, with a reason from the error taxonomy.",
        "type": "array",
        "items": item,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
    })
}

/// A string-to-string map (labels, annotations, template data) without `nullable`.
pub(crate) fn string_map(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "additionalProperties": {"type": "string"},
    })
}

/// An RFC 3339 timestamp.
pub(crate) fn time(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "format": "date-time"})
}
