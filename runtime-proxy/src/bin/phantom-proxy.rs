//! `phantom-proxy`: the per-pod sidecar. Configured by admission through `PHANTOM_*` variables
//! (see `docs/architecture.md`, "The injected pod"); every flag has one.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use phantom_crds::{BindingPlan, KeyReleasePlan};
use phantom_openbao::tls::TlsArgs;
use phantom_policies::KeyReleaseSet;
use phantom_process::LogFormat;
use phantom_runtime_proxy::Error;
use phantom_runtime_proxy::metrics::{ProxyMetrics, serve_status};
use phantom_runtime_proxy::proxy::{ProxyConfig, refresh_loop, start};
use phantom_runtime_proxy::socket::{SocketState, serve};

/// Phantom's sidecar: fetches the pod's secrets from OpenBao with the pod's own ServiceAccount
/// token and delivers them as files on the memory volume and over a Unix socket.
#[derive(Parser, Debug)]
#[command(name = "phantom-proxy", version)]
struct Args {
    /// OpenBao address (`https://openbao.example:8200`).
    #[arg(
        long,
        env = "PHANTOM_OPENBAO_ADDR",
        required_unless_present = "dev_file_provider"
    )]
    openbao_addr: Option<String>,
    #[command(flatten)]
    tls: TlsArgs,
    /// The projected ServiceAccount token (audience of the OpenBao role).
    #[arg(
        long,
        env = "PHANTOM_TOKEN_PATH",
        default_value = "/var/run/secrets/phantom.dev/serviceaccount/token"
    )]
    token_path: PathBuf,
    /// The memory-backed volume for secret files.
    #[arg(long, env = "PHANTOM_SECRETS_DIR", default_value = "/phantom/secrets")]
    secrets_dir: PathBuf,
    /// The Unix socket serving the socket API.
    #[arg(
        long,
        env = "PHANTOM_SOCKET",
        default_value = "/phantom/secrets/.phantom/proxy.sock"
    )]
    socket: PathBuf,
    /// JSON list of the SecretBindings to deliver (written by admission).
    #[arg(long, env = "PHANTOM_PLAN")]
    plan: String,
    /// Comma-separated containers wrapped by phantom-exec.
    #[arg(long, env = "PHANTOM_WRAPPED_CONTAINERS", default_value = "")]
    wrapped_containers: String,
    /// Seconds the last good values are served while OpenBao is unreachable before reporting degraded.
    #[arg(long, env = "PHANTOM_GRACE_SECONDS", default_value_t = 900)]
    grace_seconds: u64,
    /// Overrides the bindings' refresh interval, in seconds.
    #[arg(long, env = "PHANTOM_REFRESH_SECONDS")]
    refresh_seconds: Option<u64>,
    /// The pod's namespace (the SecretBindings' namespace, as key-release conditions see them).
    #[arg(long, env = "PHANTOM_POD_NAMESPACE", default_value = "")]
    pod_namespace: String,
    /// The pod's name (fills `pod.metadata.name` for key-release conditions).
    #[arg(long, env = "PHANTOM_POD_NAME")]
    pod_name: Option<String>,
    /// JSON key-release conditions to check before releasing any value (written by admission).
    #[arg(long, env = "PHANTOM_KEY_RELEASE")]
    key_release: Option<String>,
    /// DEVELOPMENT ONLY, NOT SECURE: read secrets from `<dir>/<mount>/<path>.json` instead of OpenBao.
    #[arg(long, env = "PHANTOM_DEV_FILE_PROVIDER")]
    dev_file_provider: Option<PathBuf>,
    /// Plain-HTTP address for /metrics, /healthz and /readyz (empty: off). Nothing secret is served there.
    #[arg(long, env = "PHANTOM_STATUS_ADDR", default_value = "")]
    status_addr: String,
    /// Revoke the OpenBao tokens, and with them the leases of dynamic secrets, on SIGTERM. Turn off
    /// when applications keep using dynamic credentials while they drain after the sidecar stops.
    #[arg(long, env = "PHANTOM_REVOKE_ON_SHUTDOWN", default_value_t = true, action = clap::ArgAction::Set)]
    revoke_on_shutdown: bool,
    /// Fetch once, write the files and exit (init-only mode).
    #[arg(long)]
    once: bool,
    /// Log format.
    #[arg(long, env = "PHANTOM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// The uid this process runs as (the application's, by admission's design): the only peer the
/// socket serves.
fn own_uid() -> Option<u32> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    phantom_process::init_logging(args.log_format, "info");
    let hardening = phantom_runtime_proxy::harden::harden_process();
    match &hardening.memory_locked {
        Ok(()) => tracing::info!(
            dumpable_off = hardening.dumpable_off,
            "process hardened; memory locked"
        ),
        Err(why) => {
            tracing::warn!(dumpable_off = hardening.dumpable_off, reason = %why, "process hardened; memory not locked")
        }
    }
    let plan: Vec<BindingPlan> = serde_json::from_str(&args.plan)
        .context("PHANTOM_PLAN is not the plan admission writes")?;
    let key_release = match &args.key_release {
        Some(json) => {
            let plan: KeyReleasePlan = serde_json::from_str(json)
                .context("PHANTOM_KEY_RELEASE is not the key-release plan admission writes")?;
            let set = KeyReleaseSet::compile(&plan, args.pod_name.as_deref())
                .map_err(|e| Error::KeyReleasePlan(e.to_string()))?;
            tracing::info!(policies = ?set.policy_names(), "key-release conditions in force");
            Some(set)
        }
        None => None,
    };
    let metrics = Arc::new(ProxyMetrics::default());
    metrics
        .memory_locked
        .set(i64::from(hardening.memory_locked.is_ok()));
    let tls = args.tls.settings()?;
    let config = Arc::new(ProxyConfig {
        openbao_addr: args.openbao_addr.unwrap_or_default(),
        tls,
        token_path: args.token_path,
        secrets_dir: args.secrets_dir,
        socket_path: args.socket,
        plan,
        wrapped_containers: args
            .wrapped_containers
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        grace: Duration::from_secs(args.grace_seconds),
        refresh_override: args.refresh_seconds.map(Duration::from_secs),
        namespace: args.pod_namespace,
        key_release,
        metrics: metrics.clone(),
        file_root: args.dev_file_provider,
        revoke_on_shutdown: args.revoke_on_shutdown,
    });
    let state = SocketState::new(own_uid());
    let _status = match args.status_addr.trim() {
        "" => None,
        addr => {
            let addr = addr
                .parse()
                .with_context(|| format!("PHANTOM_STATUS_ADDR {addr:?} is not host:port"))?;
            Some(serve_status(addr, metrics.clone(), state.clone())?)
        }
    };
    // Fails with the address and the cause when OpenBao is unreachable: the pod stays in Init.
    let (provider, contents) = start(&config, &state).await?;
    tracing::info!(secrets = contents.secrets.len(), "secrets delivered");
    if args.once {
        return Ok(());
    }
    let server = serve(state.clone(), &config.socket_path)?;
    // The kubelet stops the pod with SIGTERM: revoke the tokens (and the leases of dynamic
    // secrets) before exiting. In init-only mode (above) nothing is revoked: the application
    // still needs what was written.
    // Installed only now: until the first delivery, SIGTERM keeps its default action and ends
    // a sidecar that is still waiting for OpenBao at once.
    let shutdown = phantom_process::shutdown_signal()?;
    let shutdown = async move {
        shutdown.recv().await;
    };
    tokio::select! {
        () = refresh_loop(config.clone(), state, provider, contents, shutdown) => {}
        _ = server => anyhow::bail!("the socket server stopped"),
    }
    Ok(())
}
