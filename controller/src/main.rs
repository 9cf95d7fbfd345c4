//! `phantom-controller`: compiles Phantom's policies into status, owns the webhook
//! configurations and their certificate, and opens a circuit breaker when admission is down.

use anyhow::Context as _;
use clap::Parser;
use phantom_controller::app::launch;
use phantom_controller::args::Args;
use phantom_controller::config::Settings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    phantom_process::init_logging(args.log_format, "info");
    let shutdown = phantom_process::shutdown_signal()?;
    let settings = Settings::try_from(args)?;
    let client = kube::Client::try_default().await.context(
        "no Kubernetes configuration: run in a pod with a ServiceAccount, or set KUBECONFIG",
    )?;
    let running = launch(client, settings).await?;
    shutdown.recv().await;
    tracing::info!("shutting down: releasing the lease");
    running.shutdown().await;
    Ok(())
}
