//! `phantom-broker`: the relying party for attested key release.

use anyhow::Context as _;
use clap::Parser;
use phantom_broker::app::launch;
use phantom_broker::args::{Args, Settings};

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
    let signal = shutdown.recv().await;
    tracing::info!(
        signal = signal.name(),
        "shutting down: finishing in-flight releases"
    );
    launched.shutdown().await;
    Ok(())
}
