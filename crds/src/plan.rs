//! What the sidecar must deliver, handed from admission to `phantom-proxy` in the proxy
//! container's `PHANTOM_PLAN` environment variable: the specs of the SecretBindings that apply to
//! the pod (names, paths and delivery only — the same metadata the SecretBindings hold, never a
//! value). Fixed at admission, like the rest of the pod spec: a changed binding reaches pods
//! started after the change.

use serde::{Deserialize, Serialize};

use crate::SecretBindingSpec;

/// Name of the proxy container's environment variable holding the plan as JSON.
pub const PLAN_ENV: &str = "PHANTOM_PLAN";

/// One SecretBinding that applies to the pod.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
pub struct BindingPlan {
    /// The SecretBinding's name (in the pod's namespace).
    pub name: String,
    pub spec: SecretBindingSpec,
}

/// Name of the proxy container's environment variable holding the [`KeyReleasePlan`] as JSON
/// (absent when no policy sets key-release conditions for the pod).
pub const KEY_RELEASE_ENV: &str = "PHANTOM_KEY_RELEASE";

/// The key-release conditions that apply to the pod, handed from admission to `phantom-proxy`,
/// which compiles and checks them before it releases any value. Conditions and requirement
/// specs only: what the PhantomPolicies and AttestationRequirements already hold.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KeyReleasePlan {
    /// Digest of the policy set admission decided with (for messages and audits).
    pub policy_digest: String,
    pub policies: Vec<KeyReleasePolicyPlan>,
    pub requirements: Vec<RequirementPlan>,
    /// What the conditions see as `pod`: the admitted pod's metadata and spec without
    /// containers and volumes (the sidecar fills in `metadata.name`, unknown for generated names
    /// at admission).
    pub pod: serde_json::Value,
}

/// One PhantomPolicy's `spec.keyRelease`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeyReleasePolicyPlan {
    pub name: String,
    pub key_release: crate::KeyRelease,
}

/// An AttestationRequirement a key-release policy refers to.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
pub struct RequirementPlan {
    pub name: String,
    pub spec: crate::AttestationRequirementSpec,
}
