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
