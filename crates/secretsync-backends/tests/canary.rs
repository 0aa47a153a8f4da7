//! A planted canary value must never appear in an error message, a log line or `Debug`
//! output, whichever error path is taken.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secretsync_api::{
    DataFromItem, DataItem, FileFormat, FileSource, FindSpec, RemoteRef, SecretBindingSpec,
    TemplateSpec,
};
use secretsync_backends::cache::NoopObserver;
use secretsync_backends::env::{EnvBackend, EnvPolicy, Environment};
use secretsync_backends::file::FileBackend;
use secretsync_backends::{Backend, ReadRequest, SecretValue, SourceCache, resolve::resolve};

const CANARY: &str = "CANARY-9f81c2-do-not-leak";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn check(seen: &mut Vec<String>, what: &str, text: String) {
    assert!(!text.contains(CANARY), "{what} leaked the canary: {text}");
    assert!(
        !text.contains("do-not-leak"),
        "{what} leaked part of the canary: {text}"
    );
    seen.push(what.to_string());
}

fn binding(data: Vec<DataItem>, data_from: Vec<DataFromItem>) -> SecretBindingSpec {
    SecretBindingSpec {
        data,
        data_from,
        ..Default::default()
    }
}

fn item(key: &str, property: Option<&str>) -> DataItem {
    DataItem {
        secret_key: "out".into(),
        remote_ref: RemoteRef {
            key: key.into(),
            property: property.map(Into::into),
            ..Default::default()
        },
        optional: false,
    }
}

#[test]
fn canary_never_leaks_from_local_backends_and_resolution() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("d");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("plain"), CANARY).unwrap();
    std::fs::write(dir.join("json"), format!(r#"{{"user":"{CANARY}","n":1}}"#)).unwrap();
    std::fs::write(dir.join("a_b"), CANARY).unwrap();
    std::fs::write(dir.join("a:b"), CANARY).unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("s"), CANARY).unwrap();
    std::os::unix::fs::symlink(outside.path().join("s"), dir.join("escape")).unwrap();
    let bad_dotenv = root.path().join("bad.env");
    std::fs::write(&bad_dotenv, format!("OK=1\n{CANARY}\n")).unwrap();
    let bad_json = root.path().join("bad.json");
    std::fs::write(&bad_json, format!(r#"{{"k": "{CANARY}"#)).unwrap();
    let bad_yaml = root.path().join("bad.yaml");
    std::fs::write(&bad_yaml, format!("k: [{CANARY}\n")).unwrap();
    let environment = Environment::Fixed(Arc::new(
        [(
            "CANARYTEST_SECRET".to_string(),
            std::ffi::OsString::from(CANARY),
        )]
        .into(),
    ));

    let mut seen = Vec::new();
    rt.block_on(async {
        let file = |path: &std::path::Path, format| {
            FileBackend::new(
                String::new(),
                &FileSource {
                    path: path.display().to_string(),
                    format,
                },
                root.path(),
            )
            .unwrap()
        };
        let dirb: Arc<dyn Backend> = Arc::new(file(&dir, FileFormat::Dir));
        let cache = SourceCache::new(dirb.clone(), Duration::ZERO, Arc::new(NoopObserver));

        // Backend-level error paths.
        let e = dirb.read(&ReadRequest::latest("escape")).await.unwrap_err();
        check(&mut seen, "symlink escape", format!("{e} {e:?}"));
        let e = dirb.read(&ReadRequest::latest("../x")).await.unwrap_err();
        check(&mut seen, "dotdot key", format!("{e} {e:?}"));
        for (p, f) in [
            (&bad_dotenv, FileFormat::Dotenv),
            (&bad_json, FileFormat::Json),
            (&bad_yaml, FileFormat::Yaml),
        ] {
            let e = file(p, f)
                .read(&ReadRequest::latest("k"))
                .await
                .unwrap_err();
            check(&mut seen, "bad structured file", format!("{e} {e:?}"));
        }
        let env = EnvBackend::with_environment(
            "CANARYTEST_".into(),
            EnvPolicy::deny_all(),
            environment.clone(),
        );
        let e = env.read(&ReadRequest::latest("secret")).await.unwrap_err();
        check(&mut seen, "env denied", format!("{e} {e:?}"));

        // Resolution error paths.
        let specs = vec![
            (
                "property on non-JSON",
                binding(vec![item("plain", Some("x"))], vec![]),
            ),
            (
                "missing property",
                binding(vec![item("json", Some("nope"))], vec![]),
            ),
            (
                "extract non-JSON",
                binding(
                    vec![],
                    vec![DataFromItem {
                        extract: Some(RemoteRef {
                            key: "plain".into(),
                            ..Default::default()
                        }),
                        find: None,
                    }],
                ),
            ),
            (
                "key collision",
                binding(
                    vec![],
                    vec![DataFromItem {
                        extract: None,
                        find: Some(FindSpec {
                            name: "a?b".into(),
                            ..Default::default()
                        }),
                    }],
                ),
            ),
            ("missing key", binding(vec![item("nope", None)], vec![])),
        ];
        for (what, spec) in specs {
            let e = resolve(&spec, &cache, false, None).await.unwrap_err();
            check(&mut seen, what, format!("{e} {e:?}"));
        }
        for tpl in [
            "{{ out | int }}",
            "{{ out + 1 }}",
            "{{ out.x.y }}",
            "{{ out[5:] | nope }}",
        ] {
            let mut spec = binding(vec![item("plain", None)], vec![]);
            spec.target.template = Some(TemplateSpec {
                data: [("t".to_string(), tpl.to_string())].into(),
                ..Default::default()
            });
            match resolve(&spec, &cache, false, None).await {
                Err(e) => check(&mut seen, "template error", format!("{e} {e:?}")),
                Ok(data) => check(&mut seen, "template debug", format!("{data:?}")),
            }
        }
        // Successful reads: Debug of the values and of the cache's results.
        let ok = resolve(
            &binding(vec![item("json", Some("user"))], vec![]),
            &cache,
            false,
            None,
        )
        .await
        .unwrap();
        assert_eq!(ok["out"].as_str(), Some(CANARY));
        check(&mut seen, "resolved data Debug", format!("{ok:?}"));
        check(
            &mut seen,
            "SecretValue Debug",
            format!("{:?}", SecretValue::from(CANARY)),
        );
    });
    assert!(seen.len() >= 15, "too few paths driven: {seen:?}");
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        !logs.contains(CANARY),
        "a log line leaked the canary: {logs}"
    );
}

/// The error paths of data shaping (decoding, template functions, binary values, templated
/// labels) and the Debug of a resolution with templated metadata carry no value.
#[tokio::test]
async fn canary_never_leaks_from_shaping() {
    use secretsync_api::{DecodingStrategy, TemplateMetadata};
    use secretsync_api::{TemplateConfigMap, TemplateFrom, TemplateItem};
    use secretsync_backends::ReadOptions;
    use secretsync_backends::resolve::resolve_with;
    use secretsync_backends::template_from::{ConfigMapData, TemplateSet};
    use std::collections::BTreeMap;

    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("d");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("plain"), CANARY).unwrap();
    std::fs::write(dir.join("json"), format!(r#"{{"user":"{CANARY}"}}"#)).unwrap();
    let mut binary = CANARY.as_bytes().to_vec();
    binary.push(0xff);
    std::fs::write(dir.join("binary"), binary).unwrap();
    let backend: Arc<dyn Backend> = Arc::new(
        FileBackend::new(
            String::new(),
            &FileSource {
                path: dir.display().to_string(),
                format: FileFormat::Dir,
            },
            root.path(),
        )
        .unwrap(),
    );
    let cache = SourceCache::new(backend, Duration::ZERO, Arc::new(NoopObserver));
    let opts = ReadOptions::within(Duration::MAX);
    let mut seen = Vec::new();

    let decoding = |key: &str, s: DecodingStrategy| {
        let mut i = item(key, None);
        i.remote_ref.decoding_strategy = s;
        binding(vec![i], vec![])
    };
    let mut specs = vec![
        (
            "Base64 of non-base64",
            decoding("plain", DecodingStrategy::Base64),
        ),
        (
            "Base64URL of non-base64",
            decoding("plain", DecodingStrategy::Base64Url),
        ),
        (
            "extract field not base64",
            binding(
                vec![],
                vec![DataFromItem {
                    extract: Some(RemoteRef {
                        key: "json".into(),
                        decoding_strategy: DecodingStrategy::Base64,
                        ..Default::default()
                    }),
                    find: None,
                }],
            ),
        ),
        (
            "find value not base64",
            binding(
                vec![],
                vec![DataFromItem {
                    extract: None,
                    find: Some(FindSpec {
                        name: "plai?".into(),
                        decoding_strategy: DecodingStrategy::Base64,
                    }),
                }],
            ),
        ),
    ];
    for (what, tpl) in [
        ("b64decode of non-base64", "{{ out | b64decode }}"),
        ("fromjson of non-JSON", "{{ out | fromjson }}"),
        ("tojson then int", "{{ out | tojson | int }}"),
        ("sha256 of a number", "{{ 1 | sha256 }}"),
    ] {
        let mut spec = binding(vec![item("plain", None)], vec![]);
        spec.target.template = Some(TemplateSpec {
            data: [("t".to_string(), tpl.to_string())].into(),
            ..Default::default()
        });
        specs.push((what, spec));
    }
    for (what, tpl) in [
        ("binary written out", "{{ out }}"),
        ("binary concatenated", "{{ out ~ '' }}"),
        ("binary through upper", "{{ out | upper }}"),
    ] {
        let mut spec = binding(vec![item("binary", None)], vec![]);
        spec.target.template = Some(TemplateSpec {
            data: [("t".to_string(), tpl.to_string())].into(),
            ..Default::default()
        });
        specs.push((what, spec));
    }
    let mut label = binding(vec![item("plain", None)], vec![]);
    label.target.template = Some(TemplateSpec {
        metadata: TemplateMetadata {
            labels: [("l".to_string(), "{{ out }}!".to_string())].into(),
            ..Default::default()
        },
        ..Default::default()
    });
    specs.push(("invalid label value", label));
    for (what, spec) in specs {
        let templates = TemplateSet::inline(spec.target.template.as_ref()).unwrap();
        let r = resolve_with(&spec, &templates, &cache, opts, None).await;
        check(&mut seen, what, format!("{r:?}"));
        let e = r.data.expect_err(what);
        check(&mut seen, what, format!("{e} {e:?}"));
    }

    // The same template errors from a templateFrom ConfigMap, and a ConfigMap or key that
    // is missing: messages name the ConfigMap and key only.
    let config_maps: BTreeMap<String, ConfigMapData> = [(
        "tpl".to_string(),
        [
            ("int".to_string(), "{{ out | int }}".to_string()),
            ("bin".to_string(), "{{ out }}".to_string()),
        ]
        .into(),
    )]
    .into();
    for (what, key, input) in [
        ("templateFrom filter on the value", "int", "plain"),
        ("templateFrom binary written out", "bin", "binary"),
        ("templateFrom key missing", "nope", "plain"),
    ] {
        let mut spec = binding(vec![item(input, None)], vec![]);
        spec.target.template = Some(TemplateSpec {
            template_from: vec![TemplateFrom {
                config_map: TemplateConfigMap {
                    name: "tpl".into(),
                    items: vec![TemplateItem { key: key.into() }],
                },
            }],
            ..Default::default()
        });
        let r = match TemplateSet::load(spec.target.template.as_ref(), "ns", |n| config_maps.get(n))
        {
            Ok(templates) => resolve_with(&spec, &templates, &cache, opts, None).await,
            Err(e) => {
                check(&mut seen, what, format!("{e} {e:?}"));
                continue;
            }
        };
        check(&mut seen, what, format!("{r:?}"));
        let e = r.data.expect_err(what);
        check(&mut seen, what, format!("{e} {e:?}"));
    }

    // Success: binary passed through b64encode, an annotation holding the value, an
    // optional key missing. Debug of the whole resolution shows none of it.
    let named = |secret_key: &str, key: &str, optional: bool| DataItem {
        secret_key: secret_key.into(),
        remote_ref: RemoteRef {
            key: key.into(),
            ..Default::default()
        },
        optional,
    };
    let mut spec = binding(
        vec![
            named("bin", "binary", false),
            named("p", "plain", false),
            named("gone", "nope", true),
        ],
        vec![],
    );
    spec.target.template = Some(TemplateSpec {
        data: [("enc".to_string(), "{{ bin | b64encode }}".to_string())].into(),
        metadata: TemplateMetadata {
            annotations: [("a".to_string(), "{{ p }}".to_string())].into(),
            ..Default::default()
        },
        ..Default::default()
    });
    let templates = TemplateSet::inline(spec.target.template.as_ref()).unwrap();
    let r = resolve_with(&spec, &templates, &cache, opts, None).await;
    assert_eq!(r.missing_keys, ["nope"]);
    assert_eq!(r.metadata.annotations["a"], CANARY);
    check(&mut seen, "resolution Debug", format!("{r:?}"));
    assert!(r.data.is_ok());
    assert!(seen.len() >= 22, "too few paths driven: {seen:?}");
}
