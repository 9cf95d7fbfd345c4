use std::time::Duration;

use clap::Parser;

use super::*;

const PLAN: &str = r#"[{"name":"app","spec":{"selector":{"serviceAccountName":"app"},"openbao":{"role":"app"},"secrets":[]}}]"#;

/// Parses a map of flags; the plan admission always writes is included unless the map names one.
fn parse(flags: &[(&str, &str)]) -> std::result::Result<Args, clap::Error> {
    let plan = format!("--plan={PLAN}");
    let mut fixed = vec!["--openbao-addr=https://openbao.example:8200"];
    if !flags.iter().any(|(f, _)| *f == "plan") {
        fixed.push(&plan);
    }
    Args::try_parse_from(phantom_testkit::argv("phantom-proxy", &fixed, flags))
}

fn settings(flags: &[(&str, &str)]) -> Result<Settings> {
    Settings::try_from(parse(flags).expect("flags parse"))
}

#[test]
fn defaults_keep_the_status_port_off_and_a_fifteen_minute_grace() {
    let s = settings(&[]).expect("defaults");
    assert_eq!(s.status_addr, None);
    assert_eq!(s.grace, Duration::from_secs(900));
    assert_eq!(s.refresh_override, None);
    assert!(s.revoke_on_shutdown && !s.once);
    assert_eq!(s.plan.len(), 1);
    assert!(s.key_release.is_none() && s.wrapped_containers.is_empty());
}

#[test]
fn values_are_carried_over_as_typed_settings() {
    let s = settings(&[
        ("status-addr", "0.0.0.0:9102"),
        ("refresh-seconds", "3"),
        ("grace-seconds", "0"),
        ("wrapped-containers", "app,,worker"),
        ("revoke-on-shutdown", "false"),
        ("openbao-spki-sha256", &"07".repeat(32)),
    ])
    .expect("settings");
    assert_eq!(s.status_addr, Some("0.0.0.0:9102".parse().expect("addr")));
    assert_eq!(s.refresh_override, Some(Duration::from_secs(3)));
    assert_eq!(s.grace, Duration::ZERO);
    assert_eq!(s.wrapped_containers, ["app", "worker"]);
    assert!(!s.revoke_on_shutdown);
    assert_eq!(s.tls.spki_pins, vec![[7u8; 32]]);
}

#[test]
fn out_of_range_or_malformed_flags_are_refused_naming_the_flag() {
    for (flag, value) in [
        ("refresh-seconds", "0"),
        ("grace-seconds", "-1"),
        ("status-addr", "9102"),
        ("status-addr", ""),
        ("revoke-on-shutdown", "maybe"),
    ] {
        let err = parse(&[(flag, value)]).expect_err(flag).to_string();
        assert!(err.contains(&format!("--{flag}")), "{flag}={value}: {err}");
    }
}

#[test]
fn plans_that_are_not_admissions_are_refused_by_name() {
    let err = settings(&[("plan", "{not json")])
        .expect_err("bad plan")
        .to_string();
    assert!(err.contains("PHANTOM_PLAN"), "{err}");
    let err = settings(&[("key-release", "[]")])
        .expect_err("bad key release")
        .to_string();
    assert!(err.contains("PHANTOM_KEY_RELEASE"), "{err}");
    let err = settings(&[("openbao-spki-sha256", "sha256//short")])
        .expect_err("bad pin")
        .to_string();
    assert!(err.contains("not a sha256 digest"), "{err}");
}

#[test]
fn a_plan_whose_deliveries_collide_is_refused_naming_both_bindings() {
    let item = |var: &str| {
        serde_json::json!({"name": "password", "path": "app/db", "key": "password",
                           "delivery": [{"kind": "env", "name": var}]})
    };
    let binding = |name: &str, var: &str| {
        serde_json::json!({"name": name, "spec": {"selector": {"podSelector": {}},
                           "openbao": {"role": "app"}, "secrets": [item(var)]}})
    };
    let plan = serde_json::json!([
        binding("db", "DB_PASSWORD"),
        binding("legacy", "OLD_PASSWORD")
    ])
    .to_string();
    let err = settings(&[("plan", &plan), ("wrapped-containers", "app")])
        .expect_err("two secrets named password")
        .to_string();
    assert!(
        err.contains("PHANTOM_PLAN cannot be delivered")
            && err.contains("SecretBinding db (secret password)")
            && err.contains("SecretBinding legacy (secret password)"),
        "{err}"
    );
}
