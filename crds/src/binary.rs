//! What every Phantom binary does alike (feature `binary`): it logs to stderr, filtered by
//! `PHANTOM_LOG` (tracing's `EnvFilter` syntax), as text or one JSON object per line
//! (`--log-format`, `PHANTOM_LOG_FORMAT`), and it shuts down on SIGTERM or Ctrl-C. Part of the
//! components' common contract, like the labels in [`crate::wellknown`], so operators run all of
//! them the same way.

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    // Plain comments, not doc comments: clap would print them and switch every binary's
    // `--help` to its long layout.
    // Human-readable lines.
    #[default]
    Text,
    // One JSON object per line (for log collectors).
    Json,
}

/// Installs the global subscriber; `default_filter` applies when `PHANTOM_LOG` is unset or
/// invalid.
pub fn init_logging(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PHANTOM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Resolves on SIGTERM (the kubelet stopping the pod) or Ctrl-C.
pub async fn terminated() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
