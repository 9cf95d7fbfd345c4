//! The command line (every flag also a `PHANTOM_*` variable), parsed once into [`Settings`].
//! Values out of range are refused by the parser with the flag's name; nothing is clamped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use phantom_openbao::tls::{TlsArgs, TlsSettings};
use phantom_process::LogFormat;
use phantom_process::tls_server::ConnectionLimits;

use crate::secrets::Identity;
use crate::server::ServerOptions;
use crate::verdict::PathRule;
use crate::{Error, Result};

/// Phantom's attestation broker: verifies a pod's TEE evidence (SEV-SNP, TDX) against pinned
/// vendor roots and an offline collateral bundle, applies the AttestationRequirements and
/// key-release conditions, and releases the binding's secrets read with its own OpenBao identity,
/// sealed to a key only the attested TEE holds. Run it next to OpenBao.
#[derive(Parser, Debug, Clone)]
#[command(name = "phantom-broker", version)]
pub struct Args {
    /// HTTPS address of the protocol (POST /v1/challenge, POST /v1/release).
    #[arg(long, env = "PHANTOM_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Plain HTTP address of /healthz, /readyz and /metrics.
    #[arg(long, env = "PHANTOM_HEALTH_LISTEN", default_value = "0.0.0.0:8080")]
    pub health_listen: SocketAddr,
    /// PEM serving certificate (chain). Sidecars pin its key: publish a new pin before rotating.
    #[arg(long, env = "PHANTOM_TLS_CERT")]
    pub tls_cert: PathBuf,
    /// PEM private key of the serving certificate.
    #[arg(long, env = "PHANTOM_TLS_KEY")]
    pub tls_key: PathBuf,
    /// The audience pod tokens must be issued for.
    #[arg(long, env = "PHANTOM_TOKEN_AUDIENCE", default_value = phantom_attestation::protocol::DEFAULT_AUDIENCE)]
    pub token_audience: String,
    /// OpenBao address the broker reads gated secrets from.
    #[arg(long, env = "PHANTOM_OPENBAO_ADDR")]
    pub openbao_addr: String,
    #[command(flatten)]
    pub openbao_tls: TlsArgs,
    /// OpenBao namespace the broker logs in to (and reads in).
    #[arg(long, env = "PHANTOM_OPENBAO_NAMESPACE")]
    pub openbao_namespace: Option<String>,
    /// Kubernetes auth mount of the broker's login.
    #[arg(long, env = "PHANTOM_OPENBAO_AUTH_MOUNT", default_value = "kubernetes")]
    pub openbao_auth_mount: String,
    /// The broker's OpenBao role: the only role bound to TEE-gated paths.
    #[arg(long, env = "PHANTOM_OPENBAO_ROLE", default_value = "phantom-broker")]
    pub openbao_role: String,
    /// The broker's ServiceAccount token for the OpenBao login (re-read at every login).
    #[arg(
        long,
        env = "PHANTOM_OPENBAO_TOKEN_FILE",
        default_value = "/var/run/secrets/phantom.dev/openbao/token"
    )]
    pub openbao_token_file: PathBuf,
    /// The jurisdiction of this OpenBao (what AttestationRequirement.spec.openbao.jurisdictions
    /// match), as the operator declares it.
    #[arg(long, env = "PHANTOM_OPENBAO_JURISDICTION")]
    pub openbao_jurisdiction: Option<String>,
    /// Directory of the collateral bundle (a mounted ConfigMap): *.der/*.pem VCEK/VLEK
    /// certificates and *.json TDX QuoteCollateralV3 documents. Re-read periodically.
    #[arg(long, env = "PHANTOM_COLLATERAL_DIR")]
    pub collateral_dir: Option<PathBuf>,
    /// Seconds between re-reads of the collateral bundle.
    #[arg(long, env = "PHANTOM_COLLATERAL_RELOAD_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub collateral_reload_seconds: u64,
    /// PEM file of an SEV-SNP chain to trust instead of AMD's pinned roots (ARK first, then its
    /// ASK/ASVK). For test chains and private labs only: never in production.
    #[arg(long, env = "PHANTOM_SNP_TRUST_CHAIN")]
    pub snp_trust_chain: Option<PathBuf>,
    /// The product line of --snp-trust-chain.
    #[arg(long, env = "PHANTOM_SNP_TRUST_PRODUCT", default_value = "milan", value_parser = ["milan", "genoa", "turin"])]
    pub snp_trust_product: String,
    /// Where each namespace's attested secrets live, mount-relative: a binding may have released
    /// only paths under this prefix (`{namespace}` is the pod's namespace). The broker's role reads
    /// every gated path, so this is what keeps one namespace from naming another's.
    #[arg(
        long,
        env = "PHANTOM_RELEASE_PATH_TEMPLATE",
        default_value = "{namespace}/"
    )]
    pub release_path_template: String,
    /// Seconds a challenge may be redeemed after it is issued (the evidence's maximum age).
    #[arg(long, env = "PHANTOM_CHALLENGE_TTL_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(5..=600))]
    pub challenge_ttl_seconds: u64,
    /// Challenges outstanding at once; beyond it new ones are refused until old ones expire.
    #[arg(long, env = "PHANTOM_MAX_CHALLENGES", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_challenges: u64,
    /// Largest accepted request body in bytes.
    #[arg(long, env = "PHANTOM_MAX_BODY_BYTES", default_value_t = 64 * 1024, value_parser = clap::value_parser!(u64).range(4096..=1_048_576))]
    pub max_body_bytes: u64,
    /// Connections served at once; more are closed as they arrive.
    #[arg(long, env = "PHANTOM_MAX_CONNECTIONS", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub max_connections: u64,
    /// Seconds in-flight releases may take to finish at shutdown.
    #[arg(long, env = "PHANTOM_SHUTDOWN_GRACE_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=300))]
    pub shutdown_grace_seconds: u64,
    /// Log format.
    #[arg(long, env = "PHANTOM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Everything the broker is configured with.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub server: ServerOptions,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub audience: String,
    pub openbao_addr: String,
    pub openbao_tls: TlsSettings,
    /// The OpenBao key report_data binds (the first pin: the current key).
    pub openbao_spki_sha256: [u8; 32],
    pub openbao_jurisdiction: Option<String>,
    pub identity: Identity,
    pub collateral_dir: Option<PathBuf>,
    pub collateral_reload: Duration,
    /// `(product, PEM path)` of a chain trusted instead of AMD's.
    pub snp_trust_chain: Option<(String, PathBuf)>,
    pub challenge_ttl_seconds: u64,
    pub max_challenges: usize,
    pub paths: PathRule,
}

impl TryFrom<Args> for Settings {
    type Error = Error;

    fn try_from(args: Args) -> Result<Self> {
        let openbao_tls = args.openbao_tls.settings()?;
        let Some(pin) = openbao_tls.spki_pins.first().copied() else {
            return Err(Error::Flag {
                flag: "openbao-spki-sha256",
                reason: "required: the evidence binds the OpenBao key the secrets are read from, so the broker must pin it".into(),
            });
        };
        if !args.openbao_addr.starts_with("https://") {
            return Err(Error::Flag {
                flag: "openbao-addr",
                reason: format!(
                    "{} is not https://; the broker reads gated secrets over TLS only",
                    args.openbao_addr
                ),
            });
        }
        Ok(Self {
            server: ServerOptions {
                listen: args.listen,
                health_listen: args.health_listen,
                max_body_bytes: args.max_body_bytes as usize,
                body_timeout: Duration::from_secs(10),
                limits: ConnectionLimits {
                    max_connections: args.max_connections as usize,
                    handshake_timeout: Duration::from_secs(10),
                    shutdown_grace: Duration::from_secs(args.shutdown_grace_seconds),
                },
            },
            tls_cert: args.tls_cert,
            tls_key: args.tls_key,
            audience: args.token_audience,
            openbao_addr: args.openbao_addr,
            openbao_tls,
            openbao_spki_sha256: pin,
            openbao_jurisdiction: args.openbao_jurisdiction,
            identity: Identity {
                namespace: args.openbao_namespace,
                auth_mount: args.openbao_auth_mount,
                role: args.openbao_role,
                token_path: args.openbao_token_file,
            },
            collateral_dir: args.collateral_dir,
            collateral_reload: Duration::from_secs(args.collateral_reload_seconds),
            snp_trust_chain: args
                .snp_trust_chain
                .map(|path| (args.snp_trust_product, path)),
            challenge_ttl_seconds: args.challenge_ttl_seconds,
            max_challenges: args.max_challenges as usize,
            paths: PathRule::parse(&args.release_path_template).map_err(|reason| Error::Flag {
                flag: "release-path-template",
                reason,
            })?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> std::result::Result<Args, clap::Error> {
        let mut argv = vec![
            "phantom-broker",
            "--tls-cert=c.pem",
            "--tls-key=k.pem",
            "--openbao-addr=https://openbao:8200",
        ];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv)
    }

    const PIN: &str =
        "--openbao-spki-sha256=0000000000000000000000000000000000000000000000000000000000000001";

    #[test]
    fn defaults_are_the_documented_ones() {
        let settings = Settings::try_from(parse(&[PIN]).unwrap()).unwrap();
        assert_eq!(settings.audience, "phantom-broker");
        assert_eq!(settings.identity.role, "phantom-broker");
        assert_eq!(settings.identity.auth_mount, "kubernetes");
        assert_eq!(settings.challenge_ttl_seconds, 60);
        assert_eq!(settings.max_challenges, 10_000);
        assert_eq!(settings.server.max_body_bytes, 65_536);
        assert_eq!(settings.openbao_spki_sha256[31], 1);
        assert_eq!(settings.snp_trust_chain, None);
        assert_eq!(settings.paths.prefix("shop"), "shop/");
    }

    #[test]
    fn a_broker_without_a_pin_or_tls_to_openbao_is_refused() {
        let err = Settings::try_from(parse(&[]).unwrap()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("--openbao-spki-sha256: required"),
            "{err}"
        );
        let mut args = parse(&[PIN]).unwrap();
        args.openbao_addr = "http://openbao:8200".into();
        let err = Settings::try_from(args).unwrap_err();
        assert!(err.to_string().contains("not https://"), "{err}");
    }

    #[test]
    fn a_path_template_without_the_namespace_is_refused() {
        let err = Settings::try_from(parse(&[PIN, "--release-path-template=shared/"]).unwrap())
            .unwrap_err();
        assert!(
            err.to_string().starts_with("--release-path-template:"),
            "{err}"
        );
    }

    #[test]
    fn out_of_range_values_are_refused_by_name_not_clamped() {
        for flag in [
            "--challenge-ttl-seconds=1",
            "--challenge-ttl-seconds=601",
            "--max-body-bytes=100",
            "--max-challenges=0",
            "--snp-trust-product=venice",
        ] {
            let err = parse(&[PIN, flag]).unwrap_err().to_string();
            let name = flag.split('=').next().unwrap();
            assert!(err.contains(name), "{flag}: {err}");
        }
    }
}
