//! The command line (every flag also a `PHANTOM_*` variable), parsed once into [`Settings`].
//! Values out of range are refused by the parser with the flag's name; nothing is clamped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use phantom_process::LogFormat;

use crate::app::Settings;
use crate::config::{BrokerConfig, InjectConfig, Selection, parse_label};
use crate::server::ServerOptions;
use crate::{Error, Result};

/// Phantom's admission webhook: injects the Phantom sidecar into pods as the compiled
/// PhantomPolicies decide (fail closed), and validates Phantom's own resources.
#[derive(Parser, Debug, Clone)]
#[command(name = "phantom-admission", version)]
pub struct Args {
    /// HTTPS address of the webhook (POST /mutate, POST /validate).
    #[arg(long, env = "PHANTOM_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Plain HTTP address of /healthz, /readyz and /metrics.
    #[arg(long, env = "PHANTOM_HEALTH_LISTEN", default_value = "0.0.0.0:8080")]
    pub health_listen: SocketAddr,
    /// PEM serving certificate (chain); re-read when it changes.
    #[arg(long, env = "PHANTOM_TLS_CERT")]
    pub tls_cert: PathBuf,
    /// PEM private key of the serving certificate; re-read when it changes.
    #[arg(long, env = "PHANTOM_TLS_KEY")]
    pub tls_key: PathBuf,
    /// The key decision records are sealed with (`decision.key` of the serving certificate's
    /// Secret, which phantom-controller writes); re-read when it changes.
    #[arg(long, env = "PHANTOM_DECISION_KEY")]
    pub decision_key: PathBuf,
    /// Seconds between checks of the certificate and decision-key files.
    #[arg(long, env = "PHANTOM_TLS_RELOAD_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub tls_reload_seconds: u64,
    /// Image of the sidecar (entrypoint /phantom-proxy).
    #[arg(
        long,
        env = "PHANTOM_PROXY_IMAGE",
        default_value = "phantom.local/phantom-proxy:dev"
    )]
    pub proxy_image: String,
    /// Image holding /phantom-exec, copied into each pod by the init container.
    #[arg(
        long,
        env = "PHANTOM_EXEC_IMAGE",
        default_value = "phantom.local/phantom-exec:dev"
    )]
    pub exec_image: String,
    /// imagePullPolicy of the injected containers (Never for locally imported images).
    #[arg(
        long,
        env = "PHANTOM_IMAGE_PULL_POLICY",
        default_value = "IfNotPresent"
    )]
    pub image_pull_policy: String,
    /// OpenBao address handed to the sidecar.
    #[arg(
        long,
        env = "PHANTOM_OPENBAO_ADDR",
        default_value = "https://openbao:8200"
    )]
    pub openbao_addr: String,
    /// PEM CA bundle the sidecars trust OpenBao with (read at startup, handed to each sidecar).
    #[arg(long, env = "PHANTOM_OPENBAO_CA_FILE")]
    pub openbao_ca_file: Option<std::path::PathBuf>,
    /// Pinned sha256 of OpenBao's public key for the sidecars (`sha256//BASE64` or hex;
    /// comma-separated during a key rotation).
    #[arg(long, env = "PHANTOM_OPENBAO_SPKI_SHA256", value_delimiter = ',')]
    pub openbao_spki_sha256: Vec<String>,
    /// kubernetes.io/tls Secret (in each injected pod's namespace) with the sidecar's client
    /// certificate, for OpenBao listeners that require mTLS.
    #[arg(long, env = "PHANTOM_OPENBAO_CLIENT_CERT_SECRET")]
    pub openbao_client_cert_secret: Option<String>,
    /// Port of the sidecar's /metrics, /healthz and /readyz (0: off; never on hostNetwork pods).
    #[arg(long, env = "PHANTOM_PROXY_STATUS_PORT", default_value_t = 9102)]
    pub proxy_status_port: u16,
    /// Audience of the projected ServiceAccount token the sidecar presents to OpenBao.
    #[arg(long, env = "PHANTOM_OPENBAO_AUDIENCE", default_value = "openbao")]
    pub openbao_audience: String,
    /// The attestation broker handed to sidecars whose key release gates on an
    /// AttestationRequirement (unset: such sidecars release nothing and say why).
    #[arg(long, env = "PHANTOM_BROKER_ADDR", requires = "broker_spki_sha256")]
    pub broker_addr: Option<String>,
    /// Pinned sha256 of the broker's public key for the sidecars (`sha256//BASE64` or hex;
    /// comma-separated during a rotation).
    #[arg(long, env = "PHANTOM_BROKER_SPKI_SHA256", value_delimiter = ',')]
    pub broker_spki_sha256: Vec<String>,
    /// Audience of the projected token the sidecar presents to the broker.
    #[arg(long, env = "PHANTOM_BROKER_AUDIENCE", default_value = phantom_crds::wellknown::BROKER_AUDIENCE)]
    pub broker_audience: String,
    /// The node agent's socket directory on every node, mounted into pods in injection mode
    /// daemonset (an absolute host path).
    #[arg(long, env = "PHANTOM_AGENT_SOCKET_DIR", default_value = crate::config::DEFAULT_AGENT_SOCKET_DIR)]
    pub agent_socket_dir: String,
    /// Audience of the projected token pods in injection mode daemonset prove themselves with to
    /// the node agent (phantom-agent's --audience).
    #[arg(long, env = "PHANTOM_AGENT_AUDIENCE", default_value = crate::config::DEFAULT_AGENT_AUDIENCE)]
    pub agent_audience: String,
    /// Size limit of the memory-backed secrets volume when the policy sets none.
    #[arg(long, env = "PHANTOM_TMPFS_SIZE", default_value = "1Mi")]
    pub tmpfs_size: String,
    /// Namespace label (key=value) that enables Phantom.
    #[arg(long, env = "PHANTOM_ENABLE_LABEL", default_value = "phantom.dev/inject=enabled", value_parser = parse_label)]
    pub enable_label: (String, String),
    /// Namespace label (key=value) that opts a namespace out.
    #[arg(long, env = "PHANTOM_OPT_OUT_LABEL", default_value = "phantom.dev/inject=disabled", value_parser = parse_label)]
    pub opt_out_label: (String, String),
    /// Decisions evaluated at once.
    #[arg(long, env = "PHANTOM_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub concurrency: u64,
    /// Milliseconds one evaluation may take (queueing included) before the pod is refused.
    #[arg(long, env = "PHANTOM_EVALUATION_TIMEOUT_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=30_000))]
    pub evaluation_timeout_ms: u64,
    /// Largest accepted request body in bytes.
    #[arg(long, env = "PHANTOM_MAX_BODY_BYTES", default_value_t = 8 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..=64 * 1024 * 1024))]
    pub max_body_bytes: u64,
    /// Connections to the webhook port served at once; more are closed as they arrive.
    #[arg(long, env = "PHANTOM_MAX_CONNECTIONS", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub max_connections: u64,
    /// Memory in bytes that requests in flight may hold (each is charged its body before it is
    /// read, and what parsing it builds before it is parsed); beyond it requests are answered 503
    /// at once. Keep it well below the container's memory limit; it must hold one request of
    /// --max-body-bytes at its densest.
    #[arg(long, env = "PHANTOM_MAX_INFLIGHT_BYTES", default_value_t = 128 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024 * 1024..=64 * 1024 * 1024 * 1024))]
    pub max_inflight_bytes: u64,
    /// Seconds in-flight requests get to finish at shutdown.
    #[arg(long, env = "PHANTOM_SHUTDOWN_GRACE_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=300))]
    pub shutdown_grace_seconds: u64,
    /// ConfigMap (`namespace/name`) where the controller publishes the policy set in force; read at
    /// start so that an object whose current version is broken stays enforced at its last good
    /// version across restarts. Empty: do not read one.
    #[arg(
        long,
        env = "PHANTOM_PUBLISHED_POLICY_SET",
        default_value = "phantom-system/phantom-policy-set"
    )]
    pub published_policy_set: String,
    /// Log format.
    #[arg(long, env = "PHANTOM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The CA bundle file's PEM, checked to hold a certificate (handed to every sidecar inline).
fn ca_pem(path: &std::path::Path) -> Result<String> {
    let pem = std::fs::read_to_string(path).map_err(|e| {
        Error::Config(format!(
            "reading PHANTOM_OPENBAO_CA_FILE (--openbao-ca-file) {}: {e}",
            path.display()
        ))
    })?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(Error::Config(format!(
            "PHANTOM_OPENBAO_CA_FILE (--openbao-ca-file) {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(pem)
}

impl TryFrom<Args> for Settings {
    type Error = Error;

    /// The settings the flags describe; reads the OpenBao CA file (the one input that is a file).
    fn try_from(args: Args) -> Result<Self> {
        let mut settings = Settings::new(args.tls_cert, args.tls_key, args.decision_key);
        settings.server = ServerOptions {
            listen: args.listen,
            health_listen: args.health_listen,
            max_body_bytes: usize::try_from(args.max_body_bytes).map_err(|_| {
                Error::Config("PHANTOM_MAX_BODY_BYTES does not fit this platform".into())
            })?,
            shutdown_grace: Duration::from_secs(args.shutdown_grace_seconds),
            max_connections: usize::try_from(args.max_connections).map_err(|_| {
                Error::Config("PHANTOM_MAX_CONNECTIONS does not fit this platform".into())
            })?,
            max_inflight_bytes: usize::try_from(args.max_inflight_bytes).map_err(|_| {
                Error::Config("PHANTOM_MAX_INFLIGHT_BYTES does not fit this platform".into())
            })?,
            ..ServerOptions::default()
        };
        let largest = crate::budget::largest_charge(settings.server.max_body_bytes);
        if settings.server.max_inflight_bytes < largest {
            return Err(Error::Config(format!(
                "PHANTOM_MAX_INFLIGHT_BYTES (--max-inflight-bytes) is {} but one request of PHANTOM_MAX_BODY_BYTES (--max-body-bytes) {} is charged {largest}; raise the first or lower the second",
                settings.server.max_inflight_bytes, settings.server.max_body_bytes
            )));
        }
        settings.cert_reload_interval = Duration::from_secs(args.tls_reload_seconds);
        settings.inject = InjectConfig {
            proxy_image: args.proxy_image,
            exec_image: args.exec_image,
            image_pull_policy: args.image_pull_policy,
            openbao_address: args.openbao_addr,
            openbao_audience: args.openbao_audience,
            default_tmpfs_size: args.tmpfs_size,
            openbao_ca_pem: args.openbao_ca_file.as_deref().map(ca_pem).transpose()?,
            openbao_spki_pins: args
                .openbao_spki_sha256
                .into_iter()
                .filter(|p| !p.trim().is_empty())
                .collect(),
            openbao_client_cert_secret: args.openbao_client_cert_secret,
            proxy_status_port: args.proxy_status_port,
            broker: match args.broker_addr {
                None => None,
                Some(address) if !address.starts_with("https://") => {
                    return Err(Error::Config(format!(
                        "PHANTOM_BROKER_ADDR (--broker-addr) {address} is not https://; sidecars reach the broker over TLS only"
                    )));
                }
                Some(address) => Some(BrokerConfig {
                    address,
                    spki_pins: args
                        .broker_spki_sha256
                        .into_iter()
                        .filter(|p| !p.trim().is_empty())
                        .collect(),
                    audience: args.broker_audience,
                }),
            },
            agent: match args.agent_socket_dir {
                dir if !dir.starts_with('/') || dir.split('/').any(|part| part == "..") => {
                    return Err(Error::Config(format!(
                        "PHANTOM_AGENT_SOCKET_DIR (--agent-socket-dir) {dir:?} is not an absolute path without `..`; it is mounted into pods as a hostPath"
                    )));
                }
                socket_dir => crate::config::AgentConfig {
                    socket_dir,
                    audience: args.agent_audience,
                },
            },
            ..InjectConfig::default()
        };
        settings.selection = Selection {
            enable_label: args.enable_label,
            opt_out_label: args.opt_out_label,
        };
        settings.published_set = phantom_crds::wellknown::parse_object_name(
            &args.published_policy_set,
        )
        .map_err(|why| {
            Error::Config(format!(
                "PHANTOM_PUBLISHED_POLICY_SET (--published-policy-set): {why}"
            ))
        })?;
        settings.concurrency = usize::try_from(args.concurrency)
            .map_err(|_| Error::Config("PHANTOM_CONCURRENCY does not fit this platform".into()))?;
        settings.evaluation_timeout = Duration::from_millis(args.evaluation_timeout_ms);
        Ok(settings)
    }
}

#[cfg(test)]
mod tests;
