//! Phantom's probes. Today: the pre-flight check ([`preflight`]), run as a Job by the chart before
//! anything is injected. It checks, in the order a sidecar depends on them, DNS, TCP, the TLS
//! handshake against the pinned key or CA, OpenBao's health (initialized, unsealed, version), the
//! Kubernetes auth role (with the bootstrap token, which it then revokes) and a real login with
//! its own ServiceAccount token — through the sidecar's own OpenBao client and TLS verifier, so a
//! pass means the sidecars will connect the same way.
//!
//! And the eBPF memory-access guard's core ([`guard`]).

pub mod args;
pub mod guard;
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

    /// The guard's eBPF object could not be loaded.
    #[error("loading the guard's eBPF object: {source}")]
    BpfLoad {
        #[source]
        source: aya::EbpfError,
    },

    /// A guard program could not be loaded or attached (the kernel's reason is the source).
    #[error("eBPF program {program}: {source}")]
    BpfProgram {
        program: String,
        #[source]
        source: aya::programs::ProgramError,
    },

    /// A guard map could not be read or written.
    #[error("eBPF map {map}: {source}")]
    BpfMap {
        map: String,
        #[source]
        source: aya::maps::MapError,
    },

    /// The embedded object lacks a program or map the guard needs (a build mismatch).
    #[error("the guard's eBPF object has no {what}; rebuild phantom-probes")]
    BpfMissing { what: String },

    /// A ring-buffer record does not decode.
    #[error("a guard event does not decode: {reason}")]
    GuardEvent { reason: String },

    /// A Kubernetes call the guard needs failed.
    #[error("{what}: {source}")]
    Kubernetes {
        what: String,
        #[source]
        source: kube::Error,
    },

    /// `/proc` or a cgroup file could not be read.
    #[error("reading {path}: {source}")]
    Procfs {
        path: String,
        #[source]
        source: std::io::Error,
    },

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
