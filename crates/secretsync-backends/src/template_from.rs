//! Which templates a binding renders: `target.template.data` and the ConfigMap keys
//! `target.template.templateFrom` names, collected into one [`TemplateSet`] by the Secret key
//! each renders. Loading is pure: the caller looks the ConfigMaps up (the controller from
//! its held copies, `secretsync render` from its input files).
//!
//! Precedence: a Secret key named both inline and by a ConfigMap is rendered from the
//! inline template, so a binding can override one template of a shared ConfigMap; two
//! `templateFrom` items naming one key are a `KeyCollision`, as two `data` entries with one
//! `secretKey` are.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

use secretsync_api::{SecretBindingSpec, TemplateSpec};

use crate::keys::is_valid_secret_key;
use crate::resolve::SecretData;
use crate::template::Templates;
use crate::{BackendError, Reason, SecretValue};

/// One ConfigMap's `data`, as `templateFrom` reads it (templates are text: `binaryData`
/// is not read).
pub type ConfigMapData = BTreeMap<String, String>;

/// One template and the field that names it in errors.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Source {
    field: String,
    src: String,
}

/// A binding's templates, by the Secret key each renders. Templates are configuration, not
/// values, so `Debug` may show them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateSet {
    by_key: BTreeMap<String, Source>,
}

/// The ConfigMaps `spec.target.template.templateFrom` names, sorted.
pub fn config_map_names(spec: &SecretBindingSpec) -> BTreeSet<String> {
    spec.target
        .template
        .iter()
        .flat_map(|t| &t.template_from)
        .map(|f| f.config_map.name.clone())
        .collect()
}

impl TemplateSet {
    /// The templates of `template`: its `data`, and the ConfigMap keys of its
    /// `templateFrom`, each ConfigMap looked up by name with `config_map` (`None`: it does
    /// not exist in the binding's namespace, `namespace`). Errors name the field, the
    /// ConfigMap and the key.
    pub fn load<'a>(
        template: Option<&TemplateSpec>,
        namespace: &str,
        config_map: impl Fn(&str) -> Option<&'a ConfigMapData>,
    ) -> Result<Self, BackendError> {
        let Some(t) = template else {
            return Ok(TemplateSet::default());
        };
        let mut by_key: BTreeMap<String, Source> = BTreeMap::new();
        // Where each templateFrom key came from, for collisions.
        let mut from: BTreeMap<String, String> = BTreeMap::new();
        for (i, entry) in t.template_from.iter().enumerate() {
            let cm = &entry.config_map;
            let at = format!("spec.target.template.templateFrom[{i}]");
            let Some(data) = config_map(&cm.name) else {
                let keys: Vec<String> = cm.items.iter().map(|i| format!("{:?}", i.key)).collect();
                let where_ = match namespace {
                    "" => "no ConfigMaps are available here".to_string(),
                    ns => format!("not found in namespace {ns:?}"),
                };
                return Err(BackendError::new(
                    Reason::TemplateNotFound,
                    format!(
                        "{at}: ConfigMap {:?} (keys {}): {where_}",
                        cm.name,
                        keys.join(", ")
                    ),
                ));
            };
            for (j, item) in cm.items.iter().enumerate() {
                let item_at = format!("{at}.configMap.items[{j}]");
                if !is_valid_secret_key(&item.key) {
                    return Err(BackendError::invalid_config(format!(
                        "{item_at}: key {:?} is not a valid Secret key (alphanumerics, '-', '_' or '.')",
                        item.key
                    )));
                }
                let Some(src) = data.get(&item.key) else {
                    return Err(BackendError::new(
                        Reason::TemplateNotFound,
                        format!(
                            "{item_at}: ConfigMap {:?} has no key {:?} in its data",
                            cm.name, item.key
                        ),
                    ));
                };
                if let Some(first) = from.insert(item.key.clone(), item_at.clone()) {
                    return Err(BackendError::new(
                        Reason::KeyCollision,
                        format!("{item_at}: key {:?} is also rendered by {first}", item.key),
                    ));
                }
                by_key.insert(
                    item.key.clone(),
                    Source {
                        field: format!("{at} (ConfigMap {:?}, key {:?})", cm.name, item.key),
                        src: src.clone(),
                    },
                );
            }
        }
        // Inline templates win over templateFrom (module docs).
        for (key, src) in &t.data {
            by_key.insert(
                key.clone(),
                Source {
                    field: format!("spec.target.template.data[{key:?}]"),
                    src: src.clone(),
                },
            );
        }
        Ok(TemplateSet { by_key })
    }

    /// The templates of `template` without any ConfigMap (for callers that have none): a
    /// `templateFrom` entry fails with `TemplateNotFound`.
    pub fn inline(template: Option<&TemplateSpec>) -> Result<Self, BackendError> {
        Self::load(template, "", |_| None)
    }

    /// Whether there is no template (the resolved keys are written as they are).
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The Secret keys rendered.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.by_key.keys().map(String::as_str)
    }

    /// A digest of every template and key: it changes when a ConfigMap edit changes what
    /// is rendered (compared within one process only).
    pub fn digest(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.by_key.hash(&mut h);
        h.finish()
    }

    /// Renders every template through `env`; the keys must be valid Secret keys.
    pub fn render(&self, env: &Templates) -> Result<SecretData, BackendError> {
        let mut out = SecretData::new();
        for (key, s) in &self.by_key {
            if !is_valid_secret_key(key) {
                return Err(BackendError::invalid_config(format!(
                    "spec.target.template.data key {key:?} is not a valid Secret key"
                )));
            }
            let rendered = env.render(&s.field, &s.src)?;
            out.insert(key.clone(), SecretValue::from_string(rendered));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secretsync_api::{TemplateConfigMap, TemplateFrom, TemplateItem};

    fn from(name: &str, keys: &[&str]) -> TemplateFrom {
        TemplateFrom {
            config_map: TemplateConfigMap {
                name: name.into(),
                items: keys
                    .iter()
                    .map(|k| TemplateItem { key: k.to_string() })
                    .collect(),
            },
        }
    }

    fn spec(template_from: Vec<TemplateFrom>, inline: &[(&str, &str)]) -> TemplateSpec {
        TemplateSpec {
            template_from,
            data: inline
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn maps() -> BTreeMap<String, ConfigMapData> {
        let cm = |pairs: &[(&str, &str)]| -> ConfigMapData {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        [
            (
                "shared".to_string(),
                cm(&[
                    ("url", "postgres://{{ user }}@db"),
                    ("dsn", "user={{ user }}"),
                    ("unused", "{{ nope }}"),
                ]),
            ),
            (
                "other".to_string(),
                cm(&[("url", "x"), ("extra", "{{ user | upper }}")]),
            ),
        ]
        .into()
    }

    fn load(t: &TemplateSpec) -> Result<TemplateSet, BackendError> {
        let maps = maps();
        TemplateSet::load(Some(t), "shop", |n| maps.get(n))
    }

    fn rendered(set: &TemplateSet) -> BTreeMap<String, String> {
        let data: SecretData = [("user".to_string(), SecretValue::from("shop"))].into();
        set.render(&Templates::new(&data))
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.as_str().unwrap().to_string()))
            .collect()
    }

    #[test]
    fn config_map_keys_render_the_secret_keys_of_their_name() {
        let set = load(&spec(
            vec![from("shared", &["url"]), from("other", &["extra"])],
            &[],
        ))
        .unwrap();
        assert_eq!(set.keys().collect::<Vec<_>>(), ["extra", "url"]);
        let out = rendered(&set);
        assert_eq!(out["url"], "postgres://shop@db");
        assert_eq!(out["extra"], "SHOP");
        assert!(!out.contains_key("unused"), "only the listed keys");
    }

    #[test]
    fn inline_templates_win_over_config_maps() {
        let set = load(&spec(
            vec![from("shared", &["url", "dsn"])],
            &[("url", "mysql://{{ user }}")],
        ))
        .unwrap();
        let out = rendered(&set);
        assert_eq!(out["url"], "mysql://shop");
        assert_eq!(out["dsn"], "user=shop");
    }

    #[test]
    fn two_config_maps_naming_one_key_collide() {
        let e = load(&spec(
            vec![from("shared", &["url"]), from("other", &["url"])],
            &[],
        ))
        .unwrap_err();
        assert_eq!(e.reason, Reason::KeyCollision);
        assert!(
            e.message.contains("templateFrom[1].configMap.items[0]")
                && e.message.contains("templateFrom[0].configMap.items[0]"),
            "{e}"
        );
        // The same key listed twice for one ConfigMap, too.
        let e = load(&spec(vec![from("shared", &["url", "url"])], &[])).unwrap_err();
        assert_eq!(e.reason, Reason::KeyCollision);
    }

    #[test]
    fn a_missing_config_map_or_key_is_template_not_found_naming_both() {
        let e = load(&spec(vec![from("gone", &["url"])], &[])).unwrap_err();
        assert_eq!(e.reason, Reason::TemplateNotFound);
        assert!(e.message.contains("templateFrom[0]"), "{e}");
        assert!(
            e.message
                .contains(r#"ConfigMap "gone" (keys "url"): not found in namespace "shop""#),
            "{e}"
        );
        let e = load(&spec(
            vec![from("other", &["extra"]), from("shared", &["url", "nope"])],
            &[],
        ))
        .unwrap_err();
        assert_eq!(e.reason, Reason::TemplateNotFound);
        assert!(
            e.message.contains("templateFrom[1].configMap.items[1]"),
            "{e}"
        );
        assert!(
            e.message
                .contains(r#"ConfigMap "shared" has no key "nope""#),
            "{e}"
        );
        // Without ConfigMaps at all (callers that have none).
        let e = TemplateSet::inline(Some(&spec(vec![from("shared", &["url"])], &[]))).unwrap_err();
        assert_eq!(e.reason, Reason::TemplateNotFound);
        let set = TemplateSet::inline(Some(&spec(vec![], &[("a", "{{ user }}")]))).unwrap();
        assert_eq!(rendered(&set)["a"], "shop");
        assert!(TemplateSet::inline(None).unwrap().is_empty());
    }

    #[test]
    fn an_invalid_key_is_invalid_config() {
        let e = load(&spec(vec![from("shared", &["a/b"])], &[])).unwrap_err();
        assert_eq!(e.reason, Reason::InvalidConfig);
        assert!(
            e.message.contains("templateFrom[0].configMap.items[0]"),
            "{e}"
        );
    }

    #[test]
    fn render_errors_name_the_config_map_and_key() {
        let maps: BTreeMap<String, ConfigMapData> = [(
            "t".to_string(),
            [("out".to_string(), "{{ nope }}".to_string())].into(),
        )]
        .into();
        let set = TemplateSet::load(Some(&spec(vec![from("t", &["out"])], &[])), "shop", |n| {
            maps.get(n)
        })
        .unwrap();
        let data = SecretData::new();
        let e = set.render(&Templates::new(&data)).unwrap_err();
        assert_eq!(e.reason, Reason::InvalidTemplate);
        assert!(
            e.message
                .contains(r#"spec.target.template.templateFrom[0] (ConfigMap "t", key "out")"#),
            "{e}"
        );
    }

    #[test]
    fn the_digest_follows_what_is_rendered() {
        let t = spec(vec![from("shared", &["url"])], &[]);
        let a = load(&t).unwrap();
        assert_eq!(a.digest(), load(&t).unwrap().digest());
        let mut edited = maps();
        edited
            .get_mut("shared")
            .unwrap()
            .insert("url".into(), "postgres://{{ user }}@db2".into());
        let b = TemplateSet::load(Some(&t), "shop", |n| edited.get(n)).unwrap();
        assert_ne!(a.digest(), b.digest());
        // An edit of a key the binding does not use changes nothing.
        let mut unrelated = maps();
        unrelated
            .get_mut("shared")
            .unwrap()
            .insert("unused".into(), "changed".into());
        let c = TemplateSet::load(Some(&t), "shop", |n| unrelated.get(n)).unwrap();
        assert_eq!(a.digest(), c.digest());
    }

    #[test]
    fn referenced_config_maps() {
        let mut b = SecretBindingSpec::default();
        assert!(config_map_names(&b).is_empty());
        b.target.template = Some(spec(
            vec![from("b", &["x"]), from("a", &["y"]), from("b", &["z"])],
            &[],
        ));
        assert_eq!(
            config_map_names(&b).into_iter().collect::<Vec<_>>(),
            ["a", "b"]
        );
    }
}
