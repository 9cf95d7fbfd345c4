use serde_json::{Value, json};

use super::*;

fn spec(value: Value) -> PodSpec {
    serde_json::from_value(value).expect("a pod spec")
}

/// A pod that meets every rule, with its settings on the containers.
fn compliant() -> Value {
    json!({
        "containers": [{"name": "app", "image": "app:1", "securityContext": {
            "allowPrivilegeEscalation": false, "runAsNonRoot": true, "runAsUser": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
            "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}],
        "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "c"}}]
    })
}

#[test]
fn a_locked_down_pod_complies_with_its_settings_on_the_pod_or_the_containers() {
    assert_eq!(restricted(&spec(compliant())), Vec::<String>::new());
    let pod_level = json!({
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}},
        "containers": [{"name": "app", "securityContext": {
            "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]
    });
    assert_eq!(restricted(&spec(pod_level)), Vec::<String>::new());
}

#[test]
fn each_rule_names_what_breaks_it() {
    type Case = (&'static str, fn(&mut Value));
    let cases: [Case; 11] = [
        ("spec.hostNetwork", |p| p["hostNetwork"] = json!(true)),
        ("spec.hostPID", |p| p["hostPID"] = json!(true)),
        (
            "not a safe sysctl",
            |p| {
                p["securityContext"] = json!({"sysctls": [{"name": "kernel.msgmax", "value": "1"}]})
            },
        ),
        ("of type hostPath", |p| {
            p["volumes"] = json!([{"name": "h", "hostPath": {"path": "/"}}])
        }),
        ("is privileged", |p| {
            p["containers"][0]["securityContext"]["privileged"] = json!(true)
        }),
        ("allowPrivilegeEscalation", |p| {
            p["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = json!(true)
        }),
        ("run as non-root", |p| {
            p["containers"][0]["securityContext"]["runAsNonRoot"] = json!(false)
        }),
        ("runAsUser 0", |p| {
            p["containers"][0]["securityContext"]["runAsUser"] = json!(0)
        }),
        ("seccompProfile Unconfined", |p| {
            p["containers"][0]["securityContext"]["seccompProfile"] = json!({"type": "Unconfined"})
        }),
        ("adds capability SYS_ADMIN", |p| {
            p["containers"][0]["securityContext"]["capabilities"]["add"] = json!(["SYS_ADMIN"])
        }),
        ("hostPort", |p| {
            p["containers"][0]["ports"] = json!([{"containerPort": 80, "hostPort": 80}])
        }),
    ];
    for (says, break_it) in cases {
        let mut pod = compliant();
        break_it(&mut pod);
        let broken = restricted(&spec(pod));
        assert!(
            broken.len() == 1 && broken[0].contains(says),
            "{says}: {broken:?}"
        );
    }
    // An init container counts like any other.
    let mut pod = compliant();
    pod["initContainers"] = json!([{"name": "setup"}]);
    let broken = restricted(&spec(pod));
    assert!(
        broken
            .iter()
            .all(|b| b.starts_with("initContainers[setup]"))
            && broken.len() == 4,
        "{broken:?}"
    );
}
