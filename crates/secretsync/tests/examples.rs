//! Every manifest under `examples/` parses into the typed resources.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use std::path::{Path, PathBuf};

use secretsync_api::manifest::{Manifest, parse_stream};

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            out.push(p);
        }
    }
}

#[test]
fn every_example_manifest_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut files = Vec::new();
    yaml_files(&root, &mut files);
    assert!(!files.is_empty(), "no example manifests found");
    let mut typed = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let docs = parse_stream(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for d in docs {
            match d {
                Manifest::Source(s) => {
                    assert!(
                        s.spec.backend_kind().is_some(),
                        "{}: SecretSource needs exactly one backend",
                        f.display()
                    );
                    typed += 1;
                }
                Manifest::Binding(b) => {
                    assert!(
                        !b.spec.data.is_empty() || !b.spec.data_from.is_empty(),
                        "{}: binding without data",
                        f.display()
                    );
                    secretsync_api::parse_duration(&b.spec.refresh_interval)
                        .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                    typed += 1;
                }
                _ => {}
            }
        }
    }
    assert!(typed >= 2);
}
