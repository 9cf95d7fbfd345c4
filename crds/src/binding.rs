//! `SecretBinding`: written by application teams; which pods get which OpenBao secrets and how.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use kube::core::Duration;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::CommonStatus;

/// Binds OpenBao secrets to the pods of a namespace.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "phantom.dev",
    version = "v1alpha1",
    kind = "SecretBinding",
    plural = "secretbindings",
    shortname = "sbind",
    category = "phantom",
    namespaced,
    status = "SecretBindingStatus",
    doc = "Which pods of this namespace receive which OpenBao secrets, and how each is delivered. Holds paths and names only, never a secret value.",
    printcolumn(
        name = "Admitted",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Admitted")].status"#
    ),
    printcolumn(name = "Role", type_ = "string", json_path = ".spec.openbao.role"),
    printcolumn(
        name = "ServiceAccount",
        type_ = "string",
        json_path = ".spec.selector.serviceAccountName"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SecretBindingSpec {
    /// Which pods of the namespace the binding applies to.
    pub selector: WorkloadSelector,
    /// How the pod authenticates to OpenBao.
    pub openbao: OpenBaoAuth,
    /// The secrets to deliver.
    #[schemars(length(min = 1, max = 128))]
    pub secrets: Vec<SecretItem>,
    /// How often the sidecar re-reads secrets and renews leases.
    #[serde(default)]
    pub refresh: Refresh,
    /// How the application learns that a secret changed.
    #[serde(default)]
    pub rotation_notice: RotationNotice,
}

/// Pod selection inside the binding's namespace; all given criteria must match.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    /// Pods whose labels match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    /// Pods running as this ServiceAccount (also the identity OpenBao authorises).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub service_account_name: Option<String>,
}

/// OpenBao authentication of the pod (Kubernetes auth with the pod's ServiceAccount token).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpenBaoAuth {
    /// The Kubernetes auth role to log in with.
    #[schemars(length(min = 1, max = 128))]
    pub role: String,
    /// Mount path of the Kubernetes auth method.
    #[serde(default = "default_auth_mount")]
    #[schemars(length(min = 1, max = 128))]
    pub auth_mount: String,
    /// OpenBao namespace (tenancy), if the server uses namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Audience of the projected ServiceAccount token presented to OpenBao.
    #[serde(default = "default_audience")]
    #[schemars(length(min = 1))]
    pub audience: String,
}

/// Default mount of OpenBao's Kubernetes auth method.
pub fn default_auth_mount() -> String {
    "kubernetes".to_owned()
}

/// Default audience of the token presented to OpenBao.
pub fn default_audience() -> String {
    "openbao".to_owned()
}

/// Secrets engine kind behind a path.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Engine {
    /// KV version 2: versioned static secrets.
    #[default]
    KvV2,
    /// A dynamic engine (database, PKI, cloud...): values come with a lease that is renewed.
    Dynamic,
}

/// One secret and where it goes.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretItem {
    /// Name of the secret within the binding (used by the socket API and in status).
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Path below the mount, e.g. `payments/db` (no leading slash, no `data/` prefix for KV v2).
    #[schemars(length(min = 1, max = 512), regex(pattern = r"^[^/\s][^\s]*$"))]
    pub path: String,
    /// Mount of the secrets engine.
    #[serde(default = "default_kv_mount")]
    #[schemars(length(min = 1, max = 128))]
    pub mount: String,
    /// Engine kind behind the mount.
    #[serde(default)]
    pub engine: Engine,
    /// A single key of the secret's data; absent delivers the whole map (files/socket only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub key: Option<String>,
    /// Pin a KV v2 version; absent follows the latest version (and rotations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub version: Option<u32>,
    /// Where the value is delivered; at least one.
    #[schemars(length(min = 1, max = 8))]
    pub delivery: Vec<Delivery>,
}

/// Default KV mount (OpenBao's default KV v2 mount).
pub fn default_kv_mount() -> String {
    "secret".to_owned()
}

/// Delivery kinds.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DeliveryKind {
    /// An environment variable set by `phantom-exec` before it `exec`s the application.
    Env,
    /// A file on the pod's memory-backed volume.
    File,
    /// Only through the sidecar's Unix-socket API.
    Socket,
}

/// One way a secret reaches the application.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// `env`, `file` or `socket`.
    pub kind: DeliveryKind,
    /// Environment variable name (kind `env`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub name: Option<String>,
    /// File path relative to the secrets volume (kind `file`), e.g. `db/password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 255),
        regex(pattern = r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
    )]
    pub path: Option<String>,
    /// Octal file mode as a string (kind `file`), `"0400"` by default. A string because YAML
    /// parsers disagree on whether `0400` is octal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^0?[0-7]{3}$"))]
    pub mode: Option<String>,
    /// Containers that receive it (kind `env`); absent means every wrapped container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<Vec<String>>,
}

/// Re-read schedule.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Refresh {
    /// Interval between re-reads, e.g. `4m`; at least `1s`.
    #[serde(default = "default_refresh_interval")]
    #[schemars(regex(pattern = crate::common::DURATION_PATTERN))]
    pub interval: Duration,
    /// Random jitter added to each interval, as a percentage of it.
    #[serde(default = "default_jitter_percent")]
    #[schemars(range(min = 0, max = 100))]
    pub jitter_percent: u8,
}

impl Default for Refresh {
    fn default() -> Self {
        Self {
            interval: default_refresh_interval(),
            jitter_percent: default_jitter_percent(),
        }
    }
}

/// The shortest refresh interval a binding may ask for: below it a pod would poll OpenBao in a
/// hot loop. Checked by validation and compilation, and floored (with a warning) by the sidecar.
pub const MIN_REFRESH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

fn default_refresh_interval() -> Duration {
    Duration::from(std::time::Duration::from_secs(240))
}

fn default_jitter_percent() -> u8 {
    10
}

/// Notification sent to the application when a secret changes.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RotationNotice {
    /// `SIGHUP` to the application (needs `shareProcessNamespace`).
    Sighup,
    /// An event on the socket API's watch stream.
    #[default]
    SocketEvent,
    /// No notification; files are replaced atomically.
    None,
}

/// Status of a SecretBinding: conditions `Compiled` and `Admitted` (by which policies).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretBindingStatus {
    #[serde(flatten)]
    pub common: CommonStatus,
    /// Names of the PhantomPolicies that admit this binding.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admitted_by: Vec<String>,
}
