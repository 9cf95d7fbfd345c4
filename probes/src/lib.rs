//! Phantom's probes. Today: the pre-flight check ([`preflight`]), run as a Job by the chart before
//! anything is injected. It checks, in the order a sidecar depends on them, DNS, TCP, the TLS
//! handshake against the pinned key or CA, OpenBao's health (initialized, unsealed, version), the
//! Kubernetes auth role (with the bootstrap token, which it then revokes) and a real login with
//! its own ServiceAccount token — through the sidecar's own OpenBao client and TLS verifier, so a
//! pass means the sidecars will connect the same way.
//!
//! The eBPF memory-access monitor will live here too.

pub mod args;
pub mod preflight;

/// Errors of the probes library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The OpenBao address cannot be used.
    #[error("the OpenBao address {addr:?} is not usable: {why}; expected https://host:port")]
    Address { addr: String, why: String },

    /// The flags cannot be used; the message names which.
    #[error("{0}")]
    Config(String),

    /// Writing the results to the API server failed.
    #[error("writing the results into ConfigMap {namespace}/{name}: {source}")]
    Publish {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
