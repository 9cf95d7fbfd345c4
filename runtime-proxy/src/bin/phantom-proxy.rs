//! `phantom-proxy`: the per-pod sidecar. Configured by admission through `PHANTOM_*` variables
//! (see `docs/architecture.md`, "The injected pod"); every flag has one.

use std::sync::Arc;

use clap::Parser;
use phantom_policies::KeyReleaseSet;
use phantom_runtime_proxy::Error;
use phantom_runtime_proxy::args::{Args, Settings};
use phantom_runtime_proxy::metrics::{ProxyMetrics, serve_status};
use phantom_runtime_proxy::proxy::{ProxyConfig, refresh_loop, start};
use phantom_runtime_proxy::socket::{SocketState, serve, serve_containers};

/// The uid this process runs as (the application's, by admission's design): the only peer the
/// socket serves.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    phantom_process::init_logging(args.log_format, "info");
    let settings = Settings::try_from(args)?;
    let hardening = phantom_runtime_proxy::harden::harden_process();
    match &hardening.memory_locked {
        Ok(()) => tracing::info!(
            dumpable_off = hardening.dumpable_off,
            core_dumps_off = hardening.core_dumps_off,
            "process hardened; memory locked"
        ),
        Err(why) => {
            tracing::warn!(dumpable_off = hardening.dumpable_off, core_dumps_off = hardening.core_dumps_off, reason = %why, "process hardened; memory not locked")
        }
    }
    let key_release = match &settings.key_release {
        Some(plan) => {
            let set = KeyReleaseSet::compile(plan, settings.pod_name.as_deref())
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
    let broker = settings
        .broker
        .clone()
        .map(phantom_runtime_proxy::attested::BrokerClient::new)
        .transpose()?;
    if let Some(broker) = &settings.broker {
        tracing::info!(addr = %broker.addr, "attested key release through the broker");
    }
    let once = settings.once;
    let status_addr = settings.status_addr;
    let config = Arc::new(ProxyConfig {
        openbao_addr: settings.openbao_addr,
        tls: settings.tls,
        token_path: settings.token_path,
        secrets_dir: settings.secrets_dir,
        socket_path: settings.socket,
        sockets_dir: settings.sockets_dir,
        plan: settings.plan,
        wrapped_containers: settings.wrapped_containers,
        grace: settings.grace,
        refresh_override: settings.refresh_override,
        namespace: settings.pod_namespace,
        key_release,
        broker,
        metrics: metrics.clone(),
        file_root: settings.dev_file_provider,
        revoke_on_shutdown: settings.revoke_on_shutdown,
    });
    // The effective uid cannot be unknown (no parsing that could fail and leave every peer
    // allowed): the socket serves this uid only.
    let state = SocketState::new(Some(nix::unistd::geteuid().as_raw()));
    let _status = match status_addr {
        Some(addr) => Some(serve_status(addr, metrics.clone(), state.clone())?),
        None => None,
    };
    // Fails with the address and the cause when OpenBao is unreachable: the pod stays in Init.
    let (provider, contents) = start(&config, &state).await?;
    tracing::info!(secrets = contents.secrets.len(), "secrets delivered");
    if once {
        return Ok(());
    }
    let server = match &config.sockets_dir {
        Some(dir) => serve_containers(state.clone(), dir, &config.wrapped_containers)?,
        None => serve(state.clone(), &config.socket_path)?,
    };
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
