//! One function per pre-flight step. Each returns what it saw or a [`Failure`] with what to fix;
//! [`super::run`] composes them and skips what depends on a failed step.

use std::net::SocketAddr;
use std::time::Duration;

use phantom_openbao::{OpenBaoClient, Session};

use super::Target;

/// A failed step: what was seen and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub detail: String,
    pub fix: String,
}

impl Failure {
    fn new(detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            detail: detail.into(),
            fix: fix.into(),
        }
    }
}

/// What a step saw (`Ok`: a one-line description).
pub type StepResult = Result<String, Failure>;

/// DNS: the addresses `host` resolves to.
pub async fn dns(host: &str, port: u16, timeout: Duration) -> (StepResult, Vec<SocketAddr>) {
    let resolved = tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await;
    let (addrs, resolve_error): (Vec<SocketAddr>, Option<String>) = match resolved {
        Ok(Ok(found)) => (found.collect(), None),
        Ok(Err(e)) => (Vec::new(), Some(e.to_string())),
        Err(_) => (Vec::new(), None),
    };
    let result = match (addrs.first(), resolve_error) {
        (Some(_), _) => Ok(format!(
            "{host} → {}",
            addrs
                .iter()
                .map(|a| a.ip().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        (None, Some(e)) => Err(Failure::new(
            format!("{host} does not resolve: {e}"),
            "check the OpenBao host name and the cluster's DNS (and egress to port 53)",
        )),
        (None, None) => Err(Failure::new(
            format!("{host} gave no address within {timeout:?}"),
            "check the cluster DNS, the host name's records and the NetworkPolicy's egress to DNS",
        )),
    };
    (result, addrs)
}

/// TCP: a connection to one of `addrs`.
pub async fn tcp(addrs: &[SocketAddr], port: u16, timeout: Duration) -> StepResult {
    let mut last = String::new();
    for a in addrs {
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(a)).await {
            Ok(Ok(_)) => return Ok(format!("connected to {a}")),
            Ok(Err(e)) => last = format!("{a}: {e}"),
            Err(_) => last = format!("{a}: no answer within {timeout:?}"),
        }
    }
    Err(Failure::new(
        format!("cannot connect to port {port} ({last})"),
        "check that OpenBao listens there and that the NetworkPolicy allows egress to it (the chart's networkPolicy.openbao values)",
    ))
}

/// TLS: a handshake verified the way the sidecar verifies (CA and/or pin); names the key
/// OpenBao presented.
pub async fn tls(target: &Target, host: &str, port: u16) -> StepResult {
    let fail = |detail: String| {
        Failure::new(
            detail,
            "check PHANTOM_OPENBAO_CA_FILE and PHANTOM_OPENBAO_SPKI_SHA256 against OpenBao's certificate (openssl s_client -connect host:port | openssl x509 -pubkey)",
        )
    };
    let config =
        phantom_openbao::tls::client_config(&target.tls).map_err(|e| fail(e.to_string()))?;
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| fail(format!("{host} is not a valid TLS server name: {e}")))?;
    let tcp = tokio::time::timeout(target.timeout, tokio::net::TcpStream::connect((host, port)))
        .await
        .map_err(|_| fail(format!("no connection within {:?}", target.timeout)))?
        .map_err(|e| fail(e.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let stream = tokio::time::timeout(target.timeout, connector.connect(name, tcp))
        .await
        .map_err(|_| fail(format!("no TLS handshake within {:?}", target.timeout)))?
        .map_err(|e| fail(format!("handshake refused: {e}")))?;
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

/// Health: initialized and unsealed; returns OpenBao's version too.
pub async fn health(client: &OpenBaoClient, target: &Target) -> (StepResult, Option<String>) {
    match client.health(target.namespace.as_deref()).await {
        Ok(h) if !h.initialized => (
            Err(Failure::new(
                "OpenBao is not initialized",
                "initialize it (bao operator init) and unseal it",
            )),
            None,
        ),
        Ok(h) if h.sealed => (
            Err(Failure::new(
                format!("OpenBao {} is sealed", h.version),
                "unseal it (bao operator unseal) or check its auto-unseal",
            )),
            None,
        ),
        Ok(h) => (
            Ok(format!(
                "initialized, unsealed, version {}{}",
                h.version,
                if h.standby { " (standby)" } else { "" }
            )),
            Some(h.version),
        ),
        Err(e) => (Err(Failure::new(e.to_string(), "see the message")), None),
    }
}

/// Role: the Kubernetes auth role exists (read with the operator's bootstrap token).
pub async fn role(client: &OpenBaoClient, bootstrap: &Session, target: &Target) -> StepResult {
    let (mount, role) = (&target.auth_mount, &target.role);
    match client.role_exists(bootstrap, mount, role).await {
        Ok(true) => Ok(format!("role {role} exists at auth/{mount}")),
        Ok(false) => Err(Failure::new(
            format!("role {role} does not exist at auth/{mount}"),
            format!(
                "create it: bao write auth/{mount}/role/{role} bound_service_account_names=… bound_service_account_namespaces=… audience=openbao policies=…"
            ),
        )),
        Err(e) => Err(Failure::new(
            e.to_string(),
            "give the bootstrap token read on the auth mount's roles, or leave it out",
        )),
    }
}

/// Login: this pod's own ServiceAccount token is accepted for the role (the token is given back
/// at once).
pub async fn login(client: &OpenBaoClient, target: &Target) -> StepResult {
    match client
        .login_kubernetes_in(
            target.namespace.as_deref(),
            &target.auth_mount,
            &target.role,
            &target.token_path,
        )
        .await
    {
        Ok(session) => {
            // Only a check: a failed revocation leaves a short-lived token to expire.
            let _ = client.revoke_self(&session).await;
            Ok(format!(
                "logged in as role {} with this pod's ServiceAccount token",
                target.role
            ))
        }
        Err(e) => Err(Failure::new(
            e.to_string(),
            "bind the role to this Job's namespace and ServiceAccount, with audience openbao",
        )),
    }
}

/// Revoke: the single-use bootstrap token is revoked, so copies of it are worthless.
pub async fn revoke(client: &OpenBaoClient, bootstrap: &Session) -> StepResult {
    client
        .revoke_self(bootstrap)
        .await
        .map(|()| "the bootstrap token is revoked: copies of it (the Job spec, Helm's release record) are worthless".to_owned())
        .map_err(|e| Failure::new(e.to_string(), "revoke it by hand: bao token revoke -self"))
}
