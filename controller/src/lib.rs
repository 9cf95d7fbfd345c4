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

mod error;

pub mod app;
pub mod breaker;
pub mod certs;
pub mod config;
pub mod gaps;
pub mod leader;
pub mod manager;
pub mod metrics;
pub mod reconcile;
pub mod status;
pub mod webhooks;

pub use error::{Error, Result};
