//! The command line (every flag also a `PHANTOM_*` variable), parsed once into [`Settings`].

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use phantom_openbao::SecretValue;
use phantom_openbao::tls::TlsArgs;
use phantom_process::LogFormat;

use crate::preflight::Target;
use crate::{Error, Result};

/// Phantom's pre-flight check: DNS, TCP, TLS (pinned key or CA), OpenBao health, the Kubernetes
/// auth role and a login with this pod's own ServiceAccount token. Results go to stdout and into a
/// ConfigMap; the exit code is 1 when a check failed (the message says what to fix), 2 on bad
/// flags.
#[derive(Parser, Debug, Clone)]
#[command(name = "phantom-preflight", version)]
pub struct Args {
    /// OpenBao's address.
    #[arg(long, env = "PHANTOM_OPENBAO_ADDR")]
    pub openbao_addr: String,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// OpenBao namespace of the auth mount.
    #[arg(long, env = "PHANTOM_OPENBAO_NAMESPACE")]
    pub openbao_namespace: Option<String>,
    /// Kubernetes auth mount.
    #[arg(long, env = "PHANTOM_AUTH_MOUNT", default_value = "kubernetes")]
    pub auth_mount: String,
    /// Role this Job logs in with (bound to its namespace and ServiceAccount).
    #[arg(long, env = "PHANTOM_ROLE", default_value = "phantom-preflight")]
    pub role: String,
    /// This pod's projected ServiceAccount token (audience openbao).
    #[arg(
        long,
        env = "PHANTOM_TOKEN_PATH",
        default_value = "/var/run/secrets/phantom.dev/serviceaccount/token"
    )]
    pub token_path: PathBuf,
    /// Keep the bootstrap token (PHANTOM_BOOTSTRAP_TOKEN, environment only) instead of revoking it after use.
    #[arg(long, env = "PHANTOM_KEEP_BOOTSTRAP_TOKEN")]
    pub keep_bootstrap_token: bool,
    /// Seconds each network step may take.
    #[arg(long, env = "PHANTOM_TIMEOUT_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub timeout_seconds: u64,
    /// ConfigMap (`namespace/name`) for the results; empty: do not write one.
    #[arg(long, env = "PHANTOM_RESULTS_CONFIGMAP", default_value = "")]
    pub results_configmap: String,
    /// Print the results as JSON instead of a table.
    #[arg(long, env = "PHANTOM_JSON")]
    pub json: bool,
    /// Log format (diagnostics on stderr; the results go to stdout).
    #[arg(long, env = "PHANTOM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// What one pre-flight run does.
#[derive(Debug, Clone)]
pub struct Settings {
    pub target: Target,
    /// `(namespace, name)` of the results ConfigMap.
    pub results_configmap: Option<(String, String)>,
    pub json: bool,
}

impl Settings {
    /// The settings `args` describe, with the bootstrap token (read from
    /// `PHANTOM_BOOTSTRAP_TOKEN` by the binary: a flag would show in `ps`).
    pub fn new(args: Args, bootstrap_token: Option<String>) -> Result<Self> {
        let results_configmap = phantom_crds::wellknown::parse_object_name(&args.results_configmap)
            .map_err(|why| {
                Error::Config(format!(
                    "PHANTOM_RESULTS_CONFIGMAP (--results-configmap): {why}"
                ))
            })?;
        let tls = args
            .tls
            .settings()
            .map_err(|e| Error::Config(format!("the OpenBao TLS flags: {e}")))?;
        Ok(Self {
            target: Target {
                addr: args.openbao_addr.trim_end_matches('/').to_owned(),
                tls,
                namespace: args.openbao_namespace,
                auth_mount: args.auth_mount,
                role: args.role,
                token_path: args.token_path,
                bootstrap_token: bootstrap_token
                    .filter(|t| !t.trim().is_empty())
                    .map(|t| SecretValue::new(t.trim().to_owned())),
                revoke_bootstrap: !args.keep_bootstrap_token,
                timeout: Duration::from_secs(args.timeout_seconds),
            },
            results_configmap,
            json: args.json,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(flags: &[(&str, &str)]) -> std::result::Result<Args, clap::Error> {
        Args::try_parse_from(phantom_testkit::argv(
            "phantom-preflight",
            &["--openbao-addr=https://openbao.example:8200/"],
            flags,
        ))
    }

    #[test]
    fn defaults_and_values_become_typed_settings() {
        let s = Settings::new(parse(&[]).expect("parse"), None).expect("defaults");
        assert_eq!(s.target.addr, "https://openbao.example:8200");
        assert_eq!(s.target.timeout, Duration::from_secs(5));
        assert!(s.target.revoke_bootstrap && s.target.bootstrap_token.is_none());
        assert_eq!(s.results_configmap, None);
        let s = Settings::new(
            parse(&[("results-configmap", "phantom-system/phantom-preflight")]).expect("parse"),
            Some(" s.bootstrap \n".into()),
        )
        .expect("settings");
        assert_eq!(
            s.results_configmap,
            Some(("phantom-system".into(), "phantom-preflight".into()))
        );
        assert_eq!(
            s.target.bootstrap_token.as_ref().map(SecretValue::len),
            Some(" s.bootstrap \n".trim().len())
        );
        // The token never shows in the settings' Debug output.
        assert!(!format!("{s:?}").contains("s.bootstrap"));
    }

    #[test]
    fn bad_values_are_refused_naming_the_flag() {
        for (flag, value) in [("timeout-seconds", "0"), ("timeout-seconds", "301")] {
            let err = parse(&[(flag, value)]).expect_err(flag).to_string();
            assert!(err.contains(&format!("--{flag}")), "{err}");
        }
        let err = Settings::new(
            parse(&[("results-configmap", "only-a-name")]).expect("parse"),
            None,
        )
        .expect_err("malformed")
        .to_string();
        assert!(err.contains("PHANTOM_RESULTS_CONFIGMAP"), "{err}");
    }
}
