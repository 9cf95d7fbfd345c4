use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use phantom_crds::wellknown::SEAL_ANNOTATION;
use phantom_seal::Purpose;
use serde_json::json;

use super::*;
use crate::config::AdmissionEndpoint;

const NOW: i64 = 1_800_000_000;

fn ns(name: &str, labels: serde_json::Value) -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap()
}

fn pod(namespace: &str, name: &str, annotations: serde_json::Value) -> Pod {
    serde_json::from_value(json!({"metadata": {
        "name": name, "namespace": namespace, "uid": format!("uid-{name}"),
        "generateName": "web-1-",
        "annotations": annotations,
        "creationTimestamp": Timestamp::from_second(NOW).unwrap().to_string(),
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "u", "controller": true}]
    }, "spec": {"containers": [{"name": "app"}]}}))
    .unwrap()
}

fn settings() -> WebhookSettings {
    WebhookSettings::new(AdmissionEndpoint::Url("https://127.0.0.1:1".into()))
}

fn covered() -> Vec<Namespace> {
    vec![ns("shop", json!({"phantom.dev/inject": "enabled"}))]
}

/// `pod` with its decision record sealed as admission would have at `signed`.
fn sealed(key: &Key, mut pod: Pod, signed: i64) -> Pod {
    let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(
        DECISION_ANNOTATION.into(),
        r#"{"outcome":"not-injected"}"#.into(),
    );
    // Admission sees the pod before the API server generates its name.
    let mut request = pod.clone();
    request.metadata.name = None;
    let seal = phantom_seal::seal(key, &request, "shop", Purpose::Stored, signed).unwrap();
    pod.metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(SEAL_ANNOTATION.into(), seal);
    pod
}

fn reasons(gaps: &[GapPod]) -> BTreeMap<&str, GapReason> {
    gaps.iter().map(|g| (g.name.as_str(), g.reason)).collect()
}

#[test]
fn only_unrecorded_pods_of_covered_namespaces_are_gaps_without_a_key() {
    let namespaces = [
        ns("shop", json!({"phantom.dev/inject": "enabled"})),
        ns("plain", json!({})),
        ns("out", json!({"phantom.dev/inject": "disabled"})),
        ns(
            "glass",
            json!({"phantom.dev/inject": "enabled", "phantom.dev/override": "bypass"}),
        ),
        ns("kube-system", json!({"phantom.dev/inject": "enabled"})),
    ];
    let decided = json!({DECISION_ANNOTATION: "{\"outcome\":\"injected\"}"});
    let pods = [
        pod("shop", "seen", decided.clone()),
        pod("shop", "missed", json!({})),
        pod(
            "shop",
            "static",
            json!({"kubernetes.io/config.mirror": "x"}),
        ),
        pod("plain", "a", json!({})),
        pod("out", "b", json!({})),
        pod("glass", "c", json!({})),
        pod("kube-system", "d", json!({})),
    ];
    let gaps = find(&namespaces, &pods, &settings(), None);
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(gaps[0].name, "missed");
    assert_eq!(gaps[0].reason, GapReason::Unrecorded);
    assert_eq!(gaps[0].owner.as_deref(), Some("ReplicaSet/web-1"));
}

#[test]
fn a_record_counts_only_with_admissions_seal_made_at_the_pods_creation() {
    let key = Key::generate(NOW - 24 * 3600).unwrap();
    let other_key = Key::generate(NOW - 24 * 3600).unwrap();
    let forged = pod(
        "shop",
        "forged",
        json!({DECISION_ANNOTATION: "{\"outcome\":\"not-selected\"}"}),
    );
    let mut altered = sealed(&key, pod("shop", "altered", json!({})), NOW);
    altered.metadata.annotations.as_mut().unwrap().insert(
        DECISION_ANNOTATION.into(),
        "{\"outcome\":\"injected\"}".into(),
    );
    let pods = [
        sealed(&key, pod("shop", "good", json!({})), NOW - 1),
        forged,
        altered,
        sealed(&other_key, pod("shop", "foreign", json!({})), NOW),
        sealed(&key, pod("shop", "stale", json!({})), NOW - 3600),
    ];
    let gaps = find(&covered(), &pods, &settings(), Some(&key));
    assert_eq!(
        reasons(&gaps),
        BTreeMap::from([
            ("forged", GapReason::Unsealed),
            ("altered", GapReason::ForgedSeal),
            ("foreign", GapReason::ForgedSeal),
            ("stale", GapReason::UntimelySeal),
        ])
    );
}

#[test]
fn a_seal_copied_onto_a_younger_pod_marks_the_copy() {
    let key = Key::generate(NOW - 24 * 3600).unwrap();
    let original = sealed(&key, pod("shop", "web-1-aaaaa", json!({})), NOW);
    // Same generateName, containers and ServiceAccount: the seal verifies on the copy too.
    let mut copy = original.clone();
    copy.metadata.name = Some("web-1-bbbbb".into());
    copy.metadata.uid = Some("uid-copy".into());
    copy.metadata.creation_timestamp = Some(Time(Timestamp::from_second(NOW + 30).unwrap()));
    let gaps = find(&covered(), &[copy, original], &settings(), Some(&key));
    assert_eq!(
        reasons(&gaps),
        BTreeMap::from([("web-1-bbbbb", GapReason::CopiedSeal)])
    );
}

#[test]
fn unsealed_records_count_only_from_before_seals_were_required() {
    let record = json!({DECISION_ANNOTATION: "{\"outcome\":\"injected\"}"});
    let upgraded = Key::generate(NOW + 60).unwrap();
    let gaps = find(
        &covered(),
        &[pod("shop", "legacy", record.clone())],
        &settings(),
        Some(&upgraded),
    );
    assert!(gaps.is_empty(), "{gaps:?}");
    let fresh = Key::generate(NOW).unwrap();
    let gaps = find(
        &covered(),
        &[pod("shop", "legacy", record)],
        &settings(),
        Some(&fresh),
    );
    assert_eq!(
        reasons(&gaps),
        BTreeMap::from([("legacy", GapReason::Unsealed)])
    );
}

#[test]
fn the_serving_secrets_key_is_read_and_a_damaged_one_named() {
    let key = Key::generate(NOW).unwrap();
    let secret = |text: &str| -> Secret {
        serde_json::from_value(json!({"data": {
            DECISION_KEY: base64_encode(text)
        }}))
        .unwrap()
    };
    let read = stored_key(&secret(&key.encode()), "Secret x/y")
        .expect("present")
        .expect("valid");
    assert_eq!(*read.encode(), *key.encode());
    let err = stored_key(&secret("garbage"), "Secret x/y")
        .expect("present")
        .unwrap_err();
    assert!(err.to_string().contains("Secret x/y"), "{err}");
    assert!(stored_key(&Secret::default(), "Secret x/y").is_none());
}

fn base64_encode(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}
