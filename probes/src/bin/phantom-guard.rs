//! `phantom-guard`: the node's memory-access guard (see `phantom_probes::guard::daemon`).

use std::process::ExitCode;

use clap::Parser;
use phantom_probes::guard::daemon::{self, args::Args, args::Settings};

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    phantom_process::init_logging(args.log_format, "info");
    let settings = match Settings::try_from(args) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("phantom-guard: {e}");
            return ExitCode::from(2);
        }
    };
    let shutdown = match phantom_process::shutdown_signal() {
        Ok(signal) => signal,
        Err(e) => {
            eprintln!("phantom-guard: {e}");
            return ExitCode::from(1);
        }
    };
    match daemon::run(settings, async move {
        let signal = shutdown.recv().await;
        tracing::info!(signal = signal.name(), "stopping");
    })
    .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "phantom-guard failed");
            eprintln!("phantom-guard: {e}");
            ExitCode::from(1)
        }
    }
}
