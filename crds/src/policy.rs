//! `PhantomPolicy`: written by the platform team; decides which pods get secrets injected, how,
//! under which conditions keys are released, and what the eBPF monitor watches.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{CelRule, CommonStatus, LocalObjectReference, MatchCondition};

/// Cluster-wide rules for secret injection and key release.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "phantom.dev",
    version = "v1alpha1",
    kind = "PhantomPolicy",
    plural = "phantompolicies",
    shortname = "pp",
    category = "phantom",
    status = "PhantomPolicyStatus",
    doc = "Cluster-wide rules that decide which pods get secrets from OpenBao, how they are delivered, and under which conditions keys are released.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.injection.mode"),
    printcolumn(
        name = "Enforcement",
        type_ = "string",
        json_path = ".spec.enforcement"
    ),
    printcolumn(
        name = "Canary",
        type_ = "integer",
        json_path = ".spec.injection.canary.percent"
    ),
    printcolumn(
        name = "Digest",
        type_ = "string",
        json_path = ".status.compiledDigest",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PhantomPolicySpec {
    /// Which pods the policy applies to. An empty match selects every pod in every namespace
    /// that is not excluded by the webhook's own namespace selector.
    #[serde(default, rename = "match")]
    pub match_: PolicyMatch,
    /// How matched pods are injected.
    #[serde(default)]
    pub injection: Injection,
    /// Validations and WASM plugins that must pass before a pod is injected.
    #[serde(default)]
    pub rules: Rules,
    /// Conditions checked by the sidecar before any secret value is released to the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_release: Option<KeyRelease>,
    /// eBPF memory-access monitoring for matched pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<Monitoring>,
    /// `enforce` acts on the decision; `monitor` only records what would have happened.
    #[serde(default)]
    pub enforcement: Enforcement,
}

/// Selection of pods, like a ValidatingAdmissionPolicy's `matchConstraints` plus `matchConditions`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyMatch {
    /// Namespaces whose labels match; absent means all namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Pods whose labels match; absent means all pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_selector: Option<LabelSelector>,
    /// CEL conditions over `object`, `oldObject`, `namespaceObject` and `request`; all must be true.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub match_conditions: Vec<MatchCondition>,
}

/// How the secrets reach the pod.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum InjectionMode {
    /// `phantom-proxy` as a regular container beside the application.
    #[default]
    Sidecar,
    /// `phantom-proxy` as a native sidecar (init container with `restartPolicy: Always`, Kubernetes ≥ 1.29).
    NativeSidecar,
    /// Secrets fetched once by an init container; no refresh, no socket.
    InitOnly,
    /// No per-pod proxy: the node's Phantom agent serves the pod over a Unix socket.
    Daemonset,
}

/// Injection settings.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Injection {
    /// Delivery topology; defaults to `sidecar`.
    #[serde(default)]
    pub mode: InjectionMode,
    /// Roll the policy out to a deterministic share of workloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
    /// Names of the containers whose command is wrapped by `phantom-exec`; absent means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<Vec<String>>,
    /// Resources of the injected `phantom-proxy` container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar_resources: Option<ResourceRequirements>,
    /// Size limit of the memory-backed volume holding secret files and the socket, e.g. `1Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|k|M|G)?$"))]
    pub tmpfs_size_limit: Option<String>,
}

/// Deterministic canary: the same key always gets the same answer.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Canary {
    /// Share of keys that are injected, 0 to 100.
    #[schemars(range(min = 0, max = 100))]
    pub percent: u8,
    /// CEL expression producing the canary key (a string); defaults to the pod's controlling owner
    /// (for a Deployment's pods, its ReplicaSet name without the hash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Admission rules.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rules {
    /// CEL validations; a `false` result denies injection with the rule's message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub validations: Vec<CelRule>,
    /// WebAssembly plugins evaluated after the CEL validations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub plugins: Vec<PluginRef>,
}

/// A WebAssembly policy plugin, identified by its content digest.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginRef {
    /// Name of the plugin within the policy.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Where the module's bytes come from.
    pub module: ModuleSource,
    /// Lower-case hex sha256 of the module; a module with another digest is refused.
    #[schemars(regex(pattern = r"^[a-f0-9]{64}$"))]
    pub sha256: String,
    /// Free-form settings handed to the plugin as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "preserve_unknown_object")]
    pub settings: Option<serde_json::Value>,
    /// Wall-clock budget of one evaluation in milliseconds.
    #[serde(default = "default_plugin_timeout_ms")]
    #[schemars(range(min = 1, max = 10000))]
    pub timeout_ms: u32,
    /// Linear memory limit of one instance in MiB.
    #[serde(default = "default_plugin_memory_mib", rename = "memoryLimitMiB")]
    #[schemars(range(min = 1, max = 1024))]
    pub memory_limit_mib: u32,
}

fn default_plugin_timeout_ms() -> u32 {
    100
}

fn default_plugin_memory_mib() -> u32 {
    16
}

/// Location of a WASM module.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModuleSource {
    /// A ConfigMap key holding the module in `binaryData`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapKeyRef>,
    /// A file path on the evaluating host (tests and `phantomctl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// A key of a ConfigMap in a given namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct ConfigMapKeyRef {
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Conditions on the release of secret values, evaluated by the sidecar.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyRelease {
    /// CEL conditions over `pod`, `binding` and `attestation` (verified claims); all must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub conditions: Vec<CelRule>,
    /// An AttestationRequirement the pod's TEE evidence must satisfy before release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation_requirement_ref: Option<LocalObjectReference>,
}

/// eBPF detections the node monitor can apply.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Detection {
    /// `ptrace()` attaching to a protected process.
    Ptrace,
    /// Opening `/proc/<pid>/mem` (or `/proc/<pid>/maps`, the layout a read needs) of a
    /// protected process.
    ProcMem,
    /// Opening `/proc/<pid>/environ` of a protected process (where environment-variable
    /// secrets live).
    ProcEnviron,
    /// `process_vm_readv()` or `process_vm_writev()` against a protected process.
    ProcessVmReadv,
}

impl Detection {
    /// Every detection (what an absent `detections` list means).
    pub const ALL: [Detection; 4] = [
        Detection::Ptrace,
        Detection::ProcMem,
        Detection::ProcEnviron,
        Detection::ProcessVmReadv,
    ];
}

/// What the node guard does about a detected access.
#[derive(
    Deserialize,
    Serialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum MonitoringAction {
    /// Allow the access and report it.
    #[default]
    Alert,
    /// Refuse the access where the kernel runs BPF LSM programs, else kill the accessing
    /// process before the syscall returns; and report it.
    Block,
}

/// eBPF monitoring scope of matched pods.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Monitoring {
    /// Whether matched pods are protected by the eBPF monitor.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Which detections apply; absent means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detections: Option<Vec<Detection>>,
    /// What a detection does (`alert` unless set). Where several policies protect a pod, `block`
    /// wins.
    #[serde(default)]
    pub action: MonitoringAction,
    /// Extra labels attached to alerts raised for matched pods (for routing in the SIEM).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub alert_labels: BTreeMap<String, String>,
}

fn default_true() -> bool {
    true
}

/// What a policy's decision does.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Enforcement {
    /// Act on the decision.
    #[default]
    Enforce,
    /// Record what would have happened; change nothing.
    Monitor,
}

/// Status of a PhantomPolicy, written by the controller.
pub type PhantomPolicyStatus = CommonStatus;

fn preserve_unknown_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}
