//! The command line (every flag also a `PHANTOM_*` variable), parsed once into [`Settings`].
//! Values out of range are refused by the parser with the flag's name; nothing is clamped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use phantom_crds::wellknown::parse_label;
use phantom_process::LogFormat;

use crate::config::{AdmissionEndpoint, Settings};
use crate::{Error, Result};

/// Phantom's controller: writes each PhantomPolicy's, SecretBinding's and AttestationRequirement's
/// compiled status, keeps the webhook configurations and their certificate in shape (restoring
/// them when deleted or altered), and fails open for non-critical namespaces while admission is
/// down. Run two replicas: one leads (a Lease), the other takes over within the lease duration.
#[derive(Parser, Debug, Clone)]
#[command(name = "phantom-controller", version)]
pub struct Args {
    /// Namespace of the controller's Secrets, Lease and Events (usually its own).
    #[arg(long, env = "PHANTOM_NAMESPACE", default_value = "phantom-system")]
    pub namespace: String,
    /// This replica's identity in the Lease (the pod name).
    #[arg(long, env = "PHANTOM_POD_NAME", default_value_t = default_identity())]
    pub identity: String,
    /// Admission's Service (`name`, in --namespace) the webhook configurations point at.
    #[arg(
        long,
        env = "PHANTOM_ADMISSION_SERVICE",
        default_value = "phantom-admission"
    )]
    pub admission_service: String,
    /// Port of admission's Service.
    #[arg(long, env = "PHANTOM_ADMISSION_PORT", default_value_t = 443)]
    pub admission_port: u16,
    /// Base URL of admission instead of a Service (admission outside the cluster, `https://host:port`).
    #[arg(
        long,
        env = "PHANTOM_ADMISSION_URL",
        conflicts_with = "admission_service"
    )]
    pub admission_url: Option<String>,
    /// Name of the MutatingWebhookConfiguration the controller owns.
    #[arg(
        long,
        env = "PHANTOM_MUTATING_WEBHOOK",
        default_value = "phantom-injector"
    )]
    pub mutating_webhook: String,
    /// Name of the ValidatingWebhookConfiguration the controller owns.
    #[arg(
        long,
        env = "PHANTOM_VALIDATING_WEBHOOK",
        default_value = "phantom-validator"
    )]
    pub validating_webhook: String,
    /// Namespace label (key=value) that enables Phantom.
    #[arg(long, env = "PHANTOM_ENABLE_LABEL", default_value = "phantom.dev/inject=enabled", value_parser = parse_label)]
    pub enable_label: (String, String),
    /// Namespace label (key=value) of namespaces that keep failing closed while the breaker is open.
    #[arg(long, env = "PHANTOM_CRITICAL_LABEL", default_value = "phantom.dev/critical=true", value_parser = parse_label)]
    pub critical_label: (String, String),
    /// Namespaces never covered (besides kube-system, kube-public and --namespace), comma-separated.
    #[arg(long, env = "PHANTOM_EXCLUDED_NAMESPACES", value_delimiter = ',')]
    pub excluded_namespaces: Vec<String>,
    /// The API server's timeout for one admission call, 1–30 s.
    #[arg(long, env = "PHANTOM_WEBHOOK_TIMEOUT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(i32).range(1..=30))]
    pub webhook_timeout_seconds: i32,
    /// Disable the circuit breaker: the webhooks always fail closed.
    #[arg(long, env = "PHANTOM_BREAKER_DISABLED")]
    pub breaker_disabled: bool,
    /// Consecutive failed probes of admission that open the breaker.
    #[arg(long, env = "PHANTOM_BREAKER_FAILURES", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub breaker_failures: u32,
    /// Consecutive good probes that close it.
    #[arg(long, env = "PHANTOM_BREAKER_SUCCESSES", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub breaker_successes: u32,
    /// Milliseconds between probes of admission.
    #[arg(long, env = "PHANTOM_BREAKER_PROBE_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub breaker_probe_ms: u64,
    /// Days the webhook CA is valid (replaced with a third left, the old one stays trusted).
    #[arg(long, env = "PHANTOM_CA_DAYS", default_value_t = 1825, value_parser = clap::value_parser!(u64).range(1..=36_500))]
    pub ca_days: u64,
    /// Days the serving certificate is valid (replaced with a third left).
    #[arg(long, env = "PHANTOM_SERVING_CERT_DAYS", default_value_t = 90, value_parser = clap::value_parser!(u64).range(1..=3650))]
    pub serving_cert_days: u64,
    /// Also write tls.crt/tls.key/ca.crt into this directory (admission as a local process).
    #[arg(long, env = "PHANTOM_CERT_DIR")]
    pub cert_dir: Option<PathBuf>,
    /// ConfigMap (in --namespace) publishing the policy set in force, read by admission replicas
    /// and the next leader at start (admission's --published-policy-set).
    #[arg(
        long,
        env = "PHANTOM_PUBLISHED_POLICY_SET_NAME",
        default_value = "phantom-policy-set"
    )]
    pub published_policy_set: String,
    /// Seconds between scans for pods admitted without Phantom.
    #[arg(long, env = "PHANTOM_GAP_SCAN_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub gap_scan_seconds: u64,
    /// Evict pods admitted without Phantom when an owner re-creates them.
    #[arg(long, env = "PHANTOM_EVICT_GAP_PODS")]
    pub evict_gap_pods: bool,
    /// Seconds a Lease is valid without renewal (the failover time).
    #[arg(long, env = "PHANTOM_LEASE_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..=300))]
    pub lease_seconds: u64,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "PHANTOM_METRICS_LISTEN", default_value = "0.0.0.0:8080")]
    pub metrics_listen: SocketAddr,
    /// Log format.
    #[arg(long, env = "PHANTOM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

fn default_identity() -> String {
    std::env::var("HOSTNAME")
        .unwrap_or_else(|_| format!("phantom-controller-{}", std::process::id()))
}

const DAY: u64 = 86_400;

impl TryFrom<Args> for Settings {
    type Error = Error;

    fn try_from(args: Args) -> Result<Self> {
        if args.serving_cert_days >= args.ca_days {
            return Err(Error::Config(format!(
                "--serving-cert-days ({}) must be shorter than --ca-days ({}): a serving certificate cannot outlive the CA that signs it",
                args.serving_cert_days, args.ca_days
            )));
        }
        let admission = match args.admission_url {
            Some(url) => AdmissionEndpoint::Url(url),
            None => AdmissionEndpoint::Service {
                namespace: args.namespace.clone(),
                name: args.admission_service,
                port: args.admission_port,
            },
        };
        let mut s = Settings::new(&args.namespace, admission, &args.identity);
        s.webhooks.mutating_name = args.mutating_webhook;
        s.webhooks.validating_name = args.validating_webhook;
        s.webhooks.selection.enable_label = args.enable_label;
        s.webhooks.critical_label = args.critical_label;
        s.webhooks.excluded_namespaces.extend(
            args.excluded_namespaces
                .into_iter()
                .filter(|n| !n.is_empty()),
        );
        s.webhooks.timeout_seconds = args.webhook_timeout_seconds;
        s.breaker.enabled = !args.breaker_disabled;
        s.breaker.failures_to_open = args.breaker_failures;
        s.breaker.successes_to_close = args.breaker_successes;
        s.breaker.probe_interval = Duration::from_millis(args.breaker_probe_ms);
        s.certs.ca_validity = Duration::from_secs(args.ca_days * DAY);
        s.certs.serving_validity = Duration::from_secs(args.serving_cert_days * DAY);
        s.certs.write_dir = args.cert_dir;
        s.published_set = args.published_policy_set;
        s.gaps.scan_interval = Duration::from_secs(args.gap_scan_seconds);
        s.gaps.evict = args.evict_gap_pods;
        s.leader.lease_duration = Duration::from_secs(args.lease_seconds);
        s.leader.retry_period = s.leader.lease_duration / 5;
        s.metrics_listen = Some(args.metrics_listen);
        Ok(s)
    }
}

#[cfg(test)]
mod tests;
