//! The node agent's metrics, `phantom_agent_*`: callers by outcome, pods and identities served,
//! OpenBao requests by operation and result (coalesced and kept reads count once). Labels are
//! enums: never a pod name, a path or a value.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::metrics::RequestLabels;
use phantom_openbao::{Observer, Operation, RequestOutcome};

phantom_process::label_enum! {
    /// What became of a connection or request to the agent.
    pub enum CallerOutcome {
        Served => "served",
        /// The kernel could not say who the peer is, or it is in no pod on this node.
        NotInPod => "not_in_pod",
        /// No token, a token the API server refused, or another pod's.
        Unproven => "unproven",
        /// Proven, but the pod is not one the agent serves (namespace, plan, bindings).
        Refused => "refused",
        /// Proven and planned, but its secrets could not be fetched (OpenBao refused or is away).
        Failed => "failed",
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallerLabels {
    pub outcome: CallerOutcome,
}

/// The agent's metrics and their registry.
#[derive(Debug)]
pub struct AgentMetrics {
    registry: Registry,
    pub callers: Family<CallerLabels, Counter>,
    pub pods: Gauge,
    pub identities: Gauge,
    pub openbao_requests: Family<RequestLabels, Counter>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("phantom_agent");
        let callers = Family::<CallerLabels, Counter>::default();
        let pods = Gauge::default();
        let identities = Gauge::default();
        let openbao_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "callers",
            "Requests to the agent's socket, by outcome",
            callers.clone(),
        );
        registry.register("pods", "Pods this agent serves", pods.clone());
        registry.register(
            "identities",
            "Pod identities (namespace + ServiceAccount) with a shared OpenBao session here",
            identities.clone(),
        );
        registry.register(
            "openbao_requests",
            "Requests that reached OpenBao, by operation and result",
            openbao_requests.clone(),
        );
        Self {
            registry,
            callers,
            pods,
            identities,
            openbao_requests,
        }
    }
}

impl AgentMetrics {
    pub fn caller(&self, outcome: CallerOutcome) {
        self.callers.get_or_create(&CallerLabels { outcome }).inc();
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Observer for AgentMetrics {
    fn request(&self, operation: Operation, result: RequestOutcome) {
        self.openbao_requests
            .get_or_create(&RequestLabels { operation, result })
            .inc();
    }
}
