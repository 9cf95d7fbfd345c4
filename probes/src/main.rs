//! `phantom-preflight`: proves, before anything is injected, that this cluster reaches OpenBao
//! the way the sidecars will — DNS, TCP, TLS against the pin, health, the role, a real login —
//! writes the results into a ConfigMap and exits non-zero with what to fix.

use std::process::ExitCode;

use clap::Parser;
use phantom_probes::args::{Args, Settings};
use phantom_probes::preflight;

async fn publish(
    (namespace, name): &(String, String),
    report: &preflight::Report,
) -> anyhow::Result<()> {
    let client = kube::Client::try_default().await.map_err(|e| {
        anyhow::anyhow!("no Kubernetes configuration to write {namespace}/{name} ({e})")
    })?;
    preflight::publish(&client, namespace, name, report).await?;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    phantom_process::init_logging(args.log_format, "warn");
    let settings = match Settings::new(args, std::env::var("PHANTOM_BOOTSTRAP_TOKEN").ok()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("phantom-preflight: {e}");
            return ExitCode::from(2);
        }
    };
    let report = preflight::run(&settings.target).await;
    if settings.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", report.render());
    }
    if let Some(destination) = &settings.results_configmap
        && let Err(e) = publish(destination, &report).await
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
