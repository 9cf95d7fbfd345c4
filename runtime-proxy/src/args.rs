//! The command line (every flag also a `PHANTOM_*` variable: admission sets them), parsed once
//! into [`Settings`]. The plans admission writes are parsed here too, so a malformed one stops
//! the sidecar before it talks to anyone.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use phantom_crds::{BindingPlan, KeyReleasePlan};
use phantom_openbao::tls::{TlsArgs, TlsSettings};
use phantom_process::LogFormat;

use crate::attested::{BrokerSettings, EvidenceChoice, EvidenceMode};
use crate::{Error, Result};

/// Phantom's sidecar: fetches the pod's secrets from OpenBao with the pod's own ServiceAccount
/// token and delivers them as files on the memory volume and over a Unix socket.
#[derive(Parser, Debug, Clone)]
#[command(name = "phantom-proxy", version)]
pub struct Args {
    /// OpenBao address (`https://openbao.example:8200`).
    #[arg(
        long,
        env = "PHANTOM_OPENBAO_ADDR",
        required_unless_present = "dev_file_provider"
    )]
    pub openbao_addr: Option<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// The projected ServiceAccount token (audience of the OpenBao role).
    #[arg(
        long,
        env = "PHANTOM_TOKEN_PATH",
        default_value = "/var/run/secrets/phantom.dev/serviceaccount/token"
    )]
    pub token_path: PathBuf,
    /// The memory-backed volume for secret files.
    #[arg(long, env = "PHANTOM_SECRETS_DIR", default_value = "/phantom/secrets")]
    pub secrets_dir: PathBuf,
    /// The Unix socket serving the socket API.
    #[arg(
        long,
        env = "PHANTOM_SOCKET",
        default_value = "/phantom/socket/proxy.sock"
    )]
    pub socket: PathBuf,
    /// One socket per wrapped container, `<dir>/<container>/proxy.sock`, each answering only its
    /// container (admission mounts each directory into its container alone); replaces --socket.
    #[arg(long, env = "PHANTOM_SOCKETS_DIR")]
    pub sockets_dir: Option<PathBuf>,
    /// JSON list of the SecretBindings to deliver (written by admission).
    #[arg(long, env = "PHANTOM_PLAN")]
    pub plan: String,
    /// Comma-separated containers wrapped by phantom-exec.
    #[arg(long, env = "PHANTOM_WRAPPED_CONTAINERS", default_value = "")]
    pub wrapped_containers: String,
    /// Seconds the last good values are served while OpenBao is unreachable before reporting degraded.
    #[arg(long, env = "PHANTOM_GRACE_SECONDS", default_value_t = 900, value_parser = clap::value_parser!(u64).range(0..=7 * 86_400))]
    pub grace_seconds: u64,
    /// Overrides the bindings' refresh interval, in seconds.
    #[arg(long, env = "PHANTOM_REFRESH_SECONDS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub refresh_seconds: Option<u64>,
    /// The pod's namespace (the SecretBindings' namespace, as key-release conditions see them).
    #[arg(long, env = "PHANTOM_POD_NAMESPACE", default_value = "")]
    pub pod_namespace: String,
    /// The pod's name (fills `pod.metadata.name` for key-release conditions).
    #[arg(long, env = "PHANTOM_POD_NAME")]
    pub pod_name: Option<String>,
    /// JSON key-release conditions to check before releasing any value (written by admission).
    #[arg(long, env = "PHANTOM_KEY_RELEASE")]
    pub key_release: Option<String>,
    /// DEVELOPMENT ONLY, NOT SECURE: read secrets from `<dir>/<mount>/<path>.json` instead of OpenBao.
    #[arg(long, env = "PHANTOM_DEV_FILE_PROVIDER")]
    pub dev_file_provider: Option<PathBuf>,
    /// Plain-HTTP address for /metrics, /healthz and /readyz (unset: off). Nothing secret is served there.
    #[arg(long, env = "PHANTOM_STATUS_ADDR")]
    pub status_addr: Option<SocketAddr>,
    /// Revoke the OpenBao tokens, and with them the leases of dynamic secrets, on SIGTERM. Turn off
    /// when applications keep using dynamic credentials while they drain after the sidecar stops.
    #[arg(long, env = "PHANTOM_REVOKE_ON_SHUTDOWN", default_value_t = true, action = clap::ArgAction::Set)]
    pub revoke_on_shutdown: bool,
    /// Fetch once, write the files and exit (init-only mode).
    #[arg(long)]
    pub once: bool,
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Log format.
    #[arg(long, env = "PHANTOM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How the sidecar reaches the attestation broker (for bindings whose key release gates on an
/// AttestationRequirement; admission sets them).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct BrokerArgs {
    /// The attestation broker (`https://phantom-broker.phantom-system:8443`).
    #[arg(long, env = "PHANTOM_BROKER_ADDR")]
    pub broker_addr: Option<String>,
    /// Pinned sha256 of the broker's public key (`sha256//BASE64` or hex; comma-separated during
    /// a rotation). Required with --broker-addr.
    #[arg(long, env = "PHANTOM_BROKER_SPKI_SHA256", value_delimiter = ',')]
    pub broker_spki_sha256: Vec<String>,
    /// PEM CA bundle that signs the broker's certificate (with a pin, both must hold).
    #[arg(long, env = "PHANTOM_BROKER_CA_FILE")]
    pub broker_ca_file: Option<PathBuf>,
    /// The projected ServiceAccount token for the broker (audience `phantom-broker`).
    #[arg(
        long,
        env = "PHANTOM_BROKER_TOKEN_PATH",
        default_value = "/var/run/secrets/phantom.dev/broker/token"
    )]
    pub broker_token_path: PathBuf,
    /// Where evidence comes from: `auto` uses configfs-tsm when `<tsm-root>/report` exists (a TEE
    /// guest), else the attestation-agent (Kata/CoCo pods).
    #[arg(long, env = "PHANTOM_EVIDENCE_SOURCE", value_enum, default_value_t = EvidenceMode::Auto)]
    pub evidence_source: EvidenceMode,
    /// The configfs-tsm root evidence is collected from.
    #[arg(long, env = "PHANTOM_TSM_ROOT", default_value = phantom_attestation::tsm::DEFAULT_ROOT)]
    pub tsm_root: PathBuf,
    /// The CoCo attestation-agent's REST endpoint in the pod.
    #[arg(long, env = "PHANTOM_ATTESTATION_AGENT_URL", default_value = phantom_attestation::aa::DEFAULT_URL)]
    pub attestation_agent_url: String,
    /// This pod's UID (downward API `metadata.uid`), which the evidence binds.
    #[arg(long, env = "PHANTOM_POD_UID")]
    pub pod_uid: Option<String>,
}

impl BrokerArgs {
    /// The broker settings, `None` without --broker-addr; `openbao_pins` are the sidecar's OpenBao
    /// pins (the evidence binds the first).
    pub fn settings(&self, openbao_pins: &[[u8; 32]]) -> Result<Option<BrokerSettings>> {
        let Some(addr) = &self.broker_addr else {
            return Ok(None);
        };
        let missing = |what: &str| {
            config(format!(
                "--broker-addr is set but {what}; attested key release cannot run without it"
            ))
        };
        if self.broker_spki_sha256.iter().all(|p| p.trim().is_empty()) {
            return Err(missing(
                "--broker-spki-sha256 is not (the broker's key must be pinned)",
            ));
        }
        let pod_uid = self
            .pod_uid
            .clone()
            .filter(|uid| !uid.is_empty())
            .ok_or_else(|| missing("--pod-uid (PHANTOM_POD_UID, from the downward API) is not"))?;
        let openbao_spki_sha256 = *openbao_pins.first().ok_or_else(|| {
            missing(
                "OpenBao is not pinned (--openbao-spki-sha256): the evidence binds OpenBao's key",
            )
        })?;
        let tls = TlsArgs {
            openbao_ca_file: self.broker_ca_file.clone(),
            openbao_spki_sha256: self.broker_spki_sha256.clone(),
            ..TlsArgs::default()
        }
        .settings()?;
        Ok(Some(BrokerSettings {
            addr: addr.clone(),
            tls,
            token_path: self.broker_token_path.clone(),
            evidence: EvidenceChoice {
                mode: self.evidence_source,
                tsm_root: self.tsm_root.clone(),
                agent_url: self.attestation_agent_url.clone(),
            },
            pod_uid,
            openbao_spki_sha256,
        }))
    }
}

/// What `phantom-proxy` runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Empty only with the development file provider.
    pub openbao_addr: String,
    pub tls: TlsSettings,
    pub token_path: PathBuf,
    pub secrets_dir: PathBuf,
    pub socket: PathBuf,
    pub sockets_dir: Option<PathBuf>,
    pub plan: Vec<BindingPlan>,
    pub wrapped_containers: Vec<String>,
    pub grace: Duration,
    pub refresh_override: Option<Duration>,
    pub pod_namespace: String,
    pub pod_name: Option<String>,
    pub key_release: Option<KeyReleasePlan>,
    pub dev_file_provider: Option<PathBuf>,
    pub status_addr: Option<SocketAddr>,
    pub revoke_on_shutdown: bool,
    pub once: bool,
    pub broker: Option<BrokerSettings>,
    pub log_format: LogFormat,
}

fn config(message: String) -> Error {
    Error::Config(message)
}

impl TryFrom<Args> for Settings {
    type Error = Error;

    fn try_from(args: Args) -> Result<Self> {
        let plan: Vec<BindingPlan> = serde_json::from_str(&args.plan).map_err(|e| {
            config(format!(
                "PHANTOM_PLAN is not the plan admission writes ({e}); is phantom-proxy older than phantom-admission?"
            ))
        })?;
        let key_release = args
            .key_release
            .as_deref()
            .map(serde_json::from_str::<KeyReleasePlan>)
            .transpose()
            .map_err(|e| {
                config(format!(
                    "PHANTOM_KEY_RELEASE is not the key-release plan admission writes ({e}); is phantom-proxy older than phantom-admission?"
                ))
            })?;
        let wrapped_containers: Vec<String> = args
            .wrapped_containers
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        // Admission refuses such a pod; a plan written by an older admission is refused here.
        phantom_policies::check_deliveries(&plan, &wrapped_containers)
            .map_err(|conflict| config(format!("PHANTOM_PLAN cannot be delivered: {conflict}")))?;
        let tls = args.tls.settings()?;
        let broker = args.broker.settings(&tls.spki_pins)?;
        Ok(Self {
            openbao_addr: args.openbao_addr.unwrap_or_default(),
            tls,
            token_path: args.token_path,
            secrets_dir: args.secrets_dir,
            socket: args.socket,
            sockets_dir: args.sockets_dir,
            plan,
            wrapped_containers,
            grace: Duration::from_secs(args.grace_seconds),
            refresh_override: args.refresh_seconds.map(Duration::from_secs),
            pod_namespace: args.pod_namespace,
            pod_name: args.pod_name,
            key_release,
            dev_file_provider: args.dev_file_provider,
            status_addr: args.status_addr,
            revoke_on_shutdown: args.revoke_on_shutdown,
            once: args.once,
            broker,
            log_format: args.log_format,
        })
    }
}

#[cfg(test)]
mod tests;
