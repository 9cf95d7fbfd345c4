//! Every example parses into the typed API without losing a field: a typo in an example (or a
//! field the types do not know) would be silently pruned by the API server, so catch it here.

use std::path::{Path, PathBuf};

use phantom_crds::{AttestationRequirement, PhantomPolicy, SecretBinding};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("read crds/examples")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// Paths present in `original` but absent from `round_tripped`.
fn lost_fields(original: &Value, round_tripped: &Value, at: &str, lost: &mut Vec<String>) {
    match (original, round_tripped) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let here = format!("{at}.{k}");
                match b.get(k) {
                    Some(w) => lost_fields(v, w, &here, lost),
                    None => lost.push(here),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                lost_fields(v, w, &format!("{at}[{i}]"), lost);
            }
        }
        _ => {}
    }
}

fn check<K: DeserializeOwned + Serialize>(path: &Path, doc: Value) {
    let typed: K = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
    let back = serde_json::to_value(&typed).expect("serialize");
    let mut lost = Vec::new();
    lost_fields(&doc, &back, "", &mut lost);
    assert!(
        lost.is_empty(),
        "{}: fields unknown to the API types: {lost:?}",
        path.display()
    );
}

#[test]
fn every_example_is_a_valid_typed_object() {
    let files = examples();
    assert!(
        files.len() >= 4,
        "expected the examples under crds/examples, found {files:?}"
    );
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read example");
        let doc: Value = serde_yaml::from_str(&text).expect("example is YAML");
        match doc["kind"].as_str() {
            Some("PhantomPolicy") => check::<PhantomPolicy>(&path, doc),
            Some("SecretBinding") => check::<SecretBinding>(&path, doc),
            Some("AttestationRequirement") => check::<AttestationRequirement>(&path, doc),
            other => panic!("{}: unexpected kind {other:?}", path.display()),
        }
    }
}

#[test]
fn defaults_are_the_documented_ones() {
    let binding: SecretBinding = serde_yaml::from_str(
        "apiVersion: phantom.dev/v1alpha1\nkind: SecretBinding\nmetadata: {name: b, namespace: n}\n\
         spec:\n  selector: {serviceAccountName: app}\n  openbao: {role: app}\n  secrets:\n  \
         - {name: s, path: app/s, delivery: [{kind: socket}]}\n",
    )
    .expect("minimal binding parses");
    assert_eq!(binding.spec.openbao.auth_mount, "kubernetes");
    assert_eq!(binding.spec.openbao.audience, "openbao");
    assert_eq!(binding.spec.secrets[0].mount, "secret");
    assert_eq!(binding.spec.refresh.jitter_percent, 10);
    assert_eq!(
        std::time::Duration::from(binding.spec.refresh.interval),
        std::time::Duration::from_secs(240)
    );

    let policy: PhantomPolicy = serde_yaml::from_str(
        "apiVersion: phantom.dev/v1alpha1\nkind: PhantomPolicy\nmetadata: {name: p}\nspec: {}\n",
    )
    .expect("empty policy parses");
    assert_eq!(
        policy.spec.injection.mode,
        phantom_crds::InjectionMode::Sidecar
    );
    assert_eq!(policy.spec.enforcement, phantom_crds::Enforcement::Enforce);
}
