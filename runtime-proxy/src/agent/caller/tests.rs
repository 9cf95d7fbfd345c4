use std::sync::Arc;

use phantom_identity::review::ReviewedPod;
use serde_json::{Value, json};

use super::*;

const UID: &str = "6f1c9a52-3e1b-4bd0-9d55-6a1f0e1a2b3c";
const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn plan_env(bindings: &[&str]) -> String {
    let plan: Vec<Value> = bindings
        .iter()
        .map(|b| {
            json!({"name": b, "spec": {"selector": {"serviceAccountName": "api"}, "openbao": {"role": "r"}, "secrets": []}})
        })
        .collect();
    Value::from(plan).to_string()
}

fn pod_with(init_env: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "api-1", "namespace": "shop", "uid": UID, "labels": {"app": "api"}},
        "spec": {
            "serviceAccountName": "api",
            "initContainers": [{"name": INIT_CONTAINER, "env": init_env}],
            "containers": [{"name": "app"}, {"name": "log"}]
        },
        "status": {"containerStatuses": [{"name": "app", "containerID": format!("containerd://{ID}")}]}
    }))
    .expect("pod")
}

fn pod() -> Pod {
    pod_with(json!([
        {"name": PLAN_ENV, "value": plan_env(&["db"])},
        {"name": WRAPPED_ENV, "value": "app"}
    ]))
}

fn reviewed(uid: &str) -> Reviewed {
    Reviewed {
        pod: ReviewedPod {
            uid: uid.into(),
            name: "api-1".into(),
            namespace: "shop".into(),
        },
        service_account: "api".into(),
    }
}

fn namespace(labels: Value) -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": "shop", "labels": labels}})).expect("ns")
}

fn served() -> Namespace {
    namespace(json!({"phantom.dev/inject": "enabled"}))
}

fn binding(name: &str, delivery: Value) -> Arc<SecretBinding> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "phantom.dev/v1alpha1", "kind": "SecretBinding",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"selector": {"serviceAccountName": "api"}, "openbao": {"role": "shop-api"},
                     "secrets": [{"name": "pw", "path": "shop/db", "key": "password", "delivery": [delivery]}]}
        }))
        .expect("binding"),
    )
}

fn caller() -> Caller {
    identify(
        &pod(),
        "app",
        &reviewed(UID),
        Some(&served()),
        &Selection::default(),
    )
    .expect("served")
}

#[test]
fn the_process_is_found_in_its_pod_by_container_id() {
    let pods = vec![Arc::new(pod())];
    let (found, container) = pod_of_process(&pods, &format!("/k8s.io/{ID}")).expect("the pod");
    assert_eq!(found.uid().as_deref(), Some(UID));
    assert_eq!(container, "app");
    assert!(pod_of_process(&pods, "/user.slice/session-1.scope").is_none());
}

#[test]
fn the_token_must_name_the_process_pod_in_a_served_namespace() {
    let c = caller();
    assert_eq!(
        (
            c.namespace.as_str(),
            c.service_account.as_str(),
            c.container.as_str()
        ),
        ("shop", "api", "app")
    );
    let other = identify(
        &pod(),
        "app",
        &reviewed("another-uid"),
        Some(&served()),
        &Selection::default(),
    )
    .unwrap_err();
    assert!(matches!(other, Refusal::OtherPod { .. }), "{other}");
    for ns in [
        Some(namespace(json!({}))),
        Some(namespace(json!({"phantom.dev/inject": "disabled"}))),
        None,
    ] {
        let err = identify(
            &pod(),
            "app",
            &reviewed(UID),
            ns.as_ref(),
            &Selection::default(),
        )
        .unwrap_err();
        assert_eq!(err, Refusal::NamespaceNotServed("shop".into()));
    }
}

#[test]
fn the_plan_takes_the_bindings_as_the_cluster_has_them() {
    let bindings = vec![binding("db", json!({"kind": "env", "name": "PW"}))];
    let plan = plan_for(&pod(), &caller(), &bindings).expect("plan");
    assert_eq!(plan.wrapped, ["app"]);
    assert_eq!(
        plan.bindings[0].spec.openbao.role, "shop-api",
        "the cluster's spec, not the pod's"
    );
    assert!(plan.key_release.is_none());
    assert_eq!(plan_names(&pod()), ["db"]);
    assert!(plan_names(&pod_with(json!([]))).is_empty());
}

#[test]
fn pods_without_a_plan_or_with_gone_bindings_are_refused() {
    let bare = pod_with(json!([]));
    assert!(matches!(
        plan_for(&bare, &caller(), &[]).unwrap_err(),
        Refusal::NotInjected(_)
    ));
    let err = plan_for(&pod(), &caller(), &[]).unwrap_err();
    assert!(matches!(err, Refusal::BindingGone { .. }), "{err}");
    let elsewhere: Arc<SecretBinding> = {
        let mut b = (*binding("db", json!({"kind": "env", "name": "PW"}))).clone();
        b.metadata.namespace = Some("other".into());
        Arc::new(b)
    };
    assert!(matches!(
        plan_for(&pod(), &caller(), &[elsewhere]).unwrap_err(),
        Refusal::BindingGone { .. }
    ));
    let mut unselected = (*binding("db", json!({"kind": "env", "name": "PW"}))).clone();
    unselected.spec.selector.service_account_name = Some("someone-else".into());
    assert!(matches!(
        plan_for(&pod(), &caller(), &[Arc::new(unselected)]).unwrap_err(),
        Refusal::BindingGone { .. }
    ));
}

#[test]
fn unwrapped_containers_files_and_attestation_are_refused() {
    let bindings = vec![binding("db", json!({"kind": "env", "name": "PW"}))];
    let log = Caller {
        container: "log".into(),
        ..caller()
    };
    assert!(matches!(
        plan_for(&pod(), &log, &bindings).unwrap_err(),
        Refusal::NotWrapped { .. }
    ));
    let files = vec![binding("db", json!({"kind": "file", "path": "pw"}))];
    assert!(matches!(
        plan_for(&pod(), &caller(), &files).unwrap_err(),
        Refusal::Undeliverable { .. }
    ));
    let gated = pod_with(json!([
        {"name": PLAN_ENV, "value": plan_env(&["db"])},
        {"name": WRAPPED_ENV, "value": "app"},
        {"name": KEY_RELEASE_ENV, "value": json!({
            "policyDigest": "d",
            "policies": [{"name": "p", "keyRelease": {"attestationRequirementRef": {"name": "prod-snp"}}}],
            "requirements": [{"name": "prod-snp", "spec": {"teeTypes": ["sev-snp"]}}],
            "pod": {}
        }).to_string()}
    ]));
    let err = plan_for(&gated, &caller(), &bindings).unwrap_err();
    assert!(err.to_string().contains("prod-snp"), "{err}");
    let broken = pod_with(
        json!([{"name": PLAN_ENV, "value": "{not json"}, {"name": WRAPPED_ENV, "value": "app"}]),
    );
    assert!(matches!(
        plan_for(&broken, &caller(), &bindings).unwrap_err(),
        Refusal::BadPlan { .. }
    ));
}
