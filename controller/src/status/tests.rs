use phantom_policies::Modules;
use phantom_policies::Sources;
use phantom_policies::store::PolicyStore;
use phantom_policies::wasm::PluginHost;
use serde_json::json;

use super::*;

fn policy(name: &str, generation: i64, expression: &str) -> PhantomPolicy {
    serde_json::from_value(json!({
        "apiVersion": "phantom.dev/v1alpha1", "kind": "PhantomPolicy",
        "metadata": {"name": name, "generation": generation},
        "spec": {"match": {"namespaceSelector": {"matchLabels": {"team": "a"}}},
                 "rules": {"validations": [{"name": "r", "expression": expression}]}}
    }))
    .expect("policy")
}

fn binding() -> SecretBinding {
    serde_json::from_value(json!({
        "apiVersion": "phantom.dev/v1alpha1", "kind": "SecretBinding",
        "metadata": {"name": "db", "namespace": "shop", "generation": 1},
        "spec": {"selector": {"podSelector": {}}, "openbao": {"role": "app"},
                 "secrets": [{"name": "password", "path": "app/db", "key": "password",
                              "delivery": [{"kind": "file", "path": "db"}]}]}
    }))
    .expect("binding")
}

fn at(secs: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
}

fn find<'a>(s: &'a CommonStatus, type_: &str) -> &'a Condition {
    s.condition(type_).expect(type_)
}

#[test]
fn a_broken_edit_reports_its_error_and_the_previous_version_in_force() {
    let store = PolicyStore::new(PluginHost::new().expect("host"));
    let v1 = policy("p", 1, "true");
    let first = store.update(
        &Sources {
            policies: vec![v1.clone()],
            ..Default::default()
        },
        &Modules::default(),
        true,
    );
    let good = policy_status(&v1, &first, &at(100));
    assert!(good.is_true("Compiled") && good.is_true("Ready"));
    assert_eq!(find(&good, "Ready").reason, reasons::ENFORCED);
    assert_eq!(good.observed_generation, Some(1));
    let v1_digest = good.compiled_digest.clone().expect("digest");

    let mut v2 = policy("p", 2, "object.spec.(");
    v2.status = Some(good.clone());
    let second = store.update(
        &Sources {
            policies: vec![v2.clone()],
            ..Default::default()
        },
        &Modules::default(),
        true,
    );
    let held = policy_status(&v2, &second, &at(200));
    assert!(!held.is_true("Compiled") && !held.is_true("Ready"));
    assert_eq!(
        find(&held, "Ready").reason,
        reasons::PREVIOUS_VERSION_ENFORCED
    );
    assert_eq!(
        held.compiled_digest.as_deref(),
        Some(v1_digest.as_str()),
        "v1 is what is enforced"
    );
    assert_eq!(held.observed_generation, Some(2));
    let error = &held.errors[0];
    assert_eq!(error.field, "spec.rules.validations[0].expression");
    assert!(error.position.is_some(), "{error:?}");
    let compiled = find(&held, "Compiled");
    assert!(
        compiled
            .message
            .contains("spec.rules.validations[0].expression"),
        "{}",
        compiled.message
    );
    assert!(compiled.message.contains("line 1"), "{}", compiled.message);
    assert_eq!(compiled.last_transition_time, at(200));

    // Nothing changed: the same status, times kept.
    let mut v2_again = v2.clone();
    v2_again.status = Some(held.clone());
    let again = policy_status(&v2_again, &second, &at(300));
    assert!(same(&held, &again));
    assert_eq!(find(&again, "Compiled").last_transition_time, at(200));
}

#[test]
fn a_policy_that_never_compiled_is_not_enforced() {
    let store = PolicyStore::new(PluginHost::new().expect("host"));
    let broken = policy("q", 1, "1 +");
    let snap = store.update(
        &Sources {
            policies: vec![broken.clone()],
            ..Default::default()
        },
        &Modules::default(),
        true,
    );
    let status = policy_status(&broken, &snap, &at(1));
    assert_eq!(find(&status, "Ready").reason, reasons::NOT_ENFORCED);
    assert!(status.compiled_digest.is_none());
}

#[test]
fn a_binding_is_admitted_by_the_policies_selecting_its_namespace() {
    let store = PolicyStore::new(PluginHost::new().expect("host"));
    let b = binding();
    let snap = store.update(
        &Sources {
            policies: vec![policy("team-a", 1, "true")],
            bindings: vec![b.clone()],
            ..Default::default()
        },
        &Modules::default(),
        true,
    );
    let ns = |team: &str| json!({"metadata": {"name": "shop", "labels": {"team": team}}});
    let admitted = binding_status(&b, &snap, &ns("a"), &at(1));
    assert_eq!(admitted.admitted_by, ["team-a"]);
    assert!(admitted.common.is_true("Admitted") && admitted.common.is_true("Ready"));
    let orphan = binding_status(&b, &snap, &ns("b"), &at(1));
    assert!(orphan.admitted_by.is_empty());
    let c = find(&orphan.common, "Admitted");
    assert_eq!(c.reason, reasons::NOT_ADMITTED);
    assert!(c.message.contains("namespace shop"), "{}", c.message);
}

#[test]
fn bindings_delivering_one_secret_name_to_the_same_pods_flag_each_other() {
    let store = PolicyStore::new(PluginHost::new().expect("host"));
    let db = binding();
    let mut legacy = binding();
    legacy.metadata.name = Some("legacy".into());
    legacy.spec.secrets[0].delivery[0].path = Some("legacy-db".into());
    let mut elsewhere = binding();
    elsewhere.metadata.namespace = Some("other".into());
    let snap = store.update(
        &Sources {
            policies: vec![policy("team-a", 1, "true")],
            bindings: vec![db.clone(), legacy.clone(), elsewhere.clone()],
            ..Default::default()
        },
        &Modules::default(),
        true,
    );
    let ns = json!({"metadata": {"name": "shop", "labels": {"team": "a"}}});
    for (b, other) in [(&db, "legacy"), (&legacy, "db")] {
        let status = binding_status(b, &snap, &ns, &at(1));
        let c = find(&status.common, condition_types::DELIVERIES_DISTINCT);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", reasons::CONFLICTS)
        );
        assert!(
            c.message
                .contains(&format!("SecretBinding {other} (secret password)"))
                && c.message
                    .contains(&format!("SecretBinding {} (secret password)", b.name_any())),
            "{}",
            c.message
        );
    }
    let apart = binding_status(&elsewhere, &snap, &ns, &at(1));
    assert!(apart.common.is_true(condition_types::DELIVERIES_DISTINCT));
}
