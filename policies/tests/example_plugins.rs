//! The example plugins of `wasm-plugins/`, compiled to wasm32-unknown-unknown by `make plugins`,
//! run through the real host and the real `decide`.

use std::path::PathBuf;

use phantom_crds::{PhantomPolicy, SecretBinding};
use phantom_policies::wasm::{PluginHost, PluginLimits, module_digest};
use phantom_policies::{AdmissionInput, Modules, PolicySet, RequestInfo, Sources};
use serde_json::{Value, json};

fn wasm(name: &str) -> Vec<u8> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target
        .join("wasm32-unknown-unknown/release")
        .join(format!("phantom_plugin_{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the example plugins first with `make plugins`",
            path.display()
        )
    })
}

/// One host for the whole test binary: modules compile once per digest, as in production.
fn host() -> &'static PluginHost {
    static HOST: std::sync::OnceLock<PluginHost> = std::sync::OnceLock::new();
    HOST.get_or_init(|| PluginHost::new().expect("host"))
}

fn evaluate(name: &str, object: Value, settings: Value) -> phantom_policies::wasm::PluginVerdict {
    let host = host();
    let bytes = wasm(name);
    let module = host.load(&bytes, &module_digest(&bytes)).expect("loads");
    let input = json!({"request": {"object": object, "request": {"namespace": "shop"}}, "settings": settings});
    host.evaluate(
        &module,
        &serde_json::to_vec(&input).expect("json"),
        PluginLimits {
            timeout_ms: 100,
            memory_mib: 16,
        },
    )
    .expect("evaluates")
}

#[test]
fn require_labels_names_the_missing_labels() {
    let pod = json!({"metadata": {"name": "web", "labels": {"team": "shop"}}});
    assert!(evaluate("require_labels", pod.clone(), Value::Null).allowed);
    let verdict = evaluate(
        "require_labels",
        pod,
        json!({"labels": ["team", "cost-center"]}),
    );
    assert!(!verdict.allowed);
    assert!(
        verdict
            .message
            .as_deref()
            .is_some_and(|m| m.contains("cost-center") && !m.contains("team,")),
        "{verdict:?}"
    );
    let verdict = evaluate("require_labels", json!({}), json!({"lables": ["typo"]}));
    assert!(
        !verdict.allowed
            && verdict
                .message
                .as_deref()
                .is_some_and(|m| m.contains("settings are invalid")),
        "{verdict:?}"
    );
}

#[test]
fn no_privileged_refuses_pods_that_can_read_other_processes() {
    let ok = json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "app"}]}});
    assert!(evaluate("no_privileged", ok, Value::Null).allowed);
    let bad = json!({"metadata": {"name": "web"}, "spec": {"hostPID": true, "containers": [
        {"name": "app", "securityContext": {"privileged": true}},
        {"name": "debug", "securityContext": {"capabilities": {"add": ["SYS_PTRACE"]}}}]}});
    let verdict = evaluate("no_privileged", bad.clone(), Value::Null);
    let message = verdict.message.unwrap_or_default();
    assert!(
        !verdict.allowed
            && message.contains("hostPID")
            && message.contains("app is privileged")
            && message.contains("SYS_PTRACE"),
        "{message}"
    );
    let verdict = evaluate("no_privileged", bad, json!({"allowHostPID": true}));
    assert!(!verdict.message.unwrap_or_default().contains("hostPID"));
}

#[test]
fn team_rollout_is_stable_per_workload_and_follows_team_percentages() {
    let pod = |team: &str, rs: &str| {
        json!({"metadata": {"name": format!("{rs}-x"), "namespace": "shop", "labels": {"team": team, "pod-template-hash": "9f"},
               "ownerReferences": [{"kind": "ReplicaSet", "name": format!("{rs}-9f"), "controller": true}]}})
    };
    let settings = json!({"teams": {"payments": 100, "search": 0}});
    let inject = |v: phantom_policies::wasm::PluginVerdict| {
        v.hints.expect("hints")["inject"].as_bool().expect("bool")
    };
    assert!(inject(evaluate(
        "team_rollout",
        pod("payments", "api"),
        settings.clone()
    )));
    assert!(!inject(evaluate(
        "team_rollout",
        pod("search", "api"),
        settings.clone()
    )));
    let half = json!({"teams": {"web": 50}});
    let a = (0..100)
        .filter(|i| {
            inject(evaluate(
                "team_rollout",
                pod("web", &format!("app{i}")),
                half.clone(),
            ))
        })
        .count();
    assert!(
        (30..=70).contains(&a),
        "50% rollout injected {a} of 100 workloads"
    );
}

#[test]
fn a_rollout_hint_keeps_decide_from_injecting() {
    let bytes = wasm("team_rollout");
    let mut modules = Modules::default();
    modules.config_maps.insert(
        "phantom-system/plugins/team-rollout.wasm".into(),
        bytes.clone(),
    );
    let policy: PhantomPolicy = serde_json::from_value(json!({
        "apiVersion": "phantom.dev/v1alpha1", "kind": "PhantomPolicy", "metadata": {"name": "rollout"},
        "spec": {"rules": {"plugins": [{"name": "rollout", "sha256": module_digest(&bytes),
            "module": {"configMap": {"namespace": "phantom-system", "name": "plugins", "key": "team-rollout.wasm"}},
            "settings": {"teams": {"payments": 100}}}]}}
    }))
    .expect("policy");
    let binding: SecretBinding = serde_json::from_value(json!({
        "apiVersion": "phantom.dev/v1alpha1", "kind": "SecretBinding", "metadata": {"name": "b", "namespace": "shop"},
        "spec": {"selector": {"podSelector": {}}, "openbao": {"role": "r"}, "secrets": [{"name": "s", "path": "p", "delivery": [{"kind": "socket"}]}]}
    }))
    .expect("binding");
    let (set, errors) = PolicySet::compile(
        &Sources {
            policies: vec![policy],
            bindings: vec![binding],
            ..Default::default()
        },
        &PluginHost::new().expect("host"),
        &modules,
    );
    assert!(errors.is_empty(), "{errors:?}");
    let input = |team: &str| AdmissionInput {
        object: json!({"metadata": {"name": "p", "namespace": "shop", "labels": {"team": team}}, "spec": {"containers": []}}),
        request: RequestInfo {
            operation: "CREATE".into(),
            namespace: "shop".into(),
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(set.decide(&input("payments")).inject);
    let d = set.decide(&input("search"));
    assert!(
        d.allowed && !d.inject && d.matched[0].declined_by.as_deref() == Some("rollout"),
        "{d:#?}"
    );
}
