//! What the webhook injects and which namespaces it serves. Built from flags by the binary; plain
//! data so that `mutate` and the review logic stay free of I/O.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Images and settings of the injected containers and volumes.
#[derive(Debug, Clone, PartialEq)]
pub struct InjectConfig {
    /// Image of the sidecar; its entrypoint is `/phantom-proxy`.
    pub proxy_image: String,
    /// Image holding `/phantom-exec`, copied by the init container into the shared volume.
    pub exec_image: String,
    /// `IfNotPresent` in clusters with a registry; `Never` for locally imported images.
    pub image_pull_policy: String,
    /// OpenBao address handed to the sidecar, e.g. `https://openbao.example:8200`.
    pub openbao_address: String,
    /// Audience of the projected ServiceAccount token the sidecar presents to OpenBao.
    pub openbao_audience: String,
    /// Lifetime the kubelet gives the projected token (it rotates it at 80 %).
    pub token_expiration_seconds: i64,
    /// Size limit of the secrets volume when the policy sets none.
    pub default_tmpfs_size: String,
    /// Resources of the sidecar when the policy sets none.
    pub proxy_resources: ResourceRequirements,
    /// PEM CA bundle the sidecar trusts OpenBao's certificate with (public data, handed over in
    /// the environment so no per-namespace ConfigMap is needed). `None`: the image's bundle.
    pub openbao_ca_pem: Option<String>,
    /// Pinned sha256 digests of OpenBao's public key (`sha256//BASE64` or hex).
    pub openbao_spki_pins: Vec<String>,
    /// A `kubernetes.io/tls` Secret in the pod's namespace with the sidecar's client certificate
    /// for OpenBao listeners that require mTLS.
    pub openbao_client_cert_secret: Option<String>,
    /// The attestation broker handed to sidecars whose key release gates on an
    /// AttestationRequirement (`None`: such sidecars release nothing and say why).
    pub broker: Option<BrokerConfig>,
    /// Port of the sidecar's `/metrics`, `/healthz`, `/readyz` (0: off). Not used for
    /// `hostNetwork` pods, where every pod on the node would want the same port.
    pub proxy_status_port: u16,
    /// Where pods in injection mode `daemonset` reach the node agent.
    pub agent: AgentConfig,
}

/// The node agent as pods in injection mode `daemonset` reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The agent's socket directory on every node (mounted into the pods as a hostPath).
    pub socket_dir: String,
    /// Audience of the projected token a pod proves itself with to the agent.
    pub audience: String,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            socket_dir: DEFAULT_AGENT_SOCKET_DIR.into(),
            audience: DEFAULT_AGENT_AUDIENCE.into(),
        }
    }
}

pub use phantom_crds::wellknown::{DEFAULT_AGENT_AUDIENCE, DEFAULT_AGENT_SOCKET_DIR};

/// Where sidecars find the attestation broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// `https://phantom-broker.phantom-system:8443`.
    pub address: String,
    /// Pinned sha256 digests of the broker's public key.
    pub spki_pins: Vec<String>,
    /// Audience of the projected token the sidecar presents to the broker.
    pub audience: String,
}

impl Default for InjectConfig {
    fn default() -> Self {
        Self {
            proxy_image: "phantom.local/phantom-proxy:dev".into(),
            exec_image: "phantom.local/phantom-exec:dev".into(),
            image_pull_policy: "IfNotPresent".into(),
            openbao_address: "https://openbao:8200".into(),
            openbao_audience: phantom_crds::default_audience(),
            token_expiration_seconds: 3600,
            default_tmpfs_size: "1Mi".into(),
            proxy_resources: resources("10m", "16Mi", "32Mi"),
            openbao_ca_pem: None,
            openbao_spki_pins: Vec::new(),
            openbao_client_cert_secret: None,
            proxy_status_port: 9102,
            broker: None,
            agent: AgentConfig::default(),
        }
    }
}

/// Requests of `cpu`/`memory` and a memory limit equal to `memory_limit`.
pub fn resources(cpu: &str, memory: &str, memory_limit: &str) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.into())),
            ("memory".to_owned(), Quantity(memory.into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            Quantity(memory_limit.into()),
        )])),
        ..Default::default()
    }
}

pub use phantom_crds::wellknown::{Selection, parse_label};
