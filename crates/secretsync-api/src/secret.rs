//! The Secret object a binding writes: shared by `render` and the controller so both
//! produce the same manifest.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::constants::{ANNOTATION_BINDING, ANNOTATION_DATA_HASH, LABEL_MANAGED};
use crate::{CreationPolicy, SecretBinding};

/// Builds the Secret (for server-side apply) that `binding` owns: target name, type,
/// labels and annotations plus the managed label, binding and data-hash annotations, and
/// for `Owner` a controller ownerReference (when the binding's uid is known).
///
/// `data` holds the bytes to write; it is written as `data` (never `stringData`) so keys a
/// binding stops producing are removed by server-side apply.
pub fn desired_secret(
    binding: &SecretBinding,
    data: BTreeMap<String, ByteString>,
    data_hash: &str,
) -> Secret {
    let target = &binding.spec.target;
    let mut labels = target.labels.clone();
    labels.insert(LABEL_MANAGED.to_string(), "true".to_string());
    let mut annotations = target.annotations.clone();
    annotations.insert(
        ANNOTATION_BINDING.to_string(),
        binding.metadata.name.clone().unwrap_or_default(),
    );
    annotations.insert(ANNOTATION_DATA_HASH.to_string(), data_hash.to_string());
    let owner_references = match (target.creation_policy, &binding.metadata.uid) {
        (CreationPolicy::Owner, Some(uid)) => Some(vec![OwnerReference {
            api_version: format!("{}/{}", crate::API_GROUP, crate::API_VERSION),
            kind: "SecretBinding".to_string(),
            name: binding.metadata.name.clone().unwrap_or_default(),
            uid: uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]),
        _ => None,
    };
    Secret {
        metadata: ObjectMeta {
            name: Some(binding.target_name()),
            namespace: binding.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references,
            ..Default::default()
        },
        type_: Some(target.type_.clone()),
        data: Some(data),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretBindingSpec;

    #[test]
    fn owner_secret_has_labels_annotations_and_owner() {
        let mut b = SecretBinding::new("shop-db", SecretBindingSpec::default());
        b.metadata.namespace = Some("shop".into());
        b.metadata.uid = Some("u-1".into());
        b.spec.target.labels.insert("team".into(), "a".into());
        let s = desired_secret(
            &b,
            [("k".to_string(), ByteString(b"v".to_vec()))].into(),
            "abc",
        );
        assert_eq!(s.metadata.name.as_deref(), Some("shop-db"));
        let labels = s.metadata.labels.unwrap();
        assert_eq!(labels[LABEL_MANAGED], "true");
        assert_eq!(labels["team"], "a");
        let ann = s.metadata.annotations.unwrap();
        assert_eq!(ann[ANNOTATION_BINDING], "shop-db");
        assert_eq!(ann[ANNOTATION_DATA_HASH], "abc");
        let owner = &s.metadata.owner_references.unwrap()[0];
        assert_eq!(owner.controller, Some(true));
        assert_eq!(owner.api_version, "secretsync.dev/v1alpha1");

        b.spec.target.creation_policy = CreationPolicy::Orphan;
        assert!(
            desired_secret(&b, BTreeMap::new(), "x")
                .metadata
                .owner_references
                .is_none()
        );
    }
}
