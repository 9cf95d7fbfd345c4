//! `phantom-broker`: the relying party for attested key release, run next to OpenBao.
//!
//! The sidecar asks for a challenge, collects evidence binding it, and asks for a release with
//! the evidence and the pod's ServiceAccount token ([`phantom_attestation::protocol`]).
//! [`verdict::decide`] is the whole decision as a pure function of what the broker checked: the
//! challenge redeemed, the token reviewed ([`phantom_identity::review`]), the evidence verified against the
//! operator's collateral and bound to this release, the AttestationRequirement's fields and
//! conditions and the policies' key-release conditions. Only an `Ok` lets [`release`] read the
//! secrets with the broker's own OpenBao identity ([`secrets`]) and seal them to the key the
//! evidence binds. [`server`] serves it over HTTPS; [`app`] wires it up.

pub mod app;
pub mod args;
pub mod challenges;
pub mod metrics;
pub mod release;
pub mod secrets;
pub mod server;
pub mod verdict;

/// Errors of the broker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    /// OpenBao refused or failed.
    #[error(transparent)]
    OpenBao(#[from] phantom_openbao::Error),
    /// The binding's OpenBao namespace is not the broker's.
    #[error(
        "SecretBinding {binding} reads in OpenBao namespace {binding_namespace:?} but the broker logs in to {broker_namespace:?}; run a broker for that namespace or move the gated secrets"
    )]
    OpenBaoNamespace {
        binding: String,
        binding_namespace: Option<String>,
        broker_namespace: Option<String>,
    },
    /// Dynamic secrets need leases the broker does not keep per pod.
    #[error(
        "SecretBinding {binding}: secret {item} is a dynamic secret; the broker releases KV v2 secrets only (deliver dynamic credentials without attestation, or store them in KV)"
    )]
    DynamicGated { binding: String, item: String },
    /// The serving certificate or key cannot be loaded.
    #[error("loading the broker's TLS {what} {path}: {reason}; check --tls-cert and --tls-key")]
    Tls {
        what: &'static str,
        path: String,
        reason: String,
    },
    /// A listener could not be bound.
    #[error("binding {addr}: {source}; choose another address or port")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The status port could not start.
    #[error(transparent)]
    Process(#[from] phantom_process::Error),
    /// The policy engine could not start.
    #[error(transparent)]
    Policies(#[from] phantom_policies::Error),
    /// The pinned vendor roots could not be loaded.
    #[error(transparent)]
    Attestation(#[from] phantom_attestation::Error),
    /// The collateral directory cannot be read.
    #[error("reading the collateral bundle {path}: {source}; check --collateral-dir")]
    Collateral {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A flag's value is not usable.
    #[error("--{flag}: {reason}")]
    Flag { flag: &'static str, reason: String },
}

/// Now, unix seconds (0 if the clock is before the epoch: every certificate is then not yet
/// valid, so a broken clock refuses, never releases).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `seconds` as the evidence verifiers take time.
pub(crate) fn verifier_time(seconds: u64) -> i64 {
    i64::try_from(seconds).unwrap_or(i64::MAX)
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
