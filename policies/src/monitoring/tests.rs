use phantom_crds::{Detection, MonitoringAction, PhantomPolicy};
use serde_json::json;

use super::*;

fn policy(name: &str, spec: serde_json::Value) -> PhantomPolicy {
    serde_json::from_value(json!({
        "apiVersion": "phantom.dev/v1alpha1", "kind": "PhantomPolicy",
        "metadata": {"name": name}, "spec": spec
    }))
    .expect("a policy")
}

fn pod(labels: serde_json::Value) -> serde_json::Value {
    json!({"metadata": {"name": "web-1", "namespace": "shop", "labels": labels},
           "spec": {"containers": [{"name": "app", "image": "app:1"}]}})
}

fn namespace(labels: serde_json::Value) -> serde_json::Value {
    json!({"metadata": {"name": "shop", "labels": labels}})
}

#[test]
fn a_matching_policy_protects_with_its_detections_and_action() {
    let (set, warnings) = MonitoringSet::compile(&[policy(
        "guard",
        json!({"match": {"namespaceSelector": {"matchLabels": {"tier": "pci"}}},
               "monitoring": {"detections": ["proc-environ"], "action": "block",
                              "alertLabels": {"team": "payments"}}}),
    )]);
    assert!(warnings.is_empty());
    let found = set.scope(&pod(json!({})), &namespace(json!({"tier": "pci"})));
    assert!(found.is_protected());
    assert_eq!(found.policies, ["guard"]);
    assert_eq!(
        found.scope.detections.iter().copied().collect::<Vec<_>>(),
        [Detection::ProcEnviron]
    );
    assert_eq!(found.scope.action, MonitoringAction::Block);
    assert_eq!(found.scope.alert_labels["team"], "payments");
    let elsewhere = set.scope(&pod(json!({})), &namespace(json!({"tier": "dev"})));
    assert!(!elsewhere.is_protected());
}

#[test]
fn monitor_only_disabled_and_unmonitored_policies_protect_nothing() {
    let (set, _) = MonitoringSet::compile(&[
        policy(
            "dry-run",
            json!({"match": {}, "enforcement": "monitor", "monitoring": {}}),
        ),
        policy(
            "off",
            json!({"match": {}, "monitoring": {"enabled": false}}),
        ),
        policy("none", json!({"match": {}})),
    ]);
    assert_eq!(set.policy_names().count(), 0);
    assert!(
        !set.scope(&pod(json!({})), &namespace(json!({})))
            .is_protected()
    );
}

#[test]
fn selectors_and_conditions_narrow_and_block_wins() {
    let (set, _) = MonitoringSet::compile(&[
        policy(
            "labelled",
            json!({"match": {"objectSelector": {"matchLabels": {"app": "api"}}},
                   "monitoring": {"detections": ["ptrace"]}}),
        ),
        policy(
            "conditional",
            json!({"match": {"matchConditions": [{"name": "prod", "expression": "object.metadata.labels.env == 'prod'"}]},
                   "monitoring": {"action": "block"}}),
        ),
    ]);
    let api_dev = set.scope(
        &pod(json!({"app": "api", "env": "dev"})),
        &namespace(json!({})),
    );
    assert_eq!(api_dev.policies, ["labelled"]);
    assert_eq!(api_dev.scope.action, MonitoringAction::Alert);
    let api_prod = set.scope(
        &pod(json!({"app": "api", "env": "prod"})),
        &namespace(json!({})),
    );
    assert_eq!(api_prod.policies, ["conditional", "labelled"]);
    assert_eq!(api_prod.scope.action, MonitoringAction::Block);
    assert_eq!(api_prod.scope.detections.len(), Detection::ALL.len());
}

#[test]
fn a_broken_condition_protects_rather_than_switching_the_check_off() {
    let (set, warnings) = MonitoringSet::compile(&[policy(
        "broken",
        json!({"match": {"matchConditions": [
                  {"name": "syntax", "expression": "object.metadata.("},
               ]},
               "monitoring": {}}),
    )]);
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].message.contains("counts as matching"),
        "{warnings:?}"
    );
    assert!(
        set.scope(&pod(json!({})), &namespace(json!({})))
            .is_protected()
    );
    // A condition that errors at evaluation (no such label) counts as matching too.
    let (set, _) = MonitoringSet::compile(&[policy(
        "erroring",
        json!({"match": {"matchConditions": [
                  {"name": "missing", "expression": "object.metadata.labels.absent == 'x'"},
               ]},
               "monitoring": {}}),
    )]);
    assert!(
        set.scope(&pod(json!({})), &namespace(json!({})))
            .is_protected()
    );
}
