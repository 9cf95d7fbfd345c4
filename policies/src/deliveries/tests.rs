use serde_json::{Value, json};

use super::*;

fn binding(name: &str, secrets: Value) -> BindingPlan {
    serde_json::from_value(json!({
        "name": name,
        "spec": {"selector": {"podSelector": {}}, "openbao": {"role": "app"}, "secrets": secrets}
    }))
    .expect("a binding plan")
}

fn env(secret: &str, var: &str, containers: Option<&[&str]>) -> Value {
    let mut delivery = json!({"kind": "env", "name": var});
    if let Some(containers) = containers {
        delivery["containers"] = json!(containers);
    }
    json!({"name": secret, "path": "app/db", "key": "password", "delivery": [delivery]})
}

fn file(secret: &str, path: Option<&str>) -> Value {
    let mut delivery = json!({"kind": "file"});
    if let Some(path) = path {
        delivery["path"] = json!(path);
    }
    json!({"name": secret, "path": "app/db", "delivery": [delivery]})
}

fn wrapped(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

#[test]
fn distinct_deliveries_pass() {
    let plan = [
        binding(
            "db",
            json!([env("password", "DB_PASSWORD", None), file("tls", None)]),
        ),
        binding(
            "cache",
            json!([
                env("token", "CACHE_TOKEN", Some(&["worker"])),
                file("cert", Some("cache/cert"))
            ]),
        ),
    ];
    assert_eq!(
        check_deliveries(&plan, &wrapped(&["app", "worker"])),
        Ok(())
    );
}

#[test]
fn one_secret_name_in_two_bindings_names_both() {
    let plan = [
        binding("db", json!([env("password", "DB_PASSWORD", None)])),
        binding("legacy", json!([env("password", "LEGACY_PASSWORD", None)])),
    ];
    let conflict = check_deliveries(&plan, &wrapped(&["app"])).expect_err("conflict");
    let message = conflict.to_string();
    assert!(
        message.contains("SecretBinding db (secret password)")
            && message.contains("SecretBinding legacy (secret password)")
            && message.contains("spec.secrets[].name"),
        "{message}"
    );
}

#[test]
fn one_variable_of_one_container_set_twice_is_a_conflict_unless_containers_differ() {
    let clash = [
        binding("db", json!([env("password", "PASSWORD", None)])),
        binding("cache", json!([env("token", "PASSWORD", Some(&["app"]))])),
    ];
    assert!(matches!(
        check_deliveries(&clash, &wrapped(&["app", "worker"])).map_err(|c| *c),
        Err(DeliveryConflict::EnvVar { ref container, ref var, .. }) if container == "app" && var == "PASSWORD"
    ));
    let apart = [
        binding("db", json!([env("password", "PASSWORD", Some(&["app"]))])),
        binding(
            "cache",
            json!([env("token", "PASSWORD", Some(&["worker"]))]),
        ),
    ];
    assert_eq!(
        check_deliveries(&apart, &wrapped(&["app", "worker"])),
        Ok(())
    );
}

#[test]
fn one_file_written_twice_is_a_conflict_including_the_default_path() {
    let plan = [
        binding("db", json!([file("password", None)])),
        binding("cache", json!([file("token", Some("password"))])),
    ];
    assert!(matches!(
        check_deliveries(&plan, &wrapped(&["app"])).map_err(|c| *c),
        Err(DeliveryConflict::File { ref path, .. }) if path == "password"
    ));
}

#[test]
fn an_env_delivery_to_a_container_that_is_not_wrapped_is_refused_naming_it() {
    let plan = [binding(
        "db",
        json!([env("password", "PW", Some(&["sidecar-of-mine"]))]),
    )];
    let message = check_deliveries(&plan, &wrapped(&["app"]))
        .expect_err("not wrapped")
        .to_string();
    assert!(
        message.contains("SecretBinding db (secret password)")
            && message.contains("container sidecar-of-mine")
            && message.contains("wrapped: app"),
        "{message}"
    );
}

fn selected(name: &str, selector: Value, secrets: Value) -> BindingPlan {
    serde_json::from_value(json!({
        "name": name,
        "spec": {"selector": selector, "openbao": {"role": "app"}, "secrets": secrets}
    }))
    .expect("a binding plan")
}

#[test]
fn bindings_of_one_namespace_may_collide_unless_they_select_no_pod_in_common() {
    let db = binding("db", json!([env("password", "DB_PASSWORD", None)]));
    let legacy = binding("legacy", json!([env("password", "LEGACY", None)]));
    assert!(matches!(
        may_collide(&db, &legacy),
        Some(DeliveryConflict::SecretName { .. })
    ));
    // One variable for every wrapped container and for one named container: they meet there.
    let named = binding(
        "cache",
        json!([env("token", "DB_PASSWORD", Some(&["worker"]))]),
    );
    assert!(matches!(
        may_collide(&db, &named),
        Some(DeliveryConflict::EnvVar { ref container, .. }) if container == "worker"
    ));
    let apart = |sa: &str| {
        selected(
            sa,
            json!({"serviceAccountName": sa}),
            json!([env("password", "DB_PASSWORD", None)]),
        )
    };
    assert_eq!(may_collide(&apart("web"), &apart("jobs")), None);
    let labelled = |tier: &str| {
        selected(
            tier,
            json!({"podSelector": {"matchLabels": {"tier": tier}}}),
            json!([env("password", "DB_PASSWORD", None)]),
        )
    };
    assert_eq!(may_collide(&labelled("front"), &labelled("back")), None);
    assert!(may_collide(&labelled("front"), &db).is_some());
}
