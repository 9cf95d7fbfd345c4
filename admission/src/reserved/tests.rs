use serde_json::{Value, json};

use super::*;

fn pod(spec: Value, annotations: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "annotations": annotations},
        "spec": spec
    }))
    .expect("pod")
}

fn app(extra: Value) -> Value {
    let mut c = json!({"name": "app", "image": "shop/web:1", "command": ["/web"]});
    for (k, v) in extra.as_object().expect("object") {
        c[k] = v.clone();
    }
    c
}

#[test]
fn a_plain_pod_carries_nothing_reserved() {
    let plain = pod(
        json!({"containers": [app(json!({"env": [{"name": "PHANTOM_LOG", "value": "debug"}]}))],
               "volumes": [{"name": "data", "emptyDir": {}}]}),
        json!({"phantom.dev/command.app": "[\"/web\"]", "team": "shop"}),
    );
    assert_eq!(find(&plain), None);
}

#[test]
fn every_annotation_admission_writes_is_refused() {
    for key in ANNOTATIONS {
        let forged = pod(
            json!({"containers": [app(json!({}))]}),
            json!({key: "true"}),
        );
        let found = find(&forged).expect("reserved");
        assert_eq!(found, Reserved::Annotation(key.to_owned()));
        assert!(found.to_string().contains(key), "{found}");
    }
}

#[test]
fn phantoms_containers_are_refused_wherever_they_appear() {
    for (field, name) in [
        ("containers", PROXY_CONTAINER),
        ("containers", INIT_CONTAINER),
        ("initContainers", PROXY_CONTAINER),
    ] {
        let mut spec = json!({"containers": [app(json!({}))]});
        let list = spec
            .as_object_mut()
            .unwrap()
            .entry(field)
            .or_insert(json!([]));
        list.as_array_mut()
            .unwrap()
            .push(json!({"name": name, "image": "x"}));
        assert_eq!(
            find(&pod(spec, json!({}))),
            Some(Reserved::Container(name.into())),
            "{field}"
        );
    }
}

#[test]
fn a_reserved_volume_or_a_mount_of_one_is_refused_naming_the_container() {
    for volume in VOLUMES {
        let declared = pod(
            json!({"containers": [app(json!({}))], "volumes": [{"name": volume, "emptyDir": {}}]}),
            json!({}),
        );
        assert_eq!(find(&declared), Some(Reserved::Volume(volume.into())));
    }
    let mounting = pod(
        json!({"containers": [app(json!({})), {"name": "metrics", "image": "x", "command": ["/m"],
               "volumeMounts": [{"name": SECRETS_VOLUME, "mountPath": "/steal"}]}]}),
        json!({}),
    );
    let found = find(&mounting).expect("a mount of the secrets volume");
    assert_eq!(
        found,
        Reserved::Mount {
            container: "metrics".into(),
            volume: SECRETS_VOLUME.into()
        }
    );
    assert!(found.to_string().contains("container metrics"), "{found}");
    let ephemeral = pod(
        json!({"containers": [app(json!({}))], "ephemeralContainers": [{"name": "debug", "image": "x",
               "volumeMounts": [{"name": TOKEN_VOLUME, "mountPath": "/t"}]}]}),
        json!({}),
    );
    assert!(
        matches!(find(&ephemeral), Some(Reserved::Mount { container, .. }) if container == "debug")
    );
}

#[test]
fn phantoms_environment_and_a_pre_wrapped_command_are_refused() {
    for var in ENV {
        let set = pod(
            json!({"containers": [app(json!({"env": [{"name": var, "value": "/tmp/evil.sock"}]}))]}),
            json!({}),
        );
        assert_eq!(
            find(&set),
            Some(Reserved::Env {
                container: "app".into(),
                var: var.into()
            })
        );
    }
    let wrapped = pod(
        json!({"containers": [app(json!({"command": [EXEC_PATH, "--container", "other", "--", "/web"]}))]}),
        json!({}),
    );
    assert_eq!(
        find(&wrapped),
        Some(Reserved::Wrapper {
            container: "app".into()
        })
    );
}
