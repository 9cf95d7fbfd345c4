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
    fn record(
        &mut self,
        name: &'static str,
        started: Instant,
        outcome: Result<String, (String, String)>,
    ) -> bool {
        let millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (status, detail, fix) = match outcome {
            Ok(detail) => (Status::Pass, detail, None),
            Err((detail, fix)) => {
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

/// Runs every step against `target`.
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
                Err((
                    e.to_string(),
                    "set --openbao-addr (PHANTOM_OPENBAO_ADDR) to https://host:port".into(),
                )),
            );
            return Report {
                addr: target.addr.clone(),
                checks: steps.checks,
                openbao_version: None,
            };
        }
    };

    // DNS
    let started = Instant::now();
    let resolved = tokio::time::timeout(
        target.timeout,
        tokio::net::lookup_host((host.as_str(), port)),
    )
    .await;
    let (addrs, resolve_error): (Vec<std::net::SocketAddr>, Option<String>) = match resolved {
        Ok(Ok(found)) => (found.collect(), None),
        Ok(Err(e)) => (Vec::new(), Some(e.to_string())),
        Err(_) => (Vec::new(), None),
    };
    steps.record(
        "dns",
        started,
        match (addrs.first(), resolve_error) {
            (Some(_), _) => Ok(format!(
                "{host} → {}",
                addrs.iter().map(|a| a.ip().to_string()).collect::<Vec<_>>().join(", ")
            )),
            (None, Some(e)) => Err((
                format!("{host} does not resolve: {e}"),
                "check the OpenBao host name and the cluster's DNS (and egress to port 53)".into(),
            )),
            (None, None) => Err((
                format!("{host} gave no address within {:?}", target.timeout),
                "check the cluster DNS, the host name's records and the NetworkPolicy's egress to DNS".into(),
            )),
        },
    );

    // TCP
    if steps.runs("tcp") {
        let started = Instant::now();
        let mut connected = None;
        let mut last = String::new();
        for a in &addrs {
            match tokio::time::timeout(target.timeout, tokio::net::TcpStream::connect(a)).await {
                Ok(Ok(_)) => {
                    connected = Some(*a);
                    break;
                }
                Ok(Err(e)) => last = format!("{a}: {e}"),
                Err(_) => last = format!("{a}: no answer within {:?}", target.timeout),
            }
        }
        steps.record(
            "tcp",
            started,
            connected.map(|a| format!("connected to {a}")).ok_or_else(|| {
                (
                    format!("cannot connect to port {port} ({last})"),
                    "check that OpenBao listens there and that the NetworkPolicy allows egress to it (the chart's networkPolicy.openbao values)".into(),
                )
            }),
        );
    }

    // TLS
    if https {
        if steps.runs("tls") {
            let started = Instant::now();
            let outcome = handshake(target, &host, port).await;
            steps.record("tls", started, outcome);
        }
    } else {
        steps.skip(
            "tls",
            "plain http:// — no TLS (development only; never in production)".into(),
        );
    }

    let client = OpenBaoClient::with_tls(target.addr.clone(), &target.tls);

    // Health
    if steps.runs("health") {
        let started = Instant::now();
        let outcome = match &client {
            Err(e) => Err((e.to_string(), "fix the TLS settings".into())),
            Ok(client) => match client.health(target.namespace.as_deref()).await {
                Ok(h) if !h.initialized => Err((
                    "OpenBao is not initialized".to_owned(),
                    "initialize it (bao operator init) and unseal it".to_owned(),
                )),
                Ok(h) if h.sealed => Err((
                    format!("OpenBao {} is sealed", h.version),
                    "unseal it (bao operator unseal) or check its auto-unseal".to_owned(),
                )),
                Ok(h) => {
                    version = Some(h.version.clone());
                    Ok(format!(
                        "initialized, unsealed, version {}{}",
                        h.version,
                        if h.standby { " (standby)" } else { "" }
                    ))
                }
                Err(e) => Err((e.to_string(), "see the message".to_owned())),
            },
        };
        steps.record("health", started, outcome);
    }

    // Role (needs an operator token)
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
            let outcome = match client
                .role_exists(session, &target.auth_mount, &target.role)
                .await
            {
                Ok(true) => Ok(format!(
                    "role {} exists at auth/{}",
                    target.role, target.auth_mount
                )),
                Ok(false) => Err((
                    format!(
                        "role {} does not exist at auth/{}",
                        target.role, target.auth_mount
                    ),
                    format!(
                        "create it: bao write auth/{}/role/{} bound_service_account_names=… bound_service_account_namespaces=… audience=openbao policies=…",
                        target.auth_mount, target.role
                    ),
                )),
                Err(e) => Err((
                    e.to_string(),
                    "give the bootstrap token read on the auth mount's roles, or leave it out"
                        .into(),
                )),
            };
            steps.record("role", started, outcome);
        }
        _ => {}
    }

    // Login with our own ServiceAccount token
    if let Ok(client) = &client
        && steps.runs("login")
    {
        let started = Instant::now();
        let outcome = match client
            .login_kubernetes_in(
                target.namespace.as_deref(),
                &target.auth_mount,
                &target.role,
                &target.token_path,
            )
            .await
        {
            Ok(session) => {
                // Only a check: give the token back at once.
                let _ = client.revoke_self(&session).await;
                Ok(format!(
                    "logged in as role {} with this pod's ServiceAccount token",
                    target.role
                ))
            }
            Err(e) => Err((
                e.to_string(),
                "bind the role to this Job's namespace and ServiceAccount, with audience openbao"
                    .into(),
            )),
        };
        steps.record("login", started, outcome);
    }

    // The bootstrap token is single-use: revoke it whatever happened.
    if let (Some(session), Ok(client), true) = (&bootstrap, &client, target.revoke_bootstrap) {
        let started = Instant::now();
        let outcome = client
            .revoke_self(session)
            .await
            .map(|()| "the bootstrap token is revoked: copies of it (the Job spec, Helm's release record) are worthless".to_owned())
            .map_err(|e| (e.to_string(), "revoke it by hand: bao token revoke -self".to_owned()));
        steps.record("revoke", started, outcome);
    }

    Report {
        addr: target.addr.clone(),
        checks: steps.checks,
        openbao_version: version,
    }
}

async fn handshake(target: &Target, host: &str, port: u16) -> Result<String, (String, String)> {
    let fix = "check PHANTOM_OPENBAO_CA_FILE and PHANTOM_OPENBAO_SPKI_SHA256 against OpenBao's certificate (openssl s_client -connect host:port | openssl x509 -pubkey)".to_owned();
    let config = phantom_openbao::tls::client_config(&target.tls)
        .map_err(|e| (e.to_string(), fix.clone()))?;
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|e| {
        (
            format!("{host} is not a valid TLS server name: {e}"),
            fix.clone(),
        )
    })?;
    let tcp = tokio::time::timeout(target.timeout, tokio::net::TcpStream::connect((host, port)))
        .await
        .map_err(|_| {
            (
                format!("no connection within {:?}", target.timeout),
                fix.clone(),
            )
        })?
        .map_err(|e| (e.to_string(), fix.clone()))?;
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let stream = tokio::time::timeout(target.timeout, connector.connect(name, tcp))
        .await
        .map_err(|_| {
            (
                format!("no TLS handshake within {:?}", target.timeout),
                fix.clone(),
            )
        })?
        .map_err(|e| (format!("handshake refused: {e}"), fix.clone()))?;
    let (_, session) = stream.get_ref();
    let presented = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| phantom_openbao::tls::spki_sha256(leaf))
        .map(|digest| phantom_openbao::tls::format_pin(&digest))
        .unwrap_or_else(|| "unknown".into());
    let how = if target.tls.spki_pins.is_empty() {
        "the CA"
    } else {
        "the pin"
    };
    Ok(format!(
        "{} verified by {how}; key {presented}",
        session
            .protocol_version()
            .map_or("TLS".into(), |v| format!("{v:?}"))
    ))
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
