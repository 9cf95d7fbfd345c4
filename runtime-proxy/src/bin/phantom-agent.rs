//! `phantom-agent`: the per-node agent of injection mode `daemonset` (see
//! `phantom_runtime_proxy::agent`).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::watcher;
use phantom_runtime_proxy::agent::Settings;
use phantom_runtime_proxy::agent::args::Args;
use phantom_runtime_proxy::agent::metrics::AgentMetrics;
use phantom_runtime_proxy::agent::{Agent, serve};

/// How often pods that left the node are forgotten (their sessions revoked with the last pod of
/// an identity).
const FORGET_EVERY: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    phantom_process::init_logging(args.log_format, "info");
    let settings = match Settings::try_from(args) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("phantom-agent: {e}");
            return ExitCode::from(2);
        }
    };
    match run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "phantom-agent failed");
            eprintln!("phantom-agent: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let hardening = phantom_runtime_proxy::harden::harden_process();
    if let Err(why) = &hardening.memory_locked {
        tracing::warn!(reason = %why, "memory not locked: secrets of this node's pods may be swapped out");
    }
    let shutdown = phantom_process::shutdown_signal()?;
    let kube = kube::Client::try_default()
        .await
        .context("connecting to the API server (in-cluster config or KUBECONFIG)")?;
    let metrics = Arc::new(AgentMetrics::default());
    let openbao = phantom_openbao::OpenBaoClient::with_tls(&settings.openbao_addr, &settings.tls)?
        .with_observer(metrics.clone());
    let synced = Arc::new(AtomicBool::new(false));
    let (pods, _pods_task) = phantom_policies::cluster::reflect_selected(
        Api::<Pod>::all(kube.clone()),
        watcher::Config::default().fields(&format!("spec.nodeName={}", settings.node_name)),
        Arc::new(tokio::sync::Notify::new()),
        synced.clone(),
    );
    let status_addr = settings.status_addr;
    let agent = Arc::new(Agent::new(settings, kube, pods, openbao, metrics.clone()));
    let _status = match status_addr {
        Some(addr) => {
            let synced = synced.clone();
            let metrics = metrics.clone();
            let status = phantom_process::status::serve_status(
                addr,
                Arc::new(move || metrics.encode()),
                Arc::new(move || {
                    if synced.load(Ordering::SeqCst) {
                        Ok("ok\n".to_owned())
                    } else {
                        Err("not ready: this node's pods not listed yet\n".to_owned())
                    }
                }),
            )
            .map_err(|e| anyhow::anyhow!("{e} (PHANTOM_STATUS_ADDR)"))?;
            tracing::info!(addr = %status.addr, "status port");
            Some(status)
        }
        None => None,
    };
    let server = serve::serve(agent.clone())?;
    let janitor = {
        let agent = agent.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(FORGET_EVERY).await;
                // Until the first list, every pod would look gone.
                if synced.load(Ordering::SeqCst) {
                    agent.forget_gone().await;
                }
            }
        })
    };
    tokio::select! {
        signal = shutdown.recv() => {
            // Sessions are not revoked: the pods keep running and a restarted agent logs in again.
            tracing::info!(signal = signal.name(), "stopping; running applications keep their variables");
        }
        _ = server => anyhow::bail!("the agent socket server stopped"),
        _ = janitor => anyhow::bail!("the janitor stopped"),
    }
    Ok(())
}
