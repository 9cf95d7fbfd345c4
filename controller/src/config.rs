//! What the controller is told: where admission listens, which namespaces Phantom covers, how the
//! breaker, the certificates and leader election behave. Built by `phantom-controller`'s flags,
//! or directly by tests and the demo.

use std::path::PathBuf;
use std::time::Duration;

use phantom_crds::wellknown::{CRITICAL_LABEL, CRITICAL_TRUE, Selection};

/// How the API server reaches admission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdmissionEndpoint {
    /// A Service in the cluster (the chart): `https://<name>.<namespace>.svc:<port>`.
    Service {
        namespace: String,
        name: String,
        port: u16,
    },
    /// A base URL (`https://host:port`), for admission running outside the cluster (the demo,
    /// the tests on a loopback control plane).
    Url(String),
}

impl AdmissionEndpoint {
    /// The base URL the controller's probe uses.
    pub fn base_url(&self) -> String {
        match self {
            Self::Service {
                namespace,
                name,
                port,
            } => format!("https://{name}.{namespace}.svc:{port}"),
            Self::Url(url) => url.trim_end_matches('/').to_owned(),
        }
    }

    /// The DNS names and IP addresses the serving certificate must cover.
    pub fn subject_names(&self) -> (Vec<String>, Vec<std::net::IpAddr>) {
        match self {
            Self::Service {
                namespace, name, ..
            } => (
                vec![
                    name.clone(),
                    format!("{name}.{namespace}"),
                    format!("{name}.{namespace}.svc"),
                    format!("{name}.{namespace}.svc.cluster.local"),
                ],
                Vec::new(),
            ),
            Self::Url(url) => {
                let host = url
                    .split("://")
                    .nth(1)
                    .unwrap_or(url)
                    .split('/')
                    .next()
                    .unwrap_or_default();
                let host = host
                    .rsplit_once(':')
                    .map_or(host, |(h, _)| h)
                    .trim_matches(['[', ']']);
                match host.parse() {
                    Ok(ip) => (vec!["localhost".into()], vec![ip]),
                    Err(_) => (vec![host.to_owned()], Vec::new()),
                }
            }
        }
    }
}

/// The webhook configurations the controller owns.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Name of the MutatingWebhookConfiguration (pod injection).
    pub mutating_name: String,
    /// Name of the ValidatingWebhookConfiguration (Phantom's own resources).
    pub validating_name: String,
    pub admission: AdmissionEndpoint,
    /// Which namespaces are covered (the enable label, the opt-out).
    pub selection: Selection,
    /// Namespaces never covered, whatever their labels (kube-system, the controller's own).
    pub excluded_namespaces: Vec<String>,
    /// `key=value` of namespaces that keep failing closed while the breaker is open.
    pub critical_label: (String, String),
    /// The API server's timeout for one admission call (1–30).
    pub timeout_seconds: i32,
    /// How often the configurations are compared with what they should be even without a watch
    /// event (the watch is the fast path; this catches a watch that silently stalled).
    pub resync: Duration,
}

impl WebhookSettings {
    /// Defaults for an admission endpoint.
    pub fn new(admission: AdmissionEndpoint) -> Self {
        Self {
            mutating_name: "phantom-injector".into(),
            validating_name: "phantom-validator".into(),
            admission,
            selection: Selection::default(),
            excluded_namespaces: vec!["kube-system".into(), "kube-public".into()],
            critical_label: (CRITICAL_LABEL.into(), CRITICAL_TRUE.into()),
            timeout_seconds: 10,
            resync: Duration::from_secs(30),
        }
    }
}

/// The webhook CA and serving certificate.
#[derive(Debug, Clone)]
pub struct CertSettings {
    /// Secret (in the controller's namespace) with the CA's certificate and key; only the
    /// controller reads it.
    pub ca_secret: String,
    /// `kubernetes.io/tls` Secret with the serving pair and `ca.crt`, mounted by admission.
    pub serving_secret: String,
    pub ca_validity: Duration,
    pub serving_validity: Duration,
    /// Also write `tls.crt`/`tls.key`/`ca.crt` here (admission running as a local process).
    pub write_dir: Option<PathBuf>,
    /// How often expiry is checked.
    pub check_interval: Duration,
}

impl Default for CertSettings {
    fn default() -> Self {
        Self {
            ca_secret: "phantom-webhook-ca".into(),
            serving_secret: "phantom-webhook-tls".into(),
            ca_validity: Duration::from_secs(5 * 365 * 24 * 3600),
            serving_validity: Duration::from_secs(90 * 24 * 3600),
            write_dir: None,
            check_interval: Duration::from_secs(300),
        }
    }
}

/// The circuit breaker in front of admission.
#[derive(Debug, Clone)]
pub struct BreakerSettings {
    /// Off: the configurations always fail closed.
    pub enabled: bool,
    pub probe_interval: Duration,
    pub probe_timeout: Duration,
    /// Consecutive failed probes that open the breaker.
    pub failures_to_open: u32,
    /// Consecutive good probes that close it again.
    pub successes_to_close: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            probe_interval: Duration::from_secs(2),
            probe_timeout: Duration::from_secs(2),
            failures_to_open: 3,
            successes_to_close: 2,
        }
    }
}

/// Leader election on a `coordination.k8s.io/v1` Lease.
#[derive(Debug, Clone)]
pub struct LeaderSettings {
    pub lease_name: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// How long a lease is valid without renewal: the failover time.
    pub lease_duration: Duration,
    /// How often the leader renews (and followers retry).
    pub retry_period: Duration,
}

impl LeaderSettings {
    /// Defaults for `identity`: 15 s leases retried every 2 s (like kube-controller-manager).
    pub fn new(identity: impl Into<String>) -> Self {
        Self {
            lease_name: "phantom-controller".into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Finding pods admitted without Phantom.
#[derive(Debug, Clone)]
pub struct GapSettings {
    pub scan_interval: Duration,
    /// Evict gap pods that a controller (ReplicaSet, StatefulSet, …) re-creates, so the new pod
    /// passes the webhook. Off by default: an eviction is a restart the owner did not ask for.
    pub evict: bool,
}

impl Default for GapSettings {
    fn default() -> Self {
        Self {
            scan_interval: Duration::from_secs(60),
            evict: false,
        }
    }
}

/// Everything the controller needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Namespace of the controller's Secrets, Lease and Events about cluster-scoped objects.
    pub namespace: String,
    /// Field manager of every server-side apply.
    pub field_manager: String,
    pub webhooks: WebhookSettings,
    pub certs: CertSettings,
    pub breaker: BreakerSettings,
    pub leader: LeaderSettings,
    pub gaps: GapSettings,
    /// ConfigMap (in `namespace`) publishing the objects in force, which admission replicas and
    /// the next leader read at start (the last good version of a broken object survives restarts).
    pub published_set: String,
    /// Groups bursts of policy changes into one compilation.
    pub debounce: Duration,
    /// `/metrics`, `/healthz`, `/readyz` (None: not served).
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl Settings {
    /// Defaults for a controller in `namespace` reaching admission at `admission`.
    pub fn new(namespace: &str, admission: AdmissionEndpoint, identity: &str) -> Self {
        let mut webhooks = WebhookSettings::new(admission);
        webhooks.excluded_namespaces.push(namespace.to_owned());
        Self {
            namespace: namespace.to_owned(),
            field_manager: "phantom-controller".into(),
            webhooks,
            certs: CertSettings::default(),
            breaker: BreakerSettings::default(),
            leader: LeaderSettings::new(identity),
            gaps: GapSettings::default(),
            published_set: "phantom-policy-set".into(),
            debounce: Duration::from_millis(200),
            metrics_listen: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_serving_certificate_covers_what_the_api_server_dials() {
        let service = AdmissionEndpoint::Service {
            namespace: "phantom-system".into(),
            name: "phantom-admission".into(),
            port: 443,
        };
        assert_eq!(
            service.base_url(),
            "https://phantom-admission.phantom-system.svc:443"
        );
        assert!(
            service
                .subject_names()
                .0
                .contains(&"phantom-admission.phantom-system.svc".to_owned())
        );
        let (dns, ips) = AdmissionEndpoint::Url("https://127.0.0.1:8443/".into()).subject_names();
        assert_eq!(ips, vec!["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]);
        assert_eq!(dns, ["localhost"]);
        let (dns, ips) = AdmissionEndpoint::Url("https://[::1]:8443".into()).subject_names();
        assert_eq!(ips.len(), 1, "{dns:?}");
        let (dns, _) =
            AdmissionEndpoint::Url("https://admission.example:8443".into()).subject_names();
        assert_eq!(dns, ["admission.example"]);
    }
}
