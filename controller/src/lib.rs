//! Phantom's controller. One replica leads (a `coordination.k8s.io` Lease) and, while it leads:
//!
//! * compiles PhantomPolicies, SecretBindings and AttestationRequirements exactly as every
//!   admission replica does ([`phantom_policies::store::PolicyStore`]: an invalid edit never takes
//!   effect, the last good version stays in force) and writes what is in force into each object's
//!   status by server-side apply ([`status`], [`reconcile`]);
//! * owns the Mutating- and ValidatingWebhookConfiguration and restores them within seconds when
//!   they are deleted or altered ([`webhooks`], [`manager`]);
//! * generates the webhook CA and serving certificate, rotates them before expiry and hands the
//!   serving pair to admission through a Secret ([`certs`]);
//! * probes admission and opens a circuit breaker after consecutive failures, so that a dead
//!   webhook cannot hold the whole cluster Pending ([`breaker`]);
//! * finds pods admitted without Phantom while the breaker was open or the configuration missing
//!   ([`gaps`]).

//!
//! Without the default `server` feature only [`config`] and the gap-pod scan ([`gaps::scan`])
//! are built: what `phantomctl status` reads.

mod error;

pub mod config;
pub mod gaps;

#[cfg(feature = "server")]
pub mod app;
#[cfg(feature = "server")]
pub mod args;
#[cfg(feature = "server")]
pub mod breaker;
#[cfg(feature = "server")]
pub mod certs;
#[cfg(feature = "server")]
pub mod leader;
#[cfg(feature = "server")]
pub mod manager;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod reconcile;
#[cfg(feature = "server")]
pub mod status;
#[cfg(feature = "server")]
pub mod webhooks;

pub use error::{Error, Result};
