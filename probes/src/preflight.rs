//! The pre-flight check: each step a [`Check`] with what was seen and, when it failed, what to
//! fix. Steps that depend on a failed one are skipped (saying which), so the first failure is
//! the one to act on.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use phantom_openbao::SecretValue;
use phantom_openbao::tls::TlsSettings;
use phantom_openbao::{OpenBaoClient, Session};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{Error, Result};

mod steps;

pub use steps::{Failure, StepResult};

/// What to check.
#[derive(Debug, Clone)]
pub struct Target {
    /// `https://host:port` (plain `http://` only for development).
    pub addr: String,
    pub tls: TlsSettings,
    /// OpenBao namespace of the auth mount (Enterprise-style tenancy), if any.
    pub namespace: Option<String>,
    pub auth_mount: String,
    pub role: String,
    /// This pod's projected ServiceAccount token (audience `openbao`).
    pub token_path: PathBuf,
    /// A short-lived operator token to read the role with (the chart's bootstrap token).
    pub bootstrap_token: Option<SecretValue>,
    /// Revoke the bootstrap token once used, so a copy (Helm's release record, the Job's spec)
    /// is worthless.
    pub revoke_bootstrap: bool,
    pub timeout: Duration,
}

/// Outcome of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

/// One step's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    /// What was seen (never a token or secret).
    pub detail: String,
    /// What to do, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    pub millis: u64,
}

/// Every step's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub addr: String,
    pub checks: Vec<Check>,
    /// OpenBao's version, when the health check got that far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub openbao_version: Option<String>,
}

impl Report {
    /// Whether no step failed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail)
    }

    /// The first failure, as one line: what failed and what to fix.
    pub fn first_failure(&self) -> Option<String> {
        self.checks
            .iter()
            .find(|c| c.status == Status::Fail)
            .map(|c| match &c.fix {
                Some(fix) => format!("{} failed: {}; {fix}", c.name, c.detail),
                None => format!("{} failed: {}", c.name, c.detail),
            })
    }

    /// A table for the Job's log.
    pub fn render(&self) -> String {
        let mut out = format!("phantom-preflight: OpenBao at {}\n", self.addr);
        for c in &self.checks {
            let mark = match c.status {
                Status::Pass => "ok  ",
                Status::Fail => "FAIL",
                Status::Skip => "skip",
            };
            out.push_str(&format!(
                "  {mark} {:<10} {} ({} ms)\n",
                c.name, c.detail, c.millis
            ));
            if let Some(fix) = &c.fix {
                out.push_str(&format!("       fix: {fix}\n"));
            }
        }
        out
    }
}

/// `(host, port, https)` of an OpenBao address.
pub fn endpoint(addr: &str) -> Result<(String, u16, bool)> {
    let bad = |why: &str| Error::Address {
        addr: addr.to_owned(),
        why: why.to_owned(),
    };
    let (https, rest) = if let Some(rest) = addr.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = addr.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(bad("no https:// or http:// scheme"));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(bad("no host"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => match p.parse() {
            Ok(port) => (h, port),
            Err(_) if authority.starts_with('[') && authority.ends_with(']') => {
                (authority, if https { 443 } else { 80 })
            }
            Err(_) => return Err(bad("the port is not a number")),
        },
        _ => (authority, if https { 443 } else { 80 }),
    };
    Ok((host.trim_matches(['[', ']']).to_owned(), port, https))
}

struct Steps {
    checks: Vec<Check>,
    failed: Option<&'static str>,
}

impl Steps {
    fn record(&mut self, name: &'static str, started: Instant, outcome: StepResult) -> bool {
        let millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (status, detail, fix) = match outcome {
            Ok(detail) => (Status::Pass, detail, None),
            Err(Failure { detail, fix }) => {
                self.failed.get_or_insert(name);
                (Status::Fail, detail, Some(fix))
            }
        };
        self.checks.push(Check {
            name,
            status,
            detail,
            fix,
            millis,
        });
        status == Status::Pass
    }

    fn skip(&mut self, name: &'static str, why: String) {
        self.checks.push(Check {
            name,
            status: Status::Skip,
            detail: why,
            fix: None,
            millis: 0,
        });
    }

    /// Skips `name` when an earlier step failed; true when it should run.
    fn runs(&mut self, name: &'static str) -> bool {
        match self.failed {
            Some(earlier) => {
                self.skip(name, format!("skipped: {earlier} failed"));
                false
            }
            None => true,
        }
    }
}

/// Runs every step against `target`, in order; a step whose premise failed is skipped, naming
/// the failed step.
pub async fn run(target: &Target) -> Report {
    let mut steps = Steps {
        checks: Vec::new(),
        failed: None,
    };
    let mut version = None;
    let (host, port, https) = match endpoint(&target.addr) {
        Ok(e) => e,
        Err(e) => {
            steps.record(
                "address",
                Instant::now(),
                Err(Failure {
                    detail: e.to_string(),
                    fix: "set --openbao-addr (PHANTOM_OPENBAO_ADDR) to https://host:port".into(),
                }),
            );
            return Report {
                addr: target.addr.clone(),
                checks: steps.checks,
                openbao_version: None,
            };
        }
    };

    let started = Instant::now();
    let (resolved, addrs) = steps::dns(&host, port, target.timeout).await;
    steps.record("dns", started, resolved);

    if steps.runs("tcp") {
        let started = Instant::now();
        let outcome = steps::tcp(&addrs, port, target.timeout).await;
        steps.record("tcp", started, outcome);
    }

    if !https {
        steps.skip(
            "tls",
            "plain http:// — no TLS (development only; never in production)".into(),
        );
    } else if steps.runs("tls") {
        let started = Instant::now();
        let outcome = steps::tls(target, &host, port).await;
        steps.record("tls", started, outcome);
    }

    let client = OpenBaoClient::with_tls(target.addr.clone(), &target.tls);

    if steps.runs("health") {
        let started = Instant::now();
        let outcome = match &client {
            Err(e) => Err(Failure {
                detail: e.to_string(),
                fix: "fix the TLS settings".into(),
            }),
            Ok(client) => {
                let (outcome, seen) = steps::health(client, target).await;
                version = seen;
                outcome
            }
        };
        steps.record("health", started, outcome);
    }

    // Reading the role needs an operator token; without one the login proves the role.
    let bootstrap = target.bootstrap_token.as_ref().map(|token| Session {
        token: token.clone(),
        lease_duration: Duration::ZERO,
        renewable: false,
        granted_at: Instant::now(),
        namespace: target.namespace.clone(),
    });
    match (&bootstrap, &client) {
        (None, _) => steps.skip(
            "role",
            "no bootstrap token given: the login below proves the role".into(),
        ),
        (Some(session), Ok(client)) if steps.runs("role") => {
            let started = Instant::now();
            let outcome = steps::role(client, session, target).await;
            steps.record("role", started, outcome);
        }
        _ => {}
    }

    if let Ok(client) = &client
        && steps.runs("login")
    {
        let started = Instant::now();
        let outcome = steps::login(client, target).await;
        steps.record("login", started, outcome);
    }

    // The bootstrap token is single-use: revoke it whatever happened.
    if let (Some(session), Ok(client), true) = (&bootstrap, &client, target.revoke_bootstrap) {
        let started = Instant::now();
        let outcome = steps::revoke(client, session).await;
        steps.record("revoke", started, outcome);
    }

    Report {
        addr: target.addr.clone(),
        checks: steps.checks,
        openbao_version: version,
    }
}

/// The ConfigMap holding a report (`results.json` and the rendered `summary`).
pub fn config_map(namespace: &str, name: &str, report: &Report) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/part-of": "phantom", "app.kubernetes.io/component": "preflight"},
                     "annotations": {"phantom.dev/preflight": if report.passed() { "passed" } else { "failed" }}},
        "data": {
            "results.json": serde_json::to_string_pretty(report).unwrap_or_default(),
            "summary": report.render(),
        },
    })
}

/// Writes the report into the ConfigMap `namespace/name` (server-side apply).
pub async fn publish(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    report: &Report,
) -> Result<()> {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Patch, PatchParams};
    kube::Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .patch(
            name,
            &PatchParams::apply("phantom-preflight").force(),
            &Patch::Apply(&config_map(namespace, name, report)),
        )
        .await
        .map_err(|source| Error::Publish {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source,
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_into_host_port_and_scheme() {
        assert_eq!(
            endpoint("https://bao.eu.example:8200").unwrap(),
            ("bao.eu.example".into(), 8200, true)
        );
        assert_eq!(
            endpoint("https://bao.eu.example").unwrap(),
            ("bao.eu.example".into(), 443, true)
        );
        assert_eq!(
            endpoint("http://127.0.0.1:8200/").unwrap(),
            ("127.0.0.1".into(), 8200, false)
        );
        assert_eq!(
            endpoint("https://[::1]:8200").unwrap(),
            ("::1".into(), 8200, true)
        );
        assert!(endpoint("bao:8200").is_err());
        assert!(endpoint("https://bao:port").is_err());
        assert!(endpoint("https://").is_err());
    }

    #[test]
    fn the_report_names_the_first_failure_and_its_fix() {
        let report = Report {
            addr: "https://bao:8200".into(),
            checks: vec![
                Check {
                    name: "dns",
                    status: Status::Pass,
                    detail: "bao → 10.0.0.1".into(),
                    fix: None,
                    millis: 1,
                },
                Check {
                    name: "tcp",
                    status: Status::Fail,
                    detail: "cannot connect".into(),
                    fix: Some("open egress".into()),
                    millis: 2,
                },
                Check {
                    name: "tls",
                    status: Status::Skip,
                    detail: "skipped: tcp failed".into(),
                    fix: None,
                    millis: 0,
                },
            ],
            openbao_version: None,
        };
        assert!(!report.passed());
        assert_eq!(
            report.first_failure().unwrap(),
            "tcp failed: cannot connect; open egress"
        );
        let text = report.render();
        assert!(text.contains("FAIL tcp"), "{text}");
        assert!(text.contains("fix: open egress"), "{text}");
        let cm = config_map("phantom-system", "phantom-preflight", &report);
        assert_eq!(
            cm["metadata"]["annotations"]["phantom.dev/preflight"],
            "failed"
        );
        assert!(
            cm["data"]["results.json"]
                .as_str()
                .unwrap()
                .contains("\"status\": \"fail\"")
        );
    }
}
