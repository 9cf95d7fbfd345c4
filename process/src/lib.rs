//! What every Phantom binary does alike, so operators run all of them the same way: it logs to
//! stderr, filtered by `PHANTOM_LOG` (tracing's `EnvFilter` syntax), as text or one JSON object
//! per line ([`logging`]); it shuts down on SIGTERM or SIGINT and says which arrived
//! ([`signal`]); and it answers `/metrics`, `/healthz` and `/readyz` on a plain-HTTP status port
//! ([`status`]); the TLS binaries share one HTTPS accept loop (`tls_server`, feature
//! `tls-server`). Metric label values are enums declared with [`label_enum!`].
//!
//! This crate knows nothing about Phantom's resources or OpenBao: it may depend on no other
//! Phantom crate (docs/architecture.md, "Crates and their dependencies").

pub mod labels;
pub mod logging;
pub mod signal;
pub mod status;
#[cfg(feature = "tls-server")]
pub mod tls_server;

pub use logging::{LogFormat, init_logging};
pub use signal::{Shutdown, ShutdownSignal, shutdown_signal};
pub use status::{MetricsText, Readiness, StatusServer, serve_status};

/// Errors of process support.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A signal handler could not be installed: the binary would never notice it is asked to stop.
    #[error(
        "installing the {signal} handler failed: {source}; the process cannot shut down cleanly (is it running with signals blocked or under a restricted seccomp profile?)"
    )]
    Signal {
        signal: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The status port could not be bound.
    #[error("binding the status port {addr} failed: {source}; choose another address or port")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
