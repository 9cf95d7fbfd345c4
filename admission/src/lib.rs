//! Phantom's admission webhook.
//!
//! * [`mutate::mutate`] turns a pod and a policy [`Decision`](phantom_policies::Decision) into a
//!   JSON patch: pure, no HTTP, no Kubernetes client.
//! * [`review::Admitter`] answers AdmissionReviews (`/mutate` for pods, `/validate` for Phantom's
//!   resources) from the current [`phantom_policies::store::PolicyStore`] snapshot, failing closed.
//! * [`watch`] keeps the store in step with the CRDs through kube-runtime reflectors; a version
//!   that does not compile never replaces the last good one.
//! * [`server`] serves it all over HTTPS (rustls, certificate reloaded from disk) with health and
//!   metrics on a separate plain-HTTP port.

pub mod app;
pub mod args;
pub mod budget;
pub mod cluster;
pub mod config;
pub mod metrics;
pub mod mutate;
pub mod pod_security;
pub mod reserved;
pub mod review;
pub mod seal;
pub mod server;
pub mod tls;
pub mod update;
pub mod validate;
pub mod watch;

/// Errors of the admission library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The serving certificate or key could not be loaded.
    #[error("TLS {what} {path}: {message}; check the file (PEM) and that it matches its pair")]
    Tls {
        what: &'static str,
        path: String,
        message: String,
        #[source]
        source: Option<Box<TlsSource>>,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}; pick a free address with --listen/--health-listen")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The plain-HTTP status port (`--health-listen`) could not be served.
    #[error(transparent)]
    Status(#[from] phantom_process::Error),
    /// The Kubernetes API could not be reached or refused a request.
    #[error("Kubernetes API: {context}: {source}")]
    Kube {
        context: String,
        #[source]
        source: kube::Error,
    },
    /// The policy engine could not start.
    #[error("policy engine: {0}")]
    Policies(#[from] phantom_policies::Error),
    /// The decision-seal key file could not be read.
    #[error(
        "reading the decision-seal key {path} (--decision-key): {source}; it is the decision.key entry of the serving certificate's Secret that phantom-controller writes (mount that Secret, or point --decision-key at the controller's --cert-dir)"
    )]
    SealKeyFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The decision-seal key is malformed, or no seal could be made.
    #[error(transparent)]
    Seal(#[from] phantom_seal::Error),
    /// The pod cannot be injected as it stands; the message says what to change.
    #[error("{0}")]
    Inject(String),
    /// Configuration is inconsistent.
    #[error("configuration: {0}")]
    Config(String),
}

/// Why a serving certificate or key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsSource {
    #[error(transparent)]
    Pem(rustls::pki_types::pem::Error),
    #[error(transparent)]
    Rustls(rustls::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
