//! What `decide` and `check_key_release` are asked about. Plain data: the admission server
//! builds it from an AdmissionReview, the sidecar from its pod and binding, `phantomctl` from files.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One admission question about a pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionInput {
    /// The pod as submitted.
    pub object: Value,
    /// The previous version on UPDATE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_object: Option<Value>,
    /// The pod's namespace object (its labels drive namespace selectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_object: Option<Value>,
    /// Who asks, and how.
    pub request: RequestInfo,
}

/// The parts of an AdmissionReview request that policies may read (`request` in CEL).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestInfo {
    /// CREATE, UPDATE, DELETE or CONNECT.
    pub operation: String,
    /// Namespace of the request.
    pub namespace: String,
    /// Name of the object, when known (pods of Deployments get theirs later).
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub user_info: UserInfo,
    #[serde(default)]
    pub dry_run: bool,
}

/// The requesting user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// What the sidecar knows before releasing a value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyReleaseInput {
    /// The pod the sidecar serves.
    pub pod: Value,
    /// The SecretBinding whose secrets are to be released.
    pub binding: Value,
    /// Verified attestation claims, when the pod presented evidence (`null` otherwise).
    #[serde(default)]
    pub attestation: Option<Value>,
}

/// The pod as key-release conditions see it: metadata (without managed fields) and the spec
/// without containers and volumes, which carry nothing a release condition should depend on and
/// would bloat the sidecar's environment.
pub fn key_release_pod_view(pod: &Value) -> Value {
    let mut view = serde_json::Map::new();
    if let Some(metadata) = pod.get("metadata").and_then(Value::as_object) {
        let mut metadata = metadata.clone();
        metadata.remove("managedFields");
        view.insert("metadata".into(), Value::Object(metadata));
    }
    if let Some(spec) = pod.get("spec").and_then(Value::as_object) {
        let mut spec = spec.clone();
        for heavy in [
            "containers",
            "initContainers",
            "ephemeralContainers",
            "volumes",
        ] {
            spec.remove(heavy);
        }
        view.insert("spec".into(), Value::Object(spec));
    }
    Value::Object(view)
}

pub(crate) fn labels(object: &Value) -> std::collections::BTreeMap<String, String> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}
