use serde_json::json;

use super::*;

fn injected() -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "annotations": {
            "phantom.dev/injected": "true", "phantom.dev/decision": "{\"outcome\":\"injected\"}",
            "phantom.dev/bindings": "db"}},
        "spec": {
            "initContainers": [{"name": "phantom-init", "image": "phantom/exec:1"}],
            "containers": [
                {"name": "app", "image": "shop/web:1", "command": ["/phantom/bin/phantom-exec", "--container", "app", "--", "/web"],
                 "volumeMounts": [{"name": "phantom-secrets", "mountPath": "/phantom/secrets"}]},
                {"name": "metrics", "image": "exporter:1"},
                {"name": "phantom-proxy", "image": "phantom/proxy:1",
                 "volumeMounts": [{"name": "phantom-secrets", "mountPath": "/phantom/secrets"}]}
            ]}
    }))
    .expect("pod")
}

fn edited(edit: impl FnOnce(&mut Value)) -> Pod {
    let mut value = serde_json::to_value(injected()).expect("json");
    edit(&mut value);
    serde_json::from_value(value).expect("pod")
}

#[test]
fn metadata_and_unrelated_fields_are_unguarded() {
    let relabelled = edited(|p| {
        p["metadata"]["labels"] = json!({"version": "2"});
        p["metadata"]["annotations"]["team"] = json!("shop");
        p["metadata"]["finalizers"] = json!(["example.com/keep"]);
        p["spec"]["activeDeadlineSeconds"] = json!(60);
    });
    assert_eq!(classify(&injected(), &relabelled), Change::Unguarded);
}

#[test]
fn phantoms_annotations_may_not_be_edited_or_removed_or_added() {
    let removed = edited(|p| {
        p["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove("phantom.dev/decision");
    });
    assert_eq!(
        classify(&injected(), &removed),
        Change::Annotation("phantom.dev/decision".into())
    );
    let forged =
        edited(|p| p["metadata"]["annotations"]["phantom.dev/bindings"] = json!("db,admin"));
    assert_eq!(
        classify(&injected(), &forged),
        Change::Annotation("phantom.dev/bindings".into())
    );
    let plain: Pod =
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": []}}))
            .unwrap();
    let mut claims = plain.clone();
    claims.metadata.annotations =
        Some([("phantom.dev/injected".to_owned(), "true".to_owned())].into());
    assert_eq!(
        classify(&plain, &claims),
        Change::Annotation("phantom.dev/injected".into())
    );
}

#[test]
fn image_swaps_are_named_and_the_sidecars_own_is_told_apart() {
    let app = edited(|p| p["spec"]["containers"][0]["image"] = json!("evil/web:1"));
    assert_eq!(
        classify(&injected(), &app),
        Change::Images(vec!["app".into()])
    );
    let sidecar = edited(|p| p["spec"]["containers"][2]["image"] = json!("evil/proxy:1"));
    assert_eq!(
        classify(&injected(), &sidecar),
        Change::PhantomImage {
            container: "phantom-proxy".into()
        }
    );
    let init = edited(|p| p["spec"]["initContainers"][0]["image"] = json!("evil/exec:1"));
    assert_eq!(
        classify(&injected(), &init),
        Change::PhantomImage {
            container: "phantom-init".into()
        }
    );
}

fn facts() -> PodFacts {
    PodFacts::of(&injected(), true)
}

#[test]
fn the_holders_are_the_wrapped_containers_and_the_sidecar() {
    assert_eq!(facts().holders, ["app", "phantom-proxy"]);
    assert!(!facts().shares_processes);
}

#[test]
fn a_debug_container_may_not_mount_phantoms_volumes_or_target_a_holder() {
    let debug = |extra: Value| {
        let mut c = json!({"name": "debug", "image": "busybox"});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        vec![c]
    };
    assert_eq!(ephemeral_refusal(&facts(), &[], &debug(json!({}))), None);
    assert_eq!(
        ephemeral_refusal(
            &facts(),
            &[],
            &debug(json!({"targetContainerName": "metrics"}))
        ),
        None
    );
    let mount = ephemeral_refusal(
        &facts(),
        &[],
        &debug(json!({"volumeMounts": [{"name": "phantom-secrets", "mountPath": "/s"}]})),
    )
    .expect("refused");
    assert!(
        mount.contains("ephemeral container debug") && mount.contains("phantom-secrets"),
        "{mount}"
    );
    for target in ["app", "phantom-proxy"] {
        let refused = ephemeral_refusal(
            &facts(),
            &[],
            &debug(json!({"targetContainerName": target})),
        )
        .expect("refused");
        assert!(
            refused.contains(&format!("targets container {target}")),
            "{refused}"
        );
        assert!(refused.contains("kubectl debug --copy-to"), "{refused}");
    }
    let shared = PodFacts {
        shares_processes: true,
        ..facts()
    };
    assert!(ephemeral_refusal(&shared, &[], &debug(json!({}))).is_some());
    // One already there was judged when it was added.
    let old = debug(json!({"targetContainerName": "app"}));
    assert_eq!(ephemeral_refusal(&facts(), &old, &old), None);
    // A pod Phantom did not inject holds nothing of Phantom's.
    let plain = PodFacts::default();
    assert_eq!(
        ephemeral_refusal(&plain, &[], &debug(json!({"targetContainerName": "app"}))),
        None
    );
}

#[test]
fn both_forms_of_the_subresource_body_are_read() {
    let pod = json!({"kind": "Pod", "spec": {"ephemeralContainers": [{"name": "a"}]}});
    let alpha = json!({"kind": "EphemeralContainers", "ephemeralContainers": [{"name": "b"}]});
    assert_eq!(ephemeral_containers(&pod), [json!({"name": "a"})]);
    assert_eq!(ephemeral_containers(&alpha), [json!({"name": "b"})]);
    assert!(ephemeral_containers(&json!({})).is_empty());
}
