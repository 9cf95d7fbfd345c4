//! `compile` + `decide` + `check_key_release` on realistic objects (pure logic: no cluster).

use phantom_crds::{AttestationRequirement, KeyReleasePlan, PhantomPolicy, SecretBinding};
use phantom_policies::wasm::{PluginHost, module_digest};
use phantom_policies::{
    AdmissionInput, KeyReleaseInput, KeyReleaseSet, Modules, PolicySet, RequestInfo, Sources,
};
use serde_json::{Value, json};

fn policy(yaml: &str) -> PhantomPolicy {
    serde_yaml::from_str(yaml).expect("policy YAML")
}

const PAYMENTS: &str = r#"
apiVersion: phantom.dev/v1alpha1
kind: PhantomPolicy
metadata: {name: payments}
spec:
  match:
    namespaceSelector: {matchLabels: {phantom.dev/inject: enabled}}
  rules:
    validations:
      - name: team-label
        expression: "has(object.metadata.labels) && 'team' in object.metadata.labels"
        messageExpression: "'pod ' + object.metadata.name + ' needs a team label'"
  keyRelease:
    conditions:
      - name: same-namespace
        expression: "binding.metadata.namespace == pod.metadata.namespace"
        message: "bindings release only to their own namespace"
  monitoring: {enabled: true, detections: [ptrace]}
"#;

fn binding() -> SecretBinding {
    serde_yaml::from_str(
        r#"
apiVersion: phantom.dev/v1alpha1
kind: SecretBinding
metadata: {name: api, namespace: shop}
spec:
  selector: {serviceAccountName: api}
  openbao: {role: shop-api}
  secrets:
    - {name: db, path: shop/db, key: password, delivery: [{kind: env, name: DB_PASSWORD}]}
"#,
    )
    .expect("binding YAML")
}

/// An AttestationRequirement `snp` accepting SEV-SNP with one measurement, plus `extra` spec lines.
fn snp_requirement(extra: &str) -> AttestationRequirement {
    serde_yaml::from_str(&format!(
        "apiVersion: phantom.dev/v1alpha1\nkind: AttestationRequirement\nmetadata: {{name: snp}}\nspec:\n  teeTypes: [sev-snp]\n  sevSnp: {{measurements: [\"{}\"]}}\n{extra}",
        "a".repeat(96)
    ))
    .expect("requirement YAML")
}

/// `policy` with its key release gated on the `snp` requirement.
fn gated_by_snp(policy: &str) -> String {
    policy.replace(
        "  keyRelease:\n",
        "  keyRelease:\n    attestationRequirementRef: {name: snp}\n",
    )
}

fn set(policies: Vec<PhantomPolicy>) -> PolicySet {
    let sources = Sources {
        policies,
        bindings: vec![binding()],
        requirements: vec![],
        unreadable: Vec::new(),
    };
    let (set, errors) = PolicySet::compile(
        &sources,
        &PluginHost::new().expect("host"),
        &Modules::default(),
    );
    assert!(errors.is_empty(), "unexpected compile errors: {errors:?}");
    set
}

fn pod(name: &str, labels: Value) -> Value {
    json!({"metadata": {"name": name, "namespace": "shop", "labels": labels},
           "spec": {"serviceAccountName": "api", "containers": [{"name": "app", "image": "app:1", "command": ["/app"]}]}})
}

fn input(pod: Value, ns_labels: Value) -> AdmissionInput {
    AdmissionInput {
        object: pod,
        old_object: None,
        namespace_object: Some(json!({"metadata": {"name": "shop", "labels": ns_labels}})),
        request: RequestInfo {
            operation: "CREATE".into(),
            namespace: "shop".into(),
            ..Default::default()
        },
    }
}

const ENABLED: fn() -> Value = || json!({"phantom.dev/inject": "enabled"});

#[test]
fn a_labelled_namespace_gets_injection_with_its_bindings() {
    let set = set(vec![policy(PAYMENTS)]);
    let d = set.decide(&input(pod("web", json!({"team": "shop"})), ENABLED()));
    assert!(d.allowed && d.inject, "{d:#?}");
    assert_eq!(d.deciding_policy.as_deref(), Some("payments"));
    assert_eq!(d.bindings.len(), 1);
    assert_eq!(d.key_release_policies, vec!["payments".to_owned()]);
    assert_eq!(d.monitoring.detections.len(), 1);
    assert_eq!(d.policy_digest, set.digest());
}

#[test]
fn monitoring_merges_detections_and_block_wins_over_alert() {
    let guard_all = PAYMENTS
        .replace("name: payments", "name: payments-guard")
        .replace(
            "monitoring: {enabled: true, detections: [ptrace]}",
            "monitoring: {enabled: true, action: block}",
        );
    let set = set(vec![policy(PAYMENTS), policy(&guard_all)]);
    let d = set.decide(&input(pod("web", json!({"team": "shop"})), ENABLED()));
    assert_eq!(
        d.monitoring.detections.iter().copied().collect::<Vec<_>>(),
        phantom_crds::Detection::ALL.to_vec(),
        "an absent list means every detection"
    );
    assert_eq!(d.monitoring.action, phantom_crds::MonitoringAction::Block);
    let alert_only = set_one(PAYMENTS);
    let d = alert_only.decide(&input(pod("web", json!({"team": "shop"})), ENABLED()));
    assert_eq!(d.monitoring.action, phantom_crds::MonitoringAction::Alert);
}

fn set_one(yaml: &str) -> PolicySet {
    set(vec![policy(yaml)])
}

#[test]
fn other_namespaces_are_left_alone() {
    let set = set(vec![policy(PAYMENTS)]);
    let d = set.decide(&input(pod("web", json!({"team": "shop"})), json!({})));
    assert!(d.allowed && !d.inject && d.matched.is_empty(), "{d:#?}");
}

#[test]
fn a_failed_validation_refuses_with_the_rule_message() {
    let set = set(vec![policy(PAYMENTS)]);
    let d = set.decide(&input(pod("web", json!({})), ENABLED()));
    assert!(!d.allowed && !d.inject);
    assert_eq!(d.denials[0].rule, "team-label");
    assert_eq!(d.denials[0].message, "pod web needs a team label");
}

#[test]
fn monitor_policies_record_what_would_have_happened() {
    let monitored = PAYMENTS.replace(
        "monitoring: {enabled: true, detections: [ptrace]}",
        "enforcement: monitor",
    );
    let set = set(vec![policy(&monitored)]);
    let d = set.decide(&input(pod("web", json!({})), ENABLED()));
    assert!(
        d.allowed && !d.inject,
        "monitor must change nothing: {d:#?}"
    );
    assert_eq!(d.would_deny.len(), 1);
    let d = set.decide(&input(pod("web", json!({"team": "a"})), ENABLED()));
    assert!(d.would_inject && !d.inject);
}

#[test]
fn canary_share_is_close_to_its_percentage_and_stable() {
    let canaried = PAYMENTS.replace("  rules:", "  injection: {canary: {percent: 30}}\n  rules:");
    let set = set(vec![policy(&canaried)]);
    let owned = |i: usize, suffix: &str| {
        let mut p = pod(
            &format!("app-{i}-5f7-{suffix}"),
            json!({"team": "t", "pod-template-hash": "5f7"}),
        );
        p["metadata"]["ownerReferences"] =
            json!([{"kind": "ReplicaSet", "name": format!("app-{i}-5f7"), "controller": true}]);
        p
    };
    let injected = (0..1000)
        .filter(|i| set.decide(&input(owned(*i, "a"), ENABLED())).inject)
        .count();
    assert!(
        (270..=330).contains(&injected),
        "30% canary injected {injected} of 1000 owners"
    );
    for i in 0..200 {
        let a = set.decide(&input(owned(i, "a"), ENABLED())).inject;
        let b = set.decide(&input(owned(i, "b"), ENABLED())).inject;
        assert_eq!(a, b, "two replicas of one owner got different answers");
    }
}

#[test]
fn a_pod_no_binding_selects_is_not_injected_and_says_why() {
    let set = set(vec![policy(PAYMENTS)]);
    let mut p = pod("web", json!({"team": "shop"}));
    p["spec"]["serviceAccountName"] = json!("batch");
    let d = set.decide(&input(p, ENABLED()));
    assert!(d.allowed && !d.inject);
    assert!(
        d.warnings[0].contains("no SecretBinding"),
        "{:?}",
        d.warnings
    );
}

#[test]
fn broken_policies_are_reported_with_positions_and_left_out() {
    let broken = policy(
        r#"
apiVersion: phantom.dev/v1alpha1
kind: PhantomPolicy
metadata: {name: broken}
spec:
  rules:
    validations:
      - {name: typo, expression: "object.metadata.labels.team ==", message: m}
      - {name: unknown, expression: "secret.value == 'x'"}
"#,
    );
    let sources = Sources {
        policies: vec![policy(PAYMENTS), broken],
        ..Default::default()
    };
    let (set, errors) = PolicySet::compile(
        &sources,
        &PluginHost::new().expect("host"),
        &Modules::default(),
    );
    assert_eq!(set.policy_names(), vec!["payments"]);
    assert_eq!(errors.len(), 1);
    let e = &errors[0];
    assert_eq!((e.kind, e.name.as_str()), ("PhantomPolicy", "broken"));
    assert_eq!(e.errors[0].field, "spec.rules.validations[0].expression");
    assert!(e.errors[0].position.is_some());
    assert_eq!(e.errors[1].field, "spec.rules.validations[1].expression");
    assert!(
        e.errors[1].message.contains("'secret'"),
        "{}",
        e.errors[1].message
    );
}

#[test]
fn the_digest_depends_on_content_not_order() {
    let other = PAYMENTS.replace("name: payments", "name: other");
    let a = set(vec![policy(PAYMENTS), policy(&other)]);
    let b = set(vec![policy(&other), policy(PAYMENTS)]);
    assert_eq!(a.digest(), b.digest());
    let changed = set(vec![
        policy(&PAYMENTS.replace("[ptrace]", "[proc-mem]")),
        policy(&other),
    ]);
    assert_ne!(a.digest(), changed.digest());
}

#[test]
fn oversized_objects_are_refused_not_evaluated() {
    let set = set(vec![policy(PAYMENTS)]);
    let mut p = pod("web", json!({"team": "shop"}));
    p["spec"]["containers"] = Value::Array(vec![json!({"name": "c"}); 2000]);
    let d = set.decide(&input(p, ENABLED()));
    assert!(
        !d.allowed
            && d.denials[0]
                .message
                .contains("object.spec.containers has 2000 items"),
        "{d:#?}"
    );
}

fn wasm_policy(name: &str, fixture: &str, sha: Option<&str>) -> (PhantomPolicy, Modules) {
    let bytes = wat::parse_file(format!(
        "{}/tests/data/{fixture}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture");
    let sha = sha
        .map(str::to_owned)
        .unwrap_or_else(|| module_digest(&bytes));
    let mut modules = Modules::default();
    modules
        .config_maps
        .insert(format!("phantom-system/plugins/{fixture}"), bytes);
    let p: PhantomPolicy = serde_json::from_value(json!({
        "apiVersion": "phantom.dev/v1alpha1", "kind": "PhantomPolicy", "metadata": {"name": name},
        "spec": {"rules": {"plugins": [{
            "name": "p",
            "module": {"configMap": {"namespace": "phantom-system", "name": "plugins", "key": fixture}},
            "sha256": sha, "timeoutMs": 20
        }]}}
    }))
    .expect("policy");
    (p, modules)
}

/// Compiles one policy with the shop binding.
fn compile_one(
    policy: PhantomPolicy,
    host: &PluginHost,
    modules: &Modules,
) -> (PolicySet, Vec<phantom_policies::ObjectErrors>) {
    let sources = Sources {
        policies: vec![policy],
        bindings: vec![binding()],
        ..Default::default()
    };
    PolicySet::compile(&sources, host, modules)
}

#[test]
fn plugins_run_and_misbehaving_ones_fail_closed() {
    let host = PluginHost::new().expect("host");
    let (p, modules) = wasm_policy("allow", "allow.wat", None);
    let (set, errors) = compile_one(p, &host, &modules);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(set.decide(&input(pod("web", json!({})), json!({}))).inject);

    let (p, modules) = wasm_policy("looping", "loop.wat", None);
    let (set, _) = compile_one(p, &host, &modules);
    let d = set.decide(&input(pod("web", json!({})), json!({})));
    assert!(
        !d.allowed && d.denials[0].message.contains("time limit of 20 ms"),
        "{d:#?}"
    );

    let (p, modules) = wasm_policy("pinned-wrong", "allow.wat", Some(&"a".repeat(64)));
    let (set, errors) = PolicySet::compile(
        &Sources {
            policies: vec![p],
            ..Default::default()
        },
        &host,
        &modules,
    );
    assert!(set.policy_names().is_empty());
    assert_eq!(errors[0].errors[0].field, "spec.rules.plugins[0].sha256");
}

#[test]
fn key_release_names_the_failing_condition() {
    let set = set(vec![policy(PAYMENTS)]);
    let pod = pod("web", json!({}));
    let ok = KeyReleaseInput {
        pod: pod.clone(),
        binding: json!({"metadata": {"namespace": "shop"}}),
        attestation: None,
    };
    assert_eq!(set.check_key_release(&["payments".into()], &ok), Ok(()));
    let other = KeyReleaseInput {
        binding: json!({"metadata": {"namespace": "elsewhere"}}),
        ..ok.clone()
    };
    let refusal = set
        .check_key_release(&["payments".into()], &other)
        .expect_err("refused");
    assert_eq!(refusal.condition, "same-namespace");
    assert_eq!(
        refusal.message,
        "bindings release only to their own namespace"
    );
    let unknown = set
        .check_key_release(&["nope".into()], &ok)
        .expect_err("unknown policy refuses");
    assert!(unknown.message.contains("not in the policy set"));
}

#[test]
fn attestation_gated_release_needs_matching_evidence() {
    let requirement = snp_requirement(
        "  conditions:\n    - {name: no-debug, expression: \"!attestation.debug\", message: \"debug guests get no keys\"}\n",
    );
    let gated = gated_by_snp(PAYMENTS);
    let sources = Sources {
        policies: vec![policy(&gated)],
        bindings: vec![binding()],
        requirements: vec![requirement],
        unreadable: Vec::new(),
    };
    let (set, errors) = PolicySet::compile(
        &sources,
        &PluginHost::new().expect("host"),
        &Modules::default(),
    );
    assert!(errors.is_empty(), "{errors:?}");
    let base = KeyReleaseInput {
        pod: pod("web", json!({})),
        binding: json!({"metadata": {"namespace": "shop"}}),
        attestation: None,
    };
    let policies = ["payments".to_owned()];
    assert!(
        set.check_key_release(&policies, &base)
            .expect_err("no evidence")
            .message
            .contains("presented none")
    );
    let debug = KeyReleaseInput {
        attestation: Some(json!({"tee": "sev-snp", "debug": true})),
        ..base.clone()
    };
    assert_eq!(
        set.check_key_release(&policies, &debug)
            .expect_err("debug")
            .condition,
        "snp/no-debug"
    );
    let tdx = KeyReleaseInput {
        attestation: Some(json!({"tee": "tdx", "debug": false})),
        ..base.clone()
    };
    assert!(set.check_key_release(&policies, &tdx).is_err());
    let good = KeyReleaseInput {
        attestation: Some(json!({"tee": "sev-snp", "debug": false})),
        ..base
    };
    assert_eq!(set.check_key_release(&policies, &good), Ok(()));
}

#[test]
fn the_sidecars_key_release_set_answers_like_the_policy_set() {
    let requirement = snp_requirement("");
    let named = PAYMENTS
        .replace("name: payments", "name: named-pods")
        .replace(
            "        message: \"bindings release only to their own namespace\"\n",
            "        message: \"bindings release only to their own namespace\"\n      - {name: web-only, expression: \"pod.metadata.name.startsWith('web')\"}\n",
        );
    let gated = gated_by_snp(&PAYMENTS.replace("name: payments", "name: gated"));
    let sources = Sources {
        policies: vec![policy(PAYMENTS), policy(&named), policy(&gated)],
        bindings: vec![binding()],
        requirements: vec![requirement],
        unreadable: Vec::new(),
    };
    let (set, errors) = PolicySet::compile(
        &sources,
        &PluginHost::new().expect("host"),
        &Modules::default(),
    );
    assert!(errors.is_empty(), "{errors:?}");
    let admitted = pod("", json!({}));
    let names = ["payments".to_owned(), "named-pods".to_owned()];
    // Through JSON, as it travels in the sidecar's environment.
    let plan: KeyReleasePlan = serde_json::from_str(
        &serde_json::to_string(&set.key_release_plan(&names, &admitted)).expect("encode"),
    )
    .expect("decode");
    assert_eq!(plan.policies.len(), 2);
    assert!(
        plan.requirements.is_empty(),
        "only named policies' requirements travel"
    );
    assert!(
        plan.pod.pointer("/spec/containers").is_none(),
        "{}",
        plan.pod
    );
    let own = json!({"metadata": {"namespace": "shop"}});
    let elsewhere = json!({"metadata": {"namespace": "elsewhere"}});

    let web = KeyReleaseSet::compile(&plan, Some("web-7f9c")).expect("compiles");
    assert_eq!(web.policy_names(), ["payments", "named-pods"]);
    assert_eq!(web.check(&own, None), Ok(()));
    let full = KeyReleaseInput {
        pod: pod("web-7f9c", json!({})),
        binding: elsewhere.clone(),
        attestation: None,
    };
    assert_eq!(
        web.check(&elsewhere, None),
        set.check_key_release(&names, &full)
    );
    let batch = KeyReleaseSet::compile(&plan, Some("batch-1")).expect("compiles");
    assert_eq!(
        batch.check(&own, None).expect_err("name").condition,
        "web-only"
    );

    let gated_plan = set.key_release_plan(&["gated".to_owned()], &admitted);
    assert_eq!(gated_plan.requirements.len(), 1);
    let gated = KeyReleaseSet::compile(&gated_plan, None).expect("compiles");
    assert!(
        gated
            .check(&own, None)
            .expect_err("no evidence")
            .message
            .contains("presented none")
    );
    assert_eq!(gated.check(&own, Some(&json!({"tee": "sev-snp"}))), Ok(()));

    let mut broken = plan.clone();
    broken.policies[0].key_release.conditions[0].expression =
        "binding.metadata.namespace ==".into();
    let err = KeyReleaseSet::compile(&broken, None).expect_err("broken CEL");
    assert!(
        err.to_string()
            .contains("spec.keyRelease.conditions[0].expression"),
        "{err}"
    );
}

#[test]
fn bindings_are_admitted_by_the_policies_covering_their_namespace() {
    let monitored = PAYMENTS
        .replace("name: payments", "name: dry-run")
        .replace("  rules:", "  enforcement: monitor\n  rules:");
    let set = set(vec![policy(PAYMENTS), policy(&monitored)]);
    let ns = |labels: Value| json!({"metadata": {"name": "shop", "labels": labels}});
    assert_eq!(
        set.policies_admitting(&ns(ENABLED())),
        vec!["payments".to_owned()],
        "monitor policies admit nothing"
    );
    assert!(set.policies_admitting(&ns(json!({}))).is_empty());
}

#[test]
fn a_refresh_interval_below_one_second_does_not_compile() {
    let host = PluginHost::new().expect("host");
    for interval in ["0s", "500ms"] {
        let mut hot = binding();
        hot.spec.refresh.interval = serde_json::from_value(json!(interval)).expect("duration");
        let (_, errors) = PolicySet::compile(
            &Sources {
                bindings: vec![hot],
                ..Sources::default()
            },
            &host,
            &Modules::default(),
        );
        let text = errors.iter().map(ToString::to_string).collect::<String>();
        assert!(
            text.contains("spec.refresh.interval") && text.contains("at least 1s"),
            "{interval}: {text}"
        );
    }
}
