//! Phantom's runtime side: what runs inside the pod. `phantom-proxy` (the sidecar: providers,
//! key-release checks, TLS with pinning, renewal, files and the socket API, metrics) and
//! `phantom-exec` (the wrapper that sets a container's variables and `exec`s its command) are
//! built from these modules. OpenBao itself is reached through `phantom-openbao`, whose
//! [`SecretValue`] (zeroized on drop, never printed) carries every value. See
//! `docs/architecture.md`, "The runtime".

#[cfg(feature = "agent")]
pub mod agent;
pub mod args;
pub mod attested;
pub mod exec;
pub mod files;
pub mod harden;
pub mod metrics;
pub mod provider;
pub mod proxy;
pub mod socket;

pub use phantom_openbao::SecretValue;

/// Errors of the runtime proxy. None of them ever carries a secret value.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Talking to OpenBao failed: unreachable, TLS, a refused login or read, an odd answer, an
    /// unreadable ServiceAccount token.
    #[error(transparent)]
    OpenBao(#[from] phantom_openbao::Error),
    /// The flags or the plans admission wrote cannot be used; the message names which.
    #[error("{0}")]
    Config(String),
    /// Delivery to the application failed (`phantom-exec` could not get its variables, a file
    /// could not be written); the message names the path or socket and what to check.
    #[error("{0}")]
    Delivery(String),
    /// A key-release condition refused a binding's values: nothing of it was read or released.
    #[error(
        "SecretBinding {binding}: {refusal}; the values stay in OpenBao. Fix the pod or binding so the condition holds, or change the PhantomPolicy"
    )]
    KeyRelease {
        binding: String,
        refusal: phantom_policies::KeyReleaseRefusal,
    },
    /// The key-release conditions admission handed over do not compile in this sidecar.
    #[error(
        "the key-release conditions in PHANTOM_KEY_RELEASE do not compile here ({0}); nothing is released. Is phantom-proxy older than phantom-admission?"
    )]
    KeyReleasePlan(String),
    /// The pod's TEE evidence could not be collected.
    #[error(
        "SecretBinding {binding} needs attested key release but collecting TEE evidence failed: {cause}; does the pod run in a TEE (a Kata/CoCo pod with its attestation-agent, or configfs-tsm at --tsm-root; --evidence-source picks)?"
    )]
    Evidence { binding: String, cause: String },
    /// The attestation broker could not be asked (unreachable, TLS, an odd answer).
    #[error("asking the attestation broker at {addr} for SecretBinding {binding} failed: {cause}")]
    Broker {
        addr: String,
        binding: String,
        cause: String,
    },
    /// The attestation broker refused the release: nothing was released.
    #[error(
        "the attestation broker refused SecretBinding {binding} ({kind}): {message}; nothing was released"
    )]
    BrokerRefused {
        binding: String,
        kind: String,
        message: String,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
