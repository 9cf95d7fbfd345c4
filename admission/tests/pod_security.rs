//! An injection never takes a pod out of the Pod Security `restricted` profile: every pod template
//! of the corpus (`tests/data/corpus/`: ten public Helm charts rendered with default values, see
//! its README and licences) that meets the profile still meets it once Phantom injected it, and
//! Phantom's own containers add no violation to the templates that do not.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use phantom_admission::config::InjectConfig;
use phantom_admission::mutate::mutate;
use phantom_admission::pod_security::restricted;
use phantom_admission::seal::Sealing;
use phantom_crds::Injection;
use phantom_crds::wellknown::COMMAND_ANNOTATION;
use phantom_policies::Decision;
use serde::Deserialize;
use serde_json::Value;

/// Every pod template in the corpus: (file, workload kind/name, template).
fn templates() -> Vec<(String, String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/corpus");
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("the corpus directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("a corpus file");
        for document in serde_yaml::Deserializer::from_str(&text) {
            let Ok(mut object) = Value::deserialize(document) else {
                continue;
            };
            yaml11_octal_modes(&mut object);
            let kind = object["kind"].as_str().unwrap_or_default().to_owned();
            let template = match kind.as_str() {
                "Pod" => object.clone(),
                "CronJob" => object["spec"]["jobTemplate"]["spec"]["template"].clone(),
                _ => object["spec"]["template"].clone(),
            };
            if template.is_null() {
                continue;
            }
            let name = format!(
                "{kind}/{}",
                object["metadata"]["name"].as_str().unwrap_or("?")
            );
            let file = file.file_name().unwrap().to_string_lossy().into_owned();
            out.push((file, name, template));
        }
    }
    out
}

/// The API server reads manifests as YAML 1.1, where `defaultMode: 0755` is an octal number;
/// serde_yaml reads YAML 1.2 and sees a string.
fn yaml11_octal_modes(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                let octal = item
                    .as_str()
                    .filter(|_| key == "defaultMode" || key == "mode")
                    .and_then(|s| s.strip_prefix('0'))
                    .and_then(|digits| i64::from_str_radix(digits, 8).ok());
                match octal {
                    Some(mode) => *item = Value::from(mode),
                    None => yaml11_octal_modes(item),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(yaml11_octal_modes),
        _ => {}
    }
}

fn decision() -> Decision {
    Decision {
        allowed: true,
        inject: true,
        injection: Some(Injection::default()),
        deciding_policy: Some("corpus".into()),
        matched: Vec::new(),
        denials: Vec::new(),
        would_deny: Vec::new(),
        would_inject: false,
        bindings: Vec::new(),
        monitoring: Default::default(),
        key_release_policies: Vec::new(),
        warnings: Vec::new(),
        policy_digest: "sha256:corpus".into(),
    }
}

/// The template injected, and how many containers admission asked for a `runAsUser` first.
fn injected(template: &Value) -> (PodSpec, PodSpec, usize) {
    let mut spec: PodSpec = serde_json::from_value(template["spec"].clone()).expect("a pod spec");
    let mut asked = 0;
    loop {
        match try_inject(template, &spec) {
            Ok(after) => return (spec, after, asked),
            Err(message) => {
                // A non-root container without a uid: admission names it; the user sets the
                // image's user, as the message says.
                let container = spec
                    .containers
                    .iter_mut()
                    .find(|c| {
                        message.starts_with(&format!(
                            "container {} runs as non-root without a runAsUser",
                            c.name
                        ))
                    })
                    .unwrap_or_else(|| panic!("an unexpected refusal: {message}"));
                container
                    .security_context
                    .get_or_insert_with(Default::default)
                    .run_as_user = Some(65532);
                asked += 1;
            }
        }
    }
}

fn try_inject(template: &Value, spec: &PodSpec) -> Result<PodSpec, String> {
    let mut metadata: ObjectMeta =
        serde_json::from_value(template["metadata"].clone()).unwrap_or_default();
    // Images that rely on their ENTRYPOINT name it, as a user would.
    metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(COMMAND_ANNOTATION.into(), r#"["/entrypoint"]"#.into());
    let pod = Pod {
        metadata,
        spec: Some(spec.clone()),
        ..Default::default()
    };
    let sealing = Sealing::now(
        Arc::new(phantom_seal::Key::generate(0).expect("random")),
        "corpus",
        false,
    );
    let patch = mutate(
        &pod,
        &decision(),
        &[],
        None,
        &InjectConfig::default(),
        &sealing,
    )
    .map_err(|e| e.to_string())?;
    let mut value = serde_json::to_value(&pod).expect("json");
    json_patch::patch(&mut value, &patch).expect("the patch applies");
    let out: Pod = serde_json::from_value(value).expect("a pod");
    Ok(out.spec.expect("spec"))
}

#[test]
fn injected_corpus_pods_stay_within_the_restricted_profile() {
    let templates = templates();
    assert!(templates.len() >= 27, "{} templates", templates.len());
    let (mut compliant, mut asked) = (0, 0);
    for (file, workload, template) in &templates {
        let (before, after, asked_here) = injected(template);
        asked += asked_here;
        let was = restricted(&before);
        let now = restricted(&after);
        if was.is_empty() {
            compliant += 1;
            assert!(
                now.is_empty(),
                "{file} {workload} met `restricted`; injected, it breaks: {now:#?}"
            );
        }
        let ours: Vec<&String> = now.iter().filter(|v| v.contains("[phantom-")).collect();
        // Phantom's containers can only be as non-root as the application tells them to be.
        let unknown_user = ours
            .iter()
            .all(|v| v.contains("run as non-root") || v.contains("seccompProfile"));
        assert!(
            ours.is_empty() || (!was.is_empty() && unknown_user),
            "{file} {workload}: Phantom's containers break {ours:#?}"
        );
    }
    println!(
        "{compliant} of {} corpus pod templates meet `restricted`; {asked} containers needed a runAsUser",
        templates.len()
    );
    assert!(
        compliant >= 5,
        "only {compliant} corpus templates meet `restricted`: the check would prove little"
    );
}
