//! Phantom's custom resources, group `phantom.dev`, version `v1alpha1`.
//!
//! These types are the single source of truth for the API: the CRD YAML under `crds/yaml/` is
//! generated from them by `crdgen` (a test fails when the checked-in YAML drifts), and every other
//! crate (policy engine, admission, controller, sidecar) reads and writes these types rather than
//! its own copies.

// kube-derive takes one `printcolumn(...)` per column, which clippy mistakes for duplicates.
#![allow(clippy::duplicated_attributes)]

mod attestation;
mod binding;
mod common;
mod plan;
mod policy;
mod render;
pub mod wellknown;

pub use attestation::*;
pub use binding::*;
pub use common::*;
pub use plan::{
    BindingPlan, KEY_RELEASE_ENV, KeyReleasePlan, KeyReleasePolicyPlan, PLAN_ENV, RequirementPlan,
};
pub use policy::*;
pub use render::{CrdFile, all_crds, render_crd_yaml};

/// API group of every Phantom resource.
pub const GROUP: &str = "phantom.dev";
/// API version of every Phantom resource.
pub const VERSION: &str = "v1alpha1";

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A CRD could not be rendered as YAML (a bug in a type's schema, not a user error).
    #[error("rendering the CustomResourceDefinition {crd} as YAML failed: {source}")]
    Render {
        crd: String,
        #[source]
        source: serde_yaml::Error,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
