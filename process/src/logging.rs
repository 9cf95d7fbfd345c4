//! Log output: stderr, filtered by `PHANTOM_LOG`, text or JSON lines.

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

/// Installs the global subscriber; `default_filter` applies when `PHANTOM_LOG` is unset. An
/// unparsable `PHANTOM_LOG` falls back to `default_filter` and says so on the first line, so a
/// typo never silences a binary without a word.
pub fn init_logging(format: LogFormat, default_filter: &str) {
    let (filter, rejected) = match std::env::var("PHANTOM_LOG") {
        Ok(text) => match tracing_subscriber::EnvFilter::try_new(&text) {
            Ok(filter) => (filter, None),
            Err(e) => (
                tracing_subscriber::EnvFilter::new(default_filter),
                Some((text, e.to_string())),
            ),
        },
        Err(_) => (tracing_subscriber::EnvFilter::new(default_filter), None),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    if let Some((text, why)) = rejected {
        tracing::warn!(
            phantom_log = %text,
            error = %why,
            default = default_filter,
            "PHANTOM_LOG is not a valid filter; logging with the default"
        );
    }
}
