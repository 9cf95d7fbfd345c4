use std::time::Duration;

use clap::Parser;

use super::*;
use crate::config::AdmissionEndpoint;

/// Parses a map of flags (linkerd2-proxy tests its environment config the same way).
fn parse(flags: &[(&str, &str)]) -> std::result::Result<Args, clap::Error> {
    Args::try_parse_from(phantom_testkit::argv("phantom-controller", &[], flags))
}

fn settings(flags: &[(&str, &str)]) -> Result<Settings> {
    Settings::try_from(parse(flags).expect("flags parse"))
}

#[test]
fn defaults_point_the_webhooks_at_the_admission_service() {
    let s = settings(&[("identity", "phantom-controller-0")]).expect("defaults");
    assert_eq!(s.namespace, "phantom-system");
    assert!(matches!(
        &s.webhooks.admission,
        AdmissionEndpoint::Service { name, port: 443, .. } if name == "phantom-admission"
    ));
    assert_eq!(s.webhooks.timeout_seconds, 10);
    assert_eq!(s.breaker.probe_interval, Duration::from_secs(2));
    assert_eq!(s.certs.ca_validity, Duration::from_secs(1825 * DAY));
    assert_eq!(s.certs.serving_validity, Duration::from_secs(90 * DAY));
    assert_eq!(s.leader.lease_duration, Duration::from_secs(15));
    assert_eq!(s.leader.retry_period, Duration::from_secs(3));
    assert_eq!(s.gaps.scan_interval, Duration::from_secs(60));
    assert!(s.breaker.enabled && !s.gaps.evict);
}

#[test]
fn values_are_carried_over_as_typed_settings() {
    let s = settings(&[
        ("admission-url", "https://127.0.0.1:9443"),
        ("excluded-namespaces", "batch,,ci"),
        ("breaker-probe-ms", "300"),
        ("lease-seconds", "4"),
        ("serving-cert-days", "1"),
        ("ca-days", "2"),
    ])
    .expect("settings");
    assert!(
        matches!(&s.webhooks.admission, AdmissionEndpoint::Url(u) if u == "https://127.0.0.1:9443")
    );
    assert!(s.webhooks.excluded_namespaces.iter().any(|n| n == "batch"));
    assert!(s.webhooks.excluded_namespaces.iter().any(|n| n == "ci"));
    assert!(!s.webhooks.excluded_namespaces.iter().any(String::is_empty));
    assert_eq!(s.breaker.probe_interval, Duration::from_millis(300));
    assert_eq!(s.leader.lease_duration, Duration::from_secs(4));
    assert_eq!(s.certs.serving_validity, Duration::from_secs(DAY));
}

#[test]
fn out_of_range_values_are_refused_naming_the_flag_not_clamped() {
    for (flag, value) in [
        ("webhook-timeout-seconds", "0"),
        ("webhook-timeout-seconds", "31"),
        ("breaker-failures", "0"),
        ("breaker-successes", "0"),
        ("breaker-probe-ms", "99"),
        ("ca-days", "0"),
        ("serving-cert-days", "0"),
        ("gap-scan-seconds", "0"),
        ("lease-seconds", "2"),
        ("metrics-listen", "8080"),
        ("critical-label", "critical"),
    ] {
        let err = parse(&[(flag, value)]).expect_err(flag).to_string();
        assert!(err.contains(&format!("--{flag}")), "{flag}={value}: {err}");
    }
}

#[test]
fn a_serving_certificate_may_not_outlive_its_ca() {
    let err = settings(&[("ca-days", "30"), ("serving-cert-days", "30")])
        .expect_err("same lifetime")
        .to_string();
    assert!(
        err.contains("--serving-cert-days") && err.contains("--ca-days"),
        "{err}"
    );
}

#[test]
fn a_service_and_a_url_for_admission_exclude_each_other() {
    let err = parse(&[
        ("admission-service", "phantom-admission"),
        ("admission-url", "https://127.0.0.1:9443"),
    ])
    .expect_err("conflict")
    .to_string();
    assert!(err.contains("--admission-url"), "{err}");
}
