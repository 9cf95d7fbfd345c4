//! `phantom-preflight`: proves, before anything is injected, that this cluster reaches OpenBao
//! the way the sidecars will — DNS, TCP, TLS against the pin, health, the role, a real login —
//! writes the results into a ConfigMap and exits non-zero with what to fix.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use phantom_openbao::SecretValue;
use phantom_openbao::tls::TlsArgs;
use phantom_probes::preflight::{self, Target};
use phantom_process::LogFormat;

/// Phantom's pre-flight check: DNS, TCP, TLS (pinned key or CA), OpenBao health, the Kubernetes
/// auth role and a login with this pod's own ServiceAccount token. Results go to stdout and into a
/// ConfigMap; the exit code is 1 when a check failed (the message says what to fix), 2 on bad
/// flags.
#[derive(Parser, Debug)]
#[command(name = "phantom-preflight", version)]
struct Args {
    /// OpenBao's address.
    #[arg(long, env = "PHANTOM_OPENBAO_ADDR")]
    openbao_addr: String,
    #[command(flatten)]
    tls: TlsArgs,
    /// OpenBao namespace of the auth mount.
    #[arg(long, env = "PHANTOM_OPENBAO_NAMESPACE")]
    openbao_namespace: Option<String>,
    /// Kubernetes auth mount.
    #[arg(long, env = "PHANTOM_AUTH_MOUNT", default_value = "kubernetes")]
    auth_mount: String,
    /// Role this Job logs in with (bound to its namespace and ServiceAccount).
    #[arg(long, env = "PHANTOM_ROLE", default_value = "phantom-preflight")]
    role: String,
    /// This pod's projected ServiceAccount token (audience openbao).
    #[arg(
        long,
        env = "PHANTOM_TOKEN_PATH",
        default_value = "/var/run/secrets/phantom.dev/serviceaccount/token"
    )]
    token_path: PathBuf,
    /// Keep the bootstrap token (PHANTOM_BOOTSTRAP_TOKEN, environment only) instead of revoking it after use.
    #[arg(long, env = "PHANTOM_KEEP_BOOTSTRAP_TOKEN")]
    keep_bootstrap_token: bool,
    /// Seconds each network step may take.
    #[arg(long, env = "PHANTOM_TIMEOUT_SECONDS", default_value_t = 5)]
    timeout_seconds: u64,
    /// ConfigMap (`namespace/name`) for the results; empty: do not write one.
    #[arg(long, env = "PHANTOM_RESULTS_CONFIGMAP", default_value = "")]
    results_configmap: String,
    /// Print the results as JSON instead of a table.
    #[arg(long, env = "PHANTOM_JSON")]
    json: bool,
    /// Log format (diagnostics on stderr; the results go to stdout).
    #[arg(long, env = "PHANTOM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

fn target(args: &Args) -> anyhow::Result<Target> {
    // The bootstrap token comes from the environment only: a flag would show in `ps`.
    let bootstrap_token = std::env::var("PHANTOM_BOOTSTRAP_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .map(|t| SecretValue::new(t.trim().to_owned()));
    Ok(Target {
        addr: args.openbao_addr.trim_end_matches('/').to_owned(),
        tls: args
            .tls
            .settings()
            .map_err(|e| anyhow::anyhow!("the OpenBao TLS flags: {e}"))?,
        namespace: args.openbao_namespace.clone(),
        auth_mount: args.auth_mount.clone(),
        role: args.role.clone(),
        token_path: args.token_path.clone(),
        bootstrap_token,
        revoke_bootstrap: !args.keep_bootstrap_token,
        timeout: Duration::from_secs(args.timeout_seconds.max(1)),
    })
}

async fn publish(destination: &str, report: &preflight::Report) -> anyhow::Result<()> {
    let Some((namespace, name)) = destination.split_once('/') else {
        anyhow::bail!("PHANTOM_RESULTS_CONFIGMAP must be namespace/name, got {destination:?}");
    };
    let client = kube::Client::try_default()
        .await
        .map_err(|e| anyhow::anyhow!("no Kubernetes configuration to write {destination} ({e})"))?;
    preflight::publish(&client, namespace, name, report).await?;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    phantom_process::init_logging(args.log_format, "warn");
    let target = match target(&args) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("phantom-preflight: {e:#}");
            return ExitCode::from(2);
        }
    };
    let report = preflight::run(&target).await;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", report.render());
    }
    if !args.results_configmap.is_empty()
        && let Err(e) = publish(&args.results_configmap, &report).await
    {
        eprintln!("phantom-preflight: {e:#}");
        return ExitCode::from(2);
    }
    match report.first_failure() {
        None => {
            println!("phantom-preflight: all checks passed");
            ExitCode::SUCCESS
        }
        Some(failure) => {
            eprintln!("phantom-preflight: {failure}");
            ExitCode::FAILURE
        }
    }
}
