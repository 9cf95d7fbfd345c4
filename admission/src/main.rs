//! `phantom-admission`: the mutating/validating webhook server.

use anyhow::Context as _;
use clap::Parser;
use phantom_admission::app::{Settings, launch};
use phantom_admission::args::Args;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    phantom_process::init_logging(args.log_format, "info");
    let shutdown = phantom_process::shutdown_signal()?;
    let settings = Settings::try_from(args)?;

    let client = kube::Client::try_default().await.context(
        "no Kubernetes configuration: run in a pod with a ServiceAccount, or set KUBECONFIG",
    )?;
    let launched = launch(client, settings).await?;
    shutdown.recv().await;
    tracing::info!("shutting down: finishing in-flight reviews");
    launched.shutdown().await;
    Ok(())
}
