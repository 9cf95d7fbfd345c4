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

const PIN: &str = "0000000000000000000000000000000000000000000000000000000000000001";

#[test]
fn the_broker_is_off_unless_its_address_is_given() {
    assert_eq!(settings(&[]).expect("defaults").broker, None);
}

#[test]
fn broker_settings_bind_the_pod_uid_and_the_first_openbao_pin() {
    let s = settings(&[
        ("broker-addr", "https://phantom-broker:8443"),
        ("broker-spki-sha256", PIN),
        (
            "openbao-spki-sha256",
            &format!("{},{}", "22".repeat(32), PIN),
        ),
        ("pod-uid", "uid-1"),
    ])
    .expect("broker settings");
    let broker = s.broker.expect("a broker");
    assert_eq!(broker.addr, "https://phantom-broker:8443");
    assert_eq!(broker.pod_uid, "uid-1");
    assert_eq!(broker.openbao_spki_sha256, [0x22; 32]);
    assert_eq!(broker.tls.spki_pins.len(), 1);
    assert_eq!(
        broker.token_path,
        std::path::PathBuf::from("/var/run/secrets/phantom.dev/broker/token")
    );
    assert_eq!(
        broker.evidence,
        crate::attested::EvidenceChoice {
            mode: crate::attested::EvidenceMode::Auto,
            tsm_root: "/sys/kernel/config/tsm".into(),
            agent_url: "http://127.0.0.1:8006".into(),
        }
    );
}

#[test]
fn the_evidence_source_is_configfs_tsm_where_present_else_the_agent_unless_forced() {
    use crate::attested::{EvidenceMode, EvidenceSource};
    let chosen = |mode: &str, present: bool| {
        settings(&[
            ("broker-addr", "https://phantom-broker:8443"),
            ("broker-spki-sha256", PIN),
            ("openbao-spki-sha256", PIN),
            ("pod-uid", "uid-1"),
            ("evidence-source", mode),
            ("attestation-agent-url", "http://127.0.0.1:9006"),
        ])
        .expect("broker settings")
        .broker
        .expect("a broker")
        .evidence
        .resolve(present)
    };
    let tsm = EvidenceSource::ConfigfsTsm("/sys/kernel/config/tsm".into());
    let agent = EvidenceSource::AttestationAgent("http://127.0.0.1:9006".into());
    assert_eq!(chosen("auto", true), tsm);
    assert_eq!(chosen("auto", false), agent);
    assert_eq!(chosen("configfs-tsm", false), tsm);
    assert_eq!(chosen("attestation-agent", true), agent);
    assert_eq!(EvidenceMode::default(), EvidenceMode::Auto);
    let err = parse(&[("evidence-source", "tpm")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("tpm"), "{err}");
}

#[test]
fn a_broker_without_its_pin_the_pod_uid_or_an_openbao_pin_is_refused_by_name() {
    let base = [
        ("broker-addr", "https://phantom-broker:8443"),
        ("broker-spki-sha256", PIN),
        ("openbao-spki-sha256", PIN),
        ("pod-uid", "uid-1"),
    ];
    for (dropped, says) in [
        ("broker-spki-sha256", "--broker-spki-sha256"),
        ("pod-uid", "--pod-uid"),
        ("openbao-spki-sha256", "--openbao-spki-sha256"),
    ] {
        let flags: Vec<_> = base
            .iter()
            .copied()
            .filter(|(f, _)| *f != dropped)
            .collect();
        let err = settings(&flags).expect_err(dropped).to_string();
        assert!(err.contains(says), "{dropped}: {err}");
    }
}
