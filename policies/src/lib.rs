//! Phantom's policy engine. The controller, the admission server and the sidecar all compile and
//! evaluate policies through this crate and nothing else.
//!
//! * [`PolicySet::compile`] turns PhantomPolicy / SecretBinding / AttestationRequirement objects
//!   into an immutable set with a content digest, reporting every error with object, field and
//!   position.
//! * [`PolicySet::decide`] answers an admission question (pure: no Kubernetes client, no I/O).
//! * [`PolicySet::check_key_release`] is the sidecar's last gate before releasing a value.
//! * [`check_deliveries`] says whether the bindings that apply to one pod can be delivered together.
//! * [`DecisionPool`] runs decisions off an async runtime, bounded, refusing when saturated.

mod error;
pub mod expr;
pub mod wasm;

pub use error::{Error, Result};
mod canary;
#[cfg(feature = "cluster")]
pub mod cluster;
mod compile;
mod decide;
mod deliveries;
mod input;
mod keyrelease;
mod monitoring;
mod pool;
mod selector;
pub mod store;

pub use canary::{bucket as canary_bucket, default_key as default_canary_key};
pub use compile::{ModuleResolver, Modules, ObjectErrors, PolicySet, Sources};
pub use decide::{
    BindingRef, CanaryOutcome, Decision, Denial, Interrupted, MonitoringScope, PolicyOutcome,
};
pub use deliveries::{
    DeliveryConflict, Source as DeliverySource, check_deliveries, collisions_in_namespace,
    may_collide,
};
pub use input::{AdmissionInput, KeyReleaseInput, RequestInfo, UserInfo, key_release_pod_view};
pub use keyrelease::{KeyReleaseRefusal, KeyReleaseSet};
pub use monitoring::{MonitoringSet, MonitoringWarning, PodMonitoring};
pub use pool::DecisionPool;
pub use selector::{binding_selects, binding_selects_pod};
