use std::time::Duration;

use clap::Parser;

use super::*;

/// Parses a map of flags, always with the required certificate and decision-key paths.
fn parse(flags: &[(&str, &str)]) -> std::result::Result<Args, clap::Error> {
    Args::try_parse_from(phantom_testkit::argv(
        "phantom-admission",
        &[
            "--tls-cert=/tls/tls.crt",
            "--tls-key=/tls/tls.key",
            "--decision-key=/tls/decision.key",
        ],
        flags,
    ))
}

fn settings(flags: &[(&str, &str)]) -> Result<Settings> {
    Settings::try_from(parse(flags).expect("flags parse"))
}

#[test]
fn defaults_describe_a_webhook_on_8443_with_health_on_8080() {
    let s = settings(&[]).expect("defaults");
    assert_eq!(s.server.listen.port(), 8443);
    assert_eq!(s.server.health_listen.port(), 8080);
    assert_eq!(s.server.max_body_bytes, 8 * 1024 * 1024);
    assert_eq!(s.server.shutdown_grace, Duration::from_secs(10));
    assert_eq!(s.cert_reload_interval, Duration::from_secs(5));
    assert_eq!(s.seal_key_path, std::path::Path::new("/tls/decision.key"));
    assert_eq!(s.concurrency, 8);
    assert_eq!(s.evaluation_timeout, Duration::from_secs(2));
    assert_eq!(
        s.published_set,
        Some(("phantom-system".into(), "phantom-policy-set".into()))
    );
    assert_eq!(s.inject.proxy_status_port, 9102);
    assert!(s.inject.openbao_ca_pem.is_none());
}

#[test]
fn values_are_carried_over_as_typed_settings() {
    let s = settings(&[
        ("listen", "127.0.0.1:9443"),
        ("tls-reload-seconds", "30"),
        ("concurrency", "2"),
        ("evaluation-timeout-ms", "250"),
        ("openbao-spki-sha256", "sha256//a,,sha256//b"),
        ("enable-label", "team=phantom"),
        ("published-policy-set", ""),
    ])
    .expect("settings");
    assert_eq!(s.server.listen, "127.0.0.1:9443".parse().expect("addr"));
    assert_eq!(s.cert_reload_interval, Duration::from_secs(30));
    assert_eq!(s.concurrency, 2);
    assert_eq!(s.evaluation_timeout, Duration::from_millis(250));
    assert_eq!(s.inject.openbao_spki_pins, ["sha256//a", "sha256//b"]);
    assert_eq!(
        s.selection.enable_label,
        ("team".to_owned(), "phantom".to_owned())
    );
    assert_eq!(s.published_set, None);
}

#[test]
fn out_of_range_values_are_refused_naming_the_flag_not_clamped() {
    for (flag, value) in [
        ("tls-reload-seconds", "0"),
        ("concurrency", "0"),
        ("evaluation-timeout-ms", "0"),
        ("max-body-bytes", "12"),
        ("shutdown-grace-seconds", "301"),
        ("listen", "not-an-address"),
        ("enable-label", "no-equals-sign"),
    ] {
        let err = parse(&[(flag, value)]).expect_err(flag).to_string();
        assert!(err.contains(&format!("--{flag}")), "{flag}: {err}");
    }
}

#[test]
fn a_malformed_published_set_is_an_error_naming_the_variable() {
    for value in ["just-a-name", "/name", "namespace/"] {
        let err = settings(&[("published-policy-set", value)])
            .expect_err(value)
            .to_string();
        assert!(err.contains("PHANTOM_PUBLISHED_POLICY_SET"), "{err}");
    }
}

#[test]
fn the_openbao_ca_file_must_hold_a_certificate() {
    let dir = std::env::temp_dir().join(format!("phantom-admission-args-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let not_pem = dir.join("ca.txt");
    std::fs::write(&not_pem, "hello").expect("write");
    let err = settings(&[("openbao-ca-file", not_pem.to_str().expect("utf-8"))])
        .expect_err("not PEM")
        .to_string();
    assert!(err.contains("holds no PEM certificate"), "{err}");
    let missing = dir.join("missing.crt");
    let err = settings(&[("openbao-ca-file", missing.to_str().expect("utf-8"))])
        .expect_err("missing")
        .to_string();
    assert!(err.contains("missing.crt"), "{err}");
    let pem = dir.join("ca.crt");
    std::fs::write(
        &pem,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let s = settings(&[("openbao-ca-file", pem.to_str().expect("utf-8"))]).expect("PEM");
    assert!(s.inject.openbao_ca_pem.is_some_and(|p| p.contains("MIIB")));
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn the_inflight_budget_must_hold_one_largest_request() {
    let s = settings(&[]).expect("defaults");
    assert_eq!(s.server.max_connections, 512);
    assert_eq!(s.server.max_inflight_bytes, 128 * 1024 * 1024);
    let err = settings(&[
        ("max-body-bytes", &(16 * 1024 * 1024).to_string()),
        ("max-inflight-bytes", &(64 * 1024 * 1024).to_string()),
    ])
    .expect_err("one dense 16 MiB request is charged more than 64 MiB")
    .to_string();
    assert!(
        err.contains("--max-inflight-bytes") && err.contains("--max-body-bytes"),
        "{err}"
    );
    assert!(parse(&[("max-connections", "0")]).is_err());
}

#[test]
fn the_agent_socket_dir_must_be_an_absolute_host_path() {
    let s = settings(&[]).expect("defaults");
    assert_eq!(s.inject.agent.socket_dir, "/var/run/phantom-agent");
    assert_eq!(s.inject.agent.audience, "phantom-agent");
    let s = settings(&[
        ("agent-socket-dir", "/run/phantom"),
        ("agent-audience", "node-agent"),
    ])
    .expect("settings");
    assert_eq!(s.inject.agent.socket_dir, "/run/phantom");
    assert_eq!(s.inject.agent.audience, "node-agent");
    for bad in ["run/phantom", "/run/../etc", ""] {
        let err = settings(&[("agent-socket-dir", bad)])
            .expect_err(bad)
            .to_string();
        assert!(err.contains("PHANTOM_AGENT_SOCKET_DIR"), "{bad}: {err}");
    }
}
