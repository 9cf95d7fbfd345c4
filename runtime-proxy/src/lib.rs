//! Phantom's runtime side: what runs inside the pod. `phantom-proxy` (the sidecar: providers,
//! key-release checks, TLS with pinning, renewal, files and the socket API, metrics) and
//! `phantom-exec` (the wrapper that sets a container's variables and `exec`s its command) are
//! built from these modules; [`SecretValue`] (zeroized on drop, never printed) carries every
//! value. See `docs/architecture.md`, "The runtime".

pub mod coalesce;
pub mod exec;
pub mod files;
pub mod harden;
pub mod metrics;
pub mod openbao;
pub mod provider;
pub mod proxy;
pub mod secret;
pub mod socket;
pub mod tls;

pub use secret::SecretValue;

/// Errors of the runtime proxy. None of them ever carries a secret value: OpenBao's answers are
/// reduced to their `errors` array before they reach a message.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// OpenBao could not be reached.
    #[error(
        "OpenBao at {addr} is unreachable ({cause}); check the address, DNS and network policy, and that OpenBao is unsealed"
    )]
    Unreachable { addr: String, cause: String },
    /// The TLS connection to OpenBao failed: certificate not trusted, pin mismatch, client
    /// certificate refused, or TLS settings that cannot be loaded.
    #[error(
        "TLS to OpenBao at {addr} failed: {cause}; check PHANTOM_OPENBAO_CA_FILE, PHANTOM_OPENBAO_SPKI_SHA256 and the client certificate (PHANTOM_OPENBAO_CLIENT_CERT/KEY)"
    )]
    Tls { addr: String, cause: String },
    /// OpenBao refused a login.
    #[error(
        "OpenBao at {addr} refused the Kubernetes login with role {role} at auth/{mount} ({status}: {errors}); check that the role binds this pod's namespace and ServiceAccount and accepts the token's audience"
    )]
    LoginRefused {
        addr: String,
        role: String,
        mount: String,
        status: u16,
        errors: String,
    },
    /// OpenBao refused or failed a read.
    #[error("OpenBao at {addr} answered {status} reading {path}: {errors}; {hint}")]
    Read {
        addr: String,
        path: String,
        status: u16,
        errors: String,
        hint: &'static str,
    },
    /// OpenBao's answer did not have the expected shape.
    #[error("OpenBao at {addr} answered {path} with an unexpected body ({what})")]
    Malformed {
        addr: String,
        path: String,
        what: String,
    },
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
    /// The pod's ServiceAccount token could not be read.
    #[error(
        "reading the ServiceAccount token {path}: {cause}; is the projected token volume mounted?"
    )]
    Token { path: String, cause: String },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
